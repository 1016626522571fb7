"""Invariants of the uniform ring buffer (rlkit.data.replay), checked against a numpy reference."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlkit.data import BufferState, make_uniform_buffer
from rlkit.errors import RlkitError
from rlkit.types import Transition


def _example() -> Transition:
    """One unbatched transition with the dtypes a driver stores (uint8 images, int32, bool)."""
    return Transition(
        obs=jnp.zeros((2, 2, 1), jnp.uint8),
        action=jnp.zeros((), jnp.int32),
        reward=jnp.zeros((), jnp.float32),
        terminated=jnp.zeros((), bool),
        truncated=jnp.zeros((), bool),
        next_obs=jnp.zeros((2, 2, 1), jnp.uint8),
        extras={"log_prob": jnp.zeros((), jnp.float32)},
    )


def _items(ids: np.ndarray) -> Transition:
    """A batch [N] whose every leaf encodes the item's id, so slots can be read back."""
    ids = np.asarray(ids, np.int32)
    image = np.broadcast_to((ids % 256).astype(np.uint8)[:, None, None, None], (len(ids), 2, 2, 1))
    return Transition(
        obs=jnp.asarray(image),
        action=jnp.asarray(ids),
        reward=jnp.asarray(ids, jnp.float32),
        terminated=jnp.asarray(ids % 2 == 1),
        truncated=jnp.asarray(ids % 3 == 0),
        next_obs=jnp.asarray(image + np.uint8(1)),
        extras={"log_prob": jnp.asarray(-ids, jnp.float32)},
    )


def test_wraparound_matches_a_reference_ring_for_any_batch_size():
    capacity = 7
    buffer = make_uniform_buffer(capacity)
    state = buffer.init(_example())
    reference = np.full(capacity, -1)  # slot -> id, written one item at a time
    next_id, reference_position = 0, 0
    # Batch sizes that do not divide the capacity, equal it, and exceed it.
    for size in (3, 5, 1, 7, 2, 12, 4, 9):
        ids = np.arange(next_id, next_id + size)
        state = buffer.add(state, _items(ids))
        for item in ids:
            reference[reference_position] = item
            reference_position = (reference_position + 1) % capacity
        next_id += size
        filled = min(next_id, capacity)
        assert int(state.size) == filled
        assert int(state.position) == reference_position
        np.testing.assert_array_equal(np.asarray(state.storage.action)[:filled], reference[:filled])
        # The newest `capacity` ids are exactly what is kept, each in slot id % capacity.
        kept = np.arange(max(0, next_id - capacity), next_id)
        np.testing.assert_array_equal(np.sort(np.asarray(state.storage.action)[:filled]), kept)
        np.testing.assert_array_equal(np.asarray(state.storage.action)[kept % capacity], kept)
    # Every leaf moved together with the action.
    storage = jax.tree.map(np.asarray, state.storage)
    np.testing.assert_array_equal(storage.reward, storage.action.astype(np.float32))
    np.testing.assert_array_equal(storage.extras["log_prob"], -storage.action.astype(np.float32))
    np.testing.assert_array_equal(storage.obs[:, 0, 0, 0], storage.action % 256)
    np.testing.assert_array_equal(storage.terminated, storage.action % 2 == 1)


def test_init_allocates_capacity_leaves_and_add_keeps_dtypes():
    buffer = make_uniform_buffer(5)
    state = buffer.init(_example())
    assert isinstance(state, BufferState)
    assert state.position.dtype == jnp.int32 and state.position.shape == ()
    assert state.size.dtype == jnp.int32 and state.size.shape == ()
    for before in (state, buffer.add(state, _items(np.arange(8)))):
        stored = before.storage
        assert stored.obs.shape == (5, 2, 2, 1) and stored.obs.dtype == jnp.uint8
        assert stored.action.dtype == jnp.int32
        assert stored.reward.dtype == jnp.float32
        assert stored.terminated.dtype == jnp.bool_ and stored.truncated.dtype == jnp.bool_
        assert stored.extras["log_prob"].shape == (5,)
        assert before.position.dtype == jnp.int32 and before.size.dtype == jnp.int32
    # Shape-only examples work too (no arrays need to exist yet).
    shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), _example())
    assert buffer.init(shapes).storage.obs.dtype == jnp.uint8


def test_sample_draws_only_from_the_filled_part():
    buffer = make_uniform_buffer(100)
    state = buffer.add(buffer.init(_example()), _items(np.arange(1, 11)))
    batch = buffer.sample(state, jax.random.key(0), 2000)
    actions = np.asarray(batch.action)
    assert batch.obs.shape == (2000, 2, 2, 1) and batch.obs.dtype == jnp.uint8
    assert set(actions.tolist()) == set(range(1, 11))  # never the zeros of empty slots
    # Items come out whole: every leaf of a sampled row belongs to the same transition.
    np.testing.assert_array_equal(np.asarray(batch.reward), actions.astype(np.float32))
    np.testing.assert_array_equal(np.asarray(batch.next_obs)[:, 0, 0, 0], actions + 1)


def test_sampling_is_uniform_after_wraparound():
    capacity, draws = 20, 40_000
    buffer = make_uniform_buffer(capacity)
    state = buffer.add(buffer.init(_example()), _items(np.arange(33)))
    actions = np.asarray(buffer.sample(state, jax.random.key(1), draws).action)
    counts = np.bincount(actions - 13, minlength=capacity)
    assert counts.shape == (capacity,)  # only the newest 20 ids, 13..32
    expected = draws / capacity
    chi_square = float(((counts - expected) ** 2 / expected).sum())
    # 19 degrees of freedom: mean 19, P(chi2 > 50) < 1e-4 for a uniform sampler.
    assert chi_square < 50.0, counts


def test_can_sample_compares_size_with_min_size():
    buffer = make_uniform_buffer(10)
    state = buffer.init(_example())
    assert not bool(buffer.can_sample(state, 1))
    state = buffer.add(state, _items(np.arange(4)))
    ready = buffer.can_sample(state, 4)
    assert ready.dtype == jnp.bool_ and ready.shape == () and bool(ready)
    assert not bool(buffer.can_sample(state, 5))
    state = buffer.add(state, _items(np.arange(30)))
    assert bool(buffer.can_sample(state, 10)) and not bool(buffer.can_sample(state, 11))


def test_vmap_over_seeds_keeps_each_seed_separate():
    num_seeds, capacity = 3, 4
    buffer = make_uniform_buffer(capacity)
    states = jax.vmap(lambda _: buffer.init(_example()))(jnp.arange(num_seeds))
    assert states.storage.obs.shape == (num_seeds, capacity, 2, 2, 1)
    # Seed s adds ids s*100 + [0..5]: wraps at a different content per seed.
    items = jax.tree.map(
        lambda *xs: jnp.stack(xs), *[_items(100 * seed + np.arange(6)) for seed in range(3)]
    )
    states = jax.vmap(buffer.add)(states, items)
    keys = jax.random.split(jax.random.key(2), num_seeds)
    batch = jax.vmap(buffer.sample, in_axes=(0, 0, None))(states, keys, 64)
    actions = np.asarray(batch.action)
    assert actions.shape == (num_seeds, 64)
    for seed in range(num_seeds):
        assert set(actions[seed].tolist()) <= set(100 * seed + np.arange(2, 6))
        assert int(states.position[seed]) == 2 and int(states.size[seed]) == capacity


def test_add_and_sample_inside_jit_and_scan_match_eager():
    capacity = 8
    buffer = make_uniform_buffer(capacity)

    def step(state, ids):
        state = buffer.add(state, _items_jnp(ids))
        return state, state.size

    def _items_jnp(ids):
        image = jnp.broadcast_to(ids.astype(jnp.uint8)[:, None, None, None], (3, 2, 2, 1))
        return Transition(
            image,
            ids,
            ids.astype(jnp.float32),
            ids % 2 == 1,
            ids % 3 == 0,
            image + 1,
            {"log_prob": -ids.astype(jnp.float32)},
        )

    @jax.jit
    def run(state, key):
        ids = jnp.arange(30, dtype=jnp.int32).reshape(10, 3)
        state, sizes = jax.lax.scan(step, state, ids)
        return state, sizes, buffer.sample(state, key, 16)

    state, sizes, batch = run(buffer.init(_example()), jax.random.key(3))
    eager = buffer.init(_example())
    for start in range(0, 30, 3):
        eager = buffer.add(eager, _items(np.arange(start, start + 3)))
    np.testing.assert_array_equal(np.asarray(sizes), np.minimum(3 * np.arange(1, 11), capacity))
    jax.tree.map(np.testing.assert_array_equal, state, eager)
    assert set(np.asarray(batch.action).tolist()) <= set(range(22, 30))
    # The state may be donated to a jitted add, as drivers do.
    donated = jax.jit(buffer.add, donate_argnums=0)(eager, _items(np.arange(30, 33)))
    assert int(donated.position) == 33 % capacity


@pytest.mark.parametrize("capacity", [0, -3, 2.5, True, None])
def test_factory_rejects_bad_capacity(capacity):
    with pytest.raises(RlkitError, match="capacity"):
        make_uniform_buffer(capacity)


def test_bad_sample_size_and_mismatched_items_raise_clear_errors():
    buffer = make_uniform_buffer(4)
    state = buffer.add(buffer.init(_example()), _items(np.arange(2)))
    with pytest.raises(RlkitError, match="batch_size"):
        buffer.sample(state, jax.random.key(0), 0)
    wrong_dtype = _items(np.arange(2)).replace(reward=jnp.zeros(2, jnp.int32))
    with pytest.raises(RlkitError, match="reward.*dtype"):
        buffer.add(state, wrong_dtype)
    unbatched = jax.tree.map(lambda x: x[0], _items(np.arange(2)))
    with pytest.raises(RlkitError, match="leading batch axis"):
        buffer.add(state, unbatched)
    with pytest.raises(RlkitError, match="structure"):
        buffer.add(state, _items(np.arange(2)).replace(extras={}))
