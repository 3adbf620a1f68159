#!/bin/sh
# GPU benchmark in one line, on a machine with an NVIDIA GPU and its driver:
#
#     sh scripts/gpu_bench.sh [WEIGHTS] [extra `lprnet bench` options...]
#
# Writes docs/bench-gpu.md (tables naming the GPU), docs/bench-gpu.png (plates/s vs batch) and
# docs/bench-gpu.json: the reference form (ReferenceLPRNet) vs the deploy form (LPRNet) in
# PyTorch on CUDA -- eager fp32, channels-last, fp16/bf16 autocast, .half(), CUDA graphs and
# torch.compile -- at batch 1, 8, 32, 128, 512, 1024 and 4096 (see src/lprnet/bench_gpu.py).
#
# WEIGHTS defaults to ../shared/reference/lprnet_pytorch_final.pth when present, else the bundled
# weights. The real crops in ../shared/data/plates-cn-1k are used as inputs when present.
# It makes its own virtual environment (.venv-gpu, or $VENV) with the CUDA build of torch from
# PyPI (the repository's .venv has the CPU build); set PY to choose the Python (>= 3.10).
# On a lent machine with no network (torch already installed, see scripts/gpu_lease_train.sh): VENV=none runs the
# package from src/ with $PY (wheels carried in $WHEELS, default .whl, go to /tmp/site first), and OUT (set by the
# device tool) receives the results instead of docs/.
set -eu
cd "$(dirname "$0")/.."
PY=${PY:-python3}
VENV=${VENV:-.venv-gpu}
TORCH=${TORCH:-torch==2.13.0}
DEST=${OUT:-docs}

if [ "$VENV" = none ]; then
    . scripts/lease_site.sh
    PYTHON=$(command -v "$PY")
else
    if [ ! -x "$VENV/bin/lprnet" ]; then
        "$PY" -m venv "$VENV"
        "$VENV/bin/python" -m pip install -q --upgrade pip
        "$VENV/bin/python" -m pip install -q "$TORCH"   # PyPI's Linux wheel is the CUDA build
        "$VENV/bin/python" -m pip install -q -e .
    fi
    PYTHON=$VENV/bin/python
fi
"$PYTHON" - <<'EOF'
import sys
import torch
if torch.version.cuda is None:
    sys.exit(f"torch {torch.__version__} in this environment is a CPU-only build: remove the environment "
             "and rerun (PyPI's Linux x86_64/aarch64 wheel is the CUDA build), or set TORCH to a CUDA wheel")
if not torch.cuda.is_available():
    sys.exit(f"no usable GPU: torch {torch.__version__} (CUDA {torch.version.cuda}) reports "
             "torch.cuda.is_available() == False; check nvidia-smi and the driver")
print(f"GPU: {torch.cuda.get_device_name()} (torch {torch.__version__}, CUDA {torch.version.cuda})", file=sys.stderr)
EOF

WEIGHTS=""
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
    WEIGHTS=$1
    shift
elif [ -f ../shared/reference/lprnet_pytorch_final.pth ]; then
    WEIGHTS=../shared/reference/lprnet_pytorch_final.pth
fi
mkdir -p "$DEST"
"$PYTHON" -m lprnet bench --device cuda ${WEIGHTS:+--weights "$WEIGHTS"} --repeats 7 --out "$DEST" --json "$@" \
    > "$DEST/bench-gpu.json.tmp"
mv "$DEST/bench-gpu.json.tmp" "$DEST/bench-gpu.json"
echo "wrote $DEST/bench-gpu.md, $DEST/bench-gpu.png, $DEST/bench-gpu.json" >&2
