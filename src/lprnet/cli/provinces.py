"""``lprnet provinces``: the share of each province in a camera's own unlabelled crops, as ``--provinces``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from lprnet.cli._common import BackendOpt, ThreadsOpt, WeightsOpt, fail


def provinces_cmd(
    paths: Annotated[list[Path], typer.Argument(help="Image files and/or folders (recursed) of plate crops "
                                                     "from one camera or site; file names are not read.")],
    weights: WeightsOpt = None,
    min_share: Annotated[float, typer.Option(
        "--min-share", min=0.0, max=1.0, help="Name the provinces with at least this share in the "
        "--provinces value (the others share the rest equally).")] = 0.02,
    top: Annotated[int, typer.Option(help="Provinces to list in the table.")] = 8,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1)] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    threads: ThreadsOpt = None,
    device: Annotated[str, typer.Option(help="torch device, e.g. cpu or cuda")] = "cpu",
    backend: BackendOpt = "torch",
) -> None:
    """Estimate which provinces' plates a camera sees (EM over the model's readings, no labels)
    and print the --provinces value that weighs readings by it."""
    import lprnet
    from lprnet.core.process import list_images
    from lprnet.weights import WeightsError

    if min_share <= 0.0:
        fail("--min-share must be > 0")
    try:
        rec = lprnet.load(weights, backend=backend, device=device, threads=threads, decode="plate")
    except (WeightsError, ValueError, RuntimeError, ImportError) as e:
        fail(str(e))
    files = list_images(paths)
    if not files:
        fail(f"no images found under {', '.join(map(str, paths))}")
    try:
        est = rec.estimate_provinces(_progress(files, not as_json), batch_size=batch_size)
    except ValueError as e:
        fail(str(e))
    for err in est.errors:
        print(f"unreadable: {err}", file=sys.stderr)
    if as_json:
        print(json.dumps(est.to_json(min_share), ensure_ascii=False))
    else:
        from rich.console import Console
        from rich.table import Table

        con = Console()
        t = Table(title=f"estimated province shares ({est.n} plates)")
        t.add_column("province")
        t.add_column("share", justify="right")
        for p, v in sorted(est.shares.items(), key=lambda x: -x[1])[:top]:
            t.add_row(p, f"{v:.3f}")
        con.print(t)
        opt = est.option(min_share)
        con.print(f"--provinces {opt}" if opt else f"no province reaches {min_share:g}: read without --provinces")
    if est.errors:
        raise typer.Exit(1)


def _progress(files: list[Path], enabled: bool):
    from tqdm import tqdm

    return tqdm(files, desc="reading plates", unit="plate", disable=not enabled, file=sys.stderr)


def register(app: typer.Typer) -> None:
    app.command("provinces")(provinces_cmd)
