"""Render the sample crops shipped in ``src/lprnet/samples`` (used by ``make demo``).

They are made by our own generator (never copied from real data): three plates of each
kind, labelled by file name, at twice the model's input size to show that any size works.

    python scripts/make_samples.py [--out DIR]

It replaces the ``.jpg`` files in the output folder (default: the shipped samples); the render is deterministic, so
the shipped files come out byte for byte the same.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from lprnet.data.synth import random_plate_text, render_plate

OUT = Path(__file__).resolve().parents[1] / "src" / "lprnet" / "samples"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT, help=f"output folder (default: {OUT})")
    out = ap.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.jpg"):
        old.unlink()
    for k, kind in enumerate(("blue", "green", "yellow")):
        for j in range(3):
            rng = np.random.default_rng([20261127, k, j])
            text = random_plate_text(kind, rng)
            img = render_plate(text, kind, rng, out_size=(188, 48), province_smudge=0.0)  # a training device only
            cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tofile(str(out / f"{text}.jpg"))
            print(out / f"{text}.jpg")


if __name__ == "__main__":
    main()
