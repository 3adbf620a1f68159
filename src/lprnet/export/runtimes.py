"""Non-PyTorch backends (ONNX Runtime, OpenVINO) and the export cache behind ``lprnet.load``.

* :class:`OnnxRuntimeBackend` — an ``onnxruntime.InferenceSession`` on the CPU execution
  provider with ``intra_op_num_threads``, sequential execution and graph optimisation
  ``ORT_ENABLE_ALL`` (not ORT's denormals-as-zero option: it sets the calling thread's
  FTZ/DAZ flags and would silently change PyTorch results in the same process; exported
  files have their subnormals flushed instead);
* :class:`OpenVinoBackend` — an OpenVINO compiled model on ``CPU`` with
  ``INFERENCE_NUM_THREADS``, fp32 inference precision (no silent bf16 on AMX/AVX512-BF16
  CPUs) and the latency hint (timed against ``ENABLE_CPU_PINNING=False``,
  ``CPU_DENORMALS_OPTIMIZATION``, ``THROUGHPUT`` with one stream and no hint on the INT8
  dead-channel model at one thread: all within 4 %, so the latency hint stays);
* :func:`load_backend` — what :func:`lprnet.load` calls for ``backend="onnxruntime"`` or
  ``"openvino"``: an ``.onnx``/``.xml`` file is used as is (its embedded metadata gives the
  charset and input size); weights (``.safetensors``/``.pth``/``None`` = bundled) are
  exported once to a cache (``$LPRNET_CACHE`` or ``~/.cache/lprnet``, keyed by the weights
  file's hash, the format, the lprnet version, the ONNX opset and the exporter and runtime
  versions), each export passing the allowlist and the parity check before it is moved into
  the cache.  A model whose output class count differs from its metadata's charset is refused.

Both backends implement :class:`lprnet.core.backend.Backend` (float32 ``N x 3 x H x W`` ->
logits ``N x C x T``); a model exported with a fixed batch is fed in chunks of that size
(the last one zero-padded).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lprnet.errors import first_line, native_error_text
from lprnet.export.onnx import ExportError, proto_meta, read_onnx_meta
from lprnet.weights import WeightsMeta, file_sha256

CACHE_ENV = "LPRNET_CACHE"
OV_META_PATH = ["lprnet", "meta"]
OV_INFO_PATH = ["lprnet", "export"]


def _fixed_batch(run: Callable[[np.ndarray], np.ndarray], batch: np.ndarray, fixed: int | None
                 ) -> np.ndarray:
    """Run ``batch`` through ``run``; a fixed-batch model gets chunks of ``fixed`` rows."""
    x = np.ascontiguousarray(batch, dtype=np.float32)
    if fixed is None or x.shape[0] == fixed:
        return run(x)
    outs = []
    for i in range(0, x.shape[0], fixed):
        chunk = x[i:i + fixed]
        n = chunk.shape[0]
        if n < fixed:
            chunk = np.concatenate([chunk, np.zeros((fixed - n, *chunk.shape[1:]), np.float32)])
        outs.append(run(chunk)[:n])
    return np.concatenate(outs) if outs else run(x)


def _static_batch(dim: Any) -> int | None:
    return int(dim) if isinstance(dim, int) and dim > 0 else None


def _static_dim(shape: Any, i: int) -> int | None:
    """``shape[i]`` when it is a fixed size (an ONNX Runtime shape lists ints and names)."""
    return _static_batch(shape[i]) if len(shape) > i else None


class OnnxRuntimeBackend:
    """ONNX Runtime (CPU) on an exported ``.onnx`` file."""

    name = "onnxruntime"

    def __init__(self, path: str | os.PathLike[str], threads: int | None = None,
                 providers: list[str] | None = None) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = int(threads) if threads else 0  # 0: ORT's default
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        self.path = Path(path)
        try:
            self.session = ort.InferenceSession(str(path), sess_options=so,
                                                providers=providers or ["CPUExecutionProvider"])
        except Exception as e:
            raise ExportError(f"{path}: ONNX Runtime cannot load the model: {first_line(e)}") from None
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        out = self.session.get_outputs()[0]
        self.output_name = out.name
        self.batch = _static_batch(inp.shape[0])
        self.input_hw = (_static_dim(inp.shape, 2), _static_dim(inp.shape, 3))  # input N x 3 x H x W
        self.num_classes, self.steps = _static_dim(out.shape, 1), _static_dim(out.shape, 2)  # logits N x C x T

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: x})[0]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return _fixed_batch(self._run, batch, self.batch)


class OpenVinoBackend:
    """OpenVINO (CPU) on an IR ``.xml`` (or an ``.onnx`` file, converted in memory)."""

    name = "openvino"

    def __init__(self, path: str | os.PathLike[str], threads: int | None = None, device: str = "CPU") -> None:
        import openvino as ov

        self.path = Path(path)
        core = ov.Core()
        try:
            model = core.read_model(str(path))
        except Exception as e:
            raise ExportError(f"{path}: OpenVINO cannot read the model ({native_error_text(e)})") from None
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self.compiled = core.compile_model(model, device, config)
        self.request = self.compiled.create_infer_request()
        self._lock = threading.Lock()  # one InferRequest: callers on several threads take turns
        shape = model.inputs[0].get_partial_shape()
        self.batch = shape[0].get_length() if shape[0].is_static else None
        out = model.outputs[0].get_partial_shape()  # logits N x C x T

        def dim(ps: Any, i: int) -> int | None:
            return ps[i].get_length() if ps.rank.is_static and len(ps) > i and ps[i].is_static else None

        self.input_hw = (dim(shape, 2), dim(shape, 3))  # input N x 3 x H x W
        self.num_classes, self.steps = dim(out, 1), dim(out, 2)

    def _run(self, x: np.ndarray) -> np.ndarray:
        with self._lock:  # unlocked, two threads' results could swap (or the request fail) silently
            out = self.request.infer({0: x})
            return np.array(out[self.compiled.outputs[0]], copy=True)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return _fixed_batch(self._run, batch, self.batch)


def read_ir_meta(path: str | os.PathLike[str]) -> tuple[WeightsMeta | None, dict[str, Any]]:
    """(weights metadata, export info) stored in an OpenVINO IR's ``rt_info``; see :func:`ir_model_meta`."""
    import openvino as ov

    return ir_model_meta(ov.Core().read_model(str(path)))


def ir_model_meta(model: Any) -> tuple[WeightsMeta | None, dict[str, Any]]:
    """(weights metadata, export info) of a read OpenVINO model."""

    def get(key: list[str]) -> dict[str, Any] | None:
        if not model.has_rt_info(key):
            return None
        return json.loads(model.get_rt_info(key).astype(str))

    meta = get(OV_META_PATH)
    return (WeightsMeta.from_json(meta) if meta else None), (get(OV_INFO_PATH) or {})


def _check_ir_bin(xml: Path) -> None:
    """The commonest IR mistake, named: the .xml copied without its .bin."""
    if not xml.with_suffix(".bin").is_file():
        raise ExportError(f"{xml}: its weights file {xml.with_suffix('.bin').name} is not beside it (an OpenVINO IR "
                          "is the .xml and the .bin of the same name: copy both)")


def describe_model(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What ``lprnet info`` prints for an exported ``.onnx`` or ``.xml``: our metadata and export info (opset,
    preprocessing, INT8 record, ...), the graph's inputs and outputs with their shapes, and its op types."""
    p = Path(path)
    if p.suffix.lower() == ".xml":
        import openvino as ov

        _check_ir_bin(p)
        try:
            model = ov.Core().read_model(str(p))
        except Exception as e:
            raise ExportError(f"{p}: OpenVINO cannot read the model ({native_error_text(e)})") from None
        meta, info = ir_model_meta(model)
        io = {"inputs": [{"name": t.get_any_name(), "shape": str(t.get_partial_shape()),
                          "type": t.get_element_type().get_type_name()} for t in model.inputs],
              "outputs": [{"name": t.get_any_name(), "shape": str(t.get_partial_shape()),
                           "type": t.get_element_type().get_type_name()} for t in model.outputs],
              "ops": sorted({op.get_type_name() for op in model.get_ops()})}
        fmt = "openvino-ir"
    else:
        import onnx

        try:
            proto = onnx.load(str(p), load_external_data=False)
            meta, info = proto_meta(proto)
        except Exception as e:
            raise ExportError(f"{p}: not a readable ONNX model ({native_error_text(e)})") from None
        elem = {v: k for k, v in onnx.TensorProto.DataType.items()}

        def tensor(v: Any) -> dict[str, Any]:
            t = v.type.tensor_type
            return {"name": v.name, "shape": [d.dim_param or d.dim_value for d in t.shape.dim],
                    "type": elem.get(t.elem_type, str(t.elem_type)).lower()}

        inits = {i.name for i in proto.graph.initializer}
        io = {"opset": {o.domain or "ai.onnx": o.version for o in proto.opset_import},
              "inputs": [tensor(v) for v in proto.graph.input if v.name not in inits],
              "outputs": [tensor(v) for v in proto.graph.output],
              "ops": sorted({n.op_type for n in proto.graph.node})}
        fmt = "onnx"
    d: dict[str, Any] = {"source_format": fmt}
    if meta is not None:
        d["lprnet"] = meta.to_json()
        d["lprnet"]["config"]["charset"] = d["lprnet"]["config"]["charset"]["chars"]
    return {**d, "export": info, **io}


# ---------------------------------------------------------------------------- cache
def cache_dir() -> Path:
    """``$LPRNET_CACHE`` or ``$XDG_CACHE_HOME/lprnet`` or ``~/.cache/lprnet``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "lprnet"


def _versions() -> str:
    """What an export depends on besides the weights: lprnet, the ONNX opset and the exporters' and
    runtimes' versions (an upgrade of any of them makes a new cache entry)."""
    import onnx
    import torch

    from lprnet.config import VERSION
    from lprnet.export import onnx as onnx_export

    v = f"lprnet={VERSION};opset={onnx_export.OPSET};torch={torch.__version__};onnx={onnx.__version__}"
    for name in ("onnxruntime", "openvino"):  # either may be missing when only the other is used
        try:
            v += f";{name}={importlib.import_module(name).__version__}"
        except ImportError:  # pragma: no cover
            pass
    return v


def cache_path(weights: Path, fmt: str) -> Path:
    """Cache file for ``weights`` exported to ``fmt`` (``onnx`` or ``openvino``)."""
    key = hashlib.sha256(f"{file_sha256(weights)}|{fmt}|{_versions()}".encode()).hexdigest()
    return cache_dir() / f"{weights.stem}-{key[:16]}.{'xml' if fmt == 'openvino' else 'onnx'}"


def _meta_for(path: Path) -> WeightsMeta:
    meta, _ = read_ir_meta(path) if path.suffix.lower() == ".xml" else read_onnx_meta(path)
    if meta is None:
        raise ExportError(f"{path}: no lprnet metadata in the model file (export it with `lprnet export`)")
    return meta


def _model_meta(path: Path) -> WeightsMeta:
    """:func:`_meta_for`, with a corrupt file reported as an :class:`ExportError` naming it."""
    try:
        return _meta_for(path)
    except ExportError:
        raise
    except Exception as e:  # protobuf / OpenVINO parse errors
        kind = "OpenVINO IR" if path.suffix.lower() == ".xml" else "ONNX"
        raise ExportError(f"{path}: not a readable {kind} model ({native_error_text(e)})") from None


def load_backend(weights: str | os.PathLike[str] | None, backend: str, threads: int | None = None
                 ) -> tuple[OnnxRuntimeBackend | OpenVinoBackend, WeightsMeta]:
    """The runtime and metadata for ``weights`` (see the module docstring)."""
    if backend not in ("onnxruntime", "openvino"):
        raise ValueError(f"unknown export backend {backend!r}; available: onnxruntime, openvino")
    from lprnet.weights import WeightsError, default_weights_path

    p = Path(weights) if weights is not None else default_weights_path()
    if p.is_dir():
        raise WeightsError(f"{p}: is a directory, not a weights or model file")
    if not p.is_file():
        raise WeightsError(f"{p}: no such weights file")
    suffix = p.suffix.lower()
    if suffix == ".onnx":
        model_path = p
    elif suffix == ".xml":
        if backend != "openvino":
            raise ValueError(f"{p}: an OpenVINO IR needs backend='openvino'")
        _check_ir_bin(p)
        model_path = p
    else:
        model_path = _cached_export(p, "openvino" if backend == "openvino" else "onnx")
    meta = _model_meta(model_path)
    be = OpenVinoBackend(model_path, threads) if backend == "openvino" else OnnxRuntimeBackend(model_path, threads)
    cfg = meta.config
    w, h = cfg.input_size
    for what, got, want in (("classes", be.num_classes, cfg.charset.num_classes),
                            ("input height", be.input_hw[0], h), ("input width", be.input_hw[1], w),
                            ("output steps", be.steps, cfg.output_length)):
        if got is not None and got != want:  # checked here: a mismatch would fail on the first batch, deep inside
            raise ExportError(f"{p}: {what}: the network has {got}, its metadata says {want} (input "
                              f"{w}x{h}, {cfg.charset.num_classes} classes, {cfg.output_length} steps); the "
                              "metadata does not belong to this network")
    return be, meta


def _cached_export(weights: Path, fmt: str) -> Path:
    """The cache file of ``weights`` exported to ``fmt``, made (and parity-checked) when missing."""
    from lprnet.weights import WeightsError

    try:
        model_path = cache_path(weights, fmt)
    except OSError as e:
        raise WeightsError(f"{weights}: cannot read the weights file ({e.strerror or e})") from None
    folder = model_path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if model_path.is_file():
            try:
                _model_meta(model_path)
                return model_path
            except ExportError:  # a damaged cache file is made again, not trusted
                model_path.unlink()
        from lprnet.export.pipeline import export_weights

        # synthetic parity crops: a library call reads no folder it was not given; the file
        # reaches the cache only after its parity check passed
        res = export_weights(weights, fmt, model_path, parity_n=32, parity_data="synthetic")
    except OSError as e:
        raise ExportError(f"{folder}: the export cache cannot be used ({e.strerror or e}); set {CACHE_ENV} "
                          "to a writable folder") from None
    if not res.ok:
        raise ExportError(f"export of {weights} for {fmt} failed its parity check: "
                          + "; ".join(r.to_text() for r in res.parity))
    return model_path
