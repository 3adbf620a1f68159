"""``lprnet check-data``: every problem of labelled datasets (crops, manifests, CCPD, synthetic shards), by name."""

from __future__ import annotations

from typing import Annotated, Optional

import typer


def check_data_command(
    paths: Annotated[list[str], typer.Argument(help="Folders of labelled crops, CSV/TSV manifests, "
                                               "CCPD folders, or train's --data specs (real:DIR:0.5, "
                                               "ccpd:DIR, synth:SHARDS)")],
    kind: Annotated[Optional[str], typer.Option(help="folder, manifest or ccpd (default: detected "
                                                "per path)")] = None,
    charset: Annotated[Optional[str], typer.Option(help="Characters of the charset in class order "
                                                   "(default: the 68-class Chinese set)")] = None,
    lengths: Annotated[Optional[str], typer.Option(help="Allowed plate lengths, comma-separated ('' = any; "
                                                   "default 7,8 for the Chinese charset, any for --charset); "
                                                   "given, it also turns off the check that a label fits a "
                                                   "GA 36 layout")] = None,
    images: Annotated[bool, typer.Option("--images/--no-images", help="Decode every image (without: only "
                                         "check that each file can be read, and scenes' sizes from their "
                                         "headers)")] = True,
    workers: Annotated[int, typer.Option(help="Decoding threads")] = 4,
    max_problems: Annotated[int, typer.Option(help="Print at most this many problems (0 = all)")] = 0,
) -> None:
    """Check labels (charset, length, GA 36 layout), files (missing, unreadable, corrupt) and CCPD names.

    Prints one line per problem and a summary; exits 1 when anything is wrong.
    """
    from lprnet.charset import Charset
    from lprnet.cli._common import fail
    from lprnet.data.dataset import check_sources
    from lprnet.data.real import SOURCE_KINDS, default_formats, default_lengths

    if kind is not None and kind not in SOURCE_KINDS:
        raise typer.BadParameter(f"--kind must be one of {', '.join(SOURCE_KINDS)}")
    try:
        cs = Charset.from_string(charset) if charset is not None else Charset.chinese()
    except ValueError as e:
        fail(f"--charset: {e}")
    try:  # by default GA 36's 7 or 8 characters for the Chinese charset, any length for another
        lens = (default_lengths(cs) if lengths is None
                else tuple(int(v) for v in lengths.split(",") if v.strip()) or None)
        if lens and min(lens) < 1:
            raise ValueError
    except ValueError:
        raise typer.BadParameter(f"--lengths must be positive integers separated by commas, got {lengths!r}") from None
    try:
        report = check_sources(paths, kind=kind, charset=cs, lengths=lens, check_images=images, workers=workers,
                               formats=default_formats(cs) if lengths is None else None)
    except ValueError as e:  # a malformed train-style spec
        raise typer.BadParameter(str(e)) from None
    shown = report.problems if max_problems <= 0 else report.problems[:max_problems]
    for p in shown:
        typer.echo(str(p))
    if len(shown) < len(report.problems):
        typer.echo(f"... {len(report.problems) - len(shown)} more problems not shown")
    typer.echo(report.summary())
    if not report.ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``check-data`` to the main app."""
    app.command("check-data")(check_data_command)
