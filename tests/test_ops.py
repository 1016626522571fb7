"""Hand-computed checks of the shared maths in rlkit.ops."""

import jax.numpy as jnp
import numpy as np

from rlkit.ops import double_q_learning_target, generalized_advantage_estimation


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
