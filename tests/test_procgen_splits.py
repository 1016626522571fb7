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
