"""Time the reference LPRNet against its rewritten graphs on real plates (1 CPU thread).

Every variant is timed once per round, in interleaved rounds (``lprnet.bench.time_rounds``,
as ``lprnet bench`` does), so slow drifts of the machine hit all alike; printed: the median
ms per batch over rounds and the paired speed-up (median of per-round ratios reference/variant).
Prints, does not assert.  Usage::

    PYTHONPATH=src python scripts/bench_rewrite.py [--plates 32] [--repeat 5] [--data DIR]

``--data`` is a folder of plate crops (default ``../shared/data/plates-cn-1k``; only timed, never scored, and any
crops do: e.g. ``lprnet synth --n 32 --format jpg --out DIR``).
"""

from __future__ import annotations

import argparse
import statistics
from functools import partial
from pathlib import Path

import torch

from lprnet.bench import paired_speedup, time_rounds
from lprnet.charset import DEFAULT_CHARSET
from lprnet.core.process import IMAGE_EXTENSIONS, greedy_strings, preprocess, read_image
from lprnet.rewrite import apply
from lprnet.weights import build_model

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"


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
    variants: list[tuple[str, torch.nn.Module]] = [("reference (eager)", ref)]
    for preset in ("safe", "deploy"):
        gm, report = apply(ref, x[:2], preset, verify_inputs=x, decode=decode)
        print(report.to_text(), "\n")
        variants.append((f"rewritten ({preset})", gm))
    for rules in (["maxpool3d-to-2d"], ["flush-subnormals"]):
        gm, _ = apply(ref, x[:2], rules, verify=False)
        variants.append((f"only {rules[0]}", gm))
    with torch.no_grad():
        for _, fn in variants:
            fn(x)  # warm-up
        times = time_rounds([partial(fn, x) for _, fn in variants], args.repeat)
    print(f"{len(files)} plates, 1 thread, {args.repeat} interleaved rounds (median ms per batch; "
          "speed-up = median of per-round ratios reference/variant):")
    for (name, _), ts in zip(variants, times):
        print(f"  {name:28s} {statistics.median(ts) * 1000:8.1f} ms   x{paired_speedup(times[0], ts):5.2f}")


if __name__ == "__main__":
    main()
