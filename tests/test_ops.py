"""Hand-computed checks of the shared maths in rlkit.ops."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlkit.ops import (
    batched_index,
    clipped_adam,
    double_q_learning_target,
    epsilon_greedy,
    generalized_advantage_estimation,
    gradient_step,
    next_state_values,
    policy_from_logits,
    q_learning_target,
    target_network_update,
    td_loss,
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


def _td_loss_batch():
    """Two rows: Q(s, .) of the online net, actions, rewards, termination, next-state values."""
    return dict(q_tm1=jnp.array([[1.0, 3.0], [0.5, -1.0]]), a_tm1=jnp.array([1, 0]),
                r_t=jnp.array([1.0, 0.0]), terminated_t=jnp.array([False, True]),
                q_t_online=jnp.array([[0.0, 5.0], [3.0, 1.0]]),
                q_t_target=jnp.array([[10.0, 2.0], [7.0, 8.0]]), gamma=0.5)


def test_td_loss_double_max_huber_and_weighted_by_hand():
    batch = _td_loss_batch()
    # Double: row 0's target is 1 + .5 * Q_target(s', argmax online = 1) = 2, row 1 terminated:
    # 0. Q(s, a) = [3, 0.5], errors [1, 0.5], loss mean(0.5 * [1, 0.25]) = 0.3125.
    out = td_loss(**batch)
    np.testing.assert_allclose(out.target, [2.0, 0.0])
    np.testing.assert_allclose(out.q_taken, [3.0, 0.5])
    np.testing.assert_allclose(out.td_error, [1.0, 0.5])
    np.testing.assert_allclose(out.loss, 0.3125)
    # Max target: 1 + .5 * max(10, 2) = 6; errors [-3, 0.5]: mse mean(0.5 * [9, 0.25]) =
    # 2.3125; Huber (delta 1) mean([3 - 0.5, 0.125]) = 1.3125.
    out = td_loss(**batch, double=False)
    np.testing.assert_allclose(out.target, [6.0, 0.0])
    np.testing.assert_allclose(out.td_error, [-3.0, 0.5])
    np.testing.assert_allclose(out.loss, 2.3125)
    np.testing.assert_allclose(td_loss(**batch, double=False, loss="huber").loss, 1.3125)
    # Importance weights scale each row before the mean: mean([2 * 0.5, 0.5 * 0.125]) = 0.53125.
    np.testing.assert_allclose(td_loss(**batch, weight=jnp.array([2.0, 0.5])).loss, 0.53125)


def test_td_loss_gradient_flows_into_the_taken_q_only():
    batch = _td_loss_batch()

    def loss(q_tm1, q_t_online, q_t_target):
        return td_loss(**{**batch, "q_tm1": q_tm1, "q_t_online": q_t_online,
                          "q_t_target": q_t_target}).loss

    grad_q, grad_online, grad_target = jax.grad(loss, argnums=(0, 1, 2))(
        batch["q_tm1"], batch["q_t_online"], batch["q_t_target"])
    # d/dQ(s, a) of mean(0.5 * (Q - y)^2) is (Q - y) / B: [0.5, 0.25] at the taken actions.
    np.testing.assert_allclose(grad_q, [[0.0, 0.5], [0.25, 0.0]])
    # The target is stopped (unstopped, row 0 would send -0.5 * 0.5 = -0.25 into Q_target).
    np.testing.assert_array_equal(grad_online, 0.0)
    np.testing.assert_array_equal(grad_target, 0.0)


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


def test_batched_index_picks_each_rows_action():
    values = jnp.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0], [-1.0, -2.0, -3.0]])
    action = jnp.array([2, 0, 1, 1], jnp.int32)
    np.testing.assert_array_equal(batched_index(values, action), [3.0, 4.0, 8.0, -2.0])
    # Float-typed actions (a dataset's) are cast, not rounded into another column.
    np.testing.assert_array_equal(batched_index(values, action.astype(jnp.float32)),
                                  [3.0, 4.0, 8.0, -2.0])


def test_q_learning_target_takes_the_max_and_stops_only_at_termination():
    reward = jnp.array([1.0, 0.0, 2.0])
    terminated = jnp.array([False, True, False])
    q_next = jnp.array([[0.0, 5.0], [3.0, 1.0], [-2.0, -4.0]])
    # 1 + .5 * 5, terminated -> 0, 2 + .5 * (-2)
    np.testing.assert_allclose(q_learning_target(reward, terminated, q_next, 0.5),
                               [3.5, 0.0, 1.0])


def test_epsilon_greedy_is_greedy_at_zero_uniform_at_one_and_mixes_in_between():
    num = 20_000
    q = jnp.tile(jnp.array([[0.0, 3.0, 3.0, 1.0]]), (num, 1))  # ties go to the first maximum
    greedy = epsilon_greedy(jax.random.key(0), q, 0.0)
    assert greedy.dtype == jnp.int32 and greedy.shape == (num,)
    np.testing.assert_array_equal(greedy, 1)
    uniform = np.asarray(epsilon_greedy(jax.random.key(1), q, 1.0))
    np.testing.assert_allclose(np.bincount(uniform, minlength=4) / num, 0.25, atol=0.015)
    # epsilon = 0.4: action 1 with 0.6 + 0.4 / 4 = 0.7, each other action with 0.1.
    mixed = np.asarray(epsilon_greedy(jax.random.key(2), q, jnp.float32(0.4)))
    np.testing.assert_allclose(np.bincount(mixed, minlength=4) / num, [0.1, 0.7, 0.1, 0.1],
                               atol=0.015)


def test_policy_from_logits_greedy_and_sample():
    logits = jnp.array([[0.0, jnp.log(3.0)], [2.0, 1.0]])
    np.testing.assert_array_equal(policy_from_logits(logits, "greedy"), [[0, 1], [1, 0]])
    np.testing.assert_allclose(policy_from_logits(logits, "sample")[0], [0.25, 0.75], rtol=1e-6)


def test_clipped_adam_clips_the_global_norm_before_adam():
    params = {"w": jnp.zeros(2)}
    grads = {"w": jnp.array([3.0, 4.0])}  # norm 5
    clipped = clipped_adam(0.1, 1.0)
    updates, _ = clipped.update(grads, clipped.init(params), params)
    # Adam's first step is -lr * g / (|g| + eps) per coordinate, whatever the clipping...
    np.testing.assert_allclose(updates["w"], [-0.1, -0.1], rtol=1e-5)
    # ... so look at its moment: the clipped gradient is (3, 4) / 5.
    _, state = clipped.update(grads, clipped.init(params), params)
    np.testing.assert_allclose(state[1][0].mu["w"], 0.1 * np.array([0.6, 0.8]), rtol=1e-5)


@pytest.mark.parametrize("num_envs", [1, 3])
def test_next_state_values_bootstrap_every_truncation_of_an_env_that_truncates_every_3_steps(
        num_envs):
    """Issue 11 item 11: a time limit of 50 but truncation every 3 steps (the env's own).

    The old fixed-capacity gather kept num_envs * ceil(12 / 50) = num_envs truncations and gave
    the others V(reset obs); every truncated step must get V(final obs).
    """
    num_steps, time_limit = 12, 50
    weights = jnp.array([1.0, -2.0])

    def value_fn(obs):  # [K, 2] -> [K]
        return obs @ weights

    key_obs, key_next = jax.random.split(jax.random.key(0))
    obs = jax.random.normal(key_obs, (num_steps, num_envs, 2))
    truncated = jnp.broadcast_to((jnp.arange(num_steps) % 3 == 2)[:, None], (num_steps, num_envs))
    # Where an episode goes on, next_obs is the next obs; where it is truncated, a final
    # observation that is not the reset one (obs[t + 1] is the reset obs there).
    final = jax.random.normal(key_next, (num_steps, num_envs, 2)) + 10.0
    following = jnp.concatenate([obs[1:], final[-1:]])
    next_obs = jnp.where(truncated[..., None], final, following)
    value = value_fn(obs.reshape(-1, 2)).reshape(num_steps, num_envs)
    got = np.asarray(next_state_values(value_fn, value, next_obs, truncated, time_limit))
    expected = np.asarray(value_fn(next_obs.reshape(-1, 2)).reshape(num_steps, num_envs))
    assert int(truncated.sum()) == 4 * num_envs  # four truncations per env, capacity one
    mask = np.asarray(truncated)
    np.testing.assert_allclose(got[mask], expected[mask], rtol=1e-6)  # V(final obs) at each
    np.testing.assert_allclose(got, expected, rtol=1e-6)  # and V(obs_{t+1}) elsewhere
    # The reset observation's value differs at every truncated step (the test can fail).
    reset_value = np.asarray(jnp.concatenate([value[1:], value[-1:]]))
    assert np.all(np.abs(reset_value[mask] - expected[mask]) > 1.0)
    # The same under vmap over seeds (the drivers' batching of the while loop).
    batched = jax.vmap(lambda v, n, t: next_state_values(value_fn, v, n, t, time_limit))(
        jnp.stack([value, value]), jnp.stack([next_obs, next_obs]),
        jnp.stack([truncated, jnp.zeros_like(truncated)]))
    np.testing.assert_allclose(batched[0], expected, rtol=1e-6)


def test_gradient_step_is_one_optimiser_step_at_the_old_parameters():
    params = {"w": jnp.array([1.0, -2.0])}

    def loss_fn(params, scale):  # loss = scale * |w|^2, grad = 2 * scale * w
        return scale * jnp.sum(params["w"] ** 2), {"w0": params["w"][0]}

    sgd = clipped_adam(0.1, None)
    new, _, loss, aux, grad_norm = gradient_step(sgd, loss_fn, params, sgd.init(params), 0.5)
    np.testing.assert_allclose(loss, 0.5 * 5.0, rtol=1e-6)  # at the old parameters
    np.testing.assert_allclose(aux["w0"], 1.0)
    np.testing.assert_allclose(grad_norm, np.hypot(1.0, -2.0), rtol=1e-6)  # |(1, -2)|
    # Adam's first step moves each coordinate by lr against the gradient's sign.
    np.testing.assert_allclose(new["w"], [0.9, -1.9], rtol=1e-5)


def test_target_network_update_every_k_steps_with_tau():
    params, target = {"w": jnp.array([4.0])}, {"w": jnp.array([0.0])}
    # Not a multiple of `every`: unchanged.
    np.testing.assert_array_equal(target_network_update(params, target, jnp.int32(3), 0.25, 2)
                                  ["w"], [0.0])
    # A multiple: 0.25 * 4 + 0.75 * 0 = 1.
    np.testing.assert_allclose(target_network_update(params, target, jnp.int32(4), 0.25, 2)
                               ["w"], [1.0])
    # tau = 1: a hard copy.
    np.testing.assert_array_equal(target_network_update(params, target, jnp.int32(2), 1.0, 2)
                                  ["w"], [4.0])
    # A select, not a `lax.cond` (nested in the drivers' update cond, a cond cost DQN ~8%).
    for tau in (1.0, 0.25):
        jaxpr = jax.make_jaxpr(target_network_update, static_argnums=(3, 4))(
            params, target, jnp.int32(2), tau, 2)
        assert "cond" not in {eqn.primitive.name for eqn in jaxpr.eqns}, jaxpr


def test_clipped_adam_decays_weights_only_when_asked():
    """Zero gradients: Adam leaves the parameter at 1; AdamW moves it by -lr * wd * p."""
    import optax

    from rlkit.ops import clipped_adam

    params = {"w": jnp.ones((2,))}
    zero = {"w": jnp.zeros((2,))}
    for weight_decay, want in ((0.0, 1.0), (0.5, 1.0 - 0.1 * 0.5 * 1.0)):
        optimizer = clipped_adam(0.1, 1.0, weight_decay)
        updates, _ = optimizer.update(zero, optimizer.init(params), params)
        np.testing.assert_allclose(optax.apply_updates(params, updates)["w"], want, rtol=1e-6)
