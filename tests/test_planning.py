"""rlkit.planning against closed forms, a float64 numpy reference, and Monte Carlo in the env.

Each test jits one function computing everything it needs from a model, as a driver would: called
eagerly, every small op would compile on its own, which costs more than the whole test.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs import tabular, toy
from rlkit import planning
from rlkit.errors import RlkitError


def _np(model):
    return jax.tree.map(
        lambda x: np.asarray(x, np.float64) if x.dtype != bool else np.asarray(x), model
    )


def reference_finite(model, discount=1.0, policy=None, horizon=None):
    """Backward induction in float64 with Python loops: (q [H, S, A], v [H, S], J)."""
    m = _np(model)
    num_steps = int(m.horizon) if horizon is None else horizon
    continuing = m.transitions * (~m.terminal)[None, None, :]
    v_next = np.zeros(m.rewards.shape[0])
    qs, vs = [], []
    for h in reversed(range(num_steps)):
        q = m.rewards + discount * np.einsum("sat,t->sa", continuing, v_next)
        if policy is None:
            v_next = q.max(1)
        else:
            pi = policy if policy.ndim == 2 else policy[h]
            v_next = (pi * q).sum(1)
        qs.append(q)
        vs.append(v_next)
    return np.stack(qs[::-1]), np.stack(vs[::-1]), m.initial @ vs[-1]


def reference_discounted(model, discount, sweeps=3000):
    m = _np(model)
    continuing = m.transitions * (~m.terminal)[None, None, :]
    v = np.zeros(m.rewards.shape[0])
    for _ in range(sweeps):
        v = (m.rewards + discount * np.einsum("sat,t->sa", continuing, v)).max(1)
    return v, m.initial @ v


def random_policy(seed, shape):
    logits = np.random.default_rng(seed).normal(size=shape)
    return np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)


# --------------------------------------------------------------------------------------------
# Optimal values against closed forms
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "length, horizon, left_reward, expected",
    [
        (8, 16, 0.0, 16 - 8 + 1),  # walk right 7 steps, then push right 9 times
        (3, 3, 0.0, 1.0),  # just enough time to collect once
        (8, 16, 0.7, 16 * 0.7),  # the left end pays more than the walk: J* = H * left_reward
    ],
)
def test_chain_optimal_return_closed_form(length, horizon, left_reward, expected):
    model = toy.chain_model(toy.ChainConfig(length, horizon, left_reward))
    gamma = 0.9
    solution, discounted = jax.jit(
        lambda model: (
            planning.value_iteration(model, horizon=horizon),
            planning.value_iteration(model, gamma, horizon=horizon).optimal_return,
        )
    )(model)
    assert float(solution.optimal_return) == pytest.approx(expected, rel=1e-6)
    # max(H - n + 1, H * left_reward) and the optimal first action says which.
    first_action = int(solution.policy[0, 0].argmax())
    assert first_action == (toy.LEFT if left_reward * horizon > horizon - length + 1 else toy.RIGHT)
    # Discounted finite horizon: sum_{t = n-1}^{H-1} gamma^t for the walk.
    if left_reward == 0.0:
        walk = sum(gamma**t for t in range(length - 1, horizon))
        assert float(discounted) == pytest.approx(walk, rel=1e-5)


def test_combination_lock_optimal_return_is_one_and_policy_is_the_code():
    config = toy.CombinationLockConfig(horizon=5, num_actions=4, code_seed=7, distractor_reward=0.5)
    env = toy.make_combination_lock(config)
    model = env.model(env.default_params)
    solution, uniform = jax.jit(
        lambda model: (
            planning.value_iteration(model, horizon=5),
            planning.expected_return(model, planning.uniform_policy(model), horizon=5),
        )
    )(model)
    assert float(solution.optimal_return) == pytest.approx(1.0)
    code = toy.combination_lock_code(7, 5, 4)
    good_states = 2 * np.arange(5)
    chosen = np.asarray(solution.policy)[np.arange(5), good_states].argmax(-1)
    np.testing.assert_array_equal(chosen, code)
    # Uniform: open with prob 4^-5; the distractor pays 0.5 whenever the agent first errs.
    opened = 0.25**5
    assert float(uniform) == pytest.approx(opened + 0.5 * (1 - opened), rel=1e-5)


def test_optimal_values_vmap_over_lock_codes_and_jit():
    codes = jnp.asarray(np.stack([toy.combination_lock_code(seed, 4, 3) for seed in range(4)]))

    def solve(code):
        model = toy.combination_lock_model(code, 3)
        solution = planning.value_iteration(model, horizon=4)
        uniform = planning.expected_return(model, planning.uniform_policy(model), horizon=4)
        return solution.optimal_return, solution.policy, uniform

    optimal, policy, uniform = jax.jit(jax.vmap(solve))(codes)
    np.testing.assert_allclose(np.asarray(optimal), 1.0)
    np.testing.assert_allclose(np.asarray(uniform), 3.0**-4, rtol=1e-5)
    chosen = np.asarray(policy)[:, np.arange(4), 2 * np.arange(4)].argmax(-1)  # [seeds, H]
    np.testing.assert_array_equal(chosen, np.asarray(codes))
    with pytest.raises(RlkitError, match="^horizon: "):  # traced horizon and none given
        jax.jit(planning.value_iteration)(toy.combination_lock_model(codes[0], 3))


def test_deepsea_optimal_return_is_one_minus_move_cost():
    env = toy.make_deepsea(toy.DeepSeaConfig(size=10, mapping_seed=1))
    model = env.model(env.default_params)
    optimal = jax.jit(lambda m: planning.value_iteration(m, horizon=10).optimal_return)(model)
    assert float(optimal) == pytest.approx(0.99, abs=1e-5)
    # bsuite's stochastic variant: always-right returns (1 - 1/N)^(N - 1) - 0.01 exactly, and
    # the optimum is at least that.
    size = 6
    env = toy.make_deepsea(toy.DeepSeaConfig(size=size, deterministic=False, mapping_seed=2))
    model = env.model(env.default_params)
    mapping = toy.deepsea_action_mapping(2, size)
    always_right = np.zeros((size * size + 1, 2))
    always_right[np.arange(size * size), mapping.reshape(-1)] = 1.0
    always_right[-1] = 0.5
    expected = (1 - 1 / size) ** (size - 1) - 0.01
    value, optimal = jax.jit(
        lambda m, pi: (
            planning.expected_return(m, pi, horizon=size),
            planning.value_iteration(m, horizon=size).optimal_return,
        )
    )(model, jnp.asarray(always_right, jnp.float32))
    assert float(value) == pytest.approx(expected, abs=1e-5)
    assert float(optimal) >= expected - 1e-6


# --------------------------------------------------------------------------------------------
# Against the float64 reference
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["osband", "strehl-littman"])
def test_riverswim_against_numpy_reference(variant):
    model = toy.riverswim_model(toy.RiverSwimConfig(variant=variant))
    solutions, discounted = jax.jit(
        lambda m: (
            [planning.value_iteration(m, discount, horizon=20) for discount in (1.0, 0.95)],
            planning.discounted_value_iteration(m, 0.9),
        )
    )(model)
    for discount, solution in zip((1.0, 0.95), solutions, strict=True):
        q_ref, v_ref, j_ref = reference_finite(model, discount)
        np.testing.assert_allclose(np.asarray(solution.q), q_ref, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(solution.v), v_ref, rtol=1e-5, atol=1e-6)
        assert float(solution.optimal_return) == pytest.approx(j_ref, rel=1e-5)
    v_ref, j_ref = reference_discounted(model, 0.9)
    np.testing.assert_allclose(np.asarray(discounted.v), v_ref, rtol=1e-4)
    assert float(discounted.optimal_return) == pytest.approx(j_ref, rel=1e-4)
    assert int(discounted.iterations) > 10  # it did iterate


def _terminal_mdp():
    return tabular.random_model(
        3, num_states=7, num_actions=3, horizon=6, concentration=0.7, num_terminal=2
    )


def test_random_mdp_with_terminal_states_against_numpy_reference():
    model = _terminal_mdp()
    stationary = random_policy(0, (7, 3))
    time_dependent = random_policy(1, (6, 7, 3))

    @jax.jit
    def solve(model, stationary, time_dependent):
        solution = planning.value_iteration(model, 0.9, horizon=6)
        return dict(
            solution=solution,
            stationary=planning.policy_evaluation(model, stationary, 0.9, horizon=6),
            time_dependent=planning.policy_evaluation(model, time_dependent, 0.9, horizon=6),
            greedy=planning.expected_return(model, solution.policy, 0.9, horizon=6),
            gap_optimal=planning.suboptimality(model, solution.policy, 0.9, horizon=6),
            gap_stationary=planning.suboptimality(model, stationary, 0.9, horizon=6),
            discounted=planning.discounted_value_iteration(model, 0.8),
            discounted_stationary=planning.discounted_policy_evaluation(model, stationary, 0.8),
        )

    out = solve(
        model, jnp.asarray(stationary, jnp.float32), jnp.asarray(time_dependent, jnp.float32)
    )
    q_ref, v_ref, j_ref = reference_finite(model, 0.9)
    solution = out["solution"]
    np.testing.assert_allclose(np.asarray(solution.q), q_ref, rtol=1e-5, atol=1e-6)
    assert float(solution.optimal_return) == pytest.approx(j_ref, rel=1e-5)
    # Stationary and time-dependent policies, and the greedy policy achieving J*.
    for name, policy in (("stationary", stationary), ("time_dependent", time_dependent)):
        q_ref, v_ref, j_ref = reference_finite(model, 0.9, policy)
        values = out[name]
        np.testing.assert_allclose(np.asarray(values.q), q_ref, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(values.v), v_ref, rtol=1e-5, atol=1e-6)
        assert float(values.expected_return) == pytest.approx(j_ref, rel=1e-5)
    assert float(out["greedy"]) == pytest.approx(float(solution.optimal_return), rel=1e-6)
    assert float(out["gap_optimal"]) == pytest.approx(0, abs=1e-5)
    assert float(out["gap_stationary"]) > 0.01
    # Discounted infinite horizon: VI and the exact linear solve of the reference.
    v_ref, j_ref = reference_discounted(model, 0.8)
    np.testing.assert_allclose(np.asarray(out["discounted"].v), v_ref, rtol=1e-5, atol=1e-6)
    m = _np(model)
    continuing = m.transitions * (~m.terminal)[None, None, :]
    kernel = np.einsum("sa,sat->st", stationary, continuing)
    v_pi = np.linalg.solve(np.eye(7) - 0.8 * kernel, (stationary * m.rewards).sum(1))
    values = out["discounted_stationary"]
    np.testing.assert_allclose(np.asarray(values.v), v_pi, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(values.v)[m.terminal], 0.0)


# --------------------------------------------------------------------------------------------
# Occupancy measures
# --------------------------------------------------------------------------------------------


def test_occupancy_sums_and_reproduces_the_return():
    model = _terminal_mdp()
    m = _np(model)
    policy = random_policy(2, (7, 3))
    gamma = 0.9
    occ, averaged = jax.jit(
        lambda m, pi: (
            (occ := planning.occupancy(m, pi, horizon=6)),
            planning.average_occupancy(m, occ.state_action, gamma),
        )
    )(model, jnp.asarray(policy, jnp.float32))
    state, state_action = np.asarray(occ.state, np.float64), np.asarray(occ.state_action)
    assert state.shape == (6, 7) and state_action.shape == (6, 7, 3)
    np.testing.assert_allclose(state_action.sum(-1), state, atol=1e-6)
    # Step h's mass = 1 - the mass that entered a terminal state before step h.
    entered_terminal = np.einsum("hsa,sat->h", state_action, m.transitions[:, :, m.terminal])
    alive = 1.0 - np.concatenate([[0.0], np.cumsum(entered_terminal)[:-1]])
    np.testing.assert_allclose(state.sum(-1), alive, atol=1e-5)
    assert alive[-1] < 0.9  # the check above has teeth: mass does leave
    assert (state[:, m.terminal] == 0).all()
    # sum_h gamma^h <d_h, R> = J(pi).
    weights = gamma ** np.arange(6)
    j = np.einsum("h,hsa,sa->", weights, state_action, m.rewards)
    assert j == pytest.approx(reference_finite(model, gamma, policy)[2], rel=1e-5)
    # The averaged version is the weighted mean over steps.
    np.testing.assert_allclose(
        np.asarray(averaged),
        np.einsum("h,hsa->sa", weights, state_action) / weights.sum(),
        rtol=1e-5,
    )
    # Without terminal states every step sums to exactly one.
    river = toy.riverswim_model(toy.RiverSwimConfig())
    occ, averaged = jax.jit(
        lambda m: (
            (occ := planning.occupancy(m, planning.uniform_policy(m), horizon=20)),
            planning.average_occupancy(m, occ.state),
        )
    )(river)
    np.testing.assert_allclose(np.asarray(occ.state).sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(averaged).sum(), 1.0, atol=1e-5)


def test_discounted_occupancy():
    model = toy.gridworld_model(toy.GridWorldConfig(rows=3, cols=3, slip=0.2, horizon=10))
    policy = jnp.asarray(random_policy(3, (9, 4)), jnp.float32)
    gamma = 0.9
    river = toy.riverswim_model(toy.RiverSwimConfig())

    @jax.jit
    def compute(model, policy, river):
        # The truncated series (1 - gamma) sum_t gamma^t d_t, from the finite-horizon version.
        long = model.replace(horizon=jnp.asarray(400, jnp.int32))
        return (
            planning.discounted_occupancy(model, policy, gamma),
            planning.discounted_policy_evaluation(model, policy, gamma),
            planning.occupancy(long, policy, horizon=400).state,
            planning.discounted_occupancy(river, planning.uniform_policy(river), 0.95),
        )

    occ, values, per_step, river_occ = compute(model, policy, river)
    j_from_occupancy = float(jnp.sum(occ.state_action * model.rewards)) / (1 - gamma)
    assert j_from_occupancy == pytest.approx(float(values.expected_return), rel=1e-4)
    series = (1 - gamma) * np.einsum("h,hs->s", gamma ** np.arange(400), np.asarray(per_step))
    np.testing.assert_allclose(np.asarray(occ.state), series, atol=1e-5)
    assert float(occ.state.sum()) < 1.0  # the goal terminates episodes
    assert float(river_occ.state.sum()) == pytest.approx(1.0, abs=1e-5)  # nothing terminates


# --------------------------------------------------------------------------------------------
# Against Monte Carlo in the environment
# --------------------------------------------------------------------------------------------


def test_uniform_policy_value_and_occupancy_match_monte_carlo():
    env = tabular.make(
        tabular.Config(
            num_states=7, num_actions=3, horizon=6, seed=3, concentration=0.7, num_terminal=2
        )
    )
    params = env.default_params
    model = env.model(params)
    horizon, num_states = env.spec.max_episode_steps, 7

    def episode(key):
        reset_key, key = jax.random.split(key)
        _, state = env.reset(reset_key, params)

        def body(carry, key):
            state, running, total = carry
            action_key, step_key = jax.random.split(key)
            visit = running * jax.nn.one_hot(state.index, num_states)
            action = jax.random.randint(action_key, (), 0, 3)
            _, state, reward, terminated, truncated, _ = env.step(step_key, state, action, params)
            total = total + running * reward
            running = running * (1.0 - jnp.logical_or(terminated, truncated))
            return (state, running, total), visit

        carry = (state, jnp.ones(()), jnp.zeros(()))
        (_, _, total), visits = jax.lax.scan(body, carry, jax.random.split(key, horizon))
        return total, visits

    # One compiled episode called per index: a vmapped PRNG loop compiles several times slower,
    # and iterating over a key array would index it op by op.
    base_key = jax.random.key(0)
    run = jax.jit(lambda i: episode(jax.random.fold_in(base_key, i)))
    results = jax.device_get([run(i) for i in range(3000)])
    returns = np.array([r[0] for r in results])
    visits = np.mean([r[1] for r in results], axis=0)  # [H, S]
    expected, occ = jax.jit(
        lambda m: (
            planning.expected_return(m, planning.uniform_policy(m), horizon=horizon),
            planning.occupancy(m, planning.uniform_policy(m), horizon=horizon).state,
        )
    )(model)
    standard_error = returns.std() / np.sqrt(returns.size)
    assert abs(returns.mean() - float(expected)) < 4 * standard_error
    occ = np.asarray(occ)
    np.testing.assert_allclose(visits, occ, atol=4 * np.sqrt(0.25 / returns.size))


# --------------------------------------------------------------------------------------------
# Agents' policies and input validation
# --------------------------------------------------------------------------------------------


def test_policy_table_from_an_agent_policy_function():
    model = toy.chain_model(toy.ChainConfig(length=4, horizon=6))
    table = np.asarray(random_policy(4, (4, 2)), np.float32)
    calls = []

    def policy_fn(agent_state, obs):  # a tabular "agent": one row per one-hot observation
        calls.append(obs.shape)
        return obs @ agent_state

    result = planning.policy_table(policy_fn, jnp.asarray(table), model)
    np.testing.assert_allclose(np.asarray(result), table)
    assert calls == [(4, 4)]  # one batched call over all observations
    always_right = jnp.asarray(np.tile([0.0, 1.0], (4, 1)), jnp.float32)
    gap = jax.jit(lambda m, pi: planning.suboptimality(m, pi, horizon=6))(model, always_right)
    assert float(gap) == pytest.approx(0.0)
    with pytest.raises(RlkitError, match="policy_fn"):
        planning.policy_table(lambda state, obs: obs, None, model)


def test_bad_inputs_are_named():
    model = toy.chain_model(toy.ChainConfig(length=4, horizon=6))
    with pytest.raises(RlkitError, match="^policy: "):
        planning.policy_evaluation(model, jnp.ones((3, 2)) / 2)
    with pytest.raises(RlkitError, match="^discount: "):
        planning.discounted_value_iteration(model, 1.0)
    with pytest.raises(RlkitError, match="^horizon: "):
        planning.value_iteration(model, horizon=0)
