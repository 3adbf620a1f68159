"""How far a plate confidence can be trusted: right and wrong readings, and images with no plate, by threshold.

    python scripts/confidence_calibration.py [--weights W] [--n-per-kind 500] [--seed 3] [--png out.png]

Reads synthetic test plates (the model card's standard set at seed 3) with the recognizer's default decoding and
reports, for each threshold, the share of right readings kept, of wrong readings rejected, and the accuracy of
the readings kept; the AUROC of the confidence between right and wrong readings; and the highest confidence given
to images that hold no plate (uniform greys, random noise). ``--png`` also draws the threshold curve.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

import lprnet
from lprnet.data.synth import generate

THRESHOLDS = (0.1, 0.3, 0.5, 0.7, 0.9)


def auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(a random positive scores above a random negative), ties counted half."""
    if not len(pos) or not len(neg):
        return float("nan")
    return float((pos[:, None] > neg[None]).mean() + 0.5 * (pos[:, None] == neg[None]).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path, default=None)
    ap.add_argument("--n-per-kind", type=int, default=500)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--png", type=Path, default=None)
    args = ap.parse_args()
    if args.n_per_kind < 1 or args.threads < 1:
        ap.error("--n-per-kind and --threads must be at least 1")
    torch.set_num_threads(args.threads)
    rec = lprnet.load(args.weights)
    items = list(generate(3 * args.n_per_kind, seed=args.seed, weights=(1, 1, 1), province_smudge=0.0))
    results = rec.recognize([im for im, _, _ in items], channel_order="bgr", batch_size=100)
    conf = np.array([r.confidence for r in results])
    right = np.array([r.plate == t for r, (_, t, _) in zip(results, items, strict=True)])
    rng = np.random.default_rng(0)
    blank = [np.full((24, 94, 3), v, np.uint8) for v in range(0, 256, 16)]
    noise = [rng.integers(0, 256, (24, 94, 3), dtype=np.uint8) for _ in range(16)]
    junk = np.array([r.confidence for r in rec.recognize(blank + noise, channel_order="bgr")])
    print(f"{len(items)} synthetic plates (seed {args.seed}), accuracy {right.mean():.4f}; "
          f"confidence AUROC right vs wrong {auroc(conf[right], conf[~right]):.3f}; "
          f"median right {np.median(conf[right]):.3f}, wrong {np.median(conf[~right]):.3f}")
    print(f"{len(junk)} images with no plate (greys, noise): highest confidence {junk.max():.4f}")
    print("| threshold | right kept | wrong rejected | accuracy of kept | share kept |")
    print("|---:|---:|---:|---:|---:|")
    for th in THRESHOLDS:
        keep = conf >= th
        acc = right[keep].mean() if keep.any() else float("nan")
        print(f"| {th:.1f} | {keep[right].mean():.3f} | {(~keep[~right]).mean():.3f} | {acc:.4f} | {keep.mean():.3f} |")
    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        ths = np.linspace(0, 1, 101)
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(ths, [(conf[right] >= t).mean() for t in ths], label="right readings kept")
        ax.plot(ths, [(conf[~right] < t).mean() for t in ths], label="wrong readings rejected")
        ax.plot(ths, [(junk < t).mean() for t in ths], ":", label="no-plate images rejected")
        ax.set(xlabel="confidence threshold", ylabel="share", title="Plate confidence by threshold")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.png)
        print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
