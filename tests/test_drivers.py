"""Driver behaviour: auto-reset bookkeeping, seed sharding over devices, the host driver."""

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from agents import dqn, ppo
from envs.tabular import Config as TabularConfig
from envs.toy import ChainConfig, GridWorldConfig
from rlkit.errors import RlkitError
from rlkit.loops.common import (
    act_and_step,
    autoreset_step,
    make_feed_sampling,
    make_step_envs,
    track_episodes,
)
from rlkit.loops.host import make_host_trainer
from rlkit.loops.on_device import Carry
from rlkit.train import main
from rlkit.types import OnPolicyFeed, ReplayFeed

ROOT = Path(__file__).resolve().parents[1]


def test_autoreset_keeps_the_final_observation_and_resets():
    env = envs.make_env("chain", ChainConfig(length=4, horizon=4))
    params = env.default_params
    obs, state = env.reset(jax.random.key(0), params)
    step = jax.jit(lambda key, state, action: autoreset_step(env, key, state, action, params))
    right = jnp.int32(1)
    seen = []
    for i in range(4):
        obs, state, reward, terminated, truncated, final_obs = step(jax.random.key(i), state,
                                                                    right)
        seen.append((obs, terminated, truncated, final_obs))
    obs, terminated, truncated, final_obs = seen[-1]
    assert bool(truncated) and not bool(terminated)
    # The final observation is the state reached after 4 steps, the obs is the reset one.
    model = env.model(params)
    index_of = {tuple(np.asarray(o)): s for s, o in enumerate(model.observations)}
    assert index_of[tuple(np.asarray(final_obs))] != index_of[tuple(np.asarray(obs))]
    assert index_of[tuple(np.asarray(obs))] in set(np.flatnonzero(np.asarray(model.initial)))
    for obs, _, still_running, final_obs in seen[:-1]:
        assert not bool(still_running)
        np.testing.assert_array_equal(obs, final_obs)  # no reset before the episode ends


@pytest.mark.parametrize("name, config", [
    ("gridworld", GridWorldConfig(rows=3, cols=3, horizon=7, slip=0.5)),  # random steps
    ("tabular", TabularConfig(num_states=6, num_terminal=2, horizon=9)),  # random resets
])
def test_lazy_reset_steps_envs_bit_for_bit_as_the_eager_reset(name, config):
    """`make_step_envs` with the reset under `lax.cond` (the CPU default) gives every output of
    the eager (always-reset) form, bit for bit, over steps where some, none or all episodes end."""
    env = envs.make_env(name, config)
    params, num_envs = env.default_params, 5
    lazy, eager = (make_step_envs(env, params, num_envs, lazy_reset=flag) for flag in (True,
                                                                                        False))
    _, state = _reset(env, num_envs)
    action = jnp.zeros((num_envs,), jnp.int32)
    assert "cond" in str(jax.make_jaxpr(lazy)(jax.random.key(0), state, action))

    def rollout(step_envs):
        def body(carry, key):
            env_state, obs = carry
            action_key, step_key = jax.random.split(key)
            action = jax.random.randint(action_key, (num_envs,), 0, env.spec.num_actions)
            out = step_envs(step_key, env_state, action)
            return (out[1], out[0]), (out[0], out[2], out[3], out[4], out[5])

        obs, state = _reset(env, num_envs)
        return jax.jit(lambda keys: jax.lax.scan(body, (state, obs), keys))(
            jax.random.split(jax.random.key(1), 60))

    lazy_out, eager_out = rollout(lazy), rollout(eager)
    ends = np.asarray(eager_out[1][2] | eager_out[1][3])  # [60, N] terminated | truncated
    assert 0 < ends.any(axis=1).sum() < 60  # steps with and without an episode end
    for a, b in zip(jax.tree.leaves(lazy_out), jax.tree.leaves(eager_out), strict=True):
        np.testing.assert_array_equal(a, b)


def _reset(env, num_envs):
    obs, state = jax.vmap(env.reset, in_axes=(0, None))(
        jax.random.split(jax.random.key(2), num_envs), env.default_params)
    return obs, state


def test_track_episodes_reports_finished_returns():
    ret, length = jnp.array([1.0, 2.0]), jnp.array([3, 4], jnp.int32)
    ret, length, total, count, best = track_episodes(ret, length, jnp.array([0.5, 1.0]),
                                                     jnp.array([True, False]))
    np.testing.assert_allclose(ret, [0.0, 3.0])
    np.testing.assert_array_equal(length, [0, 5])
    assert float(total) == 1.5 and int(count) == 1 and float(best) == 1.5
    # Two episodes end: the maximum is the better one; none ends: -inf.
    *_, count, best = track_episodes(jnp.array([1.0, -2.0]), length, jnp.array([0.5, 1.0]),
                                     jnp.array([True, True]))
    assert int(count) == 2 and float(best) == 1.5
    *_, count, best = track_episodes(ret, length, jnp.array([0.5, 1.0]),
                                     jnp.array([False, False]))
    assert int(count) == 0 and float(best) == -np.inf


SHARDING_SCRIPT = textwrap.dedent("""
    import jax, json, sys
    sys.path.insert(0, {root!r})
    import envs
    from agents import ppo
    from rlkit.loops.on_device import make_on_device_trainer
    env = envs.make_env("chain")
    agent = ppo.make_agent(ppo.Config(num_envs=4, rollout_length=16, total_steps=1024), env.spec)
    mesh = jax.sharding.Mesh(jax.devices(), ("seed",))
    out = {{}}
    for name, m in (("sharded", mesh), ("single", None)):
        trainer = make_on_device_trainer(agent, env, env.default_params, 16, mesh=m)
        carry = trainer.init(jax.random.split(jax.random.key(0), 4))
        carry, metrics = trainer.run(carry)
        out[name] = {{"devices": len(carry.obs.sharding.device_set),
                     "eval": [float(x) for x in trainer.evaluate(carry)],
                     "loss": [float(x) for x in metrics["loss"][:, -1]]}}
    out["num_devices"] = len(jax.devices())
    print(json.dumps(out))
""")


def test_seed_axis_shards_over_four_devices_with_the_same_results():
    env = dict(os.environ, XLA_FLAGS=os.environ.get("XLA_FLAGS", "")
               + " --xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", SHARDING_SCRIPT.format(root=str(ROOT))],
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["num_devices"] == 4
    assert out["sharded"]["devices"] == 4 and out["single"]["devices"] == 1
    np.testing.assert_allclose(out["sharded"]["eval"], out["single"]["eval"], rtol=1e-4)
    np.testing.assert_allclose(out["sharded"]["loss"], out["single"]["loss"], rtol=1e-3)


def test_host_driver_trains_ppo_and_dqn_on_gymnasium(tmp_path):
    def make_env(num_envs, seed):
        return envs.make_host_env("gym:CartPole-v1", None, num_envs, seed)

    spec = make_env(1, 0).spec
    for agent in (ppo.make_agent(ppo.Config(num_envs=2, rollout_length=16, total_steps=64),
                                 spec),
                  dqn.make_agent(dqn.Config(num_envs=2, batch_size=8, learning_starts=8,
                                            buffer_size=64), spec)):
        trainer = make_host_trainer(agent, make_env, num_seeds=2, seed=0,
                                    iterations_per_chunk=8, num_eval_episodes=2)
        carry = trainer.init(jax.random.split(jax.random.key(0), 2))
        before = jax.tree.map(np.asarray, carry.agent_state)
        carry, metrics = trainer.run(carry)
        returns = trainer.evaluate(carry)
        trainer.close()
        assert returns.shape == (2,) and np.all(returns >= 1)
        assert metrics["episodes"].shape == (2, 8)
        changed = jax.tree.map(lambda a, b: not np.array_equal(a, np.asarray(b)), before,
                               carry.agent_state)
        assert any(jax.tree.leaves(changed)), "the host driver did not update the agent"


def test_cli_runs_a_gymnasium_env_on_the_host_driver(tmp_path):
    run_dir = tmp_path / "gym"
    assert main(["ppo", "--env", "gym:CartPole-v1", "--total-steps", "512", "--num-logs", "2",
                 "--agent.num-envs", "2", "--agent.rollout-length", "32", "--eval-episodes",
                 "2", "--no-progress", "--run-dir", str(run_dir)]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["env"] == "gym:CartPole-v1" and summary["env_steps"] == 512
    assert "optimal_return" not in summary


def test_every_driver_declares_its_unit_and_the_offline_one_logs_updates():
    from agents import bc
    from rlkit.loops.common import ENV_STEPS, UPDATES
    from rlkit.loops.offline import make_offline_trainer
    from rlkit.loops.on_device import make_on_device_trainer
    from rlkit.runner import _chunk_rows
    from rlkit.types import Transition

    env = envs.make_env("chain")
    online = make_on_device_trainer(
        ppo.make_agent(ppo.Config(num_envs=4, rollout_length=16), env.spec), env,
        env.default_params, 5)
    assert (online.unit, online.units_per_iteration, online.steps_per_iteration) == (
        ENV_STEPS, 64, 64)
    obs = np.zeros((8, *env.spec.obs_shape), np.float32)
    data = Transition(obs=obs, action=np.zeros(8, np.int32), reward=np.zeros(8, np.float32),
                      terminated=np.zeros(8, bool), truncated=np.zeros(8, bool), next_obs=obs,
                      extras={})
    offline = make_offline_trainer(bc.make_agent(bc.Config(), env.spec), data, 5,
                                   evaluate=lambda carry: None)
    assert (offline.unit, offline.units_per_iteration, offline.steps_per_iteration) == (
        UPDATES, 1, 0)
    # Chunk 2 of 5 updates: 15 updates, 0 env steps; the columns of metrics.csv in their order.
    rows = _chunk_rows(2, offline, {"loss": np.array([[1.0, 3.0]])}, np.array([0.5]), None)
    assert list(rows[0]) == ["seed", "chunk", "iteration", "env_steps", "updates",
                             "episode_return", "episode_return_max", "episodes", "eval_return",
                             "loss"]
    assert math.isnan(rows[0]["episode_return_max"])
    assert (rows[0]["updates"], rows[0]["env_steps"], rows[0]["loss"]) == (15, 0, 2.0)
    rows = _chunk_rows(2, online, {"episodes": np.array([[2, 0]]),
                                   "episode_return_sum": np.array([[3.0, 0.0]]),
                                   "episode_return_max": np.array([[2.5, -np.inf]])},
                       np.array([1.0]), np.array([8.0]))
    assert list(rows[0]) == ["seed", "chunk", "iteration", "env_steps", "episode_return",
                             "episode_return_max", "episodes", "eval_return", "suboptimality"]
    assert (rows[0]["env_steps"], rows[0]["episode_return"]) == (15 * 64, 1.5)
    assert rows[0]["episode_return_max"] == 2.5  # the iteration with no episode is not counted


def test_host_driver_reports_progress_within_a_chunk():
    def make_env(num_envs, seed):
        return envs.make_host_env("gym:CartPole-v1", None, num_envs, seed)

    agent = ppo.make_agent(ppo.Config(num_envs=2, rollout_length=8, total_steps=64),
                           make_env(1, 0).spec)
    trainer = make_host_trainer(agent, make_env, num_seeds=1, seed=0, iterations_per_chunk=3,
                                num_eval_episodes=1)
    reported = []
    trainer.report_progress(reported.append)
    trainer.run(trainer.init(jax.random.split(jax.random.key(0), 1)))
    trainer.close()
    # After every batched env step, the env steps each seed took (num_envs): 3 x 8 steps.
    assert reported == [2] * 24


def test_act_and_step_records_the_transition_and_resets_finished_episodes():
    """Chain of 2 states, horizon 2, always right: step 1 moves to the right end (reward 0),
    step 2 pushes there (reward 1) and truncates, so both envs reset to the left end."""
    env = envs.make_env("chain", ChainConfig(length=2, horizon=2))
    params = env.default_params
    num_envs = 2

    def act(agent_state, obs, key, step):
        return jnp.ones((obs.shape[0],), jnp.int32), {"step": jnp.full((obs.shape[0],), step)}

    agent = SimpleNamespace(act=act)
    step_envs = make_step_envs(env, params, num_envs)
    obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(
        jax.random.split(jax.random.key(0), num_envs), params)
    carry = Carry(agent_state=None, env_state=env_state, obs=obs, key=jax.random.key(1),
                  episode_return=jnp.zeros((num_envs,), jnp.float32),
                  episode_length=jnp.zeros((num_envs,), jnp.int32),
                  iteration=jnp.zeros((), jnp.int32))
    left, right = np.eye(2)[[0, 0]], np.eye(2)[[1, 1]]

    carry, transition, (finished_sum, finished_count, finished_max) = act_and_step(
        agent, step_envs, carry, jax.random.key(2), jnp.int32(0))
    np.testing.assert_array_equal(transition.obs, left)
    np.testing.assert_array_equal(transition.next_obs, right)
    np.testing.assert_array_equal(transition.action, [1, 1])
    np.testing.assert_array_equal(transition.reward, [0.0, 0.0])
    np.testing.assert_array_equal(transition.extras["step"], [0, 0])  # act's extras, act's step
    np.testing.assert_array_equal(carry.obs, right)
    np.testing.assert_array_equal(carry.episode_length, [1, 1])
    assert float(finished_sum) == 0.0 and int(finished_count) == 0
    assert float(finished_max) == -np.inf

    carry, transition, (finished_sum, finished_count, finished_max) = act_and_step(
        agent, step_envs, carry, jax.random.key(3), jnp.int32(2))
    np.testing.assert_array_equal(transition.reward, [1.0, 1.0])
    np.testing.assert_array_equal(transition.truncated, [True, True])
    np.testing.assert_array_equal(transition.terminated, [False, False])
    np.testing.assert_array_equal(transition.next_obs, right)  # the final observation...
    np.testing.assert_array_equal(carry.obs, left)  # ...while the carry holds the reset one
    np.testing.assert_array_equal(transition.extras["step"], [2, 2])
    np.testing.assert_array_equal(carry.episode_length, [0, 0])
    np.testing.assert_array_equal(carry.episode_return, [0.0, 0.0])
    assert float(finished_sum) == 2.0 and int(finished_count) == 2
    assert float(finished_max) == 1.0


def test_make_feed_sampling_refuses_a_hybrid_feed_without_a_dataset():
    assert make_feed_sampling(OnPolicyFeed(num_envs=2, rollout_length=4), None) == (None, None)
    buffer, sampler = make_feed_sampling(
        ReplayFeed(num_envs=2, buffer_size=16, batch_size=4, learning_starts=4), None)
    assert buffer is not None and sampler is None  # uniform replay, no dataset to mix
    hybrid = ReplayFeed(num_envs=2, buffer_size=16, batch_size=4, learning_starts=4,
                        offline_fraction=0.5)
    with pytest.raises(RlkitError, match=r"^dataset: .*pass one \(--dataset DIR\)"):
        make_feed_sampling(hybrid, None)
    assert make_feed_sampling(hybrid, object())[1] is not None  # the hybrid sampler
