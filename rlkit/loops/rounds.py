"""The round-based driver: fit on all data so far, roll the result out, repeat (GLOW, H2O).

GLOW (Amortila et al. 2024) and the H2O reduction from hybrid to offline RL both alternate two
steps, and this driver is that loop, on the device, for any agent with a `RoundFeed`:

    D_on <- {}
    for t = 1, 2, ...:
        pi_t <- fit(D_off U D_on)               # `updates_per_round` calls of agent.update
        roll out agent.act for num_envs episodes; D_on <- D_on U {those transitions}

With an offline learner (CQL, IQL, BC, HyGLOW's minimax learner) as the agent, the loop is H2O:
`rlkit.h2o.make_h2o_agent` turns any offline agent into one. With GLOW's optimistic learner and
no dataset it is GLOW. Fitting comes first, so the first rollout already uses what the offline
data teach; with neither data nor an exact learner, the first fit is skipped.

Batches mix the two sources through `rlkit.data.hybrid.make_hybrid_sampler`, the sampler every
hybrid agent uses: `offline_fraction` of each batch from the dataset, or, when it is None, the
dataset's share of all stored rows (`PROPORTIONAL`: exactly `round(B * M / (M + n))` offline rows
for M dataset rows and n online ones), all offline before the first rollout.

Like the on-device driver it is one `jax.jit` of `vmap` over seeds around a `lax.scan` over
rounds, and the dataset is an argument shared by every seed. Rollouts step the environment with
auto-reset for `episode_length` steps per env, so on fixed-horizon MDPs (locks, DeepSea) a round
is exactly `num_envs` whole episodes; elsewhere an episode may span two rounds.

For environments with an exact model the driver evaluates every round's fitted policy exactly
(`rlkit.planning`) and reports `policy_return` and, once the policy is optimal for the first time,
`episodes_to_optimal`: the online episodes collected before that round, which is the count the
GLOW benchmark compares (with one-round, not one-chunk, resolution).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from rlkit.errors import RlkitError
from rlkit.loops.common import (
    Trainer,
    act_and_step,
    autoreset_step,
    example_transition,
    nan_metrics_like,
)
from rlkit.loops.on_device import Carry, compile_trainer
from rlkit.types import Agent, Environment, RoundFeed, Transition


@struct.dataclass
class RoundCarry(Carry):
    """One seed's state between rounds (all arrays: checkpointable): the on-device driver's
    `Carry` (its `iteration` counts rounds, its `buffer` holds the online transitions) and two
    episode counters. `init_one` sets every field."""

    episodes: jax.Array = None  # float32, online episodes finished so far
    episodes_to_optimal: jax.Array = None  # float32, NaN until the fitted policy is first optimal


def with_episode_starts(dataset: Transition) -> Transition:
    """The dataset with `extras["first"]`: row 0 and every row after an episode's end.

    Datasets store episodes one after the other (`rlkit.data.dataset`), so a row starts an
    episode exactly when the row before it terminated or was truncated.
    """
    done = jnp.logical_or(dataset.terminated, dataset.truncated)
    first = jnp.concatenate([jnp.ones((1,), bool), done[:-1]])
    return dataset.replace(extras={"first": first})


def make_rounds_trainer(
    agent: Agent,
    env: Environment,
    env_params: Any,
    iterations_per_chunk: int,
    num_eval_episodes: int = 16,
    mesh: jax.sharding.Mesh | None = None,
    dataset: Transition | None = None,
) -> Trainer:
    """Compile a round-based run of `agent` (whose feed is a `RoundFeed`) on `env`.

    Args:
        agent: the agent's pure functions; `agent.feed` must be a `RoundFeed`.
        env: a functional environment.
        env_params: its parameters (shared by all seeds).
        iterations_per_chunk: rounds per `run` call.
        num_eval_episodes: evaluation episodes for envs without an exact model.
        mesh: optional 1-D mesh with axis "seed".
        dataset: the offline `Transition` on device (leaves [M, ...]), or None.

    Returns:
        A `Trainer`; an iteration is a round of `feed.steps_per_iteration` env steps.
    """
    from rlkit.data.hybrid import PROPORTIONAL, make_hybrid_sampler
    from rlkit.data.replay import make_uniform_buffer

    feed = agent.feed
    if not isinstance(feed, RoundFeed):
        raise RlkitError(f"agent: the round driver needs a RoundFeed, got {type(feed).__name__}")
    if feed.uses_dataset and dataset is None:
        raise RlkitError("dataset: this agent learns from offline data too; pass one "
                         "(--dataset DIR)")
    if dataset is not None:
        dataset = with_episode_starts(dataset)
    num_envs = feed.num_envs
    buffer = make_uniform_buffer(feed.buffer_size)
    sampler = make_hybrid_sampler(
        buffer, PROPORTIONAL if feed.offline_fraction is None else feed.offline_fraction)
    vmapped_reset = jax.vmap(env.reset, in_axes=(0, None))
    vmapped_step = jax.vmap(
        lambda key, state, action: autoreset_step(env, key, state, action, env_params))
    optimal_return = None
    if env.model is not None:
        from rlkit import planning

        model = env.model(env_params)
        optimal_return = float(planning.value_iteration(model).optimal_return)
        tolerance = 1e-4 * max(1.0, abs(optimal_return))

    def init_one(key: jax.Array) -> RoundCarry:
        agent_key, env_key, key = jax.random.split(key, 3)
        obs, env_state = vmapped_reset(jax.random.split(env_key, num_envs), env_params)
        return RoundCarry(
            agent_state=agent.init(agent_key), env_state=env_state, obs=obs, key=key,
            episode_return=jnp.zeros((num_envs,), jnp.float32),
            episode_length=jnp.zeros((num_envs,), jnp.int32),
            iteration=jnp.zeros((), jnp.int32),
            buffer=buffer.init(example_transition(obs[0]).replace(
                extras={"first": jnp.zeros((), bool)})),
            episodes=jnp.zeros((), jnp.float32),
            episodes_to_optimal=jnp.full((), jnp.nan, jnp.float32),
        )

    def all_data(buffer_state, dataset):
        """Every stored row (online buffer, then the dataset), with `extras["valid"]`."""
        online = buffer_state.storage
        valid = jnp.arange(feed.buffer_size) < buffer_state.size
        online = online.replace(extras={**online.extras, "valid": valid})
        if dataset is None:
            return online
        offline = dataset.replace(extras={**dataset.extras,
                                          "valid": jnp.ones(dataset.action.shape, bool)})
        return jax.tree.map(lambda a, b: jnp.concatenate([a, b]), online, offline)

    def sample(buffer_state, dataset, key):
        """A batch from D_off U D_on (`rlkit.data.hybrid`): `offline_fraction` of it offline,
        or the dataset's share of all rows; only online rows without a dataset."""
        if dataset is None:
            return buffer.sample(buffer_state, key, feed.batch_size)
        no_schedule = jnp.zeros((), jnp.int32)
        return sampler.sample(buffer_state, dataset, key, feed.batch_size, no_schedule).items

    def fit(agent_state, buffer_state, dataset, key):
        if feed.batch_size is None:
            return agent.update(agent_state, all_data(buffer_state, dataset), key)

        def one_update(agent_state, update_key):
            sample_key, update_key = jax.random.split(update_key)
            return agent.update(agent_state, sample(buffer_state, dataset, sample_key),
                                update_key)

        def updates(agent_state, key):
            agent_state, metrics = jax.lax.scan(
                one_update, agent_state, jax.random.split(key, feed.updates_per_round))
            return agent_state, jax.tree.map(lambda m: m.mean(), metrics)

        if dataset is not None:
            return updates(agent_state, key)

        def skip(agent_state, key):
            return agent_state, nan_metrics_like(updates, agent_state, key)

        return jax.lax.cond(buffer_state.size > 0, updates, skip, agent_state, key)

    def rollout(carry: RoundCarry, key: jax.Array):
        def env_step(carry: RoundCarry, inputs):
            step_key, t = inputs
            step = carry.iteration * feed.steps_per_iteration + t * num_envs
            first = carry.episode_length == 0  # [N], the step opens an episode
            carry, transition, (finished_sum, finished_count) = act_and_step(
                agent, vmapped_step, carry, step_key, step)
            # The buffer stores episode starts (for agents fitting whole episodes), not act's
            # extras.
            transition = transition.replace(extras={"first": first})
            return carry, (transition, finished_sum, finished_count)

        carry, (transitions, finished_sum, finished_count) = jax.lax.scan(
            env_step, carry, (jax.random.split(key, feed.episode_length),
                              jnp.arange(feed.episode_length, dtype=jnp.int32)))
        flat = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), transitions)
        return carry.replace(buffer=buffer.add(carry.buffer, flat)), (
            finished_sum.sum(), finished_count.sum())

    def round_iteration(carry: RoundCarry, dataset):
        key, fit_key, rollout_key = jax.random.split(carry.key, 3)
        agent_state, metrics = fit(carry.agent_state, carry.buffer, dataset, fit_key)
        carry = carry.replace(agent_state=agent_state)
        metrics = dict(metrics)
        if optimal_return is not None:
            table = planning.policy_table(agent.policy, agent_state, model)
            policy_return = planning.expected_return(model, table,
                                                     horizon=env.spec.max_episode_steps)
            newly = jnp.logical_and(jnp.isnan(carry.episodes_to_optimal),
                                    policy_return >= optimal_return - tolerance)
            carry = carry.replace(episodes_to_optimal=jnp.where(
                newly, carry.episodes, carry.episodes_to_optimal))
            metrics.update(policy_return=policy_return.astype(jnp.float32),
                           episodes_to_optimal=carry.episodes_to_optimal)
        carry, (finished_sum, finished_count) = rollout(carry, rollout_key)
        metrics.update(episode_return_sum=finished_sum, episodes=finished_count)
        carry = carry.replace(key=key, iteration=carry.iteration + 1,
                              episodes=carry.episodes + finished_count.astype(jnp.float32))
        return carry, metrics

    return compile_trainer(agent, env, env_params, init_one, round_iteration,
                           iterations_per_chunk, num_eval_episodes, mesh, dataset)


__all__ = ["RoundCarry", "make_rounds_trainer", "with_episode_starts"]
