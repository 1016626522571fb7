"""The Q-learning core shared by DQN, Hy-Q and CQL: network, training state, TD update.

Three agents fit a Q-network to bootstrapped one-step targets with a target network and differ
only in where their batches come from (online replay, a mix of offline and online data, an
offline dataset) and in an extra term of the loss (CQL's conservative regulariser). STYLE.md rule
3 puts what they share here; each agent module keeps its paper, its config and its feed.

The TD target is double DQN's (van Hasselt et al. 2016, eq. 4) unless `double=False`:

    y = r + gamma * (1 - terminated) * Q_target(s', argmax_a Q_online(s', a))

Truncated transitions bootstrap from the true next observation; only terminated ones do not
(Pardo et al. 2018). The target network moves every `target_update_every` updates as
`target <- tau * online + (1 - tau) * target` (`tau = 1` is a hard copy).

`OnlineQConfig` and `make_online_q_agent` add what the online learners (DQN, Hy-Q) share: a replay
feed and epsilon-greedy exploration with epsilon annealed linearly over env steps. The schedule is
keyed on `State.env_steps`, which `update` advances by `num_envs * train_every` per call: `act`
cannot change the state, and the driver calls `update` once per `train_every` iterations of
`num_envs` env steps (`rlkit.types.ReplayFeed`). So the counter measures env steps since learning
started, and epsilon stays at `epsilon_start` while the buffer fills up to `learning_starts`.

Metrics of `update` (float32 scalars): `loss` (the whole loss, regulariser included), `td_loss`,
`q_mean` (mean Q of the batch's actions), `target_mean`, `td_abs_mean`, `grad_norm` (before
clipping), plus whatever the regulariser reports.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from rlkit.errors import require
from rlkit.nets import TorsoHead, make_torso
from rlkit.ops import double_q_learning_target
from rlkit.optim import clipped_adam
from rlkit.types import Agent, Array, EnvSpec, Metrics, PRNGKey, PyTree, ReplayFeed, Transition


@dataclass(frozen=True)
class QLearningConfig:
    """The fields every Q-learning agent has; agents extend it with their own."""

    learning_rate: float = 2.5e-4
    """Adam step size."""
    gamma: float = 0.99
    """Discount factor, in [0, 1]."""
    batch_size: int = 128
    """Transitions per update."""
    target_update_every: int = 100
    """Updates between target-network updates."""
    tau: float = 1.0
    """Target update step: target <- tau * online + (1 - tau) * target; 1 is a hard copy."""
    max_grad_norm: float | None = 10.0
    """Clip gradients to this global norm; None disables clipping."""
    loss: str = "mse"
    """TD loss: "mse" (half squared error) or "huber" (delta 1, the Nature paper's clipping)."""
    double: bool = True
    """Double DQN target (van Hasselt et al. 2016); False gives the Nature max target."""
    hidden_sizes: tuple[int, ...] = (128, 128)
    """MLP widths for vector observations."""
    activation: str = "relu"
    """MLP activation: "relu" or "tanh"."""
    cnn: str = "nature"
    """Torso for image observations: "nature" (Mnih et al. 2015) or "impala" (procgen)."""

    def __post_init__(self):
        require(self.learning_rate > 0, "learning_rate",
                f"must be > 0, got {self.learning_rate}; try 2.5e-4.")
        require(0.0 <= self.gamma <= 1.0, "gamma", f"must be in [0, 1], got {self.gamma}.")
        for name in ("batch_size", "target_update_every"):
            require_int_at_least(getattr(self, name), name, 1)
        require(0.0 < self.tau <= 1.0, "tau", f"must be in (0, 1], got {self.tau}.")
        require(self.max_grad_norm is None or self.max_grad_norm > 0, "max_grad_norm",
                f"must be > 0 or None (no clipping), got {self.max_grad_norm}.")
        require(self.loss in ("huber", "mse"), "loss",
                f"must be 'huber' or 'mse', got {self.loss!r}.")
        check_network_fields(self)


def require_int_at_least(value: object, name: str, minimum: int) -> None:
    """Raise `RlkitError` naming `name` unless `value` is an int (not a bool) >= `minimum`."""
    require(isinstance(value, int) and not isinstance(value, bool) and value >= minimum, name,
            f"must be an int >= {minimum}, got {value!r}.")


def check_network_fields(config) -> None:
    """Validate the `hidden_sizes`, `activation` and `cnn` fields every agent config shares."""
    require(len(config.hidden_sizes) > 0
            and all(isinstance(size, int) and size >= 1 for size in config.hidden_sizes),
            "hidden_sizes", f"must be one or more positive ints, got {config.hidden_sizes!r}.")
    require(config.activation in ("relu", "tanh"), "activation",
            f"must be 'relu' or 'tanh', got {config.activation!r}.")
    require(config.cnn in ("nature", "impala"), "cnn",
            f"must be 'nature' or 'impala', got {config.cnn!r}.")


@struct.dataclass
class State:
    """A Q-learner's training state; every leaf is an array of fixed shape and dtype.

    Attributes:
        params: online Q-network parameters.
        target_params: target-network parameters, a copy (never the same buffers as `params`,
            so a driver may donate the state).
        opt_state: optax state of the online parameters.
        update_step: int32 scalar, updates done so far (drives the target-network period).
        env_steps: int32 scalar, env steps since learning started (drives epsilon schedules;
            stays 0 for offline learners).
    """

    params: PyTree
    target_params: PyTree
    opt_state: optax.OptState
    update_step: Array
    env_steps: Array


class QNetwork(TorsoHead):
    """A torso (MLP or CNN from `rlkit.nets`) and a linear head: obs [B, ...] -> Q [B, A]."""


Regulariser = Callable[[Array, Transition], tuple[Array, Metrics]]
"""`(q [B, A] of batch.obs under the online params, batch) -> (scalar loss term, metrics)`."""


class QLearner(NamedTuple):
    """The pure functions of a Q-learner.

    Attributes:
        network: the `QNetwork` module.
        init: `(key) -> State`.
        update: `(state, batch [B], key) -> (state, metrics)`; one gradient step.
        q_values: `(state, obs [N, ...]) -> Q [N, A]` under the online parameters.
        greedy_policy: `(state, obs [N, ...]) -> one-hot probabilities [N, A]`.
    """

    network: QNetwork
    init: Callable[[PRNGKey], State]
    update: Callable[[State, Transition, PRNGKey], tuple[State, Metrics]]
    q_values: Callable[[State, Array], Array]
    greedy_policy: Callable[[State, Array], Array]


def make_q_learner(config: QLearningConfig, spec: EnvSpec, *,
                   regulariser: Regulariser | None = None,
                   env_steps_per_update: int = 0) -> QLearner:
    """Build the Q-learning functions for an environment.

    Args:
        config: the shared Q-learning fields (an agent's config that extends `QLearningConfig`).
        spec: the environment's spec.
        regulariser: an extra loss term on the online Q-values of the batch (CQL), or None.
        env_steps_per_update: how far `update` advances `State.env_steps` (the driver's env
            steps between two updates; 0 for offline learning).

    Returns:
        The `QLearner`.
    """
    num_actions = spec.num_actions
    network = QNetwork(make_torso(spec, config.cnn, config.hidden_sizes, config.activation),
                       num_actions)
    optimizer = clipped_adam(config.learning_rate, config.max_grad_norm)

    def init(key: PRNGKey) -> State:
        params = network.init(key, jnp.zeros((1, *spec.obs_shape), spec.obs_dtype))
        return State(
            params=params,
            # A real copy: outside jit the same arrays in two leaves would alias donated buffers.
            target_params=jax.tree.map(jnp.copy, params),
            opt_state=optimizer.init(params),
            update_step=jnp.zeros((), jnp.int32),
            env_steps=jnp.zeros((), jnp.int32),
        )

    def loss_fn(params: PyTree, target_params: PyTree, batch: Transition):
        batch_size = batch.action.shape[0]
        # One forward pass over obs and next_obs together: the online net both fits Q(s, a) and
        # selects the double-DQN action at s'.
        q_both = network.apply(params, jnp.concatenate([batch.obs, batch.next_obs]))
        q, q_next_online = q_both[:batch_size], q_both[batch_size:]
        q_next_target = network.apply(target_params, batch.next_obs)
        if not config.double:
            q_next_online = q_next_target
        target = jax.lax.stop_gradient(double_q_learning_target(
            batch.reward, batch.terminated, q_next_online, q_next_target, config.gamma))
        q_taken = jnp.take_along_axis(q, batch.action[:, None].astype(jnp.int32), axis=-1)[:, 0]
        td_error = q_taken - target
        if config.loss == "huber":
            td_loss = optax.huber_loss(q_taken, target, delta=1.0).mean()
        else:
            td_loss = 0.5 * jnp.square(td_error).mean()
        metrics = {"td_loss": td_loss, "q_mean": q_taken.mean(), "target_mean": target.mean(),
                   "td_abs_mean": jnp.abs(td_error).mean()}
        loss = td_loss
        if regulariser is not None:
            extra_loss, extra_metrics = regulariser(q, batch)
            loss = loss + extra_loss
            metrics.update(extra_metrics)
        return loss, metrics

    def update(state: State, batch: Transition, key: PRNGKey) -> tuple[State, Metrics]:
        """One gradient step on a batch with leaves [B, ...]; `key` is unused (deterministic)."""
        del key
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, state.target_params, batch)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        update_step = state.update_step + 1
        target_params = optax.periodic_update(
            optax.incremental_update(params, state.target_params, config.tau),
            state.target_params, update_step, config.target_update_every)
        state = State(params=params, target_params=target_params, opt_state=opt_state,
                      update_step=update_step,
                      env_steps=state.env_steps + env_steps_per_update)
        metrics = {"loss": loss, **aux, "grad_norm": optax.tree.norm(grads)}
        return state, {name: value.astype(jnp.float32) for name, value in metrics.items()}

    def q_values(state: State, obs: Array) -> Array:
        return network.apply(state.params, obs)

    def greedy_policy(state: State, obs: Array) -> Array:
        """Greedy policy as one-hot probabilities [N, A] for obs [N, *obs_shape]."""
        return jax.nn.one_hot(jnp.argmax(q_values(state, obs), axis=-1), num_actions,
                              dtype=jnp.float32)

    return QLearner(network=network, init=init, update=update, q_values=q_values,
                    greedy_policy=greedy_policy)


@dataclass(frozen=True)
class OnlineQConfig(QLearningConfig):
    """Q-learning from a replay buffer filled online, with epsilon-greedy exploration."""

    num_envs: int = 8
    """Environments stepped in parallel; each driver iteration adds num_envs transitions."""
    buffer_size: int = 10_000
    """Replay buffer capacity in transitions."""
    learning_starts: int = 1_000
    """Transitions in the buffer before the first update (batch_size <= it <= buffer_size)."""
    train_every: int = 1
    """Driver iterations (of num_envs env steps each) between updates."""
    epsilon_start: float = 1.0
    """Exploration rate when learning starts."""
    epsilon_end: float = 0.05
    """Exploration rate after the decay."""
    epsilon_decay_steps: int = 10_000
    """Env steps after learning_starts over which epsilon decays linearly (0: constant end)."""

    def __post_init__(self):
        super().__post_init__()
        for name in ("num_envs", "buffer_size", "learning_starts", "train_every"):
            require_int_at_least(getattr(self, name), name, 1)
        require(self.batch_size <= self.buffer_size, "batch_size",
                f"{self.batch_size} exceeds buffer_size {self.buffer_size}; lower batch_size or "
                "raise buffer_size.")
        require(self.learning_starts >= self.batch_size, "learning_starts",
                f"{self.learning_starts} is below batch_size {self.batch_size}; the first batch "
                "would repeat transitions. Raise learning_starts to at least batch_size.")
        require(self.learning_starts <= self.buffer_size, "learning_starts",
                f"{self.learning_starts} exceeds buffer_size {self.buffer_size}, so learning "
                "would never start; lower learning_starts or raise buffer_size.")
        for name in ("epsilon_start", "epsilon_end"):
            value = getattr(self, name)
            require(0.0 <= value <= 1.0, name, f"must be in [0, 1], got {value}.")
        require_int_at_least(self.epsilon_decay_steps, "epsilon_decay_steps", 0)

    def replay_feed(self, **offline) -> ReplayFeed:
        """The `ReplayFeed` of these fields; `offline` sets the hybrid fields (Hy-Q)."""
        return ReplayFeed(num_envs=self.num_envs, buffer_size=self.buffer_size,
                          batch_size=self.batch_size, learning_starts=self.learning_starts,
                          train_every=self.train_every, **offline)

    @property
    def env_steps_per_update(self) -> int:
        """Env steps the driver takes between two updates (advances the epsilon schedule)."""
        return self.num_envs * self.train_every


def epsilon_schedule(config: OnlineQConfig) -> optax.Schedule:
    """The linear epsilon schedule: `env_steps` (int32 scalar) -> float32 scalar epsilon."""
    if config.epsilon_decay_steps == 0:
        schedule = optax.constant_schedule(config.epsilon_end)
    else:
        schedule = optax.linear_schedule(
            config.epsilon_start, config.epsilon_end, config.epsilon_decay_steps)
    # optax's constant schedule returns a Python float; the state and metrics want arrays.
    return lambda env_steps: jnp.asarray(schedule(env_steps), jnp.float32)


def make_online_q_agent(config: OnlineQConfig, spec: EnvSpec, feed: ReplayFeed) -> Agent:
    """An epsilon-greedy Q-learning `Agent` fed by `feed` (DQN's, or Hy-Q's hybrid one).

    Args:
        config: the hyper-parameters.
        spec: the environment's spec.
        feed: the replay feed (its offline fields decide whether batches mix in a dataset).

    Returns:
        The `Agent`; `update` also reports `epsilon` and `env_steps`.
    """
    learner = make_q_learner(config, spec, env_steps_per_update=config.env_steps_per_update)
    num_actions = spec.num_actions
    epsilon_at = epsilon_schedule(config)

    def act(state: State, obs: Array, key: PRNGKey) -> tuple[Array, dict]:
        """Epsilon-greedy actions [N] int32 for obs [N, *obs_shape]; extras is empty."""
        greedy = jnp.argmax(learner.q_values(state, obs), axis=-1)
        # One draw serves both coin flips: split + randint + uniform would inline the threefry
        # hash five times into every driver's program, and XLA compiles each copy. floor(u * A)
        # is uniform over actions up to a bias of A / 2**23 (uniform draws 23 mantissa bits).
        explore_u, action_u = jax.random.uniform(key, (2, *greedy.shape))
        random = jnp.minimum(jnp.floor(action_u * num_actions), num_actions - 1).astype(jnp.int32)
        explore = explore_u < epsilon_at(state.env_steps)
        return jnp.where(explore, random, greedy).astype(jnp.int32), {}

    def update(state: State, batch: Transition, key: PRNGKey) -> tuple[State, Metrics]:
        state, metrics = learner.update(state, batch, key)
        metrics = dict(metrics, epsilon=epsilon_at(state.env_steps),
                       env_steps=state.env_steps.astype(jnp.float32))
        return state, metrics

    return Agent(init=learner.init, act=act, update=update, policy=learner.greedy_policy,
                 feed=feed)


__all__ = ["OnlineQConfig", "QLearner", "QLearningConfig", "QNetwork", "Regulariser", "State",
           "check_network_fields", "epsilon_schedule", "make_online_q_agent", "make_q_learner",
           "require_int_at_least"]
