"""Probe: are the synthetic test set's misread provinces legible at 94x24, or beyond any reader?

    python scripts/province_legibility.py [--weights W] [--n-per-kind 1000] [--seed 3] [--json out.json]

Each test plate (``evaluate_weights.py``'s set: one kind at a time, no smudged provinces) is rendered again with
every other province from the same random stream, so that only the province glyph differs (glyphs draw nothing
at random; the rest of the plate, the camera and the noise are drawn the same).  The L2 distance (grey levels,
over the whole crop) to the nearest other province says how far the true reading stands from the closest
wrong one; the second character against every other letter gives the scale of a character that is read well.
Prints, per kind, accuracy by distance band: errors at large distances are the model's, not the renderer's.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import torch

import lprnet
from lprnet.charset import LETTERS, PROVINCES
from lprnet.data.synth import PLATE_KINDS, random_plate_text, render_plate

BANDS = (0, 50, 100, 200, 400, float("inf"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path, default=None)
    ap.add_argument("--n-per-kind", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.n_per_kind < 1:
        ap.error("--n-per-kind must be >= 1")
    torch.set_num_threads(args.threads)
    rec = lprnet.load(args.weights)
    out = {}
    for kind in PLATE_KINDS:
        rows, imgs = [], []
        for i in range(args.n_per_kind):
            rng = np.random.default_rng([args.seed, i])  # as generate() draws sample i of a one-kind stream
            text = random_plate_text(kind, rng)
            state = rng.bit_generator.state

            def render(t: str, state: dict = state, kind: str = kind) -> np.ndarray:
                g = np.random.default_rng(0)
                g.bit_generator.state = state
                return render_plate(t, kind, g, (94, 24), province_smudge=0.0).astype(np.float32)

            base = render(text)
            d_prov = min(float(np.linalg.norm(render(p + text[1:]) - base)) for p in PROVINCES if p != text[0])
            d_let = min(float(np.linalg.norm(render(text[0] + c + text[2:]) - base)) for c in LETTERS if c != text[1])
            imgs.append(base.astype(np.uint8))
            rows.append({"text": text, "d_province": d_prov, "d_letter": d_let})
        for i in range(0, len(imgs), 250):
            for r, p in zip(rows[i:i + 250], rec.decode_logits(rec.predict_logits(imgs[i:i + 250])), strict=True):
                r["read"] = p.plate
        ok = np.array([r["read"] == r["text"] for r in rows])
        prov_only = np.array([r["read"] != r["text"] and r["read"][1:] == r["text"][1:] for r in rows])
        d = np.array([r["d_province"] for r in rows])
        dl = np.array([r["d_letter"] for r in rows])
        print(f"{kind}: accuracy {ok.mean():.3f}; nearest other province at median {np.median(d):.0f} "
              f"(5th percentile {np.percentile(d, 5):.0f}), nearest other letter (2nd character) at median "
              f"{np.median(dl):.0f} ({np.percentile(dl, 5):.0f})")
        for lo, hi in itertools.pairwise(BANDS):
            m = (d >= lo) & (d < hi)
            if m.any():
                print(f"  province distance [{lo:g}, {hi:g}): {m.sum():4d} plates, accuracy {ok[m].mean():.3f}, "
                      f"{prov_only[m].sum()} misread only at the province")
        out[kind] = rows
    if args.json:
        args.json.write_text(json.dumps(out, ensure_ascii=False), encoding="utf-8")


if __name__ == "__main__":
    main()
