"""The environment adapters: gymnax (functional JAX), gymnasium (host) and procgen's missing extra.

Each test pins a behaviour a plausible wrong adapter gets wrong: time limits reported as
terminations, the reset observation passed off as the final one, gymnax trajectories that drift
from gymnax's own, unseeded resets, and silent acceptance of continuous action spaces.
"""

from __future__ import annotations

import importlib.util

import gymnasium
import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs import gymnasium_adapter, gymnax_adapter, procgen_adapter
from rlkit.errors import RlkitError
from rlkit.types import HostEnvironment

# --------------------------------------------------------------------------------------------
# gymnax
# --------------------------------------------------------------------------------------------


def _balance(obs):
    """A PD controller that keeps CartPole up (and near the centre) for well over 500 steps."""
    x, x_dot, theta, theta_dot = obs
    return (10.0 * theta + 2.0 * theta_dot + 0.3 * x + 0.8 * x_dot > 0).astype(jnp.int32)


@pytest.fixture(scope="module")
def cartpole():
    return gymnax_adapter.make(gymnax_adapter.Config("CartPole-v1"))


@pytest.fixture(scope="module")
def balanced_rollout(cartpole):
    """jit(rollout)(key, params): 520 steps of the balancing policy; params are traced, so a
    different time limit reuses the compiled program."""

    @jax.jit
    def rollout(key, params):
        obs, state = cartpole.reset(key, params)

        def body(carry, key):
            obs, state = carry
            next_obs, state, reward, terminated, truncated, _ = cartpole.step(
                key, state, _balance(obs), params
            )
            return (next_obs, state), (reward, terminated, truncated)

        return jax.lax.scan(body, (obs, state), jax.random.split(key, 520))[1]

    return rollout


def test_gymnax_cartpole_spec_and_dtypes(cartpole):
    assert cartpole.spec.name == "gymnax:CartPole-v1"
    assert cartpole.spec.obs_shape == (4,)
    assert cartpole.spec.obs_dtype == "float32"
    assert cartpole.spec.num_actions == 2
    assert cartpole.spec.max_episode_steps == 500
    obs, state = jax.jit(cartpole.reset)(jax.random.key(0), cartpole.default_params)
    assert obs.shape == (4,) and obs.dtype == jnp.float32
    next_obs, _, reward, terminated, truncated, info = jax.jit(cartpole.step)(
        jax.random.key(1), state, jnp.int32(1), cartpole.default_params
    )
    assert next_obs.dtype == jnp.float32 and next_obs.shape == (4,)
    assert reward.dtype == jnp.float32 and reward.shape == ()
    assert terminated.dtype == jnp.bool_ and terminated.shape == ()
    assert truncated.dtype == jnp.bool_ and truncated.shape == ()
    assert isinstance(info, dict)
    # No auto-reset: the state moved on from the reset state.
    assert not np.allclose(next_obs, obs)

    # gymnax states hold Python numbers (time=0); the adapter types every leaf so that a scan
    # carry keeps one dtype from reset to step.
    key, params = jax.random.key(0), cartpole.default_params
    reset_state = jax.eval_shape(cartpole.reset, key, params)[1]
    step_state = jax.eval_shape(cartpole.step, key, reset_state, jnp.int32(0), params)[1]
    for leaf in jax.tree.leaves(reset_state):
        assert not leaf.weak_type
    assert jax.tree.map(lambda x: (x.shape, x.dtype, x.weak_type), reset_state) == jax.tree.map(
        lambda x: (x.shape, x.dtype, x.weak_type), step_state
    )


def test_gymnax_time_limit_is_truncation_not_termination(cartpole, balanced_rollout):
    reward, terminated, truncated = balanced_rollout(jax.random.key(0), cartpole.default_params)
    # The pole never falls, so the only episode end is gymnax's 500-step limit: step index 499.
    assert not terminated.any()
    np.testing.assert_array_equal(np.flatnonzero(truncated[:500]), [499])
    assert float(reward[:500].sum()) == 500.0

    # A time-limit override moves the truncation and the spec with it.
    short = gymnax_adapter.make(gymnax_adapter.Config("CartPole-v1", max_episode_steps=37))
    assert short.spec.max_episode_steps == 37
    _, terminated, truncated = balanced_rollout(jax.random.key(0), short.default_params)
    assert not terminated.any()
    assert np.flatnonzero(truncated)[0] == 36


# Acrobot with torque noise draws from the step key on every step, so it checks that keys are split
# exactly like gymnax's; its short time limit checks truncation parity too.
@pytest.mark.parametrize(
    ("env_id", "overrides"),
    [("CartPole-v1", {}), ("Acrobot-v1", {"torque_noise_max": 0.5, "max_steps_in_episode": 60})],
)
def test_gymnax_parity_with_gymnax_step(env_id, overrides):
    """Same keys and actions: our steps equal gymnax's auto-resetting `step` until the first end."""
    env = gymnax_adapter.make(gymnax_adapter.Config(env_id))
    gymnax_env, params = gymnax.make(env_id)
    params = params.replace(**overrides)
    steps = 200

    @jax.jit
    def both(key):
        reset_key, key = jax.random.split(key)
        obs, state = env.reset(reset_key, params)
        gymnax_obs, gymnax_state = gymnax_env.reset(reset_key, params)
        action_keys, step_keys = jax.random.split(key, (2, steps))
        actions = jax.vmap(
            lambda k: jax.random.randint(k, (), 0, env.spec.num_actions)
        )(action_keys)

        def body(carry, inputs):
            state, gymnax_state = carry
            key, action = inputs
            obs, state, reward, terminated, truncated, _ = env.step(key, state, action, params)
            gymnax_out = gymnax_env.step(key, gymnax_state, action, params)
            gymnax_state = gymnax_out[1]
            ours = (obs, reward, terminated, truncated)
            theirs = (gymnax_out[5]["final_observation"], *gymnax_out[2:5])
            return (state, gymnax_state), (ours, theirs)

        _, (ours, theirs) = jax.lax.scan(body, (state, gymnax_state), (step_keys, actions))
        return obs, gymnax_obs, ours, theirs

    obs, gymnax_obs, ours, theirs = jax.device_get(both(jax.random.key(3)))
    np.testing.assert_array_equal(obs, gymnax_obs)
    (obs, reward, terminated, truncated), (final_obs, g_reward, g_terminated, g_truncated) = (
        ours, theirs
    )
    assert obs.dtype == np.float32 and obs.shape == (steps, *env.spec.obs_shape)
    assert reward.dtype == np.float32
    done = np.flatnonzero(terminated | truncated)
    end = done[0] + 1 if done.size else steps
    assert done.size, "both environments end an episode within 200 random steps"
    np.testing.assert_allclose(obs[:end], np.asarray(final_obs[:end], np.float32), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_array_equal(reward[:end], np.asarray(g_reward[:end], np.float32))
    np.testing.assert_array_equal(terminated[:end], g_terminated[:end])
    np.testing.assert_array_equal(truncated[:end], g_truncated[:end])


def test_gymnax_rejects_continuous_actions_and_unknown_ids():
    with pytest.raises(RlkitError, match="Pendulum-v1.*discrete actions"):
        gymnax_adapter.make(gymnax_adapter.Config("Pendulum-v1"))
    with pytest.raises(RlkitError, match="MountainCarContinuous-v0.*discrete actions"):
        envs.make_env("gymnax:MountainCarContinuous-v0")
    with pytest.raises(RlkitError, match="env_id.*'Cartpole-v1'.*CartPole-v1.*Acrobot-v1"):
        gymnax_adapter.Config("Cartpole-v1")
    with pytest.raises(RlkitError, match="max_episode_steps"):
        gymnax_adapter.Config(max_episode_steps=0)


def test_gymnax_minatar_observations_are_float_grids():
    env = envs.make_env("breakout-minatar")
    assert env.spec.name == "gymnax:Breakout-MinAtar"
    assert env.spec.obs_shape == (10, 10, 4) and env.spec.num_actions == 3
    obs, _ = jax.jit(env.reset)(jax.random.key(0), env.default_params)
    # MinAtar's boolean grids become 0.0 / 1.0 floats with the same [10, 10, C] shape.
    assert obs.dtype == jnp.float32 and obs.shape == (10, 10, 4)
    assert set(np.unique(np.asarray(obs))) == {0.0, 1.0}
    _, params = gymnax.make("Breakout-MinAtar")
    assert env.spec.max_episode_steps == int(params.max_steps_in_episode)
    assert envs.make_env("gymnax:Acrobot-v1").spec.obs_shape == (6,)


# --------------------------------------------------------------------------------------------
# gymnasium
# --------------------------------------------------------------------------------------------


def _gym(num_envs=3, seed=0, **config):
    return gymnasium_adapter.make(gymnasium_adapter.Config(**config), num_envs, seed)


def test_gymnasium_truncation_end_to_end():
    """At the time limit: truncated, not terminated, and final_obs is the true last observation
    (checked against plain gymnasium envs), while obs is already the next episode's first."""
    limit, seed = 5, 11
    env = _gym(num_envs=3, seed=seed, max_episode_steps=limit)
    assert isinstance(env, HostEnvironment)
    assert env.spec.max_episode_steps == limit and env.spec.obs_dtype == "float32"
    references = [gymnasium.make("CartPole-v1", max_episode_steps=limit) for _ in range(3)]
    obs = env.reset(seed)
    env_seeds = gymnasium_adapter.env_seeds(seed, 3)  # SeedSequence, not gymnasium's seed + i
    for i, ref in enumerate(references):
        np.testing.assert_array_equal(obs[i], ref.reset(seed=env_seeds[i])[0])

    for t in range(limit):
        actions = np.array([t % 2, 1 - t % 2, t % 2])  # alternating keeps the pole up
        step = env.step(actions)
        ref_steps = [ref.step(int(a)) for ref, a in zip(references, actions, strict=True)]
        assert step.obs.dtype == np.float32 and step.final_obs.dtype == np.float32
        assert step.reward.dtype == np.float32 and step.terminated.dtype == np.bool_
        assert not step.terminated.any()
        np.testing.assert_array_equal(step.truncated, t == limit - 1)
        for i, ref_step in enumerate(ref_steps):
            np.testing.assert_array_equal(step.final_obs[i], ref_step[0])
        if t < limit - 1:
            np.testing.assert_array_equal(step.final_obs, step.obs)

    # obs is the reset observation of the next episode, final_obs the truncated one.
    for i, ref in enumerate(references):
        np.testing.assert_array_equal(step.obs[i], ref.reset()[0])
    assert np.all(np.abs(step.obs) <= 0.05)  # CartPole resets in [-0.05, 0.05]
    assert not np.allclose(step.final_obs, step.obs)
    env.close()


def test_gymnasium_termination_keeps_final_obs():
    env = _gym(num_envs=2, seed=0)
    env.reset(0)
    for _ in range(100):
        step = env.step(np.ones(2, np.int64))  # constant push: the pole falls
        if step.terminated.any():
            break
    assert step.terminated.any() and not step.truncated.any()
    i = int(np.flatnonzero(step.terminated)[0])
    x, _, theta, _ = step.final_obs[i]
    assert abs(x) > 2.4 or abs(theta) > 12 * 2 * np.pi / 360  # out of bounds: why it ended
    assert np.all(np.abs(step.obs[i]) <= 0.05)  # already the next episode
    env.close()


def test_gymnasium_same_seed_same_trajectory():
    def rollout(seed):
        env = _gym(num_envs=2, seed=seed)
        actions = np.random.default_rng(0).integers(0, 2, (60, 2))
        out = [env.reset(seed)]
        for a in actions:
            step = env.step(a)
            out += [step.obs, step.final_obs, step.reward, step.terminated, step.truncated]
        env.close()
        return out

    first, second, other = rollout(5), rollout(5), rollout(6)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])


def test_gymnasium_discrete_observations_become_one_hot():
    env = _gym(num_envs=2, seed=0, env_id="FrozenLake-v1")
    assert env.spec.obs_shape == (16,) and env.spec.num_actions == 4
    obs = env.reset(0)
    np.testing.assert_array_equal(obs, np.eye(16, dtype=np.float32)[[0, 0]])
    env.close()


def test_gymnasium_errors():
    with pytest.raises(RlkitError, match="Pendulum-v1.*discrete actions"):
        envs.make_host_env("gym:Pendulum-v1", None, 2, 0)
    with pytest.raises(RlkitError, match="--env gym:CartPol-v1: .*'CartPol-v1'.*CartPole-v1"):
        _gym(env_id="CartPol-v1")
    with pytest.raises(RlkitError, match="vectorization"):
        gymnasium_adapter.Config(vectorization="threads")
    with pytest.raises(RlkitError, match="max_episode_steps.*no time limit"):
        _gym(env_id="Blackjack-v1")
    env = _gym(num_envs=2)
    with pytest.raises(RlkitError, match="reset"):
        env.step(np.zeros(2, np.int64))
    env.reset(0)
    with pytest.raises(RlkitError, match="actions"):
        env.step(np.zeros(3, np.int64))
    with pytest.raises(RlkitError, match="actions"):
        env.step(np.array([0, 2]))
    env.close()


@pytest.mark.slow
def test_gymnasium_async_matches_sync():
    """Subprocess workers (spawned) give the same numbers as the in-process vector env."""
    results = []
    for vectorization in ("sync", "async"):
        env = _gym(num_envs=2, seed=3, max_episode_steps=4, vectorization=vectorization)
        out = [env.reset(3)]
        for t in range(6):
            step = env.step(np.array([t % 2, 1 - t % 2]))
            out += [step.obs, step.final_obs, step.truncated, step.terminated]
        env.close()
        results.append(out)
    for a, b in zip(*results, strict=True):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------------------------
# procgen (the extra itself is tested in tests/test_procgen.py, in its own environment)
# --------------------------------------------------------------------------------------------


@pytest.mark.skipif(importlib.util.find_spec("procgen") is not None, reason="procgen is installed")
def test_procgen_missing_extra_names_the_install_command():
    with pytest.raises(RlkitError, match=r"pip install -e '\.\[procgen\]'"):
        envs.make_host_env("procgen:coinrun", None, 2, 0)


def test_procgen_config_validation_lists_valid_values():
    with pytest.raises(RlkitError, match="game.*'coinrn'.*coinrun.*starpilot"):
        procgen_adapter.Config(game="coinrn")
    with pytest.raises(RlkitError, match="distribution_mode.*easy, hard, extreme"):
        procgen_adapter.Config(distribution_mode="medium")
    # A mode the game lacks would kill the process inside procgen's C++: caught here.
    with pytest.raises(RlkitError, match="distribution_mode.*'coinrun'.*'extreme'.*chaser"):
        procgen_adapter.Config(game="coinrun", distribution_mode="extreme")
    with pytest.raises(RlkitError, match="num_levels"):
        procgen_adapter.Config(num_levels=-1)
    assert procgen_adapter.Config(game="maze").max_episode_steps == 500
    memory_jumper = procgen_adapter.Config(game="jumper", distribution_mode="memory")
    assert memory_jumper.max_episode_steps == 2000
