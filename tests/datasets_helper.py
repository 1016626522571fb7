"""Small offline datasets from toy MDPs with exact models, for the offline and hybrid tests.

`rollout` runs a policy table (typically `rlkit.planning.value_iteration(model).policy`, mixed
with uniform random actions) in the JAX environment itself and records `Transition`s exactly as
a collector would; `save_toy_dataset` writes optimal and random episodes with `save_dataset`,
`save_rollouts` any list of rollouts. Not a test module: imported by tests/test_offline.py and
tests/test_bcq.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import envs
from rlkit import planning
from rlkit.data import DatasetInfo, save_dataset
from rlkit.types import Environment, Transition


def optimal_table(env: Environment) -> jax.Array:
    """[H, S, A] one-hot optimal (time-dependent) policy of `env`'s exact model."""
    horizon = env.spec.max_episode_steps
    # Under jit (one compile, not one per op), which needs the horizon as a static int.
    solve = jax.jit(lambda model: planning.value_iteration(model, horizon=horizon).policy)
    return solve(env.model(env.default_params))


def rollout(env: Environment, table: jax.Array, num_episodes: int, epsilon: float,
            seed: int) -> tuple[Transition, np.ndarray]:
    """Run `num_episodes` episodes of `table` (with probability `epsilon` a uniform action).

    Args:
        env: a tabular JAX environment (with `state_index`; its state has a `step` counter).
        table: [H, S, A] or [S, A] policy probabilities; the argmax is played.
        num_episodes: episodes, each at most `max_episode_steps` long.
        epsilon: probability of a uniformly random action at each step.
        seed: PRNG seed.

    Returns:
        (transitions with numpy leaves [N, ...], episode returns [num_episodes]); only the steps
        before each episode ended are kept.
    """
    horizon = env.spec.max_episode_steps
    if table.ndim == 2:
        table = jnp.broadcast_to(table, (horizon, *table.shape))
    rows, kept = _episodes(env)(jnp.asarray(table), jnp.float32(epsilon),
                                jax.random.split(jax.random.key(seed), num_episodes))
    rows, kept = jax.tree.map(np.asarray, rows), np.asarray(kept)  # [E, H, ...], [E, H]
    returns = (rows.reward * kept).sum(axis=1)
    return jax.tree.map(lambda leaf: leaf[kept], rows), returns


_EPISODES: dict[int, tuple[Environment, Callable]] = {}


def _episodes(env: Environment) -> Callable:
    """`(table [H, S, A], epsilon, keys [E]) -> (rows [E, H], kept [E, H])` for `env`, jitted
    once per env object (table and epsilon are arguments, so rollouts of several policies of
    one env and one episode count share a compile)."""
    cached = _EPISODES.get(id(env))
    if cached is not None and cached[0] is env:
        return cached[1]
    params = env.default_params
    horizon = env.spec.max_episode_steps
    num_actions = env.spec.num_actions

    def episode(table, epsilon, key):
        reset_key, run_key = jax.random.split(key)
        obs, state = env.reset(reset_key, params)

        def step(carry, step_key):
            obs, state, done = carry
            explore_key, action_key, env_key = jax.random.split(step_key, 3)
            greedy = jnp.argmax(table[jnp.minimum(state.step, horizon - 1),
                                      env.state_index(state, params)])
            random = jax.random.randint(action_key, (), 0, num_actions)
            action = jnp.where(jax.random.uniform(explore_key) < epsilon, random,
                               greedy).astype(jnp.int32)
            next_obs, next_state, reward, terminated, truncated, _ = env.step(
                env_key, state, action, params)
            row = (Transition(obs=obs, action=action, reward=reward, terminated=terminated,
                              truncated=truncated, next_obs=next_obs), ~done)
            return (next_obs, next_state, done | terminated | truncated), row

        _, (rows, kept) = jax.lax.scan(step, (obs, state, jnp.zeros((), bool)),
                                       jax.random.split(run_key, horizon))
        return rows, kept

    episodes = jax.jit(jax.vmap(episode, in_axes=(None, None, 0)))
    _EPISODES[id(env)] = (env, episodes)
    return episodes


def concatenate(*parts: Transition) -> Transition:
    return jax.tree.map(lambda *leaves: np.concatenate(leaves), *parts)


def save_toy_dataset(path: Path, env_name: str, env_config, *, optimal_episodes: int,
                     random_episodes: int = 0, epsilon: float = 0.0, seed: int = 0) -> Path:
    """Save optimal (epsilon-greedy) and uniformly random episodes of a toy env as a dataset.

    The dataset's metadata names `env_name` and `env_config`'s fields, as `rlkit.collect` would,
    so `rlkit.train` can infer the environment from it.
    """
    env = envs.make_env(env_name, env_config)
    table = optimal_table(env)
    parts = []
    if optimal_episodes:
        parts.append(rollout(env, table, optimal_episodes, epsilon, seed))
    if random_episodes:
        parts.append(rollout(env, table, random_episodes, 1.0, seed + 1))
    return save_rollouts(path, env_name, env_config, parts,
                         f"{optimal_episodes} optimal (epsilon={epsilon}) + {random_episodes} "
                         "random episodes")


def save_rollouts(path: Path, env_name: str, env_config,
                  parts: list[tuple[Transition, np.ndarray]], behaviour_policy: str) -> Path:
    """Save `rollout` results (transitions, episode returns) of a toy env as one dataset whose
    metadata names the env and its config, as `rlkit.collect` would."""
    env = envs.make_env(env_name, env_config)
    returns = np.concatenate([episode_returns for _, episode_returns in parts])
    info = DatasetInfo(
        env_id=env_name, env_params=dataclasses.asdict(env_config),
        obs_shape=env.spec.obs_shape, obs_dtype=env.spec.obs_dtype,
        num_actions=env.spec.num_actions, behaviour_policy=behaviour_policy,
        behaviour_return=float(returns.mean()), behaviour_return_std=float(returns.std()))
    return save_dataset(path, concatenate(*[rows for rows, _ in parts]), info)
