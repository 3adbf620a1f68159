"""``lprnet bench``: ms/plate of the reference form, the deploy form, the rewritten graph and
every export runtime, interleaved rounds, paired speed-ups, and the physical floor."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from lprnet.cli._common import WeightsOpt, fail


def bench_cmd(
    weights: WeightsOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    threads: Annotated[int, typer.Option("--threads", min=1, help="Threads for every runtime.")] = 1,
    batches: Annotated[str, typer.Option("--batches", help="Comma-separated batch sizes.")] = "1,32",
    repeats: Annotated[int, typer.Option("--repeats", min=1, help="Interleaved rounds.")] = 5,
    int8: Annotated[bool, typer.Option("--int8/--no-int8", help="Include INT8 (QDQ) runtimes.")] = True,
    backends: Annotated[str, typer.Option("--backends", help="Comma-separated: torch,onnxruntime,openvino.")]
    = "torch,onnxruntime,openvino",
    data: Annotated[Path | None, typer.Option("--data", help="Crops to time on (default: real if present, "
                                              "else synthetic; 'synthetic' forces synthetic).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Folder for bench.md and bench.png.")] = Path("docs"),
    no_docs: Annotated[bool, typer.Option("--no-docs", help="Do not write bench.md / bench.png.")] = False,
) -> None:
    """Benchmark; writes OUT/bench.md and OUT/bench.png unless --no-docs."""
    from lprnet.bench import run_bench, write_docs
    from lprnet.weights import WeightsError

    try:
        bs = [int(b) for b in batches.split(",") if b.strip()]
    except ValueError:
        fail(f"--batches must be comma-separated integers, got {batches!r}")
    if not bs or min(bs) < 1:
        fail(f"--batches must be positive integers, got {batches!r}")
    names = [b.strip() for b in backends.split(",") if b.strip()]
    bad = set(names) - {"torch", "onnxruntime", "openvino"}
    if bad:
        fail(f"unknown backend(s) {', '.join(sorted(bad))}")
    try:
        rep = run_bench(weights, threads=threads, batches=bs, repeats=repeats, backends=names, int8=int8,
                        data=data, progress=None if as_json else lambda s: print(s, file=sys.stderr))
    except (WeightsError, ValueError, ImportError) as e:
        fail(str(e))
    if out is not None and not no_docs:
        cmd = "lprnet bench " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if len(sys.argv) > 1 else ""
        files = write_docs(rep, out, cmd)
        if not as_json:
            print("wrote " + ", ".join(map(str, files)), file=sys.stderr)
    if as_json:
        print(json.dumps(rep.to_json()))
    else:
        print(rep.to_markdown())


def register(app: typer.Typer) -> None:
    app.command("bench")(bench_cmd)
