"""Offline DPO, HyPO and online iterative DPO on a text task, several seeds, through
`python -m rlkit.train` (issue 13, item 6: the text task with confidence intervals, and the
GPT-2-class run for a GPU).

One SFT model (trained from scratch on the task's half-corrupted demonstrations) and one
Bradley-Terry reward model from it are shared by every method; then, per seed (`--seed s`, which
also draws the seed's prompts and offline pairs):

* online iterative DPO labelled by the task's exact reward (the oracle) and by the reward model,
  3 iterations by default (`iterative-dpo`);
* offline DPO and HyPO on pairs sampled once from the SFT model and labelled by Bradley-Terry on
  the exact reward, as many pairs as the oracle iterative run used labels (its mean over seeds):
  an equal label budget.

The reward model's own training pairs (`--reward-model-pairs`) are not counted in its iterative
run's labels: they are spent once, before any method runs. Offline methods request the oracle's
label count; pairs whose sampled completion is empty or not valid text are skipped, so they
end with a few labels fewer (their `labels_used` says how many).

Reported per method: the final true reward (the task's exact reward of one completion per
evaluation prompt), the reverse KL to the SFT model, the win rate against the SFT model and the
labels used, mean over seeds with a 95% bootstrap CI (`rlkit.stats`); `--plot` draws reward
against KL and against labels. Shapes: `--shape cpu` (rlkit's default 2-layer byte-level model,
minutes per run on 2 cores) or `--shape gpt2` (GPT-2 small's: 12 layers, width 768, 12 heads,
SwiGLU branches of 2048, as many MLP parameters as GPT-2's GELU 3072; about 85M parameters with
the byte vocabulary; for a GPU, `benchmarks/preference_gpu.sh`).

Running it again with the same arguments continues an interrupted invocation (finished runs are
reused, a cut one resumes from its checkpoint).

    uv run python benchmarks/preference_text.py --seeds 5 \\
        --json benchmarks/results/preference_text_cpu.json \\
        --plot benchmarks/results/preference_text.png
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rlkit import stats  # noqa: E402
from rlkit.errors import ArgumentParser  # noqa: E402

SHAPES = {
    "cpu": [],
    "gpt2": ["--agent.num-layers", "12", "--agent.width", "768", "--agent.num-heads", "12",
             "--agent.mlp-width", "2048"],
}
METHODS = ("iterative_dpo_oracle", "iterative_dpo_reward_model", "offline_dpo", "hypo")


def train(agent: str, run_dir: Path, *flags: str) -> dict:
    """`python -m rlkit.train AGENT ... --run-dir RUN_DIR` in a child process; its summary.json.
    A run already finished in the work directory (by an earlier invocation with the same
    arguments, which `check_work_dir` guarantees) is reused, one that was cut short continues
    with `--resume`. A failed run stops the benchmark with the child's last lines."""
    summary_path = run_dir / "summary.json"
    if summary_path.exists() and not json.loads(summary_path.read_text()).get("stopped_early"):
        print(f"  {agent:14s} {run_dir.name:28s} finished earlier: reused", flush=True)
        return json.loads(summary_path.read_text())
    if (run_dir / "config.yaml").exists():  # started by an interrupted invocation
        command = [sys.executable, "-m", "rlkit.train", "--resume", str(run_dir),
                   "--no-progress"]
    else:
        command = [sys.executable, "-m", "rlkit.train", agent, *flags, "--run-dir",
                   str(run_dir), "--overwrite", "--no-progress"]
    start = time.time()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
        sys.exit(f"{' '.join(command)} failed (exit {done.returncode}):\n" + "\n".join(tail))
    summary = json.loads((run_dir / "summary.json").read_text())
    names = ("true_reward", "initial_true_reward", "reverse_kl", "win_rate",
             "eval_preference_accuracy")  # the reward model's: on its held-out pairs
    shown = ", ".join(f"{name.replace('_', ' ')} {summary[name]:.3f}" for name in names
                      if isinstance(summary.get(name), int | float))
    print(f"  {agent:14s} {run_dir.name:28s} {shown}, labels {summary.get('labels_used', 0)} "
          f"({time.time() - start:.0f} s)", flush=True)
    return summary


def check_work_dir(work: Path, args: argparse.Namespace, parser) -> None:
    """The work directory holds one configuration's runs: a new one gets `arguments.json`; an
    earlier invocation's with other arguments is refused (one line) unless `--overwrite`, which
    empties it; the same arguments continue it (finished runs reused, cut ones resumed)."""
    import shutil

    settings = {k: v for k, v in vars(args).items()
                if k not in ("json", "plot", "work_dir", "overwrite")}
    record = work / "arguments.json"
    if work.exists() and not work.is_dir():
        parser.error(f"--work-dir {work} is a file; pass a folder")
    if work.is_dir() and any(work.iterdir()) and not record.exists():
        parser.error(f"--work-dir {work} holds files that are not this script's runs (no "
                     "arguments.json); pass a new or empty folder (--overwrite never deletes "
                     "a folder this script did not make)")
    if record.exists() and not args.overwrite:
        earlier = json.loads(record.read_text())
        if earlier != settings:
            changed = sorted(k for k in settings if earlier.get(k) != settings[k])
            parser.error(f"--work-dir {work} holds runs made with other arguments "
                         f"({', '.join(changed)} differ); pass --overwrite to replace them or "
                         "another --work-dir")
        print(f"continuing the runs in {work} (same arguments)", flush=True)
        return
    if args.overwrite and record.exists():
        shutil.rmtree(work)
    try:
        work.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(settings, indent=1) + "\n")
    except OSError as error:
        parser.error(f"--work-dir {work}: cannot write there ({error.strerror})")


def aggregate(rows: list[dict]) -> dict:
    """Per figure, `rlkit.stats.aggregate` over seeds (mean, IQM, 95% CI, std) and the seeds'
    values."""
    return {name: {"per_seed": [float(row[name]) for row in rows],
                   **stats.aggregate(np.array([row[name] for row in rows], np.float64))}
            for name in ("true_reward", "reverse_kl", "win_rate", "labels_used")}


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for index, method in enumerate(METHODS):
        figures = results["methods"][method]
        reward, kl = figures["true_reward"], figures["reverse_kl"]
        labels = figures["labels_used"]
        low, high = reward["ci95"] or (reward["mean"], reward["mean"])
        error = [[reward["mean"] - low], [high - reward["mean"]]]
        for axis, x in ((axes[0], kl["mean"]), (axes[1], labels["mean"])):
            axis.errorbar([x], [reward["mean"]], yerr=error, fmt="o", color=f"C{index}",
                          capsize=3, label=method.replace("_", " "))
            axis.scatter(kl["per_seed"] if axis is axes[0] else labels["per_seed"],
                         reward["per_seed"], s=8, alpha=0.4, color=f"C{index}")
    sft = results["sft"]["true_reward"]
    for axis, xlabel in ((axes[0], "reverse KL to the SFT model (nats)"),
                         (axes[1], "preference labels used")):
        axis.axhline(sft, color="k", ls=":", lw=1, label=f"SFT ({sft:.3f})")
        axis.set(xlabel=xlabel, ylabel="true reward")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{results['task']} ({results['shape']} shape), {results['seeds']} seeds: mean "
                 "and 95% CI, dots are seeds", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


def main() -> None:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--shape", choices=tuple(SHAPES), default="cpu")
    parser.add_argument("--task", default="sort")
    parser.add_argument("--num-digits", type=int, default=4)
    parser.add_argument("--sft-steps", type=int, default=600)
    parser.add_argument("--reward-model-pairs", type=int, default=1024,
                        help="pairs sampled from the SFT model for the reward model (an eighth "
                             "held out for its accuracy)")
    parser.add_argument("--reward-model-steps", type=int, default=300)
    parser.add_argument("--beta", type=float, default=0.5, help="DPO's beta in every method")
    parser.add_argument("--lam", type=float, default=0.1, help="HyPO's lambda")
    parser.add_argument("--iterations", type=int, default=3, help="iterative DPO's T")
    parser.add_argument("--steps-per-iteration", type=int, default=200,
                        help="iterative DPO's updates per iteration")
    parser.add_argument("--offline-steps", type=int, default=600,
                        help="updates of offline DPO and HyPO (600: iterative DPO's default "
                             "3 x 200)")
    parser.add_argument("--work-dir", type=Path, default=Path("runs/preference_text"),
                        help="the runs; running again with the same arguments continues them")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the runs of --work-dir made with other arguments")
    parser.add_output("--json", default=None)
    parser.add_output("--plot", figure=True, default=None)
    args = parser.parse_args()
    if args.seeds < 2:
        parser.error(f"--seeds must be at least 2 for a confidence interval, got {args.seeds}")
    if not args.beta > 0:  # checked before SFT, not minutes later by the first DPO run
        parser.error(f"--beta must be > 0, got {args.beta}")
    if not args.lam >= 0:
        parser.error(f"--lam must be >= 0, got {args.lam}")
    if args.reward_model_pairs < 16:
        parser.error(f"--reward-model-pairs must be at least 16, got {args.reward_model_pairs}")
    for flag in ("num_digits", "sft_steps", "reward_model_pairs", "reward_model_steps",
                 "iterations", "steps_per_iteration", "offline_steps"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be at least 1, got "
                         f"{getattr(args, flag)}")

    start = time.time()
    work = args.work_dir
    check_work_dir(work, args, parser)
    task = ["--task", args.task, "--task-config.num-digits", str(args.num_digits)]
    beta = ["--agent.beta", str(args.beta)]
    print(f"{args.task} ({args.num_digits} digits), {args.shape} shape, {args.seeds} seeds; "
          f"runs under {work}", flush=True)
    sft = train("sft", work / "sft", *task, *SHAPES[args.shape],
                "--total-steps", str(args.sft_steps))
    train("reward-model", work / "reward_model", *task, "--model", str(work / "sft"),
          "--pairs", str(args.reward_model_pairs), "--total-steps",
          str(args.reward_model_steps), "--eval-prompts", str(args.reward_model_pairs // 8))
    rows: dict[str, list[dict]] = {method: [] for method in METHODS}
    for seed in range(args.seeds):
        common = [*task, "--model", str(work / "sft"), "--seed", str(seed), *beta,
                  "--agent.iterations", str(args.iterations),
                  "--agent.steps-per-iteration", str(args.steps_per_iteration)]
        rows["iterative_dpo_oracle"].append(train(
            "iterative-dpo", work / f"iterative_oracle_{seed}", *common))
        rows["iterative_dpo_reward_model"].append(train(
            "iterative-dpo", work / f"iterative_reward_model_{seed}", *common,
            "--reward-model", str(work / "reward_model")))
    budget = int(round(np.mean([row["labels_used"] for row in rows["iterative_dpo_oracle"]])))
    print(f"offline methods: {budget} pairs each (the oracle iterative runs' mean labels)",
          flush=True)
    for seed in range(args.seeds):
        common = [*task, "--model", str(work / "sft"), "--seed", str(seed), *beta,
                  "--pairs", str(budget), "--total-steps", str(args.offline_steps)]
        rows["offline_dpo"].append(train("dpo", work / f"offline_dpo_{seed}", *common))
        rows["hypo"].append(train("hypo", work / f"hypo_{seed}", *common,
                                  "--agent.lam", str(args.lam)))
    # The SFT model's reward on each seed's evaluation prompts (the offline runs evaluate it
    # before training, on the prompts every method of that seed is evaluated on): the baseline.
    initial = [row["initial_true_reward"] for row in rows["offline_dpo"]]
    results = {"task": args.task, "shape": args.shape, "seeds": args.seeds,
               "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "sft": {"true_reward": float(np.mean(initial)), "per_seed": initial,
                       "own_evaluation": sft["true_reward"]},
               "offline_pairs": budget,
               "methods": {method: aggregate(rows[method]) for method in METHODS},
               "seconds_this_invocation": time.time() - start}
    label = "SFT (each seed's prompts)"
    print(f"{label:27s} true reward {results['sft']['true_reward']:.3f} "
          f"(per seed {', '.join(f'{x:.3f}' for x in initial)})")
    for method in METHODS:
        figures = results["methods"][method]
        interval = figures["true_reward"]["ci95"]
        print(f"{method:27s} true reward {figures['true_reward']['mean']:.3f} "
              f"[{interval[0]:.3f}, {interval[1]:.3f}], reverse KL "
              f"{figures['reverse_kl']['mean']:.2f}, win rate vs SFT "
              f"{figures['win_rate']['mean']:.3f}, labels {figures['labels_used']['mean']:.0f}")
    oracle = np.array(results["methods"]["iterative_dpo_oracle"]["true_reward"]["per_seed"])
    offline = np.array(results["methods"]["offline_dpo"]["true_reward"]["per_seed"])
    results["oracle_beats_offline_seeds"] = int((oracle > offline).sum())
    print(f"iterative DPO (oracle) beats offline DPO on {results['oracle_beats_offline_seeds']} of "
          f"{args.seeds} seeds ({results['seconds_this_invocation']:.0f} s in this invocation)")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")
        print(f"results: {args.json}")
    if args.plot is not None:
        plot(results, args.plot)


if __name__ == "__main__":
    main()
