"""The tabular environment and the toy MDPs: proper models, and the env sampling its model."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs import tabular, toy
from rlkit.errors import RlkitError
from rlkit.types import Environment

TOY_NAMES = ["chain", "riverswim", "combination-lock", "deepsea", "gridworld", "tabular"]


def _model_np(env: Environment):
    model = env.model(env.default_params)
    return jax.tree.map(np.asarray, model)


@pytest.mark.parametrize("name", TOY_NAMES)
def test_registry_builds_every_toy_env_with_a_proper_model(name):
    env = envs.make_env(name)
    model = _model_np(env)
    num_states, num_actions = model.rewards.shape
    assert model.transitions.shape == (num_states, num_actions, num_states)
    assert num_actions == env.spec.num_actions
    np.testing.assert_allclose(model.transitions.sum(-1), 1.0, atol=1e-6)
    assert (model.transitions >= 0).all()
    np.testing.assert_allclose(model.initial.sum(), 1.0, atol=1e-6)
    assert model.terminal.dtype == np.bool_ and not model.initial[model.terminal].any()
    # Terminal states are absorbing with zero reward (the TabularModel contract).
    for s in np.flatnonzero(model.terminal):
        np.testing.assert_array_equal(model.transitions[s, :, s], 1.0)
        np.testing.assert_array_equal(model.rewards[s], 0.0)
    assert model.observations.shape == (num_states, *env.spec.obs_shape)
    assert str(model.observations.dtype) == env.spec.obs_dtype == "float32"
    assert int(model.horizon) == env.spec.max_episode_steps


def _step_every_pair(env, params, samples_per_pair, key):
    """Step K times from every (s, a), half of them on the last step before truncation."""
    model = env.model(params)
    num_states, num_actions = model.rewards.shape
    count = num_states * num_actions * samples_per_pair
    index = np.repeat(np.arange(num_states), num_actions * samples_per_pair)
    action = np.tile(np.repeat(np.arange(num_actions), samples_per_pair), num_states)
    last_step = np.arange(count) % 2 == 1
    step = np.where(last_step, int(model.horizon) - 1, 0)
    state = tabular.TabularState(
        index=jnp.asarray(index, jnp.int32), step=jnp.asarray(step, jnp.int32)
    )
    keys = jax.random.split(key, count)
    out = jax.jit(jax.vmap(env.step, in_axes=(0, 0, 0, None)))(
        keys, state, jnp.asarray(action, jnp.int32), params
    )
    obs, next_state, reward, terminated, truncated, info = jax.tree.map(np.asarray, out)
    assert info == {}
    return index, action, last_step, obs, next_state, reward, terminated, truncated


STOCHASTIC_ENVS = {
    "riverswim": lambda: toy.make_riverswim(toy.RiverSwimConfig()),
    "riverswim-strehl-littman": lambda: toy.make_riverswim(
        toy.RiverSwimConfig(variant="strehl-littman")
    ),
    "gridworld-slip": lambda: toy.make_gridworld(toy.GridWorldConfig(rows=3, cols=4, slip=0.3)),
    "deepsea-stochastic": lambda: toy.make_deepsea(toy.DeepSeaConfig(size=4, deterministic=False)),
    "tabular-terminal-noise": lambda: tabular.make(
        tabular.Config(
            num_states=6,
            num_actions=3,
            horizon=7,
            num_terminal=2,
            reward_noise_std=0.5,
            concentration=0.5,
        )
    ),
}


@pytest.mark.parametrize("name", sorted(STOCHASTIC_ENVS))
def test_sampled_transitions_agree_with_the_model(name):
    env = STOCHASTIC_ENVS[name]()
    params = env.default_params
    model = _model_np(env)
    num_states, num_actions = model.rewards.shape
    samples = 1200
    index, action, last_step, obs, next_state, reward, terminated, truncated = _step_every_pair(
        env, params, samples, jax.random.key(0)
    )
    next_index = next_state.index
    counts = np.zeros((num_states, num_actions, num_states))
    np.add.at(counts, (index, action, next_index), 1.0)
    frequencies = counts / samples
    p = model.transitions
    # Five binomial standard errors: a wrong row (e.g. a swapped probability) is far outside.
    tolerance = 5 * np.sqrt(p * (1 - p) / samples) + 1e-3
    assert (np.abs(frequencies - p) <= tolerance).all(), np.abs(frequencies - p).max()
    assert (p[index, action, next_index] > 0).all()  # never an impossible successor
    np.testing.assert_array_equal(obs, model.observations[next_index])
    np.testing.assert_array_equal(terminated, model.terminal[next_index])
    np.testing.assert_array_equal(truncated, last_step & ~terminated)
    np.testing.assert_array_equal(next_state.step, np.where(last_step, model.horizon, 1))
    assert reward.dtype == np.float32 and terminated.dtype == np.bool_
    noise = params.reward_noise_std
    if noise is None:
        np.testing.assert_allclose(reward, model.rewards[index, action], rtol=1e-6)
    else:
        noise = np.asarray(noise)[index, action]
        quiet = noise == 0
        np.testing.assert_allclose(reward[quiet], model.rewards[index, action][quiet], rtol=1e-6)
        residual = (reward - model.rewards[index, action])[~quiet] / noise[~quiet]
        assert abs(residual.mean()) < 5 / np.sqrt(residual.size)
        assert abs(residual.std() - 1.0) < 0.1


def test_reset_samples_the_initial_distribution():
    env = toy.make_riverswim(toy.RiverSwimConfig(variant="strehl-littman"))
    model = _model_np(env)
    obs, state = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))(
        jax.random.split(jax.random.key(1), 4000), env.default_params
    )
    index = np.asarray(state.index)
    frequencies = np.bincount(index, minlength=model.initial.size) / index.size
    np.testing.assert_allclose(frequencies, model.initial, atol=0.04)  # {0, 1} half and half
    np.testing.assert_array_equal(np.asarray(obs), model.observations[index])
    np.testing.assert_array_equal(np.asarray(state.step), 0)
    assert state.index.dtype == jnp.int32 and state.step.dtype == jnp.int32


def test_chain_model_by_hand():
    model = jax.tree.map(
        np.asarray, toy.chain_model(toy.ChainConfig(length=3, horizon=5, left_reward=0.1))
    )
    left, right = toy.LEFT, toy.RIGHT
    np.testing.assert_array_equal(model.transitions.argmax(-1), [[0, 1], [0, 2], [1, 2]])
    np.testing.assert_allclose(model.rewards, [[0.1, 0], [0, 0], [0, 1]])
    assert model.rewards[0, left] == np.float32(0.1) and model.rewards[2, right] == 1
    np.testing.assert_array_equal(model.initial, [1, 0, 0])
    assert not model.terminal.any()


def test_riverswim_osband_probabilities():
    model = jax.tree.map(np.asarray, toy.riverswim_model(toy.RiverSwimConfig()))
    right = model.transitions[:, toy.RIGHT]
    np.testing.assert_allclose(right[0, :2], [0.4, 0.6])
    np.testing.assert_allclose(right[3, 2:5], [0.05, 0.6, 0.35])
    np.testing.assert_allclose(right[5, 4:], [0.4, 0.6])
    np.testing.assert_array_equal(model.transitions[:, toy.LEFT].argmax(-1), [0, 0, 1, 2, 3, 4])
    np.testing.assert_allclose(model.rewards[0], [0.005, 0])
    np.testing.assert_allclose(model.rewards[5], [0, 1])
    assert model.rewards.sum() == pytest.approx(1.005)


def test_combination_lock_structure_and_builders_agree():
    config = toy.CombinationLockConfig(horizon=3, num_actions=3, code_seed=4, distractor_reward=0.2)
    code = toy.combination_lock_code(4, 3, 3)
    env = toy.make_combination_lock(config)
    model = _model_np(env)
    assert model.transitions.shape == (7, 3, 7) and env.spec.obs_shape == (7,)
    # Following the code: good states 0 -> 2 -> 4 -> terminal 6, reward 1 only on the last step.
    state, total = 0, 0.0
    for h in range(3):
        total += model.rewards[state, code[h]]
        state = int(model.transitions[state, code[h]].argmax())
        assert state == (2 * (h + 1))
    assert total == 1.0 and model.terminal[state]
    # A wrong first action drops to the dead path (odd indices) with the distractor, then nothing.
    wrong = (code[0] + 1) % 3
    assert model.rewards[0, wrong] == np.float32(0.2)
    assert model.transitions[0, wrong].argmax() == 3
    np.testing.assert_array_equal(model.rewards[[1, 3, 5]], 0.0)
    # Different seeds give different codes; the jnp (vmappable) builder equals the numpy one.
    codes = {tuple(toy.combination_lock_code(seed, 5, 4)) for seed in range(5)}
    assert len(codes) > 1
    traced = jax.jit(lambda c: toy.combination_lock_model(c, 3, 0.2))(jnp.asarray(code))
    for a, b in zip(
        jax.tree.leaves(traced),
        jax.tree.leaves(toy.combination_lock_model(code, 3, 0.2)),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_deepsea_matches_bsuite():
    size = 5
    env = toy.make_deepsea(toy.DeepSeaConfig(size=size, mapping_seed=3))
    model = _model_np(env)
    # bsuite draws the mapping with RandomState(mapping_seed).binomial(1, 0.5, [N, N]).
    mapping = np.random.RandomState(3).binomial(1, 0.5, [size, size])
    np.testing.assert_array_equal(toy.deepsea_action_mapping(3, size), mapping)
    assert env.spec.obs_shape == (size, size)
    np.testing.assert_array_equal(model.observations[0], np.eye(size * size)[0].reshape(size, size))
    np.testing.assert_array_equal(model.observations[-1], 0.0)  # bsuite's null final observation
    # Always "right": N - 1 moves at -0.01 / N, then the treasure 1 - 0.01 / N, then terminal.
    row, col, state, rewards = 0, 0, 0, []
    for _ in range(size):
        action = mapping[row, col]
        rewards.append(model.rewards[state, action])
        state = int(model.transitions[state, action].argmax())
        row, col = row + 1, min(col + 1, size - 1)
    np.testing.assert_allclose(rewards[:-1], -0.01 / size, rtol=1e-5)
    np.testing.assert_allclose(rewards[-1], 1 - 0.01 / size, rtol=1e-6)
    assert model.terminal[state]
    # "Left" in the first cell stays in column 0, one row down, for free.
    left = 1 - mapping[0, 0]
    assert model.transitions[0, left].argmax() == size and model.rewards[0, left] == 0.0
    traced = jax.jit(toy.deepsea_model)(jnp.asarray(mapping))
    np.testing.assert_allclose(np.asarray(traced.transitions), model.transitions)
    np.testing.assert_allclose(np.asarray(traced.rewards), model.rewards)


def test_gridworld_goal_terminates_with_reward():
    model = jax.tree.map(
        np.asarray, toy.gridworld_model(toy.GridWorldConfig(rows=2, cols=3, slip=0.4))
    )
    goal = 5
    assert model.terminal.tolist() == [False] * 5 + [True]
    # From cell 2 (top right) "down" (2) reaches the goal with 1 - slip + slip / 4.
    assert model.transitions[2, 2, goal] == pytest.approx(0.6 + 0.1)
    assert model.rewards[2, 2] == pytest.approx(0.7)
    # In the top-left corner "up" bumps into the wall, as does a slip to "left".
    assert model.transitions[0, 0, 0] == pytest.approx(0.6 + 0.1 + 0.1)  # up and left both stay


def test_params_batch_over_lock_codes():
    codes = np.stack([toy.combination_lock_code(seed, 4, 3) for seed in range(3)])
    build = jax.vmap(lambda c: tabular.make_params(toy.combination_lock_model(c, 3)))
    params = jax.jit(build)(jnp.asarray(codes))
    assert params.model.transitions.shape == (3, 9, 3, 9)
    stacked = tabular.stack_params(
        [tabular.make_params(toy.combination_lock_model(c, 3)) for c in codes]
    )
    np.testing.assert_array_equal(
        np.asarray(stacked.model.rewards), np.asarray(params.model.rewards)
    )


@pytest.mark.parametrize(
    "config_class, field, value",
    [
        (toy.ChainConfig, "length", 1),
        (toy.ChainConfig, "horizon", 3),
        (toy.ChainConfig, "left_reward", -1.0),
        (toy.RiverSwimConfig, "variant", "fast"),
        (toy.RiverSwimConfig, "num_states", 2),
        (toy.CombinationLockConfig, "num_actions", 1),
        (toy.CombinationLockConfig, "horizon", 0),
        (toy.CombinationLockConfig, "distractor_reward", 1.0),
        (toy.DeepSeaConfig, "size", 1),
        (toy.DeepSeaConfig, "unscaled_move_cost", 2.0),
        (toy.GridWorldConfig, "slip", 1.5),
        (toy.GridWorldConfig, "horizon", 2),
        (tabular.Config, "num_terminal", 10),
        (tabular.Config, "concentration", 0.0),
        (tabular.Config, "num_actions", 0),
    ],
)
def test_configs_reject_bad_fields_by_name(config_class, field, value):
    with pytest.raises(RlkitError, match=f"^{field}: "):
        config_class(**{field: value})


def test_make_tabular_env_rejects_a_malformed_model():
    model = toy.chain_model(toy.ChainConfig())
    broken = model.replace(transitions=model.transitions * 0.5)
    with pytest.raises(RlkitError, match="rows must sum to 1"):
        tabular.make_tabular_env(broken, "broken")
