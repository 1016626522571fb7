"""Hybrid sampling: each batch mixes an offline dataset and an online replay buffer.

Hy-Q (Song et al. 2023), RLPD (Ball et al. 2023), HyGLOW, FTPedel and HyPO all train on batches
drawn partly from offline data and partly from what the agent collected itself. This one sampler
serves them all. The proportion is exact, not a coin flip per row: a batch of 256 at a fraction of
0.25 holds exactly `round(0.25 * 256) = 64` offline rows, always the first rows of the batch (the
`offline` mask says which), so the two sources' contributions to a loss do not fluctuate.

The fraction is a constant or a schedule of a step counter (an optax schedule, e.g. a linear decay
from mostly offline to mostly online). A constant fraction gives a static split, so each source is
sampled only as often as needed; a scheduled one samples a full batch from each source and picks
rows with a mask, so shapes stay static inside `jit` while the split moves.

The offline dataset is a `Transition` of device arrays with a leading [M] axis (see
`rlkit.data.dataset.to_device`); rows are drawn uniformly with replacement.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from rlkit.data.replay import Buffer
from rlkit.errors import RlkitError
from rlkit.types import Array, PRNGKey, PyTree, ReplayFeed


class HybridBatch(NamedTuple):
    """A mixed batch.

    Attributes:
        items: the rows, leaves [B, ...]; rows [0, num_offline) come from the dataset.
        offline: [B] bool, which rows come from the offline dataset.
        num_offline: int32 scalar, how many rows do.
    """

    items: PyTree
    offline: Array
    num_offline: Array


class HybridSampler(NamedTuple):
    """`sample(buffer_state, dataset, key, batch_size, step) -> HybridBatch`.

    Attributes:
        sample: draws a mixed batch; `dataset` is a pytree of [M, ...] arrays shaped like the
            buffer's items, `batch_size` a static int, `step` an int scalar fed to the schedule.
        fraction: `(step) -> float32 scalar`, the offline fraction at `step`.
        num_offline: `(step, batch_size) -> int32 scalar`, the offline rows of a batch.
    """

    sample: Callable[[PyTree, PyTree, PRNGKey, int, Array], HybridBatch]
    fraction: Callable[[Array], Array]
    num_offline: Callable[[Array, int], Array]


def sample_dataset(dataset: PyTree, key: PRNGKey, batch_size: int) -> PyTree:
    """`batch_size` rows of `dataset` (leaves [M, ...]) uniformly with replacement."""
    size = jax.tree.leaves(dataset)[0].shape[0]
    rows = jax.random.randint(key, (batch_size,), 0, size)
    return jax.tree.map(lambda leaf: leaf[rows], dataset)


def make_hybrid_sampler(buffer: Buffer, fraction: float | optax.Schedule) -> HybridSampler:
    """Mix an offline dataset and an online `buffer` in a fixed or scheduled proportion.

    Args:
        buffer: the online replay buffer (e.g. `make_uniform_buffer(capacity)`).
        fraction: the offline fraction in [0, 1], or an optax schedule `step -> fraction`
            (values outside [0, 1] are clipped).

    Returns:
        The `HybridSampler`.

    Raises:
        RlkitError: a constant fraction outside [0, 1].
    """
    static = not callable(fraction)
    if static:
        if isinstance(fraction, bool) or not 0.0 <= float(fraction) <= 1.0:
            raise RlkitError(f"offline_fraction: must be in [0, 1], got {fraction!r}.")
        constant = float(fraction)

    def fraction_at(step: Array) -> Array:
        value = constant if static else fraction(step)
        return jnp.clip(jnp.asarray(value, jnp.float32), 0.0, 1.0)

    def num_offline(step: Array, batch_size: int) -> Array:
        if static:
            # The count `sample` splits the batch at (Python's float64 product): a float32
            # product rounds differently for some pairs (0.7 * 45 gives 32, not 31).
            return jnp.asarray(round(constant * batch_size), jnp.int32)
        # Round half to even on an exact float product: 0.25 * 256 is 64 exactly.
        return jnp.round(fraction_at(step) * batch_size).astype(jnp.int32)

    def sample(buffer_state: PyTree, dataset: PyTree, key: PRNGKey, batch_size: int,
               step: Array) -> HybridBatch:
        offline_key, online_key = jax.random.split(key)
        is_offline = jnp.arange(batch_size) < num_offline(step, batch_size)
        if static:
            # Python arithmetic: the split is known when tracing, so sample no more than needed.
            count = round(constant * batch_size)
            parts = []
            if count:
                parts.append(sample_dataset(dataset, offline_key, count))
            if count < batch_size:
                parts.append(buffer.sample(buffer_state, online_key, batch_size - count))
            items = parts[0] if len(parts) == 1 else jax.tree.map(
                lambda a, b: jnp.concatenate([a, b]), *parts)
        else:
            offline_items = sample_dataset(dataset, offline_key, batch_size)
            online_items = buffer.sample(buffer_state, online_key, batch_size)

            def pick(offline_leaf, online_leaf):
                mask = is_offline.reshape((batch_size,) + (1,) * (offline_leaf.ndim - 1))
                return jnp.where(mask, offline_leaf, online_leaf)

            items = jax.tree.map(pick, offline_items, online_items)
        return HybridBatch(items=items, offline=is_offline,
                           num_offline=is_offline.sum().astype(jnp.int32))

    return HybridSampler(sample=sample, fraction=fraction_at, num_offline=num_offline)


def feed_fraction(feed: ReplayFeed) -> float | optax.Schedule:
    """The offline fraction a hybrid `ReplayFeed` asks for: a constant or a linear schedule of
    driver iterations."""
    if feed.offline_fraction_end is None or feed.offline_fraction_steps == 0:
        return feed.offline_fraction
    return optax.linear_schedule(feed.offline_fraction, feed.offline_fraction_end,
                                 feed.offline_fraction_steps)


__all__ = ["HybridBatch", "HybridSampler", "feed_fraction", "make_hybrid_sampler",
           "sample_dataset"]
