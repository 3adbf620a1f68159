"""Colour statistics of real plate crops beside synthetic ones: are our synthetic colours cleaner than real plates'?

    python scripts/colour_stats.py [--real ccpd:../shared/data/ccpd-samples] [--n 1000] [--seed 3] [--kind blue]

For each crop (94x24, BGR): median saturation and median value (HSV, 0-255), median hue of the coloured pixels
(saturation > 60; OpenCV hue 0-180), luma standard deviation and the luma 5-95 % spread (contrast). Prints the 10th,
50th and 90th percentile of each over the real crops (rectified from their four corners, tight) and over ``--n``
synthetic tight crops of one plate kind (``--seed`` of the test sets), and how many real crops fall inside the
synthetic 5-95 % range. Meant for training sources (the 16 CCPD sample scenes), not for a held-out test set.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from lprnet.data.real import load_crop, load_source, split_kind_prefix
from lprnet.data.synth import generate

NAMES = ("median saturation", "median value", "hue of coloured pixels", "luma std", "luma 5-95 % spread")


def crop_stats(img: np.ndarray) -> tuple[float, ...]:
    """The five statistics of one BGR uint8 crop (hue is NaN when no pixel is coloured)."""
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV).reshape(-1, 3).astype(np.float32)
    y = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32)
    coloured = hsv[hsv[:, 1] > 60, 0]
    hue = float(np.median(coloured)) if coloured.size else float("nan")
    return (float(np.median(hsv[:, 1])), float(np.median(hsv[:, 2])), hue, float(y.std()),
            float(np.percentile(y, 95) - np.percentile(y, 5)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--real", default=f"ccpd:{Path(__file__).resolve().parents[2] / 'shared/data/ccpd-samples'}",
                    help="real crops to compare with (default: the CCPD samples beside the repository)")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--kind", default="blue")
    args = ap.parse_args()
    if args.n < 1:
        ap.error("--n must be >= 1")
    path, kind = split_kind_prefix(args.real)
    real = np.array([crop_stats(load_crop(s, (94, 24))) for s in load_source(path, kind)])
    synth = np.array([crop_stats(im) for im, _, _ in generate(args.n, seed=args.seed, kinds=(args.kind,),
                                                                  province_smudge=0.0, loose_crops=0.0)])
    head = f"{'statistic':24s} {'real p10 / p50 / p90':>24s} {'synthetic p10 / p50 / p90':>28s}"
    print(head + "  real inside synth 5-95 %")
    for j, name in enumerate(NAMES):
        r, s = real[:, j][~np.isnan(real[:, j])], synth[:, j][~np.isnan(synth[:, j])]
        lo, hi = np.percentile(s, [5, 95])
        inside = int(((r >= lo) & (r <= hi)).sum())
        rq, sq = np.percentile(r, [10, 50, 90]), np.percentile(s, [10, 50, 90])
        print(f"{name:24s} {' / '.join(f'{v:5.0f}' for v in rq):>24s} {' / '.join(f'{v:5.0f}' for v in sq):>28s}"
              f"  {inside} of {len(r)}")
    print(f"real: {len(real)} crops from {args.real}; synthetic: {len(synth)} {args.kind} plates, seed {args.seed}, "
          "tight")


if __name__ == "__main__":
    main()
