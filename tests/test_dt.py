"""The decision transformer (agents/dt.py) and its context windows (rlkit.data.sequences).

Layers (STYLE.md rule 12): returns-to-go, timesteps and left-padded windows by hand; windows
never cross an episode end; the streamed feed gives exactly the windows of its rows; the
evaluation memory by hand; learning on a chain whose optimal return J* = 5 `rlkit.planning`
computes, from a dataset of optimal episodes (return 5) and delayed ones (return 2):
conditioned on 5 the policy returns exactly 5, on 2 exactly 2 (the signature of return
conditioning), on the JAX driver and on a host environment; one-line config and CLI errors.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from agents import dt
from envs.toy import ChainConfig
from rlkit.data import DatasetError, DatasetInfo, batch_stream, load_dataset, save_dataset
from rlkit.data.sequences import episode_index, gather_windows, window_rows
from rlkit.errors import RlkitError
from rlkit.loops.host import make_host_evaluator
from rlkit.loops.offline import OfflineCarry, make_jax_evaluator, make_offline_trainer
from rlkit.train import load_policy, main
from rlkit.types import HostEnvironment, HostStep, Transition

CHAIN = ChainConfig(length=4, horizon=8)  # J* = 8 - 4 + 1 = 5
RIGHT, LEFT = 1, 0
OPTIMAL = [RIGHT] * 8  # reaches the end at t = 3, paid at t = 3..7: return 5
DELAYED = [LEFT] * 3 + [RIGHT] * 5  # reaches the end at t = 6, paid at t = 6, 7: return 2
TINY = ("--agent.embed-dim", "32", "--agent.num-layers", "1", "--agent.num-heads", "2",
        "--agent.hidden-sizes", "32", "--agent.context-length", "4", "--agent.batch-size", "64",
        "--agent.learning-rate", "1e-3", "--agent.weight-decay", "0", "--agent.max-grad-norm",
        "1.0", "--agent.eval-policy", "greedy")


# ------------------------------------------------------------------------------------------
# Context windows by hand
# ------------------------------------------------------------------------------------------

# Episodes: rows 0-2 (terminated at 2), rows 3-4 (truncated at 4), row 5 (cut by the end).
REWARD = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], np.float32)
TERMINATED = np.array([0, 0, 1, 0, 0, 0], bool)
TRUNCATED = np.array([0, 0, 0, 0, 1, 0], bool)


def _toy_transitions() -> Transition:
    obs = np.arange(6, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32) + 1
    next_obs = obs + 1  # contiguous: next_obs[i] == obs[i + 1] inside episodes
    return Transition(obs=obs, action=np.array([1, 0, 1, 1, 0, 1], np.int32), reward=REWARD,
                      terminated=TERMINATED, truncated=TRUNCATED, next_obs=next_obs)


def test_episode_index_by_hand():
    index = episode_index(REWARD, TERMINATED, TRUNCATED)
    # R_hat: episode 1 = 1+2+3, 2+3, 3; episode 2 = 4+5, 5; the cut episode 6.
    np.testing.assert_array_equal(index.return_to_go, [6, 5, 3, 9, 5, 6])
    np.testing.assert_array_equal(index.timestep, [0, 1, 2, 0, 1, 0])
    np.testing.assert_array_equal(index.episode_start, [0, 0, 0, 3, 3, 5])
    assert index.max_return == 9.0


def test_windows_are_left_padded_at_episode_starts_by_hand():
    index = episode_index(REWARD, TERMINATED, TRUNCATED)
    rows, mask = window_rows(index.episode_start, np.array([0, 2, 3, 4, 5]), 3)
    np.testing.assert_array_equal(rows, [[0, 0, 0], [0, 1, 2], [3, 3, 3], [3, 3, 4], [5, 5, 5]])
    np.testing.assert_array_equal(mask, [[0, 0, 1], [1, 1, 1], [0, 0, 1], [0, 1, 1], [0, 0, 1]])
    windows = gather_windows(_toy_transitions(), index, np.array([4]), 3)
    np.testing.assert_array_equal(windows.extras["return_to_go"], [[0, 9, 5]])
    np.testing.assert_array_equal(windows.extras["timestep"], [[0, 0, 1]])
    np.testing.assert_array_equal(windows.reward, [[0, 4, 5]])  # padding holds zeros
    np.testing.assert_array_equal(windows.obs[0, :, 0], [0, 4, 5])
    np.testing.assert_array_equal(windows.extras["max_return"], [9.0])


def test_windows_never_cross_an_episode_end_and_jax_matches_numpy():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 9, 40)  # 40 episodes of 1..8 steps
    size = int(lengths.sum())
    ended = np.zeros(size, bool)
    ended[np.cumsum(lengths) - 1] = True
    terminated = ended & (rng.random(size) < 0.5)
    reward = rng.normal(size=size).astype(np.float32)
    obs = np.arange(size, dtype=np.float32)[:, None]
    data = Transition(obs=obs, action=np.zeros(size, np.int32), reward=reward,
                      terminated=terminated, truncated=ended & ~terminated, next_obs=obs + 1)
    index = episode_index(reward, terminated, ended & ~terminated, obs, obs + 1)
    episode = np.repeat(np.arange(len(lengths)), lengths)
    every_row = np.arange(size)
    windows = gather_windows(data, index, every_row, 5)
    mask = windows.extras["mask"]
    rows = windows.obs[..., 0].astype(int)  # obs holds the row number
    # Every real step is in the end row's episode, consecutive, with its own R_hat and t.
    for end in every_row:
        real = rows[end][mask[end]]
        assert np.all(episode[real] == episode[end]) and real[-1] == end
        np.testing.assert_array_equal(real, np.arange(end - len(real) + 1, end + 1))
        np.testing.assert_array_equal(windows.extras["timestep"][end][mask[end]],
                                      index.timestep[real])
        np.testing.assert_allclose(windows.extras["return_to_go"][end][mask[end]],
                                   index.return_to_go[real])
        # Left padding only, as long as the episode is short of K steps.
        assert mask[end].sum() == min(5, index.timestep[end] + 1)
    on_device = gather_windows(jax.device_put(data), jax.device_put(index),
                               jnp.asarray(every_row), 5)
    for got, want in zip(jax.tree.leaves(on_device), jax.tree.leaves(windows), strict=True):
        np.testing.assert_allclose(np.asarray(got), want)


def test_interleaved_episodes_are_refused_in_one_line():
    data = _toy_transitions()
    swapped = np.array(data.obs)[[1, 0, 2, 3, 4, 5]]  # rows 0 and 1 out of order
    with pytest.raises(DatasetError, match="next_obs of row 0 differs from obs of row 1") as info:
        episode_index(REWARD, TERMINATED, TRUNCATED, swapped, data.next_obs)
    assert "\n" not in str(info.value)


def test_streamed_windows_are_the_windows_of_the_drawn_rows():
    data = _toy_transitions()
    index = episode_index(REWARD, TERMINATED, TRUNCATED)
    stream = batch_stream(data, 4, 3, seed=7, start=2, num_seeds=2, windows=(index, 3))
    block = next(stream)
    stream.close()
    end_rows = np.random.default_rng((7, 2)).integers(0, 6, (2, 3, 4))
    expected = gather_windows(data, index, end_rows, 3)
    assert block.obs.shape == (2, 3, 4, 3, 2)
    for got, want in zip(jax.tree.leaves(block), jax.tree.leaves(expected), strict=True):
        np.testing.assert_array_equal(got, want)


# ------------------------------------------------------------------------------------------
# The evaluation memory by hand
# ------------------------------------------------------------------------------------------


def test_history_appends_steps_and_subtracts_rewards():
    env = envs.make_env("chain", CHAIN)
    agent = dt.make_agent(dt.Config(context_length=3, embed_dim=8, num_layers=1,
                                    hidden_sizes=(8,), target_return=5.0), env.spec)
    state = jax.jit(agent.init)(jax.random.key(0))  # jitted: op by op takes 20 s on 2 cores
    history = agent.history
    memory = jax.jit(history.init, static_argnums=1)(state, 2)
    assert not memory.mask.any()
    obs = jnp.eye(4)[:2]
    policy = jax.jit(history.policy)
    probs, memory = policy(state, memory, obs)
    memory = jax.jit(history.observe)(memory, jnp.array([1, 0]), jnp.array([0.0, 1.0]))
    _, memory = policy(state, memory, obs + 1)
    np.testing.assert_array_equal(memory.mask, [[0, 1, 1], [0, 1, 1]])
    np.testing.assert_array_equal(memory.return_to_go, [[0, 5, 5], [0, 5, 4]])
    np.testing.assert_array_equal(memory.timestep, [[0, 0, 1], [0, 0, 1]])
    np.testing.assert_array_equal(memory.action, [[0, 1, 0], [0, 0, 0]])
    np.testing.assert_array_equal(memory.obs[:, 1], obs)
    # The first-step policy is the history policy with an empty history.
    np.testing.assert_allclose(jax.jit(agent.policy)(state, obs), probs, rtol=1e-6)


# ------------------------------------------------------------------------------------------
# Learning: return conditioning on a chain with a known J*
# ------------------------------------------------------------------------------------------


def _chain_episode(actions: list[int]) -> Transition:
    """One chain episode played by hand (deterministic: right moves right, the end pays 1)."""
    eye = np.eye(CHAIN.length, dtype=np.float32)
    state, rows = 0, []
    for t, action in enumerate(actions):
        next_state = min(state + 1, CHAIN.length - 1) if action == RIGHT else max(state - 1, 0)
        reward = float(state == CHAIN.length - 1 and action == RIGHT)
        rows.append((eye[state], action, reward, False, t == CHAIN.horizon - 1, eye[next_state]))
        state = next_state
    columns = list(zip(*rows, strict=True))
    return Transition(obs=np.stack(columns[0]), action=np.array(columns[1], np.int32),
                      reward=np.array(columns[2], np.float32), terminated=np.array(columns[3]),
                      truncated=np.array(columns[4]), next_obs=np.stack(columns[5]))


@pytest.fixture(scope="module")
def chain_dataset(tmp_path_factory) -> Path:
    """10 optimal and 10 delayed chain episodes, alternating."""
    episodes = [_chain_episode(OPTIMAL if i % 2 else DELAYED) for i in range(20)]
    data = jax.tree.map(lambda *leaves: np.concatenate(leaves), *episodes)
    spec = envs.make_env("chain", CHAIN).spec
    info = DatasetInfo(env_id="chain", env_params=dataclasses.asdict(CHAIN),
                       obs_shape=spec.obs_shape, obs_dtype=spec.obs_dtype,
                       num_actions=spec.num_actions, behaviour_policy="optimal + delayed",
                       behaviour_return=3.5)
    return save_dataset(tmp_path_factory.mktemp("data") / "chain", data, info)


@pytest.fixture(scope="module")
def chain_run(chain_dataset, tmp_path_factory) -> Path:
    """DT trained through the CLI on the chain dataset, asked for 5."""
    run_dir = tmp_path_factory.mktemp("dt") / "run"
    code = main(["dt", "--dataset", str(chain_dataset), "--run-dir", str(run_dir), "--no-progress",
                 "--seeds", "1", "--num-logs", "1", "--total-steps", "150",
                 "--agent.target-return", "5", *TINY])
    assert code == 0
    return run_dir


def test_dataset_returns_are_five_and_two():
    assert float(_chain_episode(OPTIMAL).reward.sum()) == 5.0
    assert float(_chain_episode(DELAYED).reward.sum()) == 2.0


def test_asking_for_the_optimal_return_gets_it_exactly(chain_run):
    summary = json.loads((chain_run / "summary.json").read_text())
    assert summary["optimal_return"] == 5.0  # rlkit.planning's J*
    assert summary["final_return"] == pytest.approx(5.0)
    assert summary["updates"] == 150 and summary["dataset"]["episodes"] == 20


def test_the_offline_driver_streams_windows_to_dt(chain_dataset):
    dataset = load_dataset(chain_dataset, mmap=True)
    config = dt.Config(batch_size=16, context_length=4, embed_dim=16, num_layers=1,
                       hidden_sizes=(16,))
    agent = dt.make_agent(config, envs.make_env("chain", CHAIN).spec)
    trainer = make_offline_trainer(agent, dataset.transitions, 3, evaluate=lambda carry: None,
                                   stream=True)
    carry, metrics = trainer.run(trainer.init(jax.random.split(jax.random.key(0), 1)))
    trainer.close()
    np.testing.assert_array_equal(np.asarray(metrics["max_return"]), [[5.0] * 3])
    assert np.isfinite(np.asarray(metrics["loss"])).all()
    assert int(np.asarray(carry.iteration)[0]) == 3


class HostChain(HostEnvironment):
    """The chain as a batched numpy host environment (auto-reset, as gymnasium's)."""

    def __init__(self, num_envs: int):
        self.spec = envs.make_env("chain", CHAIN).spec
        self.num_envs = num_envs
        self.state = np.zeros(num_envs, int)
        self.t = np.zeros(num_envs, int)

    def reset(self, seed: int) -> np.ndarray:
        self.state[:], self.t[:] = 0, 0
        return np.eye(CHAIN.length, dtype=np.float32)[self.state]

    def step(self, actions: np.ndarray) -> HostStep:
        right = actions == RIGHT
        reward = (right & (self.state == CHAIN.length - 1)).astype(np.float32)
        self.state = np.where(right, np.minimum(self.state + 1, CHAIN.length - 1),
                              np.maximum(self.state - 1, 0))
        self.t += 1
        truncated = self.t == CHAIN.horizon
        final_obs = np.eye(CHAIN.length, dtype=np.float32)[self.state]
        self.state[truncated], self.t[truncated] = 0, 0
        return HostStep(obs=np.eye(CHAIN.length, dtype=np.float32)[self.state], reward=reward,
                        terminated=np.zeros_like(truncated), truncated=truncated,
                        final_obs=final_obs)


def test_asking_for_the_delayed_return_gets_it_on_jax_and_host_envs(chain_run):
    experiment, agent, agent_state = load_policy(chain_run)
    assert agent.history is not None
    env = envs.make_env("chain", CHAIN)
    asked = dt.make_agent(dataclasses.replace(experiment.agent_config, target_return=2.0),
                          env.spec)
    seeds = jax.tree.map(lambda x: x[None], agent_state)  # the evaluators' seed axis [S = 1]
    carry = OfflineCarry(agent_state=seeds, key=jax.random.split(jax.random.key(0), 1),
                         iteration=jnp.zeros(1, jnp.int32))
    jax_returns = make_jax_evaluator(asked, env, env.default_params, 2)(carry)
    evaluate, close = make_host_evaluator(asked.policy, lambda n, seed: HostChain(n),
                                          env.spec, 1, 0, 2, history=asked.history)
    host_returns = evaluate(carry)
    close()
    np.testing.assert_allclose(np.asarray(jax_returns), [2.0])
    np.testing.assert_allclose(host_returns, [2.0])


# ------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides, field", [
    (dict(context_length=0), "context_length"),
    (dict(embed_dim=128, num_heads=3), "num_heads"),
    (dict(return_scale=0.0), "return_scale"),
    (dict(target_return=float("nan")), "target_return"),
    (dict(eval_policy="argmax"), "eval_policy"),
])
def test_config_errors_name_the_field_in_one_line(overrides, field):
    with pytest.raises(RlkitError, match=f"^{field}:") as info:
        dt.Config(**overrides)
    assert "\n" not in str(info.value)


def test_h2o_refuses_dt_in_one_line(chain_run, capsys):
    dataset = json.loads((chain_run / "summary.json").read_text())["dataset"]["path"]
    code = main(["dt", "--dataset", dataset, "--h2o", "--run-dir",
                 str(chain_run.parent / "h2o"), "--no-progress", *TINY])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--h2o" in err and "dt learns from context windows" in err
    assert len(err.splitlines()) == 1
