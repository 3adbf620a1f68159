# Sourced (`. scripts/lease_site.sh`, POSIX sh) by gpu_bench.sh with VENV=none and by gpu_lease_train.sh, on a lent
# machine with no network, from the repository root: the wheels carried in $WHEELS (default .whl; made here by
# scripts/device_wheels.sh) are unpacked into $SITE (default /tmp/site) with $PY's pip, nothing installed
# system-wide, and PYTHONPATH is exported with $SITE and the package's src/ in front.
WHEELS=${WHEELS:-.whl}
SITE=${SITE:-/tmp/site}
if ls "$WHEELS"/*.whl > /dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SITE" "$WHEELS"/*.whl
    PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
fi
PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
export PYTHONPATH
