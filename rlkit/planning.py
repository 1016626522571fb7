"""Exact dynamic programming on tabular MDPs: optimal values, policy values, occupancy measures.

Everything takes a `rlkit.types.TabularModel` (what `env.model(params)` returns) and is pure JAX:
jittable, and vmappable over models (one lock code per seed) and over policies. Loops over the
horizon are `lax.scan`s; nothing loops over states in Python.

Episodic semantics match the environments exactly: an episode starts in s_0 ~ `initial`, takes
at most H = `model.horizon` actions, and stops as soon as it *enters* a terminal state. So a
terminal next state contributes no future value, and the state occupancy d_h counts only
episodes still running at step h. With h the number of actions taken so far (0-based):

    Q_h(s, a) = R(s, a) + gamma * sum_s' P(s' | s, a) (1 - terminal(s')) V_{h+1}(s'),  V_H = 0,
    J(pi)     = sum_s initial(s) V^pi_0(s) = sum_h gamma^h sum_{s,a} d^pi_h(s, a) R(s, a).

The finite-horizon functions need the number of steps as a static Python int: by default it is
read from `model.horizon`, which works outside `jit` / `vmap`. Inside them pass `horizon=`
(e.g. `env.spec.max_episode_steps`); `model.horizon` may then even be traced, since steps at or
past it are masked out (zero value, zero occupancy).

The infinite-horizon discounted functions (`discounted_*`) ignore `model.horizon` and solve the
Bellman equations with gamma < 1 (terminal states still end reward).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rlkit.errors import RlkitError
from rlkit.types import Array, PyTree, TabularModel


class OptimalSolution(NamedTuple):
    """Optimal values and a greedy policy of a finite-horizon MDP.

    Attributes:
        q: [H, S, A] optimal action values Q*_h.
        v: [H, S] optimal state values V*_h.
        policy: [H, S, A] a deterministic optimal policy (one-hot; ties go to the lowest action).
        optimal_return: [] J* = sum_s initial(s) V*_0(s).
    """

    q: Array
    v: Array
    policy: Array
    optimal_return: Array


class PolicyValues(NamedTuple):
    """Values of a given policy.

    Attributes:
        q: [H, S, A] (finite horizon) or [S, A] (discounted) action values Q^pi.
        v: [H, S] or [S] state values V^pi.
        expected_return: [] J(pi) = sum_s initial(s) V^pi_0(s).
    """

    q: Array
    v: Array
    expected_return: Array


class Occupancy(NamedTuple):
    """Occupancy measures of a policy.

    Finite horizon: state[h, s] = P(s_h = s, episode still running at step h) and
    state_action[h, s, a] = state[h, s] * pi_h(a | s). Each step sums to the probability that
    the episode is still running (1 minus the mass that has entered terminal states).
    Discounted: (1 - gamma) sum_t gamma^t of the same, [S] and [S, A].

    Attributes:
        state: [H, S] (finite horizon) or [S] (discounted).
        state_action: [H, S, A] or [S, A].
    """

    state: Array
    state_action: Array


class DiscountedSolution(NamedTuple):
    """Optimal values of the infinite-horizon discounted MDP.

    Attributes:
        q: [S, A] Q*.
        v: [S] V*.
        policy: [S, A] a deterministic optimal policy (one-hot).
        optimal_return: [] sum_s initial(s) V*(s).
        iterations: [] int32 value-iteration sweeps before the greedy policy was evaluated.
    """

    q: Array
    v: Array
    policy: Array
    optimal_return: Array
    iterations: Array


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _static_horizon(model: TabularModel, horizon: int | None) -> int:
    if horizon is not None:
        if int(horizon) < 1:
            raise RlkitError(f"horizon: must be >= 1, got {horizon}")
        return int(horizon)
    try:
        return int(model.horizon)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerIntegerConversionError, TypeError):
        raise RlkitError(
            "horizon: model.horizon is traced (inside jit or vmap), so the number of planning "
            "steps is unknown at trace time; pass horizon=<int> explicitly, e.g. "
            "horizon=env.spec.max_episode_steps"
        ) from None


def _continuing_transitions(model: TabularModel) -> Array:
    """[S, A, S] P(s' | s, a) * (1 - terminal(s')): mass that keeps the episode running."""
    alive = 1.0 - model.terminal.astype(model.transitions.dtype)
    return model.transitions * alive[None, None, :]


def _active_steps(model: TabularModel, num_steps: int) -> Array:
    """[H] float, 1 for steps h < model.horizon (masks steps past a traced or shorter horizon)."""
    return (jnp.arange(num_steps) < model.horizon).astype(model.rewards.dtype)


def _time_dependent(policy: Array, num_steps: int, num_states: int, num_actions: int) -> Array:
    """[H, S, A] from a stationary [S, A] or time-dependent [H, S, A] policy table."""
    if policy.shape == (num_states, num_actions):
        return jnp.broadcast_to(policy, (num_steps, num_states, num_actions))
    if policy.shape == (num_steps, num_states, num_actions):
        return policy
    raise RlkitError(
        f"policy: expected a table of shape [S, A] = {(num_states, num_actions)} or [H, S, A] = "
        f"{(num_steps, num_states, num_actions)}, got {policy.shape}"
    )


def _policy_inputs(model: TabularModel, policy: Array,
                   horizon: int | None) -> tuple[Array, Array, Array]:
    """What finite-horizon recursions over a policy need: the policy as [H, S, A]
    (`_time_dependent`), the continuing transitions [S, A, S] and the active steps [H]."""
    num_steps = _static_horizon(model, horizon)
    policy = _time_dependent(policy, num_steps, model.num_states, model.num_actions)
    return policy, _continuing_transitions(model), _active_steps(model, num_steps)


def _stationary(policy: Array, model: TabularModel) -> Array:
    if policy.shape != (model.num_states, model.num_actions):
        raise RlkitError(
            f"policy: expected a stationary table of shape [S, A] = "
            f"{(model.num_states, model.num_actions)}, got {policy.shape}"
        )
    return policy


def greedy_policy(q: Array) -> Array:
    """One-hot greedy policy [..., S, A] from action values [..., S, A] (ties: lowest index)."""
    return jax.nn.one_hot(jnp.argmax(q, axis=-1), q.shape[-1], dtype=q.dtype)


def uniform_policy(model: TabularModel) -> Array:
    """The uniform random policy, [S, A]."""
    return jnp.full((model.num_states, model.num_actions), 1.0 / model.num_actions)


# --------------------------------------------------------------------------------------------
# Finite horizon
# --------------------------------------------------------------------------------------------


def value_iteration(
    model: TabularModel, discount: float = 1.0, horizon: int | None = None
) -> OptimalSolution:
    """Optimal time-dependent values by backward induction over the horizon.

    Args:
        model: the MDP.
        discount: gamma in [0, 1] (1: the undiscounted episodic return).
        horizon: number of steps H (static); default `model.horizon` (see the module docstring).

    Returns:
        `OptimalSolution` with q [H, S, A], v [H, S], policy [H, S, A], optimal_return [].
    """
    num_steps = _static_horizon(model, horizon)
    transitions = _continuing_transitions(model)
    active = _active_steps(model, num_steps)

    def backward(v_next, active_h):
        q = active_h * (model.rewards + discount * transitions @ v_next)  # [S, A]
        v = q.max(axis=-1)
        return v, (q, v)

    v_end = jnp.zeros(model.num_states, model.rewards.dtype)
    _, (q, v) = jax.lax.scan(backward, v_end, active, reverse=True)
    return OptimalSolution(q, v, greedy_policy(q), model.initial @ v[0])


def policy_evaluation(
    model: TabularModel, policy: Array, discount: float = 1.0, horizon: int | None = None
) -> PolicyValues:
    """Exact values of a stationary [S, A] or time-dependent [H, S, A] policy.

    Args:
        model: the MDP.
        policy: pi(a | s) as [S, A], or pi_h(a | s) as [H, S, A]; rows sum to one.
        discount: gamma in [0, 1].
        horizon: number of steps H (static); default `model.horizon`.

    Returns:
        `PolicyValues` with q [H, S, A], v [H, S], expected_return [] J(pi).
    """
    policy, transitions, active = _policy_inputs(model, policy, horizon)

    def backward(v_next, inputs):
        active_h, policy_h = inputs
        q = active_h * (model.rewards + discount * transitions @ v_next)
        v = jnp.sum(policy_h * q, axis=-1)
        return v, (q, v)

    v_end = jnp.zeros(model.num_states, model.rewards.dtype)
    _, (q, v) = jax.lax.scan(backward, v_end, (active, policy), reverse=True)
    return PolicyValues(q, v, model.initial @ v[0])


def occupancy(model: TabularModel, policy: Array, horizon: int | None = None) -> Occupancy:
    """Per-step occupancy measures d^pi_h(s) and d^pi_h(s, a) by forward propagation.

    Args:
        model: the MDP.
        policy: [S, A] or [H, S, A].
        horizon: number of steps H (static); default `model.horizon`.

    Returns:
        `Occupancy` with state [H, S] and state_action [H, S, A]. Step h sums to the probability
        that the episode is still running after h actions (exactly 1 without terminal states).
    """
    policy, transitions, active = _policy_inputs(model, policy, horizon)

    def forward(state_h, inputs):
        active_h, policy_h = inputs
        state_h = active_h * state_h
        state_action_h = state_h[:, None] * policy_h
        state_next = jnp.einsum("sa,sat->t", state_action_h, transitions)
        return state_next, (state_h, state_action_h)

    _, (state, state_action) = jax.lax.scan(forward, model.initial, (active, policy))
    return Occupancy(state, state_action)


def average_occupancy(model: TabularModel, per_step: Array, discount: float = 1.0) -> Array:
    """Average a per-step occupancy over the horizon with weights gamma^h.

    sum_h gamma^h d_h / sum_h gamma^h over the steps h < model.horizon: with discount 1 the
    uniform average (1/H) sum_h d_h, the distribution a replay buffer of complete episodes
    samples from. It sums to less than one when episodes can terminate early, by the missing
    (terminated) mass.

    Args:
        model: the MDP (for its horizon).
        per_step: [H, S] or [H, S, A] from `occupancy`.
        discount: gamma in [0, 1].

    Returns:
        [S] or [S, A].
    """
    num_steps = per_step.shape[0]
    weights = _active_steps(model, num_steps) * discount ** jnp.arange(num_steps)
    return jnp.tensordot(weights, per_step, axes=1) / weights.sum()


def expected_return(
    model: TabularModel, policy: Array, discount: float = 1.0, horizon: int | None = None
) -> Array:
    """J(pi), the expected (discounted) return of a [S, A] or [H, S, A] policy; a scalar."""
    return policy_evaluation(model, policy, discount, horizon).expected_return


def suboptimality(
    model: TabularModel, policy: Array, discount: float = 1.0, horizon: int | None = None
) -> Array:
    """J* - J(pi) >= 0 for a [S, A] or [H, S, A] policy; a scalar."""
    optimal = value_iteration(model, discount, horizon).optimal_return
    return optimal - expected_return(model, policy, discount, horizon)


# --------------------------------------------------------------------------------------------
# Infinite horizon, discounted
# --------------------------------------------------------------------------------------------


def _check_discount(discount: float) -> None:
    if isinstance(discount, int | float) and not 0.0 <= discount < 1.0:
        raise RlkitError(
            f"discount: the infinite-horizon functions need 0 <= discount < 1, got {discount}; "
            "for undiscounted episodic values use value_iteration / policy_evaluation"
        )


def discounted_policy_evaluation(
    model: TabularModel, policy: Array, discount: float
) -> PolicyValues:
    """Exact values of a stationary policy in the discounted MDP, by one linear solve.

    V^pi = (I - gamma P_pi)^-1 r_pi, with P_pi the policy's state-to-state kernel restricted to
    running episodes (entering a terminal state ends reward).

    Args:
        model: the MDP (`model.horizon` is ignored).
        policy: [S, A].
        discount: gamma in [0, 1).

    Returns:
        `PolicyValues` with q [S, A], v [S], expected_return [].
    """
    _check_discount(discount)
    policy = _stationary(policy, model)
    transitions = _continuing_transitions(model)
    kernel = jnp.einsum("sa,sat->st", policy, transitions)
    reward = jnp.sum(policy * model.rewards, axis=-1)
    identity = jnp.eye(model.num_states, dtype=kernel.dtype)
    v = jnp.linalg.solve(identity - discount * kernel, reward)
    q = model.rewards + discount * transitions @ v
    return PolicyValues(q, v, model.initial @ v)


def discounted_value_iteration(
    model: TabularModel,
    discount: float,
    tolerance: float = 1e-6,
    max_iterations: int = 100_000,
) -> DiscountedSolution:
    """Optimal values of the discounted MDP: value iteration, then an exact evaluation.

    Value iteration runs (in a `lax.while_loop`) until successive values differ by at most
    `tolerance * (1 + max |V|)`; the greedy policy is then evaluated exactly by a linear solve,
    so the returned values are those of an optimal policy to solver precision whenever the
    greedy policy is optimal, which holds once the sweep has separated the best action from the
    others (and otherwise they are within gamma / (1 - gamma) of the last sweep's error).

    Args:
        model: the MDP (`model.horizon` is ignored).
        discount: gamma in [0, 1).
        tolerance: relative stopping tolerance of the sweeps.
        max_iterations: cap on the sweeps.

    Returns:
        `DiscountedSolution` with q [S, A], v [S], policy [S, A], optimal_return [], iterations.
    """
    _check_discount(discount)
    transitions = _continuing_transitions(model)

    def sweep(v):
        return (model.rewards + discount * transitions @ v).max(axis=-1)

    def not_converged(carry):
        v, v_prev, iteration = carry
        gap = jnp.max(jnp.abs(v - v_prev))
        limit = tolerance * (1.0 + jnp.max(jnp.abs(v)))
        return (gap > limit) & (iteration < max_iterations)

    def body(carry):
        v, _, iteration = carry
        return sweep(v), v, iteration + 1

    v0 = jnp.zeros(model.num_states, model.rewards.dtype)
    v, _, iterations = jax.lax.while_loop(
        not_converged, body, (sweep(v0), v0, jnp.ones((), jnp.int32))
    )
    policy = greedy_policy(model.rewards + discount * transitions @ v)
    values = discounted_policy_evaluation(model, policy, discount)
    return DiscountedSolution(values.q, values.v, policy, values.expected_return, iterations)


def discounted_occupancy(model: TabularModel, policy: Array, discount: float) -> Occupancy:
    """Normalised discounted occupancy (1 - gamma) sum_t gamma^t P(s_t = s, running).

    Solves d = (1 - gamma) initial + gamma P_pi^T d. Sums to one without terminal states; then
    J_gamma(pi) = sum_{s,a} d(s, a) R(s, a) / (1 - gamma).

    Args:
        model: the MDP (`model.horizon` is ignored).
        policy: [S, A].
        discount: gamma in [0, 1).

    Returns:
        `Occupancy` with state [S] and state_action [S, A].
    """
    _check_discount(discount)
    policy = _stationary(policy, model)
    kernel = jnp.einsum("sa,sat->st", policy, _continuing_transitions(model))
    identity = jnp.eye(model.num_states, dtype=kernel.dtype)
    state = jnp.linalg.solve(identity - discount * kernel.T, (1.0 - discount) * model.initial)
    return Occupancy(state, state[:, None] * policy)


# --------------------------------------------------------------------------------------------
# Agents
# --------------------------------------------------------------------------------------------


def policy_table(
    policy_fn: Callable[[PyTree, Array], Array], agent_state: PyTree, model: TabularModel
) -> Array:
    """An agent's policy as a table: `policy_fn(agent_state, model.observations)`, one call.

    Args:
        policy_fn: `Agent.policy`, `(state, obs [N, *obs_shape]) -> probs [N, A]`.
        agent_state: the agent's state.
        model: the MDP whose observations the agent sees.

    Returns:
        [S, A] pi(a | s), ready for `policy_evaluation`, `occupancy` and `suboptimality`.
    """
    probs = policy_fn(agent_state, model.observations)
    if probs.shape != (model.num_states, model.num_actions):
        raise RlkitError(
            f"policy_fn: returned shape {probs.shape} for {model.num_states} observations, "
            f"expected [S, A] = {(model.num_states, model.num_actions)}"
        )
    return probs


# --------------------------------------------------------------------------------------------
# Linear MDPs (finite horizon, time-inhomogeneous; Jin et al. 2020's setting)
# --------------------------------------------------------------------------------------------


class LinearMDP(NamedTuple):
    """The exact model of a finite-state linear MDP with horizon H = `theta.shape[0]`.

    P_h(s' | s, a) = <phi(s, a), mu_h(s')> and r_h(s, a) = <phi(s, a), theta_h> (Jin, Yang, Wang
    and Jordan 2020, "Provably efficient RL with linear function approximation", Assumption A).
    Steps are 0-based here: h = 0 is the first action. The last step's `mu[H - 1]` is never used
    (the episode ends after H actions). `envs.linear_mdp` builds these and their environments.

    Attributes:
        features: [S, A, d] phi(s, a), ||phi|| <= 1.
        mu: [H, d, S] the measures mu_h(s') (column s' is mu_h(s')).
        theta: [H, d] reward parameters.
        initial: [S] distribution of s_0.
    """

    features: Array
    mu: Array
    theta: Array
    initial: Array


class FeatureVisitation(NamedTuple):
    """Per-step feature statistics of policies (leading axes [N] when vmapped over a class).

    Attributes:
        mean: [H, d] phi_{pi,h} = E^pi[phi(s_h, a_h)].
        covariance: [H, d, d] E^pi[phi(s_h, a_h) phi(s_h, a_h)^T] (uncentred).
        state: [H, S] P^pi(s_h = s).
    """

    mean: Array
    covariance: Array
    state: Array


def linear_transitions(mdp: LinearMDP) -> Array:
    """[H, S, A, S] P_h(s' | s, a) = <phi(s, a), mu_h(s')>."""
    return jnp.einsum("sad,hdt->hsat", mdp.features, mdp.mu)


def linear_rewards(mdp: LinearMDP) -> Array:
    """[H, S, A] r_h(s, a) = <phi(s, a), theta_h>."""
    return jnp.einsum("sad,hd->hsa", mdp.features, mdp.theta)


def linear_value_iteration(mdp: LinearMDP) -> OptimalSolution:
    """Optimal values of a linear MDP by backward induction over its H steps.

    Returns:
        `OptimalSolution` with q [H, S, A], v [H, S], policy [H, S, A] (one-hot, ties to the
        lowest action) and optimal_return [] = sum_s initial(s) V*_0(s).
    """
    transitions, rewards = linear_transitions(mdp), linear_rewards(mdp)
    # P_{H-1} leads out of the episode: its continuation value is zero whatever mu says.
    transitions = transitions.at[-1].set(0.0)

    def backward(v_next, inputs):
        transitions_h, rewards_h = inputs
        q = rewards_h + transitions_h @ v_next  # [S, A]
        v = q.max(axis=-1)
        return v, (q, v)

    v_end = jnp.zeros(mdp.features.shape[0], rewards.dtype)
    _, (q, v) = jax.lax.scan(backward, v_end, (transitions, rewards), reverse=True)
    return OptimalSolution(q, v, greedy_policy(q), mdp.initial @ v[0])


def linear_visitation(mdp: LinearMDP, policy: Array) -> FeatureVisitation:
    """Feature visitations and expected feature covariances of one policy, per step.

    V^pi = sum_h <phi_{pi,h}, theta_h> (the identity PEDEL's estimator rests on; Wagenmaker and
    Jamieson 2022, Section 3). Vmap over a policy class: `jax.vmap(linear_visitation,
    (None, 0))(mdp, policies)` gives leading axes [N].

    Args:
        mdp: the linear MDP.
        policy: [H, S, A] pi_h(a | s), rows summing to one.

    Returns:
        `FeatureVisitation` with mean [H, d], covariance [H, d, d], state [H, S].
    """
    transitions = linear_transitions(mdp)

    def forward(state_h, inputs):
        transitions_h, policy_h = inputs
        state_action = state_h[:, None] * policy_h  # [S, A]
        mean = jnp.einsum("sa,sad->d", state_action, mdp.features)
        covariance = jnp.einsum("sa,sad,sae->de", state_action, mdp.features, mdp.features)
        state_next = jnp.einsum("sa,sat->t", state_action, transitions_h)
        return state_next, (mean, covariance, state_h)

    _, (mean, covariance, state) = jax.lax.scan(forward, mdp.initial, (transitions, policy))
    return FeatureVisitation(mean, covariance, state)


def linear_policy_return(mdp: LinearMDP, policy: Array) -> Array:
    """J(pi) = sum_h <phi_{pi,h}, theta_h> of a [H, S, A] policy; a scalar."""
    return jnp.sum(linear_visitation(mdp, policy).mean * mdp.theta)


def linear_class_statistics(mdp: LinearMDP, policies: Array) -> tuple[FeatureVisitation, Array]:
    """Visitations and returns of a whole policy class at once (vmapped).

    Args:
        mdp: the linear MDP.
        policies: [N, H, S, A].

    Returns:
        (`FeatureVisitation` with leading axis [N], returns [N]).
    """
    visitation = jax.vmap(linear_visitation, (None, 0))(mdp, policies)
    return visitation, jnp.einsum("nhd,hd->n", visitation.mean, mdp.theta)


def greedy_linear_policies(features: Array, weights: Array) -> Array:
    """Greedy linear policies pi_h(s) = argmax_a <phi(s, a), w_h> as one-hot tables.

    Args:
        features: [S, A, d].
        weights: [N, H, d], one weight vector per policy and step.

    Returns:
        [N, H, S, A] one-hot (ties go to the lowest action).
    """
    scores = jnp.einsum("sad,nhd->nhsa", features, weights)
    return greedy_policy(scores)
