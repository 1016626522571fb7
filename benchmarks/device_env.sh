# Sourced by the device scripts (device_h200.sh, preference_gpu.sh) from the repository root:
# OUT (results folder, created), PY (the Python to use: $PYTHON or python3) and PYTHONPATH (the
# repository, and the wheels of .whl/ installed into /tmp/site when that folder travelled).
OUT=${OUT:-/tmp/rlkit-device-out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
if [ -d .whl ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
