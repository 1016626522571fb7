"""IQL for discrete actions: Kostrikov, Nair and Levine 2022, "Offline Reinforcement Learning
with Implicit Q-Learning" (ICLR 2022).

Idea: never query Q on actions outside the dataset. A state-value V fits an upper expectile of
the dataset's Q(s, a) (eq. 5), which approximates the maximum over in-support actions; Q regresses
on r + gamma * V(s') (eq. 6), so no max over actions ever looks outside the data; the policy is
extracted by advantage-weighted regression (eq. 7):

    L_V  = E_D[ L2^tau(Q_target(s, a) - V(s)) ],   L2^tau(u) = |tau - 1(u < 0)| * u^2
    L_Q  = E_D[ (r + gamma * (1 - terminated) * V(s') - Q(s, a))^2 ]
    L_pi = -E_D[ min(exp(beta * (Q_target(s, a) - V(s))), max_weight) * log pi(a | s) ]

Q is a pair of networks (clipped double Q: Q_target is the minimum of the two target networks),
and the targets move by Polyak averaging with `tau_target`.

Deviations and choices, and why:

* Discrete actions: pi is a categorical over actions (the paper's experiments are continuous,
  with a Gaussian policy); the losses are unchanged.
* The three losses take one joint gradient step (one Adam over disjoint parameter sets, so each
  network's step equals a separate Adam's), all using V before this step. The reference code
  updates V first and lets Q's target use the new V; the difference is one step of lag.
* Reported policy: argmax of pi by default (`eval_policy = "greedy"`, the discrete counterpart of
  the paper's deterministic evaluation with the Gaussian's mean); `"sample"` reports pi itself.

How it runs: an `OfflineFeed` (offline driver `rlkit.loops.offline`: `python -m rlkit.train iql
--env ENV --dataset DIR`); one `update` is one joint gradient step of V, Q and pi on a
[batch_size] batch of dataset rows drawn with replacement (with `--h2o`, rows of the dataset and
of the agent's own rollouts, `rlkit.loops.rounds`).

Metrics (float32 scalars): `loss` (sum of the three), `value_loss`, `q_loss`, `policy_loss`,
`v_mean`, `q_mean`, `advantage_mean` (mean Q_target - V over the batch), `weight_mean` (mean AWR
weight), `grad_norm`.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import optax
from flax import struct

from rlkit.errors import check_optimiser_fields, require_number, require_one_of
from rlkit.nets import TorsoHead, make_torso
from rlkit.ops import batched_index, clipped_adam, gradient_step, policy_from_logits
from rlkit.types import Agent, Array, EnvSpec, Metrics, OfflineFeed, PRNGKey, PyTree, Transition


@dataclass(frozen=True)
class Config:
    """IQL hyper-parameters (one Adam for the Q, V and policy networks, each an MLP of
    `hidden_sizes`), at the paper's defaults where they carry over."""

    learning_rate: float = 3e-4
    """Adam step size."""
    batch_size: int = 256
    """Dataset rows per update."""
    total_steps: int = 20_000
    """Gradient updates in a run (offline: no environment steps)."""
    max_grad_norm: float | None = 10.0
    """Clip gradients to this global norm; None disables clipping."""
    gamma: float = 0.99
    """Discount factor, in [0, 1]."""
    expectile: float = 0.7
    """tau of the expectile loss, in [0.5, 1): 0.5 is the mean (SARSA), near 1 the max."""
    temperature: float = 3.0
    """beta of advantage-weighted regression: 0 is behaviour cloning, larger is greedier."""
    max_weight: float = 100.0
    """Clip of the exponentiated advantages (the reference code's 100)."""
    tau_target: float = 0.005
    """Polyak step of the target Q-networks."""
    eval_policy: str = "greedy"
    """Policy reported and evaluated: "greedy" (argmax of pi) or "sample" (pi itself)."""
    hidden_sizes: tuple[int, ...] = (128, 128)
    """MLP widths for vector observations (of every network)."""
    activation: str = "relu"
    """MLP activation: "relu" or "tanh"."""
    cnn: str = "nature"
    """Torso for image observations: "nature", "impala" or "impala-small" (rlkit.nets)."""

    def __post_init__(self):
        check_optimiser_fields(self, learning_rate_hint="try 3e-4.")
        require_number(self.gamma, "gamma", low=0, high=1)
        require_number(self.expectile, "expectile", low=0.5, high=1, high_open=True,
                       hint="the paper uses 0.7 to 0.9.")
        require_number(self.temperature, "temperature", low=0)
        require_number(self.max_weight, "max_weight", low=0, low_open=True)
        require_number(self.tau_target, "tau_target", low=0, high=1, low_open=True)
        require_one_of(self.eval_policy, "eval_policy", ("greedy", "sample"))


@struct.dataclass
class State:
    """IQL's training state.

    Attributes:
        params: {"q1", "q2", "value", "policy"} network parameters.
        target_q: {"q1", "q2"} target-network parameters (copies, never aliases).
        opt_state: optax state of `params`.
        update_step: int32 scalar.
    """

    params: PyTree
    target_q: PyTree
    opt_state: optax.OptState
    update_step: Array


def expectile_loss(diff: Array, expectile: float) -> Array:
    """L2^tau(u) = |tau - 1(u < 0)| * u^2, elementwise (paper eq. 5)."""
    weight = jnp.where(diff < 0, 1.0 - expectile, expectile)
    return weight * jnp.square(diff)


def make_agent(config: Config, spec: EnvSpec) -> Agent:
    """Build discrete IQL for an environment.

    Args:
        config: the hyper-parameters (expectile, AWR temperature, networks, optimiser).
        spec: the environment's spec (observation shape and dtype, `num_actions`).

    Returns:
        The `Agent`: `act` samples the AWR policy pi, `policy` reports argmax pi or pi
        (`eval_policy`), and `update` takes the joint V, Q and pi step on an `OfflineFeed` batch
        of `batch_size` rows.
    """
    num_actions = spec.num_actions

    def torso():
        return make_torso(spec, config.cnn, config.hidden_sizes, config.activation)

    q_network = TorsoHead(torso(), num_actions)
    value_network = TorsoHead(torso(), 1)
    policy_network = TorsoHead(torso(), num_actions)
    optimizer = clipped_adam(config.learning_rate, config.max_grad_norm)

    def init(key: PRNGKey) -> State:
        q1_key, q2_key, value_key, policy_key = jax.random.split(key, 4)
        obs = jnp.zeros((1, *spec.obs_shape), spec.obs_dtype)
        params = {"q1": q_network.init(q1_key, obs), "q2": q_network.init(q2_key, obs),
                  "value": value_network.init(value_key, obs),
                  "policy": policy_network.init(policy_key, obs)}
        target_q = jax.tree.map(jnp.copy, {"q1": params["q1"], "q2": params["q2"]})
        return State(params=params, target_q=target_q, opt_state=optimizer.init(params),
                     update_step=jnp.zeros((), jnp.int32))

    def loss_fn(params: PyTree, target_q: PyTree, batch: Transition):
        action = batch.action.astype(jnp.int32)
        # Q_target(s, a): the minimum of the two target networks, as in the paper's code.
        q_target = jnp.minimum(
            batched_index(q_network.apply(target_q["q1"], batch.obs), action),
            batched_index(q_network.apply(target_q["q2"], batch.obs), action))
        value = value_network.apply(params["value"], batch.obs)[:, 0]  # [B]
        # V(s') enters the backup as a constant: stopped parameters keep the backward pass on
        # the B rows of obs (one pass over obs and next_obs would back-propagate zeros too).
        next_value = value_network.apply(jax.lax.stop_gradient(params["value"]),
                                         batch.next_obs)[:, 0]  # [B]
        value_loss = expectile_loss(q_target - value, config.expectile).mean()

        backup = batch.reward + config.gamma * (1.0 - batch.terminated.astype(jnp.float32)) * (
            jax.lax.stop_gradient(next_value))
        q1 = batched_index(q_network.apply(params["q1"], batch.obs), action)
        q2 = batched_index(q_network.apply(params["q2"], batch.obs), action)
        q_loss = 0.5 * (jnp.square(q1 - backup).mean() + jnp.square(q2 - backup).mean())

        advantage = q_target - jax.lax.stop_gradient(value)
        weight = jnp.minimum(jnp.exp(config.temperature * advantage), config.max_weight)
        log_probs = jax.nn.log_softmax(policy_network.apply(params["policy"], batch.obs))
        policy_loss = -(weight * batched_index(log_probs, action)).mean()
        loss = value_loss + q_loss + policy_loss
        return loss, {"value_loss": value_loss, "q_loss": q_loss, "policy_loss": policy_loss,
                      "v_mean": value.mean(), "q_mean": q1.mean(),
                      "advantage_mean": advantage.mean(), "weight_mean": weight.mean()}

    def update(state: State, batch: Transition, key: PRNGKey) -> tuple[State, Metrics]:
        """One joint gradient step of V, Q and pi on a batch [B]; `key` is unused."""
        del key
        params, opt_state, loss, aux, grad_norm = gradient_step(
            optimizer, loss_fn, state.params, state.opt_state, state.target_q, batch)
        target_q = optax.incremental_update({"q1": params["q1"], "q2": params["q2"]},
                                            state.target_q, config.tau_target)
        state = State(params=params, target_q=target_q, opt_state=opt_state,
                      update_step=state.update_step + 1)
        metrics = {"loss": loss, **aux, "grad_norm": grad_norm}
        return state, {name: value.astype(jnp.float32) for name, value in metrics.items()}

    def policy(state: State, obs: Array) -> Array:
        """The reported policy [N, A]: one-hot argmax of pi, or pi."""
        logits = policy_network.apply(state.params["policy"], obs)
        return policy_from_logits(logits, config.eval_policy)

    def act(state: State, obs: Array, key: PRNGKey, step: Array) -> tuple[Array, dict]:
        """Actions [N] int32 sampled from pi (step unused); extras is empty."""
        logits = policy_network.apply(state.params["policy"], obs)
        return jax.random.categorical(key, logits).astype(jnp.int32), {}

    return Agent(init=init, act=act, update=update, policy=policy,
                 feed=OfflineFeed(batch_size=config.batch_size))


__all__ = ["Config", "State", "expectile_loss", "make_agent"]
