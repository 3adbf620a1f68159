"""ONNX export of the deploy form, the operator allowlist, and the parity check.

Export
    :func:`export_onnx` writes any LPRNet-shaped ``nn.Module`` (normally the deploy form
    :class:`lprnet.model.LPRNet`) with ``torch.onnx.export`` at opset :data:`OPSET` (17) or
    one asked for between :data:`OPSET_MIN` and :data:`OPSET_MAX` (11-20: older NPU toolchains
    take 11-13; the graph's operators are the same from 11 to 17, and from 18 ``ReduceMean``
    takes its axes as an input), input ``input`` (``N x 3 x H x W`` float32, normalised BGR) and output ``logits``
    (``N x C x T``).  The batch axis is dynamic (``batch=None``) or fixed.  By default the
    TorchScript exporter (``dynamo=False``) is used: it is 4-5x faster here and gives the
    same graph as the ``torch.export``-based one (``exporter="dynamo"``), which is the
    fallback when the former fails.  Eval-mode BatchNorm is folded into the convolutions by
    the exporter; subnormal initializer entries are then flushed to zero (the
    ``flush-subnormals`` rewrite rule, applied to the file: subnormal arithmetic is several
    times slower on x86 CPUs).  Our weights metadata (charset, input size, provenance) is
    embedded as the ONNX ``metadata_props`` key ``lprnet``, so an ``.onnx`` file can be
    loaded on its own (:func:`read_onnx_meta`).

The allowlist (:data:`ALLOWED_OPS`)
    Every exported graph passes ``onnx.checker.check_model`` and an op-type scan
    (:func:`check_ops`): only operators supported by *all* of the following are accepted,
    and pooling/convolution must be 2-D (``kernel_shape`` of length 2; the reference
    model's ``MaxPool3d`` exports as a 3-D ``MaxPool`` that ONNX Runtime refuses to load and
    TensorRT/NPU toolchains reject):

    * TensorRT — onnx-tensorrt "Supported ONNX Operators" (``docs/operators.md``);
    * OpenVINO — ONNX frontend supported operations (``openvino/docs``: "Supported
      Operations - ONNX");
    * Rockchip RKNN-Toolkit2 — "RKNN Compiler Support Operator List" (and the ONNX Runtime
      RKNPU execution provider's op table);
    * Huawei Ascend CANN ATC — "ONNX operator specifications" (ATC model conversion);
    * common NPU converters besides (Qualcomm QNN/SNPE "Supported ONNX Ops", Arm NN ONNX
      parser, ST Edge AI), all of which list the ops below for 2-D, fp32 use.

    The list: ``Conv``, ``Relu``, ``MaxPool``, ``AveragePool``, ``GlobalAveragePool``,
    ``BatchNormalization``, ``Slice``, ``Concat``, ``ReduceMean``, ``Div``, ``Mul``,
    ``Pow``, ``Add``, ``Sub``, ``Reshape``, ``Transpose``, ``Flatten``, ``Squeeze``,
    ``Unsqueeze``, ``Identity``, ``Constant``, ``Gemm``, ``MatMul`` — plus
    :data:`QDQ_OPS` (``QuantizeLinear``/``DequantizeLinear``) for INT8 QDQ graphs only.
    Anything else (``Shape``/``Gather`` chains from dynamic-shape arithmetic, ``Max`` from
    a 3-D pool decomposition, ``If``/``Loop``...) fails the export with the offending op
    names.

Parity
    :func:`check_parity` runs a backend and PyTorch on the same crops, preprocessed by
    :mod:`lprnet.core.process` and decoded by :meth:`lprnet.recognizer.Recognizer.decode_logits`
    with the decoding ``lprnet.load`` gives by default (plate decoding when the charset can write
    every Chinese plate layout, greedy otherwise), and reports the max abs logit difference and
    decoded-string agreement.  fp32 logits must satisfy ``|b - t| <= atol + rtol * |t|`` with
    ``atol=1e-4, rtol=1e-5`` (LPRNet logits reach |t| ~ 130, where one fp32 ulp is 1.5e-5;
    measured on the 1,000 real crops: max abs 8.0e-5 for ONNX Runtime, 9.9e-5 for OpenVINO)
    and decode to identical strings; :func:`parity_images` picks real crops when a labelled folder is available
    (``data=``, ``$LPRNET_PARITY_DATA``, or ``../shared/data/plates-cn-1k``) and synthetic
    ones otherwise.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from lprnet.config import ModelConfig
from lprnet.core.backend import Backend
from lprnet.core.process import (
    IMAGE_EXTENSIONS,
    ImageError,
    ctc_decode,
    label_from_filename,
    list_images,
    preprocess,
    read_image,
    resolve_decode,
)
from lprnet.errors import first_line
from lprnet.weights import chmod_as_created

if TYPE_CHECKING:
    import onnx as onnx_t

    from lprnet.weights import WeightsMeta

OPSET = 17
OPSET_MIN = 11  # below 11 the exporter writes the pools' padding as a separate Pad, outside the allowlist
OPSET_MAX = 20  # the TorchScript exporter's newest
INT8_OPSET_MIN = 13  # a per-channel QDQ graph needs DequantizeLinear's axis attribute (opset 13)
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
META_KEY = "lprnet"
EXPORT_META_KEY = "lprnet.export"
INT8_META_KEY = "lprnet.int8"  # an INT8 QDQ file's quantisation record (lprnet.export.int8)

#: operators accepted by TensorRT, OpenVINO, RKNN, Ascend ATC and the other toolchains
#: named in the module docstring (2-D use, fp32)
ALLOWED_OPS: frozenset[str] = frozenset({
    "Conv", "Relu", "MaxPool", "AveragePool", "GlobalAveragePool", "BatchNormalization",
    "Slice", "Concat", "ReduceMean", "Div", "Mul", "Pow", "Add", "Sub", "Reshape", "Transpose",
    "Flatten", "Squeeze", "Unsqueeze", "Identity", "Constant", "Gemm", "MatMul",
})
#: extra operators of an INT8 QDQ graph (OpenVINO and ORT consume QDQ directly; TensorRT's explicit quantisation
#: needs int8 activations: ``lprnet export --int8 --int8-activations int8``)
QDQ_OPS: frozenset[str] = frozenset({"QuantizeLinear", "DequantizeLinear"})
#: ops whose spatial rank must be 2 (``kernel_shape`` of length 2)
SPATIAL_OPS: frozenset[str] = frozenset({"Conv", "MaxPool", "AveragePool", "ConvTranspose"})

_REPO_ROOT = Path(__file__).resolve().parents[3]
PARITY_ENV = "LPRNET_PARITY_DATA"


class ExportError(RuntimeError):
    """An export that failed or produced a graph/runtime we refuse; the message says why."""


# ---------------------------------------------------------------------------- allowlist
def _load(model: onnx_t.ModelProto | str | os.PathLike[str]) -> onnx_t.ModelProto:
    import onnx

    return model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))


def _iter_nodes(graph: Any) -> Iterable[Any]:
    """Nodes of ``graph`` and of every subgraph (``If``/``Loop`` bodies)."""
    import onnx

    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _iter_nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _iter_nodes(g)


def _spatial_rank(node: Any, inits: dict[str, Any]) -> int | None:
    for attr in node.attribute:
        if attr.name == "kernel_shape":
            return len(attr.ints)
    if node.op_type in ("Conv", "ConvTranspose") and len(node.input) > 1 and node.input[1] in inits:
        return len(inits[node.input[1]].dims) - 2
    return None


def check_ops(model: onnx_t.ModelProto | str | os.PathLike[str],
              allowed: Iterable[str] = ALLOWED_OPS) -> dict[str, int]:
    """``onnx.checker`` + op-type scan; returns op counts, raises :class:`ExportError`.

    Fails when an op type is not in ``allowed`` or a convolution/pooling is not 2-D
    (e.g. the reference model's ``MaxPool3d``, exported as a ``MaxPool`` with a
    3-entry ``kernel_shape``); the message names every offending op and node.
    """
    import onnx

    m = _load(model)
    try:
        onnx.checker.check_model(m)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"ONNX checker rejected the graph: {first_line(e)}") from None
    allow = set(allowed)
    inits = {t.name: t for t in m.graph.initializer}
    counts: Counter[str] = Counter()
    bad: dict[str, list[str]] = {}
    for node in _iter_nodes(m.graph):
        counts[node.op_type] += 1
        if node.op_type not in allow:
            bad.setdefault(node.op_type, []).append(node.name or "?")
        elif node.op_type in SPATIAL_OPS:
            rank = _spatial_rank(node, inits)
            if rank is not None and rank != 2:
                bad.setdefault(f"{node.op_type}{rank}d", []).append(node.name or "?")
    if bad:
        parts = [f"{op} (x{len(names)}: {', '.join(names[:3])}{'...' if len(names) > 3 else ''})"
                 for op, names in sorted(bad.items())]
        raise ExportError("graph uses operators outside the portable allowlist: " + "; ".join(parts)
                          + f". Allowed: {', '.join(sorted(allow))} (2-D pooling/convolution only)")
    return dict(sorted(counts.items()))


# ---------------------------------------------------------------------------- export
def _flush_subnormals(m: onnx_t.ModelProto) -> int:
    """Zero subnormal float32 entries of initializers and Constant tensors; returns the count."""
    from onnx import numpy_helper

    tiny = np.finfo(np.float32).tiny
    tensors = list(m.graph.initializer)
    for node in m.graph.node:
        if node.op_type == "Constant":
            tensors += [a.t for a in node.attribute if a.name == "value" and a.t is not None]
    flushed = 0
    for t in tensors:
        if t.data_type != 1:  # FLOAT
            continue
        a = numpy_helper.to_array(t)
        mask = (np.abs(a) < tiny) & (a != 0)
        n = int(mask.sum())
        if n:
            a = a.copy()
            a[mask] = 0.0
            t.CopyFrom(numpy_helper.from_array(a, t.name))
            flushed += n
    return flushed


def _set_meta(m: onnx_t.ModelProto, key: str, value: dict[str, Any]) -> None:
    for p in list(m.metadata_props):
        if p.key == key:
            m.metadata_props.remove(p)
    entry = m.metadata_props.add()
    entry.key = key
    entry.value = json.dumps(value, ensure_ascii=False)


def _torch_export(model: nn.Module, x: torch.Tensor, path: Path, opset: int, dynamic: bool,
                  exporter: str) -> None:
    with contextlib.ExitStack() as stack:
        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore")
        stack.enter_context(contextlib.redirect_stdout(stack.enter_context(open(os.devnull, "w"))))
        if exporter == "torchscript":
            torch.onnx.export(model, (x,), str(path), opset_version=opset, dynamo=False,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
                              if dynamic else None, do_constant_folding=True)
        elif exporter == "dynamo":
            shapes = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic else None
            prog = torch.onnx.export(model, (x,), None, opset_version=max(opset, 18), dynamo=True,
                                     input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                     dynamic_shapes=shapes, optimize=True, verbose=False)
            prog.save(str(path))  # type: ignore[union-attr]
        else:
            raise ValueError(f"exporter must be 'torchscript' or 'dynamo', got {exporter!r}")


#: how another runtime feeds and reads the exported network (``lprnet.core.process`` does it in Python), written
#: into every export's info so that a C++, Java or NPU pipeline finds it in the file
PREPROCESS = {"input": "float32 N x 3 x H x W (NCHW), H x W = input_size[1] x input_size[0]",
              "channels": "BGR (as OpenCV reads an image)",
              "resize": "the whole crop to W x H, bilinear (OpenCV INTER_LINEAR), no letterbox",
              "normalize": "(x - 127.5) * 0.0078125 on 0-255 values",
              "output": "logits N x C x T; CTC: per step the best class, repeats merged, blanks dropped; "
                        "C = the charset in the lprnet metadata, blank its last class"}
MODEL_DOC = ("LPRNet licence-plate recognizer (lprnet). Input 'input': float32 N x 3 x {h} x {w}, BGR, resized "
             "bilinearly to {w} x {h}, (x - 127.5) * 0.0078125. Output 'logits': N x C x T, CTC with the blank as "
             "the last class; charset and settings in the metadata_props '" + META_KEY + "' and '" + EXPORT_META_KEY
             + "' (INT8: '" + INT8_META_KEY + "').")


def export_onnx(model: nn.Module, out: str | os.PathLike[str], *, input_size: tuple[int, int] = (94, 24),
                batch: int | None = None, opset: int | None = None, meta: WeightsMeta | None = None,
                exporter: str = "torchscript", flush_subnormals: bool = True,
                allowed: Iterable[str] = ALLOWED_OPS) -> dict[str, Any]:
    """Export ``model`` (eval mode) to ``out`` and check the graph against the allowlist.

    ``batch=None`` gives a dynamic batch axis, an int a fixed one.  Returns a summary
    (path, op counts, flushed subnormals, exporter, opset).  ``out`` is written atomically
    and only when every check passed.  ``opset=None`` is :data:`OPSET`, which the fallback
    exporter may write as 18; an opset asked for is written exactly, or the export fails.
    """
    import onnx

    if opset is not None and not OPSET_MIN <= opset <= OPSET_MAX:
        raise ValueError(f"opset must be between {OPSET_MIN} and {OPSET_MAX}, got {opset}")
    asked, opset = opset, OPSET if opset is None else opset
    if batch is not None and batch < 1:
        raise ValueError(f"batch must be >= 1 or None (dynamic), got {batch}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    m = copy.deepcopy(model).float().eval()
    w, h = input_size
    x = torch.zeros(batch or 2, 3, h, w)
    fd, tmp_name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    chmod_as_created(tmp_name)  # mkstemp makes it 0600; an export is for other users too
    tmp = Path(tmp_name)
    used = exporter
    try:
        try:
            _torch_export(m, x, tmp, opset, batch is None, exporter)
        except Exception as e:
            if exporter != "torchscript":
                raise ExportError(f"torch.onnx.export ({exporter}) failed: {type(e).__name__}: {e}") from e
            used = "dynamo"
            try:
                _torch_export(m, x, tmp, opset, batch is None, "dynamo")
            except Exception as e2:
                raise ExportError(f"torch.onnx.export failed with both exporters: torchscript: "
                                  f"{type(e).__name__}: {e}; dynamo: {type(e2).__name__}: {e2}") from e2
        proto = onnx.load(str(tmp))
        flushed = _flush_subnormals(proto) if flush_subnormals else 0
        written = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), opset)
        if asked is not None and written != asked:
            raise ExportError(f"opset {asked} was asked for, but the {used} exporter wrote opset {written} (the "
                              f"TorchScript exporter failed; the torch.export-based one writes 18 or newer)")
        info = {"opset": written, "exporter": used, "torch": torch.__version__,  # the dynamo exporter writes >= 18
                "batch": batch if batch is not None else "dynamic", "flushed_subnormals": flushed,
                "input": INPUT_NAME, "output": OUTPUT_NAME, "input_size": list(input_size),
                "preprocess": PREPROCESS}
        if meta is not None:
            _set_meta(proto, META_KEY, meta.to_json())
        _set_meta(proto, EXPORT_META_KEY, info)
        proto.producer_name = "lprnet"
        proto.doc_string = MODEL_DOC.format(w=input_size[0], h=input_size[1])
        ops = check_ops(proto, allowed)
        onnx.save(proto, str(tmp))
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return {"path": str(out), "ops": ops, **info}


def read_onnx_meta(path: str | os.PathLike[str]) -> tuple[WeightsMeta | None, dict[str, Any]]:
    """(weights metadata, export info) embedded by :func:`export_onnx` (``None``/``{}``
    when absent); see :func:`proto_meta`."""
    import onnx

    return proto_meta(onnx.load(str(path), load_external_data=False))


def proto_meta(proto: Any) -> tuple[WeightsMeta | None, dict[str, Any]]:
    """(weights metadata, export info) of a loaded ONNX model; an INT8 file's quantisation record is in the info
    as ``"int8"``."""
    from lprnet.weights import WeightsMeta

    props = {p.key: p.value for p in proto.metadata_props}
    meta = WeightsMeta.from_json(json.loads(props[META_KEY])) if META_KEY in props else None
    info = json.loads(props[EXPORT_META_KEY]) if EXPORT_META_KEY in props else {}
    if INT8_META_KEY in props:
        info["int8"] = json.loads(props[INT8_META_KEY])
    return meta, info


# ---------------------------------------------------------------------------- parity
def find_parity_dir(data: str | os.PathLike[str] | None = None) -> Path | None:
    """The folder of labelled real crops to check parity on, or ``None``: ``data`` if given,
    else ``$LPRNET_PARITY_DATA``, else ``../shared/data/plates-cn-1k`` beside the working
    directory or the repository.  ``data="synthetic"`` (or ``$LPRNET_PARITY_DATA=synthetic``) forces synthetic crops."""
    if data is not None and str(data) == "synthetic":
        return None
    if data is not None:
        p = Path(data)
        if not p.is_dir():
            raise ExportError(f"{p}: parity data folder not found")
        return p
    env = os.environ.get(PARITY_ENV)
    if env == "synthetic":
        return None
    cands = [Path(env)] if env else []
    cands += [Path.cwd() / ".." / "shared" / "data" / "plates-cn-1k",
              _REPO_ROOT / ".." / "shared" / "data" / "plates-cn-1k"]
    for c in cands:
        if c.is_dir():
            return c.resolve()
    return None


def parity_images(n: int = 256, data: str | os.PathLike[str] | None = None, seed: int = 0,
                  input_size: tuple[int, int] = (94, 24)
                  ) -> tuple[list[np.ndarray], list[str] | None, str]:
    """``n`` BGR crops for a parity check: (images, labels or None, source description).

    Real crops (evenly spread over the sorted folder) when :func:`find_parity_dir` finds a
    folder, else synthetic ones from :func:`lprnet.data.synth.generate` (labels = their text).
    ``data`` may also name any labelled dataset ``lprnet eval`` reads: a ``path,plate`` manifest, or
    ``ccpd:DIR`` (scenes rectified from their file names).
    """
    if data is not None and str(data) != "synthetic":
        from lprnet.data import real

        path, kind = real.split_kind_prefix(data)
        if kind is not None or path.is_file():
            try:
                samples = real.load_source(path, kind, strict=False)
                if not samples:
                    raise ExportError(f"{data}: no labelled plates for the parity check")
                pick = samples[::max(1, len(samples) // max(1, n))][:n]
                return ([real.load_crop(s, input_size if s.quad is not None else None) for s in pick],
                        [s.plate for s in pick], f"{kind or 'manifest'}:{path}")
            except (real.DataError, ImageError) as e:
                raise ExportError(f"{data}: {e}") from None
    d = find_parity_dir(data)
    if d is not None:
        files = list_images([d])  # subfolders too, as every command that reads a folder of crops
        if files:
            step = max(1, len(files) // max(1, n))
            pick = files[::step][:n]
            return [read_image(p) for p in pick], [label_from_filename(p) for p in pick], f"real:{d}"
        if data is not None or os.environ.get(PARITY_ENV):  # named by the user: never quietly synthetic instead
            raise ExportError(f"{d}: no plate crops in this folder ({', '.join(IMAGE_EXTENSIONS)}) for the parity "
                              "check; name a folder of crops, or 'synthetic'")
    from lprnet.data.synth import generate

    imgs, labels = [], []
    # a test set: no smudged provinces (a training device; an unreadable province has no right reading)
    for img, text, _ in generate(n, seed, out_size=input_size, province_smudge=0.0):
        imgs.append(img)
        labels.append(text)
    return imgs, labels, f"synthetic:seed={seed}"


@dataclass
class ParityReport:
    """A runtime checked against PyTorch on the same crops."""

    backend: str
    source: str
    n: int
    max_abs_diff: float
    agreement: float
    atol: float
    min_agreement: float
    rtol: float = 0.0
    decode: str = "greedy"
    within_bound: bool = True
    max_rel_diff: float = 0.0
    accuracy_torch: float | None = None
    accuracy_backend: float | None = None
    disagreements: list[dict[str, str]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.within_bound and self.agreement >= self.min_agreement)

    def to_json(self) -> dict[str, Any]:
        return {"backend": self.backend, "source": self.source, "n": self.n,
                "max_abs_diff": self.max_abs_diff, "max_rel_diff": self.max_rel_diff,
                "agreement": self.agreement, "decode": self.decode,
                "atol": None if self.atol == float("inf") else self.atol,
                "rtol": self.rtol, "within_bound": self.within_bound,
                "min_agreement": self.min_agreement, "accuracy_torch": self.accuracy_torch,
                "accuracy_backend": self.accuracy_backend, "passed": self.passed,
                "disagreements": self.disagreements[:10]}

    def to_text(self) -> str:
        acc = ""
        if self.accuracy_torch is not None and self.accuracy_backend is not None:
            acc = f"; accuracy torch {self.accuracy_torch:.4f} vs {self.backend} {self.accuracy_backend:.4f}"
        bound = ("not bounded: quantised logits move, the check is on the readings" if self.atol == float("inf") else
                 f"bound {self.atol:g} + {self.rtol:g}*|t|: {'ok' if self.within_bound else 'EXCEEDED'}")
        return (f"parity {self.backend} vs torch on {self.n} crops ({self.source}): max |logit diff| "
                f"{self.max_abs_diff:.3g} (max rel {self.max_rel_diff:.2g}; {bound}); "
                f"decoded ({self.decode}) agreement {self.agreement:.4f} "
                f"(required >= {self.min_agreement:g}){acc} -> {'PASS' if self.passed else 'FAIL'}")


def check_parity(backend: Backend, reference: Backend, config: ModelConfig, images: Sequence[np.ndarray],
                 labels: Sequence[str] | None = None, *, source: str = "", atol: float = 1e-4,
                 rtol: float = 1e-5, min_agreement: float = 1.0, batch_size: int = 64,
                 decode: str = "auto") -> ParityReport:
    """Compare ``backend`` with ``reference`` (PyTorch) on ``images`` (BGR crops).

    Both get the same input from :func:`lprnet.core.process.preprocess` and are decoded as a
    :func:`lprnet.core.process.ctc_decode` with ``decode`` (``"auto"``, as ``lprnet.load``:
    plate decoding for a charset that can write Chinese plates, else greedy), as the recognizer decodes.
    ``atol=inf`` only reports the logit difference
    (INT8); logits must satisfy ``|b - t| <= atol + rtol * |t|``; ``min_agreement`` is
    the required fraction of identical decoded strings.
    """
    decode = resolve_decode(decode, config.charset)
    max_diff = max_rel = 0.0
    within = True
    got: list[str] = []
    want: list[str] = []
    for i in range(0, len(images), batch_size):
        chunk = list(images[i:i + batch_size])
        x = preprocess(chunk, config.input_size)
        lb, lr = backend(x), reference(x)
        if lb.shape != lr.shape:
            raise ExportError(f"{backend.name} returned logits of shape {lb.shape}, torch {lr.shape}")
        if lb.size:
            d = np.abs(lb.astype(np.float64) - lr)
            finite = np.isfinite(lr)
            within &= bool(np.array_equal(np.isfinite(lb), finite)) and bool(
                np.all(d[finite] <= atol + rtol * np.abs(lr[finite])))
            max_diff = max(max_diff, float(d[finite].max(initial=0.0)))
            max_rel = max(max_rel, float((d[finite] / np.maximum(np.abs(lr[finite]), 1e-6)).max(initial=0.0)))
        got += [p.plate for p in ctc_decode(lb, config.charset, decode)]
        want += [p.plate for p in ctc_decode(lr, config.charset, decode)]
    n = len(got)
    agree = sum(a == b for a, b in zip(got, want)) / max(1, n)
    dis = [{"torch": b, backend.name: a, **({"label": labels[i]} if labels else {})}
           for i, (a, b) in enumerate(zip(got, want)) if a != b]
    acc_t = acc_b = None
    if labels is not None and n:
        acc_t = sum(p == t for p, t in zip(want, labels)) / n
        acc_b = sum(p == t for p, t in zip(got, labels)) / n
    return ParityReport(backend.name, source, n, max_diff, agree, atol, min_agreement, rtol=rtol,
                        decode=decode, within_bound=within, max_rel_diff=max_rel, accuracy_torch=acc_t,
                        accuracy_backend=acc_b, disagreements=dis)
