#!/usr/bin/env bash
# The full procgen generalisation study (benchmarks/procgen_generalization.py --config full) on one
# GPU machine: 4 games (coinrun, bigfish, maze, miner), PPO for 25M env steps per seed on the 200
# training levels, 1M-transition expert datasets on 200 and 10 levels, BC, BCQ, CQL, IQL and DT,
# 3 seeds, the IMPALA CNN, 100 evaluation episodes per level split.
#
# It does not fit a 15-minute device lease: PPO alone is 4 games x 3 seeds x 25M env steps, and
# procgen steps on the host CPU; rlkit has measured no GPU figure for it yet (no device long
# enough was lent), so time the first PPO chunk before committing to the whole study. Stages are resumable: run the script again after
# an interruption and finished stages are skipped (a run cut mid-way resumes from its checkpoint).
#
# Needs: Linux, Python 3.11 or 3.12 (procgen-mirror has no wheel for 3.13), uv, CUDA 12.
# Usage:  OUT=/data/procgen-study bash benchmarks/procgen_gpu.sh
#         GAMES=coinrun,maze METHODS=bc,cql bash benchmarks/procgen_gpu.sh   (a subset)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-results/procgen_generalization/full}
JOBS=${JOBS:-2}
export UV_PROJECT_ENVIRONMENT=.venv-procgen
uv sync --frozen --extra procgen --no-group numpy2
# The lock pins CPU jaxlib; add the CUDA plugin of the same jax version for the GPU.
JAX_VERSION=$(.venv-procgen/bin/python -c "import jax; print(jax.__version__)")
uv pip install --python .venv-procgen/bin/python "jax[cuda12]==${JAX_VERSION}"
.venv-procgen/bin/python -c "import jax; print('devices:', jax.devices())"
mkdir -p "$(dirname "$OUT")"
args=(--config full --out "$OUT" --jobs "$JOBS")
[ -n "${GAMES:-}" ] && args+=(--games "$GAMES")
[ -n "${METHODS:-}" ] && args+=(--methods "$METHODS")
.venv-procgen/bin/python benchmarks/procgen_generalization.py "${args[@]}" 2>&1 | tee -a "$OUT.log"
