"""Helpers shared by CLI commands: option types, error exit, thread pinning."""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

if TYPE_CHECKING:
    from torch import Tensor

    from lprnet.recognizer import ImageInput, Recognizer
    from lprnet.weights import WeightsMeta

def _names_bundled(value: Path | None) -> bool:
    """``default`` as a weights path is the bundled weights (as ``train --init-weights default``), unless a file of
    that name is here."""
    return value is not None and str(value) == "default" and not value.exists()


def _bundled_if_default(value: Path | None) -> Path | None:
    return None if _names_bundled(value) else value


def bundled_path_if_default(value: Path) -> Path:
    """For a weights argument that must be a file (``rewrite``, ``info``): ``default`` is the bundled file."""
    if _names_bundled(value):
        from lprnet.weights import default_weights_path

        return default_weights_path()
    return value


WeightsOpt = Annotated[
    Path | None,
    typer.Option("--weights", "-w", callback=_bundled_if_default,
                 help="Weights (.safetensors of ours or reference .pth); default (or 'default'): bundled."),
]
ThreadsOpt = Annotated[int | None, typer.Option("--threads", help="Intra-op threads for PyTorch.")]
DecodeOpt = Annotated[str, typer.Option(
    "--decode", help="auto, plate (CTC decoding constrained to GA 36 plate layouts) or greedy; "
    "auto = plate when the charset can write Chinese plates")]

ProvincesOpt = Annotated[str | None, typer.Option(
    "--provinces", help="Share of plates from named provinces where the camera stands, e.g. '皖=0.8' or "
    "'皖=0.6,苏=0.2' (the rest split equally among the others; a bare '皖' reads only 皖), or 'auto': "
    "estimated from the plates being read (a first pass, as `lprnet provinces` does). Weighs the "
    "province reading with plate decoding.")]

#: serve and batch read each plate once, with no first pass over the others, so no 'auto' (one plate's
#: reading must not depend on its batch-mates)
FixedProvincesOpt = Annotated[str | None, typer.Option(
    "--provinces", help="Share of plates from named provinces where the camera stands, e.g. '皖=0.8' or "
    "'皖=0.6,苏=0.2' (the rest split equally among the others; a bare '皖' reads only 皖). Weighs the "
    "province reading with plate decoding; `lprnet provinces DIR` estimates the shares.")]

BackendOpt = Annotated[str | None, typer.Option(
    "--backend", help="torch, onnxruntime or openvino (default: onnxruntime for an .onnx --weights, openvino for "
    ".xml, else torch). Weights are exported once to a checked cache ($LPRNET_CACHE, else $XDG_CACHE_HOME/lprnet or "
    "~/.cache/lprnet); .onnx/.xml files are used as they are.")]

AUTO_MIN_SHARE = 0.02  # --provinces auto names the provinces estimated at this share or more


def load_recognizer(weights: Path | None, provinces: str | None, **kw: Any) -> tuple[Recognizer, bool]:
    """``lprnet.load`` for a face, ``--provinces auto`` deferred: returns (recognizer, auto)."""
    import lprnet
    from lprnet.weights import WeightsError

    auto = provinces is not None and provinces.strip() == "auto"
    try:
        rec = lprnet.load(weights, provinces=None if auto else provinces, **kw)
    except (WeightsError, ValueError, RuntimeError, ImportError) as e:
        fail(str(e))
    except OSError as e:  # a file or folder the runtimes cannot use, named
        fail(f"{e.filename or weights}: {e.strerror or e}")
    if auto and rec.decode != "plate":
        fail("--provinces auto needs plate decoding" + (", not --decode greedy" if kw.get("decode") == "greedy"
                                                        else ", and this charset cannot write every plate layout"))
    return rec, auto


def apply_auto_provinces(rec: Recognizer, images: Iterable[ImageInput], batch_size: int,
                         quiet: bool = False) -> Recognizer:
    """``--provinces auto``: estimate the shares from ``images`` and return the recognizer under them
    (unchanged when no province reaches :data:`AUTO_MIN_SHARE` or nothing can be read: the reading
    pass then reports every bad file)."""
    from tqdm import tqdm

    items = tqdm(images, desc="estimating provinces", unit="plate", disable=quiet, file=sys.stderr)
    try:
        est = rec.estimate_provinces(items, channel_order="bgr", batch_size=batch_size)
    except ValueError:
        return rec
    opt = est.option(AUTO_MIN_SHARE)
    print(f"--provinces auto: {opt or 'no province reaches ' + str(AUTO_MIN_SHARE)} "
          f"(estimated from {est.n} plates)", file=sys.stderr)
    return rec.with_provinces(opt or None)


def fail(msg: str, code: int = 2) -> NoReturn:
    """Print an error to stderr and exit non-zero."""
    print(f"error: {msg}", file=sys.stderr)
    raise typer.Exit(code)


def check_out_file(out: Path, inputs: Iterable[Path] = ()) -> None:
    """Refuse, before any work, an ``--out`` weights file that is a directory, one of the input files (it would be
    replaced), not named ``.safetensors`` or in a folder that cannot be written."""
    if out.is_dir():
        fail(f"--out {out} is a directory; give a .safetensors file name")
    for src in inputs:
        if out.resolve() == src.resolve() or (out.exists() and src.exists() and out.samefile(src)):
            fail(f"--out {out} is the input {src}; write to another file (the input would be replaced)")
    if out.suffix.lower() != ".safetensors":  # as export wants .onnx: a weights file says what it is
        fail(f"--out {out}: weights are written as .safetensors; give a name ending in .safetensors")
    writable_dir(out.parent, out)


def writable_dir(d: Path, shown: Path, option: str = "--out") -> None:
    """Create the folder ``d`` and prove a file can be written in it, before any work is done;
    fail naming ``{option} {shown}`` otherwise."""
    if d.exists() and not d.is_dir():
        fail(f"{option} {shown}: {d} is a file, not a folder")
    try:
        d.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=d):
            pass
    except OSError as e:
        fail(f"{option} {shown}: cannot write in {d} ({e.strerror or e})")


def save_or_fail(out: Path, state_dict: dict[str, Tensor], meta: WeightsMeta) -> None:
    """``save_weights``, with a one-line error naming ``out`` when it cannot be written."""
    from lprnet.weights import save_weights

    try:
        save_weights(out, state_dict, meta)
    except OSError as e:
        fail(f"cannot write {out}: {e.strerror or e}")


@contextlib.contextmanager
def stdout_results() -> Iterator[None]:
    """Around a command that streams its results to standard output: a reader that goes away (``| head``) ends the
    command quietly (exit 1, no traceback; Python's documented handling of ``EPIPE``), and output that cannot be
    written (``> /dev/full``, a full disk) is one ``error:`` line and exit 2 rather than a traceback."""
    try:
        yield
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes at exit
        raise typer.Exit(1) from None
    except OSError as e:
        if e.errno not in _WRITE_ERRNOS:
            raise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        fail(f"cannot write the results to standard output: {e.strerror or e}")


#: what writing to a full, closed or failing standard output raises (inputs' read errors are named per file)
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EBADF}
