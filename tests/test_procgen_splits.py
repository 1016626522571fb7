"""The procgen generalisation protocol without procgen (spec 6.5): the normaliser, the level
splits and their protocol switch, the import of the paper's dataset layout, and datasets of
exactly N transitions."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from envs.procgen_adapter import GAMES
from envs.procgen_adapter import Config as ProcgenConfig
from rlkit import procgen
from rlkit.errors import RlkitError


def test_normalize_hits_the_spec_values_and_is_vectorised():
    assert float(procgen.normalize("starpilot", 64)) == 1.0
    assert float(procgen.normalize("fruitbot", -1.5)) == 0.0
    assert float(procgen.normalize("procgen:starpilot", 2.5)) == 0.0
    # coinrun: R_min 5, R_max 10, so 7.5 is halfway; any shape, jnp out.
    out = procgen.normalize("coinrun", jnp.array([[5.0, 7.5], [10.0, 12.5]]))
    assert isinstance(out, jnp.ndarray) and out.shape == (2, 2)
    np.testing.assert_allclose(out, [[0.0, 0.5], [1.0, 1.5]])
    assert set(procgen.RETURN_RANGES) == set(GAMES)
    assert procgen.return_range("climber") == (2.0, 12.6)
    with pytest.raises(RlkitError, match="'starpilott'.*Did you mean 'starpilot'"):
        procgen.normalize("starpilott", 1.0)


def _levels(split, upto=1000):
    return set(np.flatnonzero(split.contains(np.arange(upto))).tolist())


def test_the_paper_splits_are_disjoint_and_where_the_spec_says():
    splits = procgen.level_splits()
    assert [(s.start_level, s.num_levels) for s in splits.values()] == [
        (0, 200), (200, 50), (250, 0)]
    train, validation, test = (_levels(splits[name]) for name in procgen.SPLITS)
    assert train == set(range(200)) and validation == set(range(200, 250))
    assert test == set(range(250, 1000))
    assert splits["test"].contains(2**31 - 1)  # unbounded upward
    assert not (train & validation or train & test or validation & test)


@pytest.mark.parametrize("num_levels,start", [(200, 0), (10, 0), (1, 40), (1, 1)])
def test_protocols_keep_the_splits_disjoint(num_levels, start):
    fixed = procgen.level_splits(num_levels, start, "fixed")
    after = procgen.level_splits(num_levels, start, "after-train")
    for splits in (fixed, after):
        sets = [_levels(splits[name]) for name in procgen.SPLITS]
        assert sets[0] == set(range(start, start + num_levels))
        assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
        assert len(sets[1]) == 50
    # fixed: the paper's validation / test whatever the training levels.
    assert (fixed["validation"].start_level, fixed["test"].start_level) == (200, 250)
    # after-train: right after the training levels.
    end = start + num_levels
    assert (after["validation"].start_level, after["test"].start_level) == (end, end + 50)


def test_impossible_splits_are_refused_in_one_line():
    with pytest.raises(RlkitError, match="overlap.*after-train"):
        procgen.level_splits(500, 0, "fixed")
    assert procgen.level_splits(500, 0, "after-train")["test"].start_level == 550
    with pytest.raises(RlkitError, match="every level"):
        procgen.level_splits(0)
    with pytest.raises(RlkitError, match="--split-protocol: unknown protocol 'paper'"):
        procgen.level_splits(protocol="paper")


def test_eval_configs_keep_the_game_and_set_the_levels():
    config = ProcgenConfig(game="maze", num_levels=10, start_level=0, distribution_mode="hard")
    configs = procgen.eval_configs(config, "after-train")
    assert configs["train"] == config
    assert configs["validation"] == ProcgenConfig("maze", 50, 10, "hard")
    assert configs["test"] == ProcgenConfig("maze", 0, 60, "hard")
    default = procgen.eval_configs(ProcgenConfig())
    assert [(c.start_level, c.num_levels) for c in default.values()] == [(0, 200), (200, 50),
                                                                        (250, 0)]


@pytest.mark.parametrize("args,needle", [
    (["--env", "procgen:starpilot", "--eval-episodes", "8"],
     "--eval-episodes: procgen:starpilot is evaluated on its train, validation and test levels; "
     "pass --split-episodes 8"),
    (["--env", "procgen:starpilot", "--env-config.num-levels", "500"],
     "overlap the fixed validation and test levels"),
    (["--env", "procgen:starpilot", "--split-protocol", "paper"],
     "--split-protocol: unknown protocol 'paper'"),
    (["--env", "chain", "--split-episodes", "4"],
     "--split-episodes: has no effect on chain: level splits exist for procgen games only"),
    (["--env", "chain", "--split-protocol", "after-train"], "--split-protocol: has no effect"),
])
def test_split_flags_are_checked_in_one_line_before_anything_is_built(args, needle, tmp_path,
                                                                      capfd):
    from rlkit.train import main

    code = main(["ppo", *args, "--run-dir", str(tmp_path / "run"), "--no-progress"])
    err = capfd.readouterr().err.strip()
    assert code == 2 and needle in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------------------------
# Datasets of exactly N transitions (spec 6.5.3) and level seeds on disk
# --------------------------------------------------------------------------------------------


def _columns(lengths, cut_last=False):
    """Episode-major columns of episodes of the given lengths; obs counts rows."""
    total = sum(lengths)
    ends = np.cumsum(lengths) - 1
    terminated = np.zeros(total, bool)
    terminated[ends] = True
    if cut_last:
        terminated[-1] = False
    return {"obs": np.arange(total, dtype=np.float32)[:, None],
            "terminated": terminated, "truncated": np.zeros(total, bool),
            "level_seed": np.repeat(np.arange(len(lengths), dtype=np.int32), lengths)}


def test_first_transitions_is_exact_and_no_target_crosses_an_episode_end():
    from rlkit.data.dataset import first_transitions

    columns = _columns([3, 4, 5])
    for count in range(1, 13):
        kept = first_transitions(columns, count)
        assert len(kept["obs"]) == len(kept["terminated"]) == count
        np.testing.assert_array_equal(kept["obs"][:, 0], np.arange(count))
        ended = kept["terminated"] | kept["truncated"]
        assert ended[-1]  # the last row ends its episode: nothing is read past it
        # Whole episodes keep their own flags; only a cut one is marked truncated.
        cut = count not in (3, 7, 12)
        assert kept["truncated"].sum() == int(cut) and kept["truncated"][-1] == cut
        np.testing.assert_array_equal(kept["terminated"][:-1], columns["terminated"][:count - 1])
        # An n-step target from row i stops at the first end at or after i, inside the rows.
        next_end = np.minimum.accumulate(np.where(ended, np.arange(count), count)[::-1])[::-1]
        assert (next_end < count).all()
    assert not columns["truncated"].any()  # copies: the input is untouched
    with pytest.raises(RlkitError, match="--transitions: asks for 13 transitions, but only 12"):
        first_transitions(columns, 13)


def test_collect_with_transitions_gives_exactly_n_rows():
    from rlkit.collect import collect

    # The chain's episodes last 16 steps: 40 rows are 2 whole episodes and 8 rows of a third.
    dataset = collect("chain", None, "random", None, seed=0, transitions=40)
    t = dataset.transitions
    assert len(t.action) == 40 and dataset.num_episodes == 3
    np.testing.assert_array_equal(np.flatnonzero(t.truncated), [15, 31, 39])
    assert dataset.info.extra["transitions"] == 40 and dataset.level_seed is None
    with pytest.raises(RlkitError, match="--episodes: pass either"):
        collect("chain", None, "random", 4, seed=0, transitions=40)


def test_level_seeds_round_trip_through_a_saved_dataset(tmp_path):
    from rlkit.data.dataset import DatasetError, DatasetInfo, load_dataset, save_dataset
    from rlkit.types import Transition

    n = 5
    transitions = Transition(obs=np.zeros((n, 2), np.float32), action=np.zeros(n, np.int32),
                             reward=np.ones(n, np.float32), terminated=np.eye(n, dtype=bool)[-1],
                             truncated=np.zeros(n, bool), next_obs=np.zeros((n, 2), np.float32))
    info = DatasetInfo("chain", {}, (2,), "float32", 2, "test")
    seeds = np.array([7, 7, 7, 8, 8])
    save_dataset(tmp_path / "d", transitions, info, level_seed=seeds)
    loaded = load_dataset(tmp_path / "d")
    assert (tmp_path / "d" / "level_seed.npy").is_file()
    assert loaded.level_seed.dtype == np.int32
    np.testing.assert_array_equal(loaded.level_seed, seeds)
    assert load_dataset(tmp_path / "d", verify=False).transitions.extras == {}
    save_dataset(tmp_path / "none", transitions, info)
    assert load_dataset(tmp_path / "none").level_seed is None
    with pytest.raises(DatasetError, match=r"level_seed: must be \[N\] = \(5,\)"):
        save_dataset(tmp_path / "bad", transitions, info, level_seed=seeds[:4])


# --------------------------------------------------------------------------------------------
# Import of the paper's layout (gen_dgrl: one .npz per episode, seed and return in the name)
# --------------------------------------------------------------------------------------------


def _write_episode(folder, index, length, level_seed, rng, done=True, name=None):
    """A gen_dgrl episode file: channels-first frames [T + 1, 3, 64, 64]."""
    observations = rng.integers(0, 256, (length + 1, 3, 64, 64), dtype=np.uint8)
    rewards = np.zeros(length, np.float32)
    rewards[-1] = float(index % 3) * 5.0
    dones = np.zeros(length, bool)
    dones[-1] = done
    name = name or f"20230401T120000_{index}_{length}_{level_seed}_{rewards.sum():.2f}.npz"
    np.savez_compressed(folder / name, observations=observations,
                        actions=rng.integers(0, 15, (length, 1)), rewards=rewards[:, None],
                        dones=dones)
    return folder / name, observations


def _gen_dgrl_folder(tmp_path, count=6):
    rng = np.random.default_rng(0)
    folder = tmp_path / "miner" / "expert"
    folder.mkdir(parents=True)
    files = [_write_episode(folder, i, 2 + i, int(rng.integers(0, 200)), rng)
             for i in range(count)]
    return folder, files


def test_import_reads_the_papers_layout(tmp_path):
    from rlkit.data.gen_dgrl import import_gen_dgrl, parse_episode_name

    name = parse_episode_name("/x/20230401T120000_17_312_42_-1.50.npz")
    assert (name.length, name.level_seed, name.episode_return) == (312, 42, -1.5)
    folder, files = _gen_dgrl_folder(tmp_path)
    dataset = import_gen_dgrl(folder, "miner")
    t = dataset.transitions
    assert dataset.info.env_id == "procgen:miner" and dataset.info.env_params["num_levels"] == 200
    assert len(t.action) == sum(2 + i for i in range(6)) and dataset.num_episodes == 6
    assert t.obs.shape[1:] == (64, 64, 3) and t.obs.dtype == np.uint8
    # gen_dgrl's order: highest return first (returns 10, 5, 0 by index % 3), ties by name.
    order = sorted(range(6), key=lambda i: (-(i % 3) * 5.0, str(files[i][0])))
    start = 0
    for i in order:
        path, frames = files[i]
        seed = parse_episode_name(path).level_seed
        rows = slice(start, start + 2 + i)
        np.testing.assert_array_equal(t.obs[rows], frames[:-1].transpose(0, 2, 3, 1))
        np.testing.assert_array_equal(t.next_obs[rows], frames[1:].transpose(0, 2, 3, 1))
        assert (dataset.level_seed[rows] == seed).all()
        assert t.terminated[rows][-1] and not t.terminated[rows][:-1].any()
        start += 2 + i
    assert ((dataset.level_seed >= 0) & (dataset.level_seed <= 199)).all()  # spec 6.5.1
    assert not t.truncated.any()


def test_import_cli_writes_exactly_n_transitions_with_level_seeds(tmp_path, capsys):
    from rlkit.collect import main
    from rlkit.data.dataset import load_dataset

    folder, _ = _gen_dgrl_folder(tmp_path)
    out = tmp_path / "out"
    assert main(["import-gen-dgrl", str(folder), "--game", "miner", "--out", str(out),
                 "--transitions", "9"]) == 0
    dataset = load_dataset(out)
    assert len(dataset.transitions.action) == len(dataset.level_seed) == 9
    assert dataset.transitions.truncated[-1] or dataset.transitions.terminated[-1]
    assert "imported" in capsys.readouterr().out


@pytest.mark.parametrize("make_bad,needle", [
    (lambda f, rng: (f / "episode.npz").write_bytes(b"x"), "is not named like a gen_dgrl"),
    (lambda f, rng: (f / "a_1_3_5_0.00.npz").write_bytes(b"not a zip"),
     "is not a readable .npz file"),
    (lambda f, rng: _write_episode(f, 9, 3, 5, rng, name="a_9_4_5_0.00.npz"),
     "holds 3 steps but its name says 4"),
    (lambda f, rng: _write_episode(f, 9, 3, 5, rng, name="a_9_3_5_7.00.npz"),
     "rewards summing to 0 but its name says 7.00"),
    (lambda f, rng: _write_episode(f, 9, 3, 250, rng), "level 250, outside the training levels "
                                                       "0-199"),
])
def test_bad_gen_dgrl_files_give_one_line_naming_the_file(make_bad, needle, tmp_path, capfd):
    from rlkit.collect import main

    folder, _ = _gen_dgrl_folder(tmp_path, count=2)
    make_bad(folder, np.random.default_rng(1))
    code = main(["import-gen-dgrl", str(folder), "--game", "miner", "--out",
                 str(tmp_path / "out")])
    err = capfd.readouterr().err.strip()
    assert code == 2 and needle in err and len(err.splitlines()) == 1, err
    assert str(folder) in err and not (tmp_path / "out").exists()
