#!/usr/bin/env bash
# Every GPU measurement rlkit reports, in one device call (the lease is 15 minutes, start-up
# included). Results and the whole log go to $OUT; each step writes its own JSON as soon as it
# ends, so a step that runs out of time loses only itself.
#
# The device machine has its own Python (3.12) and JAX (0.11 with CUDA) but not gymnax, gymnasium,
# tyro, tensorboardX or flashbax: they travel as wheels in .whl/ (ignored by git), fetched here with
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_17_x86_64 -d .whl \
#     gymnax==1.0.1 gymnasium==1.3.0 tyro==1.0.17 tensorboardx==2.6.5 farama-notifications==0.0.6 \
#     docstring-parser==0.18.0 typeguard==4.6.1 flashbax==0.1.3 typing-extensions==4.16.0
# (the versions of uv.lock) and installed below into /tmp/site.
#
# Usage (device tool): run(command="bash benchmarks/device_h200.sh", carry=[".whl"])
# Smoke test on a CPU: PYTHON=.venv/bin/python STEPS=20000 MANY=4 OUT=/tmp/o bash benchmarks/device_h200.sh
set -u -o pipefail
cd "$(dirname "$0")/.."
. benchmarks/device_env.sh  # OUT, PY, PYTHONPATH (and the wheels of .whl/)
# All programs get the same flags: rlkit's (see rlkit/__init__.py), imported first by every script.
# The reference keeps PureJaxRL's per-step info (tens of GB at 2048 seeds): let JAX take 95% of the
# card instead of 75%.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.95}
ONLY=${ONLY:-"ppo1 ppo2048 cli replay"}  # the steps to run, in this order
PROGRAMS=${PROGRAMS:-raw,reference,rlkit}
TAG=${TAG:-h200}
DET=""  # DETERMINISTIC=1: time the PPOs with XLA:GPU's deterministic kernels, as the CLI runs
if [ "${DETERMINISTIC:-0}" = 1 ]; then DET=--deterministic; fi
LOG="$OUT/log.txt"
step() { echo "=== $(date -u +%T) $*" | tee -a "$LOG"; }

step "device"
{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv
  "$PY" -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, \
'optax', optax.__version__, jax.devices())"; } 2>&1 | tee -a "$LOG"

# 1. The bar of issue 2: PPO on CartPole, 5e5 env steps per seed, rlkit against the PureJaxRL-style
#    reference and raw env stepping, one seed unvmapped and 2048 seeds vmapped.
ppo1() {
  timeout "${T_ONE:-170}" "$PY" benchmarks/ppo_throughput.py --total-steps "${STEPS:-500000}" \
    --seeds 1 --repeats 3 --programs "$PROGRAMS" $DET --child-timeout 120 \
    --out "$OUT/ppo_throughput_${TAG}_1seed.json" 2>&1 | tee -a "$LOG"
}
ppo2048() {
  timeout "${T_MANY:-330}" "$PY" benchmarks/ppo_throughput.py --total-steps "${STEPS:-500000}" \
    --seeds "${MANY:-2048}" --repeats 2 --programs "$PROGRAMS" $DET --child-timeout 150 \
    --out "$OUT/ppo_throughput_${TAG}_2048.json" 2>&1 | tee -a "$LOG"
}

# 2. Same config and seed on the same device give identical metrics.csv: the CLI twice on the GPU.
cli() {
  rm -rf /tmp/det_a /tmp/det_b
  for run in a b; do
    timeout "${T_CLI:-60}" "$PY" -m rlkit.train ppo --env cartpole --seeds 4 \
      --total-steps 65536 --run-dir "/tmp/det_$run" >>"$LOG" 2>&1
  done
  if cmp -s /tmp/det_a/metrics.csv /tmp/det_b/metrics.csv; then
    echo "metrics.csv identical across two GPU runs" | tee -a "$LOG"
  else
    echo "metrics.csv DIFFERS across two GPU runs" | tee -a "$LOG"
    diff /tmp/det_a/metrics.csv /tmp/det_b/metrics.csv | head -20 | tee -a "$LOG"
  fi
  cp /tmp/det_a/summary.json "$OUT/cli_summary_${TAG}.json" 2>/dev/null
}

# 3. Replay buffers against flashbax on the GPU.
replay() {
  timeout "${T_REPLAY:-90}" "$PY" benchmarks/replay.py --json "$OUT/replay_${TAG}.json" 2>&1 \
    | tee -a "$LOG"
}

for s in $ONLY; do
  step "$s (XLA_FLAGS: ${XLA_FLAGS:-unset}${DET:+, $DET})"
  "$s"
done
step "done"
