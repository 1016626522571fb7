"""The run loop between compiled chunks: logging, evaluation, checkpoints, progress, summary.

A run directory (ARCHITECTURE.md section 6) holds:

    config.yaml     the resolved configuration (re-runnable with --config, resumable with --resume)
    metrics.csv     one row per chunk and seed (deterministic: no wall-clock columns)
    events.*        TensorBoard scalars (means over seeds)
    summary.json    final figures per seed and aggregated
    curves.png      learning curves with 95% confidence bands over seeds
    checkpoints/    orbax checkpoints of the whole training carry

Resuming restores the newest checkpoint, cuts `metrics.csv` back to it and runs the remaining
chunks; since every chunk is a pure function of the carry, the final numbers equal those of an
uninterrupted run.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np

from rlkit.checkpoint import Checkpointer
from rlkit.io import atomic_file, write_text
from rlkit.loops.common import Trainer
from rlkit.stats import aggregate


@dataclass
class RunResult:
    """What a finished run reports (also written to summary.json)."""

    summary: dict[str, Any]
    run_dir: Path
    carry: Any = field(repr=False, default=None)


def _chunk_rows(chunk: int, iterations_per_chunk: int, steps_per_iteration: int,
                metrics: dict[str, np.ndarray], eval_returns: np.ndarray,
                suboptimality: np.ndarray | None) -> list[dict[str, Any]]:
    """One metrics.csv row per seed for a finished chunk; metrics are [S, iterations]."""
    num_seeds = eval_returns.shape[0]
    iteration = (chunk + 1) * iterations_per_chunk
    # Offline trainers run no training episodes: zero episodes, NaN returns.
    zeros = np.zeros((num_seeds, 1))
    finished = metrics.get("episodes", zeros).sum(axis=1)
    returns_sum = metrics.get("episode_return_sum", zeros).sum(axis=1)
    rows = []
    for seed in range(num_seeds):
        row = {
            "seed": seed,
            "chunk": chunk,
            "iteration": iteration,
            "env_steps": iteration * steps_per_iteration,
            **({} if steps_per_iteration else {"updates": iteration}),
            "episode_return": returns_sum[seed] / finished[seed] if finished[seed] else math.nan,
            "episodes": int(finished[seed]),
            "eval_return": float(eval_returns[seed]),
        }
        if suboptimality is not None:
            row["suboptimality"] = float(suboptimality[seed])
        for name in sorted(metrics):
            if name in ("episodes", "episode_return_sum"):
                continue
            values = metrics[name][seed].astype(np.float64)
            column = f"agent_{name}" if name in row else name  # never shadow the run's columns
            row[column] = float(np.nanmean(values)) if np.isfinite(values).any() else math.nan
        rows.append(row)
    return rows


def _nanmean(values: list[float]) -> float:
    """Mean of the finite values, NaN (without numpy's warning) when there are none."""
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def _format(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return "nan" if math.isnan(value) else repr(value)
    return str(int(value)) if isinstance(value, np.integer) else str(value)


class MetricsLog:
    """metrics.csv, appended one chunk at a time and flushed, so a crash loses at most a chunk."""

    def __init__(self, path: Path):
        self.path = path
        self.columns: list[str] | None = None
        if path.exists():
            with path.open() as f:
                header = f.readline().strip()
            self.columns = header.split(",") if header else None

    def truncate_after(self, chunk: int) -> None:
        """Drop rows of chunks later than `chunk` (those after the checkpoint being resumed)."""
        if not self.path.exists():
            return
        with self.path.open() as f:
            rows = list(csv.reader(f))
        if not rows:
            return
        chunk_col = rows[0].index("chunk")
        kept = [rows[0]] + [r for r in rows[1:] if int(r[chunk_col]) <= chunk]
        with atomic_file(self.path) as f:  # "\n" endings, as `append` writes
            csv.writer(f, lineterminator="\n").writerows(kept)

    def append(self, rows: list[dict[str, Any]]) -> None:
        if self.columns is None:
            self.columns = list(rows[0])
            with self.path.open("w") as f:
                f.write(",".join(self.columns) + "\n")
        with self.path.open("a") as f:
            for row in rows:
                f.write(",".join(_format(row.get(c, math.nan)) for c in self.columns) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def read(self) -> list[dict[str, str]]:
        with self.path.open() as f:
            return list(csv.DictReader(f))


def episodes_to_optimal(rows: list[dict[str, str]], num_seeds: int,
                        optimal_return: float) -> list[int | None]:
    """Per seed, the training episodes finished before the first evaluation at which the
    policy was exactly optimal (None if it never was).

    Resolution is one chunk: the count is of the episodes finished by the end of that chunk.
    "Optimal" allows float32 rounding of the exact evaluation: 1e-4 * max(1, |J*|). Drivers that
    evaluate every iteration (`rlkit.loops.rounds`) log an `episodes_to_optimal` column with
    one-iteration resolution, which is used instead.
    """
    if rows and "episodes_to_optimal" in rows[0]:
        last = {int(r["seed"]): float(r["episodes_to_optimal"]) for r in
                sorted(rows, key=lambda r: int(r["chunk"]))}
        return [None if math.isnan(last.get(seed, math.nan)) else int(last[seed])
                for seed in range(num_seeds)]
    tolerance = 1e-4 * max(1.0, abs(optimal_return))
    result: list[int | None] = []
    for seed in range(num_seeds):
        episodes, found = 0, None
        for row in sorted((r for r in rows if int(r["seed"]) == seed),
                          key=lambda r: int(r["chunk"])):
            episodes += int(float(row["episodes"]))
            if float(row["suboptimality"]) <= tolerance:
                found = episodes
                break
        result.append(found)
    return result


def run_training(
    trainer: Trainer,
    *,
    num_chunks: int,
    num_seeds: int,
    seed: int,
    run_dir: Path,
    header: dict[str, Any],
    resume: bool = False,
    checkpoint_every: int = 1,
    optimal_return: float | None = None,
    show_progress: bool = True,
    summary_extras: dict[str, Any] | None = None,
    stop_after_chunks: int | None = None,
) -> RunResult:
    """Run `num_chunks` compiled chunks with logging, evaluation and checkpoints.

    Args:
        trainer: the driver's compiled functions.
        num_chunks: chunks in the whole run.
        num_seeds: independent seeds trained side by side (vmapped).
        seed: the base seed; seed i uses `jax.random.split(jax.random.key(seed), num_seeds)[i]`.
        run_dir: the run directory (created).
        header: agent / env names and anything else summary.json should start with.
        resume: continue from the newest checkpoint in run_dir.
        checkpoint_every: save every this many chunks (and always after the last).
        optimal_return: the exact optimal return, where the env has a model.
        show_progress: draw a rich progress bar.
        summary_extras: more fields for summary.json.
        stop_after_chunks: stop, checkpointed, after this many chunks of this call.

    Returns:
        A `RunResult` with the summary and the final carry.
    """
    from tensorboardX import SummaryWriter

    from rlkit.plotting import plot_curves
    from rlkit.progress import Progress

    run_dir.mkdir(parents=True, exist_ok=True)
    checkpointer = Checkpointer(run_dir / "checkpoints")
    log = MetricsLog(run_dir / "metrics.csv")
    start_wall = time.perf_counter()

    carry = trainer.init(jax.random.split(jax.random.key(seed), num_seeds))
    first_chunk = 0
    if resume:
        step, carry, skipped = checkpointer.restore_newest_readable(carry, set_aside=True)
        for line in skipped:
            print(f"warning: {line}; resuming from an older checkpoint", file=sys.stderr)
        if step is not None:
            first_chunk = step + 1
            log.truncate_after(step)
        else:
            log.truncate_after(-1)
    elif log.path.exists():
        log.path.unlink()
        log = MetricsLog(run_dir / "metrics.csv")

    # Compilation happens inside the first chunk's call; jax reports its stages' durations,
    # which are summed here and taken out of the training time. (Ahead-of-time compilation,
    # `run.lower(carry).compile()`, would time it directly, but calling such executables
    # deadlocks intermittently on jaxlib 0.10.2's CPU backend; see benchmarks/README.md.)
    compile_times: list[float] = []

    def on_duration(event: str, duration: float, **_) -> None:
        if event.startswith("/jax/core/compile/"):
            compile_times.append(duration)

    run = trainer.run

    steps_per_chunk = trainer.iterations_per_chunk * trainer.steps_per_iteration
    # Offline trainers take no env steps: progress and throughput count updates instead.
    offline = trainer.steps_per_iteration == 0
    units_per_chunk = trainer.iterations_per_chunk if offline else steps_per_chunk
    train_seconds = 0.0
    eval_returns = np.full((num_seeds,), np.nan)
    last_chunk = num_chunks - 1
    if stop_after_chunks is not None:
        last_chunk = min(last_chunk, first_chunk + stop_after_chunks - 1)
    writer = SummaryWriter(str(run_dir))
    jax.monitoring.register_event_duration_secs_listener(on_duration)
    try:  # an error or Ctrl-C still closes the writer and finishes the checkpoint in flight
        with Progress(total=num_chunks * units_per_chunk, enabled=show_progress,
                      completed=first_chunk * units_per_chunk,
                      unit="updates" if offline else "env steps") as progress:
            for chunk in range(first_chunk, last_chunk + 1):
                chunk_start = time.perf_counter()
                compiled_before = sum(compile_times)
                carry, metrics = run(carry)
                metrics = jax.tree.map(np.asarray, jax.device_get(metrics))
                train_seconds += (time.perf_counter() - chunk_start
                                  - (sum(compile_times) - compiled_before))
                eval_returns = np.asarray(jax.device_get(trainer.evaluate(carry)), np.float64)
                suboptimality = None if optimal_return is None else optimal_return - eval_returns
                rows = _chunk_rows(chunk, trainer.iterations_per_chunk, trainer.steps_per_iteration,
                                   metrics, eval_returns, suboptimality)
                log.append(rows)
                env_steps = rows[0]["updates" if offline else "env_steps"]
                for name in rows[0]:
                    if name in ("seed", "chunk", "iteration", "env_steps", "updates"):
                        continue
                    value = np.nanmean([r[name] for r in rows]) if any(
                        np.isfinite(r[name]) for r in rows) else math.nan
                    if np.isfinite(value):
                        writer.add_scalar(name, value, env_steps)
                writer.flush()
                if (chunk + 1) % checkpoint_every == 0 or chunk == last_chunk:
                    checkpointer.save(chunk, carry)
                progress.advance(units_per_chunk, {
                    "return": _nanmean([r["episode_return"] for r in rows]),
                    "eval": float(np.mean(eval_returns)),
                })
        if first_chunk > last_chunk:  # resumed a finished run: report its final evaluation
            eval_returns = np.asarray(jax.device_get(trainer.evaluate(carry)), np.float64)
    finally:
        jax.monitoring.unregister_event_duration_listener(on_duration)
        writer.close()
        checkpointer.close()

    rows = log.read()
    total_steps = (last_chunk + 1) * steps_per_chunk
    final = aggregate(eval_returns)
    summary: dict[str, Any] = dict(header)
    summary.update({
        "seeds": num_seeds,
        "env_steps": total_steps,
        "wall_seconds": time.perf_counter() - start_wall,
        "compile_seconds": sum(compile_times),
        "train_seconds": train_seconds,
        # Throughput of the chunks run in this process (all seeds), compilation excluded.
        "steps_per_second": ((last_chunk + 1 - first_chunk) * steps_per_chunk * num_seeds
                             / max(train_seconds, 1e-9)),
        **({"updates": (last_chunk + 1) * trainer.iterations_per_chunk,
            "updates_per_second": ((last_chunk + 1 - first_chunk) * units_per_chunk * num_seeds
                                   / max(train_seconds, 1e-9))} if offline else {}),
        "final_return": final["mean"],
        "final_return_iqm": final["iqm"],
        "final_return_ci95": final["ci95"],
        "per_seed": [float(x) for x in eval_returns],
        "device": jax.devices()[0].device_kind,
        "resumed_from_chunk": first_chunk if resume else None,
        "last_chunk": last_chunk,
        "stopped_early": last_chunk < num_chunks - 1,
    })
    if optimal_return is not None:
        summary["optimal_return"] = float(optimal_return)
        summary["suboptimality"] = float(optimal_return - final["mean"])
        summary["per_seed_suboptimality"] = [float(optimal_return - x) for x in eval_returns]
        if not offline:
            per_seed = episodes_to_optimal(rows, num_seeds, optimal_return)
            summary["per_seed_episodes_to_optimal"] = per_seed
            solved = [x for x in per_seed if x is not None]
            summary["episodes_to_optimal"] = (float(np.mean(solved)) if len(solved) == num_seeds
                                              else None)
    summary.update(summary_extras or {})
    write_text(run_dir / "summary.json", json.dumps(summary, indent=2, default=float) + "\n")
    plot_curves(rows, run_dir / "curves.png", title=f"{header.get('agent')} on {header.get('env')}",
                optimal_return=optimal_return)
    return RunResult(summary=summary, run_dir=run_dir, carry=carry)
