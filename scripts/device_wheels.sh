#!/usr/bin/env bash
# Wheels to carry to a GPU machine that has PyTorch, OpenCV, Typer, Rich, Matplotlib and safetensors but no
# network and no pydantic (the project's lent device image): run here, where pip reaches PyPI.
#   scripts/device_wheels.sh [DIR]        (default .whl, which this adds to .git/info/exclude)
# There:  python3 -m pip install -q --no-index --no-deps --target /tmp/site DIR/*.whl && export PYTHONPATH=/tmp/site
# The versions are this checkout's .venv's, for CPython 3.12 on x86-64 Linux (PY_VERSION to change it).
set -euo pipefail
case "${1:-}" in -h|--help) sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
cd "$(dirname "$0")/.."
DIR=${1:-.whl}
PY_VERSION=${PY_VERSION:-3.12}
PIP=${PIP:-.venv/bin/python -m pip}
ver() { $PIP show "$1" 2>/dev/null | sed -n 's/^Version: //p'; }
PKGS=()
for p in pydantic pydantic-core annotated-types typing-inspection typing-extensions; do
  v=$(ver "$p"); [ -n "$v" ] || { echo "error: $p is not installed in this environment (run make setup)" >&2; exit 2; }
  PKGS+=("$p==$v")
done
if [ "$DIR" = .whl ] && [ -d .git ] && ! grep -qx '/.whl/' .git/info/exclude 2>/dev/null; then
  echo '/.whl/' >> .git/info/exclude
fi
mkdir -p "$DIR"
$PIP download -q --no-deps --only-binary=:all: --python-version "$PY_VERSION" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$DIR" "${PKGS[@]}"
ls -1 "$DIR"
