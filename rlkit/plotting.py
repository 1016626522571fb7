"""Learning curves: mean over seeds with a 95% bootstrap confidence band, per metric, against
the run's unit (env steps, or updates for offline runs).

The band is `rlkit.stats.bootstrap_ci` at every logged step, the interval summary.json reports
for the final return; one seed has no interval, so its curve has no band.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from rlkit.io import atomic_file
from rlkit.loops.common import ENV_STEPS, Unit
from rlkit.stats import bootstrap_ci


def format_error(path: Path) -> str | None:
    """Why matplotlib cannot write a figure to `path` (its extension names no format it
    supports), or None when it can: checked before a long run, not after it."""
    import matplotlib.figure

    formats = matplotlib.figure.Figure().canvas.get_supported_filetypes()
    if Path(path).suffix.lstrip(".").lower() in formats:
        return None
    return (f"matplotlib cannot write {Path(path).suffix or 'a file without an extension'}; "
            f"use one of .{', .'.join(sorted(formats))}")


def curve(rows: list[dict[str, str]], column: str, x_column: str = "env_steps"
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The mean over seeds of `column` at each `x_column` value, with its 95% bootstrap CI.

    Returns:
        (x, mean, low, high), each [T]; `low` and `high` are NaN where fewer than two seeds
        have a finite value (no interval).
    """
    by_x: dict[int, list[float]] = defaultdict(list)
    for row in rows:
        value = float(row.get(column, "nan"))
        if not math.isnan(value):
            by_x[int(row[x_column])].append(value)
    x = np.array(sorted(by_x))
    means = np.array([np.mean(by_x[s]) for s in x])
    intervals = [bootstrap_ci(by_x[s]) for s in x]
    low = np.array([math.nan if ci is None else ci[0] for ci in intervals])
    high = np.array([math.nan if ci is None else ci[1] for ci in intervals])
    return x, means, low, high


def draw_curves(rows: list[dict[str, str]], title: str, optimal_return: float | None = None,
                unit: Unit = ENV_STEPS, panels: list[tuple[str, str]] | None = None):
    """The curves.png figure: evaluation and training returns (and sub-optimality when known),
    or the `(column, title)` panels given (a language-model run's true reward, reverse KL).

    Returns:
        The matplotlib figure (the caller saves and closes it).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import EngFormatter, MaxNLocator

    if panels is None:
        panels = [("eval_return", "evaluation return")]
        if unit == ENV_STEPS:  # runs in other units (offline updates) have no training episodes
            panels.append(("episode_return", "training episode return"))
        if rows and "suboptimality" in rows[0]:
            panels.append(("suboptimality", "sub-optimality (exact)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, (column, label) in zip(axes[0], panels, strict=True):
        x, means, low, high = curve(rows, column, unit.column)
        if len(x):
            ax.plot(x, means, color="C0")
            if np.isfinite(low).any():
                ax.fill_between(x, low, high, color="C0", alpha=0.25)
        if optimal_return is not None and column != "suboptimality":
            ax.axhline(optimal_return, color="k", linestyle="--", linewidth=1, label="optimal")
            ax.legend(loc="lower right")
        # 100k, 1.5M: short labels, at most 5, so they never run into each other.
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))
        ax.set_xlabel(unit.label)
        ax.set_title(label)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_curves(rows: list[dict[str, str]], path: Path, title: str,
                optimal_return: float | None = None, unit: Unit = ENV_STEPS,
                panels: list[tuple[str, str]] | None = None) -> None:
    """Write curves.png (see `draw_curves`) atomically (`rlkit.io.atomic_file`)."""
    import matplotlib.pyplot as plt

    fig = draw_curves(rows, title, optimal_return, unit, panels)
    with atomic_file(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=100)
    plt.close(fig)


def plot_generalisation(results: dict[str, dict[str, dict]], path: Path, title: str,
                        splits: tuple[str, ...] = ("train", "test")) -> None:
    """The study figure of the procgen generalisation protocol, in the style of Mediratta et al.
    (2024), Fig. 2: per method, the IQM normalised return on each level split as bars with their
    95% stratified-bootstrap interval, and the train-minus-test gap beside them.

    Args:
        results: {method: {split: aggregate, ..., "gap": aggregate}}, each aggregate the dict of
            `rlkit.stats.aggregate_across_games` ("iqm", "ci95"); a missing split is left blank.
        path: the PNG to write (atomically).
        splits: the splits drawn side by side, in this order.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(results)
    fig, (ax_splits, ax_gap) = plt.subplots(
        1, 2, figsize=(4 + 1.2 * len(methods) * len(splits) / 2 + 3, 3.8),
        gridspec_kw={"width_ratios": [2, 1]})
    width = 0.8 / len(splits)
    for index, split in enumerate(splits):
        _bars(ax_splits, [results[m].get(split) for m in methods],
              np.arange(len(methods)) + (index - (len(splits) - 1) / 2) * width, width,
              f"C{index}", split)
    _bars(ax_gap, [results[m].get("gap") for m in methods], np.arange(len(methods)), 0.6, "C3",
          "train - test")
    for ax, label in ((ax_splits, "IQM normalised return"), (ax_gap, "IQM train-test gap")):
        ax.set_xticks(np.arange(len(methods)), methods, rotation=30, ha="right")
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
        ax.axhline(0, color="k", linewidth=0.8)
    ax_splits.legend(loc="best")
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_file(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=100)
    plt.close(fig)


def _bars(ax, aggregates: list[dict | None], x: np.ndarray, width: float, color: str,
          label: str) -> None:
    """Bars of each aggregate's IQM with its CI as an error bar (NaN where absent)."""
    heights = np.array([math.nan if a is None else a["iqm"] for a in aggregates])
    low = np.array([math.nan if a is None or a.get("ci95") is None else a["ci95"][0]
                    for a in aggregates])
    high = np.array([math.nan if a is None or a.get("ci95") is None else a["ci95"][1]
                     for a in aggregates])
    errors = np.nan_to_num(np.stack([heights - low, high - heights]))
    ax.bar(x, np.nan_to_num(heights), width, yerr=errors, capsize=3, color=color, label=label)
