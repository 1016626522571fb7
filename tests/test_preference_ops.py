"""Hand-computed checks of the preference maths in rlkit.ops: sequence log-probabilities, the
Direct Preference Optimisation losses (sigmoid with label smoothing, IPO) and the Bradley-Terry
loss (iterative_dpo.md 5.2 and 5.5.2-5.5.3)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rlkit.errors import RlkitError
from rlkit.ops import bradley_terry_loss, dpo_loss, sequence_log_probs, token_log_probs


def _dpo_of_z(z, beta, label_smoothing=0.0, loss_type="sigmoid"):
    """The DPO loss of log-ratio differences z [B]: the policy's chosen log-prob carries z."""
    zeros = jnp.zeros_like(z)
    return dpo_loss(z, zeros, zeros, zeros, beta=beta, label_smoothing=label_smoothing,
                    loss_type=loss_type).losses


@pytest.mark.parametrize("beta", [0.01, 0.1, 1.0, 7.5])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 0.3])
def test_dpo_loss_is_log_2_at_zero_log_ratio_difference(beta, label_smoothing):
    # z = 0 but with nonzero log-probs everywhere: only the difference of differences counts.
    losses = dpo_loss(jnp.array([-3.0, -10.0]), jnp.array([-5.0, -2.0]),
                      jnp.array([-1.0, -12.0]), jnp.array([-3.0, -4.0]), beta=beta,
                      label_smoothing=label_smoothing).losses
    np.testing.assert_allclose(losses, [math.log(2.0)] * 2, rtol=1e-6)


@pytest.mark.parametrize("beta", [0.1, 0.5, 2.0])
def test_dpo_gradient_at_zero_is_minus_0_4_beta_with_label_smoothing_0_1(beta):
    grad = jax.grad(lambda z: _dpo_of_z(z, beta, 0.1).sum())(jnp.zeros(1))
    np.testing.assert_allclose(grad, [-0.4 * beta], rtol=1e-6)


def test_dpo_gradient_matches_beta_times_sigmoid_minus_one_minus_eps_away_from_zero():
    z = jnp.array([-3.0, 0.7, 2.0])
    beta, eps = 0.5, 0.2
    grad = jax.grad(lambda z: _dpo_of_z(z, beta, eps).sum())(z)
    # beta * (sigmoid(beta z) - (1 - eps)); sigmoid(-1.5) = 0.18242552, sigmoid(0.35) =
    # 0.58661758, sigmoid(1) = 0.73105858.
    np.testing.assert_allclose(grad, [0.5 * (0.18242552 - 0.8), 0.5 * (0.58661758 - 0.8),
                                      0.5 * (0.73105858 - 0.8)], rtol=1e-5)


def test_dpo_sigmoid_loss_values_by_hand():
    # beta z = 1: -log sigmoid(1) = log(1 + e^-1) = 0.31326169; -log sigmoid(-1) = 1.31326169.
    np.testing.assert_allclose(_dpo_of_z(jnp.array([10.0]), 0.1), [0.31326169], rtol=1e-6)
    np.testing.assert_allclose(_dpo_of_z(jnp.array([10.0]), 0.1, 0.25),
                               [0.75 * 0.31326169 + 0.25 * 1.31326169], rtol=1e-6)
    np.testing.assert_allclose(_dpo_of_z(jnp.array([-10.0]), 0.1), [1.31326169], rtol=1e-6)


def test_dpo_implicit_rewards_are_beta_times_log_ratios_and_carry_no_gradient():
    result = dpo_loss(jnp.array([-2.0]), jnp.array([-3.0]), jnp.array([-2.5]),
                      jnp.array([-1.0]), beta=0.2)
    np.testing.assert_allclose(result.chosen_rewards, [0.2 * 0.5], rtol=1e-6)
    np.testing.assert_allclose(result.rejected_rewards, [0.2 * -2.0], rtol=1e-6)
    # z = 0.5 - (-2) = 2.5, beta z = 0.5: -log sigmoid(0.5) = 0.47407698.
    np.testing.assert_allclose(result.losses, [0.47407698], rtol=1e-6)
    grad = jax.grad(lambda p: dpo_loss(p, jnp.zeros(1), jnp.zeros(1), jnp.zeros(1),
                                       beta=0.2).chosen_rewards.sum())(jnp.ones(1))
    np.testing.assert_array_equal(grad, [0.0])


def test_ipo_loss_and_minimiser_by_hand():
    beta = 0.25  # z* = 1 / (2 beta) = 2
    np.testing.assert_allclose(_dpo_of_z(jnp.array([0.0, 2.0, 5.0]), beta, loss_type="ipo"),
                               [4.0, 0.0, 9.0], rtol=1e-6)
    grad = jax.grad(lambda z: _dpo_of_z(z, beta, loss_type="ipo").sum())
    np.testing.assert_allclose(grad(jnp.array([2.0, 0.0])), [0.0, -4.0], atol=1e-6)
    # Gradient descent on z alone reaches z* = 2 (and not the sigmoid loss's z = infinity).
    z = jax.lax.fori_loop(0, 100, lambda _, z: z - 0.1 * grad(z), jnp.array([-1.0]))
    np.testing.assert_allclose(z, [2.0], atol=1e-5)


def test_dpo_loss_rejects_bad_arguments_with_one_line_naming_the_field():
    zeros = jnp.zeros(2)
    with pytest.raises(RlkitError, match="loss_type: must be 'sigmoid' or 'ipo', got 'hinge'"):
        dpo_loss(zeros, zeros, zeros, zeros, beta=0.1, loss_type="hinge")
    with pytest.raises(RlkitError, match="label_smoothing: applies to loss_type 'sigmoid'"):
        dpo_loss(zeros, zeros, zeros, zeros, beta=0.1, label_smoothing=0.1, loss_type="ipo")
    with pytest.raises(RlkitError, match=r"label_smoothing: must be in \[0, 0.5\)"):
        dpo_loss(zeros, zeros, zeros, zeros, beta=0.1, label_smoothing=0.5)
    with pytest.raises(RlkitError, match="beta: must be > 0"):
        dpo_loss(zeros, zeros, zeros, zeros, beta=0.0)


def test_bradley_terry_loss_values_by_hand():
    losses = bradley_terry_loss(jnp.array([1.0, 2.0, 0.5, -1.0]),
                                jnp.array([1.0, 1.0, 2.5, 0.0]))
    # margins 0, 1, -2, -1: log 2, log(1 + e^-1), log(1 + e^2), log(1 + e).
    np.testing.assert_allclose(losses, [0.69314718, 0.31326169, 2.12692801, 1.31326169],
                               rtol=1e-6)


# A 2 x 4 batch over a vocabulary of 3. Row 0: prompt [0], completion [1, 2], padding [0].
# Row 1: prompt [2, 2], completion [0], padding [1].
_TOKENS = np.array([[0, 1, 2, 0], [2, 2, 0, 1]], np.int32)
_MASK = np.array([[False, True, True, False], [False, False, True, False]])
_LOG2 = math.log(2.0)
_LOGITS = np.array([
    # Position 0 predicts token 1 = id 1 from logits [0, log 2, 0]: p = 2/4 = 1/2.
    # Position 1 predicts token 2 = id 2 from logits [0, 0, 0]: p = 1/3.
    [[0.0, _LOG2, 0.0], [0.0, 0.0, 0.0], [5.0, -1.0, 3.0], [9.0, 9.0, 9.0]],
    # Position 1 predicts token 2 = id 0 from logits [log 3, 0, 0]: p = 3/5.
    [[1.0, 2.0, 3.0], [math.log(3.0), 0.0, 0.0], [4.0, 4.0, -4.0], [0.0, 1.0, 0.0]],
], np.float32)


def test_token_and_sequence_log_probs_of_a_hand_computed_2x4_batch():
    expected_tokens = np.array([[0.0, math.log(0.5), math.log(1 / 3), 0.0],
                                [0.0, 0.0, math.log(0.6), 0.0]], np.float32)
    np.testing.assert_allclose(token_log_probs(_LOGITS, _TOKENS, _MASK), expected_tokens,
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(sequence_log_probs(_LOGITS, _TOKENS, _MASK),
                               [math.log(0.5 / 3), math.log(0.6)], rtol=1e-6)
    # bf16 logits are read in float32: same sums up to bf16's rounding of the logits.
    result = sequence_log_probs(jnp.asarray(_LOGITS, jnp.bfloat16), _TOKENS, _MASK)
    assert result.dtype == jnp.float32
    np.testing.assert_allclose(result, [math.log(0.5 / 3), math.log(0.6)], rtol=1e-2)


def test_tokens_at_masked_positions_change_nothing_for_fixed_logits():
    other = _TOKENS.copy()
    other[0, 0], other[0, 3], other[1, 0], other[1, 3] = 2, 1, 1, 2  # every masked-out token
    np.testing.assert_array_equal(sequence_log_probs(_LOGITS, other, _MASK),
                                  sequence_log_probs(_LOGITS, _TOKENS, _MASK))
    # -inf logits at positions whose prediction is masked give no nan (a padding id that the
    # model never emits).
    logits = _LOGITS.copy()
    logits[0, 2:] = -np.inf
    logits[0, 2, 0] = 0.0
    np.testing.assert_allclose(sequence_log_probs(logits, _TOKENS, _MASK),
                               sequence_log_probs(_LOGITS, _TOKENS, _MASK), rtol=1e-6)


def _previous_token_model(table, tokens):
    """A causal stand-in: the logits at t are a table row of token t (they see tokens <= t)."""
    return table[tokens]  # [B, T, V]


def _prefix_sum_model(table, tokens):
    """A causal stand-in that sees every token <= t: logits at t are the prefix sum of rows."""
    return jnp.cumsum(table[tokens], axis=1)  # [B, T, V]


@pytest.mark.parametrize("model", [_previous_token_model, _prefix_sum_model])
def test_padding_after_the_completion_changes_no_log_prob_the_loss_uses(model):
    table = jax.random.normal(jax.random.key(0), (5, 5))
    # Left padding (id 4) before the prompt, right padding after the completion.
    tokens = np.array([[4, 4, 0, 1, 2, 3, 4], [0, 1, 1, 2, 3, 4, 4]], np.int32)
    mask = np.array([[0, 0, 0, 0, 1, 1, 0], [0, 0, 0, 1, 1, 0, 0]], bool)
    base = sequence_log_probs(model(table, tokens), tokens, mask)
    padded_differently = tokens.copy()
    padded_differently[0, 6], padded_differently[1, 5:] = 0, [2, 0]
    np.testing.assert_allclose(
        sequence_log_probs(model(table, padded_differently), padded_differently, mask), base,
        rtol=1e-6)
    # The prompt does condition the completion: its last token always changes the sum.
    prompt_changed = tokens.copy()
    prompt_changed[0, 3], prompt_changed[1, 2] = 3, 0
    assert np.all(np.abs(sequence_log_probs(model(table, prompt_changed), prompt_changed, mask)
                         - base) > 1e-3)


def test_left_padding_before_the_prompt_changes_nothing_for_a_previous_token_model():
    table = jax.random.normal(jax.random.key(1), (5, 5))
    tokens = np.array([[4, 4, 0, 1, 2, 3]], np.int32)
    mask = np.array([[0, 0, 0, 0, 1, 1]], bool)
    other = tokens.copy()
    other[0, :2] = [1, 3]  # the padding and the first prompt token, not the last prompt token
    np.testing.assert_allclose(
        sequence_log_probs(_previous_token_model(table, other), other, mask),
        sequence_log_probs(_previous_token_model(table, tokens), tokens, mask), rtol=1e-6)


def test_bradley_terry_regression_recovers_a_linear_rewards_direction():
    """iterative_dpo.md 5.5.3: logistic regression on pairs labelled by Bradley-Terry on a
    linear reward r(y) = <w, phi(y)> finds w's direction (cosine > 0.99)."""
    dim, num_pairs = 8, 20_000
    key_w, key_a, key_b, key_label = jax.random.split(jax.random.key(3), 4)
    w_true = 2.0 * jax.random.normal(key_w, (dim,))
    features_a = jax.random.normal(key_a, (num_pairs, dim))
    features_b = jax.random.normal(key_b, (num_pairs, dim))
    a_wins = jax.random.bernoulli(key_label, jax.nn.sigmoid((features_a - features_b) @ w_true))
    chosen = jnp.where(a_wins[:, None], features_a, features_b)
    rejected = jnp.where(a_wins[:, None], features_b, features_a)

    w = _fit_bradley_terry(chosen, rejected)
    assert _cosine(w, w_true) > 0.99, _cosine(w, w_true)
    # Labels shuffled across pairs carry no information: the same fit then fails the bar.
    shuffled = a_wins[jax.random.permutation(jax.random.key(4), num_pairs)]
    w_shuffled = _fit_bradley_terry(jnp.where(shuffled[:, None], features_a, features_b),
                                    jnp.where(shuffled[:, None], features_b, features_a))
    assert _cosine(w_shuffled, w_true) < 0.9


def _cosine(u, v):
    return float(u @ v / (jnp.linalg.norm(u) * jnp.linalg.norm(v)))


def _fit_bradley_terry(chosen, rejected, steps=500):
    """Adam on the mean Bradley-Terry loss of a linear reward r(y) = <w, phi(y)>."""

    def loss(w):
        return bradley_terry_loss(chosen @ w, rejected @ w).mean()

    optimizer = optax.adam(0.05)

    def step(carry, _):
        w, opt_state = carry
        updates, opt_state = optimizer.update(jax.grad(loss)(w), opt_state)
        return (optax.apply_updates(w, updates), opt_state), None

    w0 = jnp.zeros(chosen.shape[-1])
    (w, _), _ = jax.lax.scan(step, (w0, optimizer.init(w0)), length=steps)
    return w


def test_position_zero_is_never_counted_and_the_gradient_reaches_only_predicting_positions():
    mask = _MASK.copy()
    mask[:, 0] = True  # nothing predicts token 0: the sums do not change
    np.testing.assert_array_equal(sequence_log_probs(_LOGITS, _TOKENS, mask),
                                  sequence_log_probs(_LOGITS, _TOKENS, _MASK))
    grad = jax.grad(lambda logits: sequence_log_probs(logits, _TOKENS, _MASK).sum())(_LOGITS)
    # Row 0 counts tokens 1 and 2 (predicted at positions 0 and 1), row 1 token 2 (position 1):
    # every other position's logits get exactly zero gradient; a counted position's gradient is
    # onehot(token) - softmax(logits), e.g. row 1 position 1: [1 - 3/5, -1/5, -1/5].
    used = np.abs(np.asarray(grad)).sum(-1) > 0
    np.testing.assert_array_equal(used, [[True, True, False, False], [False, True, False, False]])
    np.testing.assert_allclose(grad[1, 1], [0.4, -0.2, -0.2], rtol=1e-5)


def test_win_rate_counts_wins_and_half_ties_by_hand():
    from rlkit.loops.preference import win_rate_against

    rewards = jnp.array([1.0, 0.0, 0.5, 0.2])
    reference = jnp.array([0.0, 1.0, 0.5, 0.1])  # win, loss, tie, win: (1 + 0 + 0.5 + 1) / 4
    assert float(win_rate_against(rewards, reference)) == 0.625
    assert float(win_rate_against(reference, rewards)) == 0.375  # the other side's share
    assert float(win_rate_against(rewards, rewards)) == 0.5
