"""Replay buffers as pure functions over a state pytree (flashbax style).

A buffer is a `Buffer` NamedTuple of pure functions `(init, add, sample, can_sample)` over an
explicit `BufferState`, so it crosses `jit`, `lax.scan` and `vmap` (over seeds) and is
checkpointed like any other pytree. Drivers may donate the state: `add` rewrites it in place then.

The items are any pytree (usually a `rlkit.types.Transition`); the buffer only sees leaves.
Storage is allocated once in `init`, as `[capacity, ...]` leaves with the example's dtypes, so
uint8 image observations stay uint8.

The uniform buffer writes items in a ring: the first `capacity` items go to slots 0, 1, ...,
after which the oldest item is overwritten. Hence the filled part is always slots `[0, size)`,
which is what `sample` draws from.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from rlkit.errors import RlkitError
from rlkit.types import Array, PRNGKey, PyTree


@struct.dataclass
class BufferState:
    """The state of a ring buffer; every leaf is an array, so it is vmappable and checkpointable.

    Attributes:
        storage: the items, each leaf `[capacity, ...]`.
        position: int32 scalar, the slot the next item is written to.
        size: int32 scalar, how many slots hold items (saturates at capacity).
    """

    storage: PyTree
    position: Array
    size: Array


class Buffer(NamedTuple):
    """A replay buffer: pure functions over a `BufferState`.

    Attributes:
        init: `(example_item) -> BufferState`; `example_item` is one unbatched item (arrays or
            `jax.ShapeDtypeStruct`s), used only for its structure, shapes and dtypes.
        add: `(state, items) -> BufferState`; `items` has the example's structure with a leading
            `[N]` axis on every leaf. The last `N` items are the newest.
        sample: `(state, key, batch_size) -> items`, leaves `[batch_size, ...]`, drawn uniformly
            with replacement from the filled part. `batch_size` is a static Python int. Check
            `can_sample` first: an empty buffer returns whatever slot 0 holds.
        can_sample: `(state, min_size) -> bool scalar array`, whether `size >= min_size`.
    """

    init: Callable[[PyTree], BufferState]
    add: Callable[[BufferState, PyTree], BufferState]
    sample: Callable[[BufferState, PRNGKey, int], PyTree]
    can_sample: Callable[[BufferState, int | Array], Array]


def _require_positive_int(value: object, name: str) -> int:
    # bool is an int subclass; `capacity=True` is a bug, not a capacity of one.
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise RlkitError(f"{name}: must be a positive int, got {value!r}.")
    return value


def _check_items(storage: PyTree, items: PyTree) -> int:
    """Check that `items` is a `[N, ...]` batch of the stored structure; return N (static)."""
    storage_paths, storage_def = jax.tree_util.tree_flatten_with_path(storage)
    item_leaves, item_def = jax.tree_util.tree_flatten(items)
    if item_def != storage_def:
        raise RlkitError(
            f"add: the items' structure {item_def} differs from the buffer's {storage_def}; "
            "add batches shaped like the example passed to init."
        )
    sizes = set()
    for (path, stored), item in zip(storage_paths, item_leaves, strict=True):
        where = jax.tree_util.keystr(path) or "items"
        if item.ndim != stored.ndim or item.shape[1:] != stored.shape[1:]:
            raise RlkitError(
                f"add: leaf {where} has shape {item.shape}, expected [N, *{stored.shape[1:]}] "
                "(a leading batch axis on every leaf)."
            )
        if item.dtype != stored.dtype:
            raise RlkitError(
                f"add: leaf {where} has dtype {item.dtype}, the buffer stores {stored.dtype}; "
                "cast it before adding (the dtype comes from the example passed to init)."
            )
        sizes.add(item.shape[0])
    if len(sizes) != 1:
        raise RlkitError(f"add: leaves disagree on the batch size N: {sorted(sizes)}.")
    return sizes.pop()


def _ring_write(state: BufferState, items: PyTree, capacity: int) -> BufferState:
    """Write a `[N, ...]` batch at `state.position`, wrapping around; shared by ring buffers."""
    num_items = _check_items(state.storage, items)
    if num_items > capacity:
        # Only the newest `capacity` items survive; writing all N would scatter several items to
        # one slot, and XLA does not define which one wins.
        items = jax.tree.map(lambda x: x[num_items - capacity :], items)
    written = min(num_items, capacity)
    # Item i of the surviving tail is global item (num_items - written + i) after `position`.
    slots = state.position + (num_items - written) + jnp.arange(written, dtype=jnp.int32)
    slots = slots % capacity
    storage = jax.tree.map(lambda stored, x: stored.at[slots].set(x), state.storage, items)
    return BufferState(
        storage=storage,
        position=((state.position + num_items) % capacity).astype(jnp.int32),
        size=jnp.minimum(state.size + num_items, capacity).astype(jnp.int32),
    )


def make_uniform_buffer(capacity: int) -> Buffer:
    """A ring buffer of `capacity` items, sampled uniformly with replacement.

    Args:
        capacity: how many items the buffer keeps; the oldest are overwritten first.

    Returns:
        The `Buffer` of pure functions.

    Raises:
        RlkitError: `capacity` is not a positive int.
    """
    capacity = _require_positive_int(capacity, "capacity")

    def init(example_item: PyTree) -> BufferState:
        def allocate(leaf):
            leaf = leaf if hasattr(leaf, "dtype") and hasattr(leaf, "shape") else jnp.asarray(leaf)
            return jnp.zeros((capacity, *leaf.shape), leaf.dtype)

        return BufferState(
            storage=jax.tree.map(allocate, example_item),
            position=jnp.zeros((), jnp.int32),
            size=jnp.zeros((), jnp.int32),
        )

    def add(state: BufferState, items: PyTree) -> BufferState:
        return _ring_write(state, items, capacity)

    def sample(state: BufferState, key: PRNGKey, batch_size: int) -> PyTree:
        batch_size = _require_positive_int(batch_size, "batch_size")
        # maxval >= 1 keeps randint well defined on an empty buffer (callers check can_sample).
        slots = jax.random.randint(key, (batch_size,), 0, jnp.maximum(state.size, 1))
        return jax.tree.map(lambda stored: stored[slots], state.storage)

    def can_sample(state: BufferState, min_size: int | Array) -> Array:
        return state.size >= min_size

    return Buffer(init=init, add=add, sample=sample, can_sample=can_sample)
