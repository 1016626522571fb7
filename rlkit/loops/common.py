"""Pieces the drivers share: auto-reset, acting and stepping, episode bookkeeping, replay
sampling, the Trainer interface."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rlkit.errors import RlkitError
from rlkit.types import Array, Environment, PyTree, ReplayFeed, Transition


class Unit(NamedTuple):
    """What a trainer's budget counts: `--total-steps`, the progress bar, the x axis of
    curves.png and the throughput in summary.json are in this unit.

    Attributes:
        column: the metrics.csv column and summary.json key (`env_steps`, `updates`, ...).
        label: the same for people (`env steps`, ...).
    """

    column: str
    label: str


ENV_STEPS = Unit("env_steps", "env steps")  # online and hybrid drivers (rounds too)
UPDATES = Unit("updates", "updates")  # the offline driver: one update per iteration


class Trainer(NamedTuple):
    """What a driver hands the run loop (`rlkit.runner`).

    Attributes:
        init: `(keys [S]) -> carry`, the whole training state of S seeds (a pytree whose leaves
            have a leading seed axis). Compiled.
        run: `(carry) -> (carry, metrics)` runs `iterations_per_chunk` iterations for every seed;
            metrics is a dict of arrays [S, iterations_per_chunk]. Compiled; donates `carry`.
        evaluate: `(carry) -> returns [S]`, the evaluated return of each seed's current policy.
        steps_per_iteration: env steps per seed and iteration (0 for the offline driver, which
            steps no environment while training).
        iterations_per_chunk: iterations per `run` call.
        unit: what the run's budget counts (`ENV_STEPS`, `UPDATES`, ...).
        units_per_iteration: that unit per seed and iteration.
        agent_state: `(carry) -> agent states` with the seed axis, for saving policies.
        close: releases host resources (host environments); a no-op on device.
        report_progress: for drivers whose chunk is a host loop (the host driver),
            `(callback) -> None` registers `callback(units)`, called after every iteration with
            the units it did, so the progress bar moves within a chunk; None elsewhere.
        episodic: False for a driver with no episodes and no return (the language-model
            driver, whose `evaluate` gives its own headline metric, already logged):
            metrics.csv then has no episode_return, episodes or eval_return column, and
            summary.json no env_steps, steps_per_second, final_return* or per_seed.
    """

    init: Callable[[Array], PyTree]
    run: Callable[[PyTree], tuple[PyTree, dict[str, Array]]]
    evaluate: Callable[[PyTree], Array]
    steps_per_iteration: int
    iterations_per_chunk: int
    unit: Unit
    units_per_iteration: int
    agent_state: Callable[[PyTree], PyTree]
    close: Callable[[], None] = lambda: None
    report_progress: Callable[[Callable[[int], None]], None] | None = None
    episodic: bool = True


class BoundRun:
    """A jitted `(carry, *shared) -> (carry, metrics)` with its shared arguments bound, so a
    driver that closes over an offline dataset still offers `Trainer.run(carry)`.

    The dataset stays an argument of the compiled program rather than a constant baked into it
    (constants the size of a dataset bloat compilation and are copied into every executable).
    `lower(carry).compile()` works as on a jitted function, so the run loop can time compilation.
    """

    def __init__(self, jitted, *shared):
        self.jitted = jitted
        self.shared = shared

    def __call__(self, carry):
        return self.jitted(carry, *self.shared)

    def lower(self, carry):
        lowered = self.jitted.lower(carry, *self.shared)
        shared = self.shared

        class _Lowered:
            @staticmethod
            def compile():
                compiled = lowered.compile()
                return lambda carry: compiled(carry, *shared)

        return _Lowered()


def autoreset_step(env: Environment, key: Array, env_state: PyTree, action: Array, params: Any):
    """Step one environment and reset it where the episode ended.

    Returns:
        (obs, env_state, reward, terminated, truncated, final_obs): `obs` is the first
        observation of the next episode where the episode ended, `final_obs` the true next
        observation (what bootstrapping after a truncation needs).
    """
    key_step, key_reset = jax.random.split(key)
    next_obs, next_state, reward, terminated, truncated, _ = env.step(
        key_step, env_state, action, params
    )
    done = jnp.logical_or(terminated, truncated)
    obs, env_state = _where_done(done, env.reset(key_reset, params), (next_obs, next_state))
    return obs, env_state, reward, terminated, truncated, next_obs


def _where_done(done: Array, reset: PyTree, stepped: PyTree) -> PyTree:
    """One env's (obs, env_state): the reset ones where its episode ended (`done`, a bool
    scalar), else the stepped ones."""
    return jax.tree.map(lambda r, s: jnp.where(done, r, s), reset, stepped)


def make_step_envs(env: Environment, params: Any, num_envs: int,
                   lazy_reset: bool | None = None) -> Callable:
    """`autoreset_step` for a driver's `num_envs` environments at once, taking one key.

    `step_envs(key, env_state, action [N])` splits `key` into one key per environment and steps
    each as `autoreset_step` does (the same keys, so the same numbers). With `lazy_reset` the
    reset (and the keys only it uses) runs under `lax.cond` only when some episode ended: on a
    CPU, where most steps end no episode (CartPole: one end per ~100-500 steps of an env), this
    skips a threefry draw and the reset of every step: PPO's rollout on CartPole took 0.56-0.65 s
    instead of 0.93-0.97 s per 5e5 env steps (benchmarks/README.md, CPU ratios, session 11).
    The outputs are bit-identical either way (the reset is only read where an episode ended).
    A cond under the seed `vmap` is a select again, so several seeds compute the reset every step
    as before. Off by default elsewhere than the CPU: XLA:GPU reads a conditional's predicate on
    the host, a synchronisation per step.

    Args:
        env: a functional environment (no auto-reset).
        params: its parameters.
        num_envs: N, environments stepped together.
        lazy_reset: reset under `lax.cond`; None: on when JAX's default backend is the CPU.

    Returns:
        `step_envs(key, env_state, action) -> (obs, env_state, reward, terminated, truncated,
        final_obs)`, leaves [N, ...] as `autoreset_step` returns them per environment.
    """
    if lazy_reset is None:
        lazy_reset = jax.default_backend() == "cpu"
    eager = jax.vmap(lambda key, state, action: autoreset_step(env, key, state, action, params))
    if not lazy_reset:
        return lambda key, env_state, action: eager(jax.random.split(key, num_envs), env_state,
                                                    action)

    def per_env_keys(key: Array) -> Array:  # [N, 2]: (step, reset) as autoreset_step splits
        return jax.vmap(jax.random.split)(jax.random.split(key, num_envs))

    def step_envs(key: Array, env_state: PyTree, action: Array):
        next_obs, next_state, reward, terminated, truncated, _ = jax.vmap(
            env.step, in_axes=(0, 0, 0, None))(per_env_keys(key)[:, 0], env_state, action, params)
        done = jnp.logical_or(terminated, truncated)

        def reset(_):
            # The keys are split again in here, so that an env whose step ignores its key (most
            # do) splits none outside the branch.
            reset = jax.vmap(env.reset, in_axes=(0, None))(per_env_keys(key)[:, 1], params)
            return jax.vmap(_where_done)(done, reset, (next_obs, next_state))

        obs, env_state = jax.lax.cond(done.any(), reset, lambda _: (next_obs, next_state), None)
        return obs, env_state, reward, terminated, truncated, next_obs

    return step_envs


def act_and_step(agent, step_envs: Callable, carry: PyTree, key: Array, step: Array):
    """Act in every environment of a driver's carry and step each once, with auto-reset.

    Args:
        agent: the agent (its `act`).
        step_envs: `(key, env_state, action [N]) -> autoreset_step's six outputs` for the
            driver's N environments (`make_step_envs`).
        carry: a driver carry with `agent_state`, `env_state`, `obs` [N, *obs_shape] and the
            running `episode_return` / `episode_length` [N].
        key: consumed whole (split into the act key and the key of `step_envs`).
        step: int32 scalar, env steps taken before this call (`act`'s `step`).

    Returns:
        (carry, transition, (finished_sum, finished_count, finished_max)): the carry with the new
        env state, observations and episode counters; the [N] transitions (`next_obs` the true
        next observation, `extras` what `act` returned); the sum, count and maximum (-inf if
        none) of the returns of the episodes that ended (`track_episodes`).
    """
    act_key, step_key = jax.random.split(key)
    action, extras = agent.act(carry.agent_state, carry.obs, act_key, step)
    obs, env_state, reward, terminated, truncated, final_obs = step_envs(
        step_key, carry.env_state, action)
    transition = Transition(
        obs=carry.obs, action=action, reward=reward, terminated=terminated,
        truncated=truncated, next_obs=final_obs, extras=extras,
    )
    episode_return, episode_length, finished_sum, finished_count, finished_max = track_episodes(
        carry.episode_return, carry.episode_length, reward,
        jnp.logical_or(terminated, truncated),
    )
    carry = carry.replace(
        env_state=env_state, obs=obs, episode_return=episode_return,
        episode_length=episode_length,
    )
    return carry, transition, (finished_sum, finished_count, finished_max)


def track_episodes(episode_return: Array, episode_length: Array, reward: Array, done: Array):
    """Update running episode returns and lengths ([N]) and report the episodes that ended.

    Returns:
        (episode_return, episode_length, finished_return_sum, finished_count,
        finished_return_max): the running counters (reset where `done`), and the sum, count and
        maximum of the returns of the finished episodes (the maximum -inf if none ended; on
        sparse-reward tasks it shows the first success, which the mean can hide).
    """
    episode_return = episode_return + reward
    episode_length = episode_length + 1
    finished_sum = jnp.where(done, episode_return, 0.0).sum()
    finished_count = done.sum().astype(jnp.int32)
    finished_max = jnp.where(done, episode_return, -jnp.inf).max()
    episode_return = jnp.where(done, 0.0, episode_return)
    episode_length = jnp.where(done, 0, episode_length)
    return episode_return, episode_length, finished_sum, finished_count, finished_max


def nan_metrics_like(update_fn: Callable, *args) -> dict[str, Array]:
    """Metrics of the same structure `update_fn(*args)` returns, filled with NaN.

    Used on iterations where a replay agent does not update yet, so `lax.cond`'s branches match.
    """
    _, shapes = jax.eval_shape(update_fn, *args)
    return jax.tree.map(lambda s: jnp.full(s.shape, jnp.nan, s.dtype), shapes)


def replay_learn(agent, buffer, agent_state: PyTree, buffer_state: PyTree, transition: PyTree,
                 iteration: Array, key: Array, dataset: PyTree = None, sampler=None):
    """Add a [N] batch of transitions to the replay buffer and, when due, update the agent.

    The update runs once the buffer holds `feed.learning_starts` transitions, every
    `feed.train_every` iterations, under `lax.cond` so the compiled program stays one program.
    With a hybrid feed, `sampler` (a `rlkit.data.hybrid.HybridSampler`) mixes rows of `dataset`
    into each batch; the schedule's step is the driver iteration.
    With a prioritised feed, `buffer` is a prioritised buffer: the batch carries importance
    weights in `extras["weight"]`, and the update's `metrics[PRIORITIES]` become the sampled
    rows' priorities (popped before the metrics are returned; `priority_beta` is added).

    Returns:
        (agent_state, buffer_state, metrics): metrics are NaN on iterations without an update.
    """
    feed = agent.feed
    sample_key, update_key = jax.random.split(key)
    buffer_state = buffer.add(buffer_state, transition)
    if feed.prioritised:
        return _prioritised_learn(agent, buffer, agent_state, buffer_state, iteration,
                                  sample_key, update_key)
    if sampler is None:
        batch = buffer.sample(buffer_state, sample_key, feed.batch_size)
    else:
        batch = sampler.sample(buffer_state, dataset, sample_key, feed.batch_size,
                               iteration).items
    should_update = jnp.logical_and(
        buffer.can_sample(buffer_state, feed.learning_starts), iteration % feed.train_every == 0
    )

    def skip(agent_state, batch, key):
        return agent_state, nan_metrics_like(agent.update, agent_state, batch, key)

    agent_state, metrics = jax.lax.cond(
        should_update, agent.update, skip, agent_state, batch, update_key
    )
    if sampler is not None:
        metrics = dict(metrics, offline_fraction=sampler.fraction(iteration))
    return agent_state, buffer_state, metrics


def _prioritised_learn(agent, buffer, agent_state: PyTree, buffer_state: PyTree, iteration: Array,
                       sample_key: Array, update_key: Array):
    """`replay_learn` for a prioritised feed (Schaul et al. 2016).

    The batch carries the importance weights in `extras["weight"]`, beta moving linearly from
    `feed.priority_beta` to 1 over `feed.priority_beta_steps` env steps; the update's
    `metrics[PRIORITIES]` ([B] |TD error|) is popped and stored as the sampled rows' priorities.
    """
    import optax

    from rlkit.types import PRIORITIES

    feed = agent.feed
    beta = optax.linear_schedule(feed.priority_beta, 1.0, max(feed.priority_beta_steps, 1))(
        iteration * feed.steps_per_iteration)
    sample = buffer.sample(buffer_state, sample_key, feed.batch_size, beta)
    batch = sample.items.replace(extras={**sample.items.extras, "weight": sample.weights})
    should_update = jnp.logical_and(
        buffer.can_sample(buffer_state, feed.learning_starts), iteration % feed.train_every == 0
    )

    def learn(agent_state, buffer_state):
        agent_state, metrics = agent.update(agent_state, batch, update_key)
        metrics = dict(metrics)
        priorities = metrics.pop(PRIORITIES)
        return agent_state, buffer.set_priorities(buffer_state, sample.indices, priorities), metrics

    def skip(agent_state, buffer_state):
        _, _, shapes = jax.eval_shape(learn, agent_state, buffer_state)
        return agent_state, buffer_state, jax.tree.map(
            lambda s: jnp.full(s.shape, jnp.nan, s.dtype), shapes)

    agent_state, buffer_state, metrics = jax.lax.cond(
        should_update, learn, skip, agent_state, buffer_state)
    return agent_state, buffer_state, dict(metrics, priority_beta=jnp.asarray(beta, jnp.float32))


def make_replay_sampling(feed):
    """The replay buffer of a `ReplayFeed` (prioritised or uniform) and, for a hybrid feed, its
    `HybridSampler`."""
    from rlkit.data.replay import make_prioritised_buffer, make_uniform_buffer

    if feed.prioritised:
        buffer = make_prioritised_buffer(feed.buffer_size, alpha=feed.priority_alpha,
                                         beta=feed.priority_beta, epsilon=feed.priority_epsilon)
        return buffer, None
    buffer = make_uniform_buffer(feed.buffer_size)
    sampler = None
    if feed.uses_dataset:
        from rlkit.data.hybrid import feed_fraction, make_hybrid_sampler

        sampler = make_hybrid_sampler(buffer, feed_fraction(feed))
    return buffer, sampler


def make_feed_sampling(feed, dataset: PyTree):
    """The replay buffer and hybrid sampler of a driver's feed (`make_replay_sampling`), or
    (None, None) for a feed without replay.

    Raises:
        RlkitError: the feed mixes offline data into its batches and `dataset` is None.
    """
    if feed.uses_dataset and dataset is None:
        raise RlkitError("dataset: this agent mixes offline data into its batches; pass one "
                         "(--dataset DIR)")
    if isinstance(feed, ReplayFeed):
        return make_replay_sampling(feed)
    return None, None


def example_transition(obs: Array) -> PyTree:
    """One unbatched transition shaped like `obs` (what a replay buffer is initialised from)."""
    return Transition(
        obs=obs, action=jnp.zeros((), jnp.int32), reward=jnp.zeros((), jnp.float32),
        terminated=jnp.zeros((), bool), truncated=jnp.zeros((), bool), next_obs=obs, extras={},
    )


def over_seeds(fn, num_shared: int = 0, *, map_on_cpu: bool = False):
    """`jax.vmap(fn)` over the leading seed axis, except for a single seed, which runs unbatched.

    The last `num_shared` arguments are shared by every seed (an offline dataset) and not mapped.
    The branch is on a static shape, so each seed count compiles its own program. A batch of one
    is not free in XLA (batched RNG, gathers and loops carry the extra axis), and one seed is the
    common interactive case.

    `map_on_cpu=True` runs the seeds one after another (`jax.lax.map`) when the default backend
    is the CPU, for programs that call LAPACK (orthogonal initialisation's QR, exact planning's
    solve). jaxlib's CPU LAPACK kernels split a batched factorisation into tasks on XLA's
    intra-op thread pool and block until they finish; when every pool thread runs such a kernel
    at once, the tasks wait behind them forever (jaxlib 0.10.2, `jax::ParallelBatchMap`; the
    stacks and a 6-QR reproducer are in benchmarks/README.md, "The XLA:CPU hang"). Unbatched,
    each kernel runs inline and cannot wedge. Each seed gets exactly the numbers it gets under
    `vmap` (the same kernels, one matrix at a time). Used for init and evaluation programs,
    which run once per run or per log; training chunks stay vmapped.
    """

    def wrapped(*args):
        split = len(args) - num_shared
        batched, shared = args[:split], args[split:]
        if jax.tree.leaves(batched)[0].shape[0] == 1:
            out = fn(*jax.tree.map(lambda x: x[0], batched), *shared)
            return jax.tree.map(lambda x: x[None], out)
        if map_on_cpu and jax.default_backend() == "cpu":
            return jax.lax.map(lambda seed_args: fn(*seed_args, *shared), batched)
        in_axes = (0,) * split + (None,) * num_shared
        return jax.vmap(fn, in_axes=in_axes)(*args)

    return wrapped
