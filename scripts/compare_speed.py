"""Forward time of two weights files (deploy form, as loaded), one intra-op thread, interleaved rounds: medians and
the median of per-round paired ratios B/A, at batch 1 and 32, run from the repo root.

    python scripts/compare_speed.py A.safetensors B.safetensors [--rounds 11] [--layout-a nchw] [--layout-b nhwc]

The model card's speed row (the wide candidate 44 against the narrow candidate 38) comes from this script. Pin the
machine quiet: on a 2-vCPU box a busy second core moves single-thread timings by 10-20 %, so run it twice.
"""
from __future__ import annotations

import argparse
import statistics
from functools import partial

import torch

from lprnet.bench import paired_speedup, time_rounds
from lprnet.core.backend import TorchBackend
from lprnet.weights import WeightsError, build_model


def main() -> None:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("a", help="weights A (the baseline)")
    ap.add_argument("b", help="weights B")
    ap.add_argument("--rounds", type=int, default=11)
    for side in ("a", "b"):
        ap.add_argument(f"--layout-{side}", choices=("nchw", "nhwc"), default="nchw",
                        help=f"memory layout of {side.upper()} (nhwc: channels-last, the recognizer's on the CPU)")
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    torch.set_num_threads(1)
    try:  # through the recognizer's backend: numpy in, numpy out
        models = [TorchBackend(build_model(path)[0].eval(), channels_last=layout == "nhwc")
                  for path, layout in ((args.a, args.layout_a), (args.b, args.layout_b))]
    except WeightsError as e:
        ap.error(str(e))
    for batch, calls in ((1, 60), (32, 4)):
        x = torch.rand(batch, 3, 24, 94).numpy()
        with torch.inference_mode():
            time_rounds([partial(m, x) for m in models], 1, 5)  # warm-up
            ta, tb = time_rounds([partial(m, x) for m in models], args.rounds, calls)
        print(f"batch {batch}: A {statistics.median(ta) * 1000:.2f} ms, B {statistics.median(tb) * 1000:.2f} ms "
              f"per call; paired ratio B/A median {1 / paired_speedup(ta, tb):.2f} ({args.rounds} rounds)")


if __name__ == "__main__":
    main()
