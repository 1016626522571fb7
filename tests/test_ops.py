"""Hand-computed checks of the shared maths in rlkit.ops."""

import jax.numpy as jnp
import numpy as np

from rlkit.ops import (
    double_q_learning_target,
    generalized_advantage_estimation,
    next_state_values,
)


def _gae_by_hand(reward, value, next_value, terminated, truncated, gamma, lam):
    advantages = np.zeros_like(reward)
    running = 0.0
    for t in reversed(range(len(reward))):
        delta = reward[t] + gamma * (1 - terminated[t]) * next_value[t] - value[t]
        continues = 1 - max(terminated[t], truncated[t])
        running = delta + gamma * lam * continues * running
        advantages[t] = running
    return advantages


def test_gae_matches_hand_computation_with_termination_and_truncation():
    reward = np.array([1.0, 0.5, 2.0, -1.0, 0.0, 3.0], np.float32)
    value = np.array([0.2, 0.1, -0.3, 0.4, 0.0, 1.0], np.float32)
    # Step 2 terminates, step 4 is truncated: its next value is V(final obs) = 5.0.
    next_value = np.array([0.1, -0.3, 9.9, 0.0, 5.0, 0.7], np.float32)
    terminated = np.array([0, 0, 1, 0, 0, 0], bool)
    truncated = np.array([0, 0, 0, 0, 1, 0], bool)
    adv, ret = generalized_advantage_estimation(
        jnp.asarray(reward), jnp.asarray(value), jnp.asarray(next_value),
        jnp.asarray(terminated), jnp.asarray(truncated), 0.9, 0.8)
    expected = _gae_by_hand(reward, value, next_value, terminated, truncated, 0.9, 0.8)
    np.testing.assert_allclose(adv, expected, rtol=1e-5)
    np.testing.assert_allclose(ret, expected + value, rtol=1e-5)
    # The terminated step ignores its (large) next value entirely.
    assert abs(float(adv[2]) - (2.0 - (-0.3))) < 1e-5
    # The truncated step bootstraps from V(final obs): 0 + 0.9 * 5 - 0 = 4.5, nothing from t=5.
    assert abs(float(adv[4]) - 4.5) < 1e-5


def test_gae_with_lambda_one_is_the_discounted_return_minus_value():
    reward = jnp.array([1.0, 1.0, 1.0])
    zeros = jnp.zeros(3)
    no = jnp.zeros(3, bool)
    adv, _ = generalized_advantage_estimation(reward, zeros, zeros, no, no, 0.5, 1.0)
    np.testing.assert_allclose(adv, [1.75, 1.5, 1.0], rtol=1e-6)


def test_double_q_target_selects_with_online_and_evaluates_with_target():
    reward = jnp.array([1.0, 0.0])
    terminated = jnp.array([False, True])
    online = jnp.array([[0.0, 5.0], [3.0, 1.0]])
    target = jnp.array([[10.0, 2.0], [7.0, 8.0]])
    out = double_q_learning_target(reward, terminated, online, target, 0.5)
    # Row 0: online argmax is action 1, target value 2 -> 1 + 0.5 * 2. Row 1 terminated -> 0.
    np.testing.assert_allclose(out, [2.0, 0.0])


def test_next_state_values_equal_a_full_forward_pass():
    """Reusing the rollout's values gives V(next_obs) exactly where GAE uses it."""
    import jax

    num_steps, num_envs, horizon = 12, 3, 5
    key = jax.random.key(0)
    weights = jax.random.normal(key, (2,))

    def value_fn(obs):  # [B, 2] -> [B]
        return jnp.tanh(obs @ weights)

    # Simulate auto-reset rollouts: truncate every `horizon` steps (staggered), terminate once.
    rng = np.random.default_rng(0)
    obs = np.zeros((num_steps, num_envs, 2), np.float32)
    next_obs = np.zeros_like(obs)
    truncated = np.zeros((num_steps, num_envs), bool)
    terminated = np.zeros_like(truncated)
    current = rng.normal(size=(num_envs, 2)).astype(np.float32)
    age = np.array([0, 2, 4])
    for t in range(num_steps):
        obs[t] = current
        next_obs[t] = rng.normal(size=(num_envs, 2))
        age += 1
        truncated[t] = age == horizon
        terminated[t] = (t == 6) & (np.arange(num_envs) == 1) & ~truncated[t]
        done = truncated[t] | terminated[t]
        age[done] = 0
        current = np.where(done[:, None], rng.normal(size=(num_envs, 2)), next_obs[t])
    assert truncated.sum() >= num_envs  # several truncations, some envs more than once
    value = value_fn(jnp.asarray(obs.reshape(-1, 2))).reshape(num_steps, num_envs)
    got = next_state_values(value_fn, value, jnp.asarray(next_obs), jnp.asarray(truncated),
                            horizon)
    full = value_fn(jnp.asarray(next_obs.reshape(-1, 2))).reshape(num_steps, num_envs)
    used = ~terminated  # terminated entries are multiplied by zero in GAE
    np.testing.assert_allclose(np.asarray(got)[used], np.asarray(full)[used], rtol=1e-5,
                               atol=1e-6)
