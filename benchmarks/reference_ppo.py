"""A minimal reference PPO built the way PureJaxRL's `purejaxrl/ppo.py` is built.

This is the baseline that `ppo_throughput.py` measures rlkit's PPO against, so it keeps
PureJaxRL's structure on purpose, including the parts rlkit does differently:

* `make_train(config)` returns `train(key)`: the whole run is one pure function, jitted once by
  the caller and `vmap`-ed over seeds.
* `lax.scan` over updates; inside each update a `lax.scan` over `num_steps` env steps with
  gymnax's auto-resetting `env.step`, then GAE from the last value, then `lax.scan` over epochs
  and, inside, over minibatches of one shuffled permutation per epoch.
* A LogWrapper-like tracker carries running episode returns in the env state and adds them to
  the env's `info`; every step's `info` is stacked and returned (PureJaxRL's `metrics`), which is
  part of what PureJaxRL costs.
* Termination and truncation are merged into one `done` (PureJaxRL does not bootstrap through
  time limits).
* Separate tanh 64x64 actor and critic MLPs with orthogonal init (sqrt(2) hidden, 0.01 policy
  head, 1.0 value head), Adam(eps=1e-5) after global-norm clipping, learning rate annealed
  linearly per update, clipped value loss, per-minibatch advantage normalisation.

Where it departs from PureJaxRL, and why:

* The categorical distribution is written out with `log_softmax` because distrax is not a
  dependency of this project; the maths (sample, log-prob, entropy) is the same.
* gymnax 1.0 returns `terminated` and `truncated` separately; they are OR-ed into PureJaxRL's
  single `done`. gymnax 1.0 also adds `terminated`, `truncated` and `final_observation` to
  `info`; they are dropped, so the stacked `info` holds what PureJaxRL's held with the gymnax it
  was written for (`discount` plus the tracker's four fields, 17 bytes per env step). Keeping
  them doubled that, and at 2048 seeds the program no longer fitted in an H200's memory.
* No FlattenObservationWrapper: CartPole's observation is already flat, so it would be a no-op.

Self-contained on purpose (jax, flax, optax, gymnax only; no rlkit imports) so that it measures
PureJaxRL's approach and not rlkit's building blocks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import flax.linen as nn
import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from flax.training.train_state import TrainState


@dataclass(frozen=True)
class Config:
    """PureJaxRL's CartPole-v1 hyperparameters (purejaxrl/ppo.py's `config`)."""

    env_name: str = "CartPole-v1"
    learning_rate: float = 2.5e-4
    num_envs: int = 4
    num_steps: int = 128
    total_timesteps: int = 500_000
    update_epochs: int = 4
    num_minibatches: int = 4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_eps: float = 0.2
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    anneal_lr: bool = True

    @property
    def num_updates(self) -> int:
        return self.total_timesteps // self.num_steps // self.num_envs

    @property
    def minibatch_size(self) -> int:
        return self.num_envs * self.num_steps // self.num_minibatches

    @property
    def env_steps_per_run(self) -> int:
        """Env steps one seed actually takes (total_timesteps rounded down to whole updates)."""
        return self.num_updates * self.num_steps * self.num_envs


# ---------------------------------------------------------------------------------------------
# Episode-return tracking (PureJaxRL's LogWrapper, adapted to gymnax 1.0's step signature)
# ---------------------------------------------------------------------------------------------


@struct.dataclass
class LogEnvState:
    env_state: Any
    episode_returns: jax.Array
    episode_lengths: jax.Array
    returned_episode_returns: jax.Array
    returned_episode_lengths: jax.Array
    timestep: jax.Array


class LogWrapper:
    """Tracks the return of the episode in progress and of the last finished one.

    `step` returns PureJaxRL's five values `(obs, state, reward, done, info)`; the finished
    episode's return is in `info["returned_episode_returns"]`, valid where
    `info["returned_episode"]` is true.
    """

    def __init__(self, env):
        self._env = env

    def reset(self, key, params):
        obs, env_state = self._env.reset(key, params)
        zero_f, zero_i = jnp.float32(0.0), jnp.int32(0)
        return obs, LogEnvState(env_state, zero_f, zero_i, zero_f, zero_i, zero_i)

    def step(self, key, state, action, params):
        obs, env_state, reward, terminated, truncated, info = self._env.step(
            key, state.env_state, action, params
        )
        # PureJaxRL has a single `done`: episodes cut by the time limit are treated as ended.
        done = jnp.logical_or(terminated, truncated)
        new_return = state.episode_returns + reward
        new_length = state.episode_lengths + 1
        state = LogEnvState(
            env_state=env_state,
            episode_returns=new_return * (1 - done),
            episode_lengths=new_length * (1 - done),
            returned_episode_returns=jnp.where(done, new_return, state.returned_episode_returns),
            returned_episode_lengths=jnp.where(done, new_length, state.returned_episode_lengths),
            timestep=state.timestep + 1,
        )
        info = {
            "discount": info["discount"],
            "returned_episode_returns": state.returned_episode_returns,
            "returned_episode_lengths": state.returned_episode_lengths,
            "timestep": state.timestep,
            "returned_episode": done,
        }
        return obs, state, reward, done, info


# ---------------------------------------------------------------------------------------------
# Network
# ---------------------------------------------------------------------------------------------


class ActorCritic(nn.Module):
    """Separate tanh 64x64 actor and critic; returns (logits [..., A], value [...])."""

    num_actions: int

    @nn.compact
    def __call__(self, x):
        dense = lambda size, scale: nn.Dense(
            size, kernel_init=nn.initializers.orthogonal(scale), bias_init=nn.initializers.zeros
        )
        actor = nn.tanh(dense(64, np.sqrt(2))(x))
        actor = nn.tanh(dense(64, np.sqrt(2))(actor))
        # A 0.01 policy head starts the policy near uniform (Andrychowicz et al. 2021).
        logits = dense(self.num_actions, 0.01)(actor)
        critic = nn.tanh(dense(64, np.sqrt(2))(x))
        critic = nn.tanh(dense(64, np.sqrt(2))(critic))
        value = dense(1, 1.0)(critic)
        return logits, jnp.squeeze(value, axis=-1)


def _log_prob(logits, action):
    log_probs = jax.nn.log_softmax(logits)
    return jnp.take_along_axis(log_probs, action[..., None], axis=-1)[..., 0]


def _entropy(logits):
    log_probs = jax.nn.log_softmax(logits)
    return -jnp.sum(jnp.exp(log_probs) * log_probs, axis=-1)


class Transition(NamedTuple):
    done: jax.Array
    action: jax.Array
    value: jax.Array
    reward: jax.Array
    log_prob: jax.Array
    obs: jax.Array
    info: dict


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


def make_train(config: Config) -> Callable[[jax.Array], dict]:
    """Builds `train(key) -> {"runner_state", "metrics"}`, one whole PPO run as a pure function.

    `metrics` is the tracker's `info` stacked over every env step: leaves shaped
    [num_updates, num_steps, num_envs, ...].
    """
    base_env, env_params = gymnax.make(config.env_name)
    env = LogWrapper(base_env)
    num_actions = base_env.action_space(env_params).n
    obs_shape = base_env.observation_space(env_params).shape
    num_updates = config.num_updates
    network = ActorCritic(num_actions)

    def linear_schedule(count):
        # `count` counts optimiser steps; the rate drops once per update, to zero at the end.
        update_index = count // (config.num_minibatches * config.update_epochs)
        return config.learning_rate * (1.0 - update_index / num_updates)

    def train(key):
        key, key_init, key_reset, key_runner = jax.random.split(key, 4)
        params = network.init(key_init, jnp.zeros(obs_shape))
        lr = linear_schedule if config.anneal_lr else config.learning_rate
        tx = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(lr, eps=1e-5))
        train_state = TrainState.create(apply_fn=network.apply, params=params, tx=tx)
        reset_keys = jax.random.split(key_reset, config.num_envs)
        obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(reset_keys, env_params)

        def update_step(runner_state, _):
            def env_step(runner_state, _):
                train_state, env_state, last_obs, key = runner_state
                key, key_action, key_step = jax.random.split(key, 3)
                logits, value = network.apply(train_state.params, last_obs)
                action = jax.random.categorical(key_action, logits)
                log_prob = _log_prob(logits, action)
                step_keys = jax.random.split(key_step, config.num_envs)
                obs, env_state, reward, done, info = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
                    step_keys, env_state, action, env_params
                )
                transition = Transition(done, action, value, reward, log_prob, last_obs, info)
                return (train_state, env_state, obs, key), transition

            runner_state, traj_batch = jax.lax.scan(env_step, runner_state, None, config.num_steps)
            train_state, env_state, last_obs, key = runner_state
            _, last_value = network.apply(train_state.params, last_obs)

            def gae_step(carry, transition):
                gae, next_value = carry
                not_done = 1.0 - transition.done
                delta = transition.reward + config.gamma * next_value * not_done - transition.value
                gae = delta + config.gamma * config.gae_lambda * not_done * gae
                return (gae, transition.value), gae

            _, advantages = jax.lax.scan(
                gae_step,
                (jnp.zeros_like(last_value), last_value),
                traj_batch,
                reverse=True,
                unroll=16,
            )
            targets = advantages + traj_batch.value

            def update_epoch(update_state, _):
                def update_minibatch(train_state, minibatch):
                    traj, gae, target = minibatch

                    def loss_fn(params):
                        logits, value = network.apply(params, traj.obs)
                        log_prob = _log_prob(logits, traj.action)
                        value_clipped = traj.value + jnp.clip(
                            value - traj.value, -config.clip_eps, config.clip_eps
                        )
                        value_loss = (
                            0.5
                            * jnp.maximum(
                                jnp.square(value - target), jnp.square(value_clipped - target)
                            ).mean()
                        )
                        ratio = jnp.exp(log_prob - traj.log_prob)
                        adv = (gae - gae.mean()) / (gae.std() + 1e-8)
                        actor_loss = -jnp.minimum(
                            ratio * adv,
                            jnp.clip(ratio, 1.0 - config.clip_eps, 1.0 + config.clip_eps) * adv,
                        ).mean()
                        entropy = _entropy(logits).mean()
                        total = actor_loss + config.vf_coef * value_loss - config.ent_coef * entropy
                        return total, (value_loss, actor_loss, entropy)

                    (total, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
                        train_state.params
                    )
                    return train_state.apply_gradients(grads=grads), (total, aux)

                train_state, traj_batch, advantages, targets, key = update_state
                key, key_perm = jax.random.split(key)
                batch_size = config.minibatch_size * config.num_minibatches
                permutation = jax.random.permutation(key_perm, batch_size)
                batch = (traj_batch, advantages, targets)
                batch = jax.tree.map(lambda x: x.reshape((batch_size,) + x.shape[2:]), batch)
                shuffled = jax.tree.map(lambda x: jnp.take(x, permutation, axis=0), batch)
                minibatches = jax.tree.map(
                    lambda x: x.reshape((config.num_minibatches, -1) + x.shape[1:]), shuffled
                )
                train_state, losses = jax.lax.scan(update_minibatch, train_state, minibatches)
                return (train_state, traj_batch, advantages, targets, key), losses

            update_state = (train_state, traj_batch, advantages, targets, key)
            update_state, _ = jax.lax.scan(update_epoch, update_state, None, config.update_epochs)
            train_state, key = update_state[0], update_state[-1]
            return (train_state, env_state, last_obs, key), traj_batch.info

        runner_state = (train_state, env_state, obs, key_runner)
        runner_state, metrics = jax.lax.scan(update_step, runner_state, None, num_updates)
        return {"runner_state": runner_state, "metrics": metrics}

    return train


def mean_episode_return(metrics: dict, last_fraction: float = 0.1) -> np.ndarray:
    """Mean return of the episodes finished in the last `last_fraction` of updates, per seed.

    Args:
        metrics: `train`'s metrics, leaves [..., num_updates, num_steps, num_envs] (any leading
            seed axes).
        last_fraction: share of the final updates to average over.

    Returns:
        [...] per-seed mean of the per-update mean finished-episode return (NaN-skipping, so an
        update in which no episode ended does not count).
    """
    returns = np.asarray(metrics["returned_episode_returns"], dtype=np.float64)
    finished = np.asarray(metrics["returned_episode"], dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_update = (returns * finished).sum((-1, -2)) / finished.sum((-1, -2))  # NaN if none
    num_last = max(1, int(round(per_update.shape[-1] * last_fraction)))
    return np.nanmean(per_update[..., -num_last:], axis=-1)


if __name__ == "__main__":
    # PureJaxRL's own entry point: one seed, jitted once.
    config = Config()
    train_jit = jax.jit(make_train(config))
    out = jax.block_until_ready(train_jit(jax.random.key(30)))
    print("final mean episode return:", float(mean_episode_return(out["metrics"])))
