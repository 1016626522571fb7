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

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from rlkit.loops.common import (
    ENV_STEPS,
    BoundRun,
    Trainer,
    act_and_step,
    example_transition,
    make_feed_sampling,
    make_step_envs,
    over_seeds,
    replay_learn,
)
from rlkit.types import Agent, Environment, OnPolicyFeed, PyTree

PROGRESS_REPORTS_PER_CHUNK = 3  # callbacks from inside a chunk, for the progress bar
ITERATIONS_PER_REPORT = 16  # and never more than one per this many iterations


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
    step_envs = make_step_envs(env, env_params, num_envs)
    buffer, sampler = make_feed_sampling(feed, dataset)

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

    def on_policy_iteration(carry: Carry, dataset: PyTree):
        del dataset
        key, rollout_key, update_key = jax.random.split(carry.key, 3)

        def rollout_step(carry, inputs):
            step_key, t = inputs
            step = carry.iteration * feed.steps_per_iteration + t * num_envs
            carry, transition, stats = act_and_step(agent, step_envs, carry, step_key, step)
            return carry, (transition, stats)

        carry, (rollout, (finished_sum, finished_count, finished_max)) = jax.lax.scan(
            rollout_step, carry, (jax.random.split(rollout_key, feed.rollout_length),
                                  jnp.arange(feed.rollout_length, dtype=jnp.int32))
        )
        agent_state, metrics = agent.update(carry.agent_state, rollout, update_key)
        metrics = dict(metrics, episode_return_sum=finished_sum.sum(),
                       episodes=finished_count.sum(), episode_return_max=finished_max.max())
        carry = carry.replace(agent_state=agent_state, key=key, iteration=carry.iteration + 1)
        return carry, metrics

    def replay_iteration(carry: Carry, dataset: PyTree):
        key, step_key, learn_key = jax.random.split(carry.key, 3)
        carry, transition, (finished_sum, finished_count, finished_max) = act_and_step(
            agent, step_envs, carry, step_key, carry.iteration * num_envs)
        agent_state, buffer_state, metrics = replay_learn(
            agent, buffer, carry.agent_state, carry.buffer, transition, carry.iteration, learn_key,
            dataset=dataset, sampler=sampler,
        )
        metrics = dict(metrics, episode_return_sum=finished_sum, episodes=finished_count,
                       episode_return_max=finished_max)
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
        `iteration` vmapped over seeds with the carry donated and the dataset shared. Callbacks
        registered with its `report_progress` before the first `run` hear the env steps done
        within a chunk, `PROGRESS_REPORTS_PER_CHUNK` times per chunk at most
        (`jax.debug.callback` from inside the scan); they change no number the run produces.
    """

    # Progress within a chunk (one compiled call): `Trainer.report_progress` callbacks hear
    # from inside it, after each of `reports` evenly spaced groups of `every` iterations (the
    # chunk's end is reported by the run loop). Registered callbacks are compiled in when the
    # chunk is first traced (the first `run`); without any, the program is the plain scan.
    # A callback stalls the program for a host round trip (3-6 ms measured on a loaded 2-core
    # CPU, where an iteration of PPO on CartPole takes about 12 ms), so there is at most one per
    # ITERATIONS_PER_REPORT iterations: none in short chunks, which finish soon anyway.
    progress_callbacks: list[Callable[[int], None]] = []
    reports = min(PROGRESS_REPORTS_PER_CHUNK, iterations_per_chunk // ITERATIONS_PER_REPORT)
    every = iterations_per_chunk // (reports + 1)
    reported = [0]  # iterations of the current chunk already reported (reset by each run)

    def report(done: jax.Array) -> None:
        """Host side: `done` iterations of the chunk are finished. A position, not an increment,
        so a repeated report (one per device of a sharded run) counts once."""
        done = int(done)
        if done > reported[0]:
            units = (done - reported[0]) * agent.feed.steps_per_iteration
            reported[0] = done
            for callback in progress_callbacks:
                callback(units)

    def iterations(carry, dataset: PyTree, length: int):
        return jax.lax.scan(lambda carry, _: iteration(carry, dataset), carry, None,
                            length=length)

    def run_one(carry, dataset: PyTree):
        if not progress_callbacks or reports == 0:
            return iterations(carry, dataset, iterations_per_chunk)

        def group(carry, done):
            # `done` is the same for every seed: under vmap this calls back once, not per seed.
            carry, metrics = iterations(carry, dataset, every)
            jax.debug.callback(report, done + every)
            return carry, metrics

        carry, metrics = jax.lax.scan(group, carry, every * jnp.arange(reports, dtype=jnp.int32))
        carry, rest = iterations(carry, dataset, iterations_per_chunk - reports * every)
        return carry, jax.tree.map(
            lambda grouped, tail: jnp.concatenate([grouped.reshape(-1, *tail.shape[1:]), tail]),
            metrics, rest)

    def evaluate_one(carry) -> jax.Array:
        return evaluate_policy(agent, env, env_params, carry.agent_state, carry.key,
                               num_eval_episodes)

    init = jax.jit(over_seeds(init_one, map_on_cpu=True))
    if mesh is not None:
        sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("seed"))
        init = jax.jit(over_seeds(init_one, map_on_cpu=True), out_shardings=sharding)
    return Trainer(
        init=init,
        run=_ChunkRun(jax.jit(over_seeds(run_one, num_shared=1), donate_argnums=0), dataset,
                      reported=reported),
        evaluate=jax.jit(over_seeds(evaluate_one, map_on_cpu=True)),
        steps_per_iteration=agent.feed.steps_per_iteration,
        iterations_per_chunk=iterations_per_chunk,
        unit=ENV_STEPS,
        units_per_iteration=agent.feed.steps_per_iteration,
        agent_state=lambda carry: carry.agent_state,
        report_progress=progress_callbacks.append,
    )


class _ChunkRun(BoundRun):
    """`BoundRun` that starts each chunk's progress count from zero (`lower` works as there)."""

    def __init__(self, jitted, *shared, reported: list[int]):
        super().__init__(jitted, *shared)
        self.reported = reported

    def __call__(self, carry):
        self.reported[0] = 0
        return super().__call__(carry)


class EpisodeRows(NamedTuple):
    """Whole episodes of a JAX environment, batch-major (from `run_episodes`).

    Attributes:
        obs: [B, T + 1, *obs_shape], the observations; obs[:, t + 1] is the true next observation
            of step t (no auto-reset).
        action: [B, T] int32.
        reward: [B, T] float32.
        terminated, truncated: [B, T] bool.
        valid: [B, T] bool, the step belongs to the episode (it had not ended before it).
        episode_return: [B] float32, the sum of the valid rewards.
    """

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    valid: jax.Array
    episode_return: jax.Array


def run_episodes(env: Environment, env_params: Any, action_logits: Callable, key: jax.Array,
                 num_episodes: int, memory: PyTree = None,
                 observe: Callable | None = None) -> EpisodeRows:
    """Run `num_episodes` episodes side by side for `max_episode_steps` steps, without auto-reset.

    The one evaluation scan: `evaluate_policy` averages its returns, and `make_episode_rollout`
    compiles it for `rlkit.collect`, which keeps its rows as an offline dataset. Steps after an
    episode's end still run (the scan has a fixed length) but are marked invalid.

    Args:
        env: a functional environment.
        env_params: its parameters.
        action_logits: `(obs [B, ...], env_state, t) -> [B, A]` log-probabilities (unnormalised
            is fine) of the actions at step `t` (an int32 scalar).
        key: consumed whole: split into the reset key and one key per step.
        num_episodes: B, episodes run side by side.
        memory, observe: for policies that read the episode so far (`HistoryPolicy`): the
            initial memory (leaves [B, ...]) and `observe(memory, action [B], reward [B]) ->
            memory`; `action_logits` is then `(obs, env_state, t, memory) -> (logits, memory)`.

    Returns:
        The `EpisodeRows`.
    """
    reset_key, run_key = jax.random.split(key)
    obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(
        jax.random.split(reset_key, num_episodes), env_params
    )
    step = jax.vmap(env.step, in_axes=(0, 0, 0, None))
    num_steps = env.spec.max_episode_steps

    def body(carry, inputs):
        obs, env_state, total, done, memory = carry
        t, step_key = inputs
        act_key, env_key = jax.random.split(step_key)
        if observe is None:
            logits = action_logits(obs, env_state, t)
        else:
            logits, memory = action_logits(obs, env_state, t, memory)
        action = jax.random.categorical(act_key, logits).astype(jnp.int32)
        next_obs, env_state, reward, terminated, truncated, _ = step(
            jax.random.split(env_key, num_episodes), env_state, action, env_params
        )
        if observe is not None:
            memory = observe(memory, action, reward)
        row = (next_obs, action, reward, terminated, truncated, ~done)
        total = total + jnp.where(done, 0.0, reward)
        done = done | terminated | truncated
        return (next_obs, env_state, total, done, memory), row

    init = (obs, env_state, jnp.zeros((num_episodes,), jnp.float32),
            jnp.zeros((num_episodes,), bool), memory)
    inputs = (jnp.arange(num_steps), jax.random.split(run_key, num_steps))
    (_, _, total, _, _), (next_obs, action, reward, terminated, truncated, valid) = jax.lax.scan(
        body, init, inputs
    )
    # No auto-reset, so obs_{t+1} is next_obs_t: one [T + 1] sequence holds both.
    time_major = (jnp.concatenate([obs[None], next_obs]), action, reward, terminated, truncated,
                  valid)
    return EpisodeRows(*(jnp.swapaxes(x, 0, 1) for x in time_major), episode_return=total)


def make_episode_rollout(env: Environment, env_params: Any, action_logits: Callable,
                         num_episodes: int) -> Callable[[PyTree, jax.Array], EpisodeRows]:
    """`run_episodes` compiled once for `rlkit.collect`: `(policy_args, key) -> EpisodeRows`.

    Args:
        env, env_params, num_episodes: as for `run_episodes`.
        action_logits: `(policy_args, obs, env_state, t) -> [B, A]` log-probabilities;
            `policy_args` (a policy's state, a mixing epsilon, ...) is an argument of the
            compiled program, so every value shares one compilation.

    Returns:
        The compiled rollout.
    """

    def rollout(policy_args: PyTree, key: jax.Array) -> EpisodeRows:
        return run_episodes(env, env_params,
                            lambda obs, env_state, t: action_logits(policy_args, obs, env_state, t),
                            key, num_episodes)

    return jax.jit(rollout)


def solve_model(env: Environment, env_params: Any, solve: Callable, *args: Any) -> Any:
    """`solve(model, *args)` compiled, for `rlkit.planning` on an env's exact model.

    Planning's scans run op by op (slowly) outside `jit`, and only the drivers jit; the CLIs
    (`rlkit.collect`) plan through here.

    Args:
        env: an environment with an exact model (`env.model` is not None).
        env_params: its parameters.
        solve: `(model, *args) -> pytree of arrays` built from `rlkit.planning`.
        *args: array arguments of `solve` (a policy's state, an epsilon).

    Returns:
        What `solve` returns, as device arrays.
    """
    return jax.jit(solve)(env.model(env_params), *args)


def evaluate_policy(agent: Agent, env: Environment, env_params: Any, agent_state: PyTree,
                    key: jax.Array, num_episodes: int) -> jax.Array:
    """The return of `agent.policy`: exact where the env has a model, else a Monte-Carlo mean.

    With a model, `rlkit.planning` evaluates the policy table exactly (no sampling noise). Without
    one, `num_episodes` episodes run in parallel for `max_episode_steps` steps (`run_episodes`),
    with actions sampled from `agent.policy`; rewards after an episode's end are masked. An
    agent with a `history` policy (DT) is not Markov, so it always takes the Monte-Carlo path,
    its memory carried through the episodes.

    Returns:
        A float32 scalar.
    """
    if agent.history is None and env.model is not None:
        from rlkit import planning

        model = env.model(env_params)
        table = planning.policy_table(agent.policy, agent_state, model)
        return planning.expected_return(model, table, horizon=env.spec.max_episode_steps)
    key = jax.random.fold_in(key, 0x5EED)  # never the key training consumes next
    if agent.history is not None:
        history = agent.history

        def history_logits(obs, env_state, t, memory):
            probs, memory = history.policy(agent_state, memory, obs)
            return jnp.log(probs + 1e-30), memory

        return run_episodes(env, env_params, history_logits, key, num_episodes,
                            memory=history.init(agent_state, num_episodes),
                            observe=history.observe).episode_return.mean()

    def action_logits(obs, env_state, t):
        return jnp.log(agent.policy(agent_state, obs) + 1e-30)

    return run_episodes(env, env_params, action_logits, key, num_episodes).episode_return.mean()
