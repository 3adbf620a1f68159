"""Weights -> checked export -> parity, in one call (the ``lprnet export`` command and the
cache of :func:`lprnet.export.runtimes.load_backend` both use :func:`export_weights`).

Steps: build the deploy form from the weights, export ONNX (allowlist enforced), optionally
quantise to INT8 (synthetic calibration) and/or convert to OpenVINO IR or to Rockchip's RKNN (fp16, or INT8 by
the toolkit's own calibration on the same synthetic crops; :mod:`lprnet.export.rknn`), load the result in
its runtime and check parity against PyTorch on real crops when available (else
synthetic): fp32 needs ``|logit diff| <= atol + rtol * |logit|`` (1e-4, 1e-5) and identical decoded strings;
RKNN fp16 (the toolkit's simulator) 0.25 + 1e-2 * |logit| and 0.99 of the strings; INT8 needs decoded
agreement >= ``int8_min_agreement`` (0.95).  The files are written to a
hidden folder beside the output and moved into place only when parity passes (or with
``keep_failed``): an export that fails or is interrupted leaves no unchecked file behind.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lprnet.export.onnx import (
    INT8_OPSET_MIN,
    OPSET_MAX,
    OPSET_MIN,
    ExportError,
    ParityReport,
    check_parity,
    export_onnx,
    parity_images,
)

FORMATS = ("onnx", "openvino", "rknn")


@dataclass
class ExportResult:
    fmt: str
    path: Path
    precision: str
    files: list[Path]
    steps: list[dict[str, Any]] = field(default_factory=list)
    parity: list[ParityReport] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(p.passed for p in self.parity)

    def to_json(self) -> dict[str, Any]:
        return {"format": self.fmt, "path": str(self.path), "precision": self.precision,
                "files": [str(f) for f in self.files], "ok": self.ok, "steps": self.steps,
                "parity": [p.to_json() for p in self.parity]}


def export_weights(weights: str | os.PathLike[str] | None, fmt: str, out: str | os.PathLike[str], *,
                   int8: bool = False, batch: int | None = None, parity_data: str | os.PathLike[str] | None = None,
                   parity_n: int = 256, threads: int | None = None, atol: float = 1e-4, rtol: float = 1e-5,
                   int8_min_agreement: float = 0.95, keep_failed: bool = False,
                   exporter: str = "torchscript", dead_channels: bool = False,
                   int8_activations: str = "uint8", opset: int | None = None,
                   rknn_target: str = "rk3588") -> ExportResult:
    """Export ``weights`` (``None``: bundled) to ``out`` and check parity (see module doc).

    ``dead_channels`` first applies the ``dead-channels`` rewrite rule (verified by the
    rewrite verifier; constant channels removed, fewer FLOPs); parity is then held to the
    rule's bound (``atol=rtol=1e-4``) and identical strings.  ``opset`` is the ONNX opset
    (:func:`lprnet.export.onnx.export_onnx`; INT8 needs 13 or newer).  ``fmt="rknn"`` takes one crop per call
    (``batch`` 1) and builds for the SoC ``rknn_target``.
    """
    from lprnet.core.backend import TorchBackend
    from lprnet.weights import build_model

    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if int8_activations not in ("uint8", "int8"):
        raise ValueError(f"int8_activations must be 'uint8' or 'int8', got {int8_activations!r}")
    why = option_problem(fmt, int8=int8, opset=opset, batch=batch)  # before the model and the crops are loaded
    if why:
        raise ValueError(why)
    out = Path(out)
    if out.is_dir():
        raise ExportError(f"{out} is a directory; give a file name (.onnx, or .xml for OpenVINO)")
    why = out_problem(fmt, out)
    if why:
        raise ExportError(f"{out}: {why}")
    if fmt == "openvino" and not out.suffix:
        out = out.with_suffix(".xml")
    if fmt == "rknn":
        from lprnet.export.rknn import rknn_python

        batch, rknn_py = 1, rknn_python()  # before anything is loaded: the toolkit's environment must exist
    model, meta = build_model(Path(weights) if weights is not None else None, form="deploy")
    cfg = meta.config
    dmeta = dataclasses.replace(
        meta, form="deploy", context_norm=getattr(model, "context_norm", "sample"),
        provenance={**meta.provenance,
                    "exported_from": Path(weights).name if weights is not None else "bundled"})
    res = ExportResult(fmt, out, "int8" if int8 else "fp16" if fmt == "rknn" else "fp32", [])
    images, labels, source = parity_images(parity_n, parity_data, input_size=cfg.input_size)
    export_model: Any = model
    if dead_channels:
        export_model, applied = _slim(model, images, res)
        rtol = max(rtol, 1e-4)
        dmeta = dataclasses.replace(  # the file says what its graph is: narrowed, BatchNorm folded
            dmeta, config=dataclasses.replace(cfg, batchnorm=cfg.batchnorm and "fold-batchnorm" not in applied),
            rules=dmeta.rules + [r for r in applied if r not in dmeta.rules])
    out.parent.mkdir(parents=True, exist_ok=True)
    # everything is written to a hidden folder beside ``out`` and moved into place only once
    # parity has passed: an interrupted or failed export never leaves an unchecked ``out``
    stage = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        staged = stage / out.name
        fp32 = staged if (fmt == "onnx" and not int8) else stage / "model.onnx"
        min_agreement, parity_kw = (int8_min_agreement if int8 else 1.0), {}
        res.steps.append({"step": "onnx", **export_onnx(export_model, fp32, input_size=cfg.input_size,
                                                        batch=batch, meta=dmeta, exporter=exporter,
                                                        opset=opset)})
        final_onnx = fp32
        if fmt == "rknn":
            from lprnet.export.rknn import FP16_ATOL, FP16_MIN_AGREEMENT, FP16_RTOL

            rknn_backend = _rknn_backend(fp32, staged, rknn_target, int8, rknn_py, dmeta, label=str(out))
            res.files = [out]
            # the simulator builds the model in the session it runs it: one call on every crop builds, writes the
            # .rknn file, and gives the logits the parity check compares
            parity_kw = {"batch_size": max(1, len(images))}
            if not int8:
                atol, rtol, min_agreement = FP16_ATOL, max(rtol, FP16_RTOL), FP16_MIN_AGREEMENT
        elif int8:
            from lprnet.export.int8 import quantize_int8

            final_onnx = staged if fmt == "onnx" else stage / "model.int8.onnx"
            res.steps.append({"step": "int8", **quantize_int8(fp32, final_onnx, activation_type=int8_activations)})
        if fmt == "openvino":
            from lprnet.export.openvino import ir_files, onnx_to_openvino

            res.steps.append({"step": "openvino", **onnx_to_openvino(final_onnx, staged)})
            res.files = ir_files(out)
        elif fmt == "onnx":
            res.files = [out]
        from lprnet.export.runtimes import OnnxRuntimeBackend, OpenVinoBackend

        backend: Any = (rknn_backend if fmt == "rknn" else OpenVinoBackend(staged, threads) if fmt == "openvino"
                        else OnnxRuntimeBackend(staged, threads))
        res.parity.append(check_parity(
            backend, TorchBackend(model, channels_last=False), cfg, images, labels, source=source,
            atol=float("inf") if int8 else atol, rtol=rtol, min_agreement=min_agreement, **parity_kw))
        if fmt == "rknn":
            res.steps.append({"step": "rknn", "path": str(staged), **backend.info})
        del backend  # the runtime lets go of the staged files before they move
        if res.ok or keep_failed:
            for f in reversed(res.files):  # an IR's .bin before its .xml
                os.replace(stage / f.name, f)
        else:
            res.files = []  # nothing was written
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    for st in res.steps:  # the summaries name the output, not its staged (and now deleted) copies
        path = st.get("path")
        if path == str(staged):
            st["path"] = str(out) if res.files else None
        elif isinstance(path, str) and path.startswith(str(stage)):
            st["path"] = None  # an intermediate file (e.g. the INT8 ONNX before OpenVINO)
        if "files" in st:
            st["files"] = [str(f) for f in res.files]
    return res


def option_problem(fmt: str, *, int8: bool = False, opset: int | None = None, batch: int | None = None) -> str | None:
    """What is wrong with these export settings together (``None``: nothing), checked before anything is loaded;
    ``lprnet export`` asks before it makes ``--out``'s folder."""
    if opset is not None and not OPSET_MIN <= opset <= OPSET_MAX:
        return f"opset must be between {OPSET_MIN} and {OPSET_MAX}, got {opset}"
    if int8 and fmt != "rknn" and opset is not None and opset < INT8_OPSET_MIN:  # RKNN quantises fp32 ONNX itself
        return f"an INT8 export needs opset {INT8_OPSET_MIN} or newer (per-channel QDQ), got {opset}"
    if fmt == "rknn" and batch not in (None, 1):
        return f"an RKNN model takes one crop per call (batch 1), got batch {batch}"
    return None


def out_problem(fmt: str, out: Path) -> str | None:
    """What is wrong with ``out``'s name for ``fmt`` (``None``: nothing); an OpenVINO path without a suffix gets
    ``.xml``, one with another suffix (``y.onnx``) would quietly become ``y.xml`` + ``y.bin`` and is refused."""
    suffix = out.suffix.lower()
    if fmt == "onnx" and suffix != ".onnx":
        return "an ONNX output path must end in .onnx"
    if fmt == "openvino" and suffix not in ("", ".xml"):
        return "an OpenVINO IR path must end in .xml (its .bin goes beside it)"
    if fmt == "rknn" and suffix != ".rknn":
        return "an RKNN output path must end in .rknn"
    return None


def _rknn_backend(onnx_path: Path, rknn_out: Path, target: str, int8: bool, python: Path, meta: Any,
                  label: str) -> Any:
    """The toolkit's simulator on ``onnx_path``, writing ``rknn_out`` on its first call; INT8 calibrates on the
    crops our ONNX INT8 export calibrates on (:mod:`lprnet.export.int8`)."""
    from lprnet.export.int8 import CALIB_N, CALIB_SEED, synthetic_batches
    from lprnet.export.rknn import RknnSimulatorBackend, custom_string, to_uint8_nhwc

    w, h = meta.config.input_size
    calib = to_uint8_nhwc(np.concatenate(synthetic_batches(CALIB_N, CALIB_SEED, input_size=(w, h)))) if int8 else None
    return RknnSimulatorBackend(onnx_path, target, int8=int8, calib=calib, rknn_out=rknn_out, python=python,
                                meta=custom_string(_rknn_meta(meta)), label=label)


def _rknn_meta(meta: Any) -> dict[str, Any]:
    """What the ``.rknn`` file says of itself (its custom string): enough to feed it and decode its output."""
    from lprnet.config import VERSION

    cfg = meta.config
    return {"lprnet": VERSION, "charset": "".join(cfg.charset.chars), "blank": cfg.charset.blank_index,
            "input": f"uint8 BGR 1x{cfg.input_size[1]}x{cfg.input_size[0]}x3 (NHWC), normalisation built in",
            "output": f"logits 1 x {cfg.charset.num_classes} x T; CTC: per step the best class, repeats merged, "
                      "blanks dropped"}


def _slim(model: Any, images: list[Any], res: ExportResult) -> tuple[Any, list[str]]:
    """The deploy model with the ``safe`` preset and then ``dead-channels`` applied and verified.

    Folding BatchNorm and flushing subnormals first exposes every constant channel (a BN scale
    that is subnormal becomes an exact zero), the same chain ``lprnet bench`` times.  Returns the graph and the
    rules applied.
    """
    import torch

    from lprnet import rewrite
    from lprnet.core.process import preprocess
    from lprnet.model.flops import count_flops

    x = torch.from_numpy(preprocess(images[:64], model.input_size))
    gm, rep = rewrite.apply(model, (x[:2],), ["safe", "dead-channels"], verify_inputs=x)
    if not rep.ok:
        raise ExportError("the dead-channels rewrite failed its verification:\n" + rep.to_text())
    rr = next(r for r in rep.rules if r.name == "dead-channels")
    res.steps.append({"step": "dead-channels", "removed": sum(s.detail["dead"] for s in rr.sites),
                      "sites": len(rr.sites), "flops_before": count_flops(model, model.input_size)["total"],
                      "flops_after": count_flops(gm, model.input_size)["total"]})
    return gm, rep.applied
