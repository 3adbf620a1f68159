"""Probe: how weights read synthetic validation plates under deployment shifts a camera or a caller may bring.

    python scripts/probe_shifts.py [--weights W] [--n 3000] [--seed 49]

Renders the standard validation plates (blue / green / yellow 0.6 / 0.2 / 0.2, no smudged provinces; seed 49 is
stage 28's validation set, never trained on) and reads them as rendered and after each shift: grey (a monochrome
camera), an infrared-like tone curve, RGB fed as BGR (the caller's channel-order mistake that
``lprnet.core.process`` refuses for unlabelled colour arrays), JPEG quality 15, half resolution, inverted. Prints
plate accuracy overall and per kind.  A probe for choosing what to train next, not a test set: decisions use
``scripts/evaluate_weights.py`` (``--grayscale 1`` renders monochrome crops in the generator itself).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

import lprnet
from lprnet.data.synth import generate


def _gray(x: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(cv2.cvtColor(x, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)


def _ir(x: np.ndarray) -> np.ndarray:
    g = cv2.cvtColor(x, cv2.COLOR_BGR2GRAY).astype(np.float32)
    g = 255.0 * (g / 255.0) ** 0.6
    g = np.clip((g - g.mean()) * 1.6 + 128.0, 0, 255).astype(np.uint8)
    return cv2.cvtColor(g, cv2.COLOR_GRAY2BGR)


def _jpeg(x: np.ndarray) -> np.ndarray:
    return cv2.imdecode(cv2.imencode(".jpg", x, [cv2.IMWRITE_JPEG_QUALITY, 15])[1], cv2.IMREAD_COLOR)


SHIFTS: dict[str, Callable[[np.ndarray], np.ndarray] | None] = {
    "as rendered": None,
    "grey": _gray,
    "infrared-like": _ir,
    "RGB as BGR": lambda x: np.ascontiguousarray(x[..., ::-1]),
    "JPEG q15": _jpeg,
    "half resolution": lambda x: cv2.resize(cv2.resize(x, (47, 12), interpolation=cv2.INTER_AREA), (94, 24)),
    "inverted": lambda x: 255 - x,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path, default=None)
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=49)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if args.n < 1:
        ap.error("--n must be >= 1")
    torch.set_num_threads(args.threads)
    rec = lprnet.load(args.weights)
    items = list(generate(args.n, seed=args.seed, weights=(0.6, 0.2, 0.2), province_smudge=0.0))
    truth = [t for _, t, _ in items]
    kinds = np.array([k for _, _, k in items])
    for name, shift in SHIFTS.items():
        imgs = [im if shift is None else shift(im) for im, _, _ in items]
        preds = []
        for i in range(0, len(imgs), 250):
            preds += [p.plate for p in rec.decode_logits(rec.predict_logits(imgs[i:i + 250]))]
        ok = np.array([p == t for p, t in zip(preds, truth, strict=True)])
        per = " / ".join(f"{k} {ok[kinds == k].mean():.3f}" for k in ("blue", "green", "yellow") if (kinds == k).any())
        print(f"{name:16s} {ok.mean():.3f}  ({per})", flush=True)


if __name__ == "__main__":
    main()
