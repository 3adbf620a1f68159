"""``lprnet synth``: render synthetic plate crops to JPEG folders or ``.npz`` shards."""

from __future__ import annotations

import math
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from lprnet.cli._common import fail, writable_dir


class SynthFormat(str, Enum):
    jpg = "jpg"
    shards = "shards"


def _parse_list(value: str, what: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        fail(f"{what} must not be empty")
    return items


def synth(
    n: Annotated[int, typer.Option("--n", min=1, help="Number of plates to render.")],
    out: Annotated[Path, typer.Option(
        "--out", help="Output directory: new or empty (shards: or one to resume with the same settings).")],
    seed: Annotated[int, typer.Option(min=0, help="Seed (>= 0); sample i depends only on (seed, i).")] = 0,
    kinds: Annotated[str, typer.Option(help="Comma-separated plate kinds: blue,green,yellow.")] = "blue,green,yellow",
    weights: Annotated[
        str | None, typer.Option(help="Comma-separated sampling weights, one per kind (default 0.7/0.15/0.15 mix).")
    ] = None,
    format: Annotated[
        SynthFormat, typer.Option("--format", help="jpg: {plate}_{i}.jpg + labels.csv; shards: .npz shards.")
    ] = SynthFormat.shards,
    shard_size: Annotated[int, typer.Option("--shard-size", min=1, help="Samples per .npz shard.")] = 10000,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Rendering processes.")] = 1,
    width: Annotated[int, typer.Option(min=1, help="Output crop width.")] = 94,
    height: Annotated[int, typer.Option(min=1, help="Output crop height.")] = 24,
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

    # every setting is checked before anything is written (a folder's meta.json pins its settings)
    kind_list = _parse_list(kinds, "--kinds")
    bad = [k for k in kind_list if k not in S.PLATE_KINDS]
    if bad:
        fail(f"--kinds: unknown kinds {bad}; choose from {', '.join(S.PLATE_KINDS)}")
    weight_list: list[float] | None = None
    if weights is not None:
        try:
            weight_list = [float(w) for w in _parse_list(weights, "--weights")]
        except ValueError:
            fail(f"--weights must be numbers separated by commas, got {weights!r}")
        if len(weight_list) != len(kind_list):
            fail(f"--weights: give one weight per kind ({len(kind_list)} for --kinds {','.join(kind_list)}), "
                 f"got {len(weight_list)}")
        if not all(math.isfinite(w) and w >= 0 for w in weight_list) or sum(weight_list) <= 0:
            fail(f"--weights must be finite non-negative numbers with a positive sum, got {weights!r}")
    for flag, share in (("--province-smudge", province_smudge), ("--loose-crops", loose_crops),
                        ("--grayscale", grayscale)):
        if share is not None and not 0.0 <= share <= 1.0:  # NaN too
            fail(f"{flag} must lie in [0, 1], got {share}")
    if out.exists() and not out.is_dir():
        fail(f"--out {out} exists and is not a directory")
    if preview is not None and preview.is_dir():
        fail(f"--preview {preview} is a directory; give a .png file name")
    if preview is not None:  # before the plates are rendered, not after
        if format is not SynthFormat.shards and out.resolve() in preview.resolve().parents:
            fail(f"--preview {preview} lies in --out {out}, whose images are the labelled plates (it would read "
                 "as one, labelled with its file name): write it elsewhere")
        writable_dir(preview.parent, preview, "--preview")
    size = (width, height)
    # what every writer and the preview share: which plates, how they are drawn
    plates = dict(kinds=kind_list, weights=weight_list, out_size=size, province_smudge=province_smudge,
                  loose_crops=loose_crops, grayscale=grayscale)
    try:
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
    except (ValueError, OSError) as e:  # e.g. a folder of shards made with other settings, a full disk
        fail(str(e))


def register(app: typer.Typer) -> None:
    """Add the ``synth`` command to ``app``."""
    app.command("synth")(synth)
