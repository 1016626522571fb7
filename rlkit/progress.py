"""A rich progress bar for training runs: env steps, steps per second, ETA and key metrics."""

from __future__ import annotations

import math

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress


class Progress:
    """Context manager around rich's progress bar; a no-op when disabled (tests, CI logs)."""

    def __init__(self, total: int, enabled: bool = True, completed: int = 0,
                 description: str = "training", unit: str = "env steps"):
        self.enabled = enabled
        self.unit = unit
        self.total = total
        self.completed = completed
        self.description = description
        self._progress = None

    def __enter__(self) -> Progress:
        if self.enabled:
            console = Console()
            if not console.is_terminal:  # a log file: rich's 80 columns cut the line short
                console = Console(width=160)
            self._progress = RichProgress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn(self.unit),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[metrics]}"),
                console=console,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task(
                self.description + " (compiling...)", total=self.total,
                completed=self.completed, metrics="")
        return self

    def advance(self, steps: int, metrics: dict[str, float], done: bool = True) -> None:
        """Count `steps` more and show `metrics` (if any); `done=False` keeps "(compiling...)"
        (a resumed run's chunks done before, counted before its first chunk has run)."""
        if not self.enabled:
            return
        fields = {"description": self.description} if done else {}
        if metrics:  # none: keep showing the last chunk's
            fields["metrics"] = "  ".join(f"{k} {v:.3g}" for k, v in metrics.items()
                                          if not math.isnan(v))
        self._progress.update(self._task, advance=steps, **fields)

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
