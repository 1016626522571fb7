"""The host driver ("Sebulba"-lite): environments step on the CPU, the agent runs compiled.

For gymnasium and procgen, which cannot live inside a compiled program. One batched
`HostEnvironment` holds `num_seeds * num_envs` environments; seed s owns the slice
`[s * num_envs, (s + 1) * num_envs)`. `act`, `update` and the replay buffer's `add` are compiled
once each, vmapped over seeds, and called from a Python loop over steps.

Semantics match the on-device driver: the same feeds, the same metrics, terminated and truncated
kept apart, and `next_obs` the true final observation (the host environments report it).

What differs: the environments' internal state cannot be checkpointed, so a resumed run restores
the agent, its optimiser, its RNG and its replay buffer exactly, but starts fresh episodes
(each reset of the environments gets a new seed, so they do not repeat). There is no overlap of
environment stepping and learning yet: each step waits for `act`.

Seeds: every reset seed is drawn from `numpy.random.SeedSequence((seed, stream, count))` (stream
0 for training, 1 for evaluation), and the environments spread it over their copies the same way
(`envs.gymnasium_adapter.env_seeds`), so runs with different seeds share no episodes.

Progress: a chunk of a CPU-stepped run can take minutes (procgen); every callback registered with
`Trainer.report_progress(f)` is called as `f(n)` after every batched env step with the env steps
each seed took, so the run loop draws progress within a chunk.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from rlkit import procgen
from rlkit.errors import RlkitError
from rlkit.loops.common import (
    ENV_STEPS,
    Trainer,
    example_transition,
    make_feed_sampling,
    over_seeds,
    replay_learn,
)
from rlkit.procgen import EPISODES_PER_SPLIT
from rlkit.types import (
    Agent,
    HistoryPolicy,
    HostEnvironment,
    OnPolicyFeed,
    PyTree,
    Transition,
)

_SPLIT_STREAM = 3  # reset seeds of the split evaluations: streams 3, 4, 5 (train, val, test)


def reset_seed(seed: int, stream: int, count: int) -> int:
    """The seed of the `count`-th reset of `stream` (0 training, 1 evaluation) of run `seed`.

    Drawn from `SeedSequence((seed, stream, count))`, so distinct triples give unrelated seeds
    (`seed + count` made run seed 1 replay run seed 0's second reset); 31 bits, because procgen
    takes its `rand_seed` below 2^31.
    """
    return int(np.random.SeedSequence((seed, stream, count)).generate_state(1)[0] >> 1)


@struct.dataclass
class HostCarry:
    """The device part of the training state (checkpointed); leaves have a seed axis [S]."""

    agent_state: PyTree
    key: jax.Array
    iteration: jax.Array  # int32
    buffer: PyTree = None


def make_host_trainer(
    agent: Agent,
    make_env: Callable[[int, int], HostEnvironment],
    num_seeds: int,
    seed: int,
    iterations_per_chunk: int,
    num_eval_episodes: int = 8,
    dataset: PyTree = None,
    evaluator: tuple[Callable, Callable] | None = None,
) -> Trainer:
    """Build a `Trainer` for an agent on CPU-stepped environments.

    Args:
        agent: the agent's pure functions and feed.
        make_env: `(num_envs, seed) -> HostEnvironment`.
        num_seeds: seeds trained side by side.
        seed: base seed for the environments (a non-negative int).
        iterations_per_chunk: iterations per `run` call.
        num_eval_episodes: evaluation episodes per seed.
        dataset: for hybrid feeds, the offline `Transition` on device (leaves [M, ...]).
        evaluator: `(evaluate, close)` to use instead of `make_host_evaluator`'s (procgen's
            level splits: `make_level_split_evaluator`).

    Returns:
        The `Trainer`; callbacks registered with its `report_progress` are called with
        `num_envs` after every batched env step (env steps per seed), for progress within a
        chunk.
    """
    feed = agent.feed
    num_envs = feed.num_envs
    env = make_env(num_seeds * num_envs, seed)
    spec = env.spec
    host = {"obs": None, "episode_return": np.zeros((num_seeds, num_envs)), "resets": 0}
    progress_callbacks: list[Callable[[int], None]] = []  # see Trainer.report_progress
    buffer, sampler = make_feed_sampling(feed, dataset)

    def split_seeds(x: np.ndarray) -> np.ndarray:
        return x.reshape((num_seeds, num_envs, *x.shape[1:]))

    def reset_envs() -> None:
        # A different env seed after every (re)start, so resumed runs do not replay episodes.
        host["obs"] = split_seeds(env.reset(reset_seed(seed, 0, host["resets"])))
        host["episode_return"][:] = 0.0
        host["resets"] += 1

    def init_one(key):
        agent_key, key = jax.random.split(key)
        buffer_state = None
        if buffer is not None:
            obs = jnp.zeros(spec.obs_shape, spec.obs_dtype)
            buffer_state = buffer.init(example_transition(obs))
        return HostCarry(agent.init(agent_key), key, jnp.zeros((), jnp.int32), buffer_state)

    def act_one(carry: HostCarry, obs, t):
        key, act_key = jax.random.split(carry.key)
        # Env steps so far: t is the step within an on-policy rollout (0 for replay feeds).
        step = carry.iteration * feed.steps_per_iteration + t * num_envs
        action, extras = agent.act(carry.agent_state, obs, act_key, step)
        return carry.replace(key=key), action, extras

    def update_one(carry: HostCarry, rollout: Transition):
        key, update_key = jax.random.split(carry.key)
        agent_state, metrics = agent.update(carry.agent_state, rollout, update_key)
        return carry.replace(agent_state=agent_state, key=key,
                             iteration=carry.iteration + 1), metrics

    def learn_one(carry: HostCarry, transition: Transition, dataset: PyTree):
        key, learn_key = jax.random.split(carry.key)
        agent_state, buffer_state, metrics = replay_learn(
            agent, buffer, carry.agent_state, carry.buffer, transition, carry.iteration, learn_key,
            dataset=dataset, sampler=sampler,
        )
        return carry.replace(agent_state=agent_state, buffer=buffer_state, key=key,
                             iteration=carry.iteration + 1), metrics

    act = jax.jit(over_seeds(act_one, num_shared=1))
    update = jax.jit(over_seeds(update_one), donate_argnums=0)
    learn = jax.jit(over_seeds(learn_one, num_shared=1), donate_argnums=0)

    def env_step(carry: HostCarry, t: int = 0):
        obs = host["obs"]
        carry, action, extras = act(carry, obs, np.int32(t))
        step = env.step(np.asarray(action).reshape(-1))
        reward = split_seeds(step.reward.astype(np.float32))
        terminated = split_seeds(step.terminated.astype(bool))
        truncated = split_seeds(step.truncated.astype(bool))
        done = terminated | truncated
        host["episode_return"] += reward
        finished_sum = np.where(done, host["episode_return"], 0.0).sum(axis=1)
        finished_count = done.sum(axis=1)
        finished_max = np.where(done, host["episode_return"], -np.inf).max(axis=1)
        host["episode_return"][done] = 0.0
        transition = Transition(
            obs=obs, action=np.asarray(action), reward=reward, terminated=terminated,
            truncated=truncated, next_obs=split_seeds(step.final_obs), extras=extras,
        )
        host["obs"] = split_seeds(step.obs)
        return carry, transition, (finished_sum, finished_count, finished_max)

    def report(env_steps: int) -> None:
        for callback in progress_callbacks:
            callback(env_steps)

    def run(carry: HostCarry):
        if host["obs"] is None:
            reset_envs()
        all_metrics = []
        for _ in range(iterations_per_chunk):
            if isinstance(feed, OnPolicyFeed):
                steps, stats = [], []
                for t in range(feed.rollout_length):
                    carry, transition, step_stats = env_step(carry, t)
                    report(num_envs)
                    steps.append(transition)
                    stats.append(step_stats)
                # [T, S, N, ...] -> [S, T, N, ...]: the seed axis leads for vmap.
                rollout = jax.tree.map(lambda *xs: np.swapaxes(np.stack(xs), 0, 1), *steps)
                carry, metrics = update(carry, rollout)
                sums, counts, maxima = zip(*stats, strict=True)
                finished_sum, finished_count = np.sum(sums, axis=0), np.sum(counts, axis=0)
                finished_max = np.max(maxima, axis=0)
            else:
                carry, transition, (finished_sum, finished_count, finished_max) = env_step(carry)
                report(num_envs)
                carry, metrics = learn(carry, transition, dataset)
            metrics = jax.tree.map(np.asarray, jax.device_get(metrics))
            metrics["episode_return_sum"] = finished_sum
            metrics["episodes"] = finished_count
            metrics["episode_return_max"] = finished_max
            all_metrics.append(metrics)
        stacked = jax.tree.map(lambda *xs: np.stack(xs, axis=1), *all_metrics)
        return carry, stacked

    evaluate, close_eval = evaluator or make_host_evaluator(
        agent.policy, make_env, spec, num_seeds, seed, num_eval_episodes)

    def close() -> None:
        env.close()
        close_eval()

    return Trainer(
        init=jax.jit(over_seeds(init_one, map_on_cpu=True)),
        run=run,
        evaluate=evaluate,
        steps_per_iteration=feed.steps_per_iteration,
        iterations_per_chunk=iterations_per_chunk,
        unit=ENV_STEPS,
        units_per_iteration=feed.steps_per_iteration,
        agent_state=lambda carry: carry.agent_state,
        close=close,
        report_progress=lambda callback: progress_callbacks.append(callback),
    )


def make_host_policy(policy_fn: Callable) -> Callable:
    """`policy_fn(agent_state, obs [N, ...]) -> probs [N, A]` compiled, for acting in host
    environments outside a run (`rlkit.collect` with a trained policy)."""
    return jax.jit(policy_fn)


def seed_history(history: HistoryPolicy | None, episodes_per_seed: int) -> HistoryPolicy | None:
    """An agent's `HistoryPolicy` (DT) compiled over seeds for `run_host_episodes`: `init`
    `(agent_state [S, ...], episodes_per_seed) -> memory [S, E, ...]`, `policy` and `observe`
    vmapped over the seed axis. None stays None (Markov agents)."""
    if history is None:
        return None
    init = jax.jit(over_seeds(lambda agent_state: history.init(agent_state, episodes_per_seed)))

    def init_memory(agent_state: PyTree, num_envs: int) -> PyTree:
        if num_envs != episodes_per_seed:  # an internal misuse, not a user's input
            raise ValueError(f"seed_history: compiled for {episodes_per_seed} episodes per seed, "
                             f"asked for {num_envs}")
        return init(agent_state)

    return HistoryPolicy(init=init_memory, policy=jax.jit(over_seeds(history.policy)),
                         observe=jax.jit(over_seeds(history.observe)))


def run_host_episodes(policy: Callable, agent_state: PyTree, env: HostEnvironment, spec,
                      num_seeds: int, reset: int, rng: np.random.Generator,
                      history: HistoryPolicy | None = None
                      ) -> tuple[np.ndarray, np.ndarray | None]:
    """One episode in each of the `env.num_envs = S * E` environments, seed s acting in the
    slice `[s * E, (s + 1) * E)`; actions sampled from the policy's probabilities.

    Args:
        policy: compiled `(agent_state [S, ...], obs [S, E, ...]) -> probs [S, E, A]`.
        agent_state: the seeds' agent states (leading [S] axis).
        env: the environments (reset here with seed `reset`).
        spec: the environment's spec (`max_episode_steps` bounds the episodes).
        num_seeds: S.
        reset: the reset seed.
        rng: draws the actions.
        history: None, or a policy that reads the episode so far (DT), compiled over seeds by
            `seed_history`: it is run instead of `policy`, told each action and reward.

    Returns:
        (returns [S, E], level_seeds [S, E] or None): each episode's return, and the level it
        was played on where the env reports one (procgen's `last_info["level_seed"]` after the
        reset: each env's first episode is the one counted).
    """
    per_seed = env.num_envs // num_seeds
    obs = env.reset(reset)
    level_seed = getattr(env, "last_info", {}).get("level_seed")
    total = np.zeros((env.num_envs,))
    done = np.zeros_like(total, dtype=bool)
    memory = None if history is None else history.init(agent_state, per_seed)
    for _ in range(spec.max_episode_steps):
        obs = obs.reshape(num_seeds, per_seed, *spec.obs_shape)
        if history is None:
            probs = policy(agent_state, obs)
        else:
            probs, memory = history.policy(agent_state, memory, obs)
        probs = np.asarray(probs).reshape(-1, spec.num_actions).astype(np.float64)
        probs /= probs.sum(axis=1, keepdims=True)
        action = (probs.cumsum(axis=1) > rng.random((len(probs), 1))).argmax(axis=1)
        step = env.step(action.astype(np.int32))
        if history is not None:
            memory = history.observe(memory, action.astype(np.int32).reshape(num_seeds, per_seed),
                                     step.reward.astype(np.float32).reshape(num_seeds, per_seed))
        total += np.where(done, 0.0, step.reward)
        done |= step.terminated | step.truncated
        obs = step.obs
        if done.all():
            break
    seeds = None if level_seed is None else np.asarray(level_seed).reshape(num_seeds, per_seed)
    return total.reshape(num_seeds, per_seed), seeds


def make_host_evaluator(policy_fn: Callable, make_env: Callable[[int, int], HostEnvironment],
                        spec, num_seeds: int, seed: int, num_eval_episodes: int,
                        history: HistoryPolicy | None = None):
    """Evaluate each seed's policy on CPU-stepped environments.

    Args:
        policy_fn: `(agent_state, obs [N, ...]) -> probs [N, A]` (an agent's `policy`).
        make_env: `(num_envs, seed) -> HostEnvironment`.
        spec: the environment's spec.
        num_seeds: seeds side by side (the agent states carry a leading [S] axis).
        seed: base seed of the evaluation environments.
        num_eval_episodes: episodes per seed, one per environment, run in parallel.
        history: the agent's `HistoryPolicy` (DT), or None: given, it is evaluated instead of
            `policy_fn` (`run_host_episodes`).

    Returns:
        (evaluate, close): `evaluate(carry) -> [S]` mean returns (the carry needs
        `agent_state` and `iteration`), `close()` releases the environments.
    """
    policy = jax.jit(over_seeds(policy_fn))
    compiled_history = seed_history(history, num_eval_episodes)
    eval_env: dict[str, HostEnvironment] = {}

    def evaluate(carry) -> np.ndarray:
        """Mean return of one episode in each of `num_eval_episodes` envs per seed."""
        if "env" not in eval_env:
            eval_env["env"] = make_env(num_seeds * num_eval_episodes, reset_seed(seed, 1, 0))
        iteration = int(np.asarray(carry.iteration).max())
        rng = np.random.default_rng((seed, 2, iteration))  # the policy's sampling, per run seed
        returns, _ = run_host_episodes(policy, carry.agent_state, eval_env["env"], spec,
                                       num_seeds, reset_seed(seed, 1, iteration), rng,
                                       history=compiled_history)
        return returns.mean(axis=1)

    def close() -> None:
        if "env" in eval_env:
            eval_env["env"].close()

    return evaluate, close


def make_level_split_evaluator(policy_fn: Callable,
                               make_env: Callable[[Any, int, int], HostEnvironment],
                               env_config: Any, spec, num_seeds: int, seed: int,
                               num_episodes: int = EPISODES_PER_SPLIT,
                               protocol: str = "fixed", history: HistoryPolicy | None = None):
    """Evaluate each seed's policy on procgen's train, validation and test levels (Mediratta et
    al. 2024, sec. 4; `rlkit.procgen`).

    Every split gets its own `num_seeds * num_episodes` environments, built from
    `rlkit.procgen.eval_configs(env_config, protocol)`; each plays one episode, and the level
    it was played on is checked against its split.

    Args:
        policy_fn: `(agent_state, obs [N, ...]) -> probs [N, A]` (an agent's `policy`).
        make_env: `(env config, num_envs, seed) -> HostEnvironment` (a procgen env whose
            `last_info` reports `level_seed`).
        env_config: the training env config (`envs.procgen_adapter.Config`: game and levels).
        spec: the environment's spec.
        num_seeds: seeds side by side (the agent states carry a leading [S] axis).
        seed: base seed of the evaluation environments.
        num_episodes: episodes per seed and split (the paper: 100).
        protocol: "fixed" or "after-train" (see `rlkit.procgen`).
        history: the agent's `HistoryPolicy` (DT), or None: given, it is evaluated instead of
            `policy_fn` (`run_host_episodes`).

    Returns:
        (evaluate, close): `evaluate(carry) -> dict` of [S] arrays: `train_return`,
        `validation_return`, `test_return`, their `*_normalized_return`s (per-game R_min and
        R_max), and `eval_return`, the test return (the run's headline figure); `close()`
        releases the environments.

    Raises:
        RlkitError: impossible splits (see `rlkit.procgen.level_splits`), when built; an
            episode played outside its split, when evaluating.
    """
    configs = procgen.eval_configs(env_config, protocol)
    splits = procgen.level_splits(env_config.num_levels, env_config.start_level, protocol)
    policy = jax.jit(over_seeds(policy_fn))
    compiled_history = seed_history(history, num_episodes)
    envs: dict[str, HostEnvironment] = {}

    def evaluate(carry) -> dict[str, np.ndarray]:
        iteration = int(np.asarray(carry.iteration).max())
        figures: dict[str, np.ndarray] = {}
        for index, name in enumerate(procgen.SPLITS):
            stream = _SPLIT_STREAM + index
            if name not in envs:
                envs[name] = make_env(configs[name], num_seeds * num_episodes,
                                      reset_seed(seed, stream, 0))
            rng = np.random.default_rng((seed, stream, iteration))
            returns, level_seeds = run_host_episodes(
                policy, carry.agent_state, envs[name], spec, num_seeds,
                reset_seed(seed, stream, iteration), rng, history=compiled_history)
            if level_seeds is not None and not splits[name].contains(level_seeds).all():
                outside = level_seeds[~splits[name].contains(level_seeds)]
                raise RlkitError(f"{name} evaluation: played level(s) {outside[:5].tolist()} "
                                 f"outside its {splits[name].describe()}; the env does not "
                                 "honour start_level / num_levels")
            figures[f"{name}_return"] = returns.mean(axis=1)
        for name in procgen.SPLITS:  # after the three returns, as metrics.csv lists them
            figures[f"{name}_normalized_return"] = np.asarray(
                procgen.normalize(env_config.game, figures[f"{name}_return"]), np.float64)
        figures["eval_return"] = figures["test_return"]
        return figures

    def close() -> None:
        for env in envs.values():
            env.close()

    return evaluate, close
