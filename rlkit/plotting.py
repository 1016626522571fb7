"""Learning curves: mean over seeds with a 95% confidence band, per metric, against env steps."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from rlkit.io import atomic_file


def _curve(rows: list[dict[str, str]], column: str,
           x_column: str = "env_steps") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    by_step: dict[int, list[float]] = defaultdict(list)
    for row in rows:
        value = float(row.get(column, "nan"))
        if not math.isnan(value):
            by_step[int(row[x_column])].append(value)
    steps = np.array(sorted(by_step))
    means = np.array([np.mean(by_step[s]) for s in steps])
    # Normal-approximation band: 1.96 standard errors (zero width for one seed).
    half = np.array([1.96 * np.std(by_step[s]) / math.sqrt(len(by_step[s])) for s in steps])
    return steps, means, half


def plot_curves(rows: list[dict[str, str]], path: Path, title: str,
                optimal_return: float | None = None) -> None:
    """Write curves.png: evaluation and training returns (and sub-optimality when known)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Offline runs take no env steps: plot against updates, without training episodes.
    offline = bool(rows) and "updates" in rows[0]
    x_column = "updates" if offline else "env_steps"
    panels = [("eval_return", "evaluation return")]
    if not offline:
        panels.append(("episode_return", "training episode return"))
    if rows and "suboptimality" in rows[0]:
        panels.append(("suboptimality", "sub-optimality (exact)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, (column, label) in zip(axes[0], panels, strict=True):
        steps, means, half = _curve(rows, column, x_column)
        if len(steps):
            ax.plot(steps, means, color="C0")
            ax.fill_between(steps, means - half, means + half, color="C0", alpha=0.25)
        if optimal_return is not None and column != "suboptimality":
            ax.axhline(optimal_return, color="k", linestyle="--", linewidth=1, label="optimal")
            ax.legend(loc="lower right")
        ax.set_xlabel(x_column.replace("_", " "))
        ax.set_title(label)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_file(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=100)
    plt.close(fig)
