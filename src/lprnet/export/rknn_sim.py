"""Runs inside RKNN-Toolkit2's own environment: ONNX -> ``.rknn``, then the toolkit's simulator on crops.

Rockchip's toolkit pins ``torch<=2.4`` and ``numpy<=1.26``, so it lives in a virtual environment of its own
(``sh scripts/rknn_venv.sh`` makes ``.venv-rknn``) and :mod:`lprnet.export.rknn` runs this file with that
environment's Python.  It imports nothing of lprnet: numpy and the toolkit only.

The normalisation is built into the RKNN model (mean 127.5, std 128: ``(x - 127.5) * 0.0078125``), so the model
takes what a camera pipeline has: uint8 BGR ``1 x H x W x 3`` crops resized to the model's input size; the output
is the network's logits ``1 x C x T``.

    python rknn_sim.py --onnx M.onnx --images crops.npz --target rk3588 [--int8 --calib calib.npz]
                       [--rknn OUT.rknn] [--custom-string S] --out logits.npz

``--images`` and ``--calib``: ``.npz`` files with ``images`` (uint8 ``N x H x W x 3``, BGR).  ``--int8`` quantises
with the toolkit's own calibration (w8a8) on ``--calib``.  Writes ``logits`` (float32 ``N x C x T``) to ``--out``
and prints one JSON line (toolkit version, target, precision); a failed step exits with status 3 and names the step
and the toolkit's message on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

EXIT_STEP_FAILED = 3


def _step(name: str, fn: Callable[[], Any], log: io.StringIO) -> Any:
    """Run one toolkit step with its chatter captured; a non-zero return or an exception ends the run."""
    try:
        with contextlib.redirect_stdout(log):
            ret = fn()
    except Exception as e:  # the toolkit raises from deep inside (e.g. ONNX Runtime's shape inference)
        lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
        _fail(name, f"{type(e).__name__}: {lines[-1] if lines else ''}", log)
    if isinstance(ret, int) and ret != 0:
        _fail(name, f"returned {ret}", log)
    return ret


def _fail(name: str, why: str, log: io.StringIO) -> None:
    said = [ln for ln in log.getvalue().splitlines() if ln.startswith(("E ", "\x1b[1;31mE"))]
    print(f"rknn: {name} failed: {why}" + (f" ({said[-1]})" if said else ""), file=sys.stderr)
    sys.exit(EXIT_STEP_FAILED)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--onnx", required=True)
    ap.add_argument("--images", required=True)
    ap.add_argument("--target", default="rk3588")
    ap.add_argument("--int8", action="store_true")
    ap.add_argument("--calib")
    ap.add_argument("--rknn", help="write the .rknn model here")
    ap.add_argument("--custom-string", default="", help="stored in the .rknn (RKNN_QUERY_CUSTOM_STRING)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    if a.int8 and not a.calib:
        ap.error("--int8 needs --calib")
    from importlib.metadata import version

    from rknn.api import RKNN

    images = np.load(a.images)["images"]
    log = io.StringIO()
    rk = _step("RKNN()", lambda: RKNN(verbose=False), log)
    _step("config", lambda: rk.config(mean_values=[[127.5] * 3], std_values=[[128.0] * 3],
                                      target_platform=a.target, custom_string=a.custom_string or None), log)
    _step("load_onnx", lambda: rk.load_onnx(model=a.onnx), log)
    with tempfile.TemporaryDirectory(prefix="rknn-calib-") as td:
        dataset = None
        if a.int8:
            paths = []
            for i, img in enumerate(np.load(a.calib)["images"]):
                p = Path(td) / f"{i}.npy"
                np.save(p, img.transpose(2, 0, 1)[None])  # NCHW, as the toolkit wants; .npy keeps BGR (no swap)
                paths.append(str(p))
            dataset = Path(td) / "dataset.txt"
            dataset.write_text("\n".join(paths) + "\n")
        _step("build", lambda: rk.build(do_quantization=a.int8, dataset=str(dataset) if dataset else None), log)
    if a.rknn:
        _step("export_rknn", lambda: rk.export_rknn(a.rknn), log)
    _step("init_runtime (simulator)", rk.init_runtime, log)
    logits = []
    for img in images:
        out = _step("inference", lambda img=img: rk.inference(inputs=[img[None]], data_format="nhwc"), log)
        if not out:
            _fail("inference", "no output", log)
        logits.append(np.asarray(out[0], dtype=np.float32).reshape(out[0].shape[-2:]))
    rk.release()
    np.savez(a.out, logits=np.stack(logits) if logits else np.zeros((0, 0, 0), np.float32))
    print(json.dumps({"toolkit": "rknn-toolkit2", "version": version("rknn-toolkit2"),
                      "target": a.target, "precision": "int8 (w8a8)" if a.int8 else "fp16", "n": len(logits)}))


if __name__ == "__main__":
    main()
