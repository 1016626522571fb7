"""Weighted Bellman residuals with clipped density ratios: the objects GLOW and HyGLOW share.

Amortila, Foster, Jiang, Sekhari and Xie, "Harnessing Density Ratios for Online Reinforcement
Learning" (ICLR 2024), ../shared/specs/glow_hyglow.md. A value function f is tested against a
class W of weight (density-ratio) functions w(x, a): because w depends on (x, a) only, the
empirical mean of w(x, a) * delta_f(x, a, r, x'), with the TD residual

    delta_f(x, a, r, x') = f(x, a) - r - max_a' f(x', a')        (f after the end is 0)

is an unbiased estimate of E_mu[w * (f - T f)], with no double-sampling bias. Weights are
truncated, [w]_gamma = min(w, gamma), at a level that grows with the round (gamma_0 * sqrt(t)),
and the adversary maximises the penalised discrepancy

    L(f, w) = E_D[ [w]_gamma(x, a) * delta_f - kappa * [w]_gamma(x, a)^2 ].

This module holds the pieces both the exact (tabular, finite-class) and the neural versions use:

* the residual, the clipping and the loss (`td_residual`, `clip_weights`, `weighted_loss`);
* the exact adversary over tabular weights, `W = all tables (x, a) -> [0, gamma]` (or
  `[-gamma, gamma]`, see below). The maximum separates by (x, a): with S(x, a) the sum of
  residuals of the samples at (x, a) and N(x, a) their count,
  max_w sum_D (...) = sum_(x,a) max_u (u S - kappa u^2 N), maximised at
  u* = clip(S / (2 kappa N), low, gamma) (kappa > 0) or u* = gamma * sign(S) (kappa = 0)
  (`tabular_adversary`). S is linear in f, so the data enter only through counts, reward sums and
  next-state counts (`TabularStatistics`): any number of candidate f are scored against the same
  statistics with `vmap`;
* finite value classes: an enumerated class of Q-tables [M, S, A] (any small F, the brute-force
  oracle) and a product class ([S, K, A] candidate rows chosen state by state, the structure of
  the Q* of every combination-lock code or DeepSea action mapping), and the exact selection rules
  of GLOW (optimism over a confidence set) and of HyGLOW's offline learner (minimum loss).

Choices where the paper leaves room (each behind a config field of `agents.glow`):

* `signed_weights`: the paper's W is nonnegative [R], which detects over-estimation f > T f only
  (what optimism needs: J* - J(pi_f) <= sum_h E_{d^pi_f}[f - T f]). HyGLOW has no optimism, and
  its offline analysis also needs the under-estimation T f - f under pi*'s occupancy to be small;
  with W >= 0 an under-estimating f is never refuted, so data from pi* alone could not identify
  anything. `signed_weights=True` lets the adversary use w in [-gamma, gamma] (W closed under
  negation); HyGLOW uses it by default, GLOW does not.
* Normalisation and radius: the sums run over every sample of the data and the confidence set is
  {f : sum_(x,a) max_u (...) <= beta}, i.e. the averaged loss <= beta / n for n episodes: the
  theory's log(|F||W|/delta) / t shape with the logarithm folded into beta. On layered MDPs one
  episode gives one sample per layer, so dividing by n equals the paper's per-layer average.
* The truncation level is gamma_t = gamma_0 * sqrt(t) with t the number of episodes in the data
  (at least 1), the spec's form; the constant and exponent are [R] in the paper.
* Ties: many f can be equally good (every lock code has value 1 at the start, so optimism does not
  separate them). The selection takes the best candidate of highest random priority, Gumbel
  noise of the caller's key, so a run's cost never depends on the order in which candidates
  happen to be listed; with the same key every round the priorities stay fixed and the choice
  only moves when the data refute it.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from rlkit.errors import RlkitError
from rlkit.types import Array, PRNGKey, Transition

TIE_TOLERANCE = 1e-6
"""Losses or objectives within this of the best count as ties."""


# --------------------------------------------------------------------------------------------
# Residuals, clipping and the penalised loss
# --------------------------------------------------------------------------------------------


def td_residual(q_taken: Array, reward: Array, next_value: Array, terminated: Array) -> Array:
    """delta = f(x, a) - r - max_a' f(x', a'), with no bootstrap after a terminal state.

    Truncated transitions bootstrap (the episode was cut, the state was not terminal).
    """
    return q_taken - reward - jnp.where(terminated, 0.0, next_value)


def clip_weights(weights: Array, gamma: Array | float) -> Array:
    """[w]_gamma = min(w, gamma): truncation from above (signed weights: to [-gamma, gamma])."""
    return jnp.clip(weights, -gamma, gamma)


def truncation_level(gamma_0: float, num_episodes: Array) -> Array:
    """gamma_t = gamma_0 * sqrt(t), t = max(episodes in the data, 1)."""
    return gamma_0 * jnp.sqrt(jnp.maximum(jnp.asarray(num_episodes, jnp.float32), 1.0))


def weighted_loss(weights: Array, residuals: Array, kappa: float) -> Array:
    """The mean of `w * delta - kappa * w^2` over the batch (weights already clipped)."""
    return (weights * residuals - kappa * jnp.square(weights)).mean()


def tabular_adversary(residual_sum: Array, count: Array, kappa: float, gamma: Array | float,
                      signed: bool = False) -> tuple[Array, Array]:
    """The best tabular weight per (x, a) and the value it reaches, in closed form.

    Maximises u * S - kappa * u^2 * N over u in [0, gamma] (or [-gamma, gamma] when `signed`),
    elementwise.

    Args:
        residual_sum: S, the sum of TD residuals of the samples at each (x, a).
        count: N, the number of those samples (same shape).
        kappa: the quadratic penalty, >= 0.
        gamma: the truncation level, > 0.
        signed: allow negative weights.

    Returns:
        (value, u_star), both shaped like `residual_sum`. Cells without samples get u* = 0.
    """
    low = -gamma if signed else 0.0
    if not isinstance(kappa, (int, float)) or kappa > 0:  # an array (alpha_t) is positive
        u = jnp.clip(residual_sum / (2.0 * kappa * jnp.maximum(count, 1e-12)), low, gamma)
    else:
        u = jnp.where(residual_sum > 0, gamma, jnp.where(residual_sum < 0, low, 0.0))
    u = jnp.where(count > 0, u, 0.0)
    return u * residual_sum - kappa * jnp.square(u) * count, u


# --------------------------------------------------------------------------------------------
# Tabular statistics of a dataset
# --------------------------------------------------------------------------------------------


@struct.dataclass
class TabularStatistics:
    """What the weighted residual of any Q-table needs from a tabular dataset.

    Attributes:
        counts: [S, A] samples at (x, a).
        reward_sums: [S, A] their summed rewards.
        next_counts: [S, A, S + 1] next-state counts; column S counts terminated transitions
            (their continuation value is 0).
        starts: [S] episode starts seen in each state (the empirical start distribution,
            unnormalised).
        layers: [S] int32, the step h at which each state was seen (0 where never seen); on
            layered MDPs (locks, DeepSea) a state belongs to one step, so per-layer sums of the
            per-state losses are the paper's per-layer losses.
    """

    counts: Array
    reward_sums: Array
    next_counts: Array
    starts: Array
    layers: Array | None = None  # None: hand-built statistics without layers

    @property
    def num_episodes(self) -> Array:
        return self.starts.sum()


def observation_index(obs: Array, obs_ndim: int) -> Array:
    """State indices of a batch of one-hot observations [N, *obs_shape] -> [N] int32.

    Tabular envs emit the one-hot of the state (flattened for DeepSea's grid), so the argmax over
    the last `obs_ndim` axes is the state index. An all-zero observation (DeepSea after the end)
    maps to 0; it only ever appears after termination, where nothing bootstraps from it.
    """
    lead = obs.shape[: obs.ndim - obs_ndim]
    flat = obs.reshape(*lead, int(np.prod(obs.shape[obs.ndim - obs_ndim:])))
    return jnp.argmax(flat, axis=-1).astype(jnp.int32)


def tabular_statistics(data: Transition, num_states: int, num_actions: int,
                       obs_ndim: int) -> TabularStatistics:
    """Counts of transitions [M, ...] with one-hot observations of `obs_ndim` axes.

    `data.extras["first"]` marks episode starts; `data.extras["valid"]` (optional, 0/1) masks
    rows out (an unfilled buffer); `data.extras["weight"]` (optional, >= 0) weighs each row
    instead (the round driver's half-and-half mixture under the paper's offline schedule).
    """
    state = observation_index(data.obs, obs_ndim)
    next_state = jnp.where(data.terminated, num_states,
                           observation_index(data.next_obs, obs_ndim))
    valid = data.extras.get("valid", jnp.ones(state.shape, jnp.float32))
    valid = data.extras.get("weight", valid).astype(jnp.float32)
    action = data.action.astype(jnp.int32)
    counts = jnp.zeros((num_states, num_actions)).at[state, action].add(valid)
    reward_sums = jnp.zeros((num_states, num_actions)).at[state, action].add(valid * data.reward)
    next_counts = jnp.zeros((num_states, num_actions, num_states + 1)).at[
        state, action, next_state].add(valid)
    first = data.extras["first"].astype(jnp.float32)
    starts = jnp.zeros((num_states,)).at[state].add(valid * first)
    step = data.extras.get("step", jnp.zeros(state.shape, jnp.int32)).astype(jnp.int32)
    layers = jnp.zeros((num_states,), jnp.int32).at[state].max(jnp.where(valid > 0, step, 0))
    return TabularStatistics(counts=counts, reward_sums=reward_sums, next_counts=next_counts,
                             starts=starts, layers=layers)


def residual_sums(q_table: Array, stats: TabularStatistics, next_values: Array | None = None
                  ) -> Array:
    """S_f(x, a) = sum over samples at (x, a) of delta_f, for a Q-table [S, A] -> [S, A].

    `next_values` [S] overrides max_a f(x', a) (a product class's shared values).
    """
    values = q_table.max(axis=-1) if next_values is None else next_values
    values = jnp.concatenate([values, jnp.zeros((1,), values.dtype)])  # column S: ended
    return stats.counts * q_table - stats.reward_sums - stats.next_counts @ values


def max_weighted_loss(q_table: Array, stats: TabularStatistics, kappa: float,
                      gamma: Array | float, signed: bool = False) -> Array:
    """max over tabular w of the summed penalised loss, sum_(x,a) max_u (u S - kappa u^2 N)."""
    value, _ = tabular_adversary(residual_sums(q_table, stats), stats.counts, kappa, gamma, signed)
    return value.sum()


# --------------------------------------------------------------------------------------------
# Finite value classes and the exact selection rules
# --------------------------------------------------------------------------------------------


@struct.dataclass
class ProductValueClass:
    """F = the product over states of a few candidate rows: f(x, .) = rows[x, k_x] for any choice
    of k_x in each state x (valid[x, k]).

    Every candidate row of a state has the same maximum (the state's value), so the residual at
    (x, a) depends on x's own choice only and the exact algorithms run in O(S K A) per round
    instead of enumerating K^S tables. The Q* of every combination-lock code has this form (the
    optimal continuation always earns 1), and so has the Q* of every DeepSea action mapping.

    Attributes:
        rows: [S, K, A] candidate rows.
        valid: [S, K] bool, which candidates exist (states may have fewer than K).
    """

    rows: Array
    valid: Array

    @property
    def values(self) -> Array:
        """[S] the value shared by every candidate of a state."""
        return self.rows[:, 0].max(axis=-1)

    def enumerate(self) -> Array:
        """All tables [M, S, A] of the product (a test oracle; M grows exponentially)."""
        valid = np.asarray(self.valid)
        choices = [np.flatnonzero(v) for v in valid]
        grids = np.meshgrid(*choices, indexing="ij")
        picks = np.stack([g.reshape(-1) for g in grids], axis=1)  # [M, S]
        rows = np.asarray(self.rows)
        return jnp.asarray(rows[np.arange(rows.shape[0])[None, :], picks])


def check_product_class(value_class: ProductValueClass) -> None:
    """Raise `RlkitError` unless the candidates of each state share their maximum."""
    rows, valid = np.asarray(value_class.rows), np.asarray(value_class.valid)
    if rows.ndim != 3 or valid.shape != rows.shape[:2]:
        raise RlkitError(f"value class: rows must be [S, K, A] and valid [S, K], got "
                         f"{rows.shape} and {valid.shape}")
    if not valid.any(axis=1).all():
        raise RlkitError("value class: every state needs at least one valid candidate row")
    maxima = np.where(valid, rows.max(axis=-1), np.nan)
    spread = np.nanmax(maxima, axis=1) - np.nanmin(maxima, axis=1)
    if (spread > 1e-6).any():
        bad = int(np.argmax(spread))
        raise RlkitError(f"value class: the candidates of state {bad} have different values "
                         f"(spread {spread[bad]:.3g}); a product class needs one value per state "
                         "(use an enumerated class [M, S, A] instead)")


class Selection(NamedTuple):
    """The Q-table an exact rule picked, with diagnostics (float32 scalars).

    Attributes:
        q_table: [S, A] the chosen f.
        loss: its summed max-weighted loss on the data.
        feasible: 1 if it lies in the confidence set (loss <= beta), else 0.
        candidates_left: how many candidates are still unrefuted (enumerated: inside the
            confidence set; product: summed over states, those whose own loss is minimal).
    """

    q_table: Array
    loss: Array
    feasible: Array
    candidates_left: Array


def _random_best(key: PRNGKey, is_best: Array, axis: int = -1) -> Array:
    """A uniformly random index among the True entries of `is_best` along `axis`: the entry of
    highest Gumbel priority, so one key gives the same priorities every call."""
    return jax.random.categorical(key, jnp.where(is_best, 0.0, -jnp.inf), axis=axis)


def start_distribution(stats: TabularStatistics) -> Array:
    """[S] the empirical start distribution of the data (Alg. 1 line 7: optimism at the data's
    start states); all zeros before any episode, so every candidate ties in round 1."""
    return stats.starts / jnp.maximum(stats.starts.sum(), 1e-12)


class PaperSchedule(NamedTuple):
    """The paper's round-t constants (Amortila et al. 2024, Alg. 1 line 3, Thm 3.1).

    Attributes:
        gamma: gamma_t = gamma * t, the truncation level.
        alpha: alpha_t = 8 / gamma_t, the penalty on [w]^2 (the practical preset's kappa).
        beta: beta_t = c * gamma_t * log_term / (K (t - 1)), the per-layer radius on the
            averaged loss, here times the layer's K (t - 1) samples (the code's sums are not
            averaged): c * gamma_t * log_term, and infinite at t = 1 (no data, no constraint).
    """

    gamma: Array
    alpha: Array
    beta: Array


def paper_schedule(round_t: Array, gamma: float, confidence: float, log_term: Array
                   ) -> PaperSchedule:
    """gamma_t, alpha_t and the (summed) per-layer radius of round `round_t` >= 1.

    Args:
        round_t: t, the round (1 + online episodes so far / episodes per round).
        gamma: the paper's gamma (Thm 3.1 sets it to about sqrt(C_cov / (T log(|F||W|/delta)))).
        confidence: c, 36 in the paper's beta_t.
        log_term: log(6 |F| |W| T H / delta).
    """
    t = jnp.maximum(jnp.asarray(round_t, jnp.float32), 1.0)
    gamma_t = gamma * t
    beta = jnp.where(t > 1, confidence * gamma_t * log_term, jnp.inf)
    return PaperSchedule(gamma=gamma_t, alpha=8.0 / gamma_t, beta=beta)


def refutation_visits(confidence: float, log_term: float, excess: float = 1.0) -> float:
    """Visits n of a cell with residual `excess` each (a wrong lock candidate's over-estimate)
    after which the paper's per-layer constraint refutes it.

    With alpha_t = 8 / gamma_t the best clipped weight is u* = excess / (2 alpha_t) =
    excess * gamma_t / 16 <= gamma_t, worth n excess^2 gamma_t / 32 summed over the n visits; the
    constraint is c gamma_t log_term, so gamma_t cancels and n > 32 c log_term / excess^2.
    """
    return 32.0 * confidence * log_term / excess ** 2


def layer_sums(cell_losses: Array, layers: Array, num_layers: int) -> Array:
    """Per-layer sums [..., H] of per-state losses [..., S] (`TabularStatistics.layers`)."""
    return jnp.zeros((*cell_losses.shape[:-1], num_layers), cell_losses.dtype).at[
        ..., layers].add(cell_losses)


# --------------------------------------------------------------------------------------------
# A finite weight class built from the model: occupancy ratios of candidate policies
# --------------------------------------------------------------------------------------------

RATIO_CAP = 1e6
"""The value of a ratio d^pi / d_bar where d_bar is 0 and d^pi is not: unbounded (the paper's
ratios may be), so only truncation keeps the weight finite in the loss."""


def occupancy_ratio_class(model, policies: Array, horizon: int | None = None,
                          signed: bool = False) -> Array:
    """A restricted, realisable weight class W [N, S, A]: ratios between the occupancies of
    candidate policies (the paper's mixture class, Eq. 34; its signed version, Eq. 38).

    For every candidate pi_i and every data distribution d_bar among (a) each candidate's
    occupancy d^pi_j, pi_i's own included (w = 1 on its support: the data of pi_i alone, a
    mixture of one round) and (b) the uniform mixture of all candidates' occupancies, the weight
    w(x, a) = d^pi_i(x, a) / d_bar(x, a), with 0 / 0 = 0 and x / 0 = `RATIO_CAP`. Occupancies are
    summed over steps, which equals the per-layer ratio on layered MDPs (each state at one step:
    locks, DeepSea). `signed` adds -w for every w (W closed under negation, our reading of the
    signed class: the paper's Eq. 38 augments W for HyGLOW's two-sided test).

    Args:
        model: a `rlkit.planning.TabularModel`.
        policies: [P, S, A] the candidate policies (e.g. the greedy policies of F), P >= 2.
        horizon: steps H (default the model's).
        signed: include the negations.

    Returns:
        [N, S, A] float32 weights, N = P (P + 1) (times 2 when signed).
    """
    from rlkit import planning

    occupancies = jnp.stack([planning.occupancy(model, pi, horizon).state_action.sum(axis=0)
                             for pi in policies])  # [P, S, A]
    denominators = jnp.concatenate([occupancies, occupancies.mean(axis=0, keepdims=True)])

    def ratio(numerator, denominator):
        safe = jnp.where(denominator > 0, denominator, 1.0)
        return jnp.where(denominator > 0, numerator / safe,
                         jnp.where(numerator > 0, RATIO_CAP, 0.0))

    count = occupancies.shape[0]
    weights = [ratio(occupancies[i], denominators[j]) for i in range(count)
               for j in range(count + 1)]
    weights = jnp.stack(weights).astype(jnp.float32)
    return jnp.concatenate([weights, -weights]) if signed else weights


def finite_class_losses(q_table: Array, weights: Array, stats: TabularStatistics,
                        kappa: float | Array, gamma: Array | float, num_layers: int = 1,
                        absolute: bool = False) -> Array:
    """max over a finite weight class of the summed penalised loss, per layer: [num_layers].

    For each w in `weights` [N, S, A] (clipped to [-gamma, gamma]) and layer h,
    L_h(f, w) = sum over the layer's samples of [w]_gamma delta_f - kappa [w]_gamma^2, or with
    `absolute` (HyGLOW, Eq. 14) |sum [w]_gamma delta_f| - kappa sum [w]_gamma^2; returns
    max_w L_h for each h. `num_layers=1` puts every state in one layer (the summed loss).
    """
    clipped = clip_weights(weights, gamma)  # [N, S, A]
    linear = (clipped * residual_sums(q_table, stats)).sum(axis=-1)  # [N, S]
    quadratic = (jnp.square(clipped) * stats.counts).sum(axis=-1)
    layers = (jnp.zeros_like(stats.starts, jnp.int32) if num_layers == 1 or stats.layers is None
              else stats.layers)
    linear, quadratic = (layer_sums(x, layers, num_layers) for x in (linear, quadratic))
    if absolute:
        linear = jnp.abs(linear)
    return (linear - kappa * quadratic).max(axis=0)


def select_enumerated(tables: Array, stats: TabularStatistics, key: PRNGKey, *, optimistic: bool,
                      beta: float | Array, kappa: float | Array, gamma: Array | float,
                      signed: bool = False, num_layers: int | None = None,
                      absolute: bool = False, weights: Array | None = None,
                      summed_constraint: bool = False) -> Selection:
    """GLOW's or HyGLOW's choice from an enumerated finite class F = tables [M, S, A].

    Optimistic (GLOW): among f with loss <= beta, the one with the highest start value
    E_{x1 ~ d1} max_a f(x1, a) under the data's start states (all tied before any episode); if
    none is feasible (F misspecified), the minimum-loss f. Not optimistic (HyGLOW's offline
    learner): the minimum-loss f. Ties are broken at random.

    With `num_layers` (the paper preset), the constraint holds per layer (Eq. 4: every step's
    summed loss <= beta) instead of on the sum over layers; the reported loss is the sum over
    layers. W is all tables unless `weights` [N, S, A] gives a finite class
    (`occupancy_ratio_class`), whose adversary is `finite_class_losses` (`absolute`: HyGLOW's
    |.| per layer, Eq. 14; for tabular W closed under negation it changes nothing).
    `summed_constraint` holds the sum over layers below beta instead (the practical radius with
    a per-layer adversary: W = W_1 x ... x W_H, one w per layer as in the paper).
    """
    if weights is not None:
        per_layer = jax.vmap(lambda q: finite_class_losses(
            q, weights, stats, kappa, gamma, num_layers or 1, absolute))(tables)  # [M, H]
    else:
        def cell_losses(q):  # [S]: each state's max-weighted loss
            value, _ = tabular_adversary(residual_sums(q, stats), stats.counts, kappa, gamma,
                                         signed)
            return value.sum(axis=-1)

        if num_layers is None:  # the summed loss, one "layer"
            per_layer = jax.vmap(lambda q: max_weighted_loss(q, stats, kappa, gamma, signed))(
                tables)[:, None]
        else:
            per_layer = layer_sums(jax.vmap(cell_losses)(tables), stats.layers, num_layers)
    losses = per_layer.sum(axis=-1)
    feasible = (losses <= beta) if summed_constraint else (per_layer <= beta).all(axis=-1)
    least = losses <= losses.min() + TIE_TOLERANCE
    if optimistic:
        objective = tables.max(axis=-1) @ start_distribution(stats)  # [M]
        best_value = jnp.where(feasible, objective, -jnp.inf).max()
        is_best = jnp.where(feasible.any(),
                            feasible & (objective >= best_value - TIE_TOLERANCE), least)
    else:
        is_best = least
    index = _random_best(key, is_best)
    return Selection(q_table=tables[index], loss=losses[index],
                     feasible=feasible[index].astype(jnp.float32),
                     candidates_left=feasible.sum().astype(jnp.float32))


def select_product(value_class: ProductValueClass, stats: TabularStatistics, key: PRNGKey, *,
                   beta: float | Array, kappa: float | Array, gamma: Array | float,
                   signed: bool = False, num_layers: int | None = None) -> Selection:
    """GLOW's and HyGLOW's choice from a product class, exactly, in O(S K A).

    Every f in a product class has the same start value (the states' values are shared), so
    optimism cannot prefer one f over another. The practical rule (`num_layers=None`) picks a
    minimum-loss f: the loss is a sum of per-state terms, so that f takes a minimum-loss
    candidate in every state (at random among ties); it is feasible whenever the confidence set
    is non-empty, and then it is also an optimistic choice.

    The paper's rule (`num_layers` = H, per-layer radius `beta`, GLOW): any f of the confidence
    set, all being tied under optimism, taken by the fixed random priorities (ties broken
    consistently). In each state the candidate of highest priority whose loss exceeds the
    state's minimum by at most the layer's slack (beta - the layer's summed minima) divided by
    the layer's visited states that hold a choice; on a lock (one state with choices per layer)
    that is exactly the confidence set, on DeepSea a subset of it. With no feasible f, the
    minimum-loss one.
    """
    values = value_class.values
    per_row = jax.vmap(lambda rows: residual_sums(rows, stats, values), in_axes=1,
                       out_axes=1)(value_class.rows)  # [S, K, A]
    value, _ = tabular_adversary(per_row, stats.counts[:, None, :], kappa, gamma, signed)
    state_losses = jnp.where(value_class.valid, value.sum(axis=-1), jnp.inf)  # [S, K]
    minimum = state_losses.min(axis=1, keepdims=True)
    if num_layers is not None:
        layer_minimum = layer_sums(minimum[:, 0], stats.layers, num_layers)  # [H]
        # States that hold a choice and were seen share their layer's slack.
        visited = ((stats.counts.sum(axis=-1) > 0)
                   & (value_class.valid.sum(axis=1) > 1)).astype(jnp.float32)
        states_per_layer = layer_sums(visited, stats.layers, num_layers)
        slack = (beta - layer_minimum[stats.layers]) / jnp.maximum(
            states_per_layer[stats.layers], 1.0)
        slack = jnp.where(visited > 0, jnp.maximum(slack, 0.0), jnp.inf)  # [S]
        is_best = value_class.valid & (state_losses <= minimum + slack[:, None]
                                       + TIE_TOLERANCE)
        choice = _random_best(key, is_best, axis=1)  # [S]
        q_table = jnp.take_along_axis(value_class.rows, choice[:, None, None], axis=1)[:, 0]
        chosen = jnp.take_along_axis(state_losses, choice[:, None], axis=1)[:, 0]
        feasible = (layer_minimum <= beta).all()
        return Selection(q_table=q_table, loss=chosen.sum(),
                         feasible=feasible.astype(jnp.float32),
                         candidates_left=is_best.sum().astype(jnp.float32))
    is_best = state_losses <= minimum + TIE_TOLERANCE
    choice = _random_best(key, is_best, axis=1)  # [S]
    q_table = jnp.take_along_axis(value_class.rows, choice[:, None, None], axis=1)[:, 0]
    loss = minimum.sum()
    return Selection(q_table=q_table, loss=loss, feasible=(loss <= beta).astype(jnp.float32),
                     candidates_left=is_best.sum().astype(jnp.float32))


__all__ = ["PaperSchedule", "ProductValueClass", "RATIO_CAP", "Selection", "TabularStatistics",
           "check_product_class", "clip_weights", "finite_class_losses", "layer_sums",
           "max_weighted_loss", "observation_index", "occupancy_ratio_class", "paper_schedule",
           "refutation_visits", "residual_sums", "select_enumerated", "select_product",
           "start_distribution", "tabular_adversary", "tabular_statistics", "td_residual",
           "truncation_level", "weighted_loss"]
