"""Parity with the real Minari package (rlkit.data.minari_io): datasets collected by Minari's
own DataCollector load correctly, and rlkit exports read back through `minari.load_dataset`.

Everything is local: MINARI_DATASETS_PATH points into a temporary directory.
"""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest

from rlkit.data import (
    Dataset,
    DatasetError,
    DatasetInfo,
    from_minari,
    load_dataset,
    save_dataset,
    to_minari,
)
from rlkit.types import Transition

minari = pytest.importorskip("minari")

NUM_EPISODES = 5


@pytest.fixture
def minari_root(tmp_path, monkeypatch):
    root = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


@pytest.fixture
def cartpole(minari_root):
    """5 episodes of random CartPole-v1, collected and stored by Minari itself."""
    env = minari.DataCollector(gym.make("CartPole-v1"))
    env.action_space.seed(0)
    for episode in range(NUM_EPISODES):
        env.reset(seed=episode)
        while True:
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            if terminated or truncated:
                break
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        env.create_dataset(dataset_id="cartpole/random-v0", algorithm_name="random")
    env.close()
    return minari.load_dataset("cartpole/random-v0")


def _assert_matches_minari(dataset: Dataset, episodes) -> None:
    """Rows are the episodes' steps in order, chained obs -> next_obs, flags at episode ends."""
    t = dataset.transitions
    start = 0
    for episode in episodes:
        steps = len(episode.rewards)
        rows = slice(start, start + steps)
        np.testing.assert_array_equal(t.obs[rows], episode.observations[:-1])
        np.testing.assert_array_equal(t.next_obs[rows], episode.observations[1:])
        np.testing.assert_array_equal(t.action[rows], episode.actions)
        np.testing.assert_allclose(t.reward[rows], episode.rewards)
        np.testing.assert_array_equal(t.terminated[rows], episode.terminations)
        np.testing.assert_array_equal(t.truncated[rows], episode.truncations)
        start += steps
    assert start == len(t.reward)


def test_from_minari_loads_a_datacollector_dataset(cartpole, minari_root):
    dataset = from_minari("cartpole/random-v0")
    episodes = list(cartpole.iterate_episodes())
    assert dataset.num_episodes == NUM_EPISODES and dataset.path is None
    assert len(dataset.transitions.reward) == cartpole.total_steps
    _assert_matches_minari(dataset, episodes)
    t = dataset.transitions
    ended = t.terminated | t.truncated
    # obs / next_obs chain inside every episode and the flags sit on the last steps only.
    np.testing.assert_array_equal(t.next_obs[:-1][~ended[:-1]], t.obs[1:][~ended[:-1]])
    assert np.flatnonzero(ended).tolist() == list(np.cumsum([len(e.rewards) for e in episodes]) - 1)
    assert t.obs.dtype == np.float32 and t.action.dtype == np.int32
    info = dataset.info
    assert info.env_id == "gym:CartPole-v1" and info.obs_shape == (4,) and info.num_actions == 2
    assert info.behaviour_return == pytest.approx(np.mean([e.rewards.sum() for e in episodes]))
    assert info.extra["minari"]["dataset_id"] == "cartpole/random-v0"
    # By path as well as by id; and the env id can be overridden.
    by_path = from_minari(minari_root / "cartpole" / "random-v0", env_id="cartpole")
    assert by_path.info.env_id == "cartpole"
    np.testing.assert_array_equal(by_path.transitions.obs, t.obs)


def test_cartpole_round_trip_through_both_formats(cartpole, tmp_path):
    dataset = from_minari("cartpole/random-v0")
    saved = load_dataset(save_dataset(tmp_path / "ds", dataset.transitions, dataset.info))
    path = to_minari(saved, "rlkit/cartpole-v0")
    exported = minari.load_dataset(path)
    assert exported.total_episodes == NUM_EPISODES
    assert exported.env_spec is not None and exported.env_spec.id == "CartPole-v1"
    for ours, theirs in zip(exported.iterate_episodes(), cartpole.iterate_episodes(), strict=True):
        np.testing.assert_array_equal(ours.observations, theirs.observations)
        np.testing.assert_array_equal(ours.actions, theirs.actions)
        np.testing.assert_array_equal(ours.rewards, theirs.rewards)
        np.testing.assert_array_equal(ours.terminations, theirs.terminations)
        np.testing.assert_array_equal(ours.truncations, theirs.truncations)
    assert from_minari(path).info == dataset.info  # the rlkit info rides along


def _image_dataset() -> Dataset:
    """Three contiguous episodes (lengths 4, 3, 5) and a trailing partial one of 2 steps."""
    lengths, frames = [4, 3, 5, 2], []
    rng = np.random.default_rng(0)
    for length in lengths:
        frames.append(rng.integers(0, 256, (length + 1, 32, 32, 3), dtype=np.uint8))
    obs = np.concatenate([f[:-1] for f in frames])
    next_obs = np.concatenate([f[1:] for f in frames])
    n = len(obs)
    ends = np.cumsum(lengths) - 1
    terminated = np.zeros(n, bool)
    truncated = np.zeros(n, bool)
    terminated[ends[0]] = terminated[ends[2]] = True
    truncated[ends[1]] = True  # ends[3]: the data just stops
    transitions = Transition(
        obs=obs,
        action=np.arange(n, dtype=np.int32) % 4,
        reward=np.linspace(-1, 1, n, dtype=np.float32),
        terminated=terminated,
        truncated=truncated,
        next_obs=next_obs,
    )
    info = DatasetInfo(
        "gridworld", {"size": 5}, (32, 32, 3), "uint8", 4, "random", 0.5, 0.1, {"seed": 3}
    )
    return Dataset(info, transitions, 3, None)


def test_to_minari_exports_episodes_losslessly(tmp_path):
    dataset = _image_dataset()
    path = to_minari(dataset, "rlkit/grid-v1", data_path=tmp_path / "root")
    assert path == str(tmp_path / "root" / "rlkit" / "grid-v1")
    exported = minari.load_dataset(path)
    assert exported.total_episodes == 4 and exported.total_steps == 14
    t = dataset.transitions
    start = 0
    for episode, length in zip(exported.iterate_episodes(), [4, 3, 5, 2], strict=True):
        rows = slice(start, start + length)
        expected_obs = np.concatenate([t.obs[rows], t.next_obs[start + length - 1][None]])
        np.testing.assert_array_equal(episode.observations, expected_obs)  # no JPEG loss
        np.testing.assert_array_equal(episode.actions, t.action[rows])
        np.testing.assert_array_equal(episode.rewards, t.reward[rows])
        np.testing.assert_array_equal(episode.terminations, t.terminated[rows])
        start += length
    truncations = [e.truncations[-1] for e in exported.iterate_episodes()]
    assert truncations == [False, True, False, True]  # the trailing partial one is truncated
    back = from_minari(path)
    assert back.info == dataset.info and back.num_episodes == 4
    np.testing.assert_array_equal(back.transitions.obs, t.obs)
    np.testing.assert_array_equal(back.transitions.truncated[:-1], t.truncated[:-1])
    with pytest.raises(DatasetError, match="already exists"):
        to_minari(dataset, "rlkit/grid-v1", data_path=tmp_path / "root")


def test_to_minari_refuses_interleaved_rows_and_bad_ids(tmp_path):
    dataset = _image_dataset()
    order = np.r_[1, 0, 2 : len(dataset.transitions.reward)]
    shuffled = dataset._replace(
        transitions=Transition(
            **{
                name: getattr(dataset.transitions, name)[order]
                for name in ("obs", "action", "reward", "terminated", "truncated", "next_obs")
            }
        )
    )
    with pytest.raises(DatasetError, match="next_obs of row 0 differs from obs of row 1"):
        to_minari(shuffled, "rlkit/grid-v1", data_path=tmp_path)
    with pytest.raises(DatasetError, match="malformed"):
        to_minari(dataset, "no version!", data_path=tmp_path)
    assert not (tmp_path / "rlkit").exists()


def _one_episode_dataset(dataset_id: str, observations, actions, observation_space,
                         action_space) -> None:
    """Write a Minari dataset of one episode with no env spec: T = len(actions) steps, reward t
    on step t, terminated at the last step."""
    steps = len(actions)
    buffer = minari.data_collector.EpisodeBuffer(
        id=0, observations=observations, actions=actions,
        rewards=np.arange(steps, dtype=np.float32),
        terminations=np.array([False] * (steps - 1) + [True]), truncations=np.zeros(steps, bool))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Minari warns about the missing env spec
        minari.create_dataset_from_buffers(dataset_id, [buffer],
                                           observation_space=observation_space,
                                           action_space=action_space)


def test_from_minari_errors(minari_root, tmp_path):
    with pytest.raises(DatasetError, match="'nothing/here-v0': not found"):
        from_minari("nothing/here-v0")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="not a Minari dataset"):
        from_minari(tmp_path / "empty")
    # A continuous-action dataset (Box actions) is refused with the space named.
    _one_episode_dataset("box/actions-v0", np.zeros((3, 2), np.float32),
                         np.zeros((2, 1), np.float32), gym.spaces.Box(-1, 1, (2,), np.float32),
                         gym.spaces.Box(-1, 1, (1,), np.float32))
    with pytest.raises(DatasetError, match="action space Box.* not supported"):
        from_minari("box/actions-v0")
    # Without an env spec the env id must be given.
    _one_episode_dataset("nospec/discrete-v0", np.zeros((3, 2), np.float32), np.array([0, 1]),
                         gym.spaces.Box(-1, 1, (2,), np.float32), gym.spaces.Discrete(2))
    with pytest.raises(DatasetError, match="Pass env_id="):
        from_minari("nospec/discrete-v0")
    assert from_minari("nospec/discrete-v0", env_id="chain").info.env_id == "chain"


def _offset_env_id() -> str:
    """Register /work/shared/cases/gym_cases.py's Offset-v0 (actions Discrete(3, start=-1), the
    reward is the action received) and return its rlkit id."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path("/work/shared/cases/gym_cases.py")
    if not path.is_file():
        pytest.skip("the shared gymnasium fault cases are not on this machine")
    if "gym_cases" not in sys.modules:
        spec = importlib.util.spec_from_file_location("gym_cases", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["gym_cases"] = module
        spec.loader.exec_module(module)
    return "gym:Offset-v0"


def test_export_of_a_discrete_space_with_an_offset_start_replays_its_rewards(minari_root):
    # Issue 11 item 12: actions were exported 0-based under a space whose start is -1.
    from rlkit.collect import collect

    env_id = _offset_env_id()
    dataset = collect(env_id, None, "random", 6, seed=0, num_envs=2)
    assert set(np.unique(dataset.transitions.action)) == {0, 1, 2}  # rlkit stores 0-based
    path = to_minari(dataset, "rlkit/offset-random-v0")
    exported = minari.load_dataset(path)
    assert exported.action_space == gym.spaces.Discrete(3, start=-1)
    env = gym.make("Offset-v0")
    replayed = 0
    for episode in exported.iterate_episodes():
        env.reset(seed=0)
        for action, reward in zip(episode.actions, episode.rewards, strict=True):
            _, env_reward, _, _, _ = env.step(int(action))
            assert env_reward == reward  # the reward is the action the env received
            replayed += 1
    env.close()
    assert replayed == len(dataset.transitions.reward)
    # Import is the inverse of export: the same 0-based actions and rewards come back.
    back = from_minari(path)
    np.testing.assert_array_equal(back.transitions.action, dataset.transitions.action)
    np.testing.assert_array_equal(back.transitions.reward, dataset.transitions.reward)


@pytest.mark.parametrize("start", [-1, 0, 3])
def test_minari_to_rlkit_to_minari_keeps_any_action_start(minari_root, start):
    # A Minari dataset of an env without a gymnasium spec: its start survives the round trip.
    _one_episode_dataset("test/start-v0", np.arange(6, dtype=np.float32)[:, None],
                         np.array([0, 1, 2, 1, 0]) + start, gym.spaces.Box(-10, 10, (1,)),
                         gym.spaces.Discrete(3, start=start))
    imported = from_minari("test/start-v0", env_id="chain")
    np.testing.assert_array_equal(imported.transitions.action, [0, 1, 2, 1, 0])
    again = minari.load_dataset(to_minari(imported, "test/again-v0"))
    assert again.action_space == gym.spaces.Discrete(3, start=start)
    episode = next(again.iterate_episodes())
    np.testing.assert_array_equal(episode.actions, np.array([0, 1, 2, 1, 0]) + start)
