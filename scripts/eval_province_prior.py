"""What province shares (``--provinces``) gain where most plates are local, and cost where they are not.

    python scripts/eval_province_prior.py [--weights W] [--n 2000] [--local 皖] [--seed 4003]

Renders synthetic test plates (seed 4003: no training or validation seed of the bundled weights)
twice: once with 80 % of plates from the ``--local`` province, once with every province equally
likely.  Each set is read once by the model and decoded without shares and with ``{local: s}``
for a few ``s``; accuracy is reported overall, on local plates and on the others.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import lprnet
from lprnet.charset import PROVINCES
from lprnet.core.process import ctc_plate_decode, province_log_prior
from lprnet.data.synth import PLATE_KINDS, random_plate_text, render_plate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default=None)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--local", default="皖")
    ap.add_argument("--seed", type=int, default=4003)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if args.n < 1:
        ap.error("--n must be >= 1")
    if args.local not in PROVINCES:
        ap.error(f"--local must be one of {PROVINCES}")
    torch.set_num_threads(args.threads)
    rec = lprnet.load(args.weights)
    rng = np.random.default_rng(args.seed)
    print("| traffic | decoding | all | local plates | other plates |\n|---|---|---|---|---|")
    for traffic in (0.8, 1 / len(PROVINCES)):
        texts, images = [], []
        for _ in range(args.n):
            kind = PLATE_KINDS[int(rng.choice(len(PLATE_KINDS), p=(0.6, 0.2, 0.2)))]
            t = random_plate_text(kind, rng)
            if rng.random() < traffic:
                t = args.local + t[1:]
            texts.append(t)
            images.append(render_plate(t, kind, rng, province_smudge=0.0))
        logits = np.concatenate([rec.predict_logits(images[i:i + 200]) for i in range(0, args.n, 200)])
        local = np.array([t[0] == args.local for t in texts])
        name = f"{traffic:.0%} {args.local}" if traffic > 0.5 else "uniform"
        for share in (None, 0.5, 0.8, 0.95):
            prior = None if share is None else province_log_prior({args.local: share}, rec.charset)
            ok = np.array([p.plate == t for p, t in
                           zip(ctc_plate_decode(logits, rec.charset, first_prior=prior), texts)])
            how = "plate, no shares" if share is None else f"--provinces {args.local}={share}"
            print(f"| {name} | {how} | {ok.mean():.4f} | {ok[local].mean():.4f} ({local.sum()}) "
                  f"| {ok[~local].mean():.4f} ({(~local).sum()}) |", flush=True)


if __name__ == "__main__":
    main()
