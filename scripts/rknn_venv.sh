#!/bin/sh
# RKNN-Toolkit2 (Rockchip's ONNX -> .rknn converter and simulator) in an environment of its own, for
# `lprnet export --format rknn` and tests/export/test_rknn.py.  The toolkit pins torch<=2.4, numpy<=1.26,
# onnx<=1.18 and protobuf<=4.25.4, which this package's environment does not meet; it needs torch only to
# import (our exports reach it as ONNX), so torch==2.13.0 is installed beside it without its pin.
# Makes $RKNN_VENV (default .venv-rknn) once.  Where the toolkit has no wheel (it has them for Linux x86_64 and
# aarch64, Python 3.8-3.12) or the install fails, it prints a note and succeeds: the RKNN test then skips.
# Run by `make test`; TORCH_INDEX as for the Makefile.
set -u
VENV=${RKNN_VENV:-.venv-rknn}
PY=${PY:-python3}
RKNN_VERSION=2.5.0

note() { echo "note: $*; lprnet export --format rknn and its test are unavailable" >&2; exit 0; }

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -I -c "from rknn.api import RKNN; RKNN(verbose=False)" >/dev/null 2>&1; then
    exit 0
fi
case "$(uname -s)/$(uname -m)" in
    Linux/x86_64|Linux/aarch64) ;;
    *) note "RKNN-Toolkit2 has wheels for Linux x86_64 and aarch64 only (this is $(uname -s)/$(uname -m))" ;;
esac
"$PY" -c 'import sys; sys.exit(not (3, 8) <= sys.version_info[:2] <= (3, 12))' ||
    note "RKNN-Toolkit2 $RKNN_VERSION has wheels for Python 3.8-3.12 ($PY is $("$PY" -V 2>&1))"
echo "setting up RKNN-Toolkit2 $RKNN_VERSION in $VENV (for the RKNN export)" >&2
rm -rf "$VENV"
"$PY" -m venv "$VENV" || note "could not make $VENV"
P="$VENV/bin/python"
LOG="$VENV/setup.log"  # pip's output: its resolver warns of the pins we step around on purpose
pipi() { "$P" -m pip install -q "$@" >>"$LOG" 2>&1; }
pipi --upgrade pip "setuptools>=77.0.3,<81"  # the toolkit imports pkg_resources
pipi --no-deps "rknn-toolkit2==$RKNN_VERSION" || note "pip could not install rknn-toolkit2 (see $LOG)"
pipi "protobuf>=4.21.6,<=4.25.4" "psutil>=5.9.0" "ruamel.yaml>=0.17.21" "scipy>=1.9.3" "tqdm>=4.64.1" \
    "opencv-python-headless>=4.5.5.64" "fast-histogram>=0.11" "numpy<=1.26.4" "onnx>=1.16.1,<=1.18.0" \
    "onnxruntime>=1.17.0" || note "pip could not install the toolkit's dependencies (see $LOG)"
pipi --no-deps torch==2.13.0 ${TORCH_INDEX:+--index-url "$TORCH_INDEX"} &&
    pipi typing_extensions sympy networkx jinja2 fsspec filelock ||
    note "pip could not install torch for the toolkit (see $LOG)"
"$P" -I -c "from rknn.api import RKNN; RKNN(verbose=False)" >>"$LOG" 2>&1 || note "RKNN-Toolkit2 does not start in $VENV (see $LOG)"
echo "RKNN-Toolkit2 $RKNN_VERSION is ready in $VENV" >&2
