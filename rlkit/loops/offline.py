"""The offline driver: `update` on dataset batches only, with periodic evaluation in an env.

For agents with an `OfflineFeed` (BC, BCQ, CQL, IQL, DT). A run is `lax.scan` over updates
inside one jitted, seed-vmapped chunk, as in the on-device driver; evaluation between chunks runs
the policy in the environment (exactly through `rlkit.planning` where the env has a model, on
device for JAX envs, on the CPU for host envs).

Two ways to feed the data:

* **on device** (the default when the dataset fits): the whole dataset is a device array, an
  argument of the compiled chunk shared by every seed, and each update draws its batch with
  `jax.random` inside the scan. Nothing crosses the host boundary during a chunk.
* **streamed** (for image datasets larger than device memory): the dataset stays memory-mapped on
  disk and `rlkit.data.dataset.batch_stream` feeds it: before each chunk the host gathers that
  chunk's `[S, K, B]` rows (seeds x updates x batch) and ships them in one transfer; a background
  thread prepares the next chunk's block while the device trains on the current one. Block `c`'s
  row indices come from `numpy.random.default_rng((seed, c))`, and a resumed run opens the stream
  at its chunk, so it draws exactly the batches an uninterrupted one would.

Sequence agents (DT: `OfflineFeed.context_length` K >= 1) get batches of context windows
instead of rows (`rlkit.data.sequences`): the dataset's `EpisodeIndex` is computed once on the
host (checking that each episode's rows are contiguous), and the same two modes draw windows
ending at uniformly drawn rows, leaves [B, K, ...].

Each iteration is one update and takes no env steps: the trainer's unit is `UPDATES`, so
`--total-steps`, progress and curves count updates.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from flax import struct

from rlkit.data.dataset import batch_stream
from rlkit.data.hybrid import sample_dataset
from rlkit.data.sequences import episode_index, sample_windows
from rlkit.errors import require
from rlkit.loops.common import UPDATES, BoundRun, Trainer, over_seeds
from rlkit.types import Agent, PyTree, Transition


@struct.dataclass
class OfflineCarry:
    """One seed's offline training state (all arrays: checkpointable)."""

    agent_state: PyTree
    key: jax.Array
    iteration: jax.Array  # int32, updates done


def make_offline_trainer(
    agent: Agent,
    transitions: Transition,
    iterations_per_chunk: int,
    evaluate: Callable[[OfflineCarry], Any],
    *,
    seed: int = 0,
    stream: bool = False,
    close: Callable[[], None] = lambda: None,
) -> Trainer:
    """Build a `Trainer` that trains `agent` on a dataset.

    Args:
        agent: an agent with an `OfflineFeed`.
        transitions: the dataset's transitions, leaves [M, ...]: numpy arrays or memmaps (moved
            to the device whole unless `stream`).
        iterations_per_chunk: updates per `run` call.
        evaluate: `(carry) -> [S]` returns of each seed's policy (see `make_jax_evaluator` and
            `rlkit.loops.host.make_host_evaluator`).
        seed: the run's base seed (streamed batches are drawn from it).
        stream: keep the dataset on the host and stream batches (for datasets larger than
            device memory).
        close: releases the evaluator's resources.

    Returns:
        A `Trainer` whose iterations are updates.
    """
    batch_size, context_length = agent.feed.batch_size, agent.feed.context_length
    transitions = Transition(obs=transitions.obs, action=transitions.action,
                             reward=transitions.reward, terminated=transitions.terminated,
                             truncated=transitions.truncated, next_obs=transitions.next_obs)
    require(int(transitions.action.shape[0]) >= 1, "dataset",
            "holds no transitions; collect at least one episode")
    index = None
    if context_length:
        index = episode_index(transitions.reward, transitions.terminated, transitions.truncated,
                              transitions.obs, transitions.next_obs)

    def sample(dataset, key: jax.Array) -> Transition:
        if index is None:
            return sample_dataset(dataset, key, batch_size)
        rows, episodes = dataset
        return sample_windows(rows, episodes, key, batch_size, context_length)

    def init_one(key: jax.Array) -> OfflineCarry:
        agent_key, key = jax.random.split(key)
        return OfflineCarry(agent_state=agent.init(agent_key), key=key,
                            iteration=jax.numpy.zeros((), jax.numpy.int32))

    def update_step(carry: OfflineCarry, batch: Transition):
        key, update_key = jax.random.split(carry.key)
        agent_state, metrics = agent.update(carry.agent_state, batch, update_key)
        carry = carry.replace(agent_state=agent_state, key=key, iteration=carry.iteration + 1)
        return carry, metrics

    def run_on_device(carry: OfflineCarry, dataset: Transition):
        def body(carry, _):
            key, sample_key = jax.random.split(carry.key)
            batch = sample(dataset, sample_key)
            return update_step(carry.replace(key=key), batch)

        return jax.lax.scan(body, carry, None, length=iterations_per_chunk)

    def run_block(carry: OfflineCarry, block: Transition):
        return jax.lax.scan(update_step, carry, block)  # block leaves [K, B, ...]

    if not stream:
        device_dataset = jax.device_put(transitions if index is None else (transitions, index))
        run = BoundRun(jax.jit(over_seeds(run_on_device, num_shared=1), donate_argnums=0),
                       device_dataset)
    else:
        run_compiled = jax.jit(over_seeds(run_block), donate_argnums=0)
        blocks, next_block = None, None  # the open batch_stream and the (chunk, seeds) it gives

        windows = None if index is None else (index, context_length)

        def run(carry: OfflineCarry):
            nonlocal blocks, next_block
            iteration = int(np.asarray(carry.iteration).reshape(-1)[0])
            chunk = iteration // iterations_per_chunk
            num_seeds = int(np.asarray(carry.iteration).size)
            if next_block != (chunk, num_seeds):  # the first chunk, or a resume
                close_stream()
                blocks = batch_stream(transitions, batch_size, iterations_per_chunk, seed,
                                      start=chunk, num_seeds=num_seeds, windows=windows)
            block = next(blocks)  # leaves [S, K, B, ...]
            next_block = (chunk + 1, num_seeds)
            return run_compiled(carry, block)

        def close_stream() -> None:
            nonlocal blocks, next_block
            if blocks is not None:
                blocks.close()
            blocks, next_block = None, None

        base_close = close

        def close() -> None:
            close_stream()
            base_close()

    return Trainer(
        init=jax.jit(over_seeds(init_one, map_on_cpu=True)),
        run=run,
        evaluate=evaluate,
        steps_per_iteration=0,
        iterations_per_chunk=iterations_per_chunk,
        unit=UPDATES,
        units_per_iteration=1,
        agent_state=lambda carry: carry.agent_state,
        close=close,
    )


def make_jax_evaluator(agent: Agent, env, env_params: Any, num_eval_episodes: int):
    """`(carry) -> [S]` returns of each seed's policy on a JAX environment (exact with a model,
    except for agents with a `history` policy: see `rlkit.loops.on_device.evaluate_policy`)."""
    from rlkit.loops.on_device import evaluate_policy

    def evaluate_one(carry) -> jax.Array:
        return evaluate_policy(agent, env, env_params, carry.agent_state, carry.key,
                               num_eval_episodes)

    return jax.jit(over_seeds(evaluate_one, map_on_cpu=True))


__all__ = ["OfflineCarry", "make_jax_evaluator", "make_offline_trainer"]
