"""A functional tabular MDP environment built from arrays, and a random tabular MDP.

Every toy MDP in `envs.toy` is a `TabularModel` (transition tensor, reward table, terminal flags,
initial distribution, observations, horizon) handed to `make_tabular_env`, so all of them step
the same way and expose their exact model to `rlkit.planning`:

* `reset` draws s_0 ~ initial and returns `observations[s_0]`;
* `step` draws s' ~ P[s, a], pays R[s, a] (plus optional zero-mean Gaussian noise), reports
  `terminated` when s' is terminal and `truncated` when the step counter reaches the horizon
  without terminating. There is no auto-reset (that is `rlkit.loops`' wrapper).

The model lives in the env params (`TabularParams`), not in the closure, so params are pytrees
that can be vmapped: one lock code, one DeepSea action mapping or one random MDP per seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from envs.checker import model_problems
from rlkit.errors import RlkitError, require
from rlkit.types import Array, Environment, EnvSpec, PRNGKey, TabularModel


@struct.dataclass
class TabularParams:
    """Parameters of a tabular environment (a pytree; vmap it for one MDP per seed).

    Attributes:
        model: the exact `TabularModel` the environment samples from.
        reward_noise_std: None for deterministic rewards, or [S, A] float32 standard deviation
            of zero-mean Gaussian noise added to R[s, a] when stepping. The model keeps the
            mean, so planning is unaffected. (None is an empty pytree: params stay vmappable, and
            `step` skips the noise draw altogether.)
    """

    model: TabularModel
    reward_noise_std: Array | None = None


@struct.dataclass
class TabularState:
    """State of a tabular environment.

    Attributes:
        index: int32 scalar, the index of the current state in the model.
        step: int32 scalar, steps taken in this episode (truncation at `model.horizon`).
    """

    index: Array
    step: Array


def one_hot_observations(num_states: int) -> Array:
    """The default observations: [S, S] float32 identity, row s being the one-hot of state s."""
    # Built on the host: an eager jnp.eye would compile a kernel just to build an env.
    return jnp.asarray(np.eye(num_states, dtype=np.float32))


def make_params(model: TabularModel, reward_noise_std: Array | None = None) -> TabularParams:
    """Wrap a model (and optional reward noise std [S, A]) into `TabularParams`."""
    if reward_noise_std is not None:
        reward_noise_std = jnp.asarray(reward_noise_std, jnp.float32)
    return TabularParams(model=model, reward_noise_std=reward_noise_std)


def _sample_index(key: PRNGKey, probs: Array) -> Array:
    """Draw i ~ probs [n] by inverting the CDF with one uniform draw.

    Cheaper to compile than `jax.random.categorical` (one uniform scalar instead of n Gumbels), a
    cost paid in every driver that compiles `step`. Scaling u by the CDF's last entry keeps the
    draw below it despite float rounding, and the first entry exceeding a value below the total
    always has positive probability: impossible indices are never drawn.
    """
    cdf = jnp.cumsum(probs)
    threshold = jax.random.uniform(key, dtype=cdf.dtype) * cdf[-1]
    return jnp.sum(cdf <= threshold).astype(jnp.int32)


def reset(key: PRNGKey, params: TabularParams) -> tuple[Array, TabularState]:
    """Draw s_0 ~ initial.

    Args:
        key: PRNG key.
        params: the environment params.

    Returns:
        (obs [*obs_shape], state).
    """
    model = params.model
    index = _sample_index(key, model.initial)
    return model.observations[index], TabularState(index=index, step=jnp.zeros((), jnp.int32))


def step(
    key: PRNGKey, state: TabularState, action: Array, params: TabularParams
) -> tuple[Array, TabularState, Array, Array, Array, dict]:
    """Take `action` in `state`: s' ~ P[s, a], reward R[s, a] (+ noise), no auto-reset.

    Args:
        key: PRNG key.
        state: the current `TabularState`.
        action: int scalar in [0, A).
        params: the environment params.

    Returns:
        (obs [*obs_shape], next state, reward float32 [], terminated bool [], truncated bool [],
        info {}).
    """
    model = params.model
    reward = model.rewards[state.index, action].astype(jnp.float32)
    if params.reward_noise_std is not None:  # Static (pytree structure), not a traced branch.
        key, noise_key = jax.random.split(key)
        reward = reward + params.reward_noise_std[state.index, action] * jax.random.normal(
            noise_key
        )
    next_index = _sample_index(key, model.transitions[state.index, action])
    terminated = model.terminal[next_index].astype(jnp.bool_)
    next_step = state.step + 1
    truncated = jnp.logical_and(next_step >= model.horizon, jnp.logical_not(terminated))
    next_state = TabularState(index=next_index, step=next_step)
    return model.observations[next_index], next_state, reward, terminated, truncated, {}


def get_model(params: TabularParams) -> TabularModel:
    """The exact model held in the params."""
    return params.model


def state_index(state: TabularState, params: TabularParams) -> Array:
    """The int32 index of `state` in the model."""
    del params
    return state.index


def make_tabular_env(
    model: TabularModel, name: str, reward_noise_std: Array | None = None
) -> Environment:
    """Build a functional environment that samples from `model`.

    The model is validated here (shapes, probabilities), so a toy MDP with a bug fails at build
    time with a list of what is wrong rather than with silent nonsense at training time.

    Args:
        model: a concrete (not traced) `TabularModel`; it becomes `default_params.model`.
        name: the registry name written into the spec.
        reward_noise_std: optional [S, A] std of Gaussian reward noise (default: none).

    Returns:
        An `Environment` with `model` and `state_index` set.

    Raises:
        RlkitError: when the model is malformed.
    """
    observations = np.asarray(model.observations)
    spec = EnvSpec(
        name=name,
        obs_shape=tuple(observations.shape[1:]),
        obs_dtype=str(observations.dtype),
        num_actions=int(model.transitions.shape[1]) if model.transitions.ndim == 3 else 0,
        max_episode_steps=int(model.horizon),
    )
    problems = model_problems(model, spec)
    if problems:
        raise RlkitError(f"the model of env {name!r} is malformed: " + "; ".join(problems))
    params = make_params(model, reward_noise_std)
    if params.reward_noise_std is not None:
        require(
            params.reward_noise_std.shape == model.rewards.shape,
            "reward_noise_std",
            f"must have the reward table's shape {model.rewards.shape}, got "
            f"{params.reward_noise_std.shape}",
        )
    return Environment(
        spec=spec,
        default_params=params,
        reset=reset,
        step=step,
        model=get_model,
        state_index=state_index,
    )


def with_observation_noise(env: Environment, std: float) -> Environment:
    """`env` with N(0, std^2) noise added to every entry of every observation it emits.

    The model, and so `rlkit.planning`'s exact evaluation, keeps the clean observations: the
    policy is evaluated on each state's mean observation. Rich-observation locks (the noisy
    one-hot observations of Misra et al. 2020) are built this way.
    """

    def noisy(key: PRNGKey, obs: Array) -> Array:
        return obs + std * jax.random.normal(key, obs.shape, obs.dtype)

    def reset(key: PRNGKey, params):
        key, noise_key = jax.random.split(key)
        obs, state = env.reset(key, params)
        return noisy(noise_key, obs), state

    def step(key: PRNGKey, state, action: Array, params):
        key, noise_key = jax.random.split(key)
        obs, state, reward, terminated, truncated, info = env.step(key, state, action, params)
        return noisy(noise_key, obs), state, reward, terminated, truncated, info

    return env._replace(reset=reset, step=step)


def random_model(
    seed: int,
    num_states: int,
    num_actions: int,
    horizon: int,
    concentration: float = 1.0,
    num_terminal: int = 0,
) -> TabularModel:
    """A random tabular MDP: Dirichlet transitions, uniform [0, 1) rewards.

    Drawn with numpy on the host: JAX's Dirichlet (a gamma sampler) takes seconds to compile and
    a model is built once. For one MDP per seed, build several and `stack_params` them.

    The last `num_terminal` states are terminal (absorbing, zero reward); episodes start
    uniformly in the others.

    Args:
        seed: numpy seed of the model.
        num_states: S.
        num_actions: A.
        horizon: truncation length.
        concentration: Dirichlet concentration of each row P[s, a] (small: near-deterministic).
        num_terminal: number of terminal states, at the end of the index range.

    Returns:
        A `TabularModel` with one-hot observations.
    """
    rng = np.random.default_rng(seed)
    transitions = rng.dirichlet(np.full(num_states, concentration), (num_states, num_actions))
    rewards = rng.uniform(size=(num_states, num_actions))
    terminal = np.arange(num_states) >= num_states - num_terminal
    # Terminal rows absorbing with zero reward, as the TabularModel contract says.
    transitions[terminal] = np.eye(num_states)[terminal][:, None, :]
    rewards[terminal] = 0.0
    initial = np.where(terminal, 0.0, 1.0) / (num_states - num_terminal)
    return model_from_numpy(transitions, rewards, terminal, initial, horizon)


def model_from_numpy(
    transitions: np.ndarray,
    rewards: np.ndarray,
    terminal: np.ndarray,
    initial: np.ndarray,
    horizon: int,
    observations: np.ndarray | None = None,
) -> TabularModel:
    """A `TabularModel` of float32 / bool / int32 device arrays from host arrays.

    Observations default to one-hot ([S, S] float32). Rows are renormalised in float64 first, so
    float32 rounding never leaves a row summing to 1 - 1e-7 where numpy said 1.
    """
    transitions = np.asarray(transitions, np.float64)
    transitions = transitions / transitions.sum(-1, keepdims=True)
    num_states = transitions.shape[0]
    if observations is None:
        observations = np.eye(num_states, dtype=np.float32)
    return TabularModel(
        transitions=jnp.asarray(transitions, jnp.float32),
        rewards=jnp.asarray(rewards, jnp.float32),
        terminal=jnp.asarray(terminal, jnp.bool_),
        initial=jnp.asarray(initial, jnp.float32),
        observations=jnp.asarray(observations),
        horizon=jnp.asarray(horizon, jnp.int32),
    )


def stack_params(params: list[TabularParams]) -> TabularParams:
    """Stack params of same-shaped MDPs along a new leading axis, for `jax.vmap` over MDPs."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *params)


@dataclass(frozen=True)
class Config:
    """A random tabular MDP (Dirichlet transitions, uniform rewards in [0, 1))."""

    num_states: int = 10
    """Number of states S (terminal ones included)."""
    num_actions: int = 3
    """Number of actions A."""
    horizon: int = 20
    """Episodes are truncated after this many steps."""
    seed: int = 0
    """Seed of the random model (the MDP itself, not the episodes)."""
    concentration: float = 1.0
    """Dirichlet concentration of each transition row; below 1 gives near-deterministic MDPs."""
    num_terminal: int = 0
    """How many states (the last indices) are terminal: absorbing, zero reward, ending episodes."""
    reward_noise_std: float = 0.0
    """Std of zero-mean Gaussian noise added to every reward (the model keeps the mean)."""

    def __post_init__(self):
        require(self.num_states >= 1, "num_states", f"must be >= 1, got {self.num_states}")
        require(self.num_actions >= 1, "num_actions", f"must be >= 1, got {self.num_actions}")
        require(self.horizon >= 1, "horizon", f"must be >= 1, got {self.horizon}")
        require(self.concentration > 0, "concentration", f"must be > 0, got {self.concentration}")
        require(
            0 <= self.num_terminal < self.num_states,
            "num_terminal",
            f"must be in [0, num_states) so episodes can start somewhere, got {self.num_terminal}",
        )
        require(
            self.reward_noise_std >= 0,
            "reward_noise_std",
            f"must be >= 0, got {self.reward_noise_std}",
        )


def make(config: Config) -> Environment:
    """Build the random tabular MDP described by `config`."""
    model = random_model(
        config.seed,
        config.num_states,
        config.num_actions,
        config.horizon,
        config.concentration,
        config.num_terminal,
    )
    noise = None
    if config.reward_noise_std > 0:
        noise = np.full((config.num_states, config.num_actions), config.reward_noise_std)
    return make_tabular_env(model, "tabular", noise)
