#!/usr/bin/env bash
# One training run on a lent GPU machine with no network (docs/model-card.md, "A GPU lease"):
#   bash scripts/gpu_lease_train.sh [INIT]          (the device tool: carry [".whl"], timeout_s about 570)
# Installs nothing system-wide: the carried wheels (scripts/device_wheels.sh, run where pip works) go to /tmp/site,
# the package is used from src/ through `python -m lprnet`, so neither network nor a recent setuptools is needed.
# Then scripts/train_default.sh renders the plates on all cores and trains for TIME_BUDGET, and the weights,
# curves, log and config land in $OUT (default ./gpu-run). Environment, with the defaults for a 15-minute lease:
#   TIME_BUDGET=5m30s BATCH=256 LR=2e-3 N_TRAIN=300000 STEPS=100000 (a cap) DEVICE=cuda PY=python3 WHEELS=.whl
#   SYNTH_ARGS='--loose-crops 0.45 --grayscale 0.2': the training plates' mix of loose and monochrome-camera crops,
#   as in the bundled weights' last rounds (the decision sets include both kinds; SYNTH_ARGS= for the generator's
#   defaults)
#   DEADLINE=540: seconds from this script's start by which training is stopped (SIGINT, then SIGKILL 15 s later)
#   whatever it is doing, so that the copy into $OUT happens inside the device tool's timeout_s (about 570): the
#   budget counts training steps only, not the render (about 2 minutes on 16 cores), evaluations or start-up.
set -euo pipefail
START=$SECONDS
cd "$(dirname "$0")/.."
PY=${PY:-python3}
OUT=${OUT:-$PWD/gpu-run}
RUN=${RUN:-/tmp/lprnet-run}
DEADLINE=${DEADLINE:-540}
export SYNTH_ARGS=${SYNTH_ARGS---loose-crops 0.45 --grayscale 0.2}
export TIME_BUDGET=${TIME_BUDGET:-5m30s} BATCH=${BATCH:-256} LR=${LR:-2e-3} N_TRAIN=${N_TRAIN:-300000}
. scripts/lease_site.sh  # the carried wheels into /tmp/site, PYTHONPATH
mkdir -p "$OUT"
BIN=$(mktemp -d)  # an `lprnet` command for train_default.sh: the package from src/, nothing installed
printf '#!/bin/sh\nexec "%s" -m lprnet "$@"\n' "$(command -v "$PY")" > "$BIN/lprnet"
chmod +x "$BIN/lprnet"
export PATH=$BIN:$PATH
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available() and torch.cuda.get_device_name())"
LEFT=$(( DEADLINE - (SECONDS - START) ))
set +e
timeout --signal=INT --kill-after=15 "$(( LEFT > 1 ? LEFT : 1 ))" \
  scripts/train_default.sh "$RUN" "${STEPS:-100000}" "${DEVICE:-cuda}" "${1:-}" > "$OUT/run.log" 2>&1
rc=$?
set -e
if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
  echo "stopped at DEADLINE=${DEADLINE}s: the last best.safetensors and metrics are kept" >&2
fi
# the log without its progress bars (tqdm's "12/300 [00:01<00:30, ...]" lines) and the blank lines they leave
tr '\r' '\n' < "$OUT/run.log" | grep -v -E '[0-9]+/[0-9]+ \[[0-9:]+<|^[[:space:]]*$' | tail -n 40 || true
for f in best.safetensors final.safetensors metrics.csv curves.png config.json; do
  if [ -f "$RUN/train/$f" ]; then cp "$RUN/train/$f" "$OUT/"; fi
done
ls -l "$OUT"
exit "$rc"
