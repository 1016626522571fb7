"""Hybrid sampling (rlkit.data.hybrid): the exact offline share of each batch, its place and mask,
constant and scheduled fractions under jit and vmap, where rows come from, and `replay_learn`.

Dataset rows and buffer rows are told apart by their reward (+1 offline, -1 online) and by an id
in `obs[0]` (dataset rows 0..M-1, buffer rows 1000 + i), so every test checks the actual origin
of every row, not only the mask the sampler reports.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rlkit.data import make_uniform_buffer
from rlkit.data.hybrid import PROPORTIONAL, make_hybrid_sampler, proportional_count
from rlkit.errors import RlkitError
from rlkit.loops.common import example_transition, make_replay_sampling, replay_learn
from rlkit.types import Agent, ReplayFeed, Transition

BUFFER_ID = 1000


def _rows(ids, reward: float) -> dict:
    """Items [N]: obs [N, 2] = (id, 0) and the given reward (a Transition in miniature)."""
    ids = jnp.asarray(ids, jnp.float32)
    return {"obs": jnp.stack([ids, jnp.zeros_like(ids)], axis=-1),
            "reward": jnp.full(ids.shape, reward, jnp.float32)}


def _dataset(size: int = 8) -> dict:
    return _rows(np.arange(size), +1.0)


def _buffer(filled: int = 10, capacity: int = 64, first_id: int = BUFFER_ID):
    buffer = make_uniform_buffer(capacity)
    state = buffer.init(_rows(np.zeros(()), 0.0))
    state = buffer.add(state, _rows(first_id + np.arange(filled), -1.0))
    return buffer, state


def _check_origins(batch, batch_size: int, expected_offline: int, buffer_ids=None):
    """The batch has `expected_offline` dataset rows, first, and its mask says exactly which."""
    reward = np.asarray(batch.items["reward"])
    ids = np.asarray(batch.items["obs"][:, 0])
    offline = np.asarray(batch.offline)
    assert reward.shape == offline.shape == (batch_size,)
    from_dataset = reward > 0
    assert int(batch.num_offline) == expected_offline
    assert from_dataset.sum() == expected_offline
    np.testing.assert_array_equal(offline, from_dataset)
    np.testing.assert_array_equal(from_dataset, np.arange(batch_size) < expected_offline)
    assert np.all(ids[from_dataset] < BUFFER_ID)
    if buffer_ids is not None:
        assert set(ids[~from_dataset].astype(int)) <= set(buffer_ids)


# ------------------------------------------------------------------------------------------
# Constant fraction
# ------------------------------------------------------------------------------------------


def test_quarter_of_256_is_exactly_64_offline_rows_first():
    buffer, state = _buffer()
    sampler = make_hybrid_sampler(buffer, 0.25)
    sample = jax.jit(sampler.sample, static_argnums=3)
    for seed in range(3):
        batch = sample(state, _dataset(), jax.random.key(seed), 256, jnp.int32(seed))
        _check_origins(batch, 256, 64, BUFFER_ID + np.arange(10))
        assert batch.offline.dtype == jnp.bool_ and batch.num_offline.dtype == jnp.int32
    assert float(sampler.fraction(jnp.int32(0))) == 0.25
    assert int(sampler.num_offline(jnp.int32(0), 256)) == 64


@pytest.mark.parametrize("fraction, batch_size", [
    (0.7, 45),     # 31.5 in float64, 32 in float32: the count and the mask must agree
    (0.14, 75),
    (0.5, 5),      # 2.5: half to even, 2
    (0.5, 3),      # 1.5: half to even, 2
])
def test_mask_and_count_match_the_rows_for_awkward_products(fraction, batch_size):
    buffer, state = _buffer()
    sampler = make_hybrid_sampler(buffer, fraction)
    sample = jax.jit(sampler.sample, static_argnums=3)
    batch = sample(state, _dataset(), jax.random.key(0), batch_size, jnp.int32(0))
    expected = round(fraction * batch_size)
    _check_origins(batch, batch_size, expected)
    assert int(sampler.num_offline(jnp.int32(0), batch_size)) == expected


@pytest.mark.parametrize("fraction, expected", [(0, 0), (1.0, 32)])
def test_fraction_zero_and_one_use_one_source_only(fraction, expected):
    buffer, state = _buffer()
    sampler = make_hybrid_sampler(buffer, fraction)
    batch = sampler.sample(state, _dataset(), jax.random.key(1), 32, jnp.int32(0))
    _check_origins(batch, 32, expected, BUFFER_ID + np.arange(10))


def test_fraction_one_needs_no_online_data():
    buffer = make_uniform_buffer(16)
    empty = buffer.init(_rows(np.zeros(()), 0.0))
    batch = make_hybrid_sampler(buffer, 1.0).sample(empty, _dataset(), jax.random.key(0), 16,
                                                    jnp.int32(0))
    _check_origins(batch, 16, 16)


# ------------------------------------------------------------------------------------------
# Proportional to the sources' sizes
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("online, expected", [
    (0, 10),    # nothing online yet: all offline
    (2, 8),     # 10 * 8 / 10
    (8, 5),     # 10 * 8 / 16
    (12, 4),    # 10 * 8 / 20
    (24, 2),    # 10 * 8 / 32 = 2.5: half to even, 2
    (40, 2),    # 10 * 8 / 48 = 1.67
    (56, 1),    # 10 * 8 / 64 = 1.25
    (72, 1),    # 10 * 8 / 80
    (152, 0),   # 10 * 8 / 160 = 0.5: half to even, 0
])
def test_proportional_share_by_hand_with_the_buffer_filling_inside_jit(online, expected):
    # A dataset of M = 8 rows and a batch of B = 10: round(B * M / (M + n)) offline rows.
    buffer, state = _buffer(filled=online, capacity=160)
    if online == 0:
        state = buffer.init(_rows(np.zeros(()), 0.0))
    sampler = make_hybrid_sampler(buffer, PROPORTIONAL)
    sample = jax.jit(sampler.sample, static_argnums=3)  # one program for every fill
    for seed in range(2):
        batch = sample(state, _dataset(8), jax.random.key(seed), 10, jnp.int32(0))
        _check_origins(batch, 10, expected, BUFFER_ID + np.arange(online))
    assert int(sampler.num_offline(jnp.int32(0), 10, state.size, 8)) == expected
    np.testing.assert_allclose(float(sampler.fraction(jnp.int32(0), state.size, 8)),
                               8 / (8 + online), rtol=1e-6)


@pytest.mark.parametrize("batch_size, dataset_size, online, expected", [
    (256, 10_000_000, 5_000_000, 171),  # 170.67; B * M = 2.56e9 passes int32
    (256, 1 << 23, 1 << 23, 128),       # exactly half
    (3, 1, 1, 2),                       # 1.5: half to even, 2
    (5, 1, 1, 2),                       # 2.5: half to even, 2
    (7, 1, 0, 7),
])
def test_proportional_count_is_exact_integer_arithmetic(batch_size, dataset_size, online,
                                                        expected):
    count = jax.jit(proportional_count, static_argnums=(0, 1))(batch_size, dataset_size,
                                                               jnp.int32(online))
    assert count.dtype == jnp.int32 and int(count) == expected


@pytest.mark.parametrize("fraction", [0.0, 0.25, PROPORTIONAL,
                                      optax.linear_schedule(0.0, 1.0, 10)])
def test_an_empty_buffer_gives_an_all_offline_batch_at_any_share(fraction):
    buffer = make_uniform_buffer(16)
    empty = buffer.init(_rows(np.zeros(()), 0.0))
    sampler = make_hybrid_sampler(buffer, fraction)
    batch = jax.jit(sampler.sample, static_argnums=3)(empty, _dataset(), jax.random.key(0), 12,
                                                      jnp.int32(0))
    _check_origins(batch, 12, 12)
    assert int(sampler.num_offline(jnp.int32(0), 12, empty.size, 8)) == 12


@pytest.mark.parametrize("fraction", [-0.1, 1.5, float("nan"), True, "proportionate"])
def test_invalid_constant_fraction_raises_naming_the_field(fraction):
    buffer, _ = _buffer()
    with pytest.raises(RlkitError, match="^offline_fraction:"):
        make_hybrid_sampler(buffer, fraction)


# ------------------------------------------------------------------------------------------
# Scheduled fraction
# ------------------------------------------------------------------------------------------


def test_linear_schedule_under_jit_gives_exact_counts_with_static_shapes():
    buffer, state = _buffer()
    sampler = make_hybrid_sampler(buffer, optax.linear_schedule(1.0, 0.0, 100))
    traces = []

    def sample(state, dataset, key, step):
        traces.append(1)  # runs only while tracing
        return sampler.sample(state, dataset, key, 256, step)

    sample = jax.jit(sample)
    expected = {0: 256, 25: 192, 50: 128, 75: 64, 99: 3, 100: 0, 150: 0}  # round(256 f)
    for step, count in expected.items():
        batch = sample(state, _dataset(), jax.random.key(step), jnp.int32(step))
        assert jax.tree.map(lambda leaf: leaf.shape[0], batch.items) == jax.tree.map(
            lambda _: 256, batch.items)
        _check_origins(batch, 256, count, BUFFER_ID + np.arange(10))
        np.testing.assert_allclose(float(sampler.fraction(jnp.int32(step))),
                                   max(0.0, 1 - step / 100), atol=1e-6)
    assert len(traces) == 1


def test_schedule_values_outside_the_unit_interval_are_clipped():
    buffer, state = _buffer()
    sampler = make_hybrid_sampler(buffer, optax.linear_schedule(2.0, -1.0, 30))
    for step, count in ((0, 16), (10, 16), (20, 0), (30, 0)):
        batch = sampler.sample(state, _dataset(), jax.random.key(step), 16, jnp.int32(step))
        _check_origins(batch, 16, count)


# ------------------------------------------------------------------------------------------
# Where rows come from
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fraction", [1.0, optax.constant_schedule(1.0)],
                         ids=["constant", "schedule"])
def test_dataset_rows_are_drawn_uniformly(fraction):
    buffer, state = _buffer()
    sampler = make_hybrid_sampler(buffer, fraction)
    sample = jax.jit(jax.vmap(lambda key: sampler.sample(state, _dataset(), key, 1024,
                                                         jnp.int32(0)).items["obs"][:, 0]))
    ids = np.asarray(sample(jax.random.split(jax.random.key(0), 8))).astype(int).ravel()
    counts = np.bincount(ids, minlength=8)
    assert counts.sum() == 8 * 1024 and len(counts) == 8
    # 1024 draws per row: a binomial standard deviation of about 30; 150 is five of them.
    np.testing.assert_allclose(counts, 1024, atol=150)


@pytest.mark.parametrize("fraction", [0.25, optax.constant_schedule(0.25)],
                         ids=["constant", "schedule"])
def test_online_rows_come_from_the_filled_part_of_the_buffer_only(fraction):
    buffer, state = _buffer(filled=10, capacity=64)
    sampler = make_hybrid_sampler(buffer, fraction)
    sample = jax.jit(jax.vmap(lambda key: sampler.sample(state, _dataset(), key, 256,
                                                         jnp.int32(0))))
    batches = sample(jax.random.split(jax.random.key(0), 8))
    online = np.asarray(batches.items["obs"][:, 64:, 0]).astype(int).ravel()
    assert np.all(np.asarray(batches.items["reward"][:, 64:]) == -1.0)
    counts = np.bincount(online - BUFFER_ID, minlength=10)
    assert len(counts) == 10  # never an empty slot (id 0 with reward 0)
    np.testing.assert_allclose(counts, 8 * 192 / 10, rtol=0.3)


def test_vmap_over_three_seeds():
    buffer = make_uniform_buffer(64)

    def seed_buffer(seed):  # seed s holds ids 1000 * (s + 1) + i, i < 10
        state = buffer.init(_rows(np.zeros(()), 0.0))
        return buffer.add(state, _rows(BUFFER_ID * (seed + 1) + jnp.arange(10), -1.0))

    stacked = jax.jit(jax.vmap(seed_buffer))(jnp.arange(3))
    sampler = make_hybrid_sampler(buffer, 0.25)
    sample = jax.jit(jax.vmap(functools.partial(sampler.sample, batch_size=256,
                                                step=jnp.int32(0)),
                              in_axes=(0, None, 0)))
    batches = sample(stacked, _dataset(), jax.random.split(jax.random.key(0), 3))
    assert batches.offline.shape == (3, 256)
    for seed in range(3):
        batch = jax.tree.map(lambda leaf, seed=seed: leaf[seed], batches)
        _check_origins(batch, 256, 64, BUFFER_ID * (seed + 1) + np.arange(10))
    first, second = (np.asarray(batches.items["obs"][i, :64, 0]) for i in range(2))
    assert not np.array_equal(first, second)  # each seed draws its own rows


# ------------------------------------------------------------------------------------------
# replay_learn with a sampler
# ------------------------------------------------------------------------------------------


def _transitions(reward) -> Transition:
    obs = jnp.zeros((*reward.shape, 2), jnp.float32)
    flags = jnp.zeros(reward.shape, bool)
    return Transition(obs=obs, action=jnp.zeros(reward.shape, jnp.int32), reward=reward,
                      terminated=flags, truncated=flags, next_obs=obs, extras={})


def _probe_agent(feed: ReplayFeed) -> Agent:
    """An agent whose update reports the mean reward of its batch (+1 offline, -1 online)."""
    def update(state, batch, key):
        del key
        return state + 1, {"reward_mean": batch.reward.mean()}

    return Agent(init=lambda key: jnp.zeros((), jnp.int32), act=None, update=update,
                 policy=None, feed=feed)


def _learn(feed: ReplayFeed, iterations: int):
    agent = _probe_agent(feed)
    buffer, sampler = make_replay_sampling(feed)
    assert sampler is not None

    def run(key):
        buffer_state = buffer.init(example_transition(jnp.zeros((2,), jnp.float32)))

        def body(carry, iteration):
            agent_state, buffer_state = carry
            transition = _transitions(jnp.full((2,), -1.0))
            agent_state, buffer_state, metrics = replay_learn(
                agent, buffer, agent_state, buffer_state, transition, iteration,
                jax.random.fold_in(key, iteration), dataset=_transitions(jnp.ones((8,))),
                sampler=sampler)
            return (agent_state, buffer_state), metrics

        return jax.lax.scan(body, (jnp.zeros((), jnp.int32), buffer_state),
                            jnp.arange(iterations, dtype=jnp.int32))

    (updates, _), metrics = jax.jit(run)(jax.random.key(0))
    return int(updates), jax.tree.map(np.asarray, metrics)


def test_replay_learn_with_a_constant_fraction_reports_it_and_mixes_the_batch():
    feed = ReplayFeed(num_envs=2, buffer_size=32, batch_size=8, learning_starts=8,
                      offline_fraction=0.25)
    updates, metrics = _learn(feed, 6)
    np.testing.assert_array_equal(metrics["offline_fraction"], 0.25)
    # Updates start once 8 transitions are stored (the 4th iteration); 2 of 8 rows are offline.
    assert updates == 3
    assert np.all(np.isnan(metrics["reward_mean"][:3]))
    np.testing.assert_allclose(metrics["reward_mean"][3:], (2 - 6) / 8)


def test_replay_learn_follows_the_feeds_schedule():
    feed = ReplayFeed(num_envs=2, buffer_size=32, batch_size=8, learning_starts=8,
                      offline_fraction=1.0, offline_fraction_end=0.0, offline_fraction_steps=4)
    _, metrics = _learn(feed, 6)
    np.testing.assert_allclose(metrics["offline_fraction"], [1.0, 0.75, 0.5, 0.25, 0.0, 0.0])
    # Iteration 3 (fraction 0.25) mixes 2 offline rows; from iteration 4 the batch is online.
    np.testing.assert_allclose(metrics["reward_mean"][3:], [(2 - 6) / 8, -1.0, -1.0])


# ------------------------------------------------------------------------------------------
# The round driver samples through the same sampler
# ------------------------------------------------------------------------------------------


def test_round_driver_batches_hold_the_proportional_count_round_by_round():
    from envs.toy import ChainConfig, make_chain
    from rlkit.loops.rounds import make_rounds_trainer
    from rlkit.types import RoundFeed

    env = make_chain(ChainConfig())  # 8 states, 16 steps; action 0 (left) never pays
    size = 48  # dataset rows, each with reward +1
    obs = jnp.zeros((size, 8), jnp.float32).at[:, 0].set(1.0)
    flags = jnp.arange(size) % 16 == 15
    dataset = Transition(obs=obs, action=jnp.zeros((size,), jnp.int32),
                         reward=jnp.ones((size,)), terminated=jnp.zeros((size,), bool),
                         truncated=flags, next_obs=obs, extras={})
    feed = RoundFeed(num_envs=1, episode_length=16, updates_per_round=3, batch_size=10,
                     buffer_episodes=10, offline_fraction=None, uses_dataset=True)

    def update(state, batch, key):  # the batch's mean reward is its offline share
        return state + 1, {"offline_share": batch.reward.mean()}

    agent = Agent(init=lambda key: jnp.zeros((), jnp.int32),
                  act=lambda state, obs, key, step: (jnp.zeros(obs.shape[:1], jnp.int32), {}),
                  update=update, policy=lambda state, obs: jnp.full((obs.shape[0], 2), 0.5),
                  feed=feed)
    trainer = make_rounds_trainer(agent, env, env.default_params, 5, dataset=dataset)
    _, metrics = trainer.run(trainer.init(jax.random.split(jax.random.key(0), 1)))
    # Round r fits on n = 16 r online rows: round(10 * 48 / (48 + n)) offline rows of 10.
    # n = 0: 10; 16: 7.5 -> 8 (half to even); 32: 6; 48: 5; 64: 4.29 -> 4.
    np.testing.assert_allclose(metrics["offline_share"][0], [1.0, 0.8, 0.6, 0.5, 0.4],
                               rtol=1e-6)


# ------------------------------------------------------------------------------------------
# The paper's offline schedule (Amortila et al. 2024, Alg. 2 line 5, Alg. 3 line 8) and the
# figures the paper bounds (Alg. 1 line 13, Thm 3.1)
# ------------------------------------------------------------------------------------------


def _episode_dataset(num_episodes: int, length: int) -> Transition:
    """Dataset episodes of `length` rows whose reward is 100 + the episode's index."""
    size = num_episodes * length
    obs = jnp.zeros((size, 8), jnp.float32).at[:, 0].set(1.0)
    index = jnp.arange(size)
    return Transition(obs=obs, action=jnp.zeros((size,), jnp.int32),
                      reward=(100 + index // length).astype(jnp.float32),
                      terminated=jnp.zeros((size,), bool), truncated=index % length == length - 1,
                      next_obs=obs, extras={})


def _round_agent(feed, update, policy=None):
    return Agent(
        init=lambda key: jnp.zeros((), jnp.int32),
        act=lambda state, obs, key, step: (jnp.zeros(obs.shape[:1], jnp.int32), {}),
        update=update, feed=feed,
        policy=policy or (lambda state, obs: jnp.full((obs.shape[0], 2), 0.5)))


def _run_rounds(agent, rounds: int, dataset=None):
    from envs.toy import ChainConfig, make_chain
    from rlkit.loops.rounds import make_rounds_trainer

    env = make_chain(ChainConfig())  # 8 states, 16 steps per episode
    trainer = make_rounds_trainer(agent, env, env.default_params, rounds, dataset=dataset)
    _, metrics = trainer.run(trainer.init(jax.random.split(jax.random.key(0), 1)))
    return env, jax.tree.map(lambda m: np.asarray(m[0]), metrics)


def test_paper_schedule_exact_learner_sees_t_minus_1_offline_and_online_episodes_half_half():
    from rlkit.types import RoundFeed

    feed = RoundFeed(num_envs=1, episode_length=16, updates_per_round=1, batch_size=None,
                     buffer_episodes=10, uses_dataset=True, offline_schedule="paper")

    def update(state, data, key):  # what the learner receives, measured from the rows
        weight = data.extras["weight"]
        offline = data.extras["offline"]
        used = weight > 0
        first = data.extras["first"]
        return state + 1, {
            "offline_weight": (weight * offline).sum(),
            "online_weight": (weight * ~offline).sum(),
            "offline_episodes": (first & used & offline).sum().astype(jnp.float32),
            "online_episodes": (first & used & ~offline).sum().astype(jnp.float32),
            "last_offline_episode": jnp.where(used & offline, data.reward - 100, -1).max(),
            "offline_steps_ok": jnp.all(jnp.where(offline, data.extras["step"]
                                                  == (jnp.arange(data.reward.shape[0]) - 160) % 8,
                                                  True)).astype(jnp.float32),
        }

    # 5 offline episodes of 8 rows, online episodes of 16 rows: offline rows weigh 16 / 8 = 2.
    _, metrics = _run_rounds(_round_agent(feed, update), 7, _episode_dataset(5, 8))
    rounds = np.arange(7)  # round t = r + 1 has seen r = t - 1 online episodes
    np.testing.assert_array_equal(metrics["online_episodes"], rounds)
    np.testing.assert_array_equal(metrics["offline_episodes"], np.minimum(rounds, 5))
    np.testing.assert_array_equal(metrics["last_offline_episode"], np.minimum(rounds, 5) - 1)
    # Half and half: equal total weight; 2 per offline row while t - 1 <= 5, then 96 / 40.
    np.testing.assert_allclose(metrics["online_weight"], 16 * rounds)
    np.testing.assert_allclose(metrics["offline_weight"], 16 * rounds, rtol=1e-6)
    np.testing.assert_array_equal(metrics["offline_steps_ok"], 1.0)


def test_paper_schedule_batches_are_half_offline_from_the_first_episodes_only():
    from rlkit.types import RoundFeed

    feed = RoundFeed(num_envs=1, episode_length=16, updates_per_round=4, batch_size=11,
                     buffer_episodes=10, uses_dataset=True, offline_schedule="paper")

    def update(state, batch, key):  # online rows of the chain pay 0, offline ones 100 + e
        offline = batch.reward >= 100
        return state + 1, {"offline_rows": offline.sum().astype(jnp.float32),
                           "first_rows_offline": jnp.all(offline[:5]).astype(jnp.float32),
                           "last_offline_episode": jnp.where(offline, batch.reward - 100,
                                                             -1).max()}

    _, metrics = _run_rounds(_round_agent(feed, update), 5, _episode_dataset(8, 16))
    # Round 1 has no data: no fit (NaN). Round t: 11 // 2 = 5 rows from episodes < t - 1.
    assert np.isnan(metrics["offline_rows"][0])
    np.testing.assert_array_equal(metrics["offline_rows"][1:], 5.0)
    np.testing.assert_array_equal(metrics["first_rows_offline"][1:], 1.0)
    assert np.all(metrics["last_offline_episode"][1:] <= np.arange(1, 5) - 1)
    assert metrics["last_offline_episode"][4] >= 1  # draws reach past the first episode


@pytest.mark.parametrize("refit, expected", [(False, [2, 5, 8, 11]), (True, [2, 2, 2, 2])])
def test_refit_reinitialises_the_learner_every_round(refit, expected):
    from rlkit.types import RoundFeed

    feed = RoundFeed(num_envs=1, episode_length=16, updates_per_round=3, batch_size=4,
                     buffer_episodes=10, uses_dataset=True, refit=refit)

    def update(state, batch, key):  # the state counts the updates since the last init
        return state + 1, {"updates_so_far": (state + 1).astype(jnp.float32)}

    _, metrics = _run_rounds(_round_agent(feed, update), 4, _episode_dataset(2, 16))
    # A round's metric is the mean over its 3 updates: (k+1 + k+2 + k+3) / 3 = k + 2, with k
    # the updates before the round (3 r without refitting, 0 with).
    np.testing.assert_allclose(metrics["updates_so_far"], expected)


def test_cumulative_regret_and_mixture_return_are_exact_and_logged_at_the_chunks_end():
    from rlkit import planning
    from rlkit.types import RoundFeed

    feed = RoundFeed(num_envs=2, episode_length=16, updates_per_round=1, batch_size=None,
                     buffer_episodes=20)
    left, right = jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0])

    def policy(state, obs):  # rounds 1 and 2 go left, rounds 3..5 right
        return jnp.broadcast_to(jnp.where(state >= 3, right, left), (obs.shape[0], 2))

    agent = _round_agent(feed, lambda state, data, key: (state + 1, {}), policy)
    env, metrics = _run_rounds(agent, 5)
    model = env.model(env.default_params)
    optimal = float(planning.value_iteration(model).optimal_return)
    returns = {name: float(planning.expected_return(
        model, jnp.broadcast_to(row, (model.rewards.shape[0], 2)), horizon=16))
        for name, row in (("left", left), ("right", right))}
    assert returns["right"] > returns["left"]  # the two policies differ, so the test can fail
    per_round = [returns["left"]] * 2 + [returns["right"]] * 3
    np.testing.assert_allclose(metrics["policy_return"], per_round, rtol=1e-5)
    assert np.all(np.isnan(metrics["cumulative_regret"][:4]))
    assert np.all(np.isnan(metrics["mixture_return"][:4]))
    np.testing.assert_allclose(metrics["cumulative_regret"][4],
                               2 * sum(optimal - j for j in per_round), rtol=1e-5)
    np.testing.assert_allclose(metrics["mixture_return"][4], np.mean(per_round), rtol=1e-5)
