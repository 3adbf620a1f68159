"""``lprnet bench``: ms/plate of the reference form, the deploy form, the rewritten graph and
every export runtime, interleaved rounds, paired speed-ups, and the physical floor; with
``--device cuda`` (or ``cpu``) the PyTorch device sweep of :mod:`lprnet.bench_gpu` instead."""

from __future__ import annotations

import json
import math
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from lprnet.cli._common import WeightsOpt, fail, writable_dir


def _ints(text: str, what: str) -> list[int]:
    try:
        bs = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        fail(f"{what} must be comma-separated integers, got {text!r}")
    if not bs or min(bs) < 1:
        fail(f"{what} must be positive integers, got {text!r}")
    return list(dict.fromkeys(bs))  # a repeated size would double its rows and rounds


def _command() -> str:
    return "lprnet bench " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if len(sys.argv) > 1 else ""


def bench_cmd(
    weights: WeightsOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    threads: Annotated[int, typer.Option("--threads", min=1, help="Threads for every runtime.")] = 1,
    batches: Annotated[str | None, typer.Option(
        "--batches", help="Comma-separated batch sizes (default 1,32; with --device 1,8,32,128,512,1024,4096).")]
    = None,
    repeats: Annotated[int, typer.Option("--repeats", min=1, help="Interleaved rounds.")] = 5,
    int8: Annotated[bool, typer.Option("--int8/--no-int8", help="Include INT8 (QDQ) runtimes.")] = True,
    backends: Annotated[str, typer.Option("--backends", help="Comma-separated: torch,onnxruntime,openvino.")]
    = "torch,onnxruntime,openvino",
    data: Annotated[Path | None, typer.Option("--data", help="Crops to time on (default: real if present, "
                                              "else synthetic; 'synthetic' forces synthetic).")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Folder for bench.md and bench.png (with --device: bench-gpu.md/.png on CUDA, "
        "bench-cpu-sweep.md/.png on the CPU).")] = Path("docs"),
    no_docs: Annotated[bool, typer.Option("--no-docs", help="Do not write the Markdown / PNG files.")] = False,
    accuracy_n: Annotated[int | None, typer.Option(
        "--accuracy-n", min=0, help="Labelled crops to measure each model's plate accuracy on (default: every "
        "crop of the real folder when found, else none; 0 = skip).")] = None,
    device: Annotated[str | None, typer.Option(
        "--device", help="Run the PyTorch device sweep (reference vs deploy form, eager/channels-last/fp16/bf16/"
        "CUDA graphs/torch.compile) on cuda, cuda:N or cpu instead of the runtime benchmark.")] = None,
    variants: Annotated[str | None, typer.Option(
        "--variants", help="With --device: comma-separated variants (default: all; see lprnet.bench_gpu.VARIANTS).")]
    = None,
    min_time: Annotated[float, typer.Option(
        "--min-time", min=0.0, help="With --device: seconds each measurement lasts at least.")] = 0.05,
    compile_backend: Annotated[str, typer.Option(
        "--compile-backend", help="With --device: torch.compile backend for the compile variants.")] = "inductor",
) -> None:
    """Benchmark; writes OUT/bench.md and OUT/bench.png unless --no-docs (with --device:
    OUT/bench-gpu.md and .png on CUDA)."""
    from lprnet.export.onnx import ExportError
    from lprnet.weights import WeightsError

    if out is not None and not no_docs:
        writable_dir(out, out)
    if device is not None:
        _device_sweep(weights, device, batches, variants, repeats, min_time, threads, data, compile_backend,
                      out, no_docs, as_json)
        return
    from lprnet.bench import run_bench, write_docs

    bs = _ints(batches or "1,32", "--batches")
    names = [b.strip() for b in backends.split(",") if b.strip()]
    bad = set(names) - {"torch", "onnxruntime", "openvino"}
    if bad:
        fail(f"unknown backend(s) {', '.join(sorted(bad))}")
    say = None if as_json else (lambda s: print(s, file=sys.stderr))
    try:
        rep = run_bench(weights, threads=threads, batches=bs, repeats=repeats, backends=names, int8=int8,
                        data=data, accuracy_n=accuracy_n, progress=say)
    except (WeightsError, ExportError, ValueError, ImportError) as e:
        fail(str(e))
    _report(rep, write_docs, out, no_docs, as_json)


def _report(rep: Any, write: Callable[..., list[Path]], out: Path | None, no_docs: bool, as_json: bool) -> None:
    """Print the report as JSON or Markdown, then write the docs (unless told not to): a failed
    write loses no result."""
    print(json.dumps(rep.to_json()) if as_json else rep.to_markdown())
    if out is not None and not no_docs:
        try:
            files = write(rep, out, _command())
        except OSError as e:
            fail(f"--out {out}: cannot write the docs ({e})")
        if not as_json:
            print("wrote " + ", ".join(map(str, files)), file=sys.stderr)


def _device_sweep(weights: Path | None, device: str, batches: str | None, variants: str | None, repeats: int,
                  min_time: float, threads: int, data: Path | None, compile_backend: str, out: Path | None,
                  no_docs: bool, as_json: bool) -> None:
    from lprnet.bench_gpu import DEFAULT_BATCHES, DeviceUnavailableError, run_device_bench, write_device_docs
    from lprnet.export.onnx import ExportError
    from lprnet.weights import WeightsError

    bs = _ints(batches, "--batches") if batches else list(DEFAULT_BATCHES)
    if not math.isfinite(min_time):
        fail(f"--min-time must be a finite number of seconds, got {min_time}")
    names = [v.strip() for v in variants.split(",") if v.strip()] if variants else None
    say = None if as_json else (lambda s: print(s, file=sys.stderr))
    try:
        rep = run_device_bench(weights, device=device, batches=bs, variants=names, repeats=repeats,
                               min_time=min_time, threads=threads, data=data, compile_backend=compile_backend,
                               progress=say)
    except (DeviceUnavailableError, WeightsError, ExportError, ValueError, ImportError) as e:
        fail(str(e))
    _report(rep, write_device_docs, out, no_docs, as_json)


def register(app: typer.Typer) -> None:
    app.command("bench")(bench_cmd)
