"""PPO: proximal policy optimisation with a clipped surrogate (Schulman et al. 2017).

The idea: collect `rollout_length` steps from `num_envs` environments with the current policy,
estimate advantages with GAE(lambda), then take several epochs of minibatch gradient steps on
the clipped surrogate `min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A)` plus a value loss and an
entropy bonus. Defaults are PureJaxRL's CartPole settings (itself following the "37 details"
of Huang et al. 2022): Adam with linearly annealed step size, advantage normalisation per
minibatch, orthogonal initialisation, separate actor and critic MLPs (a shared CNN torso for
image observations: IMPALA by default, as in the procgen paper, or Nature).

Where this differs from PureJaxRL's ppo.py, and why:

* Truncation is handled: a time-limit truncation bootstraps from V(final observation) instead of
  being treated as a terminal state (PureJaxRL treats every `done` as terminal). The driver hands
  `update` the true next observation of every step; `rlkit.ops.next_state_values` reuses the
  rollout's values and evaluates only the last step and the (few) truncated steps.
  Any number of truncations per rollout is handled (an env may truncate on its own, more often
  than its time limit).
* The value loss is clipped as in PureJaxRL (`clip_value_loss`), switchable.

How it runs: an `OnPolicyFeed` (on-device driver `rlkit.loops.on_device` for JAX envs, host
driver `rlkit.loops.host` for gymnasium / procgen). Each driver iteration rolls `act` out for
`rollout_length` steps of `num_envs` envs, then one `update` consumes that [T, N] rollout
(`update_epochs` passes of `num_minibatches` minibatches). Reading the agent takes this file,
`rlkit.ops` and that driver; the torsos come from `rlkit.nets`.

Metrics (float32 scalars, means over the iteration's minibatch steps): `loss`, `policy_loss`,
`value_loss`, `entropy`, `approx_kl` (k3 estimator), `clip_fraction`, and `value_mean` (mean
V(obs) of the rollout).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from rlkit.errors import check_network_fields, require, require_int_at_least, require_number
from rlkit.nets import make_torso
from rlkit.ops import batched_index, generalized_advantage_estimation, next_state_values
from rlkit.types import Agent, EnvSpec, OnPolicyFeed, Transition


@dataclass(frozen=True)
class Config:
    """PPO hyperparameters (defaults: PureJaxRL's CartPole configuration)."""

    num_envs: int = 4
    """Environments stepped in parallel per seed."""
    rollout_length: int = 128
    """Steps per environment between updates."""
    total_steps: int = 500_000
    """Environment steps of the whole run, per seed (sets the learning-rate annealing length)."""
    learning_rate: float = 2.5e-4
    """Adam step size (at the start, when annealed)."""
    anneal_lr: bool = True
    """Anneal the step size linearly to zero over the run."""
    update_epochs: int = 4
    """Passes over each rollout."""
    num_minibatches: int = 4
    """Minibatches per epoch; must divide num_envs * rollout_length."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    clip_eps: float = 0.2
    """Clipping range of the probability ratio (and of the value loss)."""
    clip_value_loss: bool = True
    """Clip the value loss around the rollout's values, as PureJaxRL and the 37 details do."""
    ent_coef: float = 0.01
    """Weight of the entropy bonus."""
    vf_coef: float = 0.5
    """Weight of the value loss."""
    max_grad_norm: float = 0.5
    """Global gradient-norm clip."""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """MLP widths for vector observations."""
    activation: str = "tanh"
    """MLP activation: tanh or relu."""
    cnn: str = "impala"
    """Torso for image observations: impala or nature."""

    def __post_init__(self):
        for name in ("num_envs", "rollout_length", "total_steps", "update_epochs",
                     "num_minibatches"):
            require_int_at_least(getattr(self, name), name, 1)
        require_number(self.learning_rate, "learning_rate", low=0, low_open=True,
                       hint="try 2.5e-4.")
        require_number(self.gamma, "gamma", low=0, high=1)
        require_number(self.gae_lambda, "gae_lambda", low=0, high=1)
        require_number(self.clip_eps, "clip_eps", low=0, low_open=True)
        require_number(self.ent_coef, "ent_coef", low=0)
        require_number(self.vf_coef, "vf_coef", low=0)
        require_number(self.max_grad_norm, "max_grad_norm", low=0, low_open=True)
        check_network_fields(self)
        require(self.batch_size % self.num_minibatches == 0, "num_minibatches",
                f"{self.num_minibatches} must divide num_envs * rollout_length "
                f"= {self.batch_size}; pick a divisor of {self.batch_size}")
        require(self.total_steps >= self.batch_size, "total_steps",
                f"{self.total_steps} is less than one rollout ({self.batch_size} steps)")

    @property
    def batch_size(self) -> int:
        """Transitions per rollout (num_envs * rollout_length)."""
        return self.num_envs * self.rollout_length

    @property
    def minibatch_size(self) -> int:
        return self.batch_size // self.num_minibatches

    @property
    def num_iterations(self) -> int:
        """Rollout-and-update iterations in the run."""
        return self.total_steps // self.batch_size


@struct.dataclass
class State:
    """PPO's training state; `step` counts gradient steps (int32)."""

    params: dict
    opt_state: optax.OptState
    step: jax.Array


class ActorCritic(nn.Module):
    """Policy logits and a state value: separate MLPs, or one shared CNN torso for images."""

    spec: EnvSpec
    hidden_sizes: Sequence[int]
    activation: str
    cnn: str

    @nn.compact
    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:  # [B, ...] -> [B, A], [B]
        def torso():
            return make_torso(self.spec, self.cnn, self.hidden_sizes, self.activation)

        actor_features = torso()(obs)
        critic_features = actor_features if self.spec.is_image else torso()(obs)
        logits = nn.Dense(self.spec.num_actions, kernel_init=nn.initializers.orthogonal(0.01))(
            actor_features
        )
        value = nn.Dense(1, kernel_init=nn.initializers.orthogonal(1.0))(critic_features)
        return logits, value[:, 0]


def make_agent(config: Config, spec: EnvSpec) -> Agent:
    """Build PPO's pure functions for an environment with `spec`."""
    network = ActorCritic(spec, config.hidden_sizes, config.activation, config.cnn)
    updates_per_iteration = config.update_epochs * config.num_minibatches
    if config.anneal_lr:
        schedule = optax.linear_schedule(
            config.learning_rate, 0.0, config.num_iterations * updates_per_iteration
        )
    else:
        schedule = config.learning_rate
    optimizer = optax.chain(
        optax.clip_by_global_norm(config.max_grad_norm), optax.adam(schedule, eps=1e-5)
    )

    def init(key: jax.Array) -> State:
        dummy_obs = jnp.zeros((1, *spec.obs_shape), spec.obs_dtype)
        params = network.init(key, dummy_obs)
        return State(params, optimizer.init(params), jnp.zeros((), jnp.int32))

    def act(state: State, obs: jax.Array, key: jax.Array, step: jax.Array):
        """Actions [N] sampled from pi, with extras log_prob [N] and value [N]; step unused."""
        del step
        logits, value = network.apply(state.params, obs)
        action = jax.random.categorical(key, logits).astype(jnp.int32)
        log_prob = batched_index(jax.nn.log_softmax(logits), action)
        return action, {"log_prob": log_prob, "value": value}

    def policy(state: State, obs: jax.Array) -> jax.Array:
        logits, _ = network.apply(state.params, obs)
        return jax.nn.softmax(logits)

    def loss_fn(params, minibatch):
        transition, advantage, target = minibatch
        logits, value = network.apply(params, transition.obs)
        log_probs = jax.nn.log_softmax(logits)
        log_prob = batched_index(log_probs, transition.action)
        old_value = transition.extras["value"]
        value_clipped = old_value + jnp.clip(value - old_value, -config.clip_eps, config.clip_eps)
        value_loss = jnp.square(value - target)
        if config.clip_value_loss:
            value_loss = jnp.maximum(value_loss, jnp.square(value_clipped - target))
        value_loss = 0.5 * value_loss.mean()

        log_ratio = log_prob - transition.extras["log_prob"]
        ratio = jnp.exp(log_ratio)
        advantage = (advantage - advantage.mean()) / (advantage.std() + 1e-8)
        surrogate = jnp.minimum(
            ratio * advantage, jnp.clip(ratio, 1 - config.clip_eps, 1 + config.clip_eps) * advantage
        )
        policy_loss = -surrogate.mean()
        entropy = -(jnp.exp(log_probs) * log_probs).sum(-1).mean()
        total = policy_loss + config.vf_coef * value_loss - config.ent_coef * entropy
        metrics = {
            "loss": total,
            "policy_loss": policy_loss,
            "value_loss": value_loss,
            "entropy": entropy,
            # k3 estimator of KL(old || new) (Schulman's "approximating KL" note).
            "approx_kl": ((ratio - 1) - log_ratio).mean(),
            "clip_fraction": (jnp.abs(ratio - 1) > config.clip_eps).mean(),
        }
        return total, metrics

    def update(state: State, batch: Transition, key: jax.Array):
        """One PPO iteration on a rollout with leaves [rollout_length, num_envs, ...]."""
        next_value = next_state_values(
            lambda obs: network.apply(state.params, obs)[1],
            batch.extras["value"],
            batch.next_obs,
            batch.truncated,
            spec.max_episode_steps,
        )
        advantage, target = generalized_advantage_estimation(
            batch.reward,
            batch.extras["value"],
            next_value,
            batch.terminated,
            batch.truncated,
            config.gamma,
            config.gae_lambda,
        )
        flat = jax.tree.map(
            lambda x: x.reshape((config.batch_size, *x.shape[2:])), (batch, advantage, target)
        )
        # next_obs is not needed by the loss: drop it so minibatch gathers move less memory.
        flat = (flat[0].replace(next_obs=jnp.zeros((config.batch_size,))), *flat[1:])

        def epoch(carry, epoch_key):
            params, opt_state = carry
            order = jax.random.permutation(epoch_key, config.batch_size)
            minibatches = jax.tree.map(
                lambda x: x[order].reshape((config.num_minibatches, -1, *x.shape[1:])), flat
            )

            def minibatch_step(carry, minibatch):
                params, opt_state = carry
                grads, metrics = jax.grad(loss_fn, has_aux=True)(params, minibatch)
                updates, opt_state = optimizer.update(grads, opt_state, params)
                return (optax.apply_updates(params, updates), opt_state), metrics

            return jax.lax.scan(minibatch_step, (params, opt_state), minibatches)

        (params, opt_state), metrics = jax.lax.scan(
            epoch, (state.params, state.opt_state), jax.random.split(key, config.update_epochs)
        )
        new_state = State(params, opt_state, state.step + updates_per_iteration)
        metrics = jax.tree.map(jnp.mean, metrics)
        metrics["value_mean"] = batch.extras["value"].mean()
        return new_state, metrics

    feed = OnPolicyFeed(num_envs=config.num_envs, rollout_length=config.rollout_length)
    return Agent(init=init, act=act, update=update, policy=policy, feed=feed)
