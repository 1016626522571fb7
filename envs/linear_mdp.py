"""Finite-state linear MDPs with exact models: the hard-state instance, random ones, tabular ones.

A linear MDP (Jin et al. 2020) has features phi(s, a) in R^d, transitions
P_h(s' | s, a) = <phi(s, a), mu_h(s')> and rewards r_h(s, a) = <phi(s, a), theta_h>, for steps
h = 0..H-1 (time-inhomogeneous). The model is a `rlkit.planning.LinearMDP`; `rlkit.planning`
computes optimal values, policy values and per-step feature visitations and covariances from it.

The environment steps the *time-expanded* tabular MDP (states (h, s), plus one terminal state
entered after the H-th action), through `envs.tabular`, so every driver, `rlkit.collect` and
`rlkit.planning.value_iteration` work on it unchanged. What the agent sees is what a linear-MDP
learner is given: the step and the features of every action,

    obs = [one_hot(h, H + 1), phi(s, 0), ..., phi(s, A - 1)]    shape [H + 1 + A d], float32,

(the terminal state has h = H and zero features), so feature-based agents (FTPedel) read
phi(s_h, a) off the observation. The params (`LinearParams`) also hold the `LinearMDP`, for exact
evaluation and for FTPedel's oracle mode.

Instances:

* `hard_state_mdp(p, gap)`: the hard-state instance of ../shared/specs/ftpedel.md section 2.3
  (built by us, d = 2, H = 2). Step 0: from s0 every action leads to s_A with probability 1 - p
  and to the hard state s_B with probability p. Step 1: in s_A the two actions' features differ
  along e_1, in s_B along e_2; theta_1 = gap * (sign_A, sign_B) decides both. `start="hard"`
  starts episodes in s_B at step 1, to collect the offline data of the spec (samples at s_B only)
  with `python -m rlkit.collect --env linear-hard-state --env-config.start hard`.
* `random_linear_mdp(seed, ...)`: a low-rank factorisation of a random tabular MDP: phi(s, a) and
  every mu_h row are Dirichlet draws (so P_h = phi mu_h is a distribution), theta_h ~ U[0, 1)^d.
* `tabular_linear_mdp(transitions, rewards, initial, horizon)`: any tabular MDP as a linear MDP
  with one-hot features of (s, a) (d = S A).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
from flax import struct

from envs import tabular
from envs.checker import linear_mdp_problems
from rlkit.errors import RlkitError, require, require_int_at_least, require_number, require_one_of
from rlkit.planning import LinearMDP
from rlkit.types import Array, Environment, TabularModel


@struct.dataclass
class LinearParams(tabular.TabularParams):
    """`envs.tabular` params (the time-expanded model) plus the `LinearMDP` itself."""

    linear: LinearMDP | None = None


def linear_mdp_from_numpy(features, mu, theta, initial) -> LinearMDP:
    """A float32 `LinearMDP` from host arrays ([S, A, d], [H, d, S], [H, d], [S])."""
    return LinearMDP(*(jnp.asarray(np.asarray(x, np.float32)) for x in
                       (features, mu, theta, initial)))


def hard_state_mdp(p: float = 0.01, gap: float = 1.0,
                   signs: tuple[int, int] = (1, -1)) -> LinearMDP:
    """The spec's hard-state instance: states (s0, s_A, s_B), two actions, d = 2, H = 2.

    phi(s0, a) = e_1 for both actions; phi(s_A, 0) = e_1, phi(s_B, 0) = e_2 and action 1 has zero
    features in both; mu_0(s_A) = (1 - p) e_1, mu_0(s_B) = p e_1; theta_0 = 0 and
    theta_1 = gap * signs. So r_1(s_A, 0) = gap * signs[0], r_1(s_B, 0) = gap * signs[1], action 1
    pays 0, and J* = (1 - p) gap [signs[0] > 0] + p gap [signs[1] > 0].

    Args:
        p: probability of reaching s_B, in (0, 1).
        gap: reward scale, > 0.
        signs: the signs (+1 / -1) of theta_1 along e_1 and e_2.
    """
    features = np.zeros((3, 2, 2))
    features[0, :, 0] = 1.0
    features[1, 0] = (1.0, 0.0)
    features[2, 0] = (0.0, 1.0)
    mu = np.zeros((2, 2, 3))
    mu[0, 0, 1], mu[0, 0, 2] = 1.0 - p, p
    theta = np.array([[0.0, 0.0], [gap * signs[0], gap * signs[1]]])
    initial = np.array([1.0, 0.0, 0.0])
    return linear_mdp_from_numpy(features, mu, theta, initial)


def random_linear_mdp(seed: int, num_states: int, num_actions: int, dim: int,
                      horizon: int) -> LinearMDP:
    """A random linear MDP: phi(s, a) ~ Dirichlet(1_d), each mu_h row ~ Dirichlet(1_S),
    theta_h ~ U[0, 1)^d, s_0 = state 0. Rewards lie in [0, 1) and ||phi|| <= 1."""
    rng = np.random.default_rng(seed)
    features = rng.dirichlet(np.ones(dim), (num_states, num_actions))
    mu = rng.dirichlet(np.ones(num_states), (horizon, dim))
    theta = rng.uniform(size=(horizon, dim))
    initial = np.eye(num_states)[0]
    return linear_mdp_from_numpy(features, mu, theta, initial)


def tabular_linear_mdp(transitions: np.ndarray, rewards: np.ndarray, initial: np.ndarray,
                       horizon: int) -> LinearMDP:
    """A tabular MDP ([S, A, S], [S, A], [S]) as a linear MDP with one-hot features, d = S A."""
    num_states, num_actions = np.shape(rewards)
    dim = num_states * num_actions
    features = np.eye(dim).reshape(num_states, num_actions, dim)
    mu = np.broadcast_to(np.reshape(transitions, (dim, num_states)), (horizon, dim, num_states))
    theta = np.broadcast_to(np.reshape(rewards, dim), (horizon, dim))
    return linear_mdp_from_numpy(features, mu, theta, initial)


def observations(mdp: LinearMDP) -> np.ndarray:
    """[H S + 1, H + 1 + A d] the observation of each time-expanded state (h, s), then END."""
    features = np.asarray(mdp.features)
    num_states, num_actions, dim = features.shape
    horizon = mdp.theta.shape[0]
    obs = np.zeros((horizon * num_states + 1, horizon + 1 + num_actions * dim), np.float32)
    for h in range(horizon):
        rows = slice(h * num_states, (h + 1) * num_states)
        obs[rows, h] = 1.0
        obs[rows, horizon + 1:] = features.reshape(num_states, -1)
    obs[-1, horizon] = 1.0
    return obs


def time_expanded_model(mdp: LinearMDP, start_step: int = 0,
                        start_states: np.ndarray | None = None) -> TabularModel:
    """The tabular MDP over states (h, s) (index h S + s) and a terminal END (index H S).

    The H-th action leads to END; rewards are r_h(s, a). Episodes start at step `start_step`
    in `mdp.initial`; the truncation length stays H (END terminates the episode first).
    """
    features = np.asarray(mdp.features, np.float64)
    num_states, num_actions, _ = features.shape
    horizon = mdp.theta.shape[0]
    size = horizon * num_states + 1
    transitions = np.zeros((size, num_actions, size))
    rewards = np.zeros((size, num_actions))
    step_transitions = np.einsum("sad,hdt->hsat", features, np.asarray(mdp.mu, np.float64))
    step_rewards = np.einsum("sad,hd->hsa", features, np.asarray(mdp.theta, np.float64))
    for h in range(horizon):
        rows = slice(h * num_states, (h + 1) * num_states)
        rewards[rows] = step_rewards[h]
        if h + 1 < horizon:
            transitions[rows, :, (h + 1) * num_states:(h + 2) * num_states] = step_transitions[h]
        # The last step, and rows that are no distribution (states unreachable at step h,
        # where a linear MDP need not normalise: `linear_mdp_problems`), lead to END.
        broken = np.abs(transitions[rows].sum(-1) - 1.0) > 1e-6  # [S, A]
        block = transitions[rows]
        block[broken] = 0.0
        block[broken, -1] = 1.0
        transitions[rows] = block
    transitions[-1, :, -1] = 1.0
    terminal = np.zeros(size, bool)
    terminal[-1] = True
    initial = np.zeros(size)
    initial[start_step * num_states:(start_step + 1) * num_states] = np.asarray(
        mdp.initial if start_states is None else start_states)
    return tabular.model_from_numpy(transitions, rewards, terminal, initial, horizon,
                                    observations(mdp))


def make_linear_env(mdp: LinearMDP, name: str, start_step: int = 0,
                    start_states: np.ndarray | None = None) -> Environment:
    """The environment of a linear MDP (validated by `envs.checker.linear_mdp_problems`).

    `start_step` and `start_states` move the episodes' start (`time_expanded_model`); the
    params' `linear` stays `mdp`, the MDP as it starts at step 0.

    Raises:
        RlkitError: the model is malformed (features too long, transitions not linear and
            normalised, ...), listing every problem.
    """
    problems = linear_mdp_problems(mdp)
    if problems:
        raise RlkitError(f"the linear MDP of env {name!r} is malformed: " + "; ".join(problems))
    env = tabular.make_tabular_env(time_expanded_model(mdp, start_step, start_states), name)
    params = LinearParams(model=env.default_params.model, linear=mdp)
    return env._replace(default_params=params)


@dataclass(frozen=True)
class HardStateConfig:
    """The hard-state linear MDP of the FTPedel spec (section 2.3): d = 2, H = 2."""

    p: float = 0.01
    """Probability that step 0 leads to the hard state s_B."""
    gap: float = 1.0
    """Reward scale: theta_1 = gap * (sign_a, sign_b)."""
    sign_a: int = 1
    """Sign of theta_1 along e_1 (the easy state's direction)."""
    sign_b: int = -1
    """Sign of theta_1 along e_2 (the hard state's direction)."""
    start: str = "s0"
    """"s0": the MDP; "hard": episodes start in s_B at step 1 (to collect offline data there)."""

    def __post_init__(self):
        require_number(self.p, "p", low=0, high=1, low_open=True, high_open=True)
        require_number(self.gap, "gap", low=0, low_open=True)
        for name in ("sign_a", "sign_b"):
            require(getattr(self, name) in (1, -1), name,
                    f"must be 1 or -1, got {getattr(self, name)!r}.")
        require_one_of(self.start, "start", ("s0", "hard"))


def make_hard_state(config: HardStateConfig) -> Environment:
    mdp = hard_state_mdp(config.p, config.gap, (config.sign_a, config.sign_b))
    if config.start == "hard":
        return make_linear_env(mdp, "linear-hard-state", 1, np.array([0.0, 0.0, 1.0]))
    return make_linear_env(mdp, "linear-hard-state")


@dataclass(frozen=True)
class RandomConfig:
    """A random linear MDP (low-rank factorisation of a random tabular MDP)."""

    num_states: int = 6
    """Number of states S."""
    num_actions: int = 3
    """Number of actions A."""
    dim: int = 3
    """Feature dimension d."""
    horizon: int = 3
    """Horizon H."""
    seed: int = 0
    """Seed of the model (not of the episodes)."""

    def __post_init__(self):
        for name in ("num_states", "num_actions", "dim", "horizon"):
            require_int_at_least(getattr(self, name), name, 1)


def make_random(config: RandomConfig) -> Environment:
    mdp = random_linear_mdp(config.seed, config.num_states, config.num_actions, config.dim,
                            config.horizon)
    return make_linear_env(mdp, "linear-random")


@dataclass(frozen=True)
class TabularConfig:
    """A random tabular MDP as a linear MDP with one-hot features (d = S A)."""

    num_states: int = 3
    """Number of states S."""
    num_actions: int = 2
    """Number of actions A."""
    horizon: int = 3
    """Horizon H."""
    seed: int = 0
    """Seed of the model."""

    def __post_init__(self):
        for name in ("num_states", "num_actions", "horizon"):
            require_int_at_least(getattr(self, name), name, 1)


def make_tabular(config: TabularConfig) -> Environment:
    model = tabular.random_model(config.seed, config.num_states, config.num_actions,
                                 config.horizon)
    initial = np.eye(config.num_states)[0]
    mdp = tabular_linear_mdp(np.asarray(model.transitions), np.asarray(model.rewards), initial,
                             config.horizon)
    return make_linear_env(mdp, "linear-tabular")


def split_observation(obs: Array, horizon: int, num_actions: int) -> tuple[Array, Array]:
    """(step h int32 [...], features [..., A, d]) from observations [..., H + 1 + A d]."""
    step = jnp.argmax(obs[..., :horizon + 1], axis=-1).astype(jnp.int32)
    features = obs[..., horizon + 1:]
    return step, features.reshape(*features.shape[:-1], num_actions, -1)


__all__ = ["HardStateConfig", "LinearParams", "RandomConfig", "TabularConfig", "hard_state_mdp",
           "linear_mdp_from_numpy", "make_hard_state", "make_linear_env", "make_random",
           "make_tabular", "observations", "random_linear_mdp", "split_observation",
           "tabular_linear_mdp", "time_expanded_model"]
