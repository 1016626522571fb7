"""A minimal reference DQN written the way PureJaxRL writes its agents (`purejaxrl/dqn.py`).

The baseline `cpu_ratios.py` measures rlkit's DQN (`agents/dqn.py` on the on-device driver)
against. `make_train(config)` returns `train(key)`: the whole run is one pure function, jitted
once by the caller: a `lax.scan` over iterations, each stepping `num_envs` gymnax envs once with
epsilon-greedy actions, writing them into a circular replay buffer held in the scan's carry, and
(once the buffer holds `learning_starts` transitions) one double-DQN gradient step on a uniform
batch under `lax.cond`, with a hard target copy every `target_update_every` updates.

Hyperparameters are rlkit's DQN defaults (`agents/dqn.py`'s `Config`), so both programs do the
same work per env step: Adam 2.5e-4 after global-norm clipping at 10, gamma 0.99, batch 128,
8 envs, a 10,000-transition buffer, updates from 1,000 transitions on, every iteration, target
copied every 100 updates, epsilon 1 until 1,000 env steps then linear to 0.05 over 10,000,
squared TD error, ReLU 128x128 MLP with orthogonal init (sqrt 2, as `rlkit.nets`).

Where it departs from PureJaxRL's dqn.py, and why: the buffer is a plain circular array of
transitions instead of flashbax (not a dependency), storing gymnax 1.0's `final_observation` as
the next observation (so time-limit truncations bootstrap, as rlkit does); the episode-return
tracker is the reference PPO's `LogWrapper`. Self-contained (jax, flax, optax, gymnax).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct


@dataclass(frozen=True)
class Config:
    """rlkit's DQN defaults on CartPole-v1."""

    learning_rate: float = 2.5e-4
    max_grad_norm: float = 10.0
    gamma: float = 0.99
    batch_size: int = 128
    num_envs: int = 8
    buffer_size: int = 10_000
    learning_starts: int = 1_000
    target_update_every: int = 100
    epsilon_start: float = 1.0
    epsilon_end: float = 0.05
    epsilon_decay_steps: int = 10_000
    total_timesteps: int = 100_000

    @property
    def num_iterations(self) -> int:
        return self.total_timesteps // self.num_envs


class QNetwork(nn.Module):
    num_actions: int

    @nn.compact
    def __call__(self, x):
        init = nn.initializers.orthogonal(np.sqrt(2))
        for _ in range(2):
            x = nn.relu(nn.Dense(128, kernel_init=init, bias_init=nn.initializers.zeros)(x))
        return nn.Dense(self.num_actions, kernel_init=init)(x)


@struct.dataclass
class Buffer:
    obs: jax.Array  # [C, obs_dim]
    action: jax.Array  # [C] int32
    reward: jax.Array  # [C]
    next_obs: jax.Array  # [C, obs_dim]
    terminated: jax.Array  # [C] bool
    position: jax.Array  # int32, next row to write
    size: jax.Array  # int32, rows written (<= C)


def make_train(config: Config):
    env, env_params = gymnax.make("CartPole-v1")
    num_actions = env.action_space(env_params).n
    network = QNetwork(num_actions)
    optimizer = optax.chain(optax.clip_by_global_norm(config.max_grad_norm),
                            optax.adam(config.learning_rate))
    epsilon_decay = optax.linear_schedule(config.epsilon_start, config.epsilon_end,
                                          config.epsilon_decay_steps)
    capacity = config.buffer_size

    def loss_fn(params, target_params, obs, action, reward, next_obs, terminated):
        q = network.apply(params, obs)
        q_taken = jnp.take_along_axis(q, action[:, None], axis=1)[:, 0]
        next_action = jnp.argmax(network.apply(params, next_obs), axis=1)
        q_next = jnp.take_along_axis(network.apply(target_params, next_obs),
                                     next_action[:, None], axis=1)[:, 0]
        target = reward + config.gamma * (1.0 - terminated) * jax.lax.stop_gradient(q_next)
        return jnp.mean((q_taken - target) ** 2)

    def train(key):
        key, init_key, reset_key = jax.random.split(key, 3)
        obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(
            jax.random.split(reset_key, config.num_envs), env_params)
        params = network.init(init_key, obs)
        obs_dim = obs.shape[1]
        buffer = Buffer(obs=jnp.zeros((capacity, obs_dim)), action=jnp.zeros(capacity, jnp.int32),
                        reward=jnp.zeros(capacity), next_obs=jnp.zeros((capacity, obs_dim)),
                        terminated=jnp.zeros(capacity, bool), position=jnp.int32(0),
                        size=jnp.int32(0))
        runner = (params, params, optimizer.init(params), jnp.int32(0), buffer, env_state, obs,
                  jnp.zeros(config.num_envs), key)

        def iteration(runner, step):
            params, target_params, opt_state, updates, buffer, env_state, obs, ep_ret, key = runner
            key, act_key, explore_key, step_key, sample_key = jax.random.split(key, 5)
            env_steps = step * config.num_envs
            epsilon = epsilon_decay(jnp.maximum(env_steps - config.learning_starts, 0))
            greedy = jnp.argmax(network.apply(params, obs), axis=1)
            random_action = jax.random.randint(act_key, greedy.shape, 0, num_actions)
            explore = jax.random.uniform(explore_key, greedy.shape) < epsilon
            action = jnp.where(explore, random_action, greedy)
            next_obs, env_state, reward, terminated, truncated, info = jax.vmap(
                env.step, in_axes=(0, 0, 0, None))(
                jax.random.split(step_key, config.num_envs), env_state, action, env_params)
            done = jnp.logical_or(terminated, truncated)
            ep_ret = ep_ret + reward
            episode_return = jnp.where(done, ep_ret, jnp.nan)
            ep_ret = jnp.where(done, 0.0, ep_ret)
            rows = (buffer.position + jnp.arange(config.num_envs)) % capacity
            buffer = Buffer(obs=buffer.obs.at[rows].set(obs),
                            action=buffer.action.at[rows].set(action),
                            reward=buffer.reward.at[rows].set(reward),
                            next_obs=buffer.next_obs.at[rows].set(info["final_observation"]),
                            terminated=buffer.terminated.at[rows].set(terminated),
                            position=(buffer.position + config.num_envs) % capacity,
                            size=jnp.minimum(buffer.size + config.num_envs, capacity))

            def learn(args):
                params, target_params, opt_state, updates = args
                idx = jax.random.randint(sample_key, (config.batch_size,), 0, buffer.size)
                grads = jax.grad(loss_fn)(params, target_params, buffer.obs[idx],
                                          buffer.action[idx], buffer.reward[idx],
                                          buffer.next_obs[idx], buffer.terminated[idx])
                update, opt_state = optimizer.update(grads, opt_state, params)
                params = optax.apply_updates(params, update)
                updates = updates + 1
                copy = updates % config.target_update_every == 0
                target_params = jax.tree.map(lambda p, t: jnp.where(copy, p, t), params,
                                             target_params)
                return params, target_params, opt_state, updates

            params, target_params, opt_state, updates = jax.lax.cond(
                buffer.size >= config.learning_starts, learn, lambda args: args,
                (params, target_params, opt_state, updates))
            runner = (params, target_params, opt_state, updates, buffer, env_state, next_obs,
                      ep_ret, key)
            return runner, episode_return

        runner, episode_returns = jax.lax.scan(iteration, runner,
                                               jnp.arange(config.num_iterations))
        return {"episode_returns": episode_returns, "updates": runner[3]}  # [I, N], scalar

    return train


def final_return(out: dict[str, Any], last_fraction: float = 0.1) -> float:
    """Mean return of the episodes that ended in the last `last_fraction` of iterations."""
    returns = np.asarray(out["episode_returns"])
    tail = returns[-max(1, int(len(returns) * last_fraction)):]
    return float(np.nanmean(tail))


__all__ = ["Config", "final_return", "make_train"]
