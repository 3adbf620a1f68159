"""``lprnet provinces``: the share of each province in a camera's own unlabelled crops, as ``--provinces``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from lprnet.cli._common import BackendOpt, ThreadsOpt, WeightsOpt, fail, load_recognizer, stdout_results

if TYPE_CHECKING:
    import numpy as np


def provinces_cmd(
    paths: Annotated[list[str], typer.Argument(help="Image files and/or folders (recursed) of plate crops "
                                                    "from one camera or site (file names are not read); "
                                                    "KIND:PATH reads a dataset as eval does, e.g. ccpd:DIR "
                                                    "for CCPD scenes, each rectified from its file name.")],
    weights: WeightsOpt = None,
    min_share: Annotated[float, typer.Option(
        "--min-share", min=0.0, max=1.0, help="Name the provinces with at least this share in the "
        "--provinces value (the others share the rest equally).")] = 0.02,
    top: Annotated[int, typer.Option(min=0, help="Provinces to list in the table.")] = 8,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1)] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    threads: ThreadsOpt = None,
    device: Annotated[str, typer.Option(help="torch device, e.g. cpu or cuda")] = "cpu",
    backend: BackendOpt = None,
) -> None:
    """Estimate which provinces' plates a camera sees (EM over the model's province probabilities, no labels)
    and print the --provinces value that weighs readings by it."""
    from lprnet.core.process import IMAGE_EXTENSIONS, list_images
    from lprnet.data.real import detect_kind, split_kind_prefix
    from lprnet.evaluate import unlabelled_images

    if min_share <= 0.0:
        fail("--min-share must be > 0")
    rec, _ = load_recognizer(weights, None, backend=backend, device=device, threads=threads, decode="plate")
    bad: list[str] = []  # dataset entries that cannot become a plate image, by name
    items: list[Path | np.ndarray] = []
    for raw in paths:
        path, kind = split_kind_prefix(raw)
        if kind is None and ((path.is_file() and path.suffix.lower() not in IMAGE_EXTENSIONS)
                             or (path.is_dir() and detect_kind(path) == "ccpd")):
            kind = "detected"  # a manifest or a folder of CCPD scenes, as eval reads them (scenes rectified)
        if kind is None:  # crops: any name, a label is not needed
            items.extend(list_images([path]))
        else:
            items.extend(unlabelled_images([raw], on_error=bad.append))
    if not items and not bad:
        fail(f"no images found under {', '.join(paths)}")
    try:
        est = rec.estimate_provinces(_progress(items, not as_json), channel_order="bgr", batch_size=batch_size)
    except ValueError as e:
        fail("; ".join([str(e), *bad]))
    est.errors[:0] = bad
    for err in est.errors:
        print(f"unreadable: {err}", file=sys.stderr)
    with stdout_results():  # > /dev/full: one error line and exit 2, not a traceback (exit 1 is "unreadable")
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
                t.add_row(p, f"{v:.4f}")  # one digit past the option, which rounds down: 0.0605 -> 浙=0.060
            con.print(t)
            opt = est.option(min_share)
            con.print(f"--provinces {opt}" if opt else f"no province reaches {min_share:g}: read without --provinces")
    if est.errors:
        raise typer.Exit(1)


def _progress(files: list[Path | np.ndarray], enabled: bool):
    from tqdm import tqdm

    return tqdm(files, desc="reading plates", unit="plate", disable=not enabled, file=sys.stderr)


def register(app: typer.Typer) -> None:
    app.command("provinces")(provinces_cmd)
