"""Aggregation across games (rlkit.stats) and the study figure (rlkit.plotting), by hand."""

import numpy as np
import pytest

from rlkit.errors import RlkitError
from rlkit.stats import aggregate_across_games, gap_across_games, iqm, stratified_bootstrap_ci


def test_iqm_matches_trimmed_mean_by_hand():
    # 8 values: the middle four after sorting are 2, 3, 4, 5.
    assert iqm([7, 0, 1, 2, 3, 4, 5, 100]) == pytest.approx(3.5)


def test_pooled_iqm_and_mean_over_games_and_runs():
    scores = {"coinrun": [0.0, 0.2, 0.4, 0.6], "maze": [1.0, 0.8, 0.9, 10.0]}
    out = aggregate_across_games(scores)
    # pooled sorted: 0, .2, .4, .6, .8, .9, 1, 10 -> middle four .4, .6, .8, .9
    assert out["iqm"] == pytest.approx((0.4 + 0.6 + 0.8 + 0.9) / 4)
    assert out["mean"] == pytest.approx(13.9 / 8)
    assert (out["games"], out["runs"]) == (2, 8)
    low, high = out["ci95"]
    assert low <= out["iqm"] <= high


def test_stratified_bootstrap_resamples_within_games():
    # Each game's runs are all equal: every within-game resample gives the same pool, so the
    # interval has zero width. An unstratified bootstrap over the pool would not.
    scores = {"a": [0.0, 0.0, 0.0], "b": [1.0, 1.0, 1.0]}
    low, high = stratified_bootstrap_ci(scores)
    assert low == high == pytest.approx(iqm([0, 0, 0, 1, 1, 1]))
    assert stratified_bootstrap_ci({"a": [0.3], "b": [0.5]}) is None
    wide = stratified_bootstrap_ci({"a": [0.0, 1.0, 0.0, 1.0], "b": [0.0, 1.0, 0.5, 0.5]})
    assert wide[0] < wide[1]


def test_gap_is_paired_by_run():
    train = {"a": [1.0, 0.5], "b": [0.8, 0.8]}
    test = {"a": [0.5, 0.5], "b": [0.2, 0.4]}
    gap = gap_across_games(train, test)
    assert gap["mean"] == pytest.approx(np.mean([0.5, 0.0, 0.6, 0.4]))
    with pytest.raises(RlkitError, match="'a' has 2 train runs but 1 test runs"):
        gap_across_games(train, {"a": [0.5], "b": [0.2, 0.4]})
    with pytest.raises(RlkitError, match="differ from test games"):
        gap_across_games(train, {"a": [0.5, 0.5]})


def test_bad_scores_name_the_game():
    with pytest.raises(RlkitError, match="game 'maze' has no runs"):
        aggregate_across_games({"maze": []})
    with pytest.raises(RlkitError, match="game 'maze' has a non-finite score"):
        aggregate_across_games({"maze": [0.1, float("nan")]})
    with pytest.raises(RlkitError, match="no games given"):
        aggregate_across_games({})


def test_generalisation_plot_is_written(tmp_path):
    from rlkit.plotting import plot_generalisation

    agg = aggregate_across_games({"a": [0.2, 0.4], "b": [0.6, 0.5]})
    results = {"ppo": {"train": agg, "test": agg, "gap": agg}, "bc": {"train": agg}}
    path = tmp_path / "study.png"
    plot_generalisation(results, path, "tiny")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
