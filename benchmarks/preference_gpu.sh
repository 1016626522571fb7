#!/usr/bin/env bash
# Offline DPO, HyPO and online iterative DPO on the sort text task with a GPT-2-class model
# (benchmarks/preference_text.py --shape gpt2: 12 layers, width 768, 12 heads, about 85M
# parameters, trained from scratch: nothing is downloaded), 5 seeds, on one GPU (issue 13,
# item 6). With several GPUs the preference driver splits every batch over them.
#
# Time: not measured yet (no device lent long enough so far). Per seed it trains two iterative
# DPO runs (3 x 200 updates of 64 pairs, 3 x 64 x 8 sampled completions) and two offline runs
# of 600 updates; SFT (2,000 updates) and the reward model once. Every run is a child
# `python -m rlkit.train` that compiles its own programs (tens of seconds each for this model),
# so expect compile time to dominate on one H200; SEEDS=2 for a first look. Cut short (LIMIT, a
# lease that ends), the same command continues: finished runs in $OUT/runs are reused and a cut
# run resumes from its checkpoint.
#
# The device machine (see device_h200.sh) has jax, flax, optax and numpy but not tyro, pyyaml's
# friends or safetensors: they travel as wheels in .whl/ (ignored by git), fetched with
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_17_x86_64 -d .whl \
#     tyro==1.0.17 docstring-parser==0.18.0 typeguard==4.6.1 typing-extensions==4.16.0 \
#     safetensors==<uv.lock's> rich==<uv.lock's> (and what `python -m rlkit.train sft --help`
#     then reports missing)
#
# Usage (device tool): run(command="bash benchmarks/preference_gpu.sh", carry=[".whl"])
#         On any GPU machine with the project synced: PYTHON=.venv/bin/python bash benchmarks/preference_gpu.sh
# Smoke test on a CPU (minutes): SHAPE=cpu SEEDS=2 SMOKE=1 OUT=/tmp/o bash benchmarks/preference_gpu.sh
set -u -o pipefail
cd "$(dirname "$0")/.."
. benchmarks/device_env.sh  # OUT, PY, PYTHONPATH (and the wheels of .whl/)
{ nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null
  "$PY" -c "import jax; print('jax', jax.__version__, jax.devices())"; } 2>&1 | tee -a "$OUT/log.txt"
args=(--shape "${SHAPE:-gpt2}" --seeds "${SEEDS:-5}" --work-dir "$OUT/runs"
      --json "$OUT/preference_text_${SHAPE:-gpt2}.json" --plot "$OUT/preference_text_${SHAPE:-gpt2}.png")
if [ "${SMOKE:-0}" = 1 ]; then
  args+=(--sft-steps 150 --reward-model-pairs 128 --reward-model-steps 10 --iterations 2
         --steps-per-iteration 5 --offline-steps 10)
else
  args+=(--sft-steps "${SFT_STEPS:-2000}")
fi
timeout "${LIMIT:-3000}" "$PY" benchmarks/preference_text.py "${args[@]}" 2>&1 | tee -a "$OUT/log.txt"
