"""benchmarks/procgen_throughput.py on a tiny budget, in the environment with the procgen extra:

    .venv-procgen/bin/python -m pytest -n 0 -m procgen tests/test_procgen_throughput.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.procgen
pytest.importorskip("procgen")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import procgen_throughput  # noqa: E402

from rlkit.errors import RlkitError  # noqa: E402


def test_measure_counts_steps_and_splits_the_training_time():
    # 2 envs x 4 steps, 2 timed PPO iterations (+1 warm-up), the small nature CNN, one epoch.
    result = procgen_throughput.measure(
        "coinrun", "nature", num_envs=2, rollout_length=4, iterations=2, seed=0,
        agent_flags=["--agent.num-minibatches", "1", "--agent.update-epochs", "1"])
    raw, collection, training = result["raw"], result["collection"], result["training"]
    for part in (raw, collection, training):
        assert part["env_steps"] == 2 * 4 * 2
        assert part["env_steps_per_s"] == pytest.approx(part["env_steps"] / part["seconds"])
    assert training["steps_per_iteration"] == 8 and len(training["chunk_s"]) == 2
    assert result["ratios"]["training/raw"] == pytest.approx(
        training["env_steps_per_s"] / raw["env_steps_per_s"])
    # The breakdown covers the timed chunks exactly; env, act and update each took time.
    parts = training["per_iteration"]
    assert sum(parts.values()) * 2 == pytest.approx(training["seconds"])
    assert min(parts["env_s"], parts["act_s"], parts["update_s"]) > 0
    assert sum(training["shares"].values()) == pytest.approx(1.0)
    assert "--agent.cnn nature" in result["command"]


def test_bad_budget_is_one_clear_error():
    with pytest.raises(RlkitError, match="iterations"):
        procgen_throughput.measure(iterations=0)
