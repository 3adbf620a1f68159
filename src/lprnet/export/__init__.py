"""Portable exports of the deploy form and the runtimes that run them.

This package owns everything between a trained model and a non-PyTorch runtime:

* :mod:`lprnet.export.onnx` — ONNX export of the deploy form (opset 17, or 11-20 on request; dynamic or
  fixed batch, no 3-D pooling), the **operator allowlist** (ops accepted by TensorRT,
  OpenVINO and common NPU toolchains) checked on every exported graph, metadata
  embedding, and the **parity check** against PyTorch (max abs logit difference and
  decoded-string agreement on real crops when available, else synthetic ones) that
  follows every export;
* :mod:`lprnet.export.openvino` — OpenVINO IR (``.xml`` + ``.bin``, fp32) from the ONNX file;
* :mod:`lprnet.export.int8` — static post-training INT8 quantisation (ONNX QDQ,
  per-channel) calibrated on *synthetic* crops only;
* :mod:`lprnet.export.rknn` — Rockchip ``.rknn`` models built by RKNN-Toolkit2 (in its own environment, through
  :mod:`lprnet.export.rknn_sim`) and checked on the toolkit's simulator;
* :mod:`lprnet.export.pipeline` — :func:`export_weights`: weights -> export (+ INT8,
  + IR or RKNN) -> parity, the one path ``lprnet export`` and the runtime cache share;
* :mod:`lprnet.export.runtimes` — :class:`OnnxRuntimeBackend` and :class:`OpenVinoBackend`
  implementing :class:`lprnet.core.backend.Backend`, and :func:`load_backend` (used by
  :func:`lprnet.load` for ``backend="onnxruntime"`` / ``"openvino"``), with the export cache.

Pre-processing and decoding stay in :mod:`lprnet.core.process`; runtimes only map a
float32 ``N x 3 x H x W`` batch to ``N x C x T`` logits.  The runtime packages are the
optional ``export`` extra (``pip install 'lprnet[export]'``) and are imported lazily.
"""

from __future__ import annotations

from lprnet.export.onnx import (
    ALLOWED_OPS,
    QDQ_OPS,
    ExportError,
    ParityReport,
    check_ops,
    check_parity,
    export_onnx,
    parity_images,
    read_onnx_meta,
)

__all__ = [
    "ALLOWED_OPS", "QDQ_OPS", "ExportError", "ParityReport", "check_ops", "check_parity",
    "export_onnx", "parity_images", "read_onnx_meta",
]
