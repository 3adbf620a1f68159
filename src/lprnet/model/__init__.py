"""The model: LPRNet (deploy and reference forms), a small registry to build it by name, its FLOP count
(:mod:`lprnet.model.flops`) and function-preserving widening (:mod:`lprnet.model.widen`)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from torch import nn

from lprnet.config import VARIANT_STRIDES
from lprnet.model.lprnet import LPRNet, ReferenceLPRNet, SmallBasicBlock
from lprnet.model.widen import widen_state_dict

_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "lprnet": LPRNet,
    "lprnet_reference": ReferenceLPRNet,
    # every channel kept by the two channel-subsampling pools (lprnet.model.widen moves narrow weights in)
    "lprnet_wide": partial(LPRNet, channel_strides=VARIANT_STRIDES["lprnet_wide"]),
}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator adding a model constructor to the registry."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = fn
        return fn

    return deco


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def create_model(name: str = "lprnet", **kwargs: Any) -> nn.Module:
    """Build a registered model, e.g. ``create_model("lprnet", num_classes=68)``."""
    try:
        fn = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(list_models())}") from None
    return fn(**kwargs)


__all__ = ["LPRNet", "ReferenceLPRNet", "SmallBasicBlock", "create_model", "list_models",
           "register_model", "widen_state_dict"]
