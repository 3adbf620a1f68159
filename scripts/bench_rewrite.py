"""Time the reference LPRNet against its rewritten graphs on real plates (1 CPU thread).

Prints, does not assert.  Usage::

    PYTHONPATH=src python scripts/bench_rewrite.py [--plates 32] [--repeat 5] [--data DIR]

``--data`` is a folder of plate crops (default ``../shared/data/plates-cn-1k``; only timed, never scored, and any
crops do: e.g. ``lprnet synth --n 32 --format jpg --out DIR``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from lprnet.charset import DEFAULT_CHARSET
from lprnet.core.process import IMAGE_EXTENSIONS, greedy_strings, preprocess, read_image
from lprnet.rewrite import apply
from lprnet.weights import build_model

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"


def bench(fn: torch.nn.Module, x: torch.Tensor, repeat: int) -> float:
    with torch.no_grad():
        fn(x)  # warm-up
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            fn(x)
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default=str(SHARED / "reference" / "lprnet_pytorch_final.pth"))
    ap.add_argument("--plates", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--data", type=Path, default=SHARED / "data" / "plates-cn-1k", help="folder of plate crops")
    args = ap.parse_args()
    if args.plates < 1 or args.repeat < 1:
        ap.error("--plates and --repeat must be >= 1")
    torch.set_num_threads(1)
    files = sorted(f for f in args.data.glob("*") if f.suffix.lower() in IMAGE_EXTENSIONS)[: args.plates]
    if not files:
        ap.error(f"--data {args.data}: no image files")
    x = torch.from_numpy(preprocess([read_image(f) for f in files], (94, 24)))

    def decode(o: torch.Tensor) -> list[str]:
        return greedy_strings(o.numpy(), DEFAULT_CHARSET)

    ref = build_model(args.weights, form="reference")[0]
    rows = [("reference (eager)", bench(ref, x, args.repeat))]
    for preset in ("safe", "deploy"):
        gm, report = apply(ref, x[:2], preset, verify_inputs=x, decode=decode)
        print(report.to_text(), "\n")
        rows.append((f"rewritten ({preset})", bench(gm, x, args.repeat)))
    for rules in (["maxpool3d-to-2d"], ["flush-subnormals"]):
        gm, _ = apply(ref, x[:2], rules, verify=False)
        rows.append((f"only {rules[0]}", bench(gm, x, args.repeat)))
    base = rows[0][1]
    print(f"{len(files)} plates, 1 thread, median of {args.repeat}:")
    for name, t in rows:
        print(f"  {name:28s} {t * 1000:8.1f} ms   x{base / t:5.2f}")


if __name__ == "__main__":
    main()
