"""Aggregates over seeds: mean, interquartile mean and a bootstrap 95% confidence interval
(the reporting of Agarwal et al. 2021, "Deep RL at the edge of the statistical precipice").

The one interval method of rlkit: summary.json's `final_return_ci95` and curves.png's bands are
both `bootstrap_ci`. One seed has no interval (None), not a zero-width one.

Across games (the procgen generalisation study): `aggregate_across_games` pools every (game, run)
score into one IQM and puts a stratified-bootstrap interval on it (runs resampled within each
game, as `rliable` does, Agarwal et al. 2021 section 4); `gap_across_games` does the same for the
train-minus-test gap, paired by run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from rlkit.errors import RlkitError


def iqm(values: np.ndarray) -> float:
    """Interquartile mean: the mean of the middle 50% of the sorted values."""
    values = np.sort(np.asarray(values, np.float64))
    n = len(values)
    if n < 4:
        return float(values.mean())
    lo, hi = int(np.floor(0.25 * n)), int(np.ceil(0.75 * n))
    return float(values[lo:hi].mean())


def bootstrap_ci(values: np.ndarray, level: float = 0.95, resamples: int = 2000,
                 seed: int = 0) -> tuple[float, float] | None:
    """Percentile-bootstrap confidence interval of the mean (deterministic: fixed seed).

    Args:
        values: [N] per-seed values.

    Returns:
        (low, high), or None for fewer than two values (one seed says nothing about spread).
    """
    values = np.asarray(values, np.float64)
    if len(values) < 2:
        return None
    rng = np.random.default_rng(seed)
    means = rng.choice(values, size=(resamples, len(values)), replace=True).mean(axis=1)
    alpha = (1 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def aggregate(values: np.ndarray) -> dict:
    """Mean, IQM, 95% CI (None for one seed) and standard deviation of per-seed values."""
    values = np.asarray(values, np.float64)
    ci = bootstrap_ci(values)
    return {
        "mean": float(values.mean()),
        "iqm": iqm(values),
        "ci95": None if ci is None else list(ci),
        "std": float(values.std()),
    }


def _per_game(scores: Mapping[str, Sequence[float]], what: str) -> dict[str, np.ndarray]:
    """Scores as {game: [R_g] float64 array}, refusing empty games and non-finite values."""
    if not scores:
        raise RlkitError(f"{what}: no games given; pass {{game: per-run scores}}.")
    arrays = {}
    for game, values in scores.items():
        values = np.asarray(values, np.float64).reshape(-1)
        if values.size == 0:
            raise RlkitError(f"{what}: game {game!r} has no runs; drop it or add its runs.")
        if not np.all(np.isfinite(values)):
            raise RlkitError(f"{what}: game {game!r} has a non-finite score {values.tolist()}.")
        arrays[game] = values
    return arrays


def stratified_bootstrap_ci(scores: Mapping[str, Sequence[float]], level: float = 0.95,
                            resamples: int = 2000, seed: int = 0) -> tuple[float, float] | None:
    """Percentile interval of the pooled IQM, resampling runs with replacement within each game.

    Args:
        scores: {game: [R_g] per-run scores} (normalised returns, or gaps); games may have
            different numbers of runs.

    Returns:
        (low, high); None when no game has two runs (nothing to resample).

    Source: the stratified bootstrap of Agarwal et al. (2021), "Deep RL at the edge of the
    statistical precipice", section 4 (rliable's `StratifiedBootstrap`).
    """
    arrays = _per_game(scores, "stratified_bootstrap_ci")
    if all(len(values) < 2 for values in arrays.values()):
        return None
    rng = np.random.default_rng(seed)
    draws = [values[rng.integers(0, len(values), size=(resamples, len(values)))]
             for values in arrays.values()]                       # each [B, R_g]
    pooled = np.concatenate(draws, axis=1)                        # [B, sum R_g]
    iqms = np.array([iqm(row) for row in pooled])
    alpha = (1 - level) / 2
    return float(np.quantile(iqms, alpha)), float(np.quantile(iqms, 1 - alpha))


def aggregate_across_games(scores: Mapping[str, Sequence[float]]) -> dict:
    """The IQM over all (game, run) scores with its stratified-bootstrap 95% CI, and the mean.

    Args:
        scores: {game: [R_g] per-run scores}, normalised per game so games are comparable.

    Returns:
        {"iqm", "ci95" ([low, high] or None), "mean", "games", "runs"}.
    """
    arrays = _per_game(scores, "aggregate_across_games")
    pooled = np.concatenate(list(arrays.values()))
    ci = stratified_bootstrap_ci(arrays)
    return {"iqm": iqm(pooled), "ci95": None if ci is None else list(ci),
            "mean": float(pooled.mean()), "games": len(arrays), "runs": int(pooled.size)}


def gap_across_games(train: Mapping[str, Sequence[float]],
                     test: Mapping[str, Sequence[float]]) -> dict:
    """`aggregate_across_games` of the train-minus-test gap, paired by run within each game.

    Raises:
        RlkitError: when the two sides name different games or a game's run counts differ.
    """
    train_arrays = _per_game(train, "gap_across_games (train)")
    test_arrays = _per_game(test, "gap_across_games (test)")
    if set(train_arrays) != set(test_arrays):
        raise RlkitError(f"gap_across_games: train games {sorted(train_arrays)} differ from test "
                         f"games {sorted(test_arrays)}; give both sides the same games.")
    gaps = {}
    for game, values in train_arrays.items():
        if len(values) != len(test_arrays[game]):
            raise RlkitError(f"gap_across_games: game {game!r} has {len(values)} train runs but "
                             f"{len(test_arrays[game])} test runs; pair them by run.")
        gaps[game] = values - test_arrays[game]
    return aggregate_across_games(gaps)
