"""benchmarks/exploration.py: every method's settings build a valid agent config in every study
(a plain agent refuses intrinsic fields that act on nothing, so the shared settings must drop
them), and the first-success count reads the metrics rows as documented."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import exploration  # noqa: E402

from rlkit import registry  # noqa: E402


@pytest.mark.parametrize("method", list(exploration.METHODS))
@pytest.mark.parametrize("study", ["deepsea", "minatar"])
def test_every_method_gets_a_valid_config(method, study):
    agent, options = exploration.METHODS[method]
    if study == "minatar" and agent != "ppo":
        pytest.skip("the MinAtar study runs PPO only")
    base = {"deepsea": exploration.PPO_DEEPSEA if agent == "ppo" else exploration.DQN_DEEPSEA,
            "minatar": exploration.PPO_MINATAR}[study]
    fields = exploration.agent_overrides(method, base)
    config = registry.agent_module(agent).Config(**fields)
    assert config.intrinsic == options["intrinsic"]
    if options["intrinsic"] != "none" and "intrinsic_coef" in base:
        assert config.intrinsic_coef == base["intrinsic_coef"]


def test_first_success_counts_episodes_to_the_first_chunk_with_a_success():
    """Seed 0 succeeds once in chunk 1 among failures that sum below 0 (the chunk's mean is
    negative); seed 1 never succeeds."""
    rows = [{"seed": 0, "chunk": 0, "episodes": 10, "episode_return": -0.01,
             "episode_return_max": -0.001},
            {"seed": 0, "chunk": 1, "episodes": 200, "episode_return": -0.004,
             "episode_return_max": 0.99},
            {"seed": 1, "chunk": 0, "episodes": 10, "episode_return": -0.01,
             "episode_return_max": 0.0},
            {"seed": 1, "chunk": 1, "episodes": 10, "episode_return": 0.0,
             "episode_return_max": "nan"}]
    assert exploration.first_success(rows, 2) == [210, None]
