"""DQN with the double-DQN target: Mnih et al. 2015 (Nature), van Hasselt et al. 2016 (AAAI).

Idea: fit Q(s, a) by regressing on bootstrapped one-step targets sampled uniformly from a replay
buffer, with a slowly updated copy of the network (the target network) providing the bootstrap.
Double DQN (van Hasselt et al. 2016, eq. 4) picks the next action with the online network and
evaluates it with the target network, which removes most of the max-operator's overestimation:

    y = r + gamma * (1 - terminated) * Q_target(s', argmax_a Q_online(s', a))

The agent acts epsilon-greedily, with epsilon annealed linearly, and reports the greedy policy.

Deviations from the papers, and why:

* Adam (as CleanRL and most modern ports) instead of the Nature paper's RMSProp, and the squared
  TD error by default with gradients clipped by global norm (`max_grad_norm`). The Nature paper's
  error clipping, i.e. the Huber loss (delta 1), is `loss="huber"`: it suits clipped Atari rewards
  but learns slowly where returns are large (CartPole's reach 100 with gamma 0.99: at 200k steps
  Huber plateaued near 40-140 where MSE reached 300-500).
* `double=False` gives the Nature target `r + gamma * max_a Q_target(s', a)`.
* Truncated transitions (time limits) bootstrap from the true next observation; only terminated
  ones do not (Pardo et al. 2018). The papers treated every episode end as terminal.
* The target network is updated every `target_update_every` *updates* (not env steps) as
  `target <- tau * online + (1 - tau) * target`; `tau = 1` is the papers' hard copy, and
  `target_update_every = 1` with a small `tau` is Polyak averaging.
* The epsilon schedule is keyed on `State.env_steps`, which `update` advances by
  `num_envs * train_every` per call: `act` cannot change the state, and the driver calls `update`
  once per `train_every` iterations of `num_envs` env steps (`rlkit.types.ReplayFeed`). So the
  counter measures env steps since learning started, and epsilon stays at `epsilon_start` while
  the buffer fills up to `learning_starts` (the papers anneal from step 0; with
  `epsilon_start = 1` both explore uniformly during warm-up).
* The replay buffer stores `next_obs` beside `obs` (simple, twice the memory of frame stacking).

Metrics returned by `update` (float32 scalars):

* `loss`: the mean half-squared (or Huber) TD error of the batch, before the step.
* `q_mean`: mean Q(s, a) of the sampled actions; drifting far above plausible returns is
  overestimation.
* `target_mean`: mean bootstrapped target y.
* `td_abs_mean`: mean |Q(s, a) - y|.
* `grad_norm`: global gradient norm before clipping.
* `epsilon`: the exploration rate `act` uses after this update.
* `env_steps`: env steps since learning started, as counted for the epsilon schedule.
"""

from __future__ import annotations

from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from rlkit.errors import RlkitError, require
from rlkit.nets import make_torso
from rlkit.ops import double_q_learning_target
from rlkit.types import Agent, Array, EnvSpec, Metrics, PRNGKey, PyTree, ReplayFeed, Transition


@dataclass(frozen=True)
class Config:
    """DQN hyper-parameters. The defaults learn CartPole and small toy MDPs, whatever the budget."""

    learning_rate: float = 2.5e-4
    """Adam step size."""
    gamma: float = 0.99
    """Discount factor, in [0, 1]."""
    num_envs: int = 8
    """Environments stepped in parallel; each driver iteration adds num_envs transitions."""
    buffer_size: int = 10_000
    """Replay buffer capacity in transitions."""
    batch_size: int = 128
    """Transitions per update."""
    learning_starts: int = 1_000
    """Transitions in the buffer before the first update (batch_size <= it <= buffer_size)."""
    train_every: int = 1
    """Driver iterations (of num_envs env steps each) between updates."""
    target_update_every: int = 100
    """Updates between target-network updates."""
    tau: float = 1.0
    """Target update step: target <- tau * online + (1 - tau) * target; 1 is a hard copy."""
    epsilon_start: float = 1.0
    """Exploration rate when learning starts."""
    epsilon_end: float = 0.05
    """Exploration rate after the decay."""
    epsilon_decay_steps: int = 10_000
    """Env steps after learning_starts over which epsilon decays linearly (0: constant end)."""
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
        require(
            self.learning_rate > 0,
            "learning_rate",
            f"must be > 0, got {self.learning_rate}; try 2.5e-4.",
        )
        require(0.0 <= self.gamma <= 1.0, "gamma", f"must be in [0, 1], got {self.gamma}.")
        for name in (
            "num_envs",
            "buffer_size",
            "batch_size",
            "learning_starts",
            "train_every",
            "target_update_every",
        ):
            value = getattr(self, name)
            require(
                isinstance(value, int) and not isinstance(value, bool) and value >= 1,
                name,
                f"must be an int >= 1, got {value!r}.",
            )
        require(
            self.batch_size <= self.buffer_size,
            "batch_size",
            f"{self.batch_size} exceeds buffer_size {self.buffer_size}; lower batch_size or "
            "raise buffer_size.",
        )
        require(
            self.learning_starts >= self.batch_size,
            "learning_starts",
            f"{self.learning_starts} is below batch_size {self.batch_size}; the first batch "
            "would repeat transitions. Raise learning_starts to at least batch_size.",
        )
        require(
            self.learning_starts <= self.buffer_size,
            "learning_starts",
            f"{self.learning_starts} exceeds buffer_size {self.buffer_size}, so learning "
            "would never start; lower learning_starts or raise buffer_size.",
        )
        require(0.0 < self.tau <= 1.0, "tau", f"must be in (0, 1], got {self.tau}.")
        for name in ("epsilon_start", "epsilon_end"):
            value = getattr(self, name)
            require(0.0 <= value <= 1.0, name, f"must be in [0, 1], got {value}.")
        require(
            isinstance(self.epsilon_decay_steps, int) and self.epsilon_decay_steps >= 0,
            "epsilon_decay_steps",
            f"must be an int >= 0, got {self.epsilon_decay_steps!r}.",
        )
        require(
            self.max_grad_norm is None or self.max_grad_norm > 0,
            "max_grad_norm",
            f"must be > 0 or None (no clipping), got {self.max_grad_norm}.",
        )
        require(
            self.loss in ("huber", "mse"), "loss", f"must be 'huber' or 'mse', got {self.loss!r}."
        )
        require(
            len(self.hidden_sizes) > 0
            and all(isinstance(size, int) and size >= 1 for size in self.hidden_sizes),
            "hidden_sizes",
            f"must be one or more positive ints, got {self.hidden_sizes!r}.",
        )
        require(
            self.activation in ("relu", "tanh"),
            "activation",
            f"must be 'relu' or 'tanh', got {self.activation!r}.",
        )
        require(
            self.cnn in ("nature", "impala"),
            "cnn",
            f"must be 'nature' or 'impala', got {self.cnn!r}.",
        )

    @property
    def env_steps_per_update(self) -> int:
        """Env steps the driver takes between two updates (advances the epsilon schedule)."""
        return self.num_envs * self.train_every

    def validate(self, spec: EnvSpec) -> None:
        """Check the config against an environment; raises `RlkitError` naming the problem."""
        if spec.num_actions < 1:
            raise RlkitError(
                f"env {spec.name!r}: DQN needs discrete actions, got "
                f"num_actions={spec.num_actions}."
            )


@struct.dataclass
class State:
    """DQN's training state; every leaf is an array of fixed shape and dtype from `init` on.

    Attributes:
        params: online Q-network parameters.
        target_params: target-network parameters, a copy (never the same buffers as `params`,
            so a driver may donate the state).
        opt_state: optax state of the online parameters.
        update_step: int32 scalar, updates done so far (drives the target-network period).
        env_steps: int32 scalar, env steps since learning started (drives epsilon).
    """

    params: PyTree
    target_params: PyTree
    opt_state: optax.OptState
    update_step: Array
    env_steps: Array


class QNetwork(nn.Module):
    """A torso (MLP or CNN from `rlkit.nets`) and a linear head: obs [B, ...] -> Q [B, A]."""

    torso: nn.Module
    num_actions: int

    @nn.compact
    def __call__(self, obs: Array) -> Array:
        return nn.Dense(self.num_actions)(self.torso(obs))


def epsilon_schedule(config: Config) -> optax.Schedule:
    """The linear epsilon schedule: `env_steps` (int32 scalar) -> float32 scalar epsilon."""
    if config.epsilon_decay_steps == 0:
        schedule = optax.constant_schedule(config.epsilon_end)
    else:
        schedule = optax.linear_schedule(
            config.epsilon_start, config.epsilon_end, config.epsilon_decay_steps
        )
    # optax's constant schedule returns a Python float; the state and metrics want arrays.
    return lambda env_steps: jnp.asarray(schedule(env_steps), jnp.float32)


def make_agent(config: Config, spec: EnvSpec) -> Agent:
    """Build DQN for an environment.

    Args:
        config: the hyper-parameters.
        spec: the environment's spec (observation shape and dtype, number of actions).

    Returns:
        The `Agent` (init, act, update, policy) fed by a `ReplayFeed`.
    """
    config.validate(spec)
    num_actions = spec.num_actions
    torso = make_torso(spec, config.cnn, config.hidden_sizes, config.activation)
    network = QNetwork(torso, num_actions)
    optimizer = optax.chain(
        optax.clip_by_global_norm(config.max_grad_norm)
        if config.max_grad_norm
        else optax.identity(),
        optax.adam(config.learning_rate),
    )
    epsilon_at = epsilon_schedule(config)

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

    def act(state: State, obs: Array, key: PRNGKey) -> tuple[Array, dict]:
        """Epsilon-greedy actions [N] int32 for obs [N, *obs_shape]; extras is empty."""
        greedy = jnp.argmax(network.apply(state.params, obs), axis=-1)
        # One draw serves both coin flips: split + randint + uniform would inline the threefry
        # hash five times into every driver's program, and XLA compiles each copy. floor(u * A)
        # is uniform over actions up to a bias of A / 2**23 (uniform draws 23 mantissa bits).
        explore_u, action_u = jax.random.uniform(key, (2, *greedy.shape))
        random = jnp.minimum(jnp.floor(action_u * num_actions), num_actions - 1).astype(jnp.int32)
        explore = explore_u < epsilon_at(state.env_steps)
        return jnp.where(explore, random, greedy).astype(jnp.int32), {}

    def loss_fn(params: PyTree, target_params: PyTree, batch: Transition):
        batch_size = batch.action.shape[0]
        # One forward pass over obs and next_obs together: the online net both fits Q(s, a) and
        # selects the double-DQN action at s'.
        q_both = network.apply(params, jnp.concatenate([batch.obs, batch.next_obs]))
        q, q_next_online = q_both[:batch_size], q_both[batch_size:]
        q_next_target = network.apply(target_params, batch.next_obs)
        if not config.double:
            q_next_online = q_next_target
        target = jax.lax.stop_gradient(
            double_q_learning_target(
                batch.reward, batch.terminated, q_next_online, q_next_target, config.gamma
            )
        )
        q_taken = jnp.take_along_axis(q, batch.action[:, None].astype(jnp.int32), axis=-1)[:, 0]
        td_error = q_taken - target
        if config.loss == "huber":
            loss = optax.huber_loss(q_taken, target, delta=1.0).mean()
        else:
            loss = 0.5 * jnp.square(td_error).mean()
        return loss, {
            "q_mean": q_taken.mean(),
            "target_mean": target.mean(),
            "td_abs_mean": jnp.abs(td_error).mean(),
        }

    def update(state: State, batch: Transition, key: PRNGKey) -> tuple[State, Metrics]:
        """One gradient step on a batch with leaves [B, ...]; `key` is unused (deterministic)."""
        del key
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, state.target_params, batch
        )
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        update_step = state.update_step + 1
        target_params = optax.periodic_update(
            optax.incremental_update(params, state.target_params, config.tau),
            state.target_params,
            update_step,
            config.target_update_every,
        )
        env_steps = state.env_steps + config.env_steps_per_update
        state = State(
            params=params,
            target_params=target_params,
            opt_state=opt_state,
            update_step=update_step,
            env_steps=env_steps,
        )
        metrics = {
            "loss": loss,
            **aux,
            "grad_norm": optax.tree.norm(grads),
            "epsilon": epsilon_at(env_steps),
            "env_steps": env_steps,
        }
        return state, {name: value.astype(jnp.float32) for name, value in metrics.items()}

    def policy(state: State, obs: Array) -> Array:
        """Greedy policy as one-hot probabilities [N, A] for obs [N, *obs_shape]."""
        greedy = jnp.argmax(network.apply(state.params, obs), axis=-1)
        return jax.nn.one_hot(greedy, num_actions, dtype=jnp.float32)

    feed = ReplayFeed(
        num_envs=config.num_envs,
        buffer_size=config.buffer_size,
        batch_size=config.batch_size,
        learning_starts=config.learning_starts,
        train_every=config.train_every,
    )
    return Agent(init=init, act=act, update=update, policy=policy, feed=feed)


__all__ = ["Config", "QNetwork", "State", "epsilon_schedule", "make_agent"]
