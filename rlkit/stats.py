"""Aggregates over seeds: mean, interquartile mean and a bootstrap 95% confidence interval
(the reporting of Agarwal et al. 2021, "Deep RL at the edge of the statistical precipice")."""

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
                 seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the mean (deterministic: fixed seed)."""
    values = np.asarray(values, np.float64)
    if len(values) == 1:
        return float(values[0]), float(values[0])
    rng = np.random.default_rng(seed)
    means = rng.choice(values, size=(resamples, len(values)), replace=True).mean(axis=1)
    alpha = (1 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def aggregate(values: np.ndarray) -> dict:
    """Mean, IQM, 95% CI and standard deviation of per-seed values."""
    values = np.asarray(values, np.float64)
    return {
        "mean": float(values.mean()),
        "iqm": iqm(values),
        "ci95": list(bootstrap_ci(values)),
        "std": float(values.std()),
    }
