"""Discrete BCQ: Fujimoto, Conti, Ghavamzadeh and Pineau 2019, "Benchmarking Batch Deep
Reinforcement Learning Algorithms" (arXiv:1910.01708), batch-constrained Q-learning for discrete
actions.

Idea: offline Q-learning goes wrong where its greedy policy picks actions the dataset never
tried, whose values nothing corrects. BCQ keeps a generative model G(a | s) of the behaviour
policy (a behaviour-cloning head trained by cross-entropy) and lets the greedy policy and the
target choose only among actions G thinks the behaviour plausibly took (the paper's
Algorithm 1):

    allowed(s)  = { a : G(a | s) / max_a' G(a' | s) > threshold }
    pi(s)       = argmax_{a in allowed(s)} Q(s, a)
    y           = r + gamma * (1 - terminated) * Q_target(s', argmax_{a' in allowed(s')} Q(s', a'))
    loss        = Huber(Q(s, a) - y) - log G(a | s) + 1e-2 * mean(logits_G ** 2)

The threshold interpolates between Q-learning (threshold 0: every action is allowed; double DQN
on the dataset) and behaviour cloning (threshold near 1: only the most likely behaviour action).

How it runs: an `OfflineFeed` (offline driver `rlkit.loops.offline`: `python -m rlkit.train bcq
--env ENV --dataset DIR`); one `update` is one gradient step of Q and G together on a
[batch_size] batch of dataset rows drawn with replacement. With `--h2o` the round driver
(`rlkit.loops.rounds`) feeds the same update batches of the dataset plus the agent's own
rollouts (`rlkit.h2o`).

Readings chosen, deviations, and why:

* Network: one torso (`make_torso`: an MLP for vectors, the Nature or IMPALA CNN for images,
  `cnn`) shared by two linear heads, Q [B, A] and G's logits [B, A], trained by one loss and
  one Adam. The paper's Atari network (and the procgen study's `bcqresnetbase`) shares the
  convolutional layers and gives each head its own hidden layer; its MLP version keeps two
  separate networks. A shared torso with linear heads is the smallest network with both heads.
* The allowed set is strict (`>`), as in the paper's code, so with `bcq_threshold` in [0, 1)
  the most likely action (ratio 1) is always allowed and the masked argmax is always defined.
  The ratio is computed as exp(logit_a - max logit), equal to G(a|s) / max G but free of
  underflow.
* The target's action is chosen by the online Q among the online G's allowed actions and
  evaluated by the target network (double DQN, van Hasselt et al. 2016), as in the paper.
* TD loss: Huber with delta 1 (the paper's smooth L1) by default; `loss = "mse"` is offered.
* The logit penalty 1e-2 * mean(logits ** 2) (mean over batch and actions) is the regulariser
  on G's pre-softmax outputs in the authors' code (sfujim/BCQ, discrete_BCQ) and in the procgen
  study's (facebookresearch/gen_dgrl); `logit_penalty` sets its weight (0 removes it).
* Defaults are the procgen generalisation study's final BCQ row (Mediratta et al. 2024, spec
  6.3): lr 5e-4, batch 512, threshold 0.5, target update every 1000 updates with tau 0.5,
  evaluation epsilon 0.001. The study's reference code uses tau only with Polyak averaging
  switched on; by default it copies the online network every 1000 updates, which `tau = 1`
  gives. The paper itself uses threshold 0.3 and a hard copy every 8000 updates on Atari.
* Acting and the reported policy: epsilon-greedy over the allowed actions with `eval_epsilon`
  (the uniform action is drawn over all actions, as in the paper's code); `eval_epsilon = 0`
  gives the plain constrained greedy policy.
* Gradients are clipped to `max_grad_norm` (10 by default, as the other offline agents here);
  the paper's code does not clip.

Metrics (float32 scalars): `loss` (TD plus imitation plus penalty), `td_loss`, `imitation_loss`
(mean negative log-likelihood of the data actions under G), `logit_penalty` (mean squared logit,
before its weight), `allowed_fraction` (mean share of actions allowed at next_obs), `q_mean`,
`target_mean`, `td_abs_mean`, `grad_norm`.
"""

from __future__ import annotations

from dataclasses import dataclass

import flax.linen as nn
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
from rlkit.nets import make_torso
from rlkit.ops import (
    batched_index,
    clipped_adam,
    epsilon_greedy,
    gradient_step,
    target_network_update,
    td_loss,
)
from rlkit.types import Agent, Array, EnvSpec, Metrics, OfflineFeed, PRNGKey, PyTree, Transition


@dataclass(frozen=True)
class Config:
    """Discrete BCQ hyper-parameters, defaulting to the procgen study's final row (spec 6.3)."""

    learning_rate: float = 5e-4
    """Adam step size."""
    gamma: float = 0.99
    """Discount factor, in [0, 1]."""
    batch_size: int = 512
    """Dataset rows per update."""
    total_steps: int = 20_000
    """Gradient updates in a run (offline: no environment steps)."""
    bcq_threshold: float = 0.5
    """Action a is allowed where G(a|s) / max_a' G(a'|s) > this, in [0, 1): 0 is Q-learning on
    the data, near 1 behaviour cloning (the paper uses 0.3)."""
    logit_penalty: float = 1e-2
    """Weight of the penalty on G's squared logits (mean over batch and actions) in the authors'
    code."""
    target_update_every: int = 1000
    """Updates between target-network updates."""
    tau: float = 0.5
    """Target update step: target <- tau * online + (1 - tau) * target; 1 is a hard copy."""
    eval_epsilon: float = 0.001
    """Probability of a uniformly random action when acting and in the reported policy."""
    max_grad_norm: float | None = 10.0
    """Clip gradients to this global norm; None disables clipping."""
    loss: str = "huber"
    """TD loss: "huber" (delta 1, the paper's) or "mse" (half squared error)."""
    hidden_sizes: tuple[int, ...] = (128, 128)
    """MLP widths for vector observations (the torso both heads share)."""
    activation: str = "relu"
    """MLP activation: "relu" or "tanh"."""
    cnn: str = "nature"
    """Torso for image observations: "nature", "impala" (the procgen study's) or "impala-small"."""

    def __post_init__(self):
        check_optimiser_fields(self, learning_rate_hint="try 5e-4.")
        require_number(self.gamma, "gamma", low=0, high=1)
        require_number(self.bcq_threshold, "bcq_threshold", low=0, high=1, high_open=True,
                       hint="0 allows every action, the paper uses 0.3, the procgen study 0.5.")
        require_number(self.logit_penalty, "logit_penalty", low=0)
        require_int_at_least(self.target_update_every, "target_update_every", 1)
        require_number(self.tau, "tau", low=0, high=1, low_open=True)
        require_number(self.eval_epsilon, "eval_epsilon", low=0, high=1)
        require_one_of(self.loss, "loss", ("huber", "mse"))


@struct.dataclass
class State:
    """BCQ's training state.

    Attributes:
        params: parameters of the shared torso and the Q and G heads.
        target_params: target-network parameters (a copy, never an alias; its G head is unused).
        opt_state: optax state of `params`.
        update_step: int32 scalar, updates done so far.
    """

    params: PyTree
    target_params: PyTree
    opt_state: optax.OptState
    update_step: Array


class QAndImitation(nn.Module):
    """A torso with two linear heads: obs [B, ...] -> (Q [B, A], G's logits [B, A])."""

    torso: nn.Module
    num_actions: int

    @nn.compact
    def __call__(self, obs: Array) -> tuple[Array, Array]:
        features = self.torso(obs)
        return nn.Dense(self.num_actions)(features), nn.Dense(self.num_actions)(features)


def allowed_actions(logits: Array, threshold: float) -> Array:
    """BCQ's action mask (the paper's Algorithm 1): G(a|s) / max_a' G(a'|s) > threshold.

    Args:
        logits: [B, A] G's logits (any shift per row gives the same mask).
        threshold: in [0, 1); the argmax of each row is always allowed.

    Returns:
        [B, A] bool.
    """
    return jnp.exp(logits - logits.max(axis=-1, keepdims=True)) > threshold


def mask_disallowed(q: Array, allowed: Array) -> Array:
    """Q [B, A] with disallowed actions at -inf, so an argmax picks among allowed ones only."""
    return jnp.where(allowed, q, -jnp.inf)


def make_agent(config: Config, spec: EnvSpec) -> Agent:
    """Build discrete BCQ for an environment.

    Args:
        config: the hyper-parameters (threshold, DQN's learning fields, network).
        spec: the environment's spec (observation shape and dtype, `num_actions`).

    Returns:
        The `Agent`: `act` and `policy` are epsilon-greedy (`eval_epsilon`) over the allowed
        actions of Q, and `update` takes one joint step of Q and G on an `OfflineFeed` batch of
        `batch_size` rows.
    """
    num_actions = spec.num_actions
    network = QAndImitation(make_torso(spec, config.cnn, config.hidden_sizes, config.activation),
                            num_actions)
    optimizer = clipped_adam(config.learning_rate, config.max_grad_norm)

    def init(key: PRNGKey) -> State:
        params = network.init(key, jnp.zeros((1, *spec.obs_shape), spec.obs_dtype))
        return State(params=params, target_params=jax.tree.map(jnp.copy, params),
                     opt_state=optimizer.init(params), update_step=jnp.zeros((), jnp.int32))

    def loss_fn(params: PyTree, target_params: PyTree, batch: Transition):
        action = batch.action.astype(jnp.int32)
        q, logits = network.apply(params, batch.obs)  # [B, A] each
        # At s' the network only picks the allowed double-DQN action (no gradient): stopped
        # parameters keep the backward pass on the B rows of obs.
        q_next_online, logits_next = network.apply(jax.lax.stop_gradient(params),
                                                   batch.next_obs)  # [B, A] each
        allowed_next = allowed_actions(logits_next, config.bcq_threshold)  # [B, A]
        q_next_target, _ = network.apply(target_params, batch.next_obs)  # [B, A]
        # Double DQN whose online argmax only sees the allowed actions; the mask carries no
        # gradient (td_loss stops the target's).
        td = td_loss(q, action, batch.reward, batch.terminated,
                     mask_disallowed(q_next_online, allowed_next), q_next_target, config.gamma,
                     double=True, loss=config.loss)
        imitation = -batched_index(jax.nn.log_softmax(logits), action).mean()
        penalty = jnp.square(logits).mean()
        loss = td.loss + imitation + config.logit_penalty * penalty
        return loss, {"td_loss": td.loss, "imitation_loss": imitation, "logit_penalty": penalty,
                      "allowed_fraction": allowed_next.mean(), "q_mean": td.q_taken.mean(),
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

    def masked_q(state: State, obs: Array) -> Array:
        q, logits = network.apply(state.params, obs)  # [N, A] each
        return mask_disallowed(q, allowed_actions(logits, config.bcq_threshold))

    def act(state: State, obs: Array, key: PRNGKey, step: Array) -> tuple[Array, dict]:
        """Epsilon-greedy actions [N] int32 over the allowed actions (step unused)."""
        del step
        return epsilon_greedy(key, masked_q(state, obs), config.eval_epsilon), {}

    def policy(state: State, obs: Array) -> Array:
        """The reported policy [N, A]: (1 - eps) on the allowed argmax plus eps / A on each."""
        greedy = jax.nn.one_hot(jnp.argmax(masked_q(state, obs), axis=-1), num_actions,
                                dtype=jnp.float32)
        return (1.0 - config.eval_epsilon) * greedy + config.eval_epsilon / num_actions

    return Agent(init=init, act=act, update=update, policy=policy,
                 feed=OfflineFeed(batch_size=config.batch_size))


__all__ = ["Config", "QAndImitation", "State", "allowed_actions", "make_agent",
           "mask_disallowed"]
