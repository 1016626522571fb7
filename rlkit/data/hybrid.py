"""Hybrid sampling: each batch mixes an offline dataset and an online replay buffer.

Hy-Q (Song et al. 2023), RLPD (Ball et al. 2023), H2O, GLOW / HyGLOW, FTPedel and HyPO all train
on batches drawn partly from offline data and partly from what the agent collected itself. This
one sampler serves them all (the on-device replay driver and the round driver). The proportion is
exact, not a coin flip per row: a batch of 256 at a fraction of 0.25 holds exactly
`round(0.25 * 256) = 64` offline rows, always the first rows of the batch (the `offline` mask says
which), so the two sources' contributions to a loss do not fluctuate.

The offline share is one of three things:

* a constant: a static split, so each source is sampled only as often as needed;
* a schedule of a step counter (an optax schedule, e.g. a linear decay from mostly offline to
  mostly online);
* `PROPORTIONAL`: the dataset's share of all stored rows, M / (M + n) for a dataset of M rows and
  an online buffer holding n (n changes inside `jit` as the buffer fills). The batch holds
  exactly `round(B * M / (M + n))` offline rows (half to even), computed in exact integer
  arithmetic, so the count is the same deterministic function of (B, M, n) on every device.
  Sampling the union of both sources uniformly has this share in expectation; fixing the count
  removes the per-batch noise.

The moving shares (schedule, proportional) sample a full batch from each source and pick rows
with a mask, so shapes stay static inside `jit` while the split moves.

While the online buffer is empty, every row is offline, whatever the share (the round driver fits
on the dataset alone before its first rollout; an empty buffer has no rows to give).

The offline dataset is a pytree of device arrays with a leading [M] axis shaped like the buffer's
items (see `rlkit.data.dataset.to_device`); rows are drawn uniformly with replacement.
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

PROPORTIONAL = "proportional"
"""The `fraction` of `make_hybrid_sampler` that follows the sources' sizes: M / (M + n)."""

_MAX_ROWS = 1 << 30  # M + n up to 2^30 keeps the int32 long division exact


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
        fraction: `(step, online_size, dataset_size) -> float32 scalar`, the offline share at
            `step` (the sizes, the buffer's int32 `size` and the dataset's static row count, are
            needed by `PROPORTIONAL` only and may be None otherwise).
        num_offline: `(step, batch_size, online_size, dataset_size) -> int32 scalar`, the
            offline rows of a batch (sizes as for `fraction`; with `online_size` 0 it is
            `batch_size`).
    """

    sample: Callable[[PyTree, PyTree, PRNGKey, int, Array], HybridBatch]
    fraction: Callable[..., Array]
    num_offline: Callable[..., Array]


def sample_dataset(dataset: PyTree, key: PRNGKey, batch_size: int) -> PyTree:
    """`batch_size` rows of `dataset` (leaves [M, ...]) uniformly with replacement."""
    size = jax.tree.leaves(dataset)[0].shape[0]
    rows = jax.random.randint(key, (batch_size,), 0, size)
    return jax.tree.map(lambda leaf: leaf[rows], dataset)


def proportional_count(batch_size: int, dataset_size: int, online_size: Array) -> Array:
    """`round(batch_size * M / (M + n))`, half to even, exactly: the offline rows of a batch.

    Args:
        batch_size: B, rows per batch (static).
        dataset_size: M >= 1, the dataset's rows (static).
        online_size: n >= 0, int32 scalar, the rows in the online buffer (may be traced).

    Returns:
        int32 scalar in [0, B]; B when n is 0.

    Raises:
        RlkitError: M < 1 or M + n could pass 2^30 (checked for n up to `online_capacity` by
            the sampler).

    B * M passes int32 for large datasets, so this is schoolbook long division of the static
    Python int B * M by the traced M + n, one bit at a time: the remainder stays below the
    divisor (< 2^30), so nothing overflows and nothing is rounded by floating point.
    """
    if dataset_size < 1:
        raise RlkitError(f"dataset: needs at least one row for hybrid sampling, got "
                         f"{dataset_size}.")
    total = dataset_size + jnp.asarray(online_size, jnp.int32)
    quotient = jnp.zeros((), jnp.int32)
    remainder = jnp.zeros((), jnp.int32)
    for bit in bin(batch_size * dataset_size)[2:]:
        remainder = 2 * remainder + int(bit)
        carry = remainder >= total
        quotient = 2 * quotient + carry.astype(jnp.int32)
        remainder = jnp.where(carry, remainder - total, remainder)
    # Round half to even (as Python's round for the constant share): up past the half, and at
    # exactly the half when the quotient is odd.
    half = total - remainder
    up = (remainder > half) | ((remainder == half) & (quotient % 2 == 1))
    return quotient + up.astype(jnp.int32)


def make_hybrid_sampler(
    buffer: Buffer, fraction: float | optax.Schedule | str
) -> HybridSampler:
    """Mix an offline dataset and an online `buffer` in a fixed, scheduled or proportional share.

    Args:
        buffer: the online replay buffer (e.g. `make_uniform_buffer(capacity)`).
        fraction: the offline fraction in [0, 1], an optax schedule `step -> fraction` (values
            outside [0, 1] are clipped), or `PROPORTIONAL` (the dataset's share of all rows).

    Returns:
        The `HybridSampler`.

    Raises:
        RlkitError: a constant fraction outside [0, 1], or a string other than `PROPORTIONAL`.
    """
    proportional = fraction == PROPORTIONAL if isinstance(fraction, str) else False
    if isinstance(fraction, str) and not proportional:
        raise RlkitError(f"offline_fraction: must be a number in [0, 1], a schedule or "
                         f"{PROPORTIONAL!r}, got {fraction!r}.")
    static = not (proportional or callable(fraction))
    if static:
        if isinstance(fraction, bool) or not 0.0 <= float(fraction) <= 1.0:
            raise RlkitError(f"offline_fraction: must be in [0, 1], got {fraction!r}.")
        constant = float(fraction)

    def fraction_at(step: Array, online_size: Array | None = None,
                    dataset_size: int | None = None) -> Array:
        if proportional:
            total = dataset_size + jnp.asarray(online_size, jnp.float32)
            return jnp.asarray(dataset_size / total, jnp.float32)
        value = constant if static else fraction(step)
        return jnp.clip(jnp.asarray(value, jnp.float32), 0.0, 1.0)

    def num_offline(step: Array, batch_size: int, online_size: Array | None = None,
                    dataset_size: int | None = None) -> Array:
        if proportional:
            return proportional_count(batch_size, dataset_size, online_size)
        if static:
            # The count `sample` splits the batch at (Python's float64 product): a float32
            # product rounds differently for some pairs (0.7 * 45 gives 32, not 31).
            count = jnp.asarray(round(constant * batch_size), jnp.int32)
        else:
            # Round half to even on an exact float product: 0.25 * 256 is 64 exactly.
            count = jnp.round(fraction_at(step) * batch_size).astype(jnp.int32)
        if online_size is None:
            return count
        return jnp.where(online_size > 0, count, batch_size).astype(jnp.int32)

    def sample(buffer_state: PyTree, dataset: PyTree, key: PRNGKey, batch_size: int,
               step: Array) -> HybridBatch:
        offline_key, online_key = jax.random.split(key)
        dataset_size = jax.tree.leaves(dataset)[0].shape[0]
        online_size = buffer_state.size
        if proportional:
            capacity = jax.tree.leaves(buffer_state.storage)[0].shape[0]
            if dataset_size + capacity > _MAX_ROWS:
                raise RlkitError(
                    f"dataset: {dataset_size:,} rows plus an online buffer of {capacity:,} pass "
                    f"2^30 rows, beyond the exact proportional count; use a constant "
                    f"offline_fraction.")
        is_offline = jnp.arange(batch_size) < num_offline(step, batch_size, online_size,
                                                          dataset_size)
        if static:
            # Python arithmetic: the split is known when tracing, so sample no more than needed.
            count = round(constant * batch_size)
            parts = []
            if count:
                parts.append(sample_dataset(dataset, offline_key, count))
            if count < batch_size:
                online = buffer.sample(buffer_state, online_key, batch_size - count)
                # An empty buffer has no rows: its share comes from the dataset too.
                stand_in = sample_dataset(dataset, jax.random.fold_in(offline_key, 1),
                                          batch_size - count)
                parts.append(jax.tree.map(
                    lambda stand_in, online: _where_rows(online_size == 0, stand_in, online),
                    stand_in, online))
            items = parts[0] if len(parts) == 1 else jax.tree.map(
                lambda a, b: jnp.concatenate([a, b]), *parts)
        else:
            offline_items = sample_dataset(dataset, offline_key, batch_size)
            online_items = buffer.sample(buffer_state, online_key, batch_size)
            items = jax.tree.map(lambda offline, online: _where_rows(is_offline, offline, online),
                                 offline_items, online_items)
        return HybridBatch(items=items, offline=is_offline,
                           num_offline=is_offline.sum().astype(jnp.int32))

    return HybridSampler(sample=sample, fraction=fraction_at, num_offline=num_offline)


def _where_rows(mask: Array, if_true: Array, if_false: Array) -> Array:
    """Rows of `if_true` where `mask` ([B] or scalar bool), else of `if_false` (leaves [B, ...])."""
    mask = jnp.reshape(mask, jnp.shape(mask) + (1,) * (if_true.ndim - jnp.ndim(mask)))
    return jnp.where(mask, if_true, if_false)


def feed_fraction(feed: ReplayFeed) -> float | optax.Schedule:
    """The offline fraction a hybrid `ReplayFeed` asks for: a constant or a linear schedule of
    driver iterations."""
    if feed.offline_fraction_end is None or feed.offline_fraction_steps == 0:
        return feed.offline_fraction
    return optax.linear_schedule(feed.offline_fraction, feed.offline_fraction_end,
                                 feed.offline_fraction_steps)


__all__ = ["PROPORTIONAL", "HybridBatch", "HybridSampler", "feed_fraction",
           "make_hybrid_sampler", "proportional_count", "sample_dataset"]
