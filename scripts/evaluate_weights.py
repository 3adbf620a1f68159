"""Numbers for a model card: accuracy per plate kind on a held-out synthetic test set, and on real crops.

    python scripts/evaluate_weights.py --weights src/lprnet/weights/default.safetensors \\
        [--real ../shared/data/plates-cn-1k] [--n-per-kind 1000] [--seed 3] [--json out.json] [--decode auto] \\
        [--cjk-face FONT ...] [--loose-crops P] [--grayscale P] [--baseline W]

Accuracies are with the recognizer's decoding (``auto`` = GA 36 plate-constrained for the Chinese
charset) and, beside them, with plain greedy CTC decoding.  For the synthetic kinds it also reports how
many plates read right apart from the province (``plate[1:]``) and how many misread plates are wrong
only at the province.  ``--cjk-face FONT`` (repeatable) draws the synthetic plates' province and special
characters from font files of your own instead of the shipped faces: a face no weights were trained on, as the
real plate face is (e.g. WenQuanYi Zen Hei, ``apt-get install fonts-wqy-zenhei``, with ``--seed 5``).
``--loose-crops 1`` makes every synthetic test crop a loose one (margins around the plate, as a looser detector
box than the training data's mostly tight crops gives; seed 7), a test of how the weights cope with another
detector.  ``--grayscale 1`` makes every crop a monochrome-camera one (night / infrared traffic cameras; seed 9).
``--baseline W`` also reads the same synthetic plates and real folders with weights ``W`` and reports the pair:
plates only one of them reads right, and the exact sign test on that split — whether a difference is more than
noise.  ``--provinces 皖=0.8`` reads the real folders with province shares, both weights alike.

The synthetic test seeds (3; 5 for a face of your own; 7 for loose crops; 9 for monochrome crops; since stage 32
also 63, 65, 67 and 61 for the same four kinds, since stage 33 71, 73, 75 and 69; the pre-written decisions since
candidate 34 64-78, 84-90, 104-110, 116-122, 128-134, 138-144, 156-162 and 166-172) differ from every training (1, 11,
14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 33, 34, 35, 36, 40, 42, 44, 46, 48, 50, 52, 54, 56, 58, 60, 80, 100, 112, 124,
136, 154, 164) and validation (2, 12, 15, 17, 19, 21, 23, 25, 29, 31, 37, 41, 43, 49, 53, 55, 57, 59, 62, 82, 102, 114,
126) seed of the bundled weights and their candidates.  With ``--baseline`` the pairs are also counted per plate kind
(the JSON's ``paired.by_kind``).
The real folder is evaluated only — never used to train, select or tune.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

import torch

import lprnet
from lprnet.core.process import ctc_greedy_decode
from lprnet.data.synth import PLATE_KINDS, cjk_faces, generate
from lprnet.evaluate import evaluate, paired, sign_test
from lprnet.recognizer import Recognizer


def _weights(path: Path | None) -> Path | None:
    """A weights path; ``default`` (as ``lprnet train --init-weights default``) is the bundled weights."""
    return None if path is None or str(path) == "default" else path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path, default=None, help="weights file, or 'default' (the bundled ones, "
                    "also when omitted)")
    ap.add_argument("--real", type=Path, action="append", default=[])
    ap.add_argument("--n-per-kind", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--decode", default="auto", help="auto, plate or greedy (greedy is always reported beside it)")
    ap.add_argument("--cjk-face", type=Path, action="append", default=[],
                    help="font file for the synthetic plates' Chinese characters instead of the shipped faces")
    ap.add_argument("--loose-crops", type=float, default=None,
                    help="share of loose synthetic test crops (default: the generator's, 0.08; 1: all loose)")
    ap.add_argument("--grayscale", type=float, default=None,
                    help="share of monochrome-camera synthetic test crops (default: the generator's, 0; 1: all)")
    ap.add_argument("--baseline", type=Path, default=None,
                    help="weights to compare with, plate by plate, on the same synthetic plates and real folders "
                    "('default': the bundled ones)")
    ap.add_argument("--provinces", default=None,
                    help="province shares for reading the real folders only (e.g. 皖=0.8; default none)")
    args = ap.parse_args()
    if args.n_per_kind < 0 or args.threads < 1:
        ap.error("--n-per-kind must be >= 0 and --threads >= 1")
    torch.set_num_threads(args.threads)
    try:
        rec = lprnet.load(_weights(args.weights), decode=args.decode)
        base = lprnet.load(_weights(args.baseline), decode=args.decode) if args.baseline else None
        rec.with_provinces(args.provinces)  # a bad value fails here, before any plate is read
    except ValueError as e:  # WeightsError, a bad --decode or --provinces
        ap.error(str(e))
    greedy = Recognizer(rec.backend, rec.config, rec.meta, decode="greedy")  # same loaded model
    only_new = only_base = 0  # over every kind
    by_kind: dict[str, tuple[int, int]] = {}
    out: dict = {"weights": str(args.weights or "default"), "decode": rec.decode, "synthetic": {}, "real": {},
                 "seed": args.seed, "cjk_faces": [str(p) for p in args.cjk_face],
                 "loose_crops": args.loose_crops, "grayscale": args.grayscale}
    # one face table for all kinds: glyphs are rendered once, not once per kind
    with cjk_faces(args.cjk_face) if args.cjk_face else contextlib.nullcontext():
        for kind in PLATE_KINDS if args.n_per_kind > 0 else ():  # --n-per-kind 0: real folders only
            items = list(generate(args.n_per_kind, seed=args.seed, kinds=(kind,), province_smudge=0.0,
                                  loose_crops=args.loose_crops, grayscale=args.grayscale))
            truth = [t for _, t, _ in items]
            ok = ok_g = tail = kind_new = kind_base = 0
            for i in range(0, len(items), 100):  # one forward pass, both decodings
                batch = [im for im, _, _ in items[i:i + 100]]
                logits = rec.predict_logits(batch)
                pairs = [(p.plate, t) for p, t in zip(rec.decode_logits(logits), truth[i:i + 100])]
                ok += sum(p == t for p, t in pairs)
                tail += sum(p[1:] == t[1:] for p, t in pairs)
                ok_g += sum(p.plate == t for p, t in zip(ctc_greedy_decode(logits, rec.charset), truth[i:i + 100]))
                if base is not None:
                    theirs = base.decode_logits(base.predict_logits(batch))  # the same plates, same path
                    for (p, t), b in zip(pairs, theirs):
                        kind_new += p == t and b.plate != t
                        kind_base += p != t and b.plate == t
            only_new, only_base = only_new + kind_new, only_base + kind_base
            by_kind[kind] = (kind_new, kind_base)
            n, prov_only = len(items), tail - ok  # a plate read right is right without its province too
            out["synthetic"][kind] = {"n": n, "accuracy": ok / n, "accuracy_greedy": ok_g / n,
                                      "accuracy_without_province": tail / n, "province_only_errors": prov_only}
            print(f"synthetic {kind:6s}: {ok / n:.4f} ({ok}/{n}; greedy {ok_g / n:.4f}; without the province "
                  f"{tail / n:.4f}, {prov_only} of {n - ok} misread only at the province)", flush=True)
    if base is not None and out["synthetic"]:
        p_value = sign_test(only_new, only_base)
        out["paired"] = {"baseline": str(args.baseline), "only_these": only_new, "only_baseline": only_base,
                         "sign_test_p": p_value,
                         "by_kind": {k: {"only_these": a, "only_baseline": b, "sign_test_p": sign_test(a, b)}
                                     for k, (a, b) in by_kind.items()}}
        print(f"paired with {args.baseline}: {only_new} plates only these weights read, {only_base} only the "
              f"baseline (sign test p = {p_value:.3f}; "
              + ", ".join(f"{k} {a} / {b}" for k, (a, b) in by_kind.items()) + ")", flush=True)
    rec_real = rec.with_provinces(args.provinces)  # the loaded model, nothing reloaded
    base_real = base.with_provinces(args.provinces) if base is not None else None
    for d in args.real:
        accs = {}
        for bs in (1, 100):
            rep = evaluate(rec_real, [d], batch_size=bs)
            accs[bs] = rep.accuracy
        if rep.n == 0:  # a typo in --real must not read as a model scoring 0
            sys.exit(f"error: --real {d}: no labelled plate could be scored"
                     + (f" ({rep.unreadable[0]['path']}: {rep.unreadable[0]['error']})" if rep.unreadable else ""))
        rep_g = evaluate(greedy, [d], batch_size=100)
        out["real"][str(d.name)] = {"n": rep.n, "accuracy": rep.accuracy, "char_accuracy": rep.char_accuracy,
                                    "accuracy_batch1": accs[1], "accuracy_batch100": accs[100],
                                    "accuracy_greedy": rep_g.accuracy,
                                    "top_confusions": rep.to_json(8)["confusions"],
                                    "deletions": rep.deletions, "insertions": rep.insertions}
        print(f"real {d.name}: {rep.accuracy:.4f} (batch 1: {accs[1]:.4f}; greedy {rep_g.accuracy:.4f}), "
              f"chars {rep.char_accuracy:.4f}, dropped {rep.deletions}, inserted {rep.insertions}"
              + (f", provinces {args.provinces}" if args.provinces else ""), flush=True)
        if base_real is not None:
            rep_b = evaluate(base_real, [d], batch_size=100)
            a, b = paired(rep, rep_b)
            out["real"][str(d.name)]["paired"] = {"baseline": str(args.baseline), "baseline_accuracy":
                                                 rep_b.accuracy, "only_these": a, "only_baseline": b,
                                                 "sign_test_p": sign_test(a, b)}
            print(f"real {d.name} paired with {args.baseline} ({rep_b.accuracy:.4f}): {a} plates only these "
                  f"weights read, {b} only the baseline (sign test p = {sign_test(a, b):.3f})", flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, ensure_ascii=False, indent=2))


if __name__ == "__main__":
    main()
