"""Backends: run the network on preprocessed batches (float32 ``N x 3 x H x W`` -> logits ``N x C x T``).

The protocol lives here, below the recognizer and the exporters, so both can use it;
runtime backends (ONNX Runtime, OpenVINO) are in :mod:`lprnet.export.runtimes`.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
from torch import nn


class DeviceUnavailableError(ValueError):
    """The requested device cannot be used here; the message names it and says why."""


def resolve_device(spec: str) -> torch.device:
    """``spec`` as a usable ``torch.device`` (``cpu``, ``cuda``, ``cuda:N``), or
    :class:`DeviceUnavailableError` naming what was requested and why it cannot be used."""
    try:
        dev = torch.device(spec)
    except (RuntimeError, TypeError):
        raise DeviceUnavailableError(f"device {spec!r} was requested: not a device name (use cpu, cuda "
                                     "or cuda:N)") from None
    if dev.type == "cpu":
        return dev
    if dev.type != "cuda":
        raise DeviceUnavailableError(f"device {spec!r} was requested: only cpu and cuda are supported")
    if not torch.cuda.is_available():
        why = (f"this torch ({torch.__version__}) was built without CUDA" if torch.version.cuda is None else
               f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU: torch.cuda.is_available() "
               "is False (no NVIDIA driver or device visible)")
        raise DeviceUnavailableError(f"device {spec!r} was requested but CUDA is not available: {why}. "
                                     "Use --device cpu here, or run on a machine with an NVIDIA GPU.")
    n = torch.cuda.device_count()
    if dev.index is not None and dev.index >= n:
        raise DeviceUnavailableError(f"device {spec!r} was requested but only {n} CUDA device(s) are visible "
                                     f"(cuda:0..cuda:{n - 1})")
    return dev if dev.index is not None else torch.device("cuda", torch.cuda.current_device())


class Backend(Protocol):
    """Runs the network: float32 ``N x 3 x H x W`` -> logits ``N x C x T`` (numpy)."""

    name: str

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


class TorchBackend:
    """Eager PyTorch on the deploy-form model.

    ``channels_last`` (default: on the CPU) runs the convolutions on NHWC tensors: about twice as fast on x86 CPUs
    (oneDNN's NHWC kernels; 1 thread, batch 1 and 32) with logits within about 3e-5 of the NCHW ones (the default
    weights: no reading changed on 1,500 synthetic plates). ``False`` gives PyTorch's default layout, the reference
    the export parity checks compare with."""

    name = "torch"

    def __init__(self, model: nn.Module, device: str | torch.device = "cpu", channels_last: bool | None = None) -> None:
        self.device = resolve_device(str(device))
        self.channels_last = self.device.type == "cpu" if channels_last is None else bool(channels_last)
        self._format = torch.channels_last if self.channels_last else torch.contiguous_format
        self.model = model.to(self.device, memory_format=self._format).eval()

    @torch.inference_mode()
    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
        return self.model(x.contiguous(memory_format=self._format)).float().cpu().numpy()
