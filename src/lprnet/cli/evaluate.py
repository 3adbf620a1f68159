"""``lprnet eval``: accuracy on labelled real plates (crop folders, manifests, CCPD images)."""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from lprnet.cli._common import (
    BackendOpt,
    DecodeOpt,
    ProvincesOpt,
    ThreadsOpt,
    WeightsOpt,
    fail,
    load_recognizer,
    stdout_results,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from lprnet.evaluate import EvalReport


def evaluate_cmd(
    paths: Annotated[list[str], typer.Argument(
        help="Folders or files of crops labelled by file name, path,plate CSV/TSV manifests, or folders of "
        "CCPD images; the layout is detected, or given as folder:PATH, manifest:PATH or ccpd:PATH.")],
    weights: WeightsOpt = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1)] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    top: Annotated[int, typer.Option(min=0, help="Confusions to list.")] = 10,
    threads: ThreadsOpt = None,
    decode: DecodeOpt = "auto",
    provinces: ProvincesOpt = None,
    device: str = "cpu",
    backend: BackendOpt = None,
) -> None:
    """Whole-plate accuracy, per-character accuracy and a confusion summary."""
    from lprnet.cli._common import apply_auto_provinces
    from lprnet.core.process import display_path
    from lprnet.evaluate import evaluate, unlabelled_images

    rec, auto = load_recognizer(weights, provinces, backend=backend, device=device, threads=threads, decode=decode)
    if auto:  # shares from the plates' images alone, never their labels
        rec = apply_auto_provinces(rec, unlabelled_images(paths), batch_size, quiet=as_json)
    rep = evaluate(rec, paths, batch_size=batch_size, progress=None)  # a bar on stderr when it is a terminal
    if rep.n == 0:  # nothing scored: an accuracy of 0/0 must not pass a CI job
        why = "; ".join(f"{u['path']}: {u['error']}" for u in rep.unreadable[:5])
        fail(f"no labelled plate could be scored under {', '.join(map(display_path, paths))}" + (f" ({why}"
             + (f"; and {len(rep.unreadable) - 5} more" if len(rep.unreadable) > 5 else "") + ")" if why else ""))
    with stdout_results():  # > /dev/full: one error line and exit 2, not a traceback (exit 1 is "not scored")
        _print_report(rep, rec.decode, rec.provinces, auto, top, as_json)
    _fail_if_unscored(rep)


def _print_report(rep: EvalReport, decode: str, provinces: Mapping[str, float] | None, auto: bool, top: int,
                  as_json: bool) -> None:
    if as_json:
        print(json.dumps({**rep.to_json(top), "decode": decode, "provinces": provinces,
                          "provinces_estimated": auto}, ensure_ascii=False))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    # piped (and no $COLUMNS): 160 columns, not rich's 80, so that a line is not broken mid-figure
    con = Console(width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else 160)
    con.print(f"plates: {rep.n}   whole-plate accuracy: [bold]{rep.accuracy:.4f}[/] "
              f"({rep.correct}/{rep.n})   per-character accuracy: {rep.char_accuracy:.4f}   decoding: {decode}"
              + (f" (provinces {','.join(f'{k}={v:g}' for k, v in provinces.items())}{', estimated' if auto else ''})"
                 if provinces else ""), soft_wrap=True)
    con.print(f"dropped characters: {rep.deletions}   inserted characters: {rep.insertions}   "
              f"not scored (unreadable, or no plate label): {len(rep.unreadable)}"
              + (f"   repeats skipped: {rep.repeats}" if rep.repeats else ""), soft_wrap=True)
    if rep.substitutions:
        t = Table(title="most frequent confusions")
        t.add_column("true")
        t.add_column("read")
        t.add_column("count", justify="right")
        for (a, b), c in rep.substitutions.most_common(top):
            t.add_row(a, b, str(c))
        con.print(t)
    for u in rep.unreadable:  # one line each, however long (grep), and a [tag] in a name is text
        con.print(f"[red]not scored[/] {escape(u['path'])}: {escape(u['error'])}", soft_wrap=True)


def _fail_if_unscored(rep: EvalReport) -> None:
    """Exit 1 when some inputs were not scored (a missing folder, unreadable files, names that are no plate label),
    as recognize, provinces, batch and check-data do: a test set with a typo in it must not pass a CI gate."""
    if rep.unreadable:
        print(f"{len(rep.unreadable)} input(s) not scored", file=sys.stderr)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("eval")(evaluate_cmd)
