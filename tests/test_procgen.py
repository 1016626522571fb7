"""The procgen adapter, run in the environment with the procgen extra:

    .venv-procgen/bin/python -m pytest -m procgen tests/test_procgen.py
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

import envs
from envs import procgen_adapter
from rlkit.errors import RlkitError

pytestmark = pytest.mark.procgen
procgen = pytest.importorskip("procgen")

NOOP = 4  # procgen's action with no keys pressed


def _make(num_envs=2, seed=0, **config):
    return procgen_adapter.make(procgen_adapter.Config(**config), num_envs, seed)


def _rollout(env, seed, steps, rng_seed=0):
    rng = np.random.default_rng(rng_seed)
    out = [env.reset(seed)]
    for _ in range(steps):
        step = env.step(rng.integers(0, 15, env.num_envs))
        out += [step.obs, step.reward, step.terminated, env.last_info["level_seed"]]
    return out


def test_shapes_dtypes_and_spec():
    env = envs.make_host_env("procgen:coinrun", None, 3, 0)
    assert env.spec.name == "procgen:coinrun"
    assert env.spec.obs_shape == (64, 64, 3) and env.spec.obs_dtype == "uint8"
    assert env.spec.num_actions == 15 and env.spec.is_image
    assert env.spec.max_episode_steps == 1000
    obs = env.reset(0)
    assert obs.shape == (3, 64, 64, 3) and obs.dtype == np.uint8
    assert obs.std() > 0  # a rendered frame, not a blank buffer
    step = env.step(np.full(3, NOOP))
    assert step.obs.shape == (3, 64, 64, 3) and step.obs.dtype == np.uint8
    assert step.final_obs.shape == step.obs.shape and step.final_obs.dtype == np.uint8
    assert step.reward.shape == (3,) and step.reward.dtype == np.float32
    assert step.terminated.dtype == np.bool_ and step.truncated.dtype == np.bool_
    assert not step.truncated.any()
    env.close()


def test_same_seed_same_levels_and_frames():
    first = _rollout(_make(num_envs=2, seed=7), 7, 40)
    second = _rollout(_make(num_envs=2, seed=123), 7, 40)  # reset(seed) decides, not make's seed
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    other = _rollout(_make(num_envs=2, seed=7), 8, 0)
    assert not np.array_equal(first[0], other[0])


def test_level_range_follows_num_levels_and_start_level():
    env = _make(num_envs=8, num_levels=3, start_level=100, game="maze")
    env.reset(0)
    seen = set(env.last_info["level_seed"].tolist())
    rng = np.random.default_rng(0)
    for _ in range(60):
        step = env.step(rng.integers(0, 15, 8))
        seen |= set(env.last_info["level_seed"].tolist())
        ended = step.terminated
        seen |= set(env.last_info["prev_level_seed"][ended].tolist())
    assert seen <= {100, 101, 102} and len(seen) >= 2

    # The test split of the offline-procgen protocol: num_levels=0 means every seed from 250 on.
    env = _make(num_envs=8, num_levels=0, start_level=250, game="maze")
    env.reset(0)
    assert (env.last_info["level_seed"] >= 250).all()
    assert len(set(env.last_info["level_seed"].tolist())) == 8


def test_timeout_ends_episode_as_terminated_at_spec_limit():
    """maze's mouse never reaches the cheese standing still: the episode ends at the timeout,
    reported (by the documented choice) as terminated, with truncated False."""
    env = _make(num_envs=2, game="maze")
    limit = env.spec.max_episode_steps
    assert limit == 500
    first_frame = env.reset(0)
    for t in range(1, limit + 1):
        step = env.step(np.full(2, NOOP))
        if t < limit:
            assert not step.terminated.any(), f"episode ended early at step {t}"
    assert step.terminated.all() and not step.truncated.any()
    assert not env.last_info["prev_level_complete"].any()
    np.testing.assert_array_equal(step.final_obs, step.obs)
    assert not np.array_equal(step.obs, first_frame)  # a new level was drawn


def _serialized_timeout(state: bytes) -> int:
    """The `timeout` field of procgen's serialized Game state (layout: procgen/src/game.cpp,
    Game::serialize; ints are 4-byte, strings are a length then bytes)."""
    offset = 0

    def read_int():
        nonlocal offset
        (value,) = struct.unpack_from("<i", state, offset)
        offset += 4
        return value

    def skip_string():
        nonlocal offset
        length = read_int()
        offset += length

    read_int()  # SERIALIZE_VERSION
    skip_string()  # game name
    for _ in range(9 + 3 + 5):  # options, coinrun_old options, grid / level-seed fields
        read_int()
    for _ in range(2):  # level_seed_rand_gen, rand_gen: is_seeded and the mt19937 text
        read_int()
        skip_string()
    for _ in range(4):  # reward, done, level_complete, action
        read_int()
    return read_int()


def test_timeout_table_matches_procgen():
    for game in procgen_adapter.GAMES:
        raw = procgen.ProcgenGym3Env(num=1, env_name=game, rand_seed=0)
        assert _serialized_timeout(raw.get_state()[0]) == procgen_adapter.TIMEOUTS[game], game
        raw.close()
    raw = procgen.ProcgenGym3Env(num=1, env_name="jumper", distribution_mode="memory", rand_seed=0)
    memory_jumper = procgen_adapter.Config(game="jumper", distribution_mode="memory")
    assert _serialized_timeout(raw.get_state()[0]) == memory_jumper.max_episode_steps
    raw.close()


def test_bad_actions_and_order_are_rejected():
    env = _make(num_envs=2)
    with pytest.raises(RlkitError, match="reset"):
        env.step(np.zeros(2, np.int64))
    env.reset(0)
    # -1 would silently force a reset inside procgen; 15 is out of range.
    for bad in (np.array([0, -1]), np.array([15, 0]), np.zeros(3, np.int64)):
        with pytest.raises(RlkitError, match="actions"):
            env.step(bad)
    env.close()


# --------------------------------------------------------------------------------------------
# The level-split protocol (Mediratta et al. 2024; rlkit.procgen)
# --------------------------------------------------------------------------------------------


def _uniform(agent_state, obs):
    import jax.numpy as jnp

    return jnp.full((obs.shape[0], 15), 1.0 / 15)


def _procgen_env(config, num_envs, seed):
    return procgen_adapter.make(config, num_envs, seed)


@pytest.mark.parametrize("protocol", ["fixed", "after-train"])
def test_every_evaluated_episode_is_played_in_its_split(protocol):
    import jax

    from rlkit import procgen as protocol_module
    from rlkit.loops.common import over_seeds
    from rlkit.loops.host import run_host_episodes

    config = procgen_adapter.Config(game="starpilot", num_levels=10)
    splits = protocol_module.level_splits(10, 0, protocol)
    configs = protocol_module.eval_configs(config, protocol)
    policy = jax.jit(over_seeds(_uniform))
    for name in protocol_module.SPLITS:
        env = _procgen_env(configs[name], 2 * 6, 0)
        returns, level_seeds = run_host_episodes(policy, np.zeros(2), env, env.spec, 2, 123,
                                                 np.random.default_rng(0))
        env.close()
        assert returns.shape == level_seeds.shape == (2, 6)
        assert splits[name].contains(level_seeds).all(), (name, level_seeds)
    assert splits["test"].start_level == (250 if protocol == "fixed" else 60)


def test_split_evaluator_reports_six_figures_and_refuses_levels_outside_a_split():
    from types import SimpleNamespace

    from rlkit.loops.host import make_level_split_evaluator

    config = procgen_adapter.Config(game="starpilot", num_levels=10)
    spec = _make(num_envs=1, game="starpilot").spec
    carry = SimpleNamespace(agent_state=np.zeros(2), iteration=np.zeros(2, np.int32))
    evaluate, close = make_level_split_evaluator(_uniform, _procgen_env, config, spec, 2, 0, 3)
    figures = evaluate(carry)
    close()
    names = [f"{split}_return" for split in ("train", "validation", "test")]
    assert list(figures) == [*names, *(n.replace("_return", "_normalized_return") for n in names),
                             "eval_return"]
    for name in names:
        assert figures[name].shape == (2,)
        # starpilot: R_min 2.5, R_max 64.
        np.testing.assert_allclose(figures[name.replace("_return", "_normalized_return")],
                                   (figures[name] - 2.5) / 61.5, rtol=1e-6)
    np.testing.assert_array_equal(figures["eval_return"], figures["test_return"])

    # An env that ignores start_level / num_levels (always the training levels) is caught.
    def wrong_levels(_, num_envs, seed):
        return _procgen_env(config, num_envs, seed)

    evaluate, close = make_level_split_evaluator(_uniform, wrong_levels, config, spec, 2, 0, 3)
    with pytest.raises(RlkitError, match=r"validation evaluation: played level\(s\) .* outside "
                                         r"its levels 200-249"):
        evaluate(carry)
    close()


@pytest.fixture(scope="module")
def ppo_run(tmp_path_factory):
    """A tiny PPO run on starpilot (nature CNN, 3 chunks of 32 env steps) keeping every
    checkpoint, evaluated on 4 episodes per level split."""
    from rlkit.train import main

    run_dir = tmp_path_factory.mktemp("procgen") / "ppo"
    assert main(["ppo", "--env", "procgen:starpilot", "--total-steps", "96", "--num-logs", "3",
                 "--agent.num-envs", "2", "--agent.rollout-length", "16",
                 "--agent.num-minibatches", "1", "--agent.update-epochs", "1",
                 "--agent.cnn", "nature", "--split-episodes", "4", "--keep-checkpoints", "0",
                 "--no-progress", "--run-dir", str(run_dir)]) == 0
    return run_dir


def _rows(run_dir):
    import csv

    return list(csv.DictReader((run_dir / "metrics.csv").open()))


def test_a_tiny_ppo_run_logs_the_split_returns(ppo_run):
    import json

    rows = _rows(ppo_run)
    summary = json.loads((ppo_run / "summary.json").read_text())
    names = [f"{split}_{kind}" for kind in ("return", "normalized_return")
             for split in ("train", "validation", "test")]
    header = list(rows[0])
    assert header[header.index("eval_return") + 1:][:6] == names
    for name in names:
        assert all(np.isfinite(float(row[name])) for row in rows) and name in summary
        assert summary[f"per_seed_{name}"] == [summary[name]]
        assert summary[name] == pytest.approx(float(rows[-1][name]))
    assert all(row["eval_return"] == row["test_return"] for row in rows)
    assert summary["final_return"] == summary["test_return"]
    normalized = (summary["train_return"] - 2.5) / 61.5  # starpilot: R_min 2.5, R_max 64
    assert summary["train_normalized_return"] == pytest.approx(normalized, rel=1e-6)
    assert sorted(p.name for p in (ppo_run / "checkpoints").iterdir() if p.name.isdigit()) == [
        "0", "1", "2"]  # --keep-checkpoints 0 kept every one


def _episodes_share_one_level(dataset):
    ends = np.flatnonzero(dataset.transitions.terminated | dataset.transitions.truncated)
    starts = np.concatenate([[0], ends[:-1] + 1])
    for start, end in zip(starts, ends + 1, strict=True):
        assert len(set(dataset.level_seed[start:end].tolist())) == 1
    return len(ends)


def test_collected_procgen_datasets_record_their_levels(tmp_path):
    from rlkit.collect import main
    from rlkit.data.dataset import load_dataset

    base = ["--env", "procgen:starpilot", "--policy", "random", "--no-progress"]
    assert main([*base, "--transitions", "150", "--env-config.num-levels", "10",
                 "--out", str(tmp_path / "ten")]) == 0
    dataset = load_dataset(tmp_path / "ten")
    assert len(dataset.transitions.action) == len(dataset.level_seed) == 150
    assert ((dataset.level_seed >= 0) & (dataset.level_seed < 10)).all()
    assert _episodes_share_one_level(dataset) >= 2
    # A single-level dataset (the paper's level 40).
    assert main([*base, "--episodes", "3", "--env-config.num-levels", "1",
                 "--env-config.start-level", "40", "--out", str(tmp_path / "one")]) == 0
    dataset = load_dataset(tmp_path / "one")
    assert dataset.num_episodes == 3 and (dataset.level_seed == 40).all()


def test_mixed_and_suboptimal_datasets_replay_the_runs_checkpoints(ppo_run, tmp_path):
    from rlkit.collect import collect

    returns = {int(row["chunk"]): float(row["eval_return"]) for row in _rows(ppo_run)}
    target = 0.75 * returns[2]
    nearest = min(returns, key=lambda step: abs(returns[step] - target))
    mixed = collect(None, None, "mixed", None, seed=0, checkpoint=ppo_run, transitions=40)
    assert mixed.info.extra["checkpoint"] == nearest
    assert mixed.info.extra["target_return"] == pytest.approx(target)
    assert len(mixed.transitions.action) == 40 and mixed.level_seed is not None

    replay = collect(None, None, "suboptimal", None, seed=0, checkpoint=ppo_run,
                     transitions=31)
    assert replay.info.extra["checkpoints"] == [0, 1, 2]
    assert len(replay.transitions.action) == 31  # 11 + 10 + 10 rows, in checkpoint order
    ended = replay.transitions.terminated | replay.transitions.truncated
    assert ended[10] and ended[20] and ended[30]
    _episodes_share_one_level(replay)


def test_suboptimal_needs_a_run_that_kept_every_checkpoint(ppo_run, tmp_path):
    import shutil

    import yaml

    from rlkit.collect import collect

    copy = tmp_path / "run"
    shutil.copytree(ppo_run, copy)
    for path in (copy / "config.yaml", copy / "checkpoints" / "config.yaml"):
        config = yaml.safe_load(path.read_text())
        config["run"]["keep_checkpoints"] = 2
        path.write_text(yaml.safe_dump(config, sort_keys=False))
    with pytest.raises(RlkitError, match="kept only its newest 2 checkpoints.*keep-checkpoints 0"):
        collect(None, None, "suboptimal", None, seed=0, checkpoint=copy, transitions=10)


def test_an_offline_agent_on_procgen_is_evaluated_on_the_splits(tmp_path):
    import json

    from rlkit.collect import main as collect_main
    from rlkit.train import main

    data = tmp_path / "data"
    assert collect_main(["--env", "procgen:starpilot", "--policy", "random", "--no-progress",
                         "--transitions", "64", "--out", str(data)]) == 0
    run_dir = tmp_path / "bc"
    assert main(["bc", "--dataset", str(data), "--total-steps", "2", "--num-logs", "1",
                 "--agent.batch-size", "8", "--split-episodes", "2", "--no-progress",
                 "--run-dir", str(run_dir)]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    for split in ("train", "validation", "test"):
        assert np.isfinite(summary[f"{split}_return"])
        assert np.isfinite(summary[f"{split}_normalized_return"])
