"""Linear MDPs (envs.linear_mdp) and their exact planning (rlkit.planning.linear_*), against
hand-computed values and against the time-expanded tabular model's own planning."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs import linear_mdp
from envs.checker import check_env, linear_mdp_problems
from rlkit import planning
from rlkit.errors import RlkitError


def _expanded_policy(policy: np.ndarray) -> np.ndarray:
    """[H, S, A] -> the stationary [H S + 1, A] policy of the time-expanded model."""
    horizon, num_states, num_actions = policy.shape
    table = np.full((horizon * num_states + 1, num_actions), 1.0 / num_actions)
    table[:-1] = policy.reshape(-1, num_actions)
    return table


def test_hard_state_values_and_visitations_by_hand():
    p = 0.01
    mdp = linear_mdp.hard_state_mdp(p=p, gap=1.0, signs=(1, -1))
    # Weights per step: (1, 1) takes action 0 in s_A and s_B; (1, -1) takes 0 in s_A, 1 in s_B;
    # (-1, -1) takes action 1 everywhere at step 1.
    weights = jnp.asarray([[[1.0, 1.0], [1.0, 1.0]], [[1.0, 1.0], [1.0, -1.0]],
                           [[1.0, 1.0], [-1.0, -1.0]]])
    policies = planning.greedy_linear_policies(mdp.features, weights)
    visitation, returns = jax.jit(planning.linear_class_statistics)(mdp, policies)
    np.testing.assert_allclose(returns, [(1 - p) - p, 1 - p, 0.0], atol=1e-6)
    np.testing.assert_allclose(visitation.mean[:, 0], [[1.0, 0.0]] * 3, atol=1e-6)
    np.testing.assert_allclose(visitation.mean[0, 1], [1 - p, p], atol=1e-6)
    np.testing.assert_allclose(visitation.mean[1, 1], [1 - p, 0.0], atol=1e-6)
    np.testing.assert_allclose(visitation.covariance[0, 1], np.diag([1 - p, p]), atol=1e-6)
    np.testing.assert_allclose(visitation.covariance[2, 1], np.zeros((2, 2)), atol=1e-6)
    np.testing.assert_allclose(visitation.state[0, 1], [0.0, 1 - p, p], atol=1e-6)
    solution = jax.jit(planning.linear_value_iteration)(mdp)
    np.testing.assert_allclose(solution.optimal_return, 1 - p, atol=1e-6)


@pytest.mark.parametrize("name", ["linear-random", "linear-tabular", "linear-hard-state"])
def test_linear_planning_matches_time_expanded_tabular_planning(name):
    env = envs.make_env(name)
    check_env(env, num_episodes=2)
    mdp = env.default_params.linear
    model = env.model(env.default_params)
    horizon, dim = mdp.theta.shape
    weights = jnp.asarray(np.random.default_rng(0).normal(size=(5, horizon, dim)), jnp.float32)
    policies = planning.greedy_linear_policies(mdp.features, weights)

    @jax.jit
    def compute(mdp, model, policies, tables):
        _, returns = planning.linear_class_statistics(mdp, policies)
        tabular_returns = jax.vmap(lambda t: planning.expected_return(model, t, horizon=horizon))(
            tables)
        return (planning.linear_value_iteration(mdp).optimal_return, returns,
                planning.value_iteration(model, horizon=horizon).optimal_return, tabular_returns)

    tables = jnp.asarray(np.stack([_expanded_policy(np.asarray(p)) for p in policies]))
    optimal, returns, tabular_optimal, tabular_returns = compute(mdp, model, policies, tables)
    np.testing.assert_allclose(optimal, tabular_optimal, rtol=1e-5)
    np.testing.assert_allclose(returns, tabular_returns, rtol=1e-5, atol=1e-6)
    assert np.all(np.asarray(returns) <= float(optimal) + 1e-5)


def test_visitation_covariance_is_the_expectation_of_outer_products():
    mdp = linear_mdp.random_linear_mdp(1, num_states=4, num_actions=2, dim=3, horizon=3)
    weights = jnp.asarray(np.random.default_rng(1).normal(size=(1, 3, 3)), jnp.float32)
    policy = planning.greedy_linear_policies(mdp.features, weights)[0]
    visitation = jax.jit(planning.linear_visitation)(mdp, policy)
    # Reference in float64 with Python loops over steps.
    features, mu = np.asarray(mdp.features, np.float64), np.asarray(mdp.mu, np.float64)
    state = np.asarray(mdp.initial, np.float64)
    for h in range(3):
        action = np.asarray(policy[h]).argmax(-1)
        phi = features[np.arange(4), action]  # [S, d]
        np.testing.assert_allclose(visitation.mean[h], state @ phi, atol=1e-5)
        np.testing.assert_allclose(visitation.covariance[h],
                                   np.einsum("s,sd,se->de", state, phi, phi), atol=1e-5)
        state = state @ (phi @ mu[h])


def test_observations_carry_step_and_features():
    mdp = linear_mdp.hard_state_mdp(p=0.1)
    obs = linear_mdp.observations(mdp)
    assert obs.shape == (2 * 3 + 1, 3 + 2 * 2)
    step, features = linear_mdp.split_observation(jnp.asarray(obs), horizon=2, num_actions=2)
    np.testing.assert_array_equal(step, [0, 0, 0, 1, 1, 1, 2])
    np.testing.assert_array_equal(features[4], np.asarray(mdp.features)[1])  # (h=1, s_A)
    np.testing.assert_array_equal(features[-1], np.zeros((2, 2)))


def test_hard_start_variant_starts_in_the_hard_state():
    env = envs.make_env("linear-hard-state", linear_mdp.HardStateConfig(start="hard"))
    model = env.model(env.default_params)
    assert np.asarray(model.initial).argmax() == 3 + 2  # (h=1, s_B)


def test_checker_reports_bad_linear_mdps():
    mdp = linear_mdp.random_linear_mdp(0, num_states=3, num_actions=2, dim=2, horizon=3)
    assert linear_mdp_problems(mdp) == []
    long = mdp._replace(features=mdp.features * 2.0)
    assert any("norm <= 1" in p for p in linear_mdp_problems(long))
    unnormalised = mdp._replace(mu=mdp.mu * 0.5)
    assert any("sum to 1" in p for p in linear_mdp_problems(unnormalised))
    assert "theta must have shape" in linear_mdp_problems(mdp._replace(theta=mdp.theta[:, :1]))[0]
    with pytest.raises(RlkitError, match="malformed"):
        linear_mdp.make_linear_env(unnormalised, "bad")


def test_bad_hard_state_config_is_one_clear_error():
    with pytest.raises(RlkitError, match="^p: "):
        linear_mdp.HardStateConfig(p=0.0)
    with pytest.raises(RlkitError, match="^start: "):
        linear_mdp.HardStateConfig(start="middle")
