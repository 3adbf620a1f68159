"""``lprnet batch``: recognize a folder or manifest on Ray and write one Parquet/CSV table."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from lprnet.cli._common import BackendOpt, DecodeOpt, FixedProvincesOpt, WeightsOpt, fail
from lprnet.errors import describe_cause


def batch(
    source: Annotated[Path, typer.Argument(help="A folder of images (recursed) or a CSV/TSV manifest "
                                                "with a 'path' column.")],
    out: Annotated[str, typer.Option("--out", "-o", help="results.parquet or results.csv (one file, input order), "
                                                         "or DIR/ (empty) for Parquet part files written by the "
                                                         "workers. Never an input or the manifest.")],
    ray_address: Annotated[str | None, typer.Option(
        "--ray-address", help="Join this Ray cluster ('auto', 'ray://host:10001'); default: the one $RAY_ADDRESS "
                              "names (as `ray job submit` sets it), else a local Ray.")] = None,
    weights: WeightsOpt = None,
    backend: BackendOpt = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Images per actor call.")] = 64,
    actors: Annotated[int, typer.Option("--actors", min=1, help="Recognizer actors (model replicas).")] = 2,
    cpus_per_actor: Annotated[float, typer.Option("--cpus-per-actor", min=0.01,
                                                  help="CPUs Ray reserves per actor.")] = 1.0,
    threads_per_actor: Annotated[int, typer.Option("--threads-per-actor", min=1,
                                                   help="Intra-op threads of each actor's backend.")] = 1,
    decode: DecodeOpt = "auto",
    provinces: FixedProvincesOpt = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Ray Data progress bars.")] = True,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out file (without it, "
                                                                "an existing file is refused).")] = False,
) -> None:
    """Batch-recognize with Ray Data: one row (path, plate, confidence, error) per input.

    Unreadable files get an error row and the job completes; the exit code is 1 if any failed.
    """
    try:
        from lprnet.scale.ray_batch import BatchJobError, collect_inputs, run_batch
    except ImportError as e:
        fail(f"{e}; install the extra: pip install 'lprnet[scale]'")
    try:
        paths, warnings = collect_inputs(source)
        for w in warnings:
            print(f"warning: skipped manifest entry: {w}", file=sys.stderr)
        if not paths:
            fail(f"no images found under {source}")
        summary = run_batch(paths, out, weights=weights, backend=backend, batch_size=batch_size, actors=actors,
                            cpus_per_actor=cpus_per_actor, threads_per_actor=threads_per_actor,
                            decode=decode, provinces=provinces, ray_address=ray_address, progress=progress,
                            manifest=source if source.is_file() else None, overwrite=overwrite)
    except BatchJobError as e:
        fail(str(e))
    except ImportError as e:
        fail(f"{e}; install the extra: pip install 'lprnet[scale]'")
    except typer.Exit:
        raise
    except Exception as e:  # the job itself broke (Ray, Arrow, a worker): one line and exit 2, not the
        fail(f"the batch job failed: {describe_cause(e)}")  # exit 1 that means "some files failed"
    print(summary.to_text())
    if summary.failures:
        print(f"{summary.failures} of {summary.n} file(s) could not be recognized (see the 'error' column)",
              file=sys.stderr)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("batch")(batch)
