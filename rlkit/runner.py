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
uninterrupted run. A chunk whose parameters are no longer finite stops the run (`diverged` in
summary.json) without being checkpointed, so the last checkpoint is the last finite state.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from rlkit.checkpoint import Checkpointer
from rlkit.errors import RlkitError, raise_pending_interrupt
from rlkit.io import atomic_file, write_text
from rlkit.loops.common import ENV_STEPS, Trainer, Unit
from rlkit.stats import aggregate

if TYPE_CHECKING:
    from rlkit.progress import Progress


@dataclass
class RunResult:
    """What a finished run reports (also written to summary.json)."""

    summary: dict[str, Any]
    run_dir: Path
    carry: Any = field(repr=False, default=None)


def _chunk_rows(chunk: int, trainer: Trainer, metrics: dict[str, np.ndarray],
                eval_returns: np.ndarray, suboptimality: np.ndarray | None,
                eval_figures: dict[str, np.ndarray] | None = None) -> list[dict[str, Any]]:
    """One metrics.csv row per seed for a finished chunk; metrics are [S, iterations],
    `eval_figures` more evaluated figures [S] each (procgen's level splits), logged after
    eval_return."""
    num_seeds = eval_returns.shape[0]
    iteration = (chunk + 1) * trainer.iterations_per_chunk
    # Offline trainers run no training episodes: zero episodes, NaN returns.
    zeros = np.zeros((num_seeds, 1))
    finished = metrics.get("episodes", zeros).sum(axis=1)
    returns_sum = metrics.get("episode_return_sum", zeros).sum(axis=1)
    # The best episode of the chunk (-inf from iterations where none ended; NaN with none).
    returns_max = metrics.get("episode_return_max", np.full_like(zeros, -np.inf)).max(axis=1)
    rows = []
    for seed in range(num_seeds):
        row = {
            "seed": seed,
            "chunk": chunk,
            "iteration": iteration,
            "env_steps": iteration * trainer.steps_per_iteration,
        }
        if trainer.unit != ENV_STEPS:  # a run in another unit logs it beside env steps
            row[trainer.unit.column] = iteration * trainer.units_per_iteration
        if trainer.episodic:
            row.update({
                "episode_return": (returns_sum[seed] / finished[seed] if finished[seed]
                                   else math.nan),
                "episode_return_max": float(returns_max[seed]) if finished[seed] else math.nan,
                "episodes": int(finished[seed]),
                "eval_return": float(eval_returns[seed]),
            })
            row.update({name: float(values[seed]) for name, values in
                        (eval_figures or {}).items()})
        if suboptimality is not None:
            row["suboptimality"] = float(suboptimality[seed])
        for name in sorted(metrics):
            if name in ("episodes", "episode_return_sum", "episode_return_max"):
                continue
            values = metrics[name][seed].astype(np.float64)
            column = f"agent_{name}" if name in row else name  # never shadow the run's columns
            row[column] = float(np.nanmean(values)) if np.isfinite(values).any() else math.nan
        rows.append(row)
    return rows


COUNTER_COLUMNS = ("seed", "chunk", "iteration", "env_steps")


def _nanmean(values: list[float]) -> float:
    """Mean of the finite values, NaN (without numpy's warning) when there are none."""
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def _format(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return "nan" if math.isnan(value) else repr(value)
    return str(int(value)) if isinstance(value, np.integer) else str(value)


def _csv_writer(f):
    # One line ending everywhere: a resumed file stays byte-identical to an uninterrupted one.
    return csv.writer(f, lineterminator="\n")


class MetricsLog:
    """metrics.csv, appended one chunk at a time and flushed, so a crash loses at most a chunk."""

    def __init__(self, path: Path):
        self.path = path
        self.columns: list[str] | None = None
        if path.exists():
            header = self._parsed(lambda f: next(csv.reader(f), None))
            self.columns = header or None

    def _parsed(self, parse):
        """`parse(file)` of metrics.csv; a file that is not CSV text is one `RlkitError`."""
        try:
            with self.path.open(newline="") as f:
                return parse(f)
        except (UnicodeDecodeError, csv.Error) as error:
            raise RlkitError(
                f"{self.path}: is not the CSV text rlkit writes ({error}); restore it, or start "
                f"the run again with --overwrite --run-dir {self.path.parent}") from None

    def read(self) -> list[dict[str, str]]:
        if not self.path.exists():
            return []
        return self._parsed(lambda f: list(csv.DictReader(f)))

    def chunks(self) -> set[int]:
        """The chunks whose rows are all complete: a row cut short (a file truncated by a full
        disk or by hand) leaves its chunk out, so resuming refuses rather than keep it."""
        rows = self.read()
        if not rows:
            return set()
        cut_last = not self.path.read_bytes().endswith(b"\n")
        complete: dict[int, bool] = {}
        for i, row in enumerate(rows):
            whole = (None not in row and all(value not in (None, "") for value in row.values())
                     and not (cut_last and i == len(rows) - 1))
            try:
                chunk = int(row["chunk"])
            except (TypeError, ValueError):
                continue
            complete[chunk] = complete.get(chunk, True) and whole
        return {chunk for chunk, whole in complete.items() if whole}

    def truncate_after(self, chunk: int) -> None:
        """Drop rows of chunks later than `chunk` (those after the checkpoint being resumed)."""
        if self.columns is None:
            return
        kept = [row for row in self.read() if int(row["chunk"]) <= chunk]
        with atomic_file(self.path) as f:
            writer = _csv_writer(f)
            writer.writerow(self.columns)
            writer.writerows([row[c] for c in self.columns] for row in kept)

    def append(self, rows: list[dict[str, Any]]) -> None:
        if self.columns is None:
            self.columns = list(rows[0])
            with self.path.open("w", newline="") as f:
                _csv_writer(f).writerow(self.columns)
        with self.path.open("a", newline="") as f:
            _csv_writer(f).writerows(
                [_format(row.get(c, math.nan)) for c in self.columns] for row in rows)
            f.flush()
            os.fsync(f.fileno())


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


def write_json_atomic(path: Path, data: dict) -> None:
    """Write `data` as indented JSON through `rlkit.io.write_text` (atomic)."""
    write_text(path, json.dumps(data, indent=2, default=float) + "\n")


def json_safe(value: Any) -> Any:
    """`value` with every non-finite float as None (JSON has no NaN or infinity)."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def non_finite_seeds(agent_state: Any, metrics: dict[str, np.ndarray] | None = None
                     ) -> list[int]:
    """The seeds that diverged: a NaN or infinity in their agent state (params, optimiser
    state, ...), or an infinite loss.

    A NaN loss alone is not divergence: replay agents report NaN metrics on iterations without
    an update (`nan_metrics_like`); a NaN that came from the update reaches the parameters.

    Args:
        agent_state: a pytree whose leaves have a leading seed axis [S, ...].
        metrics: the chunk's metrics, [S, iterations] each; those named `*loss*` are checked.
    """
    bad: np.ndarray | None = None
    leaves = [np.asarray(jax.device_get(leaf)) for leaf in jax.tree.leaves(agent_state)
              if jnp.issubdtype(leaf.dtype, jnp.floating)]
    flags = [~np.isfinite(leaf.reshape(leaf.shape[0], -1)).all(axis=1) for leaf in leaves]
    flags += [np.isinf(np.asarray(values, np.float64).reshape(len(values), -1)).any(axis=1)
              for name, values in (metrics or {}).items() if "loss" in name]
    for flag in flags:
        bad = flag if bad is None else bad | flag
    return [] if bad is None else [int(s) for s in np.flatnonzero(bad)]


class CompileTimer:
    """Sums the seconds JAX reports compiling, so that training throughput can leave them out.

    Compilation happens inside the first chunk's call; jax reports its stages' durations.
    (Ahead-of-time compilation, `run.lower(carry).compile()`, would time it directly, but calling
    such executables deadlocks intermittently on jaxlib 0.10.2's CPU backend; see
    benchmarks/README.md.)

    Listeners cannot always be removed: `jax.monitoring.unregister_event_duration_listener`
    exists in jax 0.10 but not in 0.7.1 (the procgen environment), whose
    private `jax._src.monitoring._unregister_event_duration_listener_by_callback` does the same.
    Where neither exists the listener stays registered but inert (`active` False after the
    block), so a finished timer never counts another run's compilation.
    """

    def __init__(self):
        self.seconds = 0.0
        self.active = False

    def _on_duration(self, event: str, duration: float, **_) -> None:
        if self.active and event.startswith("/jax/core/compile/"):
            self.seconds += duration

    def __enter__(self) -> CompileTimer:
        self.active = True
        jax.monitoring.register_event_duration_secs_listener(self._on_duration)
        return self

    def __exit__(self, *exc) -> None:
        self.active = False
        remove = listener_remover()
        if remove is not None:
            remove(self._on_duration)


def listener_remover() -> Callable[[Callable], None] | None:
    """The function that unregisters an event-duration listener in this jax: the public one
    (jax 0.10), the private one (jax 0.7), or None where there is neither."""
    remove = getattr(jax.monitoring, "unregister_event_duration_listener", None)
    if remove is None:
        from jax._src import monitoring

        remove = getattr(monitoring, "_unregister_event_duration_listener_by_callback", None)
    return remove


@dataclass
class _Budget:
    """Where a run starts and stops, in chunks, and what a chunk is worth in the trainer's unit."""

    first_chunk: int
    last_chunk: int
    num_chunks: int
    units_per_chunk: int
    unit: Unit


def restore_run(checkpointer: Checkpointer, log: MetricsLog, carry: Any, run_dir: Path
                ) -> tuple[Any, int]:
    """The carry and first chunk of a resumed run; `metrics.csv` cut back to the checkpoint.

    `carry` is the tree to restore into (shapes and dtypes), returned as it is when the run
    has no checkpoint yet (it then starts from the beginning, metrics.csv deleted). A chunk's
    checkpoint step is its index, and metrics.csv's `chunk` column names each row's chunk.

    Raises:
        RlkitError: metrics.csv lacks chunks the checkpoint covers, or rows exist with no
            checkpoint to continue them (resuming would silently lose or mix rows).
    """
    step, carry, skipped = checkpointer.restore_newest_readable(carry, set_aside=True)
    for line in skipped:
        print(f"warning: {line}; resuming from an older checkpoint", file=sys.stderr)
    logged = log.chunks()
    if step is None:
        if logged:
            raise RlkitError(
                f"--resume: {run_dir} has logged chunks but no checkpoint to continue from; "
                f"start it again with --overwrite --run-dir {run_dir}")
        print(f"note: {run_dir} has no checkpoint yet; starting it from the beginning",
              file=sys.stderr)
        log.path.unlink(missing_ok=True)
        return carry, 0
    missing = sorted(set(range(step + 1)) - logged)
    if missing:
        raise RlkitError(
            f"--resume: {log.path} lacks the rows of chunk(s) {missing[:5]} that checkpoint "
            f"{step} covers (deleted or cut?); resuming would lose them: restore the file, or "
            f"start again with --overwrite --run-dir {run_dir}")
    log.truncate_after(step)
    return carry, step + 1


def _log_tensorboard(writer, rows: list[dict[str, Any]], unit: Unit) -> None:
    """Means over seeds of every metric of a chunk, at the chunk's count of `unit`."""
    x = rows[0][unit.column]
    for name in rows[0]:
        if name in COUNTER_COLUMNS or name == unit.column:
            continue
        value = _nanmean([r[name] for r in rows])
        if np.isfinite(value):
            writer.add_scalar(name, value, x)
    writer.flush()


@dataclass
class _Outcome:
    """What the chunk loop leaves for the summary."""

    carry: Any
    eval_returns: np.ndarray
    last_chunk: int
    train_seconds: float = 0.0
    diverged: dict[str, Any] | None = None
    eval_figures: dict[str, np.ndarray] = field(default_factory=dict)


def _run_chunk(trainer: Trainer, carry: Any, timer: CompileTimer) -> tuple[Any, dict, float]:
    """One compiled chunk: the new carry, its metrics on the host ([S, iterations] each) and
    its seconds without compilation."""
    start, compiled_before = time.perf_counter(), timer.seconds
    carry, metrics = trainer.run(carry)
    metrics = jax.tree.map(np.asarray, jax.device_get(metrics))
    return carry, metrics, time.perf_counter() - start - (timer.seconds - compiled_before)


def evaluated_figures(trainer: Trainer, carry: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """`trainer.evaluate(carry)` as (eval_return [S], more figures {name: [S]}): an evaluator
    returns either the [S] returns or a dict holding `eval_return` and more figures (the
    procgen level-split evaluator, `rlkit.loops.host.make_level_split_evaluator`)."""
    figures = trainer.evaluate(carry)
    if not isinstance(figures, dict):
        return np.asarray(jax.device_get(figures), np.float64), {}
    # In the evaluator's order (jax.device_get of a dict would sort the names).
    more = {name: np.array(jax.device_get(values), np.float64)  # copies: NaN-ed on divergence
            for name, values in figures.items() if name != "eval_return"}
    return np.asarray(jax.device_get(figures["eval_return"]), np.float64), more


def _evaluate(trainer: Trainer, carry: Any, chunk: int, metrics: dict[str, np.ndarray],
              optimal_return: float | None
              ) -> tuple[list[dict[str, Any]], np.ndarray, dict[str, np.ndarray]]:
    """The chunk's metrics.csv rows, each seed's evaluated return [S] and the evaluator's
    other figures ({name: [S]})."""
    eval_returns, figures = evaluated_figures(trainer, carry)
    suboptimality = None if optimal_return is None else optimal_return - eval_returns
    rows = _chunk_rows(chunk, trainer, metrics, eval_returns, suboptimality, figures)
    return rows, eval_returns, figures


def _divergence(trainer: Trainer, carry: Any, metrics: dict[str, np.ndarray], chunk: int,
                rows: list[dict[str, Any]], checkpointer: Checkpointer) -> dict | None:
    """summary.json's `diverged` entry when a seed's state or loss is not finite, else None."""
    bad = non_finite_seeds(trainer.agent_state(carry), metrics)
    if not bad:
        return None
    return {"chunk": chunk, "seeds": bad, trainer.unit.column: rows[0][trainer.unit.column],
            "last_checkpoint": checkpointer.latest_step()}


def _train_chunks(trainer: Trainer, carry: Any, budget: _Budget, run_dir: Path,
                  log: MetricsLog, checkpointer: Checkpointer, timer: CompileTimer,
                  checkpoint_every: int, optimal_return: float | None,
                  progress: Progress) -> _Outcome:
    """The host loop: run a chunk, log it, evaluate, check it is finite, checkpoint."""
    from tensorboardX import SummaryWriter

    outcome = _Outcome(carry, np.full((0,), np.nan), budget.first_chunk - 1)
    within_chunk = [0]  # units the driver reported during the current chunk
    # Only a bar that is drawn asks the driver for reports (the on-device driver compiles them
    # into its chunk: --no-progress runs the program without them).
    if trainer.report_progress is not None and progress.enabled:
        def report(units: int) -> None:
            within_chunk[0] += units
            progress.advance(units, {})

        trainer.report_progress(report)
    writer = SummaryWriter(str(run_dir))
    try:  # an error, Ctrl-C or SIGTERM still closes the writer with every chunk logged
        for chunk in range(budget.first_chunk, budget.last_chunk + 1):
            raise_pending_interrupt()  # a Ctrl-C Python swallowed during the last chunk
            carry, metrics, seconds = _run_chunk(trainer, carry, timer)
            rows, eval_returns, figures = _evaluate(trainer, carry, chunk, metrics,
                                                    optimal_return)
            outcome.diverged = _divergence(trainer, carry, metrics, chunk, rows, checkpointer)
            for seed in (outcome.diverged or {}).get("seeds", []):
                # An evaluation of non-finite parameters means nothing: no figure (NaN, null).
                eval_returns[seed] = math.nan
                for values in figures.values():
                    values[seed] = math.nan
                rows[seed].update({name: math.nan for name in ("eval_return", "suboptimality",
                                                                *figures) if name in rows[seed]})
            log.append(rows)
            _log_tensorboard(writer, rows, budget.unit)
            outcome.carry, outcome.eval_returns, outcome.last_chunk = carry, eval_returns, chunk
            outcome.eval_figures = figures
            outcome.train_seconds += seconds
            if outcome.diverged:  # not checkpointed: the last checkpoint stays finite
                break
            if (chunk + 1) % checkpoint_every == 0 or chunk == budget.last_chunk:
                checkpointer.save(chunk, carry)
            progress.advance(budget.units_per_chunk - within_chunk[0], {
                "return": _nanmean([r.get("episode_return", math.nan) for r in rows]),
                "eval": float(np.mean(eval_returns)),
            })
            within_chunk[0] = 0
    finally:
        writer.close()
    return outcome


def _summary(header: dict[str, Any], trainer: Trainer, budget: _Budget, outcome: _Outcome,
             num_seeds: int, resumed: bool, timer: CompileTimer, wall_seconds: float,
             optimal_return: float | None, rows: list[dict[str, str]],
             extras: dict[str, Any] | None) -> dict[str, Any]:
    """summary.json: final figures per seed and aggregated (no NaN: JSON null instead)."""
    chunks_done = outcome.last_chunk + 1
    chunks_run = max(chunks_done - budget.first_chunk, 0)
    # No chunk run in this process: no throughput (null), rather than a made-up zero.
    per_second = (chunks_run * num_seeds / max(outcome.train_seconds, 1e-9) if chunks_run
                  else math.nan)
    final = aggregate(outcome.eval_returns)
    summary: dict[str, Any] = dict(header)
    summary.update({
        "seeds": num_seeds,
        "unit": budget.unit.column,
        "env_steps": chunks_done * trainer.iterations_per_chunk * trainer.steps_per_iteration,
        "wall_seconds": wall_seconds,
        "compile_seconds": timer.seconds,
        "train_seconds": outcome.train_seconds,
        # Throughput of the chunks run in this process (all seeds), compilation excluded.
        "steps_per_second": (per_second * trainer.iterations_per_chunk
                             * trainer.steps_per_iteration),
    })
    if budget.unit != ENV_STEPS:
        summary[budget.unit.column] = chunks_done * budget.units_per_chunk
        summary[f"{budget.unit.column}_per_second"] = per_second * budget.units_per_chunk
    summary.update({
        "final_return": final["mean"],
        "final_return_iqm": final["iqm"],
        "final_return_ci95": final["ci95"],
        "per_seed": [float(x) for x in outcome.eval_returns],
        "device": jax.devices()[0].device_kind,
        "resumed_from_chunk": budget.first_chunk if resumed else None,
        "last_chunk": outcome.last_chunk,
        "stopped_early": outcome.diverged is None and outcome.last_chunk < budget.num_chunks - 1,
        "diverged": outcome.diverged,
    })
    for name, values in outcome.eval_figures.items():  # procgen's splits: mean and per seed
        summary[name] = _nanmean([float(x) for x in values])
        summary[f"per_seed_{name}"] = [float(x) for x in values]
    if not trainer.episodic:  # no environment, no return: the driver's figures come in
        for name in ("env_steps", "steps_per_second", "final_return", "final_return_iqm",
                     "final_return_ci95", "per_seed"):  # `extras` and `finish`
            del summary[name]
    if optimal_return is not None:
        summary["optimal_return"] = float(optimal_return)
        summary["suboptimality"] = float(optimal_return - final["mean"])
        summary["per_seed_suboptimality"] = [float(optimal_return - x)
                                             for x in outcome.eval_returns]
        if trainer.steps_per_iteration:  # training episodes exist
            per_seed = episodes_to_optimal(rows, num_seeds, optimal_return)
            summary["per_seed_episodes_to_optimal"] = per_seed
            solved = [x for x in per_seed if x is not None]
            summary["episodes_to_optimal"] = (float(np.mean(solved)) if len(solved) == num_seeds
                                              else None)
    summary["final_metrics"] = _final_metrics(rows, outcome.last_chunk, budget.unit)
    summary.update(extras or {})
    return json_safe(summary)


# metrics.csv columns that say where a row is, or are in summary.json already.
_ROW_KEYS = {"seed", "chunk", "iteration", "env_steps", "episodes", "eval_return",
             "suboptimality"}


def _final_metrics(rows: list[dict[str, str]], last_chunk: int, unit: Unit) -> dict[str, float]:
    """The last chunk's training metrics (losses, `episode_return`, `intrinsic_bonus_mean`,
    ...), each the mean over seeds of its metrics.csv values (NaN, JSON null, where no seed has
    a finite one): the figures a reader of summary.json wants without opening metrics.csv."""
    last = [row for row in rows if int(row["chunk"]) == last_chunk]
    names = [name for name in (last[0] if last else {})
             if name not in _ROW_KEYS and name != unit.column]
    return {name: _nanmean([float(row[name] or "nan") for row in last]) for name in names}


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
    keep_checkpoints: int | None = 2,
    optimal_return: float | None = None,
    show_progress: bool = True,
    summary_extras: dict[str, Any] | None = None,
    stop_after_chunks: int | None = None,
    finish: Callable[[Any, dict[str, Any]], dict[str, Any]] | None = None,
) -> RunResult:
    """Run `num_chunks` compiled chunks with logging, evaluation and checkpoints.

    Args:
        trainer: the driver's compiled functions.
        num_chunks: chunks in the whole run.
        num_seeds: independent seeds trained side by side (vmapped).
        seed: the base seed; seed i uses `jax.random.split(jax.random.key(seed), num_seeds)[i]`.
        run_dir: the run directory (created).
        header: agent / env names and anything else summary.json should start with.
        resume: continue from the newest checkpoint in run_dir; a finished run is left as it is.
        checkpoint_every: save every this many chunks (and always after the last).
        keep_checkpoints: keep the newest this many checkpoints (None: every one).
        optimal_return: the exact optimal return, where the env has a model.
        show_progress: draw a rich progress bar.
        summary_extras: more fields for summary.json.
        stop_after_chunks: stop, checkpointed, after this many chunks of this call.
        finish: `(final carry, summary) -> more summary fields`, called before summary.json
            is written (once, with them): figures only the final state gives.

    Returns:
        A `RunResult` with the summary and the final carry; `summary["diverged"]` is set when
        the parameters of a seed stopped being finite (the run stopped at that chunk).

    Raises:
        RlkitError: a resume that would lose or mix rows of metrics.csv (see `restore_run`).
    """
    from rlkit.plotting import plot_curves
    from rlkit.progress import Progress

    start_wall = time.perf_counter()
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpointer = Checkpointer(run_dir / "checkpoints", max_to_keep=keep_checkpoints)
    units_per_chunk = trainer.iterations_per_chunk * trainer.units_per_iteration
    # The bar shows from the start (compiling init, restoring), not after the first chunk.
    progress = Progress(total=num_chunks * units_per_chunk, enabled=show_progress,
                        unit=trainer.unit.label)
    try:
        with progress:
            log = MetricsLog(run_dir / "metrics.csv")
            carry = trainer.init(jax.random.split(jax.random.key(seed), num_seeds))
            first_chunk = 0
            if resume:
                carry, first_chunk = restore_run(checkpointer, log, carry, run_dir)
            elif log.path.exists():
                log.path.unlink()
                log = MetricsLog(log.path)
            if first_chunk >= num_chunks and (run_dir / "summary.json").exists():
                return _finished(run_dir, carry, num_chunks)
            last_chunk = num_chunks - 1
            if stop_after_chunks is not None:
                last_chunk = min(last_chunk, first_chunk + stop_after_chunks - 1)
            budget = _Budget(first_chunk, last_chunk, num_chunks, units_per_chunk, trainer.unit)
            progress.advance(first_chunk * units_per_chunk, {}, done=False)
            with CompileTimer() as timer:
                outcome = _train_chunks(trainer, carry, budget, run_dir, log, checkpointer,
                                        timer, checkpoint_every, optimal_return, progress)
            if first_chunk >= num_chunks:  # finished, but summary.json was never written
                print(f"note: {run_dir} is finished; writing its summary from the last "
                      "checkpoint", file=sys.stderr)
                outcome.eval_returns, outcome.eval_figures = evaluated_figures(trainer, carry)
                outcome.last_chunk = num_chunks - 1
    finally:
        checkpointer.close()
    rows = log.read()
    summary = _summary(header, trainer, budget, outcome, num_seeds, resume, timer,
                       time.perf_counter() - start_wall, optimal_return, rows, summary_extras)
    if finish is not None:
        summary.update(finish(outcome.carry, summary))
    write_json_atomic(run_dir / "summary.json", summary)
    plot_curves(rows, run_dir / "curves.png", title=f"{header.get('agent')} on {header.get('env')}",
                optimal_return=optimal_return, unit=trainer.unit)
    return RunResult(summary=summary, run_dir=run_dir, carry=outcome.carry)


def _finished(run_dir: Path, carry: Any, num_chunks: int) -> RunResult:
    """A resume of a finished run: nothing to do, nothing written."""
    print(f"note: {run_dir} is finished (all {num_chunks} chunks); nothing to do",
          file=sys.stderr)
    path = run_dir / "summary.json"
    summary = json.loads(path.read_text()) if path.exists() else {}
    return RunResult(summary=summary, run_dir=run_dir, carry=carry)
