"""``lprnet synth``: render synthetic plate crops to JPEG folders or ``.npz`` shards."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer


class SynthFormat(str, Enum):
    jpg = "jpg"
    shards = "shards"


def _parse_list(value: str, what: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise typer.BadParameter(f"{what} must not be empty")
    return items


def synth(
    n: Annotated[int, typer.Option("--n", min=1, help="Number of plates to render.")],
    out: Annotated[Path, typer.Option("--out", help="Output directory.")],
    seed: Annotated[int, typer.Option(help="Seed; sample i depends only on (seed, i).")] = 0,
    kinds: Annotated[str, typer.Option(help="Comma-separated plate kinds: blue,green,yellow.")] = "blue,green,yellow",
    weights: Annotated[
        str | None, typer.Option(help="Comma-separated sampling weights, one per kind (default 0.7/0.15/0.15 mix).")
    ] = None,
    format: Annotated[
        SynthFormat, typer.Option("--format", help="jpg: {plate}_{i}.jpg + labels.csv; shards: .npz shards.")
    ] = SynthFormat.shards,
    shard_size: Annotated[int, typer.Option("--shard-size", min=1, help="Samples per .npz shard.")] = 10000,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Rendering processes.")] = 1,
    width: Annotated[int, typer.Option(help="Output crop width.")] = 94,
    height: Annotated[int, typer.Option(help="Output crop height.")] = 24,
    preview: Annotated[
        Path | None, typer.Option("--preview", help="Also write a PNG grid of the first (up to 48) samples.")
    ] = None,
    province_smudge: Annotated[
        float | None,
        typer.Option(
            "--province-smudge",
            min=0.0,
            max=1.0,
            help="Share of plates whose province is smudged past reading (label kept). "
            "Default: the training share (0.08); pass 0 for a test set.",
        ),
    ] = None,
    loose_crops: Annotated[
        float | None,
        typer.Option(
            "--loose-crops",
            min=0.0,
            max=1.0,
            help="Share of loose crops (margins around the plate, as a looser detector box gives) instead of "
            "detector-tight ones. Default: the training share (0.08); 1 for a test set of loose crops.",
        ),
    ] = None,
    grayscale: Annotated[
        float | None,
        typer.Option(
            "--grayscale",
            min=0.0,
            max=1.0,
            help="Share of crops from a monochrome (night / infrared) camera, fed as three equal channels. "
            "Default 0; 1 for a test set of monochrome crops.",
        ),
    ] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
) -> None:
    """Render N synthetic Chinese plate crops (94x24 BGR by default) into OUT."""
    from lprnet.data import synth as S

    kind_list = _parse_list(kinds, "--kinds")
    bad = [k for k in kind_list if k not in S.PLATE_KINDS]
    if bad:
        raise typer.BadParameter(f"unknown kinds {bad}; choose from {', '.join(S.PLATE_KINDS)}", param_hint="--kinds")
    weight_list: list[float] | None = None
    if weights is not None:
        try:
            weight_list = [float(w) for w in _parse_list(weights, "--weights")]
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="--weights") from None
        if len(weight_list) != len(kind_list):
            raise typer.BadParameter("give one weight per kind", param_hint="--weights")
    size = (width, height)
    # what every writer and the preview share: which plates, how they are drawn
    plates = dict(kinds=kind_list, weights=weight_list, out_size=size, province_smudge=province_smudge,
                  loose_crops=loose_crops, grayscale=grayscale)
    if format is SynthFormat.shards:
        paths = S.write_shards(out, n, seed, shard_size=shard_size, workers=workers, progress=progress, **plates)
        typer.echo(f"{n} plates in {len(paths)} shard(s) under {out}")
    else:
        csv_path = S.write_folder(out, n, seed, workers=workers, progress=progress, **plates)
        typer.echo(f"{n} plates as JPEG under {out} (labels: {csv_path})")
    if preview is not None:
        samples = list(S.generate(min(n, 48), seed, **plates))
        S.preview_grid([s[0] for s in samples], [s[1] for s in samples], preview)
        typer.echo(f"preview: {preview}")


def register(app: typer.Typer) -> None:
    """Add the ``synth`` command to ``app``."""
    app.command("synth")(synth)
