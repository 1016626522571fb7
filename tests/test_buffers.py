"""Prioritised and trajectory replay (rlkit.data.replay), checked against hand-computed references.

The prioritised tests compare sampling frequencies and importance weights with the formulas of
Schaul et al. 2016; the trajectory tests store steps that carry their own time and env ids, so a
sampled sequence shows whether it is consecutive, inside the kept window and inside one episode.
"""

from __future__ import annotations

from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlkit.checkpoint import Checkpointer
from rlkit.data import (
    PrioritisedBufferState,
    TrajectoryBufferState,
    make_prioritised_buffer,
    make_trajectory_buffer,
)
from rlkit.errors import RlkitError
from rlkit.loops.common import example_transition
from rlkit.types import Transition

EPSILON = 1e-6


def _chi_square(counts: np.ndarray, probabilities: np.ndarray) -> float:
    expected = counts.sum() * probabilities
    return float(((counts - expected) ** 2 / expected).sum())


# --------------------------------------------------------------------------------------------
# Prioritised
# --------------------------------------------------------------------------------------------


def _example() -> Transition:
    return example_transition(jnp.zeros((3,), jnp.uint8))


def _items(ids) -> Transition:
    """A batch [N] whose leaves encode each item's id."""
    ids = jnp.asarray(ids, jnp.int32)
    image = jnp.broadcast_to((ids % 256).astype(jnp.uint8)[:, None], (ids.shape[0], 3))
    return Transition(
        obs=image,
        action=ids,
        reward=ids.astype(jnp.float32),
        terminated=ids % 2 == 1,
        truncated=ids % 3 == 0,
        next_obs=image + jnp.uint8(1),
    )


# Compiling is the slow part of these tests on a small CPU: most tests share one buffer of each
# kind and its jitted functions, so each program compiles once per test session.
ALPHA, BETA = 0.7, 0.4
PRIORITISED = make_prioritised_buffer(6, alpha=ALPHA, beta=BETA, epsilon=EPSILON)
prioritised_add = jax.jit(PRIORITISED.add)
prioritised_sample = jax.jit(PRIORITISED.sample, static_argnums=2)
set_priorities = jax.jit(PRIORITISED.set_priorities)
DRAWS = 20_000


def _wrapped_prioritised():
    """Capacity 6 after 9 adds: slots 0..5 hold ids 6, 7, 8, 3, 4, 5 (position 3)."""
    state = prioritised_add(PRIORITISED.init(_example()), _items(np.arange(4)))
    return PRIORITISED, prioritised_add(state, _items(np.arange(4, 9)))


def test_frequencies_follow_priority_to_the_alpha_and_set_priorities_moves_them():
    alpha, draws = ALPHA, DRAWS
    buffer, state = _wrapped_prioritised()
    assert int(state.size) == 6 and int(state.position) == 3
    slot_ids = np.array([6, 7, 8, 3, 4, 5])
    np.testing.assert_array_equal(np.asarray(state.storage.action), slot_ids)

    # Every item came in at the max priority (1.0): uniform.
    sample = prioritised_sample(state, jax.random.key(0), draws)
    counts = np.bincount(np.asarray(sample.indices), minlength=6)
    assert _chi_square(counts, np.full(6, 1 / 6)) < 20.0, counts  # 5 dof: P(>20) < 0.002

    priorities = np.array([1.0, 2.0, 0.5, 4.0, 8.0, 3.0])
    state = set_priorities(state, jnp.arange(6), jnp.asarray(priorities))
    sample = prioritised_sample(state, jax.random.key(1), draws)
    indices = np.asarray(sample.indices)
    counts = np.bincount(indices, minlength=6)
    expected = (priorities + EPSILON) ** alpha / ((priorities + EPSILON) ** alpha).sum()
    assert _chi_square(counts, expected) < 20.0, (counts, expected * draws)
    # Uniform frequencies would fail the same test by far.
    assert _chi_square(counts, np.full(6, 1 / 6)) > 500.0
    # Items come out whole and match the slot their index names.
    np.testing.assert_array_equal(np.asarray(sample.items.action), slot_ids[indices])
    np.testing.assert_array_equal(np.asarray(sample.items.obs)[:, 0], slot_ids[indices])


@pytest.mark.parametrize("num_items", [30, 70])  # partly filled, and wrapped around
def test_small_batches_from_a_large_buffer_follow_the_priorities(num_items):
    # capacity 53 and batches of 4 give blocks of 4 slots (14 blocks, the last one padded), so
    # the two-level search is exercised, including blocks that are empty or only partly filled.
    capacity, batch_size, calls = 53, 4, 5_000
    buffer = make_prioritised_buffer(capacity, alpha=ALPHA)
    state = buffer.add(buffer.init(_example()), _items(np.arange(num_items)))
    filled = min(num_items, capacity)
    priorities = np.random.default_rng(0).uniform(0.5, 4.0, filled)
    state = buffer.set_priorities(state, jnp.arange(filled), jnp.asarray(priorities))
    keys = jax.random.split(jax.random.key(7), calls)
    draw = jax.jit(jax.vmap(buffer.sample, in_axes=(None, 0, None)), static_argnums=2)
    sample = draw(state, keys, batch_size)
    indices = np.asarray(sample.indices).reshape(-1)
    counts = np.bincount(indices, minlength=capacity)
    assert counts[filled:].sum() == 0
    scaled = (priorities + 1e-6) ** ALPHA
    dof = filled - 1
    chi_square = _chi_square(counts[:filled], scaled / scaled.sum())
    assert chi_square < dof + 6 * np.sqrt(2 * dof), counts
    np.testing.assert_array_equal(
        np.asarray(sample.items.action).reshape(-1), np.asarray(state.storage.action)[indices]
    )
    weights = (scaled[indices] / scaled.min()) ** -BETA
    np.testing.assert_allclose(np.asarray(sample.weights).reshape(-1), weights, rtol=1e-5)


def test_only_filled_slots_are_drawn_even_with_alpha_zero():
    buffer = make_prioritised_buffer(6, alpha=0.0)
    state = buffer.add(buffer.init(_example()), _items(np.arange(1, 5)))
    state = buffer.set_priorities(state, jnp.arange(4), jnp.array([0.1, 10.0, 100.0, 1.0]))
    sample = jax.jit(buffer.sample, static_argnums=2)(state, jax.random.key(2), DRAWS)
    counts = np.bincount(np.asarray(sample.indices), minlength=6)
    assert counts[4:].sum() == 0  # 0 ** 0 == 1 must not make empty slots sampleable
    # alpha = 0 ignores priorities: uniform, and every importance weight is one.
    assert _chi_square(counts[:4], np.full(4, 0.25)) < 16.0, counts
    np.testing.assert_allclose(np.asarray(sample.weights), 1.0)


def test_importance_weights_match_the_paper_formula():
    alpha = ALPHA
    _, state = _wrapped_prioritised()
    priorities = np.array([3.0, 0.2, 1.0, 7.0, 0.5, 2.0])
    state = set_priorities(state, jnp.arange(6), jnp.asarray(priorities))
    scaled = (priorities + EPSILON) ** alpha
    probabilities = scaled / scaled.sum()
    num_items = 6

    def expected_weights(indices, beta):
        weights = (num_items * probabilities) ** -beta
        return weights[indices] / weights.max()  # max over the whole buffer, not the batch

    sample = prioritised_sample(state, jax.random.key(3), DRAWS)  # the factory's beta
    indices = np.asarray(sample.indices)
    assert sample.weights.dtype == jnp.float32 and sample.weights.shape == (DRAWS,)
    np.testing.assert_allclose(
        np.asarray(sample.weights), expected_weights(indices, BETA), rtol=1e-5
    )
    # beta as a traced scalar, as an annealing schedule passes it.
    sample = prioritised_sample(state, jax.random.key(4), DRAWS, jnp.float32(0.9))
    indices = np.asarray(sample.indices)
    np.testing.assert_allclose(
        np.asarray(sample.weights), expected_weights(indices, 0.9), rtol=1e-5
    )
    # The least likely slot (slot 1) has weight exactly one.
    assert np.count_nonzero(indices == 1) > 0
    np.testing.assert_allclose(np.asarray(sample.weights)[indices == 1], 1.0)

    # The max weight is over the whole buffer, not the batch: once slot 1 is (almost) never
    # drawn, every weight in the batch stays below one.
    priorities[1] = 0.0  # stored as epsilon
    state = set_priorities(state, jnp.array([1]), jnp.array([0.0]))
    scaled = (priorities + EPSILON) ** alpha
    probabilities = scaled / scaled.sum()
    sample = prioritised_sample(state, jax.random.key(5), DRAWS)
    indices = np.asarray(sample.indices)
    assert np.count_nonzero(indices == 1) == 0
    np.testing.assert_allclose(
        np.asarray(sample.weights), expected_weights(indices, BETA), rtol=1e-4
    )
    assert float(sample.weights.max()) < 0.05


def test_nan_inf_and_negative_priorities_are_refused_and_samples_stay_spread():
    """One NaN priority used to make the sum NaN: every later draw hit one slot, weights NaN."""
    _, state = _wrapped_prioritised()
    priorities = np.array([3.0, 0.2, 1.0, 7.0, 0.5, 2.0])
    state = set_priorities(state, jnp.arange(6), jnp.asarray(priorities))
    before = np.asarray(state.priorities)
    # Slot 0 gets NaN, slot 2 inf, slot 4 a negative value: none is written; slots 1 and 5
    # take their (valid) new priorities in the same call.
    state = set_priorities(state, jnp.array([0, 1, 2, 4, 5]),
                           jnp.array([np.nan, 4.0, np.inf, -1.0, 0.5]))
    expected = before.copy()
    expected[[1, 5]] = (np.array([4.0, 0.5]) + EPSILON) ** ALPHA
    np.testing.assert_allclose(np.asarray(state.priorities), expected, rtol=1e-6)
    assert np.isfinite(float(state.max_priority))
    np.testing.assert_allclose(float(state.max_priority), 7.0 + EPSILON)  # inf did not raise it
    sample = prioritised_sample(state, jax.random.key(8), DRAWS)
    counts = np.bincount(np.asarray(sample.indices), minlength=6)
    assert np.all(np.isfinite(np.asarray(sample.weights)))
    # Every slot is still drawn, in proportion to the priorities kept.
    assert _chi_square(counts, expected / expected.sum()) < 20.0, counts
    probabilities = expected / expected.sum()
    weights = (6 * probabilities) ** -BETA
    indices = np.asarray(sample.indices)
    np.testing.assert_allclose(np.asarray(sample.weights), weights[indices] / weights.max(),
                               rtol=1e-5)


def test_new_items_get_the_largest_priority_seen_so_far():
    state = prioritised_add(PRIORITISED.init(_example()), _items(np.arange(2)))
    assert state.priorities.dtype == jnp.float32 and state.max_priority.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(state.priorities), [1, 1, 0, 0, 0, 0])
    state = set_priorities(state, jnp.array([0, 1]), jnp.array([5.0, 0.25]))
    np.testing.assert_allclose(float(state.max_priority), 5.0 + EPSILON)
    # Lowering priorities later does not lower the max.
    state = set_priorities(state, jnp.array([0, 0]), jnp.array([0.5, 0.5]))
    state = prioritised_add(state, _items(np.arange(2, 5)))
    raw = np.array([0.5, 0.25, 5.0, 5.0, 5.0]) + EPSILON
    np.testing.assert_allclose(np.asarray(state.priorities)[:5], raw**ALPHA, rtol=1e-6)  # p^alpha
    # The new items are drawn in proportion to the max priority they got.
    counts = np.bincount(
        np.asarray(prioritised_sample(state, jax.random.key(6), DRAWS).indices), minlength=6
    )
    assert counts[5] == 0
    assert _chi_square(counts[:5], raw**ALPHA / (raw**ALPHA).sum()) < 18.0, counts
    assert int(state.size) == 5 and int(state.position) == 5


def test_jit_scan_and_vmap_over_seeds_match_each_seed_alone():
    buffer = make_prioritised_buffer(16, alpha=0.8, beta=0.5)

    def run(key):
        def step(state, inputs):
            ids, key = inputs
            state = buffer.add(state, _items(ids))
            sample = buffer.sample(state, key, 4)
            new_priorities = sample.items.reward + 0.5  # depends on what was drawn
            state = buffer.set_priorities(state, sample.indices, new_priorities)
            return state, (sample.indices, sample.weights)

        ids = jnp.arange(30, dtype=jnp.int32).reshape(10, 3)
        keys = jax.random.split(key, 10)
        return jax.lax.scan(step, buffer.init(_example()), (ids, keys))

    keys = jax.random.split(jax.random.key(5), 3)
    states, (indices, weights) = jax.jit(jax.vmap(run))(keys)
    assert indices.shape == (3, 10, 4) and weights.shape == (3, 10, 4)
    assert states.priorities.shape == (3, 16)
    alone = jax.jit(run)
    for seed in range(3):
        state, (seed_indices, seed_weights) = alone(keys[seed])
        np.testing.assert_array_equal(np.asarray(indices[seed]), np.asarray(seed_indices))
        np.testing.assert_allclose(np.asarray(weights[seed]), np.asarray(seed_weights), rtol=1e-6)
        np.testing.assert_allclose(
            np.asarray(states.priorities[seed]), np.asarray(state.priorities), rtol=1e-6
        )
    # Different keys really gave different draws.
    assert not np.array_equal(np.asarray(indices[0]), np.asarray(indices[1]))
    # The traced state keeps its dtypes and shapes.
    fresh = buffer.init(_example())
    for traced, initial in zip(jax.tree.leaves(states), jax.tree.leaves(fresh), strict=True):
        assert traced.shape[1:] == initial.shape and traced.dtype == initial.dtype


def test_empty_prioritised_buffer_samples_finite_weights_and_cannot_sample():
    buffer = PRIORITISED
    state = buffer.init(_example())
    assert not bool(buffer.can_sample(state, 1))
    sample = prioritised_sample(state, jax.random.key(0), DRAWS)
    assert np.isfinite(np.asarray(sample.weights)).all()
    state = prioritised_add(state, _items(np.arange(4, 6)))
    assert bool(buffer.can_sample(state, 2)) and not bool(buffer.can_sample(state, 3))


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"capacity": 0}, "capacity"),
        ({"capacity": 4, "alpha": -0.1}, "alpha"),
        ({"capacity": 4, "beta": 1.5}, "beta"),
        ({"capacity": 4, "beta": float("nan")}, "beta"),
        ({"capacity": 4, "epsilon": 0.0}, "epsilon"),
        ({"capacity": 4, "alpha": "high"}, "alpha"),
    ],
)
def test_prioritised_factory_names_the_bad_argument(kwargs, name):
    with pytest.raises(RlkitError, match=name):
        make_prioritised_buffer(**kwargs)


def test_prioritised_sample_rejects_bad_beta_and_batch_size():
    buffer, state = _wrapped_prioritised()
    with pytest.raises(RlkitError, match="beta"):
        buffer.sample(state, jax.random.key(0), 4, beta=-1.0)
    with pytest.raises(RlkitError, match="batch_size"):
        buffer.sample(state, jax.random.key(0), 0)


# --------------------------------------------------------------------------------------------
# Trajectory
# --------------------------------------------------------------------------------------------

NUM_ENVS, CAPACITY, LENGTH = 3, 12, 4
TRAJECTORY = make_trajectory_buffer(CAPACITY, NUM_ENVS, LENGTH)
trajectory_add = jax.jit(TRAJECTORY.add)
trajectory_sample = jax.jit(TRAJECTORY.sample, static_argnums=2)
SEQUENCE_DRAWS = 20_000


def _ends(t: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
    """Known episode ends per env at time t: env 0 terminates every 5 steps, env 1 is truncated
    every 3 steps, env 2 never ends."""
    t = np.asarray(t)
    terminated = np.stack([t % 5 == 4, np.zeros_like(t, bool), np.zeros_like(t, bool)], -1)
    truncated = np.stack([np.zeros_like(t, bool), t % 3 == 2, np.zeros_like(t, bool)], -1)
    return terminated, truncated


def _step(t: int) -> Transition:
    """Time step t of the three envs: obs carries t (uint8), reward env * 1000 + t."""
    terminated, truncated = _ends(t)
    envs = np.arange(NUM_ENVS)
    obs = np.broadcast_to(np.uint8(t % 256), (NUM_ENVS, 2)).copy()
    return Transition(
        obs=jnp.asarray(obs),
        action=jnp.full((NUM_ENVS,), t, jnp.int32),
        reward=jnp.asarray(envs * 1000 + t, jnp.float32),
        terminated=jnp.asarray(terminated),
        truncated=jnp.asarray(truncated),
        next_obs=jnp.asarray(obs + np.uint8(1)),
    )


def _filled(num_steps: int, buffer=TRAJECTORY, add=trajectory_add):
    state = buffer.init(jax.tree.map(lambda x: x[0], _step(0)))
    for t in range(num_steps):
        state = add(state, _step(t))
    return state


def _reference_valid_starts(first: int, last: int, length: int, cross: bool) -> set:
    """(env, first time) of every window of `length` steps within times [first, last]."""
    valid = set()
    for env in range(NUM_ENVS):
        for start in range(first, last - length + 2):
            times = np.arange(start, start + length - 1)  # all steps but the last
            terminated, truncated = _ends(times)
            if cross or not (terminated[:, env] | truncated[:, env]).any():
                valid.add((env, start))
    return valid


def _sampled_pairs(batch: Transition) -> list[tuple[int, int]]:
    """The (env, first time) of each sampled sequence, after checking it is consecutive."""
    reward = np.asarray(batch.reward).astype(np.int64)
    envs, times = reward // 1000, reward % 1000
    # One env per sequence, consecutive times: never across the write head or the stored order.
    assert (envs == envs[:, :1]).all()
    np.testing.assert_array_equal(np.diff(times, axis=1), 1)
    np.testing.assert_array_equal(np.asarray(batch.action), times)
    return list(zip(envs[:, 0].tolist(), times[:, 0].tolist(), strict=True))


def test_sequences_stay_in_one_episode_and_behind_the_write_head_after_wraparound():
    num_steps = 30  # keeps times 18..29: the ring wrapped twice
    state = _filled(num_steps)
    batch = trajectory_sample(state, jax.random.key(0), SEQUENCE_DRAWS)
    assert batch.obs.shape == (SEQUENCE_DRAWS, LENGTH, 2) and batch.obs.dtype == jnp.uint8
    assert batch.terminated.dtype == jnp.bool_ and batch.action.dtype == jnp.int32
    pairs = _sampled_pairs(batch)
    ends = np.asarray(batch.terminated | batch.truncated)
    assert not ends[:, :-1].any()  # an episode may end only at the last step
    assert ends[:, -1].any()  # ... and some sequences do end there
    np.testing.assert_array_equal(np.asarray(batch.obs)[..., 0], np.asarray(batch.action) % 256)
    reference = _reference_valid_starts(num_steps - CAPACITY, num_steps - 1, LENGTH, cross=False)
    assert set(pairs) == reference  # only valid starts, and every one of them
    assert int(TRAJECTORY.num_valid_starts(state)) == len(reference)

    # Sampling is uniform over the valid (env, start) pairs.
    tally = Counter(pairs)
    counts = np.array([tally[pair] for pair in sorted(reference)])
    dof = len(reference) - 1
    # A chi-square has mean dof and sd sqrt(2 dof): dof + 6 sd is far out for a uniform sampler.
    chi_square = _chi_square(counts, np.full(len(reference), 1 / len(reference)))
    assert chi_square < dof + 6 * np.sqrt(2 * dof), counts
    # Uniform over stored steps instead (starts weighted by how often they are valid) would not
    # be uniform over pairs; the reference count itself pins the mask.
    assert len(reference) < NUM_ENVS * (CAPACITY - LENGTH + 1)


def test_cross_episodes_allows_crossing_ends_but_not_the_write_head():
    num_steps = 30
    buffer = make_trajectory_buffer(CAPACITY, NUM_ENVS, LENGTH, cross_episodes=True)
    state = _filled(num_steps, buffer, jax.jit(buffer.add))
    batch = jax.jit(buffer.sample, static_argnums=2)(state, jax.random.key(2), SEQUENCE_DRAWS)
    pairs = _sampled_pairs(batch)  # still consecutive within the kept window
    ends = np.asarray(batch.terminated | batch.truncated)
    assert ends[:, :-1].any()
    reference = _reference_valid_starts(num_steps - CAPACITY, num_steps - 1, LENGTH, cross=True)
    assert set(pairs) == reference and len(reference) == NUM_ENVS * (CAPACITY - LENGTH + 1)


def test_wraparound_keeps_the_newest_steps_in_time_order():
    state = _filled(31)
    assert isinstance(state, TrajectoryBufferState)
    assert state.storage.obs.shape == (CAPACITY, NUM_ENVS, 2)
    assert state.storage.obs.dtype == jnp.uint8 and state.position.dtype == jnp.int32
    assert int(state.size) == CAPACITY and int(state.position) == 31 % CAPACITY
    kept = np.arange(31 - CAPACITY, 31)
    np.testing.assert_array_equal(np.asarray(state.storage.action)[kept % CAPACITY, 0], kept)
    np.testing.assert_array_equal(
        np.asarray(state.storage.reward)[kept % CAPACITY],
        np.arange(NUM_ENVS)[None] * 1000 + kept[:, None],
    )
    np.testing.assert_array_equal(
        np.asarray(state.storage.obs)[kept % CAPACITY, :, 0],
        np.broadcast_to(kept[:, None] % 256, (CAPACITY, NUM_ENVS)),
    )


def test_partly_filled_buffer_and_can_sample():
    state = _filled(3)  # fewer steps than one sequence
    assert int(TRAJECTORY.num_valid_starts(state)) == 0
    assert not bool(TRAJECTORY.can_sample(state, 1))
    # Documented: no error, just unusable sequences.
    assert trajectory_sample(state, jax.random.key(0), SEQUENCE_DRAWS).obs.shape[1] == LENGTH
    state = _filled(7)  # times 0..6: starts 0..3 fit, never the zeros of unwritten slots
    pairs = _sampled_pairs(trajectory_sample(state, jax.random.key(1), SEQUENCE_DRAWS))
    assert set(pairs) == _reference_valid_starts(0, 6, LENGTH, cross=False)
    # min_size counts transitions over all envs: 7 steps x 3 envs.
    ready = TRAJECTORY.can_sample(state, 21)
    assert ready.dtype == jnp.bool_ and bool(ready)
    assert not bool(TRAJECTORY.can_sample(state, 22))


def test_custom_episode_end_no_valid_start_and_vmap_over_seeds():
    buffer = make_trajectory_buffer(6, 2, 3, episode_end=lambda items: items["done"])
    example = {"t": jnp.zeros((), jnp.int32), "done": jnp.zeros((), bool)}

    def fill(offset, always_done):
        def add(state, t):
            done = jnp.stack([t == 4, t == 6]) | always_done
            return buffer.add(state, {"t": jnp.stack([t, t + 100]) + offset, "done": done}), None

        return jax.lax.scan(add, buffer.init(example), jnp.arange(9, dtype=jnp.int32))[0]

    offsets = jnp.array([0, 1000, 2000], jnp.int32)
    keys = jax.random.split(jax.random.key(3), 3)
    fill_seeds = jax.jit(jax.vmap(fill, in_axes=(0, None)))
    states = fill_seeds(offsets, False)
    sample_seeds = jax.jit(jax.vmap(buffer.sample, in_axes=(0, 0, None)), static_argnums=2)
    batches = sample_seeds(states, keys, 32)
    assert batches["t"].shape == (3, 32, 3)
    num_valid_starts = jax.jit(jax.vmap(buffer.num_valid_starts))
    np.testing.assert_array_equal(np.asarray(num_valid_starts(states)), 4)
    sample_alone = jax.jit(buffer.sample, static_argnums=2)
    for seed in range(3):
        state = jax.tree.map(lambda x, seed=seed: x[seed], states)
        alone = sample_alone(state, keys[seed], 32)
        np.testing.assert_array_equal(np.asarray(batches["t"][seed]), np.asarray(alone["t"]))
        times = np.asarray(alone["t"]) - 1000 * seed
        np.testing.assert_array_equal(np.diff(times, axis=1), 1)
        # Kept times 3..8; env 0 ends at 4, env 1 (t + 100) at 6: starts 5, 6 and 103, 104.
        assert set(times[:, 0].tolist()) == {5, 6, 103, 104}
    # When every step ends an episode no sequence of 3 is valid.
    states = fill_seeds(offsets, True)
    np.testing.assert_array_equal(np.asarray(num_valid_starts(states)), 0)
    assert not jax.vmap(buffer.can_sample, in_axes=(0, None))(states, 0).any()


def test_sequence_length_one_may_end_an_episode():
    buffer = make_trajectory_buffer(4, 1, 1)
    state = buffer.init({"terminated": jnp.zeros((), bool), "truncated": jnp.zeros((), bool)})
    assert int(buffer.num_valid_starts(state)) == 0
    step = {"terminated": jnp.ones((1,), bool), "truncated": jnp.zeros((1,), bool)}
    for _ in range(5):
        state = buffer.add(state, step)
    assert int(buffer.num_valid_starts(state)) == 4  # every step is its own valid sequence


def test_trajectory_factory_and_add_name_the_bad_argument():
    with pytest.raises(RlkitError, match="sequence_length"):
        make_trajectory_buffer(4, 2, 5)
    with pytest.raises(RlkitError, match="num_envs"):
        make_trajectory_buffer(4, 0, 2)
    with pytest.raises(RlkitError, match="cross_episodes"):
        make_trajectory_buffer(4, 2, 2, cross_episodes=1)
    with pytest.raises(RlkitError, match="episode_end"):
        make_trajectory_buffer(4, 2, 2).init({"obs": jnp.zeros(3)})
    state = TRAJECTORY.init(jax.tree.map(lambda x: x[0], _step(0)))
    with pytest.raises(RlkitError, match="num_envs=3"):
        TRAJECTORY.add(state, jax.tree.map(lambda x: x[:2], _step(0)))
    with pytest.raises(RlkitError, match="dtype"):
        TRAJECTORY.add(state, _step(0).replace(action=jnp.zeros(NUM_ENVS, jnp.float32)))


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


def test_checkpoint_round_trip_restores_wrapped_buffers_exactly(tmp_path):
    _, prioritised_state = _wrapped_prioritised()
    prioritised_state = set_priorities(prioritised_state, jnp.array([0, 4]), jnp.array([3.0, 0.1]))
    trajectory_state = _filled(31)
    saved = {"prioritised": prioritised_state, "trajectory": trajectory_state}

    checkpointer = Checkpointer(tmp_path / "checkpoints")
    checkpointer.save(7, saved)
    like = {
        "prioritised": PRIORITISED.init(_example()),
        "trajectory": TRAJECTORY.init(jax.tree.map(lambda x: x[0], _step(0))),
    }
    restored = checkpointer.restore(7, like)
    checkpointer.close()

    assert isinstance(restored["prioritised"], PrioritisedBufferState)
    assert isinstance(restored["trajectory"], TrajectoryBufferState)
    assert int(restored["prioritised"].position) == 3 and int(restored["trajectory"].position) == 7

    def same(a, b):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    jax.tree.map(same, restored, saved)
    # Sampling continues identically after the restore, including after further adds.
    state, copy = prioritised_state, restored["prioritised"]
    key = jax.random.key(8)
    jax.tree.map(same, prioritised_sample(state, key, DRAWS), prioritised_sample(copy, key, DRAWS))
    state, copy = (prioritised_add(s, _items(np.arange(9, 11))) for s in (state, copy))
    jax.tree.map(same, prioritised_sample(state, key, DRAWS), prioritised_sample(copy, key, DRAWS))
    state, copy = trajectory_state, restored["trajectory"]
    key = jax.random.key(9)
    draws = SEQUENCE_DRAWS
    jax.tree.map(same, trajectory_sample(state, key, draws), trajectory_sample(copy, key, draws))
    state, copy = (trajectory_add(s, _step(31)) for s in (state, copy))
    jax.tree.map(same, trajectory_sample(state, key, draws), trajectory_sample(copy, key, draws))


def test_ctrl_c_during_a_save_is_held_until_the_checkpoint_is_written(tmp_path):
    import os
    import signal

    checkpointer = Checkpointer(tmp_path / "checkpoints")
    save = checkpointer.manager.save

    def interrupted_save(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C arrives as the write begins
        return save(*args, **kwargs)

    checkpointer.manager.save = interrupted_save
    tree = {"params": jnp.arange(3.0), "key": jax.random.key(1)}
    with pytest.raises(KeyboardInterrupt):
        checkpointer.save(0, tree)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert checkpointer.latest_step() == 0
    restored = checkpointer.restore(0, tree)
    assert jnp.array_equal(restored["params"], tree["params"])
    checkpointer.close()
