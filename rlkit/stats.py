"""Aggregates over seeds: mean, interquartile mean and a bootstrap 95% confidence interval
(the reporting of Agarwal et al. 2021, "Deep RL at the edge of the statistical precipice").

The one interval method of rlkit: summary.json's `final_return_ci95` and curves.png's bands are
both `bootstrap_ci`. One seed has no interval (None), not a zero-width one.
"""

from __future__ import annotations

import numpy as np


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
