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

Intrinsic rewards (`intrinsic = "rnd"` or `"rdd"`, `rlkit.intrinsic`), the RND recipe (Burda et
al. 2019, Section 2.3-2.4; DRND's PPO code, yk7333/DRND): the critic gets a second value head
for the intrinsic return, which is non-episodic (its GAE ignores `terminated` and `truncated`,
discount `intrinsic_gamma`); the policy's advantage is `extrinsic_coef * A_ext + intrinsic_coef *
A_int`; the bonus of each step is that of its next observation, divided by the running std of
its discounted return; the predictor takes one step per minibatch on an
`intrinsic_update_proportion` share of the minibatch's next observations (drawn as
`intrinsic_update_rows` says: an exact subset, or RND's Bernoulli mask). The transform's state
lives in `State.intrinsic`, so checkpoints carry it. Its observation statistics are updated with
every rollout before the rollout's bonus is read, so the first rollout (taken by the initial,
near-uniform policy) initialises them, as RND's random-agent steps do. Readings where RND's
and RDD's papers are silent: V_int after the rollout's last step is V_int(next_obs of that step),
the true next observation (not the reset one); each value loss is weighted by `vf_coef` (RND:
0.5 * (V_ext loss + V_int loss), the same at the default 0.5); `intrinsic_coef` and
`extrinsic_coef` do not act without an intrinsic reward, so plain PPO is unchanged.

Metrics (float32 scalars, means over the iteration's minibatch steps): `loss`, `policy_loss`,
`value_loss`, `entropy`, `approx_kl` (k3 estimator), `clip_fraction`, and `value_mean` (mean
V(obs) of the rollout). With an intrinsic reward also: `intrinsic_reward_mean` (the normalised
bonus the advantages use), `intrinsic_bonus_mean` (the raw bonus), `predictor_loss`,
`value_int_loss` and `value_int_mean`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from rlkit import intrinsic as intrinsic_rewards
from rlkit.errors import check_network_fields, require, require_int_at_least, require_number
from rlkit.nets import make_torso
from rlkit.ops import batched_index, generalized_advantage_estimation, next_state_values
from rlkit.types import Agent, EnvSpec, OnPolicyFeed, PyTree, Transition


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
    """Torso for image observations: "impala", "impala-small" or "nature" (rlkit.nets)."""
    intrinsic: str = "none"
    """Intrinsic reward: none, rnd or rdd (rlkit.intrinsic)."""
    intrinsic_coef: float = 1.0
    """Weight of the intrinsic advantage (>= 0)."""
    extrinsic_coef: float = 2.0
    """Weight of the extrinsic advantage when an intrinsic reward is on (>= 0; RND's 2)."""
    intrinsic_gamma: float = 0.99
    """Discount of the (non-episodic) intrinsic return."""
    intrinsic_output_dim: int = 64
    """Output dimension k of the intrinsic predictor and target."""
    intrinsic_hidden_sizes: tuple[int, ...] = (64, 64)
    """ReLU MLP widths of the intrinsic predictor and target."""
    intrinsic_learning_rate: float = 3e-4
    """Adam step size of the intrinsic predictor."""
    intrinsic_sigma: float = 1.0
    """RDD: standard deviation of the target distribution (> 0)."""
    intrinsic_sigma_network: bool = False
    """RDD: per-state sigma from a frozen random network instead of the fixed sigma."""
    intrinsic_mean_scale: float = 1.0
    """RDD/RND: RMS magnitude of the target mean (the RDD paper's "mean")."""
    intrinsic_readout: str = "mean"
    """RDD: bonus against the target "mean" or a fresh "sample"."""
    intrinsic_update_proportion: float = 0.25
    """Share of each minibatch the predictor trains on, in (0, 1]."""
    intrinsic_update_rows: str = "subset"
    """How that share is drawn: an exact "subset" or RND's Bernoulli "mask" (slower)."""
    intrinsic_count_states: bool = False
    """Count visits per one-hot state in the transform's state (tabular envs, for plots)."""

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
        intrinsic_rewards.check_fields(self, prefix="intrinsic_")
        require_number(self.extrinsic_coef, "extrinsic_coef", low=0)
        require(self.intrinsic == "none" or self.intrinsic_coef > 0 or self.extrinsic_coef > 0,
                "intrinsic_coef", "is 0, and so is extrinsic_coef: every advantage would be "
                "0 and the policy would not learn; set one above 0")
        require_number(self.intrinsic_gamma, "intrinsic_gamma", low=0, high=1, high_open=True)
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
    """PPO's training state; `step` counts gradient steps (int32); `intrinsic` is the intrinsic
    reward transform's `rlkit.intrinsic.State` (None without one)."""

    params: dict
    opt_state: optax.OptState
    step: jax.Array
    intrinsic: PyTree = None


class ActorCritic(nn.Module):
    """Policy logits and a state value: separate MLPs, or one shared CNN torso for images. With
    `intrinsic_head`, a third output: the intrinsic value [B] from the critic's features."""

    spec: EnvSpec
    hidden_sizes: Sequence[int]
    activation: str
    cnn: str
    intrinsic_head: bool = False

    @nn.compact
    def __call__(self, obs: jax.Array) -> tuple[jax.Array, ...]:  # [B, ...] -> [B, A], [B]
        def torso():
            return make_torso(self.spec, self.cnn, self.hidden_sizes, self.activation)

        actor_features = torso()(obs)
        critic_features = actor_features if self.spec.is_image else torso()(obs)
        logits = nn.Dense(self.spec.num_actions, kernel_init=nn.initializers.orthogonal(0.01))(
            actor_features
        )
        value = nn.Dense(1, kernel_init=nn.initializers.orthogonal(1.0))(critic_features)
        if self.intrinsic_head:  # a module added last: the other parameters keep their names
            value_int = nn.Dense(1, kernel_init=nn.initializers.orthogonal(1.0))(critic_features)
            return logits, value[:, 0], value_int[:, 0]
        return logits, value[:, 0]


def make_agent(config: Config, spec: EnvSpec) -> Agent:
    """Build PPO's pure functions for an environment with `spec`."""
    use_intrinsic = config.intrinsic != "none"
    network = ActorCritic(spec, config.hidden_sizes, config.activation, config.cnn,
                          intrinsic_head=use_intrinsic)
    transform = None
    if use_intrinsic:
        transform = intrinsic_rewards.make_transform(
            intrinsic_rewards.config_from_agent(config, return_gamma=config.intrinsic_gamma),
            spec.obs_shape)
    updates_per_iteration = config.update_epochs * config.num_minibatches
    if config.anneal_lr:
        schedule = optax.linear_schedule(
            config.learning_rate, 0.0, config.num_iterations * updates_per_iteration
        )
    else:
        schedule = config.learning_rate
    # optax.flatten: one [P] vector instead of a leaf per layer, so the clip and Adam run as a
    # few kernels instead of a few per leaf (the same maths; PPO's update ~4% faster on a CPU).
    optimizer = optax.flatten(optax.chain(
        optax.clip_by_global_norm(config.max_grad_norm), optax.adam(schedule, eps=1e-5)
    ))

    def init(key: jax.Array) -> State:
        dummy_obs = jnp.zeros((1, *spec.obs_shape), spec.obs_dtype)
        params = network.init(key, dummy_obs)
        state = State(params, optimizer.init(params), jnp.zeros((), jnp.int32))
        if use_intrinsic:  # fold_in: the network's key stays the one plain PPO uses
            state = state.replace(
                intrinsic=transform.init(jax.random.fold_in(key, 1), config.num_envs))
        return state

    def act(state: State, obs: jax.Array, key: jax.Array, step: jax.Array):
        """Actions [N] sampled from pi, with extras log_prob [N] and value [N] (and value_int
        [N] with an intrinsic reward); step unused."""
        del step
        logits, value, *value_int = network.apply(state.params, obs)
        action = jax.random.categorical(key, logits).astype(jnp.int32)
        log_prob = batched_index(jax.nn.log_softmax(logits), action)
        extras = {"log_prob": log_prob, "value": value}
        if use_intrinsic:
            extras["value_int"] = value_int[0]
        return action, extras

    def policy(state: State, obs: jax.Array) -> jax.Array:
        logits = network.apply(state.params, obs)[0]
        return jax.nn.softmax(logits)

    def clipped_value_loss(value, old_value, target):
        value_clipped = old_value + jnp.clip(value - old_value, -config.clip_eps, config.clip_eps)
        value_loss = jnp.square(value - target)
        if config.clip_value_loss:
            value_loss = jnp.maximum(value_loss, jnp.square(value_clipped - target))
        return 0.5 * value_loss.mean()

    def loss_fn(params, minibatch):
        transition, advantage, target, *target_int = minibatch
        logits, value, *value_int = network.apply(params, transition.obs)
        log_probs = jax.nn.log_softmax(logits)
        log_prob = batched_index(log_probs, transition.action)
        value_loss = clipped_value_loss(value, transition.extras["value"], target)

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
        if use_intrinsic:  # RND: 0.5 * (V_ext loss + V_int loss), here each weighted by vf_coef
            value_int_loss = clipped_value_loss(value_int[0], transition.extras["value_int"],
                                                target_int[0])
            total = total + config.vf_coef * value_int_loss
            metrics["loss"] = total
            metrics["value_int_loss"] = value_int_loss
        return total, metrics

    def intrinsic_advantages(state: State, batch: Transition, key: jax.Array):
        """(transform state, A_int [T, N], V_int targets [T, N], metrics) of a rollout."""
        flat_next_obs = batch.next_obs.reshape((config.batch_size, *spec.obs_shape))
        transform_state = transform.observe(state.intrinsic, flat_next_obs)
        raw = transform.bonus(transform_state, flat_next_obs, key)
        raw = raw.reshape(config.rollout_length, config.num_envs)  # [T, N]
        transform_state, reward_int = transform.normalise_reward(transform_state, raw)
        last_value_int = network.apply(state.params, batch.next_obs[-1])[2]  # [N]
        advantage_int, target_int = intrinsic_rewards.non_episodic_gae(
            reward_int, batch.extras["value_int"], last_value_int, config.intrinsic_gamma,
            config.gae_lambda)
        metrics = {"intrinsic_reward_mean": reward_int.mean(), "intrinsic_bonus_mean": raw.mean(),
                   "value_int_mean": batch.extras["value_int"].mean()}
        return transform_state, advantage_int, target_int, metrics

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
        transform_state, intrinsic_metrics, extra = None, {}, ()
        if use_intrinsic:
            key, bonus_key, predictor_key = jax.random.split(key, 3)
            transform_state, advantage_int, target_int, intrinsic_metrics = (
                intrinsic_advantages(state, batch, bonus_key))
            advantage = config.extrinsic_coef * advantage + config.intrinsic_coef * advantage_int
            extra = (target_int,)
        flat = jax.tree.map(
            lambda x: x.reshape((config.batch_size, *x.shape[2:])), (batch, advantage, target,
                                                                     *extra)
        )
        if not use_intrinsic:
            # next_obs is not needed by the loss: drop it so minibatch gathers move less memory.
            flat = (flat[0].replace(next_obs=jnp.zeros((config.batch_size,))), *flat[1:])

        def epoch(carry, epoch_key):
            params, opt_state, transform_state = carry
            order_key, predictor_keys = epoch_key, None
            if use_intrinsic:
                order_key, predictor_key = jax.random.split(epoch_key)
                predictor_keys = jax.random.split(predictor_key, config.num_minibatches)
            order = jax.random.permutation(order_key, config.batch_size)
            minibatches = jax.tree.map(
                lambda x: x[order].reshape((config.num_minibatches, -1, *x.shape[1:])), flat
            )

            def minibatch_step(carry, inputs):
                params, opt_state, transform_state = carry
                minibatch, predictor_key = inputs
                grads, metrics = jax.grad(loss_fn, has_aux=True)(params, minibatch)
                updates, opt_state = optimizer.update(grads, opt_state, params)
                if use_intrinsic:
                    transform_state, predictor_metrics = transform.update(
                        transform_state, minibatch[0].next_obs, predictor_key)
                    metrics = {**metrics, **predictor_metrics}
                return (optax.apply_updates(params, updates), opt_state, transform_state), metrics

            return jax.lax.scan(minibatch_step, (params, opt_state, transform_state),
                                (minibatches, predictor_keys))

        (params, opt_state, transform_state), metrics = jax.lax.scan(
            epoch, (state.params, state.opt_state, transform_state),
            jax.random.split(key, config.update_epochs)
        )
        new_state = State(params, opt_state, state.step + updates_per_iteration, transform_state)
        metrics = jax.tree.map(jnp.mean, metrics)
        metrics["value_mean"] = batch.extras["value"].mean()
        metrics.update(intrinsic_metrics)
        return new_state, metrics

    feed = OnPolicyFeed(num_envs=config.num_envs, rollout_length=config.rollout_length)
    return Agent(init=init, act=act, update=update, policy=policy, feed=feed)
