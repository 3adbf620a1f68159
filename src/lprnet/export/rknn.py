"""Rockchip NPU export: the checked ONNX graph converted to ``.rknn`` by RKNN-Toolkit2 and checked on its simulator.

Rockchip's toolkit (``rknn-toolkit2`` on PyPI, Linux x86_64/aarch64, Python <= 3.12) pins ``torch<=2.4`` and
``numpy<=1.26``, so it cannot share this package's environment: ``sh scripts/rknn_venv.sh`` makes
``.venv-rknn`` beside the checkout, and :func:`rknn_python` finds its Python (or ``$LPRNET_RKNN_PYTHON``).
:class:`RknnSimulatorBackend` runs :mod:`lprnet.export.rknn_sim` there: it loads the ONNX file, builds the RKNN
model for a target SoC (fp16, or INT8 with the toolkit's own w8a8 calibration on our synthetic crops), writes the
``.rknn`` file, and runs the crops on the toolkit's simulator, whose logits the export's parity check compares with
PyTorch's.

The RKNN model takes uint8 BGR ``1 x 24 x 94 x 3`` (NHWC) crops: the normalisation ``(x - 127.5) * 0.0078125`` is
built in (mean 127.5, std 128), as a camera pipeline on the board feeds it; the output is the logits
``1 x 68 x 18``, CTC-decoded as :mod:`lprnet.core.process` does.  Our metadata (charset, input, decoding) is stored
in the file's custom string (``RKNN_QUERY_CUSTOM_STRING`` on the board).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from lprnet.export.onnx import ExportError

RKNN_PYTHON_ENV = "LPRNET_RKNN_PYTHON"
DEFAULT_TARGET = "rk3588"
#: the toolkit's simulator runs fp16: logits of |t| ~ 130 round to 0.06-0.125 there; measured on 256 synthetic
#: crops with the default weights: max |diff| 0.080, every reading the same
FP16_ATOL, FP16_RTOL = 0.25, 1e-2
FP16_MIN_AGREEMENT = 0.99
CUSTOM_STRING_MAX = 1024  # bytes: the board reads it into char[1024], its terminating NUL included
_RUNNER = Path(__file__).with_name("rknn_sim.py")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_VENV = Path(__file__).resolve().parents[3] / ".venv-rknn"  # beside a source checkout (an editable install)


def rknn_python() -> Path:
    """The Python of the environment that has RKNN-Toolkit2: ``$LPRNET_RKNN_PYTHON``, else ``.venv-rknn``'s."""
    env = os.environ.get(RKNN_PYTHON_ENV)
    tried = [_VENV, Path.cwd() / ".venv-rknn"]  # the checkout's, then the working folder's (scripts/rknn_venv.sh)
    if env and Path(env).exists():
        return Path(env)
    if not env:
        for venv in tried:
            if (venv / "bin" / "python").exists():
                return venv / "bin" / "python"
    where = (f"${RKNN_PYTHON_ENV}={env}: no such file" if env else
             f"no {' or '.join(str(v) for v in dict.fromkeys(tried))}")
    raise ExportError(f"RKNN-Toolkit2 is not set up ({where}). It pins torch<=2.4 and numpy<=1.26, so it lives in an "
                      f"environment of its own: point ${RKNN_PYTHON_ENV} at a Python that has rknn-toolkit2, or make "
                      "one with `sh scripts/rknn_venv.sh` (from a checkout of lprnet; it makes ./.venv-rknn)")


def to_uint8_nhwc(batch: np.ndarray) -> np.ndarray:
    """:func:`lprnet.core.process.preprocess`'s float32 NCHW batch back to the uint8 BGR NHWC crops it came from
    (exact: ``(u - 127.5) * 2**-7`` is exact in float32); anything else is a ``ValueError``."""
    u = batch.astype(np.float64).transpose(0, 2, 3, 1) / 0.0078125 + 127.5
    r = np.rint(u)
    if not np.array_equal(u, r) or (r.size and (r.min() < 0 or r.max() > 255)):
        raise ValueError("the RKNN model takes uint8 crops: this batch is not preprocess()'s output of uint8 images")
    return r.astype(np.uint8)


def custom_string(meta: dict[str, Any]) -> str:
    """The metadata stored in the ``.rknn`` file, within the board's 1,024 bytes (UTF-8: a Chinese character takes
    three)."""
    s = json.dumps(meta, ensure_ascii=False, separators=(",", ":"))
    n = len(s.encode("utf-8"))
    if n >= CUSTOM_STRING_MAX:
        raise ExportError(f"the RKNN custom string would be {n} bytes (the board reads {CUSTOM_STRING_MAX - 1} and a "
                          "terminating NUL); a charset this long does not fit")
    return s


class RknnSimulatorBackend:
    """Builds the RKNN model from ``onnx_path`` and runs batches on the toolkit's simulator (float32 NCHW from
    :func:`lprnet.core.process.preprocess` in, logits out).  The simulator runs only a model built in the same
    session, so every call builds again (a few seconds): give it all crops at once.  The first call writes the
    ``.rknn`` file to ``rknn_out`` when given; :attr:`info` is the toolkit's summary.  Errors name ``label`` (default:
    ``rknn_out``, else ``onnx_path``)."""

    name = "rknn-simulator"

    def __init__(self, onnx_path: str | os.PathLike[str], target: str = DEFAULT_TARGET, *, int8: bool = False,
                 calib: np.ndarray | None = None, rknn_out: str | os.PathLike[str] | None = None, meta: str = "",
                 python: str | os.PathLike[str] | None = None, timeout: float = 1800, label: str | None = None) -> None:
        if int8 and calib is None:
            raise ValueError("an INT8 RKNN model needs calibration crops (calib)")
        self.onnx_path, self.target, self.int8, self.calib = Path(onnx_path), target, int8, calib
        self.rknn_out = Path(rknn_out) if rknn_out is not None else None
        self.meta, self.timeout = meta, timeout
        self.label = label or str(self.rknn_out or self.onnx_path)  # what an error names
        self.python = Path(python) if python is not None else rknn_python()
        self.info: dict[str, Any] = {}

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        with tempfile.TemporaryDirectory(prefix="lprnet-rknn-") as td:
            images, out = Path(td) / "images.npz", Path(td) / "logits.npz"
            np.savez(images, images=to_uint8_nhwc(batch))
            # -I: the runner's folder is not put on sys.path, where this package's onnx.py would shadow onnx
            cmd = [str(self.python), "-I", str(_RUNNER), "--onnx", str(self.onnx_path), "--images", str(images),
                   "--target", self.target, "--out", str(out)]
            if self.int8:
                assert self.calib is not None
                np.savez(Path(td) / "calib.npz", images=self.calib)
                cmd += ["--int8", "--calib", str(Path(td) / "calib.npz")]
            if self.rknn_out is not None and not self.info:
                cmd += ["--rknn", str(self.rknn_out), "--custom-string", self.meta]
            try:
                r = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout)
            except subprocess.TimeoutExpired:
                raise ExportError(f"{self.label}: RKNN-Toolkit2 ({self.target}) took over {self.timeout:g} s"
                                  ) from None
            if r.returncode != 0:
                lines = [_ANSI.sub("", ln).strip() for ln in r.stderr.splitlines() if ln.strip()]
                said = next((ln for ln in reversed(lines) if ln.startswith("rknn: ")), lines[-1] if lines else "")
                why = next((ln[2:] for ln in reversed(lines)  # the toolkit's own error, not its version line
                            if ln.startswith("E ") and "toolkit2 version" not in ln), "")
                raise ExportError(f"{self.label}: RKNN-Toolkit2 ({self.target}) failed, exit "
                                  f"{r.returncode}: {said.removeprefix('rknn: ') or 'no message'}"
                                  + (f" ({why})" if why and why not in said else ""))
            summary = next((ln for ln in reversed(r.stdout.splitlines()) if ln.startswith('{"toolkit"')), "{}")
            self.info = {**json.loads(summary), "onnx": self.onnx_path.name}
            return np.load(out)["logits"]
