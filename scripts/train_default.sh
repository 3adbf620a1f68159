#!/usr/bin/env bash
# Reproduce the bundled default weights (docs/model-card.md), or train a longer run.
#   scripts/train_default.sh [RUN_DIR] [STEPS] [DEVICE]
# CPU (this project's 2-core machine): STEPS=1600 took ~75 min.  GPU one-liner (e.g. an H100 with
# 16 cores):  scripts/train_default.sh /tmp/run 30000 cuda   -- renders 600k plates on all cores first.
set -euo pipefail
RUN=${1:-$HOME/.cache/lprnet/runs/default}
STEPS=${2:-1600}
DEVICE=${3:-cpu}
WORKERS=$(nproc)
N_TRAIN=$(( STEPS * 64 < 150000 ? 150000 : STEPS * 64 / 3 ))
mkdir -p "$RUN"
lprnet synth --n "$N_TRAIN" --out "$RUN/synth-train" --seed 1 --format shards --workers "$WORKERS" --no-progress
lprnet synth --n 3000 --out "$RUN/synth-val" --seed 2 --format shards --shard-size 3000 --no-progress
RESUME=()
[ -f "$RUN/train/checkpoints/last.pt" ] && RESUME=(--resume)
lprnet train --data "synth:$RUN/synth-train" --val-synth "$RUN/synth-val" \
  --steps "$STEPS" --batch-size 64 --lr 1e-3 --warmup-steps 150 --out "$RUN/train" \
  --device "$DEVICE" --workers "$([ "$DEVICE" = cpu ] && echo 0 || echo 8)" --eval-every 200 --ckpt-every 50 \
  "${RESUME[@]}"
echo "weights: $RUN/train/best.safetensors"
