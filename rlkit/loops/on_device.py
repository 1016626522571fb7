"""The on-device driver ("Anakin"): environment and agent inside one compiled program.

`make_on_device_trainer` returns a `Trainer` whose `run` is
`jax.jit(jax.vmap(chunk), donate_argnums=0)` around a `lax.scan` over training iterations, the
only jit boundary of a run (PureJaxRL's structure). The seed axis is the vmapped axis; with a
`jax.sharding.Mesh` it is also split over devices (no communication: seeds are independent).

An iteration depends on the agent's feed:

* `OnPolicyFeed`: scan `rollout_length` steps of `num_envs` environments, then one `update` on the
  whole rollout ([T, N, ...] leaves).
* `ReplayFeed`: step every environment once, add the transitions to the replay buffer, and run
  `update` on a uniform batch every `train_every` iterations once `learning_starts` transitions
  are stored (`lax.cond`, so the program stays one program). A hybrid feed (Hy-Q) mixes rows of
  an offline dataset into every batch (`rlkit.data.hybrid`); the dataset is an argument of the
  compiled program shared by all seeds.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from rlkit.errors import RlkitError
from rlkit.loops.common import (
    ENV_STEPS,
    BoundRun,
    Trainer,
    autoreset_step,
    example_transition,
    make_replay_sampling,
    over_seeds,
    replay_learn,
    track_episodes,
)
from rlkit.types import Agent, Environment, OnPolicyFeed, PyTree, ReplayFeed, Transition


@struct.dataclass
class Carry:
    """Everything one seed's run needs between iterations (all arrays: checkpointable)."""

    agent_state: PyTree
    env_state: PyTree
    obs: jax.Array  # [N, *obs_shape]
    key: jax.Array
    episode_return: jax.Array  # [N] float32, running
    episode_length: jax.Array  # [N] int32, running
    iteration: jax.Array  # int32
    buffer: PyTree = None  # replay agents only


def make_on_device_trainer(
    agent: Agent,
    env: Environment,
    env_params: Any,
    iterations_per_chunk: int,
    num_eval_episodes: int = 16,
    mesh: jax.sharding.Mesh | None = None,
    dataset: PyTree = None,
) -> Trainer:
    """Compile a whole training run of `agent` on the JAX environment `env`.

    Args:
        agent: the agent's pure functions and feed.
        env: a functional environment (no auto-reset; this driver adds it).
        env_params: the environment's parameters (shared by all seeds).
        iterations_per_chunk: iterations per `run` call (logging / checkpoint granularity).
        num_eval_episodes: episodes per seed in `evaluate` for envs without an exact model.
        mesh: optional 1-D mesh with axis "seed": the seed axis is sharded over its devices.
        dataset: for hybrid feeds, the offline `Transition` on device (leaves [M, ...]).

    Returns:
        A `Trainer`.
    """
    feed = agent.feed
    num_envs = feed.num_envs
    vmapped_reset = jax.vmap(env.reset, in_axes=(0, None))
    vmapped_step = jax.vmap(
        lambda key, state, action: autoreset_step(env, key, state, action, env_params)
    )
    buffer = sampler = None
    if isinstance(feed, ReplayFeed):
        buffer, sampler = make_replay_sampling(feed)
    if feed.uses_dataset and dataset is None:
        raise RlkitError("dataset: this agent mixes offline data into its batches; pass one "
                         "(--dataset DIR)")

    def init_one(key: jax.Array) -> Carry:
        agent_key, env_key, key = jax.random.split(key, 3)
        agent_state = agent.init(agent_key)
        obs, env_state = vmapped_reset(jax.random.split(env_key, num_envs), env_params)
        buffer_state = None
        if buffer is not None:
            buffer_state = buffer.init(example_transition(obs[0]))
        return Carry(
            agent_state=agent_state,
            env_state=env_state,
            obs=obs,
            key=key,
            episode_return=jnp.zeros((num_envs,), jnp.float32),
            episode_length=jnp.zeros((num_envs,), jnp.int32),
            iteration=jnp.zeros((), jnp.int32),
            buffer=buffer_state,
        )

    def env_step(carry: Carry, key: jax.Array):
        """Act and step every env once; returns the new carry, the transitions and stats."""
        act_key, step_key = jax.random.split(key)
        action, extras = agent.act(carry.agent_state, carry.obs, act_key)
        obs, env_state, reward, terminated, truncated, final_obs = vmapped_step(
            jax.random.split(step_key, num_envs), carry.env_state, action
        )
        transition = Transition(
            obs=carry.obs, action=action, reward=reward, terminated=terminated,
            truncated=truncated, next_obs=final_obs, extras=extras,
        )
        episode_return, episode_length, finished_sum, finished_count = track_episodes(
            carry.episode_return, carry.episode_length, reward,
            jnp.logical_or(terminated, truncated),
        )
        carry = carry.replace(
            env_state=env_state, obs=obs, episode_return=episode_return,
            episode_length=episode_length,
        )
        return carry, transition, (finished_sum, finished_count)

    def on_policy_iteration(carry: Carry, dataset: PyTree):
        del dataset
        key, rollout_key, update_key = jax.random.split(carry.key, 3)

        def rollout_step(carry, step_key):
            carry, transition, stats = env_step(carry, step_key)
            return carry, (transition, stats)

        carry, (rollout, (finished_sum, finished_count)) = jax.lax.scan(
            rollout_step, carry, jax.random.split(rollout_key, feed.rollout_length)
        )
        agent_state, metrics = agent.update(carry.agent_state, rollout, update_key)
        metrics = dict(metrics, episode_return_sum=finished_sum.sum(),
                       episodes=finished_count.sum())
        carry = carry.replace(agent_state=agent_state, key=key, iteration=carry.iteration + 1)
        return carry, metrics

    def replay_iteration(carry: Carry, dataset: PyTree):
        key, step_key, learn_key = jax.random.split(carry.key, 3)
        carry, transition, (finished_sum, finished_count) = env_step(carry, step_key)
        agent_state, buffer_state, metrics = replay_learn(
            agent, buffer, carry.agent_state, carry.buffer, transition, carry.iteration, learn_key,
            dataset=dataset, sampler=sampler,
        )
        metrics = dict(metrics, episode_return_sum=finished_sum, episodes=finished_count)
        carry = carry.replace(agent_state=agent_state, buffer=buffer_state, key=key,
                              iteration=carry.iteration + 1)
        return carry, metrics

    iteration = on_policy_iteration if isinstance(feed, OnPolicyFeed) else replay_iteration
    return compile_trainer(agent, env, env_params, init_one, iteration, iterations_per_chunk,
                           num_eval_episodes, mesh, dataset)


def compile_trainer(agent: Agent, env: Environment, env_params: Any, init_one, iteration,
                    iterations_per_chunk: int, num_eval_episodes: int,
                    mesh: jax.sharding.Mesh | None, dataset: PyTree) -> Trainer:
    """The jit boundary of the on-device drivers (this one and `rlkit.loops.rounds`).

    Args:
        agent, env, env_params: as for `make_on_device_trainer`.
        init_one: `(key) -> carry` of one seed; the carry has `agent_state` and `key` fields.
        iteration: `(carry, dataset) -> (carry, metrics)`, one iteration of one seed.
        iterations_per_chunk, num_eval_episodes, mesh, dataset: as for `make_on_device_trainer`.

    Returns:
        The `Trainer`: `init` and `evaluate` vmapped over seeds, `run` a `lax.scan` of
        `iteration` vmapped over seeds with the carry donated and the dataset shared.
    """

    def run_one(carry, dataset: PyTree):
        return jax.lax.scan(lambda carry, _: iteration(carry, dataset), carry, None,
                            length=iterations_per_chunk)

    def evaluate_one(carry) -> jax.Array:
        return evaluate_policy(agent, env, env_params, carry.agent_state, carry.key,
                               num_eval_episodes)

    init = jax.jit(over_seeds(init_one))
    if mesh is not None:
        sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("seed"))
        init = jax.jit(over_seeds(init_one), out_shardings=sharding)
    return Trainer(
        init=init,
        run=BoundRun(jax.jit(over_seeds(run_one, num_shared=1), donate_argnums=0), dataset),
        evaluate=jax.jit(over_seeds(evaluate_one)),
        steps_per_iteration=agent.feed.steps_per_iteration,
        iterations_per_chunk=iterations_per_chunk,
        unit=ENV_STEPS,
        units_per_iteration=agent.feed.steps_per_iteration,
        agent_state=lambda carry: carry.agent_state,
    )


def evaluate_policy(agent: Agent, env: Environment, env_params: Any, agent_state: PyTree,
                    key: jax.Array, num_episodes: int) -> jax.Array:
    """The return of `agent.policy`: exact where the env has a model, else a Monte-Carlo mean.

    With a model, `rlkit.planning` evaluates the policy table exactly (no sampling noise). Without
    one, `num_episodes` episodes run in parallel for `max_episode_steps` steps, with actions
    sampled from `agent.policy`; rewards after an episode's end are masked.

    Returns:
        A float32 scalar.
    """
    if env.model is not None:
        from rlkit import planning

        model = env.model(env_params)
        table = planning.policy_table(agent.policy, agent_state, model)
        return planning.expected_return(model, table, horizon=env.spec.max_episode_steps)
    key = jax.random.fold_in(key, 0x5EED)  # never the key training consumes next
    reset_key, run_key = jax.random.split(key)
    obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(
        jax.random.split(reset_key, num_episodes), env_params
    )
    step = jax.vmap(env.step, in_axes=(0, 0, 0, None))

    def body(carry, step_key):
        obs, env_state, total, done = carry
        act_key, env_key = jax.random.split(step_key)
        probs = agent.policy(agent_state, obs)
        action = jax.random.categorical(act_key, jnp.log(probs + 1e-30)).astype(jnp.int32)
        obs, env_state, reward, terminated, truncated, _ = step(
            jax.random.split(env_key, num_episodes), env_state, action, env_params
        )
        total = total + jnp.where(done, 0.0, reward)
        done = done | terminated | truncated
        return (obs, env_state, total, done), None

    init = (obs, env_state, jnp.zeros((num_episodes,), jnp.float32),
            jnp.zeros((num_episodes,), bool))
    (_, _, total, _), _ = jax.lax.scan(
        body, init, jax.random.split(run_key, env.spec.max_episode_steps)
    )
    return total.mean()
