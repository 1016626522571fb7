"""FTPedel and PEDEL: verifiable epsilon-optimal policy identification in linear MDPs.

Papers: Wagenmaker and Pacchiano 2023, "Leveraging Offline Data in Online Reinforcement
Learning" (ICML; FTPedel), and its online-only base, Wagenmaker and Jamieson 2022,
"Instance-Dependent Near-Optimal Policy Identification in Linear MDPs via Online Experiment
Design" (NeurIPS; PEDEL). Spec: ../shared/specs/ftpedel.md (no algorithm box nor official code was
available: the loop is the spec's reconstruction, section 2.2).

The idea. In a linear MDP the value of a policy is V^pi = sum_h <phi_{pi,h}, theta_h> with
phi_{pi,h} = E^pi[phi(s_h, a_h)], so comparing a finite class of policies needs theta_h only
along the directions phi_{pi,h}. Each epoch l halves the target accuracy eps_l = 2^-l and, step by
step, (1) estimates every policy's phi_{pi,h} from the data of step h - 1 (least squares on the
transitions), (2) picks the exploration distribution lambda over policies and the *smallest*
online budget T with max_pi ||phi_{pi,h}||^2_{(T Lambda_h(lambda) + Lambda_off,h + lambda_reg
I)^-1} <= eps_l^2 / beta_l (experiment design; FTPedel adds the offline covariance
Lambda_off,h, PEDEL has none), (3) collects T episodes from lambda and (4) fits theta_h by least
squares on offline plus online step-h data. Policies whose estimated value is 2 eps_l below the
best are eliminated; the run stops, *verified*, when one policy is left or eps_l <= eps / 4, and
returns the best surviving policy. When the budget needed exceeds what is left
(`max_online_episodes`; 0 for offline-only) it stops *not verified*: the data cannot certify any
policy. PEDEL is exactly FTPedel with no offline rows.

Every choice the spec marks [R] (reconstructed) or [D] (design), and what this code does:

* Policy class [R] (`policy_class`, `sphere_points`, `max_policies`): greedy linear policies
  pi_h(s) = argmax_a <phi(s, a), w_h>, w_h on a grid of the unit sphere (d = 2: `sphere_points`
  equally spaced angles; d >= 3: the +-axes, then normalised Gaussian draws from a fixed seed),
  one w per step, the class being the product over steps (a seeded draw of `max_policies` of
  them when larger), or the weights [N, H, d] of a .npy file.
* Elimination and stop [R]: keep pi with V_hat(pi) >= max V_hat - 2 eps_l; stop verified when
  one policy is left or eps_l <= epsilon / 4 (then every survivor is 4 eps_l <= epsilon good
  when the estimates are eps_l / 2 accurate); eps_l = 2^-l from l = 1.
* Design target [R] (`design_target`): "visitation", the spec's loop, targets phi_{pi,h} itself
  for every active pi. (The difference form phi_{pi,h} - phi_{pi*,h} of PEDEL's bound is not
  implemented: it needs pi*, which the learner does not know.)
* Exploration policies [D] (`exploration`): the whole class (or only the active set), with
  covariances
  Lambda_h(pi') = E^{pi'}[phi phi^T] estimated from the same least squares as phi_{pi,h}
  (clipped to the PSD cone); PEDEL's own data-collection oracle is not reproduced.
* Design solver [D]: pairwise Frank-Wolfe over lambda on the simplex, on the max smoothed by a
  log-sum-exp whose temperature falls in stages (`frank_wolfe`, `frank_wolfe_iterations`),
  inside a doubling then bisection search over the integer T. Budgets are integers; T = 0 when
  the offline data suffice (checked without a solve).
* Confidence factor beta_l [R] (`preset`, `beta_scale`): beta_l = beta_scale * log(2 |Pi_l| H
  l (l + 1) / delta). "theory" sets beta_scale = 16 H^2: a union bound over policies, steps and
  epochs, with an estimation error at most eps_l / (4 H) per step so that the summed error of
  every value stays below eps_l / 2 and elimination at 2 eps_l keeps pi* and only 4 eps_l-good
  policies. The papers' exact constants are not available. "practical" sets beta_scale = 1.
* Ridge lambda_reg [R] (`lambda_reg`): 1 / d by default.
* Data reuse [D] (`reuse_online_data`): by default each epoch's regressions use its own
  online data (PEDEL's epochs are independent); offline rows enter every epoch, through their
  covariance and their regression targets.
* The step-0 visitation phi_{pi,0} is computed from the (deterministic) first observation.
* Oracle mode [D] (`oracle`): exact phi_{pi,h}, covariances and theta_h (from the env's
  `rlkit.planning.LinearMDP`) replace the estimates, and no episode is rolled out (budgets are
  still computed and counted): for the soundness test of elimination.

What it measures (benchmarks/README.md): on the spec's hard-state instance FTPedel's online
episodes are flat in p, but so are PEDEL's, because phi_pi^T E^pi[phi phi^T]^-1 phi_pi <= 1 for
every policy bounds the design's budget independently of how rarely a state is visited; the
offline data save roughly the share of the hard state's direction in each step's design.

Observations are those of `envs.linear_mdp`: [one_hot(h, H + 1), phi(s, 0), ..., phi(s, A - 1)].
This is not a gradient-trained agent: it exposes pure pieces (`frank_wolfe`, `design_value`,
`act`) that `rlkit.loops.ftpedel` compiles, and the sequential, small algorithm itself (`run`),
in numpy, which the driver calls with its compiled pieces.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rlkit.errors import RlkitError, require, require_int_at_least, require_number, require_one_of
from rlkit.types import Array


@dataclass(frozen=True)
class Config:
    """PEDEL / FTPedel hyper-parameters (FTPedel: `FineTuneConfig`, which needs --dataset)."""

    epsilon: float = 0.1
    """Accuracy: the returned policy must be epsilon-optimal."""
    delta: float = 0.05
    """Failure probability, in (0, 1)."""
    preset: str = "practical"
    """"theory" (beta_scale = 16 H^2) or "practical" (beta_scale = 1); see beta_scale."""
    beta_scale: float | None = None
    """beta_l = beta_scale * log(2 |Pi_l| H l (l + 1) / delta); None: the preset's."""
    lambda_reg: float | None = None
    """Ridge regulariser of every least squares and design; None: 1 / d."""
    design_target: str = "visitation"
    """What the design covers: "visitation" (phi_{pi,h} of every active policy)."""
    policy_class: str = "sphere"
    """"sphere" (greedy linear policies on a sphere grid) or a .npy of weights [N, H, d]."""
    sphere_points: int = 8
    """Sphere grid: weight directions per step."""
    max_policies: int = 256
    """Sphere grid: at most this many policies (a seeded draw from the product over steps)."""
    frank_wolfe_iterations: int = 200
    """Frank-Wolfe iterations per design solve."""
    budget_precision: float = 1 / 256
    """The budget search stops when T is known within this relative precision (rounding T up:
    the returned T is feasible and at most this much above the smallest feasible one)."""
    exploration: str = "class"
    """Exploration policies of the design: "class" (every policy) or "active" (Pi_l only)."""
    reuse_online_data: bool = False
    """Keep the online data of earlier epochs in the regressions (False: fresh each epoch)."""
    max_online_episodes: int = 2_000_000
    """Online budget; the run stops not verified when a design needs more. 0: offline-only."""
    max_epochs: int = 30
    """Epochs at most (eps_l = 2^-l)."""
    oracle: bool = False
    """Use the exact phi_{pi,h}, covariances and theta_h of the env (soundness tests)."""
    hybrid: bool = False
    """Use an offline dataset (FTPedel; needs --dataset). False: PEDEL."""
    rollout_chunk: int = 4096
    """Episodes rolled out side by side per compiled call."""

    def __post_init__(self):
        require_number(self.epsilon, "epsilon", low=0, low_open=True,
                       hint="the accuracy must be positive, e.g. 0.1.")
        require_number(self.delta, "delta", low=0, high=1, low_open=True, high_open=True,
                       hint="e.g. 0.05.")
        require_one_of(self.preset, "preset", ("theory", "practical"))
        if self.beta_scale is not None:
            require_number(self.beta_scale, "beta_scale", low=0, low_open=True)
        require_number(self.budget_precision, "budget_precision", low=0, high=1)
        if self.lambda_reg is not None:
            require_number(self.lambda_reg, "lambda_reg", low=0, low_open=True)
        require_one_of(self.design_target, "design_target", ("visitation",))
        require_one_of(self.exploration, "exploration", ("class", "active"))
        for name in ("sphere_points", "max_policies", "frank_wolfe_iterations", "max_epochs",
                     "rollout_chunk"):
            require_int_at_least(getattr(self, name), name, 1)
        require_int_at_least(self.max_online_episodes, "max_online_episodes", 0)


@dataclass(frozen=True)
class FineTuneConfig(Config):
    """FTPedel: PEDEL with the offline data's covariance in every design (needs --dataset)."""

    hybrid: bool = True
    """Use an offline dataset (FTPedel; needs --dataset). False: PEDEL."""


# --------------------------------------------------------------------------------------------
# Policy class and acting
# --------------------------------------------------------------------------------------------


def sphere_grid(dim: int, points: int) -> np.ndarray:
    """[points, dim] unit vectors: equally spaced angles (d = 2), else seeded Gaussian draws
    normalised (d >= 3), with the coordinate axes and their negatives first; d = 1: +-1."""
    if dim == 1:
        return np.array([[1.0], [-1.0]])[:max(points, 1)]
    if dim == 2:
        angles = 2 * np.pi * (np.arange(points) + 0.5) / points
        return np.stack([np.cos(angles), np.sin(angles)], -1)
    axes = np.concatenate([np.eye(dim), -np.eye(dim)])
    draws = np.random.default_rng(0).normal(size=(max(points - len(axes), 0), dim))
    grid = np.concatenate([axes, draws / np.linalg.norm(draws, axis=-1, keepdims=True)])
    return grid[:points]


def make_policy_class(config: Config, horizon: int, dim: int) -> np.ndarray:
    """The finite policy class as greedy-policy weights [N, H, d] (float32).

    Raises:
        RlkitError: a policy-class file that is missing, unreadable or of the wrong shape.
    """
    if config.policy_class != "sphere":
        path = Path(config.policy_class)
        require(path.is_file() and path.suffix == ".npy", "policy_class",
                f"{path} is not a .npy file; pass 'sphere' or a .npy of weights [N, H, d].")
        try:
            weights = np.load(path, allow_pickle=False)
        except ValueError as error:
            raise RlkitError(f"policy_class: {path} is not a readable .npy ({error}).") from None
        require(weights.ndim == 3 and weights.shape[1:] == (horizon, dim) and weights.shape[0] >= 1
                and np.issubdtype(weights.dtype, np.floating) and np.isfinite(weights).all(),
                "policy_class", f"{path} holds {weights.dtype} {weights.shape}; expected finite "
                f"floats [N, H, d] = [N, {horizon}, {dim}] for this env.")
        return weights.astype(np.float32)
    grid = sphere_grid(dim, config.sphere_points)
    count = len(grid) ** horizon
    if count <= config.max_policies:
        index = np.stack(np.meshgrid(*[np.arange(len(grid))] * horizon, indexing="ij"), -1)
        index = index.reshape(-1, horizon)
    else:
        index = np.random.default_rng(0).integers(len(grid), size=(config.max_policies, horizon))
    return grid[index].astype(np.float32)


def act(weights: Array, features: Array, step: Array) -> Array:
    """Greedy action argmax_a <phi(s, a), w_h> of one policy.

    Args:
        weights: [H, d] the policy's weights.
        features: [A, d] phi(s, a) of the current state (from the observation).
        step: int32 [] the step h (H for the terminal state: any action).

    Returns:
        int32 [] the action (ties: lowest index).
    """
    w = weights[jnp.minimum(step, weights.shape[0] - 1)]
    return jnp.argmax(features @ w).astype(jnp.int32)


def observation_parts(obs: Array, horizon: int, num_actions: int) -> tuple[Array, Array]:
    """(step h int32 [...], features [..., A, d]) from observations [..., H + 1 + A d]."""
    step = jnp.argmax(obs[..., :horizon + 1], axis=-1).astype(jnp.int32)
    features = obs[..., horizon + 1:]
    return step, features.reshape(*features.shape[:-1], num_actions, -1)


def greedy_features(weights: np.ndarray, features: np.ndarray, step: int) -> np.ndarray:
    """phi_pi(s) = phi(s, pi_h(s)) for every policy and state row: [N, U, d] from weights
    [N, H, d] and features [U, A, d] of U states at step h."""
    scores = np.einsum("uad,nd->nua", features, weights[:, step])
    action = scores.argmax(-1)  # [N, U]
    return np.take_along_axis(features[None], action[..., None, None], axis=2)[:, :, 0]


# --------------------------------------------------------------------------------------------
# Experiment design (pure JAX; the driver compiles it)
# --------------------------------------------------------------------------------------------


def design_value(weights: Array, budget: Array, covariances: Array, base: Array,
                 targets: Array, mask: Array) -> Array:
    """max_n ||targets_n||^2_{A^-1}, A = budget sum_k weights_k covariances_k + base.

    Args:
        weights: [K] lambda on the simplex.
        budget: [] T, the number of online episodes.
        covariances: [K, d, d] E^{pi_k}[phi phi^T] at this step.
        base: [d, d] Lambda_off + lambda_reg I (positive definite).
        targets: [N, d] the directions to cover (phi_{pi,h} of the policies).
        mask: [N] bool, the targets that count (active policies).

    Returns:
        [] the design's value (0 when no target counts).
    """
    matrix = budget * jnp.einsum("k,kde->de", weights, covariances) + base
    solved = jnp.linalg.solve(matrix, targets.T).T  # [N, d]
    norms = jnp.sum(solved * targets, axis=-1)
    return jnp.max(jnp.where(mask, norms, 0.0))


def frank_wolfe(budget: Array, covariances: Array, base: Array, targets: Array, mask: Array,
                allowed: Array | None = None, iterations: int = 200) -> tuple[Array, Array]:
    """min over lambda in the simplex of `design_value`, by pairwise Frank-Wolfe.

    The objective is convex in lambda (a max of matrix-fractional functions of an affine
    matrix) but not smooth, and plain Frank-Wolfe on the max stalls (measured: 6% above the
    optimum after 3000 iterations on a 3-policy design). So the max is smoothed,
    mu log sum_n exp(g_n / mu), with mu falling in four stages (1e-2 .. 1e-5 of the value at
    the uniform design; the smoothing bias is at most mu log N), and each iteration moves mass
    from the worst vertex in the support to the best one (pairwise FW, Lacoste-Julien and Jaggi
    2015, which does not zig-zag), with the step chosen on the smoothed objective from a
    geometric grid of 31 lengths (including 0, so it never rises). Within 1e-3 of SLSQP and of a
    brute-force simplex grid in tests/test_ftpedel.py.

    Args:
        budget: [] T.
        covariances: [K, d, d].
        base: [d, d].
        targets: [N, d].
        mask: [N] bool.
        allowed: [K] bool, the exploration policies lambda may use (None: all).
        iterations: Frank-Wolfe iterations (static).

    Returns:
        (lambda [K], value [] = `design_value` at lambda).
    """
    num = covariances.shape[0]
    fractions = jnp.concatenate([jnp.zeros(1), 2.0 ** -jnp.arange(0.0, 30.0)])
    temperatures = jnp.array([1e-2, 1e-3, 1e-4, 1e-5])

    def norms_of(weights):
        matrix = budget * jnp.einsum("k,kde->de", weights, covariances) + base
        solved = jnp.linalg.solve(matrix, targets.T).T  # [N, d], A^-1 t_n
        return jnp.where(mask, jnp.sum(solved * targets, -1), -jnp.inf), solved

    allowed = jnp.ones((num,), bool) if allowed is None else allowed
    uniform = allowed / jnp.sum(allowed)
    scale = jnp.maximum(jnp.max(norms_of(uniform)[0]), 1e-30)

    def body(t, weights):
        mu = scale * temperatures[jnp.minimum(4 * t // iterations, 3)]
        norms, solved = norms_of(weights)
        soft = jax.nn.softmax(norms / mu)  # [N]
        # d/d lambda_k of t^T A^-1 t = -T (A^-1 t)^T C_k (A^-1 t).
        gradient = -budget * jnp.einsum("n,nd,kde,ne->k", soft, solved, covariances, solved)
        toward = jnp.argmin(jnp.where(allowed, gradient, jnp.inf))
        away = jnp.argmax(jnp.where(weights > 0, gradient, -jnp.inf))
        direction = jax.nn.one_hot(toward, num) - jax.nn.one_hot(away, num)
        candidates = jnp.clip(weights + (fractions * weights[away])[:, None] * direction, 0, 1)
        smoothed = jax.vmap(lambda w: mu * jax.nn.logsumexp(norms_of(w)[0] / mu))(candidates)
        return candidates[jnp.argmin(smoothed)]

    weights = jax.lax.fori_loop(0, iterations, body, uniform)
    return weights, design_value(weights, budget, covariances, base, targets, mask)


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


class StepData(NamedTuple):
    """Rows of one step h (numpy).

    Attributes:
        phi: [n, d] phi(s_h, a_h).
        reward: [n] r_h.
        next_features: [n, A, d] phi(s_{h+1}, .) (zeros after the last step).
    """

    phi: np.ndarray
    reward: np.ndarray
    next_features: np.ndarray


def empty_step_data(num_actions: int, dim: int) -> StepData:
    return StepData(np.zeros((0, dim)), np.zeros(0), np.zeros((0, num_actions, dim)))


def split_rows(obs: np.ndarray, action: np.ndarray, reward: np.ndarray, next_obs: np.ndarray,
               horizon: int, num_actions: int) -> list[StepData]:
    """Rows (obs [n, H + 1 + A d], action [n], reward [n], next_obs) grouped by step: [H]."""
    step = np.argmax(obs[:, :horizon + 1], axis=-1)
    features = obs[:, horizon + 1:].reshape(len(obs), num_actions, -1)
    next_features = next_obs[:, horizon + 1:].reshape(len(obs), num_actions, -1)
    phi = features[np.arange(len(obs)), action]
    return [StepData(phi[step == h].astype(np.float64), reward[step == h].astype(np.float64),
                     next_features[step == h].astype(np.float64)) for h in range(horizon)]


def concat(a: StepData, b: StepData) -> StepData:
    return StepData(*(np.concatenate([x, y]) for x, y in zip(a, b, strict=True)))


# --------------------------------------------------------------------------------------------
# The algorithm
# --------------------------------------------------------------------------------------------


class Oracle(NamedTuple):
    """Exact quantities of the class (oracle mode): means [N, H, d], covariances [N, H, d, d],
    theta [H, d]."""

    mean: np.ndarray
    covariance: np.ndarray
    theta: np.ndarray


class Pieces(NamedTuple):
    """What the driver hands `run`: compiled design solver and the rollouts.

    Attributes:
        solve: `(budget, covariances [K, d, d], base [d, d], targets [N, d], mask [N],
            allowed [K] or None) -> (lambda [K], value [])`, `frank_wolfe` compiled.
        collect: `(key, policy_index [T] int) -> list[StepData]` of H steps: T online episodes,
            episode i following policy policy_index[i].
    """

    solve: Callable
    collect: Callable


@dataclass
class Result:
    """The outcome of a run (host values, for summary.json).

    Attributes:
        verified: whether the returned policy is certified epsilon-optimal.
        policy: index of the returned policy in the class (the best estimate when not verified).
        online_episodes: online episodes used until the stop.
        budgets: T_{l,h} per epoch (a list of H ints each).
        active: |Pi_l| at the start of each epoch.
        values: the last epoch's estimated values of the class (NaN where eliminated).
        survivors: indices of the surviving policies after each epoch.
        reason: why the run stopped.
    """

    verified: bool = False
    policy: int = 0
    online_episodes: int = 0
    budgets: list = field(default_factory=list)
    active: list = field(default_factory=list)
    values: list = field(default_factory=list)
    survivors: list = field(default_factory=list)
    reason: str = ""


def beta(config: Config, num_active: int, horizon: int, epoch: int) -> float:
    """beta_l = beta_scale * log(2 |Pi_l| H l (l + 1) / delta) (module docstring)."""
    scale = config.beta_scale
    if scale is None:
        scale = 16.0 * horizon**2 if config.preset == "theory" else 1.0
    return scale * math.log(2 * num_active * horizon * epoch * (epoch + 1) / config.delta)


def budget_search(solve: Callable, covariances: np.ndarray, base: np.ndarray,
                  targets: np.ndarray, mask: np.ndarray, threshold: float,
                  limit: int, precision: float = 0.0,
                  allowed: np.ndarray | None = None) -> tuple[int | None, np.ndarray]:
    """The smallest integer T <= limit whose design value is <= threshold, and its lambda.

    T = 0 is checked without a solve (lambda is then irrelevant); then T doubles from 1 until
    feasible and bisection narrows [low, high] until high - low <= max(1, precision * high),
    returning high (feasible). Stopping early keeps the result monotone in the smallest feasible
    T (a larger one is separated from a smaller one by the first probe between them), so more
    offline data never raise it. Returns (None, lambda) when even T = limit does not suffice.
    """
    num = len(covariances)
    allowed = np.ones(num, bool) if allowed is None else allowed
    uniform = allowed / allowed.sum()
    inverse = np.linalg.inv(base)
    if np.max(np.where(mask, np.einsum("nd,de,ne->n", targets, inverse, targets), 0)) <= threshold:
        return 0, uniform

    def feasible(budget):
        weights, value = solve(np.float32(budget), covariances, base, targets, mask, allowed)
        return float(value) <= threshold, np.asarray(weights)

    low, high = 0, 1  # value(low) > threshold
    ok, weights = feasible(high)
    while not ok:
        if high >= limit:
            return None, weights
        low, high = high, min(2 * high, limit)
        ok, weights = feasible(high)
    while high - low > max(1, precision * high):
        middle = (low + high) // 2
        ok, middle_weights = feasible(middle)
        if ok:
            high, weights = middle, middle_weights
        else:
            low = middle
    return high, weights


def run(config: Config, weights: np.ndarray, first_features: np.ndarray,
        offline: list[StepData], pieces: Pieces, key: Array,
        oracle: Oracle | None = None) -> Result:
    """Run PEDEL (no offline rows) or FTPedel until a verified stop or the budget's end.

    Args:
        config: the hyper-parameters.
        weights: [N, H, d] the policy class.
        first_features: [A, d] phi(s_0, .) of the deterministic first state.
        (A run with no offline rows at all is PEDEL: pass H empty `StepData`.)
        offline: H `StepData` of offline rows (empty for PEDEL).
        pieces: the driver's compiled design solver and rollouts.
        key: PRNG key; one sub-key per (epoch, step) draws the episodes' policies.
        oracle: exact quantities (oracle mode), or None.

    Returns:
        The `Result`.
    """
    num_policies, horizon, dim = weights.shape
    reg = config.lambda_reg if config.lambda_reg is not None else 1.0 / dim
    active = np.ones(num_policies, bool)
    result = Result()
    values = np.zeros(num_policies)
    offline_cov = [d.phi.T @ d.phi for d in offline]
    online = [empty_step_data(first_features.shape[0], dim) for _ in range(horizon)]
    for epoch in range(1, config.max_epochs + 1):
        eps_l = 2.0**-epoch
        beta_l = beta(config, int(active.sum()), horizon, epoch)
        threshold = eps_l**2 / beta_l
        result.active.append(int(active.sum()))
        result.budgets.append([])
        # phi_{pi,0} and its covariance are exact: the first state is known.
        mean = greedy_features(weights, first_features[None], 0)[:, 0]  # [N, d]
        covariance = np.einsum("nd,ne->nde", mean, mean)
        values = np.zeros(num_policies)
        for h in range(horizon):
            if oracle is not None:
                mean, covariance = oracle.mean[:, h], oracle.covariance[:, h]
            base = offline_cov[h] + reg * np.eye(dim)
            budget, design = budget_search(
                pieces.solve, covariance.astype(np.float32), base.astype(np.float32),
                mean.astype(np.float32), active, threshold,
                config.max_online_episodes - result.online_episodes, config.budget_precision,
                active if config.exploration == "active" else None)
            if budget is None:
                left = config.max_online_episodes - result.online_episodes
                result.budgets[-1].append(None)
                result.reason = (f"epoch {epoch}, step {h}: the design needs more online "
                                 f"episodes than the {left} left (max_online_episodes)")
                return _finish(result, values, active, verified=False)
            result.budgets[-1].append(int(budget))
            result.online_episodes += int(budget)
            step_key = jax.random.fold_in(key, epoch * horizon + h)
            if oracle is not None:
                values += mean @ oracle.theta[h]
                continue
            mean_h = mean
            if not config.reuse_online_data:
                online[h] = empty_step_data(first_features.shape[0], dim)
            if budget > 0:
                seed = np.asarray(jax.random.key_data(step_key)).astype(np.uint64)
                design = np.clip(design, 0, None) / np.clip(design, 0, None).sum()
                index = np.random.default_rng(seed).choice(num_policies, budget, p=design)
                online[h] = concat(online[h], pieces.collect(step_key, index)[h])
            data = concat(offline[h], online[h])
            # theta_h, and phi_{pi,h+1} with its covariance from the step-h transitions.
            theta, mean, covariance = _least_squares(data, mean, weights, h, reg)
            values += mean_h @ theta
        values = np.where(active, values, -np.inf)
        best = values.max()
        active = active & (values >= best - 2 * eps_l)
        result.survivors.append(np.flatnonzero(active).tolist())
        if active.sum() == 1 or eps_l <= config.epsilon / 4:
            result.reason = ("one policy left" if active.sum() == 1
                             else f"eps_l = {eps_l:g} <= epsilon / 4")
            return _finish(result, values, active, verified=True)
    result.reason = f"max_epochs = {config.max_epochs} reached"
    return _finish(result, values, active, verified=False)


def _least_squares(data: StepData, mean: np.ndarray, weights: np.ndarray, step: int,
                   reg: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """theta_h and the next step's visitations from the step-h rows (ridge least squares).

    Lambda = sum_tau phi_tau phi_tau^T + reg I; theta_h = Lambda^-1 sum_tau phi_tau r_tau; and,
    as E^pi[f(s_{h+1})] = <phi_{pi,h}, int f d mu_h> for any f, each policy's next-step
    statistics weigh row tau by phi_tau^T Lambda^-1 phi_{pi,h} (PEDEL's estimator):
    phi_{pi,h+1} = sum_tau w_{pi,tau} phi_pi(s'_tau), its covariance likewise with
    phi_pi(s') phi_pi(s')^T, clipped to the PSD cone. Rows are aggregated by next state first
    (finitely many), so the cost does not grow with the number of rows.

    Returns:
        (theta [d], next means [N, d], next covariances [N, d, d]).
    """
    num_policies, horizon, dim = weights.shape
    gram = data.phi.T @ data.phi + reg * np.eye(dim)
    inverse = np.linalg.inv(gram)
    theta = inverse @ (data.phi.T @ data.reward)
    if step + 1 >= horizon or len(data.phi) == 0:
        return theta, np.zeros((num_policies, dim)), np.zeros((num_policies, dim, dim))
    flat = data.next_features.reshape(len(data.phi), -1)
    unique, inverse_index = np.unique(flat, axis=0, return_inverse=True)
    sums = np.zeros((len(unique), dim))
    np.add.at(sums, inverse_index.reshape(-1), data.phi)  # [U, d] sum of phi_tau per s'
    next_phi = greedy_features(weights, unique.reshape(len(unique), -1, dim), step + 1)
    row_weights = np.einsum("ud,de,ne->nu", sums, inverse, mean)  # [N, U]
    next_mean = np.einsum("nu,nud->nd", row_weights, next_phi)
    next_cov = np.einsum("nu,nud,nue->nde", row_weights, next_phi, next_phi)
    eigenvalues, vectors = np.linalg.eigh(next_cov)
    next_cov = np.einsum("nde,ne,nfe->ndf", vectors, np.clip(eigenvalues, 0, None), vectors)
    return theta, next_mean, next_cov


def _finish(result: Result, values: np.ndarray, active: np.ndarray, verified: bool) -> Result:
    candidates = np.where(active, values, -np.inf)
    result.policy = int(np.argmax(candidates))
    result.values = [float(v) if a else float("nan") for v, a in zip(values, active, strict=True)]
    result.verified = verified
    return result


__all__ = ["Config", "FineTuneConfig", "Oracle", "Pieces", "Result", "StepData", "act",
           "beta", "budget_search", "concat", "design_value", "empty_step_data", "frank_wolfe",
           "greedy_features", "make_policy_class", "observation_parts", "run", "sphere_grid",
           "split_rows"]
