"""Backends: run the network on preprocessed batches (float32 ``N x 3 x H x W`` -> logits ``N x C x T``).

The protocol lives here, below the recognizer and the exporters, so both can use it;
runtime backends (ONNX Runtime, OpenVINO) are in :mod:`lprnet.export.runtimes`.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
from torch import nn


class Backend(Protocol):
    """Runs the network: float32 ``N x 3 x H x W`` -> logits ``N x C x T`` (numpy)."""

    name: str

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


class TorchBackend:
    """Eager PyTorch on the deploy-form model."""

    name = "torch"

    def __init__(self, model: nn.Module, device: str = "cpu") -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()

    @torch.inference_mode()
    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
        return self.model(x).float().cpu().numpy()
