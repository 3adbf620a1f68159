#!/usr/bin/env bash
# Train default-style weights from scratch with the current synthesizer (docs/model-card.md).
#   scripts/train_default.sh [RUN_DIR] [STEPS] [DEVICE] [INIT_WEIGHTS]
# CPU (this project's 2-core machine, ~45 plates/s when idle): STEPS=4000 is ~1.5 h of training.
# GPU one-liner (e.g. an H100 with 16 cores):  scripts/train_default.sh /tmp/run 30000 cuda
#   -- renders STEPS*BATCH/3 plates (at least 200k) on all cores first, then trains.
# INIT_WEIGHTS (optional) fine-tunes from existing weights instead of a random init; the bundled
# weights were made that way (see the model card for the exact chain of runs).
# BATCH and LR (environment, default 64 and 1e-3) size the step: a GPU is better used at e.g.
#   BATCH=256 LR=2e-3 scripts/train_default.sh /tmp/run 10000 cuda
# MODEL=lprnet_wide trains the wider layout (every channel kept; narrow INIT_WEIGHTS are widened).
# REAL (environment, optional) mixes labelled real data into the stream beside the synthetic plates (share 1),
#   as the bundled weights' last stages did with the 16 CCPD sample scenes:
#   REAL=ccpd:../shared/data/ccpd-samples:0.1 scripts/train_default.sh /tmp/ft 4000 cpu default
#   (any --data source: real:DIR:W, manifest:FILE.csv:W, ccpd:DIR:W; space-separated for several).
# N_TRAIN and N_VAL (environment) override the number of training and validation plates rendered, WARMUP
#   (default 100) the warm-up steps.
# TIME_BUDGET (environment, e.g. 6m, 2h, 1h30m) trains for about that much training time: STEPS becomes a cap and
#   the run plans its own length (the cosine schedule's end) from its measured step time -- a GPU run that has to
#   fit a lease (scripts/gpu_lease_train.sh; "A GPU lease" in docs/model-card.md).
# SET (environment, optional) sets further training-config fields, space-separated KEY=VALUE pairs passed as
#   `lprnet train --set` (e.g. SET='log_every=10 grad_clip=2').
# SYNTH_ARGS (environment, optional) adds `lprnet synth` options for the training plates, word-split, e.g.
#   SYNTH_ARGS='--loose-crops 0.45 --grayscale 0.2' (the mix of the bundled weights' last rounds).
# EVAL_EVERY and CKPT_EVERY (environment) space the evaluations and checkpoints: 400 and 50 steps on the CPU (about a
#   step a second), 2000 and 500 on a GPU (a hundred steps a second would otherwise spend a lease evaluating).
set -euo pipefail
RUN=${1:-$HOME/.cache/lprnet/runs/default}
STEPS=${2:-4000}
DEVICE=${3:-cpu}
INIT=${4:-}
BATCH=${BATCH:-64}
LR=${LR:-1e-3}
WORKERS=$(nproc)
N_TRAIN=${N_TRAIN:-$(( STEPS * BATCH / 3 < 200000 ? 200000 : STEPS * BATCH / 3 ))}
N_VAL=${N_VAL:-3000}
WARMUP=${WARMUP:-100}
if [ "$DEVICE" = cpu ]; then EVAL_EVERY=${EVAL_EVERY:-400} CKPT_EVERY=${CKPT_EVERY:-50}
else EVAL_EVERY=${EVAL_EVERY:-2000} CKPT_EVERY=${CKPT_EVERY:-500}; fi
mkdir -p "$RUN"
# shards are written atomically and skipped when present: a rerun resumes an interrupted render
# green and yellow plates at 20 % each (their synthetic accuracy target is 0.98; real traffic is mostly blue)
MIX=0.6,0.2,0.2
# shellcheck disable=SC2086  # SYNTH_ARGS is a list of options
lprnet synth --n "$N_TRAIN" --out "$RUN/synth-train" --seed 14 --weights "$MIX" --format shards \
  --workers "$WORKERS" --no-progress ${SYNTH_ARGS:-}
lprnet synth --n "$N_VAL" --out "$RUN/synth-val" --seed 15 --weights "$MIX" --province-smudge 0 --format shards \
  --shard-size "$N_VAL" --no-progress
EXTRA=()
[ -f "$RUN/train/checkpoints/last.pt" ] && EXTRA+=(--resume)
[ -n "$INIT" ] && EXTRA+=(--init-weights "$INIT")
for SRC in ${REAL:-}; do EXTRA+=(--data "$SRC"); done
[ -n "${TIME_BUDGET:-}" ] && EXTRA+=(--time-budget "$TIME_BUDGET")
[ -n "${MODEL:-}" ] && EXTRA+=(--set "model=$MODEL")
for KV in ${SET:-}; do EXTRA+=(--set "$KV"); done
lprnet train --data "synth:$RUN/synth-train" --val-synth "$RUN/synth-val" \
  --steps "$STEPS" --batch-size "$BATCH" --lr "$LR" --warmup-steps "$WARMUP" --out "$RUN/train" \
  --device "$DEVICE" --workers "$([ "$DEVICE" = cpu ] && echo 0 || echo 8)" --eval-every "$EVAL_EVERY" --ckpt-every "$CKPT_EVERY" \
  "${EXTRA[@]}"
echo "weights: $RUN/train/best.safetensors"
