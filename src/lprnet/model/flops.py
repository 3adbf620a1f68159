"""What one plate costs a model: FLOPs counted layer by layer (the benchmarks' and the dead-channel rule's measure)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn


def count_flops(model: nn.Module, input_size: tuple[int, int] = (94, 24)) -> dict[str, Any]:
    """FLOPs of one plate (batch 1): 2 x MACs of every ``Conv*d``/``Linear`` (bias adds and
    elementwise ops are ignored: they are < 1 % here).  Works on ``nn.Module`` and
    ``torch.fx.GraphModule`` (hooks fire on called submodules)."""
    per_layer: dict[str, int] = {}
    hooks = []

    def hook(name: str) -> Callable[..., None]:
        def fn(mod: nn.Module, inp: Any, out: torch.Tensor) -> None:
            if isinstance(mod, nn.modules.conv._ConvNd):
                k = int(np.prod(mod.kernel_size)) * (mod.in_channels // mod.groups)
                per_layer[name] = per_layer.get(name, 0) + 2 * out.numel() * k
            elif isinstance(mod, nn.Linear):
                per_layer[name] = per_layer.get(name, 0) + 2 * out.numel() * mod.in_features
        return fn

    for name, mod in model.named_modules():
        if isinstance(mod, (nn.modules.conv._ConvNd, nn.Linear)):
            hooks.append(mod.register_forward_hook(hook(name)))
    w, h = input_size
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, h, w))
    finally:
        for hd in hooks:
            hd.remove()
    return {"total": sum(per_layer.values()), "per_layer": per_layer}
