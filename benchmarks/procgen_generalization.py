"""The procgen generalisation study (Mediratta et al. 2024, "The Generalization Gap in Offline
Reinforcement Learning", ICLR; spec ../shared/specs/procgen_generalization.md section 6).

For every game of the configuration:

1. `ppo`: PPO trained online on the 200 training levels (the behaviour policy and the online
   reference), with the level-split evaluation every procgen run reports.
2. `data-200` and `data-10`: two expert datasets of the same number of transitions collected
   from PPO's final checkpoint, on the 200 training levels and on the first 10 of them.
3. One offline run per method (bc, bcq, cql, iql, dt by default) on the 200-level dataset, and
   `bc-10` (BC on the 10-level dataset) for the data-diversity claim.

Then `aggregate` reads every run's summary.json (per-seed train, validation and test returns,
normalised per game with `rlkit.procgen`), computes across games the IQM with a stratified-
bootstrap 95% CI and the train-minus-test gap (`rlkit.stats`), checks the paper's three claims,
and writes `study.json`, `study.md` and `study.png` (`rlkit.plotting.plot_generalisation`).

Every stage is a `python -m rlkit.train` or `python -m rlkit.collect` command, printed before it
runs, so a stage can be re-run or inspected by hand. Stages are resumable: a stage whose output
is complete (a run with summary.json, a dataset with its metadata) is skipped, and a stage that
was interrupted resumes (`--resume`) or is redone. Run it in the procgen environment::

    UV_PROJECT_ENVIRONMENT=.venv-procgen uv sync --frozen --extra procgen --no-group numpy2
    .venv-procgen/bin/python benchmarks/procgen_generalization.py --config tiny
    .venv-procgen/bin/python benchmarks/procgen_generalization.py --config reduced --jobs 2

Configurations (hyper-parameters from the spec's 6.1 and 6.3 where the budget allows):

* `tiny`: one game, a few thousand PPO steps, a 2k-transition dataset, IMPALA with 8/16/16
  channels. Exercises every stage in minutes (the notebook and CI); its numbers mean nothing.
* `reduced`: 2 games, small CNN, budgets sized for a 2-core CPU (see benchmarks/README.md for
  what it measured and why the paper's scale does not fit there).
* `full`: the paper's protocol: 4 games, 25M PPO steps, 1M-transition datasets, 3 seeds, the
  IMPALA CNN; for a GPU (benchmarks/procgen_gpu.sh).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rlkit.errors import ArgumentParser, RlkitError, run_cli, run_guarded  # noqa: E402

OFFLINE_METHODS = ("bc", "bcq", "cql", "iql", "dt")
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Study:
    """One configuration of the study (budgets are per seed)."""

    games: tuple[str, ...]
    seeds: int
    ppo_steps: int
    ppo_envs: int
    ppo_rollout: int
    ppo_epochs: int
    ppo_minibatches: int
    cnn: str
    transitions: int
    few_levels: int
    offline_updates: int
    batch_size: int
    split_episodes: int
    dt_context: int = 10
    num_logs: int = 2


CONFIGS = {
    "tiny": Study(games=("maze",), seeds=1, ppo_steps=1024, ppo_envs=8, ppo_rollout=32,
                  ppo_epochs=1, ppo_minibatches=4, cnn="impala-small", transitions=1000,
                  few_levels=10, offline_updates=10, batch_size=16, split_episodes=2,
                  dt_context=4, num_logs=1),
    "reduced": Study(games=("maze", "coinrun"), seeds=2, ppo_steps=200_000, ppo_envs=32,
                     ppo_rollout=128, ppo_epochs=3, ppo_minibatches=8, cnn="impala-small",
                     transitions=50_000, few_levels=10, offline_updates=3000, batch_size=128,
                     split_episodes=32, num_logs=4),
    "full": Study(games=("coinrun", "bigfish", "maze", "miner"), seeds=3, ppo_steps=25_000_000,
                  ppo_envs=64, ppo_rollout=256, ppo_epochs=3, ppo_minibatches=8, cnn="impala",
                  transitions=1_000_000, few_levels=10, offline_updates=200_000,
                  batch_size=256, split_episodes=100, num_logs=20),
}

# The spec's final hyper-parameters (6.3) for what the configurations do not set.
_OFFLINE_FLAGS = {
    "bc": ["--agent.learning-rate", "5e-4"],
    "bcq": ["--agent.learning-rate", "5e-4", "--agent.bcq-threshold", "0.5"],
    "cql": ["--agent.learning-rate", "5e-4", "--agent.cql-alpha", "4.0"],
    "iql": ["--agent.learning-rate", "5e-4", "--agent.expectile", "0.8",
            "--agent.temperature", "3.0"],
    "dt": ["--agent.learning-rate", "5e-4"],
}


def game_dir(out: Path, game: str) -> Path:
    return out / game


def ppo_command(study: Study, game: str, run_dir: Path) -> list[str]:
    """PPO on the 200 training levels (spec 6.1: lr 5e-4, gamma 0.999, lambda 0.95, 3 epochs,
    8 minibatches, clip 0.2, entropy 0.01; envs, rollout and epochs from the configuration)."""
    return [sys.executable, "-m", "rlkit.train", "ppo", "--env", f"procgen:{game}",
            "--env-config.num-levels", "200", "--env-config.start-level", "0",
            "--agent.num-envs", str(study.ppo_envs),
            "--agent.rollout-length", str(study.ppo_rollout),
            "--agent.update-epochs", str(study.ppo_epochs),
            "--agent.num-minibatches", str(study.ppo_minibatches),
            "--agent.learning-rate", "5e-4", "--agent.gamma", "0.999",
            "--agent.cnn", study.cnn, "--agent.activation", "relu",
            "--seeds", str(study.seeds), "--total-steps", str(study.ppo_steps),
            "--num-logs", str(study.num_logs), "--split-episodes", str(study.split_episodes),
            "--run-dir", str(run_dir), "--no-progress"]


def collect_command(study: Study, game: str, ppo_dir: Path, levels: int, out: Path) -> list[str]:
    """Expert data from PPO's final checkpoint (seed 0) on levels 0 .. levels - 1."""
    return [sys.executable, "-m", "rlkit.collect", "--policy", str(ppo_dir),
            "--env", f"procgen:{game}", "--env-config.num-levels", str(levels),
            "--env-config.start-level", "0", "--transitions", str(study.transitions),
            "--num-envs", str(min(8, study.ppo_envs)), "--out", str(out), "--no-progress"]


def offline_command(study: Study, game: str, method: str, dataset: Path,
                    run_dir: Path) -> list[str]:
    """An offline method on a dataset, evaluated on the three level splits."""
    command = [sys.executable, "-m", "rlkit.train", method, "--dataset", str(dataset),
               "--agent.cnn", study.cnn, "--agent.batch-size", str(study.batch_size),
               "--seeds", str(study.seeds), "--total-steps", str(study.offline_updates),
               "--num-logs", str(study.num_logs), "--split-episodes", str(study.split_episodes),
               "--run-dir", str(run_dir), "--no-progress", *_OFFLINE_FLAGS[method]]
    if method == "dt":
        command += ["--agent.context-length", str(study.dt_context)]
    return command


def _finished_run(run_dir: Path) -> bool:
    return (run_dir / "summary.json").exists()


def _finished_dataset(path: Path) -> bool:
    return (path / "metadata.json").exists()


def run_stage(name: str, command: list[str], done: Path, finished, log_dir: Path) -> None:
    """Run one stage unless its output is complete; a run directory left by an interrupted
    stage is resumed (rlkit.train) or overwritten (rlkit.collect)."""
    if finished(done):
        print(f"[skip] {name}: {done} is complete", flush=True)
        return
    if done.exists():
        command = command + (["--resume"] if "rlkit.train" in command else ["--overwrite"])
    print(f"[run ] {name}: {' '.join(command)}", flush=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log_dir / f"{name}.log", "w") as log:
        result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
    if result.returncode != 0:
        tail = (log_dir / f"{name}.log").read_text().strip().splitlines()[-3:]
        raise RlkitError(f"stage {name} failed (exit {result.returncode}); its log "
                         f"{log_dir / (name + '.log')} ends: {' | '.join(tail)}")
    print(f"[done] {name} in {time.perf_counter() - start:.0f} s", flush=True)


def run_game(study: Study, game: str, out: Path, methods: tuple[str, ...], jobs: int) -> None:
    """All stages of one game: PPO, the two datasets, then the offline runs (`jobs` at once)."""
    where = game_dir(out, game)
    logs = where / "logs"
    ppo_dir = where / "ppo"
    run_stage(f"{game}-ppo", ppo_command(study, game, ppo_dir), ppo_dir, _finished_run, logs)
    datasets = {200: where / "data-200", study.few_levels: where / f"data-{study.few_levels}"}
    for levels, path in datasets.items():
        run_stage(f"{game}-data-{levels}", collect_command(study, game, ppo_dir, levels, path),
                  path, _finished_dataset, logs)
    stages = [(method, datasets[200]) for method in methods if method != "ppo"]
    if "bc" in methods:
        stages.append((f"bc-{study.few_levels}", datasets[study.few_levels]))
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [
            pool.submit(run_stage, f"{game}-{name}",
                        offline_command(study, game, name.split("-")[0], dataset, where / name),
                        where / name, _finished_run, logs)
            for name, dataset in stages]
        for future in futures:
            future.result()


def read_run(run_dir: Path) -> dict[str, list[float]]:
    """Per-seed raw and normalised returns of each split from a run's summary.json."""
    summary = json.loads((run_dir / "summary.json").read_text())
    out = {}
    for split in SPLITS:
        for kind in ("return", "normalized_return"):
            key = f"{split}_{kind}"
            values = summary.get(f"per_seed_{key}")
            if values is None:
                raise RlkitError(f"{run_dir / 'summary.json'} has no per_seed_{key}; it was not "
                                 "trained with the level-split evaluation (--split-episodes).")
            out[key] = [float(v) for v in values]
    return out


def aggregate(study: Study, out: Path, methods: tuple[str, ...]) -> dict:
    """Across games: IQM and stratified-bootstrap CI per method and split, the gap, the claims."""
    from rlkit.stats import aggregate_across_games, gap_across_games

    names = ["ppo", *[m for m in methods if m != "ppo"]]
    if "bc" in methods:
        names.append(f"bc-{study.few_levels}")
    per_run = {name: {game: read_run(game_dir(out, game) / name) for game in study.games}
               for name in names}
    results = {}
    for name, games in per_run.items():
        entry = {split: aggregate_across_games(
                     {g: r[f"{split}_normalized_return"] for g, r in games.items()})
                 for split in SPLITS}
        entry["gap"] = gap_across_games(
            {g: r["train_normalized_return"] for g, r in games.items()},
            {g: r["test_normalized_return"] for g, r in games.items()})
        entry["per_game"] = games
        results[name] = entry
    offline = [m for m in methods if m in OFFLINE_METHODS]
    claims = {
        "test_below_train_for_every_method": {
            name: results[name]["gap"]["iqm"] > 0 for name in results},
        "bc_best_offline_on_test": (
            None if "bc" not in offline or len(offline) < 2 else
            all(results["bc"]["test"]["iqm"] >= results[m]["test"]["iqm"] for m in offline)),
        "200_levels_beat_few_levels_on_test": (
            None if "bc" not in offline else
            results["bc"]["test"]["iqm"] > results[f"bc-{study.few_levels}"]["test"]["iqm"]),
    }
    return {"config": dataclasses.asdict(study), "methods": results, "claims": claims}


def write_report(report: dict, out: Path, title: str) -> None:
    """study.json, study.md (a table of IQMs with CIs, and the claims) and study.png."""
    from rlkit.io import atomic_file
    from rlkit.plotting import plot_generalisation

    with atomic_file(out / "study.json", "w") as handle:
        json.dump(report, handle, indent=2)

    def cell(agg: dict) -> str:
        ci = agg["ci95"]
        return f"{agg['iqm']:.3f}" + ("" if ci is None else f" [{ci[0]:.3f}, {ci[1]:.3f}]")

    lines = [f"# {title}", "", "IQM normalised return across games and seeds, 95% stratified "
             "bootstrap CI.", "", "| method | train | validation | test | train - test |",
             "|---|---|---|---|---|"]
    for name, entry in report["methods"].items():
        lines.append(f"| {name} | " + " | ".join(cell(entry[k]) for k in (*SPLITS, "gap"))
                     + " |")
    lines += ["", "Claims (Mediratta et al. 2024):", ""]
    lines += [f"- {claim}: {value}" for claim, value in report["claims"].items()]
    with atomic_file(out / "study.md", "w") as handle:
        handle.write("\n".join(lines) + "\n")
    plot_generalisation(report["methods"], out / "study.png", title)


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=sorted(CONFIGS), default="tiny")
    parser.add_argument("--out", default=None,
                        help="study directory (default results/procgen_generalization/CONFIG)")
    parser.add_argument("--methods", default=",".join(OFFLINE_METHODS),
                        help="offline methods, comma-separated (PPO always runs)")
    parser.add_argument("--games", default=None, help="override the configuration's games")
    parser.add_argument("--jobs", type=int, default=1, help="offline runs at once per game")
    parser.add_argument("--aggregate-only", action="store_true",
                        help="only read finished runs and write the report")
    args = parser.parse_args(argv)

    def run() -> int:
        study = CONFIGS[args.config]
        if args.games:
            study = dataclasses.replace(study, games=tuple(args.games.split(",")))
        methods = tuple(m for m in args.methods.split(",") if m)
        unknown = [m for m in methods if m not in OFFLINE_METHODS]
        if unknown:
            raise RlkitError(f"--methods: unknown {', '.join(unknown)}; choose from "
                             f"{', '.join(OFFLINE_METHODS)}.")
        if args.jobs < 1:
            raise RlkitError(f"--jobs: must be at least 1, got {args.jobs}.")
        from rlkit.procgen import return_range

        for game in study.games:
            return_range(game)  # an unknown game fails here, before anything runs
        out = Path(args.out or ROOT / "results" / "procgen_generalization" / args.config)
        out.mkdir(parents=True, exist_ok=True)
        if not args.aggregate_only:
            for game in study.games:
                run_game(study, game, out, methods, args.jobs)
        report = aggregate(study, out, methods)
        write_report(report, out, f"procgen generalisation, {args.config} configuration")
        print((out / "study.md").read_text())
        return 0

    def guarded() -> int:
        result, status = run_guarded(run, resumable=False)
        return result if status is None else status

    run_cli(guarded)


if __name__ == "__main__":
    main()
