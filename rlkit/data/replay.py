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

Three kinds of buffer share that ring (`_ring_write`):

* `make_uniform_buffer`: items drawn uniformly with replacement.
* `make_prioritised_buffer`: proportional prioritised replay (Schaul et al. 2016) with
  importance weights and `set_priorities` (which refuses NaN, infinite or negative priorities).
* `make_trajectory_buffer`: a time-major ring of `[num_envs]` steps, sampled as sequences of
  consecutive steps of one env that cross neither the write head nor (unless asked) an episode
  end.

None of them jits: the drivers own the jit boundary (STYLE.md rule 4).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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


def _require_number(
    value: object, name: str, *, low: float, high: float = float("inf"), low_open: bool = False
) -> float:
    """`value` as a float in `[low, high]` (`(low, high]` when `low_open`), else an RlkitError."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RlkitError(f"{name}: must be a number, got {value!r}.")
    value = float(value)
    too_low = value <= low if low_open else value < low
    if too_low or not value <= high:  # `not <=` also rejects nan
        bracket = "(" if low_open else "["
        raise RlkitError(f"{name}: must lie in {bracket}{low:g}, {high:g}], got {value!r}.")
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


def _allocate(example_item: PyTree, leading_shape: tuple[int, ...]) -> PyTree:
    """Zeros shaped `[*leading_shape, *leaf.shape]` with each example leaf's dtype."""

    def allocate(leaf):
        leaf = leaf if hasattr(leaf, "dtype") and hasattr(leaf, "shape") else jnp.asarray(leaf)
        return jnp.zeros((*leading_shape, *leaf.shape), leaf.dtype)

    return jax.tree.map(allocate, example_item)


def _ring_slots(position: Array, num_items: int, capacity: int) -> Array:
    """The slots `[min(N, capacity)]` that the surviving newest items of an N-batch go to."""
    written = min(num_items, capacity)
    # Item i of the surviving tail is global item (num_items - written + i) after `position`.
    slots = position + (num_items - written) + jnp.arange(written, dtype=jnp.int32)
    return slots % capacity


def _ring_write(state: BufferState, items: PyTree, capacity: int) -> BufferState:
    """Write a `[N, ...]` batch at `state.position`, wrapping around; shared by ring buffers."""
    num_items = _check_items(state.storage, items)
    if num_items > capacity:
        # Only the newest `capacity` items survive; writing all N would scatter several items to
        # one slot, and XLA does not define which one wins.
        items = jax.tree.map(lambda x: x[num_items - capacity :], items)
    slots = _ring_slots(state.position, num_items, capacity)
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
        return BufferState(
            storage=_allocate(example_item, (capacity,)),
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


# --------------------------------------------------------------------------------------------
# Prioritised (proportional) replay
# --------------------------------------------------------------------------------------------


@struct.dataclass
class PrioritisedBufferState:
    """The state of a prioritised ring buffer; every leaf is an array (vmappable, checkpointable).

    Attributes:
        storage: the items, each leaf `[capacity, ...]`, written like the uniform buffer's.
        position: int32 scalar, the slot the next item is written to.
        size: int32 scalar, how many slots hold items (slots `[0, size)`; saturates at capacity).
        priorities: float32 `[capacity]`, `p_i^alpha` of each slot, where `p_i = |priority| +
            epsilon` (alpha is applied when stored); empty slots hold 0.
        max_priority: float32 scalar, the largest raw priority ever stored (starts at 1.0); new
            items get it (stored as `max_priority^alpha`), so each is likely to be replayed at
            least once.
    """

    storage: PyTree
    position: Array
    size: Array
    priorities: Array
    max_priority: Array


class PrioritisedSample(NamedTuple):
    """A prioritised batch.

    Attributes:
        items: the items, leaves `[batch_size, ...]`.
        indices: int32 `[batch_size]`, their slots; pass them back to `set_priorities`.
        weights: float32 `[batch_size]`, importance weights `(N * P(i))^-beta / max_j w_j`, the
            max taken over every filled slot, so weights lie in `(0, 1]`.
    """

    items: PyTree
    indices: Array
    weights: Array


class PrioritisedBuffer(NamedTuple):
    """A proportional prioritised replay buffer: pure functions over a `PrioritisedBufferState`.

    Attributes:
        init: `(example_item) -> PrioritisedBufferState`, as `Buffer.init`.
        add: `(state, items) -> PrioritisedBufferState`; `items` leaves `[N, ...]`, each new item
            gets `state.max_priority`.
        sample: `(state, key, batch_size, beta=None) -> PrioritisedSample`; `batch_size` is a
            static Python int, `beta` a float or traced scalar (the factory's beta when None).
            Check `can_sample` first: an empty buffer returns slot 0 with weights of one.
        can_sample: `(state, min_size) -> bool scalar array`, whether `size >= min_size`.
        set_priorities: `(state, indices [B] int, priorities [B] float) -> PrioritisedBufferState`;
            NaN, infinite or negative priorities are not written (the slot keeps its old one).
    """

    init: Callable[[PyTree], PrioritisedBufferState]
    add: Callable[[PrioritisedBufferState, PyTree], PrioritisedBufferState]
    sample: Callable[..., PrioritisedSample]
    can_sample: Callable[[PrioritisedBufferState, int | Array], Array]
    set_priorities: Callable[[PrioritisedBufferState, Array, Array], PrioritisedBufferState]


def make_prioritised_buffer(
    capacity: int, alpha: float = 0.6, beta: float = 0.4, epsilon: float = 1e-6
) -> PrioritisedBuffer:
    """A ring buffer of `capacity` items with proportional prioritised sampling.

    Schaul et al. 2016, "Prioritized Experience Replay", proportional variant: slot i is drawn
    with probability `P(i) = p_i^alpha / sum_k p_k^alpha` over the filled slots (eq. 1), and
    carries the importance weight `w_i = (N * P(i))^-beta`, normalised by `max_j w_j` (section
    3.4), where N is the number of filled slots and the max runs over all of them, i.e. it is the
    weight of the least likely slot. New items get the largest priority seen so far (1.0 at
    first); `set_priorities` stores `p_i = priority + epsilon` (usually the absolute TD error) and
    refuses NaN, infinite or negative priorities, keeping the slot's old one.

    The state holds `p_i^alpha`, alpha applied once when a priority is stored: sampling then
    needs no power over the whole buffer (as costly as the cumulative sum on a CPU). The price:
    a checkpointed state belongs to its alpha. `max_priority` stays a raw priority.

    Sampling is stratified as in the paper: `[0, total)` is cut into `batch_size` equal segments,
    one uniform is drawn in each and located in the cumulative sum of `p^alpha` with
    `jnp.searchsorted`. This replaces the paper's sum tree: O(capacity) work per batch instead of
    O(batch_size * log(capacity)), but as a few wide, parallel array ops (a reduction, a short
    cumulative sum, a vectorised binary search) that suit accelerators and `vmap`, and `add` /
    `set_priorities` are single scatters with no tree levels to update. The cumulative sum is
    taken in two levels, over blocks of about `sqrt(capacity / batch_size)` slots and then inside
    the block each draw falls in, which keeps it short on a CPU as well. It is float32: with huge
    capacities and priorities spanning many orders of magnitude, slots whose `p^alpha` is below
    the float32 resolution of their block's running sum are drawn slightly too rarely.

    Args:
        capacity: how many items the buffer keeps; the oldest are overwritten first.
        alpha: priority exponent, >= 0; 0 samples uniformly, 1 fully proportionally.
        beta: importance-sampling exponent in [0, 1], the default of `sample` (anneal it towards
            1 by passing `beta` to `sample`); 0 gives weights of one.
        epsilon: > 0, added to `|priority|` so that no item becomes unsampleable.

    Returns:
        The `PrioritisedBuffer` of pure functions.

    Raises:
        RlkitError: an argument is out of range; the message names it.
    """
    capacity = _require_positive_int(capacity, "capacity")
    alpha = _require_number(alpha, "alpha", low=0.0)
    default_beta = _require_number(beta, "beta", low=0.0, high=1.0)
    epsilon = _require_number(epsilon, "epsilon", low=0.0, low_open=True)

    def init(example_item: PyTree) -> PrioritisedBufferState:
        return PrioritisedBufferState(
            storage=_allocate(example_item, (capacity,)),
            position=jnp.zeros((), jnp.int32),
            size=jnp.zeros((), jnp.int32),
            priorities=jnp.zeros((capacity,), jnp.float32),
            max_priority=jnp.ones((), jnp.float32),
        )

    def add(state: PrioritisedBufferState, items: PyTree) -> PrioritisedBufferState:
        ring = _ring_write(BufferState(state.storage, state.position, state.size), items, capacity)
        num_items = jax.tree.leaves(items)[0].shape[0]  # checked by _ring_write
        slots = _ring_slots(state.position, num_items, capacity)
        return PrioritisedBufferState(
            storage=ring.storage,
            position=ring.position,
            size=ring.size,
            priorities=state.priorities.at[slots].set(state.max_priority**alpha),
            max_priority=state.max_priority,
        )

    def _draw(scaled: Array, size: Array, key: PRNGKey, batch_size: int) -> Array:
        """Stratified slots `[batch_size]` drawn proportionally to `scaled` (zero when empty)."""
        # Two-level cumulative sum: blocks of `block` slots. The block size balances the
        # cumulative sum over block totals (capacity / block) against the one inside the drawn
        # blocks (batch_size * block).
        block = max(1, min(capacity, round((capacity / batch_size) ** 0.5)))
        num_blocks = -(-capacity // block)
        rows = jnp.pad(scaled, (0, num_blocks * block - capacity)).reshape(num_blocks, block)
        block_totals = rows.sum(axis=1)
        blocks_cumulative = jnp.cumsum(block_totals)
        total = blocks_cumulative[-1]
        # Stratified: one uniform in each of batch_size equal segments of [0, total).
        uniforms = jax.random.uniform(key, (batch_size,), jnp.float32)
        targets = (jnp.arange(batch_size, dtype=jnp.float32) + uniforms) * (total / batch_size)
        # The first block, then the first slot in it, whose running sum exceeds the target
        # (side="right" / `<=`), which skips zero-probability slots. The clips guard targets that
        # rounding pushed to the end of a sum: they stay in the filled part.
        last = jnp.maximum(size - 1, 0)
        blocks = jnp.searchsorted(blocks_cumulative, targets, side="right")
        blocks = jnp.clip(blocks, 0, last // block)
        residuals = targets - (blocks_cumulative[blocks] - block_totals[blocks])
        # Running sums inside the drawn blocks, [batch_size, block], as a product with an upper
        # triangle of ones: XLA's CPU cumsum over many short rows is several times slower.
        # HIGHEST keeps float32 exact on GPUs, whose default matmul precision is lower (TF32).
        upper = jnp.triu(jnp.ones((block, block), jnp.float32))
        within = jnp.dot(rows[blocks], upper, precision=jax.lax.Precision.HIGHEST)
        offsets = jnp.minimum(jnp.sum(within <= residuals[:, None], axis=1), block - 1)
        return jnp.minimum(blocks * block + offsets, last).astype(jnp.int32)

    def sample(
        state: PrioritisedBufferState,
        key: PRNGKey,
        batch_size: int,
        beta: float | Array | None = None,
    ) -> PrioritisedSample:
        batch_size = _require_positive_int(batch_size, "batch_size")
        if beta is None:
            beta = default_beta
        elif isinstance(beta, int | float):
            beta = _require_number(beta, "beta", low=0.0, high=1.0)
        filled = jnp.arange(capacity) < state.size
        scaled = jnp.where(filled, state.priorities, 0.0)  # p^alpha, zero outside [0, size)
        indices = _draw(scaled, state.size, key, batch_size)
        # w_i / max_j w_j = (P(i) / P_min)^-beta: N and the total cancel.
        smallest = jnp.min(jnp.where(filled, scaled, jnp.inf))
        weights = (scaled[indices] / smallest) ** -jnp.asarray(beta, jnp.float32)
        # An empty buffer has no probabilities; return weights of one rather than inf / nan (and
        # never a non-finite weight, whatever a restored state holds).
        weights = jnp.where((state.size > 0) & jnp.isfinite(weights), weights, 1.0)
        weights = weights.astype(jnp.float32)
        items = jax.tree.map(lambda stored: stored[indices], state.storage)
        return PrioritisedSample(items=items, indices=indices, weights=weights)

    def can_sample(state: PrioritisedBufferState, min_size: int | Array) -> Array:
        return state.size >= min_size

    def set_priorities(
        state: PrioritisedBufferState, indices: Array, priorities: Array
    ) -> PrioritisedBufferState:
        """Store `(priorities + epsilon)^alpha` at `indices` (both `[B]`).

        A priority that is NaN, infinite or negative (or whose power overflows float32) is
        refused: it is not written, the slot keeps its previous priority, and `max_priority`
        ignores it. Inside jit there is no error to raise, and one NaN in the sum would send
        every later draw to the same slot with NaN weights. A slot sampled twice in one batch
        gets one of its valid priorities; XLA does not say which.
        """
        priorities = jnp.asarray(priorities, jnp.float32)
        raw = priorities + epsilon
        scaled = raw**alpha
        valid = jnp.isfinite(priorities) & (priorities >= 0) & jnp.isfinite(scaled)
        # Refused rows scatter out of bounds, which mode="drop" discards.
        slots = jnp.where(valid, indices, capacity)
        return state.replace(
            priorities=state.priorities.at[slots].set(scaled, mode="drop"),
            max_priority=jnp.maximum(state.max_priority, jnp.max(jnp.where(valid, raw, 0.0))),
        )

    return PrioritisedBuffer(
        init=init, add=add, sample=sample, can_sample=can_sample, set_priorities=set_priorities
    )


# --------------------------------------------------------------------------------------------
# Trajectory (sequence) replay
# --------------------------------------------------------------------------------------------


@struct.dataclass
class TrajectoryBufferState:
    """The state of a time-major trajectory buffer; every leaf is an array.

    Attributes:
        storage: the steps, each leaf `[capacity, num_envs, ...]`: time slot, then env.
        position: int32 scalar, the time slot the next step is written to.
        size: int32 scalar, how many time slots hold steps (saturates at capacity). Slot
            `(position - size) % capacity` holds the oldest step, `position - 1` the newest.
    """

    storage: PyTree
    position: Array
    size: Array


class TrajectoryBuffer(NamedTuple):
    """A sequence replay buffer: pure functions over a `TrajectoryBufferState`.

    Attributes:
        init: `(example_item) -> TrajectoryBufferState`; one unbatched step of one env.
        add: `(state, items) -> TrajectoryBufferState`; one time step of every env, leaves
            `[num_envs, ...]`.
        sample: `(state, key, batch_size) -> items`, leaves `[batch_size, sequence_length, ...]`.
        can_sample: `(state, min_size) -> bool scalar array`: at least `min_size` transitions
            (time steps times envs) are stored and at least one valid sequence exists.
        num_valid_starts: `(state) -> int32 scalar`, how many (env, start) pairs `sample` draws
            from.
    """

    init: Callable[[PyTree], TrajectoryBufferState]
    add: Callable[[TrajectoryBufferState, PyTree], TrajectoryBufferState]
    sample: Callable[[TrajectoryBufferState, PRNGKey, int], PyTree]
    can_sample: Callable[[TrajectoryBufferState, int | Array], Array]
    num_valid_starts: Callable[[TrajectoryBufferState], Array]


def _has_episode_flags(items: PyTree) -> bool:
    if isinstance(items, Mapping):
        return "terminated" in items and "truncated" in items
    return hasattr(items, "terminated") and hasattr(items, "truncated")


def terminated_or_truncated(items: PyTree) -> Array:
    """The default `episode_end`: `terminated | truncated` of a `Transition`-like pytree.

    Reads attributes (`Transition`, any dataclass or NamedTuple) or, for a mapping, its
    `"terminated"` and `"truncated"` keys.
    """
    if isinstance(items, Mapping):
        return jnp.logical_or(items["terminated"], items["truncated"])
    return jnp.logical_or(items.terminated, items.truncated)


def make_trajectory_buffer(
    capacity: int,
    num_envs: int,
    sequence_length: int,
    cross_episodes: bool = False,
    episode_end: Callable[[PyTree], Array] = terminated_or_truncated,
) -> TrajectoryBuffer:
    """A time-major ring of the last `capacity` steps of `num_envs` envs, sampled as sequences.

    `capacity` counts time steps kept **per env**: the buffer holds `capacity * num_envs`
    transitions, in leaves `[capacity, num_envs, ...]`. Each `add` writes one time step of every
    env, so column e of the storage is env e's own stream of consecutive steps.

    A sequence is `sequence_length` consecutive steps of one env. `sample` draws uniformly with
    replacement among the valid (env, start) pairs:

    * it lies in the written data and never crosses the ring's write head, so it never joins the
      newest steps to the oldest ones they overwrote;
    * unless `cross_episodes`, no step but the last ends an episode (`episode_end(step)` true),
      so a sequence may end with a terminal or truncated step but never runs into the next
      episode. Sequences may start mid-episode (after a wrap-around, or anywhere: R2D2-style).

    Validity is computed afresh on each `sample`: episode ends are counted with a cumulative sum
    over time, and a start is valid when its window holds none (O(capacity * num_envs)).

    Args:
        capacity: time steps kept per env; the oldest time step is overwritten first.
        num_envs: how many envs each `add` carries.
        sequence_length: steps per sampled sequence, at most `capacity`.
        cross_episodes: allow sequences to run across episode ends (the flags stay in the items,
            so the learner can still mask or reset at them).
        episode_end: `(items) -> bool array` of the items' batch shape, whether a step ends an
            episode. The default reads `terminated | truncated` of a `Transition`-like pytree
            (attributes, or keys of a dict); pass another function for other items.

    Returns:
        The `TrajectoryBuffer` of pure functions. With no valid start (check `can_sample` or
        `num_valid_starts`), `sample` returns arbitrary stored or zero steps, never an error.

    Raises:
        RlkitError: an argument is out of range, or (at `init`) the example item has no episode
            end the default `episode_end` can read; the message names the argument.
    """
    capacity = _require_positive_int(capacity, "capacity")
    num_envs = _require_positive_int(num_envs, "num_envs")
    sequence_length = _require_positive_int(sequence_length, "sequence_length")
    if sequence_length > capacity:
        raise RlkitError(
            f"sequence_length: {sequence_length} exceeds capacity {capacity} (time steps kept per "
            "env); raise capacity or shorten the sequences."
        )
    if not isinstance(cross_episodes, bool):
        raise RlkitError(f"cross_episodes: must be a bool, got {cross_episodes!r}.")
    if not callable(episode_end):
        raise RlkitError(f"episode_end: must be a function of the items, got {episode_end!r}.")
    num_starts = capacity - sequence_length + 1  # chronological starts that fit in the ring

    def init(example_item: PyTree) -> TrajectoryBufferState:
        if episode_end is terminated_or_truncated and not _has_episode_flags(example_item):
            raise RlkitError(
                "episode_end: the example item has no `terminated` and `truncated` attributes "
                "(or keys); store Transition-like items or pass episode_end=(items -> bool array)."
            )
        return TrajectoryBufferState(
            storage=_allocate(example_item, (capacity, num_envs)),
            position=jnp.zeros((), jnp.int32),
            size=jnp.zeros((), jnp.int32),
        )

    def add(state: TrajectoryBufferState, items: PyTree) -> TrajectoryBufferState:
        storage_paths, storage_def = jax.tree_util.tree_flatten_with_path(state.storage)
        item_leaves, item_def = jax.tree_util.tree_flatten(items)
        if item_def != storage_def:
            raise RlkitError(
                f"add: the items' structure {item_def} differs from the buffer's {storage_def}; "
                "add one time step shaped like the example passed to init, with a leading "
                "[num_envs] axis."
            )
        for (path, stored), item in zip(storage_paths, item_leaves, strict=True):
            if item.shape != stored.shape[1:]:
                raise RlkitError(
                    f"add: leaf {jax.tree_util.keystr(path) or 'items'} has shape {item.shape}, "
                    f"expected {stored.shape[1:]}: one time step, [num_envs={num_envs}, ...]."
                )
        one_step = jax.tree.map(lambda x: x[None], items)  # [1, num_envs, ...]: a ring batch of 1
        ring = _ring_write(
            BufferState(state.storage, state.position, state.size), one_step, capacity
        )
        return TrajectoryBufferState(storage=ring.storage, position=ring.position, size=ring.size)

    def _valid_starts(state: TrajectoryBufferState) -> tuple[Array, Array]:
        """The oldest slot and the `[num_starts, num_envs]` mask of valid chronological starts."""
        oldest = (state.position - state.size) % capacity
        chronological = (oldest + jnp.arange(capacity)) % capacity  # time order of the slots
        fits = jnp.arange(num_starts) + sequence_length <= state.size  # behind the write head
        if cross_episodes:
            return oldest, jnp.broadcast_to(fits[:, None], (num_starts, num_envs))
        ends = jnp.asarray(episode_end(state.storage), bool)[chronological]  # [capacity, E]
        if ends.shape != (capacity, num_envs):
            raise RlkitError(
                f"episode_end: returned shape {ends.shape[1:]} for items of batch shape "
                f"({num_envs},); it must return one bool per step."
            )
        # ends_before[t] = episode ends in chronological steps [0, t).
        ends_before = jnp.concatenate(
            [jnp.zeros((1, num_envs), jnp.int32), jnp.cumsum(ends, axis=0, dtype=jnp.int32)]
        )
        # A sequence starting at c may end an episode only at its last step c + L - 1.
        starts = jnp.arange(num_starts)
        inner_ends = ends_before[starts + sequence_length - 1] - ends_before[starts]
        return oldest, fits[:, None] & (inner_ends == 0)

    def sample(state: TrajectoryBufferState, key: PRNGKey, batch_size: int) -> PyTree:
        batch_size = _require_positive_int(batch_size, "batch_size")
        oldest, valid = _valid_starts(state)
        valid_so_far = jnp.cumsum(valid.reshape(-1), dtype=jnp.int32)  # over (start, env) pairs
        num_valid = valid_so_far[-1]
        # Draw the r-th valid pair, r uniform in [0, num_valid): exact, and O(log) per draw.
        ranks = jax.random.randint(key, (batch_size,), 0, jnp.maximum(num_valid, 1))
        flat = jnp.searchsorted(valid_so_far, ranks, side="right")
        flat = jnp.minimum(flat, num_starts * num_envs - 1)  # only reached with no valid pair
        starts, envs = flat // num_envs, flat % num_envs
        slots = (oldest + starts[:, None] + jnp.arange(sequence_length)) % capacity  # [B, L]
        return jax.tree.map(lambda stored: stored[slots, envs[:, None]], state.storage)

    def can_sample(state: TrajectoryBufferState, min_size: int | Array) -> Array:
        return (state.size * num_envs >= min_size) & (num_valid_starts(state) > 0)

    def num_valid_starts(state: TrajectoryBufferState) -> Array:
        return jnp.sum(_valid_starts(state)[1], dtype=jnp.int32)

    return TrajectoryBuffer(
        init=init, add=add, sample=sample, can_sample=can_sample, num_valid_starts=num_valid_starts
    )
