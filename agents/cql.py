"""CQL for discrete actions: Kumar, Zhou, Tucker and Levine 2020, "Conservative Q-Learning for
Offline Reinforcement Learning" (NeurIPS 2020), the CQL(H) variant on a DQN backbone.

Idea: offline Q-learning over-estimates the value of actions the dataset never tried, and the
greedy policy then picks exactly those. CQL adds a regulariser that pushes Q down on all actions
(softly, through a log-sum-exp) and up on the dataset's actions, so the learned Q lower-bounds the
true value off the data (paper eq. 4, CQL(H)):

    loss = TD loss + alpha * E_{s ~ D}[ logsumexp_a Q(s, a) - E_{a ~ D(.|s)} Q(s, a) ]

The greedy policy of the conservative Q is reported and evaluated.

How it runs: an `OfflineFeed` (offline driver `rlkit.loops.offline`: `python -m rlkit.train cql
--env ENV --dataset DIR`); one `update` is one gradient step on a [batch_size] batch of dataset
rows drawn with replacement. With `--h2o` the round driver (`rlkit.loops.rounds`) feeds the same
update batches of the dataset plus the agent's own rollouts (`rlkit.h2o`).

Deviations and choices, and why:

* The TD part is double DQN's target with a target network (mean squared error by default); the
  paper's discrete experiments used QR-DQN on Atari. The regulariser is the same.
* `alpha` is fixed (`cql_alpha`); the paper's Lagrangian version that tunes alpha to a target gap
  is for continuous control.
* `act` is greedy (the policy offline evaluation and H2O's rollouts use).

Metrics (float32 scalars): `loss` (TD loss plus alpha times the gap), `td_loss`, `cql_gap`
(mean logsumexp Q minus Q of the data action: how far Q is pushed down off the data), `q_mean`,
`target_mean`, `td_abs_mean`, `grad_norm`.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import optax
from flax import struct

from rlkit.errors import (
    check_optimiser_fields,
    require_int_at_least,
    require_number,
    require_one_of,
)
from rlkit.nets import TorsoHead, make_torso
from rlkit.ops import (
    batched_index,
    clipped_adam,
    gradient_step,
    target_network_update,
    td_loss,
)
from rlkit.types import Agent, Array, EnvSpec, Metrics, OfflineFeed, PRNGKey, PyTree, Transition


@dataclass(frozen=True)
class Config:
    """CQL hyper-parameters: DQN's learning fields plus the conservative weight."""

    learning_rate: float = 3e-4
    """Adam step size."""
    gamma: float = 0.99
    """Discount factor, in [0, 1]."""
    batch_size: int = 256
    """Dataset rows per update."""
    total_steps: int = 20_000
    """Gradient updates in a run (offline: no environment steps)."""
    cql_alpha: float = 1.0
    """Weight of the conservative regulariser (the paper tries 0.5 to 5); 0 gives plain DQN."""
    target_update_every: int = 100
    """Updates between target-network updates."""
    tau: float = 1.0
    """Target update step: target <- tau * online + (1 - tau) * target; 1 is a hard copy."""
    max_grad_norm: float | None = 10.0
    """Clip gradients to this global norm; None disables clipping."""
    loss: str = "mse"
    """TD loss: "mse" (half squared error) or "huber" (delta 1)."""
    double: bool = True
    """Double DQN target (van Hasselt et al. 2016); False gives the max target."""
    hidden_sizes: tuple[int, ...] = (128, 128)
    """MLP widths for vector observations."""
    activation: str = "relu"
    """MLP activation: "relu" or "tanh"."""
    cnn: str = "nature"
    """Torso for image observations: "nature", "impala" or "impala-small" (rlkit.nets)."""

    def __post_init__(self):
        check_optimiser_fields(self, learning_rate_hint="try 3e-4.")
        require_number(self.gamma, "gamma", low=0, high=1)
        require_int_at_least(self.target_update_every, "target_update_every", 1)
        require_number(self.cql_alpha, "cql_alpha", low=0)
        require_number(self.tau, "tau", low=0, high=1, low_open=True)
        require_one_of(self.loss, "loss", ("huber", "mse"))


@struct.dataclass
class State:
    """CQL's training state.

    Attributes:
        params: online Q-network parameters.
        target_params: target-network parameters (a copy, never an alias).
        opt_state: optax state of the online parameters.
        update_step: int32 scalar, updates done so far.
    """

    params: PyTree
    target_params: PyTree
    opt_state: optax.OptState
    update_step: Array


def conservative_gap(q: Array, action: Array) -> Array:
    """The CQL(H) regulariser before its weight: mean over the batch of
    logsumexp_a Q(s, a) - Q(s, a_data).

    Args:
        q: [B, A] Q-values of the batch's observations.
        action: [B] int dataset actions.

    Returns:
        A float32 scalar (non-negative up to rounding: logsumexp is at least the maximum).
    """
    return (jax.nn.logsumexp(q, axis=-1) - batched_index(q, action)).mean()


def make_agent(config: Config, spec: EnvSpec) -> Agent:
    """Build discrete CQL(H) for an environment.

    Args:
        config: the hyper-parameters (DQN's learning fields and `cql_alpha`).
        spec: the environment's spec (observation shape and dtype, `num_actions`).

    Returns:
        The `Agent`: `act` and `policy` are greedy in the conservative Q, and `update` takes
        one TD-plus-regulariser step on an `OfflineFeed` batch of `batch_size` rows.
    """
    num_actions = spec.num_actions
    network = TorsoHead(make_torso(spec, config.cnn, config.hidden_sizes, config.activation),
                        num_actions)  # Q [B, A]
    optimizer = clipped_adam(config.learning_rate, config.max_grad_norm)

    def init(key: PRNGKey) -> State:
        params = network.init(key, jnp.zeros((1, *spec.obs_shape), spec.obs_dtype))
        return State(params=params, target_params=jax.tree.map(jnp.copy, params),
                     opt_state=optimizer.init(params), update_step=jnp.zeros((), jnp.int32))

    def loss_fn(params: PyTree, target_params: PyTree, batch: Transition):
        q = network.apply(params, batch.obs)  # [B, A]
        # Stopped parameters: the values at s' only pick the double-DQN action, and a pass over
        # obs and next_obs together would back-propagate zeros through all 2B rows.
        q_next_online = network.apply(jax.lax.stop_gradient(params), batch.next_obs)  # [B, A]
        q_next_target = network.apply(target_params, batch.next_obs)  # [B, A]
        td = td_loss(q, batch.action, batch.reward, batch.terminated, q_next_online,
                     q_next_target, config.gamma, double=config.double, loss=config.loss)
        gap = conservative_gap(q, batch.action)  # scalar, eq. 4's bracket
        loss = td.loss + config.cql_alpha * gap
        return loss, {"td_loss": td.loss, "cql_gap": gap, "q_mean": td.q_taken.mean(),
                      "target_mean": td.target.mean(),
                      "td_abs_mean": jnp.abs(td.td_error).mean()}

    def update(state: State, batch: Transition, key: PRNGKey) -> tuple[State, Metrics]:
        """One gradient step on a batch with leaves [B, ...]; `key` is unused (deterministic)."""
        del key
        params, opt_state, loss, aux, grad_norm = gradient_step(
            optimizer, loss_fn, state.params, state.opt_state, state.target_params, batch)
        update_step = state.update_step + 1
        target_params = target_network_update(params, state.target_params, update_step,
                                              config.tau, config.target_update_every)
        state = State(params=params, target_params=target_params, opt_state=opt_state,
                      update_step=update_step)
        metrics = {"loss": loss, **aux, "grad_norm": grad_norm}
        return state, {name: value.astype(jnp.float32) for name, value in metrics.items()}

    def greedy(state: State, obs: Array) -> Array:
        return jnp.argmax(network.apply(state.params, obs), axis=-1)

    def act(state: State, obs: Array, key: PRNGKey, step: Array) -> tuple[Array, dict]:
        """Greedy actions [N] int32 (key and step unused); extras is empty."""
        del key, step
        return greedy(state, obs).astype(jnp.int32), {}

    def policy(state: State, obs: Array) -> Array:
        """Greedy policy as one-hot probabilities [N, A]."""
        return jax.nn.one_hot(greedy(state, obs), num_actions, dtype=jnp.float32)

    return Agent(init=init, act=act, update=update, policy=policy,
                 feed=OfflineFeed(batch_size=config.batch_size))


__all__ = ["Config", "State", "conservative_gap", "make_agent"]
