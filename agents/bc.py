"""Behaviour cloning: supervised learning of the dataset's actions (Pomerleau 1991; the standard
offline-RL baseline, e.g. in D4RL, Fu et al. 2020).

Idea: fit a categorical policy pi(a | s) by maximum likelihood on the dataset's (obs, action)
pairs, ignoring rewards. It recovers the behaviour policy, so it is as good as the data: expert
data gives an expert, data of mixed quality gives a blend of its sources. CQL and IQL are measured
against it on exactly that kind of data.

Choices, and why:

* The reported policy is the argmax of pi by default (`eval_policy = "greedy"`), the usual
  evaluation of discrete BC; `"sample"` reports pi itself, which reproduces the behaviour policy's
  own return in expectation.

How it runs: an `OfflineFeed` (offline driver `rlkit.loops.offline`: `python -m rlkit.train bc
--env ENV --dataset DIR`); one `update` is one gradient step on a [batch_size] batch of dataset
rows drawn with replacement (with `--h2o`, rows of the dataset and of the agent's own rollouts,
`rlkit.loops.rounds`).

Metrics (float32 scalars): `loss` (mean negative log-likelihood of the data actions), `accuracy`
(share of batch rows where argmax pi is the data action), `entropy` (mean entropy of pi),
`grad_norm`.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import optax
from flax import struct

from rlkit.errors import check_optimiser_fields, require_one_of
from rlkit.nets import TorsoHead, make_torso
from rlkit.ops import batched_index, clipped_adam, gradient_step, policy_from_logits
from rlkit.types import Agent, Array, EnvSpec, Metrics, OfflineFeed, PRNGKey, PyTree, Transition


@dataclass(frozen=True)
class Config:
    """Behaviour-cloning hyper-parameters."""

    learning_rate: float = 3e-4
    """Adam step size."""
    batch_size: int = 256
    """Dataset rows per update."""
    total_steps: int = 10_000
    """Gradient updates in a run (offline: no environment steps)."""
    max_grad_norm: float | None = 10.0
    """Clip gradients to this global norm; None disables clipping."""
    eval_policy: str = "greedy"
    """Policy reported and evaluated: "greedy" (argmax of pi) or "sample" (pi itself)."""
    hidden_sizes: tuple[int, ...] = (128, 128)
    """MLP widths for vector observations."""
    activation: str = "relu"
    """MLP activation: "relu" or "tanh"."""
    cnn: str = "nature"
    """Torso for image observations: "nature", "impala" or "impala-small" (rlkit.nets)."""

    def __post_init__(self):
        check_optimiser_fields(self, learning_rate_hint="try 3e-4.")
        require_one_of(self.eval_policy, "eval_policy", ("greedy", "sample"))


@struct.dataclass
class State:
    """BC's training state.

    Attributes:
        params: policy-network parameters.
        opt_state: optax state.
        update_step: int32 scalar, updates done so far.
    """

    params: PyTree
    opt_state: optax.OptState
    update_step: Array


def make_agent(config: Config, spec: EnvSpec) -> Agent:
    """Build behaviour cloning for an environment with discrete actions.

    Args:
        config: the hyper-parameters (network, optimiser, reported policy).
        spec: the environment's spec (observation shape and dtype, `num_actions`).

    Returns:
        The `Agent`: `act` samples pi(. | obs), `policy` reports argmax pi or pi
        (`eval_policy`), and `update` fits pi to an `OfflineFeed` batch of `batch_size` rows.
    """
    num_actions = spec.num_actions
    torso = make_torso(spec, config.cnn, config.hidden_sizes, config.activation)
    network = TorsoHead(torso, num_actions)  # action logits [B, A]
    optimizer = clipped_adam(config.learning_rate, config.max_grad_norm)

    def init(key: PRNGKey) -> State:
        params = network.init(key, jnp.zeros((1, *spec.obs_shape), spec.obs_dtype))
        return State(params=params, opt_state=optimizer.init(params),
                     update_step=jnp.zeros((), jnp.int32))

    def loss_fn(params: PyTree, batch: Transition):
        logits = network.apply(params, batch.obs)
        log_probs = jax.nn.log_softmax(logits)
        action = batch.action.astype(jnp.int32)
        nll = -batched_index(log_probs, action)
        return nll.mean(), {
            "accuracy": (jnp.argmax(logits, axis=-1) == action).mean(),
            "entropy": -(jnp.exp(log_probs) * log_probs).sum(-1).mean(),
        }

    def update(state: State, batch: Transition, key: PRNGKey) -> tuple[State, Metrics]:
        """One gradient step on a batch [B]; `key` is unused."""
        del key
        params, opt_state, loss, aux, grad_norm = gradient_step(
            optimizer, loss_fn, state.params, state.opt_state, batch)
        state = State(params=params, opt_state=opt_state,
                      update_step=state.update_step + 1)
        metrics = {"loss": loss, **aux, "grad_norm": grad_norm}
        return state, {name: value.astype(jnp.float32) for name, value in metrics.items()}

    def policy(state: State, obs: Array) -> Array:
        """The reported policy [N, A]: one-hot argmax of pi, or pi."""
        logits = network.apply(state.params, obs)
        return policy_from_logits(logits, config.eval_policy)

    def act(state: State, obs: Array, key: PRNGKey, step: Array) -> tuple[Array, dict]:
        """Actions [N] int32 sampled from pi (step unused); extras is empty."""
        logits = network.apply(state.params, obs)
        return jax.random.categorical(key, logits).astype(jnp.int32), {}

    return Agent(init=init, act=act, update=update, policy=policy,
                 feed=OfflineFeed(batch_size=config.batch_size))


__all__ = ["Config", "State", "make_agent"]
