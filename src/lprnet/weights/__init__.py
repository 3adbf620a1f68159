"""Weights I/O: our safetensors format with metadata, and import of reference ``.pth`` files.

Our file is a safetensors state dict whose metadata key ``lprnet`` holds JSON: the model
config (charset, input size, dropout, batchnorm), the form and context normalisation,
provenance, and the rewrite rules applied.  Reference-style ``.pth`` state dicts are read
with ``torch.load(weights_only=True, map_location="cpu")`` — nothing is unpickled beyond
tensors, and no CUDA is needed.  The bundled default weights live beside this module.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import pickle
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lprnet.charset import DEFAULT_CHARSET, Charset
from lprnet.config import CHANNEL_STRIDES, REFERENCE_CHANNEL_STRIDES, ModelConfig
from lprnet.errors import describe_error
from lprnet.model import LPRNet, ReferenceLPRNet

FORMAT = "lprnet-weights"
FORMAT_VERSION = 1
DEFAULT_WEIGHTS = Path(__file__).with_name("default.safetensors")


class WeightsError(ValueError):
    """A weights file that cannot be used; the message names the file and the problem."""


@dataclass
class WeightsMeta:
    config: ModelConfig = field(default_factory=ModelConfig)
    form: str = "deploy"
    context_norm: str = "sample"
    provenance: dict[str, Any] = field(default_factory=dict)
    rules: list[str] = field(default_factory=list)
    source_format: str = "safetensors"

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "config": self.config.to_json(),
            "form": self.form,
            "context_norm": self.context_norm,
            "provenance": self.provenance,
            "rules": self.rules,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> WeightsMeta:
        return cls(
            config=ModelConfig.from_json(d.get("config", {})),
            form=d.get("form", "deploy"),
            context_norm=d.get("context_norm", "sample"),
            provenance=dict(d.get("provenance", {})),
            rules=list(d.get("rules", [])),
        )


def chmod_as_created(path: str | os.PathLike[str]) -> None:
    """Give a ``tempfile.mkstemp`` file (mode 0600) the mode a plain ``open`` would: 0666 less the umask."""
    os.chmod(path, 0o666 & ~current_umask())


def current_umask() -> int:
    """The process umask, read without changing it where Linux tells it (``os.umask`` can only be read by
    setting it, which races with threads creating files meanwhile)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        chmod_as_created(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Flush a folder's entries (a rename just made in it) to disk, so that a power cut after an atomic
    write leaves the new file rather than the old one; a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_weights(path: str | os.PathLike[str], state_dict: dict[str, Tensor], meta: WeightsMeta) -> Path:
    """Write a state dict + metadata as safetensors, atomically."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()
               if not k.endswith("num_batches_tracked")}
    data = save(tensors, metadata={"lprnet": json.dumps(meta.to_json(), ensure_ascii=False)})
    atomic_write_bytes(path, data)
    return Path(path)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks (weights, exports and caches alike)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tensor_digest(state_dict: dict[str, Tensor]) -> str:
    """SHA-256 of the tensors alone: names, dtypes, shapes and bytes, in name order.

    A file's own hash also covers its metadata (provenance records the git commit and the
    command), so two runs that produce the same weights write different files; this digest
    is equal exactly when the tensors are bit-identical (``num_batches_tracked`` is not saved
    and not counted).
    """
    h = hashlib.sha256()
    for k in sorted(state_dict):
        if k.endswith("num_batches_tracked"):
            continue
        v = state_dict[k].detach().cpu().contiguous()
        h.update(f"{k}|{v.dtype}|{tuple(v.shape)}|".encode())
        h.update(v.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def average_weights(paths: list[str | os.PathLike[str]]) -> tuple[dict[str, Tensor], WeightsMeta]:
    """The uniform average of several weights files of one architecture ("model soup").

    Every floating-point tensor (parameters and BatchNorm statistics) is averaged in float64 and
    stored in the widest floating type among the files; other tensors are taken from the last file.
    Each file must fit the model its metadata describes (tensor names and types), and all must share the
    form, context normalisation, config, applied rewrite rules and tensor names and shapes; the error names
    the first file that does not.  The one exception is the layout: files of a narrower layout are widened
    (:func:`lprnet.model.widen_state_dict`, the same function) to the widest among them, so the
    weights a wide model was fine-tuned from can be averaged with it.
    The result's provenance lists each ingredient's file name, SHA-256 and provenance.
    """
    if len(paths) < 2:
        raise WeightsError(f"average needs at least two weights files, got {len(paths)}")
    from lprnet.model.widen import widen_state_dict

    read = [(path, *read_weights(path)) for path in paths]
    strides = tuple(min(m.config.channel_strides[i] for _, _, m in read) for i in range(2))
    sds, metas, ingredients = [], [], []
    for path, sd, meta in read:
        if meta.source_format != "safetensors":
            raise WeightsError(f"{path}: import it first (lprnet import-weights); averaging reads our format only")
        ingredients.append({"file": Path(path).name,
                            "sha256": file_sha256(path),
                            "tensors_sha256": tensor_digest(sd),
                            "provenance": meta.provenance})
        if meta.config.channel_strides != strides:
            try:
                sd = widen_state_dict(sd, meta.config.channel_strides, strides)  # type: ignore[arg-type]
            except ValueError as e:
                raise WeightsError(f"{path}: {e}") from None
            ingredients[-1]["widened_from"] = meta.config.variant
            meta = dataclasses.replace(meta, config=dataclasses.replace(meta.config, channel_strides=strides))
        if sds:
            first, m0 = sds[0], metas[0]
            c, c0 = meta.config.to_json(), m0.config.to_json()
            differ = [f"{name} {b!r} vs {a!r}" for name, a, b in [
                ("form", m0.form, meta.form), ("context normalisation", m0.context_norm, meta.context_norm),
                ("rewrite rules", m0.rules, meta.rules),
                *((f"config.{k}", c0.get(k), c.get(k)) for k in sorted(set(c) | set(c0)) if k != "charset"),
                ("charset", str(m0.config.charset), str(meta.config.charset))] if a != b]
            if differ:
                raise WeightsError(f"{path}: differs from {paths[0]} in {'; '.join(differ)}")
            if set(sd) != set(first) or any(sd[k].shape != first[k].shape for k in sd):
                raise WeightsError(f"{path}: tensor names or shapes differ from {paths[0]}")
        load_state(_deploy_model(meta), sd, str(path))  # names a tensor the model lacks, or of the wrong type
        sds.append(sd)
        metas.append(meta)
    out = {}
    for k, last in sds[-1].items():
        if last.is_floating_point():  # in the widest type among the files: the order of the files does not matter
            dtype = functools.reduce(torch.promote_types, (sd[k].dtype for sd in sds))
            out[k] = (sum(sd[k].double() for sd in sds) / len(sds)).to(dtype)
        else:
            out[k] = last.clone()
    trainers = {m.provenance.get("trainer") for m in metas}
    prov: dict[str, Any] = {"method": "uniform weight average", "ingredients": ingredients}
    if len(trainers) == 1 and None not in trainers:
        prov["trainer"] = trainers.pop()  # every ingredient came from the same trainer
    m = metas[-1]
    return out, WeightsMeta(config=m.config, form=m.form, context_norm=m.context_norm, provenance=prov,
                            rules=list(m.rules))


def _strip_prefix(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    for prefix in ("module.", "_orig_mod."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


#: Exported models by file suffix: named as such when given where weights are expected (a ``.bin`` only when its
#: content is not a PyTorch file: ``pytorch_model.bin`` is one).
_EXPORTED = {".onnx": "ONNX", ".xml": "OpenVINO IR", ".bin": "OpenVINO IR"}

#: The ``form`` and ``context_norm`` values our metadata may hold.
FORMS = ("deploy", "reference")
CONTEXT_NORMS = ("sample", "calibrated", "none", "batch")


def _sniff(p: Path) -> str | None:
    """``"safetensors"``, ``"torch"`` (``torch.save``'s zip archive, or its older bare pickle, as the reference
    checkpoint is) or None, from the first bytes of the file, whatever its name."""
    with open(p, "rb") as fh:
        head = fh.read(9)
    # a safetensors file starts with its header's length (8 bytes, little-endian) and the header's "{"
    if len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") <= p.stat().st_size - 8:
        return "safetensors"
    # a zip archive starts with its local-file-header signature; "PK" alone is not enough: a safetensors file
    # starts with its header length, whose low bytes are "PK" for a 19280-byte header (caught above)
    if head[:4] == b"PK\x03\x04" or (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")):
        return "torch"
    return None

#: Keys under which training checkpoints keep the model's state dict, in the order tried.
_CHECKPOINT_KEYS = ("state_dict", "model", "model_state_dict", "net")


def _read_pth(path: Path) -> dict[str, Tensor]:
    try:
        obj = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as e:  # torch's text goes on to suggest loading it unsafely: not ours to pass on
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        what = f"Python objects ({found.group(1)})" if found else "Python objects"
        raise WeightsError(f"{path}: holds {what} beside its tensors; a .pth is read with "
                           "torch.load(weights_only=True) and nothing else is unpickled: save the bare state dict "
                           "(torch.save(model.state_dict(), ...)) where the file was made") from None
    except Exception as e:  # zip errors, truncation
        raise WeightsError(f"{path}: not a readable PyTorch state dict ({describe_error(e)})") from None
    if isinstance(obj, dict) and {"model", "sampler", "scheduler", "config"} <= obj.keys():
        # ours (lprnet train's checkpoints/last.pt): its charset, input size, form and EMA weights are not a .pth's
        raise WeightsError(f"{path}: a checkpoint of `lprnet train`, for --resume; use the run's best.safetensors or "
                           "final.safetensors as weights")
    if isinstance(obj, dict) and not all(isinstance(v, Tensor) for v in obj.values()):
        # another trainer's checkpoint ("state_dict", "model", "model_state_dict", "net") holding one
        for key in _CHECKPOINT_KEYS:
            if isinstance(obj.get(key), dict) and obj[key]:
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        what = f"dict with keys {sorted(map(str, obj))[:8]}" if isinstance(obj, dict) else type(obj).__name__
        raise WeightsError(f"{path}: expected a state dict of tensors (or a checkpoint holding one under "
                           f"{', '.join(map(repr, _CHECKPOINT_KEYS))}), got {what}")
    return _strip_prefix(dict(obj))


def bare_safetensors(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a safetensors file of bare tensors, without our metadata (False for anything else)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return "lprnet" not in (f.metadata() or {})
    except (SafetensorError, OSError, ValueError):
        return False


def read_weights(path: str | os.PathLike[str], charset: Charset | None = None
                 ) -> tuple[dict[str, Tensor], WeightsMeta]:
    """Read our safetensors file or a reference ``.pth`` state dict.

    For ``.pth`` files the config is inferred: the class count comes from the tensors,
    the charset is ``charset`` (default: the reference Chinese set) and must match it.
    """
    p = Path(path)
    if not p.exists():
        raise WeightsError(f"{p}: no such weights file")
    if p.is_dir():
        raise WeightsError(f"{p}: is a directory, not a weights file")
    kind, suffix = _sniff(p), p.suffix.lower()
    if suffix in _EXPORTED and (suffix != ".bin" or kind is None):
        how = ("give the .xml beside it to `lprnet recognize --backend openvino`" if suffix == ".bin" else
               "`lprnet recognize`, `eval` and `serve` run it with --backend "
               + ("openvino" if suffix == ".xml" else "onnxruntime or openvino") + ", `lprnet info` describes it")
        raise WeightsError(f"{p}: an exported {_EXPORTED[suffix]} model, not a weights file (.safetensors, or a "
                           f"reference .pth): {how}; `bench`, `profile` and `export` take the weights it was "
                           "exported from")
    if kind == "torch" or (kind is None and suffix in (".pth", ".pt")):
        sd = _read_pth(p)
        meta = WeightsMeta(config=ModelConfig(charset=charset or DEFAULT_CHARSET, channel_strides=_strides_of(sd)),
                           form="reference",
                           context_norm="batch", source_format="pth",
                           provenance={"imported_from": p.name})
    else:
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(p), framework="pt") as f:
                raw = (f.metadata() or {}).get("lprnet")
                sd = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError, ValueError) as e:
            raise WeightsError(f"{p}: not a safetensors weights file ({e})") from None
        if raw is None:
            sd = _strip_prefix(sd)  # bare tensors saved from a DataParallel or compiled model
            if charset is None:
                raise WeightsError(f"{p}: safetensors file without lprnet metadata (charset, form); import it first: "
                                   f"lprnet import-weights {p} --charset CHARS --out W.safetensors")
            meta = WeightsMeta(config=ModelConfig(charset=charset, channel_strides=_strides_of(sd)))
        else:
            meta = _parse_meta(p, raw)
            if charset is not None and str(charset) != str(meta.config.charset):
                raise WeightsError(f"{p}: weights were trained for charset {str(meta.config.charset)!r}, "
                                   f"not {str(charset)!r}")
    _check_classes(p, sd, meta.config)
    nonfinite = nonfinite_tensors(sd)
    if nonfinite:
        raise WeightsError(f"{p}: {len(nonfinite)} tensor(s) hold NaN or inf values ({', '.join(nonfinite[:3])}"
                           f"{', ...' if len(nonfinite) > 3 else ''}): a diverged training run? Every plate "
                           "would read empty")
    return sd, meta


def _parse_meta(p: Path, raw: str) -> WeightsMeta:
    """Our ``lprnet`` metadata block, checked field by field: a :class:`WeightsError` names the file and the field."""
    def bad(name: str, why: str) -> WeightsError:
        return WeightsError(f"{p}: bad lprnet metadata: field {name!r} {why}")

    try:
        d = json.loads(raw)
    except ValueError as e:
        raise WeightsError(f"{p}: bad lprnet metadata (not JSON: {e})") from None
    if not isinstance(d, dict):
        raise WeightsError(f"{p}: bad lprnet metadata (a JSON {type(d).__name__}, not an object)")
    if d.get("format") != FORMAT:
        raise bad("format", f"is {d.get('format')!r}, not {FORMAT!r}")
    version = d.get("version", FORMAT_VERSION)
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise bad("version", f"is {version!r}; this lprnet reads versions 1 to {FORMAT_VERSION} (a newer file "
                             "needs a newer lprnet)")
    for name, typ, what in (("config", dict, "an object"), ("form", str, "a string"),
                            ("context_norm", str, "a string"), ("provenance", dict, "an object"),
                            ("rules", list, "a list")):
        if name in d and not isinstance(d[name], typ):
            raise bad(name, f"must be {what}, got {type(d[name]).__name__} {d[name]!r:.60}")
    for name, allowed in (("form", FORMS), ("context_norm", CONTEXT_NORMS)):
        if name in d and d[name] not in allowed:
            raise bad(name, f"is {d[name]!r}; expected one of {', '.join(allowed)}")
    if not all(isinstance(r, str) for r in d.get("rules", [])):
        raise bad("rules", f"must be a list of rule names (strings), got {d['rules']!r:.60}")
    cfg = d.get("config", {})
    for key in cfg:  # one field at a time, so that the error names the one that is wrong
        try:
            ModelConfig.from_json({key: cfg[key]})
        except (ValueError, KeyError, TypeError) as e:
            raise bad(f"config.{key}", f"is invalid ({type(e).__name__}: {e})") from None
    try:
        return WeightsMeta.from_json(d)
    except (ValueError, KeyError, TypeError) as e:
        raise bad("config", f"is invalid ({type(e).__name__}: {e})") from None


def nonfinite_tensors(state: dict[str, Tensor]) -> list[str]:
    """Names of the floating-point tensors of ``state`` holding an inf or a NaN."""
    return [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def _strides_of(sd: dict[str, Tensor]) -> tuple[int, int]:
    """The channel strides of weights without metadata, from the inputs of the convs after the two pools
    (the reference's ``(2, 4)`` when the tensors do not say; :func:`load_state` then names a mismatch)."""
    out = []
    for key, full, ref, allowed in zip(("backbone.8.block.0.weight", "backbone.16.weight"), (128, 256),
                                       REFERENCE_CHANNEL_STRIDES, CHANNEL_STRIDES):
        w = sd.get(key)
        n = int(w.shape[1]) if w is not None and w.dim() == 4 else 0
        out.append(full // n if n and full % n == 0 and full // n in allowed else ref)
    return out[0], out[1]


def _check_classes(p: Path, sd: dict[str, Tensor], cfg: ModelConfig) -> None:
    w = sd.get("container.0.weight")
    if w is None:
        raise WeightsError(f"{p}: not LPRNet weights (no 'container.0.weight'; "
                           f"keys start {sorted(sd)[:3]})")
    if w.shape[0] != cfg.num_classes:
        raise WeightsError(f"{p}: weights have {w.shape[0]} classes but the charset has "
                           f"{cfg.num_classes} ({str(cfg.charset)[:20]}...)")


def load_state(model: nn.Module, sd: dict[str, Tensor], name: str = "<weights>") -> None:
    """``load_state_dict`` with an error that lists missing/unexpected keys by name."""
    sd = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    own = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    missing = sorted(own - set(sd))
    unexpected = sorted(set(sd) - own)
    if missing or unexpected:
        raise WeightsError(f"{name}: weights do not fit the model: missing {missing[:6]}"
                           f"{'...' if len(missing) > 6 else ''}, unexpected {unexpected[:6]}"
                           f"{'...' if len(unexpected) > 6 else ''}")
    bad = [k for k, v in model.state_dict().items() if k in sd and v.shape != sd[k].shape]
    if bad:
        k = bad[0]
        raise WeightsError(f"{name}: shape mismatch for {k}: file {tuple(sd[k].shape)}, "
                           f"model {tuple(model.state_dict()[k].shape)}")
    bad = [k for k, v in model.state_dict().items() if k in sd and v.is_floating_point()
           and not sd[k].is_floating_point()]
    if bad:  # load_state_dict would cast integers to float silently (quantized tensors need their scales)
        raise WeightsError(f"{name}: {bad[0]} holds {str(sd[bad[0]].dtype).removeprefix('torch.')} values where the "
                           f"model has floating point ones{f' (and {len(bad) - 1} more)' if len(bad) > 1 else ''}; "
                           "quantized or integer weights are not LPRNet weights")
    model.load_state_dict(sd, strict=False)


def _deploy_model(meta: WeightsMeta) -> LPRNet:
    """An :class:`LPRNet` of the layout ``meta`` describes, untrained."""
    ctx = meta.context_norm if meta.context_norm != "batch" else "sample"  # the reference's: per sample here
    return LPRNet.from_config(meta.config, context_norm=ctx)  # type: ignore[arg-type]


def build_model(path: str | os.PathLike[str] | None = None, form: str = "deploy",
                charset: Charset | None = None) -> tuple[nn.Module, WeightsMeta]:
    """Load weights into a model in eval mode.

    ``form="deploy"`` builds :class:`LPRNet` (reference ``.pth`` files become the deploy
    form with per-sample normalisation); ``form="reference"`` builds
    :class:`ReferenceLPRNet` (only for files with BatchNorm and the 94x24 layout).
    """
    p = Path(path) if path is not None else default_weights_path()
    sd, meta = read_weights(p, charset)
    cfg = meta.config
    if form == "deploy":
        model: nn.Module = _deploy_model(meta)
    elif form == "reference":
        if not cfg.batchnorm or cfg.input_size != (94, 24):
            raise WeightsError(f"{p}: the reference form needs unfolded BatchNorm and 94x24 input")
        model = ReferenceLPRNet(cfg.num_classes, cfg.dropout, cfg.channel_strides)
    else:
        raise ValueError(f"form must be 'deploy' or 'reference', got {form!r}")
    load_state(model, sd, str(p))
    model.eval()
    return model, meta


def default_weights_path() -> Path:
    """The bundled default weights; a clear error when the package ships none."""
    if not DEFAULT_WEIGHTS.exists():
        raise WeightsError(f"no bundled default weights at {DEFAULT_WEIGHTS}; pass --weights PATH "
                           "(a .safetensors file of ours or a reference-style .pth state dict)")
    return DEFAULT_WEIGHTS
