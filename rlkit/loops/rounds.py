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

The paper's schedule (`RoundFeed.offline_schedule == "paper"`; Amortila et al. 2024, Alg. 2
line 5, Alg. 3 line 8, Thm F.6): the fit before round t's rollout sees the dataset's first n
episodes (in stored order), n = the online episodes so far (t - 1 with one episode per round,
capped at the dataset's size), and the two sources weigh half and half, the mixture
(nu + average online occupancy) / 2 of the analysis: exact learners get every row with
`extras["weight"]` (online rows 1, the selected offline rows online_rows / offline_rows, which is
1 when the episodes have equal lengths; other offline rows 0), batched ones draw
`batch_size // 2` rows uniformly from the selected offline episodes and the rest from the online
buffer. Round 1 has no data at all under this schedule; the batched fit is skipped then, an exact
learner fits the empty data (GLOW's round 1). `RoundFeed.refit` re-initialises the agent before
every fit (the paper's offline learner is run afresh on each round's data).

Like the on-device driver it is one `jax.jit` of `vmap` over seeds around a `lax.scan` over
rounds, and the dataset is an argument shared by every seed. Rollouts step the environment with
auto-reset for `episode_length` steps per env, so on fixed-horizon MDPs (locks, DeepSea) a round
is exactly `num_envs` whole episodes; elsewhere an episode may span two rounds.

For environments with an exact model the driver evaluates every round's fitted policy exactly
(`rlkit.planning`) and reports `policy_return` and, once the policy is optimal for the first time,
`episodes_to_optimal`: the online episodes collected before that round, which is the count the
GLOW benchmark compares (with one-round, not one-chunk, resolution). It is a secondary figure, not
one the paper bounds. What the paper bounds (Alg. 1 line 13, Thm 3.1) are logged beside it:

* `cumulative_regret`: sum over rounds of num_envs * (J* - J(pi_t)), the regret of the online
  episodes played (one per round in the theory);
* `mixture_return`: (1/t) sum_(i <= t) J(pi_i), the exact return of the uniform mixture of the
  rounds' policies (the paper's output; its risk is J* - mixture_return).

Both are running figures, logged at each chunk's last round only (NaN in the others), so the
chunk's metrics.csv row holds their value at the chunk's end.
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
    example_transition,
    make_step_envs,
    nan_metrics_like,
)
from rlkit.loops.on_device import Carry, compile_trainer
from rlkit.types import Agent, Environment, PyTree, RoundFeed, Transition


@struct.dataclass
class RoundCarry(Carry):
    """One seed's state between rounds (all arrays: checkpointable): the on-device driver's
    `Carry` (its `iteration` counts rounds, its `buffer` holds the online transitions) and two
    episode counters. `init_one` sets every field."""

    episodes: jax.Array = None  # float32, online episodes finished so far
    episodes_to_optimal: jax.Array = None  # float32, NaN until the fitted policy is first optimal
    regret_sum: jax.Array = None  # float32, sum over rounds of num_envs * (J* - J(pi_t))
    return_sum: jax.Array = None  # float32, sum over rounds of J(pi_t)
    # The agent's state as `init` made it, kept when RoundFeed.refit restarts the learner each
    # round (None otherwise). Kept rather than re-made inside the round: an init under the seed
    # vmap batches flax's orthogonal-init QR, and jaxlib's batched CPU LAPACK kernels can wedge
    # XLA's intra-op pool (benchmarks/README.md, "The XLA:CPU hang"); init runs seed by seed.
    initial_agent_state: PyTree = None


def with_episode_starts(dataset: Transition) -> Transition:
    """The dataset with `extras["first"]` (row 0 and every row after an episode's end) and
    `extras["step"]` (int32, the row's step within its episode, 0 at a start).

    Datasets store episodes one after the other (`rlkit.data.dataset`), so a row starts an
    episode exactly when the row before it terminated or was truncated.
    """
    done = jnp.logical_or(dataset.terminated, dataset.truncated)
    first = jnp.concatenate([jnp.ones((1,), bool), done[:-1]])
    index = jnp.arange(first.shape[0], dtype=jnp.int32)
    start = jax.lax.cummax(jnp.where(first, index, 0))
    return dataset.replace(extras={"first": first, "step": index - start})


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
    if feed.offline_schedule not in ("all", "paper"):
        raise RlkitError(f"offline_schedule: must be 'all' or 'paper', got "
                         f"{feed.offline_schedule!r}")
    paper_schedule = feed.offline_schedule == "paper" and dataset is not None
    if dataset is not None:
        dataset = with_episode_starts(dataset)
        # [M] the index of each dataset row's episode, and the number of episodes.
        offline_episode = jnp.cumsum(dataset.extras["first"].astype(jnp.int32)) - 1
        offline_episodes = int(offline_episode[-1]) + 1
    num_envs = feed.num_envs
    buffer = make_uniform_buffer(feed.buffer_size)
    sampler = make_hybrid_sampler(
        buffer, PROPORTIONAL if feed.offline_fraction is None else feed.offline_fraction)
    vmapped_reset = jax.vmap(env.reset, in_axes=(0, None))
    step_envs = make_step_envs(env, env_params, num_envs)
    optimal_return = None
    if env.model is not None:
        from rlkit import planning

        model = env.model(env_params)
        optimal_return = float(planning.value_iteration(model).optimal_return)
        tolerance = 1e-4 * max(1.0, abs(optimal_return))

    def init_one(key: jax.Array) -> RoundCarry:
        agent_key, env_key, key = jax.random.split(key, 3)
        obs, env_state = vmapped_reset(jax.random.split(env_key, num_envs), env_params)
        agent_state = agent.init(agent_key)
        return RoundCarry(
            agent_state=agent_state, env_state=env_state, obs=obs, key=key,
            episode_return=jnp.zeros((num_envs,), jnp.float32),
            episode_length=jnp.zeros((num_envs,), jnp.int32),
            iteration=jnp.zeros((), jnp.int32),
            buffer=buffer.init(example_transition(obs[0]).replace(
                extras={"first": jnp.zeros((), bool), "step": jnp.zeros((), jnp.int32)})),
            episodes=jnp.zeros((), jnp.float32),
            episodes_to_optimal=jnp.full((), jnp.nan, jnp.float32),
            regret_sum=jnp.zeros((), jnp.float32),
            return_sum=jnp.zeros((), jnp.float32),
            initial_agent_state=agent_state if feed.refit else None,
        )

    def offline_selection(online_episodes):
        """The paper's schedule: ([M] bool, which dataset rows the round uses; their count)."""
        count = jnp.minimum(online_episodes.astype(jnp.int32), offline_episodes)
        selected = offline_episode < count
        return selected, selected.sum()

    def all_data(buffer_state, dataset, online_episodes):
        """Every stored row (online buffer, then the dataset), with `extras["valid"]` and
        `extras["offline"]` (paper schedule: `extras["weight"]` too)."""
        online = buffer_state.storage
        valid = jnp.arange(feed.buffer_size) < buffer_state.size
        online = online.replace(extras={**online.extras, "valid": valid,
                                        "offline": jnp.zeros(valid.shape, bool)})
        if dataset is None:
            return online
        rows = dataset.action.shape
        offline = dataset.replace(extras={**dataset.extras, "valid": jnp.ones(rows, bool),
                                          "offline": jnp.ones(rows, bool)})
        if paper_schedule:
            selected, selected_rows = offline_selection(online_episodes)
            share = buffer_state.size.astype(jnp.float32) / jnp.maximum(selected_rows, 1)
            online = online.replace(extras={**online.extras,
                                            "weight": valid.astype(jnp.float32)})
            offline = offline.replace(extras={**offline.extras, "valid": selected,
                                              "weight": jnp.where(selected, share, 0.0)})
        return jax.tree.map(lambda a, b: jnp.concatenate([a, b]), online, offline)

    def sample(buffer_state, dataset, online_episodes, key):
        """A batch from D_off U D_on (`rlkit.data.hybrid`): `offline_fraction` of it offline,
        or the dataset's share of all rows; only online rows without a dataset. Paper
        schedule: half (rounded down) from the selected offline episodes, then online rows."""
        if dataset is None:
            return buffer.sample(buffer_state, key, feed.batch_size)
        if paper_schedule:
            offline_key, online_key = jax.random.split(key)
            num_offline = feed.batch_size // 2
            _, selected_rows = offline_selection(online_episodes)
            # Episodes are stored in order, so the selected rows are a prefix of the dataset.
            index = jax.random.randint(offline_key, (num_offline,), 0,
                                       jnp.maximum(selected_rows, 1))
            offline = jax.tree.map(lambda a: a[index], dataset)
            online = buffer.sample(buffer_state, online_key, feed.batch_size - num_offline)
            return jax.tree.map(lambda a, b: jnp.concatenate([a, b.astype(a.dtype)]),
                                offline, online)
        no_schedule = jnp.zeros((), jnp.int32)
        return sampler.sample(buffer_state, dataset, key, feed.batch_size, no_schedule).items

    def fit(agent_state, buffer_state, dataset, online_episodes, key):
        if feed.batch_size is None:
            return agent.update(agent_state, all_data(buffer_state, dataset, online_episodes),
                                key)

        def one_update(agent_state, update_key):
            sample_key, update_key = jax.random.split(update_key)
            return agent.update(agent_state,
                                sample(buffer_state, dataset, online_episodes, sample_key),
                                update_key)

        def updates(agent_state, key):
            agent_state, metrics = jax.lax.scan(
                one_update, agent_state, jax.random.split(key, feed.updates_per_round))
            return agent_state, jax.tree.map(lambda m: m.mean(), metrics)

        if dataset is not None and not paper_schedule:
            return updates(agent_state, key)

        def skip(agent_state, key):
            return agent_state, nan_metrics_like(updates, agent_state, key)

        return jax.lax.cond(buffer_state.size > 0, updates, skip, agent_state, key)

    def rollout(carry: RoundCarry, key: jax.Array):
        def env_step(carry: RoundCarry, inputs):
            step_key, t = inputs
            step = carry.iteration * feed.steps_per_iteration + t * num_envs
            first = carry.episode_length == 0  # [N], the step opens an episode
            within = carry.episode_length  # [N], the step's index within its episode
            carry, transition, stats = act_and_step(agent, step_envs, carry, step_key, step)
            # The buffer stores episode starts and steps (for agents fitting whole episodes or
            # layers), not act's extras.
            transition = transition.replace(extras={"first": first, "step": within})
            return carry, (transition, stats)

        carry, (transitions, (finished_sum, finished_count, finished_max)) = jax.lax.scan(
            env_step, carry, (jax.random.split(key, feed.episode_length),
                              jnp.arange(feed.episode_length, dtype=jnp.int32)))
        flat = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), transitions)
        return carry.replace(buffer=buffer.add(carry.buffer, flat)), (
            finished_sum.sum(), finished_count.sum(), finished_max.max())

    def round_iteration(carry: RoundCarry, dataset):
        key, fit_key, rollout_key = jax.random.split(carry.key, 3)
        agent_state = carry.initial_agent_state if feed.refit else carry.agent_state
        agent_state, metrics = fit(agent_state, carry.buffer, dataset, carry.episodes, fit_key)
        carry = carry.replace(agent_state=agent_state)
        metrics = dict(metrics)
        if optimal_return is not None:
            table = planning.policy_table(agent.policy, agent_state, model)
            policy_return = planning.expected_return(model, table,
                                                     horizon=env.spec.max_episode_steps)
            newly = jnp.logical_and(jnp.isnan(carry.episodes_to_optimal),
                                    policy_return >= optimal_return - tolerance)
            carry = carry.replace(
                episodes_to_optimal=jnp.where(newly, carry.episodes, carry.episodes_to_optimal),
                regret_sum=carry.regret_sum + num_envs * (optimal_return - policy_return),
                return_sum=carry.return_sum + policy_return)
            # Running figures: logged at the chunk's last round only, so the chunk's row
            # (a NaN-mean over its rounds) holds their value at its end.
            chunk_end = (carry.iteration + 1) % iterations_per_chunk == 0
            rounds = (carry.iteration + 1).astype(jnp.float32)
            metrics.update(policy_return=policy_return.astype(jnp.float32),
                           episodes_to_optimal=carry.episodes_to_optimal,
                           cumulative_regret=jnp.where(chunk_end, carry.regret_sum, jnp.nan),
                           mixture_return=jnp.where(chunk_end, carry.return_sum / rounds,
                                                    jnp.nan))
        carry, (finished_sum, finished_count, finished_max) = rollout(carry, rollout_key)
        metrics.update(episode_return_sum=finished_sum, episodes=finished_count,
                       episode_return_max=finished_max)
        carry = carry.replace(key=key, iteration=carry.iteration + 1,
                              episodes=carry.episodes + finished_count.astype(jnp.float32))
        return carry, metrics

    return compile_trainer(agent, env, env_params, init_one, round_iteration,
                           iterations_per_chunk, num_eval_episodes, mesh, dataset)


__all__ = ["RoundCarry", "make_rounds_trainer", "with_episode_starts"]
