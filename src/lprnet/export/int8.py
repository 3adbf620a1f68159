"""Static post-training INT8 quantisation of an exported ONNX file (QDQ, per-channel).

Calibration uses **synthetic** crops only (:func:`lprnet.data.synth.generate`, a fixed
seed), pre-processed by :func:`lprnet.core.process.preprocess` exactly as at inference:
real crops are for measuring, never for tuning.  ``onnxruntime.quantization.quantize_static``
writes a QDQ graph (``QuantizeLinear``/``DequantizeLinear`` around Conv, pooling, Relu...;
weights int8 symmetric per output channel, activations int8, MinMax calibration).  The
global-context normalisation (``Pow``/``ReduceMean``/``Div``) stays fp32.  The result is
checked against the allowlist plus :data:`lprnet.export.onnx.QDQ_OPS` and keeps the fp32
file's metadata; its parity is reported as decoded-string agreement (and accuracy on real
crops), with a loose enforced bound (agreement >= 0.95 by default).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from lprnet.core.process import preprocess
from lprnet.export.onnx import ALLOWED_OPS, EXPORT_META_KEY, QDQ_OPS, check_ops

CALIB_SEED = 20240601
CALIB_N = 256


def synthetic_batches(n: int = CALIB_N, seed: int = CALIB_SEED, batch: int = 32,
                      input_size: tuple[int, int] = (94, 24)) -> list[np.ndarray]:
    """``n`` synthetic crops, pre-processed, as float32 batches of ``batch``."""
    from lprnet.data.synth import generate

    imgs = [img for img, _, _ in generate(n, seed, out_size=input_size)]
    return [preprocess(imgs[i:i + batch], input_size) for i in range(0, len(imgs), batch)]


def quantize_int8(fp32_onnx: str | os.PathLike[str], out: str | os.PathLike[str], *,
                  n_calib: int = CALIB_N, seed: int = CALIB_SEED, per_channel: bool = True,
                  fixed_batch: int | None = None) -> dict[str, Any]:
    """Quantise ``fp32_onnx`` to a QDQ INT8 model at ``out``; returns a summary."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    src = onnx.load(str(fp32_onnx))
    input_name = src.graph.input[0].name
    w, h = json.loads({p.key: p.value for p in src.metadata_props}.get(EXPORT_META_KEY, "{}")).get(
        "input_size", [94, 24])
    batches = synthetic_batches(n_calib, seed, fixed_batch or 32, (int(w), int(h)))
    if fixed_batch:
        batches = [b for b in batches if b.shape[0] == fixed_batch] or batches

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            b = next(self._it, None)
            return None if b is None else {input_name: b}

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    quantize_static(str(fp32_onnx), str(out), _Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=per_channel, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8,
                    extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
    q = onnx.load(str(out))
    q.ClearField("metadata_props")
    for p in src.metadata_props:
        e = q.metadata_props.add()
        e.key, e.value = p.key, p.value
    info = {"precision": "int8", "format": "QDQ", "per_channel": per_channel,
            "calibration": f"synthetic n={n_calib} seed={seed}"}
    e = q.metadata_props.add()
    e.key, e.value = "lprnet.int8", json.dumps(info)
    ops = check_ops(q, ALLOWED_OPS | QDQ_OPS)
    onnx.save(q, str(out))
    return {"path": str(out), "ops": ops, **info}
