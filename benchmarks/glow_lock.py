"""GLOW and HyGLOW against Hy-Q, epsilon-greedy DQN and offline-only learning (issue 4).

1. **Locks** (exact versions): combination locks of horizon H in {5, 10, 15} with A = 4 actions.
   For each method, the online episodes collected before the learned (greedy) policy is exactly
   optimal (`episodes_to_optimal`, from `rlkit.planning`):

   * GLOW: exact, F = the Q* of every code (4^H of them, as a product class), tabular W;
   * HyGLOW: exact, the same classes, with an offline dataset of a 70%-optimal policy (each step
     the correct action with probability 0.7: epsilon = 0.4 of uniform actions mixed into the
     optimal policy);
   * offline only: HyGLOW's learner on the dataset alone (its policy before any rollout);
   * Hy-Q (the same dataset) and DQN with epsilon-greedy exploration (no data), neural.

   A method that does not reach the optimal policy within its budget is reported as censored:
   its count is a lower bound (the budget). Results: means with 95% bootstrap CIs over seeds,
   a log-scale plot of episodes against H.
2. **DeepSea** (neural, exploratory): DeepSea of size N = 20 with a dataset of a partially
   competent policy (epsilon = 0.4 mixed into the optimal one); neural HyGLOW against Hy-Q on
   the same data and DQN without, same budget.

Every run goes through `python -m rlkit.train`'s own code path (seeds vmapped on the device).

    uv run python benchmarks/glow_lock.py --json benchmarks/results/glow_lock_cpu_2core.json \
        --plot benchmarks/results/glow_lock.png
    uv run python benchmarks/glow_lock.py --study deepsea --seeds 4
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from offline_hybrid import describe, write_results  # noqa: E402
from offline_hybrid import train as train_summary  # noqa: E402

from rlkit import registry  # noqa: E402
from rlkit.errors import ArgumentParser  # noqa: E402
from rlkit.runner import MetricsLog  # noqa: E402
from rlkit.stats import aggregate  # noqa: E402


def train(agent: str, env: str, env_config, *, run_dir: Path, **kwargs):
    """One `python -m rlkit.train` run (`offline_hybrid.train`): (summary, metrics rows)."""
    summary = train_summary(agent, env, env_config, run_dir=run_dir, **kwargs)
    return summary, MetricsLog(run_dir / "metrics.csv").read()


def paper_figures(summary: dict) -> dict:
    """The figures the paper bounds (round-based runs): per-seed cumulative regret and the
    uniform mixture's return and risk (J* - its return)."""
    if "per_seed_cumulative_regret" not in summary:
        return {}
    mixture = summary["per_seed_mixture_return"]
    return {"cumulative_regret": summary["per_seed_cumulative_regret"],
            "mixture_return": mixture,
            "mixture_risk": [summary["optimal_return"] - x for x in mixture]}


def record(results: list, study: str, label: str, horizon: int, summary: dict,
           budget_episodes: int, **extra) -> None:
    per_seed = summary["per_seed_episodes_to_optimal"]
    censored = [budget_episodes if x is None else x for x in per_seed]
    row = {"study": study, "agent": label, "horizon": horizon,
           "seeds": len(per_seed), "solved": sum(x is not None for x in per_seed),
           "episodes_to_optimal": per_seed, "episodes_censored": censored,
           "budget_episodes": budget_episodes,
           "final_suboptimality": summary["per_seed_suboptimality"],
           "wall_seconds": summary["wall_seconds"], **paper_figures(summary), **extra}
    results.append(row)
    regret = (f"; regret {describe(row['cumulative_regret'])}, mixture risk "
              f"{describe(row['mixture_risk'])}" if "cumulative_regret" in row else "")
    print(f"  {label:13s} H={horizon:2d}: solved {row['solved']}/{row['seeds']}, episodes to "
          f"optimal {describe(censored)}{regret} (budget {budget_episodes}; "
          f"{summary['wall_seconds']:.0f} s)", flush=True)


def lock_dataset(env_config, episodes: int, epsilon: float, seed: int, path: Path):
    from rlkit.collect import collect
    from rlkit.data.dataset import save_dataset

    data = collect("combination-lock", env_config, "mixture", episodes, seed=seed,
                   epsilon=epsilon, checkpoint="optimal", num_envs=episodes)
    save_dataset(path, data.transitions, data.info)
    return data


def lock_study(args, workdir: Path) -> list[dict]:
    results: list[dict] = []
    for preset in args.presets:
        results += lock_preset_study(args, workdir / preset, preset)
    return results


def lock_preset_study(args, workdir: Path, preset: str) -> list[dict]:
    """GLOW, HyGLOW and offline-only under one preset (and Hy-Q, DQN under the first)."""
    entry = registry.env_entry("combination-lock")
    results: list[dict] = []
    glow_label = "glow" if preset == "practical" else f"glow ({preset})"
    for horizon in args.horizons:
        env_config = dataclasses.replace(entry.default_config(), horizon=horizon,
                                         num_actions=args.actions)
        rounds = args.glow_rounds_per_horizon * horizon
        summary, _ = train("glow", "combination-lock", env_config, seeds=args.seeds,
                           total_steps=rounds * horizon, run_dir=workdir / f"glow{horizon}",
                           num_logs=4, preset=preset)
        print(f"lock H={horizon} A={args.actions}, preset {preset}", flush=True)
        record(results, "lock", glow_label, horizon, summary, rounds, preset=preset)
        # HyGLOW and offline-only learning on several independent datasets of the same policy:
        # whether a few episodes happen to cover the deep layers is luck, so average over it.
        hybrid, offline, first_path, first_extra = [], [], None, None
        for dataset_seed in range(args.dataset_seeds):
            path = workdir / f"lock{horizon}-{dataset_seed}"
            data = lock_dataset(env_config, args.offline_episodes, args.offline_epsilon,
                                dataset_seed, path)
            successes = int(np.round(data.transitions.reward.sum()))
            extra = {"dataset_seed": dataset_seed, "dataset_episodes": args.offline_episodes,
                     "dataset_exact_return": data.info.extra["exact_return"],
                     "dataset_successes": successes}
            first_path, first_extra = first_path or path, first_extra or extra
            summary, _ = train("hyglow", "combination-lock", env_config, seeds=args.seeds,
                               total_steps=rounds * horizon, dataset=path, num_logs=4,
                               run_dir=workdir / f"hyglow{horizon}-{dataset_seed}",
                               preset=preset)
            per_seed = summary["per_seed_episodes_to_optimal"]
            hybrid += [rounds if x is None else x for x in per_seed]
            # Offline only: HyGLOW's learner on the whole dataset alone (its policy before a
            # rollout; under the paper preset with its constants at t = 1).
            _, rows = train("hyglow", "combination-lock", env_config, seeds=args.seeds,
                            total_steps=horizon, dataset=path, num_logs=1,
                            run_dir=workdir / f"offline{horizon}-{dataset_seed}",
                            preset=preset, offline_schedule="all")
            returns = [float(r["policy_return"]) for r in rows]
            offline += returns
            results.append({"study": "lock", "agent": "hyglow", "horizon": horizon,
                            "preset": preset,
                            "seeds": args.seeds, "budget_episodes": rounds,
                            "solved": sum(x is not None for x in per_seed),
                            "episodes_to_optimal": per_seed,
                            "episodes_censored": [rounds if x is None else x for x in per_seed],
                            **paper_figures(summary),
                            "offline_only_return": returns, **extra})
            print(f"  dataset {dataset_seed}: {args.offline_episodes} episodes, {successes} "
                  f"open the lock; HyGLOW episodes to optimal {per_seed}; offline-only return "
                  f"{np.mean(returns):.2f}", flush=True)
        print(f"  {'hyglow':13s} H={horizon:2d}: episodes to optimal {describe(hybrid)} over "
              f"{args.dataset_seeds} datasets x {args.seeds} seeds", flush=True)
        print(f"  {'offline only':13s} H={horizon:2d}: optimal in "
              f"{sum(abs(x - 1) < 1e-4 for x in offline)}/{len(offline)}, return "
              f"{describe(offline)}", flush=True)
        if preset != args.presets[0] or args.skip_baselines:
            continue  # Hy-Q and DQN have no preset: run them once
        neural = dict(learning_rate=1e-3, hidden_sizes=(64, 64), target_update_every=50)
        for label, dataset, budget in (("hyq", first_path, args.hyq_episodes),
                                       ("dqn", None, args.dqn_episodes)):
            summary, _ = train(label, "combination-lock", env_config, seeds=args.seeds,
                               total_steps=budget * horizon, dataset=dataset,
                               run_dir=workdir / f"{label}{horizon}", num_logs=args.logs,
                               **neural)
            record(results, "lock", label, horizon, summary, budget,
                   **(first_extra if dataset else {}))
    return results


def deepsea_study(args, workdir: Path) -> list[dict]:
    from rlkit.collect import collect
    from rlkit.data.dataset import save_dataset

    entry = registry.env_entry("deepsea")
    env_config = dataclasses.replace(entry.default_config(), size=args.deepsea_size)
    data = collect("deepsea", env_config, "mixture", args.deepsea_episodes, seed=1,
                   epsilon=args.offline_epsilon, checkpoint="optimal")
    path = save_dataset(workdir / "deepsea", data.transitions, data.info)
    successes = int((data.transitions.reward > 0.5).sum())
    extra = {"dataset_episodes": args.deepsea_episodes,
             "dataset_exact_return": data.info.extra["exact_return"],
             "dataset_successes": successes}
    print(f"deepsea N={args.deepsea_size}: dataset {args.deepsea_episodes} episodes of "
          f"{data.info.behaviour_policy}, {successes} reach the treasure", flush=True)
    results: list[dict] = []
    size = args.deepsea_size
    budget = args.deepsea_episodes_budget
    summary, _ = train("hyglow", "deepsea", env_config, seeds=args.seeds,
                       total_steps=budget * size, dataset=path, num_logs=args.logs,
                       run_dir=workdir / "hyglow-neural", version="neural")
    record(results, "deepsea", "hyglow (neural)", size, summary, budget, **extra)
    # 2 envs and an update per iteration: 0.5 updates per env step, a little more than
    # HyGLOW's 32 per round of 4 x 20 steps (0.4), so the baselines are not starved of updates.
    neural = dict(learning_rate=1e-3, hidden_sizes=(128, 128), target_update_every=50,
                  num_envs=2)
    for label, dataset in (("hyq", path), ("dqn", None)):
        summary, _ = train(label, "deepsea", env_config, seeds=args.seeds,
                           total_steps=budget * size, dataset=dataset, num_logs=args.logs,
                           run_dir=workdir / f"{label}-deepsea", **neural)
        record(results, "deepsea", label, size, summary, budget, **extra)
    return results


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    rows = [r for r in results if r["study"] == "lock" and "episodes_censored" in r]
    def label(r):  # "hyglow (paper)" for HyGLOW's paper-preset rows; GLOW's carry it already
        preset = r.get("preset", "practical")
        return r["agent"] if preset == "practical" or "(" in r["agent"] else \
            f"{r['agent']} ({preset})"

    for agent, marker in (("glow", "o"), ("glow (paper)", "x"), ("hyglow", "s"),
                          ("hyglow (paper)", "D"), ("hyq", "^"), ("dqn", "v")):
        merged: dict[int, dict] = {}  # HyGLOW has one row per dataset: pool them per H
        for r in (r for r in rows if label(r) == agent):
            pool = merged.setdefault(r["horizon"], {"horizon": r["horizon"], "solved": 0,
                                                    "seeds": 0, "episodes_censored": []})
            pool["solved"] += r["solved"]
            pool["seeds"] += r["seeds"]
            pool["episodes_censored"] += r["episodes_censored"]
        mine = [merged[h] for h in sorted(merged)]
        if not mine:
            continue
        horizons = [r["horizon"] for r in mine]
        means, lows, highs = [], [], []
        for r in mine:
            stats = aggregate(np.asarray(r["episodes_censored"], np.float64))
            means.append(max(stats["mean"], 0.5))
            low, high = stats["ci95"] or (stats["mean"], stats["mean"])  # one seed: no bar
            lows.append(max(stats["mean"] - low, 0))
            highs.append(high - stats["mean"])
        line = ax.errorbar(horizons, means, yerr=[lows, highs], marker=marker, capsize=3,
                           label=agent)
        for r, mean in zip(mine, means, strict=True):
            if r["solved"] < r["seeds"]:  # censored: a lower bound
                ax.annotate(f"≥ ({r['solved']}/{r['seeds']} solved)", (r["horizon"], mean),
                            textcoords="offset points", xytext=(4, 6), fontsize=7,
                            color=line[0].get_color())
            if max(r["episodes_censored"]) == 0:  # plotted at 0.5: the log axis has no 0
                ax.annotate("0: the offline data suffice", (r["horizon"], mean),
                            textcoords="offset points", xytext=(6, -3), fontsize=7,
                            color=line[0].get_color())
    ax.set_yscale("log")
    ax.set_ylim(0.3, ax.get_ylim()[1] * 4)
    ax.set_xlabel("lock horizon H (A = 4)")
    ax.set_ylabel("online episodes until the policy is optimal")
    ax.set_title("Combination lock: exact GLOW / HyGLOW vs Hy-Q and DQN")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", choices=("all", "lock", "deepsea"), default="all")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--horizons", type=int, nargs="+", default=[5, 10, 15, 20])
    parser.add_argument("--actions", type=int, default=4)
    parser.add_argument("--offline-episodes", type=int, default=10)
    parser.add_argument("--dataset-seeds", type=int, default=4,
                        help="independent datasets for HyGLOW and offline-only (Hy-Q: the first)")
    parser.add_argument("--offline-epsilon", type=float, default=0.4,
                        help="uniform actions mixed into the optimal policy (0.4 of 4 actions: "
                        "the correct one with probability 0.7)")
    parser.add_argument("--glow-rounds-per-horizon", type=int, default=6,
                        help="exact GLOW / HyGLOW rounds (episodes) per unit of horizon")
    parser.add_argument("--presets", nargs="+", choices=("practical", "paper"),
                        default=["practical", "paper"],
                        help="GLOW / HyGLOW presets to run (agents.glow's module docstring)")
    parser.add_argument("--skip-baselines", action="store_true",
                        help="leave out Hy-Q and DQN (the slow neural baselines)")
    parser.add_argument("--hyq-episodes", type=int, default=2000)
    parser.add_argument("--dqn-episodes", type=int, default=5000)
    parser.add_argument("--logs", type=int, default=50,
                        help="evaluations per neural run (the resolution of episodes_to_optimal)")
    parser.add_argument("--deepsea-size", type=int, default=20)
    parser.add_argument("--deepsea-episodes", type=int, default=200)
    parser.add_argument("--deepsea-episodes-budget", type=int, default=300)
    parser.add_output("--json", default=None)
    parser.add_output("--plot", figure=True, default=None)
    parser.add_argument("--replot", type=Path, default=None,
                        help="only draw --plot from the results of an earlier --json")
    args = parser.parse_args()
    if args.replot:
        plot(json.loads(args.replot.read_text())["results"], args.plot)
        return

    import jax

    start = time.perf_counter()
    results: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="rlkit-glow-") as tmp:
        if args.study in ("all", "lock"):
            results += lock_study(args, Path(tmp))
        if args.study in ("all", "deepsea"):
            results += deepsea_study(args, Path(tmp))
    elapsed = time.perf_counter() - start
    print(f"total {elapsed:.0f} s on {jax.devices()[0].device_kind}")
    if args.plot and any(r["study"] == "lock" for r in results):
        plot(results, args.plot)
    if args.json:
        write_results(args.json, args, elapsed, results)


if __name__ == "__main__":
    main()
