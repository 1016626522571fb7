"""Offline and hybrid learning: BC, CQL, IQL (agents/{bc,cql,iql}.py), Hy-Q (agents/dqn.py), the
offline driver (rlkit.loops.offline) and the CLI's --dataset handling (rlkit.train).

Layers (STYLE.md rule 12): hand-computed losses; config checks; learning from datasets of toy
MDPs whose optimal policy `rlkit.planning` computes exactly (so a pass means "optimal", not
"above a threshold"); the driver's two feeding modes, determinism and exact resume; clean CLI
errors. The datasets are rolled out in the JAX environments by tests/datasets_helper.py.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from datasets_helper import save_toy_dataset

import envs
from agents import bc, cql, iql
from envs.toy import ChainConfig, CombinationLockConfig
from rlkit import planning, registry
from rlkit.data import load_dataset
from rlkit.data.dataset import metadata_checksum
from rlkit.errors import RlkitError
from rlkit.loops.common import over_seeds
from rlkit.train import load_policy, main
from rlkit.types import EnvSpec, OfflineFeed, Transition

hyq = registry.agent_module("hyq")  # agents.dqn with its HybridConfig
ROOT = Path(__file__).resolve().parents[1]
CHAIN = ChainConfig(length=8, horizon=16)  # J* = 16 - 8 + 1 = 9
LOCK = CombinationLockConfig(horizon=4, num_actions=3)  # J* = 1; a uniform policy opens it 1/81

# The smallest budgets that reached sub-optimality 0 on every one of 20+ seeds tried (half of
# each failed on at least one seed); 2 seeds per run, 2 chunks (the resume tests stop after one).
CQL_ARGS = ("--total-steps", "1000", "--agent.hidden-sizes", "32", "32")
IQL_ARGS = ("--total-steps", "2000", "--agent.hidden-sizes", "32", "32")
HYQ_ARGS = ("--total-steps", "2048", "--agent.hidden-sizes", "32", "32",
            "--agent.learning-rate", "1e-3", "--agent.target-update-every", "20")
BC_STREAM_ARGS = ("--total-steps", "200", "--agent.hidden-sizes", "32", "32",
                  "--stream-dataset")


# ------------------------------------------------------------------------------------------
# Hand-computed losses
# ------------------------------------------------------------------------------------------


def test_conservative_gap_by_hand():
    q = jnp.array([[1.0, 2.0], [0.0, 0.0], [3.0, -1.0]])
    action = jnp.array([1, 0, 1])
    expected = np.mean([
        math.log(math.exp(1) + math.exp(2)) - 2.0,
        math.log(2.0) - 0.0,
        math.log(math.exp(3) + math.exp(-1)) + 1.0,
    ])
    np.testing.assert_allclose(float(cql.conservative_gap(q, action)), expected, rtol=1e-6)
    # Zero only where Q is -inf off the data action; never negative.
    assert float(cql.conservative_gap(jnp.array([[0.0, -1e9]]), jnp.array([0]))) == 0.0


def test_cql_loss_is_td_loss_plus_alpha_times_the_gap():
    spec = EnvSpec("tiny", (3,), "float32", 2, 10)
    agent = cql.make_agent(cql.Config(cql_alpha=2.5, batch_size=3, hidden_sizes=(8,)), spec)
    state = jax.jit(agent.init)(jax.random.key(0))
    obs = jnp.eye(3)
    batch = Transition(obs=obs, action=jnp.array([0, 1, 1], jnp.int32),
                       reward=jnp.array([0.0, 1.0, 0.5]),
                       terminated=jnp.array([False, True, False]), truncated=jnp.zeros(3, bool),
                       next_obs=obs[::-1])
    _, metrics = jax.jit(agent.update)(state, batch, jax.random.key(1))
    np.testing.assert_allclose(metrics["loss"], metrics["td_loss"] + 2.5 * metrics["cql_gap"],
                               rtol=1e-6)
    assert float(metrics["cql_gap"]) > 0


@pytest.mark.parametrize("expectile, expected", [
    (0.8, [0.2 * 4.0, 0.8 * 0.25, 0.0, 0.8 * 9.0]),
    (0.5, [0.5 * 4.0, 0.5 * 0.25, 0.0, 0.5 * 9.0]),
])
def test_expectile_loss_by_hand(expectile, expected):
    diff = jnp.array([-2.0, 0.5, 0.0, 3.0])
    np.testing.assert_allclose(iql.expectile_loss(diff, expectile), expected, rtol=1e-6)


def test_bc_update_reduces_nll_and_reaches_accuracy_one():
    spec = EnvSpec("tiny", (4,), "float32", 3, 10)
    agent = bc.make_agent(bc.Config(learning_rate=1e-2, batch_size=4, hidden_sizes=(16,)), spec)
    action = jnp.array([2, 0, 1, 2], jnp.int32)
    obs = jnp.eye(4)
    batch = Transition(obs=obs, action=action, reward=jnp.zeros(4), terminated=jnp.zeros(4, bool),
                       truncated=jnp.zeros(4, bool), next_obs=obs)

    @jax.jit
    def train(state):
        def step(state, key):
            return agent.update(state, batch, key)

        return jax.lax.scan(step, state, jax.random.split(jax.random.key(1), 200))

    state, metrics = train(jax.jit(agent.init)(jax.random.key(0)))
    loss = np.asarray(metrics["loss"])
    assert set(metrics) >= {"loss", "accuracy", "entropy", "grad_norm"}
    assert loss[-1] < 0.05 < loss[0]
    assert np.all(np.diff(loss[:20]) < 0)  # full-batch descent on a convex-ish start
    assert float(metrics["accuracy"][-1]) == 1.0
    np.testing.assert_array_equal(agent.policy(state, obs), jax.nn.one_hot(action, 3))
    assert int(state.update_step) == 200


# ------------------------------------------------------------------------------------------
# Config checks
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("module, overrides, field", [
    (cql, dict(cql_alpha=-0.5), "cql_alpha"),
    (iql, dict(expectile=0.4), "expectile"),
    (iql, dict(expectile=1.0), "expectile"),
    (iql, dict(eval_policy="mode"), "eval_policy"),
    (bc, dict(eval_policy="argmax"), "eval_policy"),
    (hyq, dict(offline_fraction=0.0), "offline_fraction"),
    # A schedule over 0 steps never moves: still no dataset rows, ever.
    (hyq, dict(offline_fraction=0.0, offline_fraction_end=0.5), "offline_fraction"),
    (hyq, dict(offline_fraction=1.5), "offline_fraction"),
    (hyq, dict(offline_fraction_end=-0.1, offline_fraction_steps=10), "offline_fraction_end"),
])
def test_config_rejects_impossible_values_naming_the_field(module, overrides, field):
    with pytest.raises(RlkitError, match=f"^{field}:"):
        module.Config(**overrides)


def test_hyq_schedule_from_zero_is_valid_and_feeds_a_dataset():
    spec = EnvSpec("tiny", (4,), "float32", 2, 10)
    config = hyq.Config(offline_fraction=0.0, offline_fraction_end=0.5, offline_fraction_steps=10)
    feed = hyq.make_agent(config, spec).feed
    assert feed.uses_dataset and feed.offline_fraction_end == 0.5
    for module in (bc, cql, iql):
        assert isinstance(module.make_agent(module.Config(), spec).feed, OfflineFeed)


# ------------------------------------------------------------------------------------------
# Datasets and runs (module-scoped: each run is shared by the tests that read it)
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chain_dataset(tmp_path_factory) -> Path:
    """Mixed quality: 10 optimal and 10 uniformly random episodes of the chain (320 rows)."""
    path = tmp_path_factory.mktemp("data") / "chain"
    return save_toy_dataset(path, "chain", CHAIN, optimal_episodes=10, random_episodes=10)


@pytest.fixture(scope="module")
def lock_dataset(tmp_path_factory) -> Path:
    """20 episodes of the optimal policy on the lock: the right action only, 80 rows."""
    path = tmp_path_factory.mktemp("data") / "lock"
    return save_toy_dataset(path, "combination-lock", LOCK, optimal_episodes=20)


def _train(run_dir: Path, agent: str, *args: str) -> Path:
    code = main([agent, "--run-dir", str(run_dir), "--no-progress", "--seeds", "2",
                 "--num-logs", "2", *args])
    assert code == 0
    return run_dir


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.fixture(scope="module")
def cql_run(chain_dataset, tmp_path_factory) -> Path:
    # No --env: the env and its parameters come from the dataset's metadata.
    return _train(tmp_path_factory.mktemp("cql") / "run", "cql", "--dataset",
                  str(chain_dataset), *CQL_ARGS)


@pytest.fixture(scope="module")
def hyq_run(lock_dataset, tmp_path_factory) -> Path:
    return _train(tmp_path_factory.mktemp("hyq") / "run", "hyq", "--env", "combination-lock",
                  "--dataset", str(lock_dataset), *HYQ_ARGS)


def _assert_optimal(summary: dict) -> None:
    assert summary["per_seed_suboptimality"] == pytest.approx([0.0, 0.0], abs=1e-6)
    assert summary["final_return"] == pytest.approx(summary["optimal_return"], abs=1e-6)


def test_dataset_helper_rolls_out_what_planning_predicts(chain_dataset):
    dataset = load_dataset(chain_dataset)
    assert dataset.num_episodes == 20 and dataset.transitions.action.shape == (320,)
    assert dataset.info.env_id == "chain" and dataset.info.env_params["length"] == 8
    # The 10 optimal episodes come first and each returns exactly J* = 9.
    rewards = np.asarray(dataset.transitions.reward)[:160].reshape(10, 16)
    np.testing.assert_array_equal(rewards.sum(axis=1), 9.0)
    assert np.all(np.asarray(dataset.transitions.action)[:160] == 1)


def test_cql_reaches_the_optimal_policy_from_mixed_data_env_from_the_dataset(cql_run):
    summary = _summary(cql_run)
    _assert_optimal(summary)
    assert summary["env"] == "chain" and summary["optimal_return"] == 9.0
    # Offline: the budget counts updates, no env steps, no training episodes.
    assert summary["updates"] == 1000 and summary["env_steps"] == 0
    assert summary["dataset"]["transitions"] == 320 and summary["dataset"]["episodes"] == 20
    assert summary["dataset"]["behaviour_return"] < 9.0
    rows = (cql_run / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert len(rows) == 1 + 2 * 2 and "cql_gap" in header and "updates" in header
    for row in rows[1:]:
        values = dict(zip(header, row.split(","), strict=True))
        assert values["episodes"] == "0" and values["episode_return"] == "nan"
    config = (cql_run / "config.yaml").read_text()
    assert "env: chain" in config and "length: 8" in config


def test_iql_reaches_the_optimal_policy_from_mixed_data(chain_dataset, tmp_path):
    run_dir = _train(tmp_path / "iql", "iql", "--env", "chain", "--dataset", str(chain_dataset),
                     *IQL_ARGS)
    summary = _summary(run_dir)
    _assert_optimal(summary)
    assert summary["updates"] == 2000


def test_hyq_opens_the_lock_with_an_optimal_dataset(hyq_run):
    summary = _summary(hyq_run)
    _assert_optimal(summary)
    assert summary["env_steps"] == 2048 and "updates" not in summary
    assert summary["dataset"]["transitions"] == 80
    rows = (hyq_run / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    column = header.index("offline_fraction")
    assert [float(row.split(",")[column]) for row in rows[1:]] == [0.5] * 4


def test_load_policy_has_the_exact_return_the_run_reported(cql_run):
    summary = _summary(cql_run)
    for seed_index in range(2):
        experiment, agent, state = load_policy(cql_run, seed_index)
        assert experiment.agent == "cql" and experiment.env == "chain"
        env = envs.make_env(experiment.env, experiment.env_config)
        model = env.model(env.default_params)
        exact = planning.expected_return(model, planning.policy_table(agent.policy, state, model))
        assert float(exact) == pytest.approx(summary["per_seed"][seed_index], abs=1e-6)
    with pytest.raises(RlkitError, match="seed index"):
        load_policy(cql_run, 2)


def test_over_seeds_maps_the_seed_axis_and_shares_the_dataset():
    def update(carry, dataset):  # dataset [4] shared by every seed
        return carry + dataset.sum()

    mapped = jax.jit(over_seeds(update, num_shared=1))
    dataset = jnp.arange(4.0)
    np.testing.assert_array_equal(mapped(jnp.array([0.0, 1.0, 2.0]), dataset), [6.0, 7.0, 8.0])
    single = mapped(jnp.array([5.0]), dataset)  # one seed runs unbatched, keeps its axis
    assert single.shape == (1,) and float(single[0]) == 11.0


# ------------------------------------------------------------------------------------------
# Determinism and exact resume
# ------------------------------------------------------------------------------------------


def _assert_resume_is_exact(reference: Path, run_dir: Path, agent: str, *args: str) -> None:
    """Stop `agent` after one chunk, check it so far, resume it, compare with `reference`."""
    _train(run_dir, agent, *args, "--stop-after-chunks", "1")
    expected = (reference / "metrics.csv").read_text().splitlines()
    partial = (run_dir / "metrics.csv").read_text().splitlines()
    assert partial == expected[:1 + 2]  # an independent run: the same first chunk
    assert _summary(run_dir)["stopped_early"]
    assert main([agent, "--resume", str(run_dir), "--no-progress"]) == 0
    assert (run_dir / "metrics.csv").read_text().splitlines() == expected
    assert _summary(run_dir)["per_seed"] == _summary(reference)["per_seed"]


def test_on_device_offline_run_resumes_exactly(cql_run, chain_dataset, tmp_path):
    _assert_resume_is_exact(cql_run, tmp_path / "cql", "cql", "--dataset", str(chain_dataset),
                            *CQL_ARGS)


@pytest.mark.slow  # ~7 s warm, ~12 s cold; the on-device CQL resume test covers the default suite
def test_hyq_run_resumes_exactly(hyq_run, lock_dataset, tmp_path):
    _assert_resume_is_exact(hyq_run, tmp_path / "hyq", "hyq", "--env", "combination-lock",
                            "--dataset", str(lock_dataset), *HYQ_ARGS)


def test_streamed_dataset_trains_evaluates_deterministically_and_resumes(chain_dataset,
                                                                          tmp_path):
    args = ("--dataset", str(chain_dataset), *BC_STREAM_ARGS)
    reference = _train(tmp_path / "a", "bc", *args)
    summary = _summary(reference)
    assert summary["updates"] == 200 and summary["env_steps"] == 0
    assert "stream_dataset: true" in (reference / "config.yaml").read_text()
    rows = (reference / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    values = [dict(zip(header, row.split(","), strict=True)) for row in rows[1:]]
    for seed in range(2):  # trains (the NLL falls) and evaluates (exactly, within [0, J*])
        first, last = values[seed], values[2 + seed]
        assert float(last["loss"]) < float(first["loss"])
        assert 0.0 <= float(last["eval_return"]) <= 9.0
        assert float(last["suboptimality"]) == pytest.approx(9.0 - float(last["eval_return"]))
    _assert_resume_is_exact(reference, tmp_path / "b", "bc", *args)


# ------------------------------------------------------------------------------------------
# CLI errors about datasets
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def broken_datasets(chain_dataset, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("broken")
    missing = Path(shutil.copytree(chain_dataset, root / "missing"))
    (missing / "obs.npy").unlink()
    modified = Path(shutil.copytree(chain_dataset, root / "modified"))
    data = bytearray((modified / "reward.npy").read_bytes())
    data[-1] ^= 0xFF  # same size, different bytes: only the checksum notices
    (modified / "reward.npy").write_bytes(bytes(data))
    # 0 transitions (a foreign or buggy writer: the metadata checksum is consistent).
    empty = Path(shutil.copytree(chain_dataset, root / "empty"))
    metadata = json.loads((empty / "metadata.json").read_text())
    metadata["counts"].update(transitions=0, episodes=0)
    metadata["metadata_sha256"] = metadata_checksum(metadata)
    (empty / "metadata.json").write_text(json.dumps(metadata))
    return {"missing": missing, "modified": modified, "empty": empty}


@pytest.mark.parametrize("case, needle", [
    ("no dataset", "--dataset: cql learns from a dataset"),
    ("hybrid without dataset", "--dataset: hyq learns from a dataset"),
    ("online agent", "--dataset: dqn learns online only"),
    ("other env", "was collected on 'chain' but --env is 'riverswim'"),
    ("other obs shape", "holds observations (8,) float32, the env emits (5,) float32"),
    ("missing file", "obs.npy: missing"),
    ("modified file", "reward.npy: sha256 does not match"),
    ("empty dataset", "counts.transitions is 0: the dataset holds no transitions"),
])
def test_dataset_errors_are_one_line_and_exit_2(case, needle, chain_dataset, broken_datasets,
                                                tmp_path, capsys):
    argv = {
        "no dataset": ["cql", "--env", "chain"],
        "hybrid without dataset": ["hyq", "--env", "chain"],
        "online agent": ["dqn", "--env", "chain", "--dataset", str(chain_dataset)],
        "other env": ["cql", "--env", "riverswim", "--dataset", str(chain_dataset)],
        "other obs shape": ["cql", "--dataset", str(chain_dataset), "--env-config.length", "5"],
        "missing file": ["cql", "--dataset", str(broken_datasets["missing"])],
        "modified file": ["cql", "--dataset", str(broken_datasets["modified"])],
        "empty dataset": ["cql", "--dataset", str(broken_datasets["empty"])],
    }[case]
    run_dir = tmp_path / "run"
    assert main([*argv, "--run-dir", str(run_dir), "--no-progress"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ") and needle in lines[0]
    if case not in ("missing file", "modified file", "empty dataset"):
        assert "--dataset" in lines[0]
    assert not run_dir.exists()  # refused before anything was written


def test_corrupt_dataset_gives_no_traceback_from_the_command_line(broken_datasets, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "rlkit.train", "cql", "--dataset", str(broken_datasets["missing"]),
         "--run-dir", str(tmp_path / "run"), "--no-progress"],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True,
        timeout=300)
    assert result.returncode == 2, result.stderr
    assert "obs.npy: missing" in result.stderr
    assert "Traceback" not in result.stderr


def _damage(checkpoint: Path) -> None:
    """Truncate every data file of one orbax checkpoint step."""
    for file in checkpoint.rglob("*"):
        if file.is_file() and file.stat().st_size > 1024:
            with file.open("r+b") as handle:
                handle.truncate(100)


def test_resume_passes_over_a_damaged_checkpoint_and_stops_cleanly_when_all_are(
        cql_run, tmp_path, capsys):
    run_dir = Path(shutil.copytree(cql_run, tmp_path / "run"))
    steps = sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())
    assert steps == [0, 1]
    _damage(run_dir / "checkpoints" / "1")
    capsys.readouterr()
    assert main(["--resume", str(run_dir), "--no-progress"]) == 0
    assert "checkpoint 1" in capsys.readouterr().err  # the warning names what was skipped
    # Chunk 1 ran again from checkpoint 0 and gives exactly the original numbers.
    assert (run_dir / "metrics.csv").read_text() == (cql_run / "metrics.csv").read_text()

    for step in (run_dir / "checkpoints").iterdir():
        if step.name.isdigit():
            _damage(step)
    capsys.readouterr()
    assert main(["--resume", str(run_dir), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no checkpoint can be read" in err[0], err
