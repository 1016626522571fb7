"""Exploration with intrinsic rewards (issue 15): PPO, PPO+RND, PPO+RDD, DQN and DQN+RDD.

Studies (`--study`, several allowed):

* `deepsea`: DeepSea of sizes `--sizes` (deterministic, randomised action mapping, bsuite's move
  cost). Per method and seed: training episodes before the first success (the first logging
  chunk whose best episode has a positive return: a failed episode returns at most 0; an upper
  bound at chunk resolution), episodes before the agent's policy is exactly optimal
  (`rlkit.planning`, exact), and the final policy's exact return. A seed *solves* DeepSea when
  its final policy's exact return is at least 90% of J* (PPO's policy is stochastic, so "exactly
  optimal" is rarely reached by it, while DQN's greedy policy can be).
* `riverswim`: RiverSwim (exact model): the same figures, the bar being J*.
* `minatar`: a larger state, `gymnax:Breakout-MinAtar` ([10, 10, 4] grids): every method of
  `--methods` at a fixed budget (`--minatar-steps` env steps per seed), the final policy's
  Monte-Carlo return and the training-episode return per chunk (`--minatar-plot`).
* `pseudo-count`: bonus against visit count on a tabular env. A uniform random walk in DeepSea
  (size `--count-size`) produces one-hot observations whose visit counts span orders of
  magnitude; the transform (`rlkit.intrinsic`, RDD and RND, default networks, Adam) trains on
  them batch by batch. Then each state's mean-readout bonus is plotted against its visit count
  n on log-log axes with the sigma^2 / n line, and the slope of a least-squares fit of
  log(bonus) on log(n) is reported (states with n >= `--count-min`).
* `speed`: env steps per second of PPO and PPO+RDD (predictor rows by subset and by mask) on
  DeepSea 20, side by side in one process,
  repeats interleaved (PPO, PPO+RDD, PPO, ...); compile time excluded (the run summary's own
  `steps_per_second`).

Every training run goes through `python -m rlkit.train`'s own code path (seeds vmapped on the
device). Means with 95% bootstrap CIs (`rlkit.stats`).

    uv run python benchmarks/exploration.py --study deepsea --sizes 20 --seeds 8 \\
        --methods ppo+rdd ppo ppo+rnd --deepsea-episodes 98304 --logs 32 \\
        --json benchmarks/results/exploration_deepsea20_98k_cpu.json \\
        --tabular-plot benchmarks/results/exploration_deepsea20.png
    uv run python benchmarks/exploration.py --replot RESULTS.json --tabular-plot PNG
    uv run python benchmarks/exploration.py --study pseudo-count speed \\
        --plot benchmarks/results/exploration_bonus_vs_count.png
"""

from __future__ import annotations

import argparse
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
from rlkit.errors import ArgumentParser, RlkitError  # noqa: E402
from rlkit.intrinsic import READOUTS, UPDATE_ROWS  # noqa: E402
from rlkit.intrinsic import Config as IntrinsicConfig  # noqa: E402
from rlkit.runner import MetricsLog  # noqa: E402

# PPO on tabular envs: many short rollouts, a constant step size and a small entropy bonus, so
# that the (near-tabular) policy can commit to the path its advantages point at; with an
# intrinsic reward, the intrinsic advantage weighs twice the extrinsic one. Shared by all PPO runs
# (the two coefficients only act when an intrinsic reward is on).
PPO_DEEPSEA = dict(num_envs=16, rollout_length=32, learning_rate=1e-3, anneal_lr=False,
                   ent_coef=0.003, intrinsic_coef=2.0, extrinsic_coef=1.0)
DQN_DEEPSEA = dict(num_envs=8, learning_starts=1000, epsilon_decay_steps=20_000,
                   learning_rate=1e-3, target_update_every=50)
PPO_MINATAR = dict(num_envs=64, rollout_length=32, learning_rate=5e-4, hidden_sizes=(256, 256),
                   intrinsic_coef=0.5)
DQN_MINATAR = dict(num_envs=16, learning_starts=5000, buffer_size=100_000,
                   epsilon_decay_steps=100_000, target_update_every=250, hidden_sizes=(256, 256),
                   intrinsic_coef=0.5)
METHODS = {
    "ppo": ("ppo", {"intrinsic": "none"}),
    "ppo+rnd": ("ppo", {"intrinsic": "rnd"}),
    "ppo+rdd": ("ppo", {"intrinsic": "rdd"}),
    "dqn": ("dqn", {"intrinsic": "none"}),
    "dqn+rdd": ("dqn", {"intrinsic": "rdd"}),
}


def agent_overrides(method: str, overrides: dict) -> dict:
    """`overrides` plus the method's intrinsic choice, as `module.Config` keywords. The shared
    settings (PPO_DEEPSEA, ...) carry the intrinsic coefficients; without an intrinsic reward they
    are dropped, since the agents refuse an intrinsic field that would act on nothing."""
    agent, options = METHODS[method]
    fields = dict(overrides, **options)
    if options["intrinsic"] == "none":
        fields = {k: v for k, v in fields.items()
                  if k == "intrinsic" or not k.startswith("intrinsic_")}
    return fields


def study_settings(method: str, args, ppo: dict, dqn: dict) -> dict:
    """A study's shared settings for `method`'s agent (`ppo` or `dqn`), with RDD's `--rdd-sigma`
    and `--rdd-readout` for the RDD methods, `--update-rows` for RND and RDD."""
    overrides = dict(ppo if METHODS[method][0] == "ppo" else dqn)
    if METHODS[method][1]["intrinsic"] == "rdd":
        overrides.update(intrinsic_sigma=args.rdd_sigma, intrinsic_readout=args.rdd_readout)
    if METHODS[method][1]["intrinsic"] != "none":
        overrides.update(intrinsic_update_rows=args.update_rows)
    return overrides


def train(method: str, env: str, env_config, overrides: dict, *, seeds: int, total_steps: int,
          run_dir: Path, num_logs: int):
    agent = METHODS[method][0]
    summary = train_summary(agent, env, env_config, seeds=seeds, total_steps=total_steps,
                            run_dir=run_dir, num_logs=num_logs,
                            **agent_overrides(method, overrides))
    return summary, MetricsLog(run_dir / "metrics.csv").read()


def first_success(rows: list[dict], seeds: int) -> list[int | None]:
    """Per seed, the training episodes finished by the end of the first chunk whose best episode
    (`episode_return_max`) has a positive return (None if none has): on DeepSea a success
    returns 0.99 and every failure at most 0. (The chunk's mean is no test: one success among
    hundreds of failures that each paid the move cost can sum to less than 0.)"""
    result = []
    for seed in range(seeds):
        episodes, found = 0, None
        for row in sorted((r for r in rows if int(r["seed"]) == seed),
                          key=lambda r: int(r["chunk"])):
            count = int(float(row["episodes"]))
            episodes += count
            if count and float(row["episode_return_max"]) > 0:
                found = episodes
                break
        result.append(found)
    return result


def solved_curve(rows: list[dict], seeds: int, optimal: float) -> dict[str, list]:
    """Per chunk: the mean training episodes per seed by its end, and the seeds whose policy's
    exact return (the chunk's `eval_return`) is at least 90% of J*."""
    chunks = sorted({int(r["chunk"]) for r in rows})
    episodes, solved, total = [], [], np.zeros(seeds)
    for chunk in chunks:
        at = [r for r in rows if int(r["chunk"]) == chunk]
        for r in at:
            total[int(r["seed"])] += float(r["episodes"])
        episodes.append(float(total.mean()))
        solved.append(sum(float(r["eval_return"]) >= 0.9 * optimal for r in at))
    return {"episodes": episodes, "solved": solved}


def tabular_study(args, workdir: Path, env: str, env_config, label: str, budget: int,
                  methods: list[str]) -> list[dict]:
    """Every method on one tabular env: first success, episodes to optimal, final return."""
    results = []
    for method in methods:
        overrides = study_settings(method, args, PPO_DEEPSEA, DQN_DEEPSEA)
        run_dir = workdir / f"{label}-{method}"
        start = time.time()
        summary, rows = train(method, env, env_config, overrides, seeds=args.seeds,
                              total_steps=budget, run_dir=run_dir, num_logs=args.logs)
        optimal = summary["optimal_return"]
        final = summary["per_seed"]
        solved = [x >= 0.9 * optimal for x in final]
        budget_episodes = int(sum(float(r["episodes"]) for r in rows) / args.seeds)
        success = first_success(rows, args.seeds)
        to_optimal = summary.get("per_seed_episodes_to_optimal", [None] * args.seeds)
        row = {"study": label, "method": method, "seeds": args.seeds, "env_steps": budget,
               "budget_episodes": budget_episodes, "optimal_return": optimal,
               "final_return": final, "solved": int(sum(solved)),
               "episodes_to_first_success": success, "episodes_to_optimal": to_optimal,
               "solved_by_chunk": solved_curve(rows, args.seeds, optimal),
               "steps_per_second": summary.get("steps_per_second"),
               "wall_seconds": time.time() - start}
        results.append(row)
        censored = [budget_episodes if x is None else x for x in success]
        print(f"  {label:10s} {method:8s}: solved {row['solved']}/{args.seeds}, final return "
              f"{describe(final)} (J* {optimal:.3f}), episodes to first success "
              f"{describe(censored)} ({sum(x is not None for x in success)} found), to optimal "
              f"{sum(x is not None for x in to_optimal)}/{args.seeds} "
              f"({row['wall_seconds']:.0f} s)", flush=True)
    return results


def deepsea_study(args, workdir: Path) -> list[dict]:
    entry = registry.env_entry("deepsea")
    results = []
    for size in args.sizes:
        config = dataclasses.replace(entry.default_config(), size=size)
        budget = args.deepsea_episodes * size
        print(f"DeepSea {size} ({args.deepsea_episodes} episodes per seed)", flush=True)
        results += tabular_study(args, workdir, "deepsea", config, f"deepsea{size}", budget,
                                 args.methods)
    return results


def riverswim_study(args, workdir: Path) -> list[dict]:
    entry = registry.env_entry("riverswim")
    config = entry.default_config()
    print(f"RiverSwim ({args.riverswim_steps} env steps per seed)", flush=True)
    return tabular_study(args, workdir, "riverswim", config, "riverswim", args.riverswim_steps,
                         args.methods)


def minatar_study(args, workdir: Path) -> list[dict]:
    """Every method of `--methods` on Breakout-MinAtar: per seed the final policy's Monte-Carlo
    return (16 episodes of `agent.policy`) and the mean training-episode return per chunk."""
    env = "breakout-minatar"
    entry = registry.env_entry(env)
    results = []
    print(f"Breakout-MinAtar ({args.minatar_steps} env steps per seed)", flush=True)
    for method in args.methods:
        overrides = study_settings(method, args, PPO_MINATAR, DQN_MINATAR)
        start = time.time()
        summary, rows = train(method, env, entry.default_config(), overrides,
                              seeds=args.seeds, total_steps=args.minatar_steps,
                              run_dir=workdir / f"minatar-{method}", num_logs=args.logs)
        row = {"study": "minatar", "method": method, "seeds": args.seeds,
               "env_steps": args.minatar_steps, "final_return": summary["per_seed"],
               "return_by_chunk": return_curve(rows, args.seeds),
               "steps_per_second": summary.get("steps_per_second"),
               "wall_seconds": time.time() - start}
        results.append(row)
        print(f"  {method:8s}: final return {describe(row['final_return'])} "
              f"({row['wall_seconds']:.0f} s)", flush=True)
    return results


def return_curve(rows: list[dict], seeds: int) -> dict[str, list]:
    """Per chunk: env steps per seed by its end and each seed's mean training-episode return in
    the chunk (None for a chunk without a finished episode)."""
    chunks = sorted({int(r["chunk"]) for r in rows})
    steps, returns = [], []
    for chunk in chunks:
        at = sorted((r for r in rows if int(r["chunk"]) == chunk), key=lambda r: int(r["seed"]))
        steps.append(int(float(at[0]["env_steps"])))
        returns.append([None if not float(r["episodes"]) else float(r["episode_return"])
                        for r in at])
    return {"env_steps": steps, "episode_return": returns}


def count_optimizer(args):
    """The predictor's optimiser in the pseudo-count study: Adam (the paper's) or plain SGD, at
    `--count-learning-rate`, constant or divided by (1 + t / `--count-decay`) at update t
    (Robbins-Monro: the step sizes of a running mean, were each state visited every update)."""
    import optax

    rate = args.count_learning_rate
    if args.count_decay is not None:
        rate = lambda step, lr=rate, t0=args.count_decay: lr / (1.0 + step / t0)  # noqa: E731
    return optax.adam(rate) if args.count_optimizer == "adam" else optax.sgd(rate)


def pseudo_count_study(args, plot: Path | None) -> list[dict]:
    """Bonus against visit count on DeepSea visited by a uniform random walk."""
    import jax
    import jax.numpy as jnp

    from rlkit import intrinsic
    from rlkit.loops.on_device import run_episodes

    env = registry.make_env("deepsea", dataclasses.replace(
        registry.env_entry("deepsea").default_config(), size=args.count_size))
    model = env.model(env.default_params)
    states = model.observations[:-1]  # [S, N, N] one-hot cells (the terminal one is all zeros)
    results, curves = [], {}
    for kind in ("rdd", "rnd"):
        config = intrinsic.Config(kind=kind, update_proportion=1.0, count_states=True,
                                  learning_rate=args.count_learning_rate,
                                  sigma=args.count_sigma, mean_scale=args.count_mean_scale)
        transform = intrinsic.make_transform(config, env.spec.obs_shape,
                                             optimizer=count_optimizer(args))

        def run(key, states, transform=transform):
            init_key, key = jax.random.split(key)
            state = transform.init(init_key, 1)

            def batch(state, key):
                walk_key, update_key = jax.random.split(key)
                rows = run_episodes(env, env.default_params, lambda obs, s, t: jnp.zeros(
                    (obs.shape[0], 2)), walk_key, args.count_episodes_per_batch)
                obs = rows.obs[:, 1:].reshape(-1, *env.spec.obs_shape)  # next observations
                state = transform.observe(state, obs)
                return transform.update(state, obs, update_key)[0], None

            state, _ = jax.lax.scan(batch, state, jax.random.split(key, args.count_batches))
            return intrinsic.per_state(transform, state, states)

        bonus, count = jax.jit(run)(jax.random.key(args.count_seed), states)
        bonus, count = np.asarray(bonus), np.asarray(count)
        keep = count >= args.count_min
        slope, intercept = np.polyfit(np.log(count[keep]), np.log(bonus[keep]), 1)
        most = keep & (count >= np.median(count[keep]))  # the most visited half
        slope_most = np.polyfit(np.log(count[most]), np.log(bonus[most]), 1)[0]
        results.append({"study": "pseudo-count", "method": kind, "size": args.count_size,
                        "states_fitted": int(keep.sum()), "slope": float(slope),
                        "slope_most_visited_half": float(slope_most),
                        "bonus_over_sigma2_n": float(np.median(
                            bonus[keep] * count[keep] / args.count_sigma**2)),
                        "intercept": float(intercept), "count_range": [
                            float(count[keep].min()), float(count[keep].max())],
                        "bonus": bonus.tolist(), "count": count.tolist()})
        curves[kind] = (count[keep], bonus[keep], slope)
        print(f"  {kind}: log-log slope of bonus on visit count {slope:+.3f} over "
              f"{int(keep.sum())} states (n from {count[keep].min():.0f} to "
              f"{count[keep].max():.0f}), {slope_most:+.3f} over the most visited half; "
              f"bonus / (sigma^2 / n), median {results[-1]['bonus_over_sigma2_n']:.1f}",
              flush=True)
    if plot is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5.5, 4))
        for kind, marker in (("rdd", "o"), ("rnd", "x")):
            count, bonus, slope = curves[kind]
            ax.loglog(count, bonus, marker, ms=3, alpha=0.6,
                      label=f"{kind.upper()} (fitted slope {slope:+.2f})")
        n = np.geomspace(args.count_min, max(c.max() for c, _, _ in curves.values()), 50)
        ax.loglog(n, args.count_sigma**2 / n, "k--",
                  label=rf"$\sigma^2 / n$ ($\sigma = {args.count_sigma:g}$)")
        ax.set_xlabel("visit count n (rows the predictor trained on)")
        ax.set_ylabel("bonus (1/k) ||f(s) - mu(s)||^2")
        ax.set_title(f"DeepSea {args.count_size}, uniform random walk")
        ax.legend(fontsize=8)
        fig.tight_layout()
        plot.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(plot, dpi=120)
        print(f"  plot: {plot}")
    return results


def speed_study(args, workdir: Path) -> list[dict]:
    """PPO and PPO+RDD env steps per second, repeats interleaved in one process: PPO+RDD with
    the predictor's rows drawn both ways (`update_rows` "subset", the default, and "mask")."""
    entry = registry.env_entry("deepsea")
    config = dataclasses.replace(entry.default_config(), size=20)
    variants = {"ppo": ("ppo", {}), "ppo+rdd": ("ppo+rdd", {}),
                "ppo+rdd mask": ("ppo+rdd", {"intrinsic_update_rows": "mask"})}
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for repeat in range(args.speed_repeats):
        for name, (method, extra) in variants.items():
            summary, _ = train(method, "deepsea", config, dict(PPO_DEEPSEA, **extra),
                               seeds=args.seeds, total_steps=args.speed_steps,
                               run_dir=workdir / f"speed-{name.replace(' ', '-')}-{repeat}",
                               num_logs=2)
            rates[name].append(summary["steps_per_second"])
    ratios = {name: [b / a for a, b in zip(rates["ppo"], rates[name], strict=True)]
              for name in variants if name != "ppo"}
    print("  env steps/s " + ", ".join(f"{name} {describe(rates[name])}" for name in variants),
          flush=True)
    for name, values in ratios.items():
        print(f"  {name} / ppo per repeat {[round(r, 2) for r in values]}", flush=True)
    return [{"study": "speed", "seeds": args.seeds, "env_steps": args.speed_steps,
             "steps_per_second": rates, "ratio_rdd_over_ppo": ratios["ppo+rdd"],
             "ratio_rdd_mask_over_ppo": ratios["ppo+rdd mask"]}]


def plot_tabular(results: list[dict], path: Path) -> None:
    """One panel per tabular study against training episodes: on DeepSea the seeds with a first
    success (solid; on RiverSwim every episode earns a reward, so there is none), and the seeds
    whose policy is solved (dashed, where the per-chunk curve was recorded)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    studies = list(dict.fromkeys(r["study"] for r in results if "episodes_to_first_success" in r))
    if not studies:
        return
    fig, axes = plt.subplots(1, len(studies), figsize=(4.5 * len(studies), 3.6), squeeze=False)
    for ax, study in zip(axes[0], studies, strict=True):
        rows = [r for r in results if r["study"] == study and "episodes_to_first_success" in r]
        successes = study.startswith("deepsea")
        for index, row in enumerate(rows):
            color = f"C{index}"
            label = f"{row['method']} (solved at the end {row['solved']}/{row['seeds']})"
            if successes:
                found = sorted(x for x in row["episodes_to_first_success"] if x is not None)
                xs = [0, *found, row["budget_episodes"]]
                ys = [0, *range(1, len(found) + 1), len(found)]
                ax.step(xs, ys, where="post", color=color, label=label)
                label = None
            curve = row.get("solved_by_chunk")
            if curve:
                ax.plot([0, *curve["episodes"]], [0, *curve["solved"]], "--", color=color,
                        alpha=0.7, label=label)
        drawn = ["seeds with a success (solid)"] if successes else []
        if any(r.get("solved_by_chunk") for r in rows):
            drawn.append("seeds solved (dashed)")
        ax.set_title(f"{study}: {', '.join(drawn)}", fontsize=9)
        ax.set_xlabel("training episodes per seed")
        ax.set_ylabel("seeds")
        ax.set_ylim(-0.2, max(r["seeds"] for r in results if r["study"] == study) + 0.2)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"  plot: {path}")


def plot_returns(results: list[dict], path: Path) -> None:
    """Training-episode return against env steps per seed for every MinAtar run: the mean over
    seeds with its 95% bootstrap interval per chunk (`rlkit.plotting.curve`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rlkit.plotting import curve

    rows = [r for r in results if r.get("return_by_chunk")]
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for index, row in enumerate(rows):
        chunks = row["return_by_chunk"]
        points = [{"env_steps": steps, "episode_return": "nan" if value is None else value}
                  for steps, per_seed in zip(chunks["env_steps"], chunks["episode_return"],
                                             strict=True) for value in per_seed]
        xs, means, lows, highs = curve(points, "episode_return")
        ax.plot(xs, means, color=f"C{index}", label=f"{row['method']} ({row['seeds']} seeds)")
        ax.fill_between(xs, lows, highs, color=f"C{index}", alpha=0.2)
    ax.set_title("Breakout-MinAtar: training-episode return (mean, 95% CI)", fontsize=9)
    ax.set_xlabel("env steps per seed")
    ax.set_ylabel("return")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"  plot: {path}")


def check_args(parser: argparse.ArgumentParser, args) -> None:
    """One line naming the flag for a value no run could use (argparse's error: exit 2)."""
    positive = {"--seeds": args.seeds, "--deepsea-episodes": args.deepsea_episodes,
                "--riverswim-steps": args.riverswim_steps, "--minatar-steps": args.minatar_steps,
                "--logs": args.logs, "--count-batches": args.count_batches,
                "--count-episodes-per-batch": args.count_episodes_per_batch,
                "--speed-repeats": args.speed_repeats, "--speed-steps": args.speed_steps}
    for flag, value in positive.items():
        if value < 1:
            parser.error(f"{flag} must be at least 1, got {value}")
    for flag, value in (("--count-learning-rate", args.count_learning_rate),
                        ("--count-sigma", args.count_sigma), ("--rdd-sigma", args.rdd_sigma),
                        ("--count-min", args.count_min),
                        ("--count-mean-scale", args.count_mean_scale),
                        ("--count-decay", 1.0 if args.count_decay is None else args.count_decay)):
        if not value > 0:
            parser.error(f"{flag} must be > 0, got {value}")
    for size in [*args.sizes, args.count_size]:
        if size < 2:
            parser.error(f"DeepSea sizes (--sizes, --count-size) must be at least 2, got {size}")


def main() -> None:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", nargs="+", default=["deepsea"],
                        choices=("deepsea", "riverswim", "minatar", "pseudo-count", "speed"),
                        help="studies to run, in order (default: deepsea)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS),
                        help="methods of the deepsea, riverswim and minatar studies (default: all "
                             "five)")
    parser.add_argument("--seeds", type=int, default=8,
                        help="seeds per run, vmapped in one program (default: 8)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 20, 30],
                        help="DeepSea sizes of the deepsea study (default: 10 20 30)")
    parser.add_argument("--deepsea-episodes", type=int, default=8192,
                        help="training episodes per seed on DeepSea (env steps = this x size)")
    parser.add_argument("--riverswim-steps", type=int, default=100_000)
    parser.add_argument("--minatar-steps", type=int, default=1_000_000)
    parser.add_argument("--logs", type=int, default=20,
                        help="chunks per run: the resolution of the episode counts")
    parser.add_argument("--count-size", type=int, default=20)
    parser.add_argument("--count-batches", type=int, default=4000,
                        help="predictor steps of the pseudo-count study")
    parser.add_argument("--count-episodes-per-batch", type=int, default=4)
    parser.add_argument("--count-learning-rate", type=float, default=1e-3)
    parser.add_argument("--count-min", type=float, default=4)
    parser.add_argument("--count-sigma", type=float, default=1.0,
                        help="RDD's sigma in the pseudo-count study (the sigma^2 / n line too)")
    parser.add_argument("--count-seed", type=int, default=0)
    parser.add_argument("--count-mean-scale", type=float, default=1.0,
                        help="RMS magnitude of the target mean mu(s) (the paper's 'mean')")
    parser.add_argument("--count-optimizer", choices=("adam", "sgd"), default="adam",
                        help="the predictor's optimiser in the pseudo-count study")
    parser.add_argument("--count-decay", type=float, default=None, metavar="T0",
                        help="divide the predictor's step size by 1 + t / T0 at update t "
                             "(default: constant)")
    parser.add_argument("--speed-repeats", type=int, default=3)
    parser.add_argument("--speed-steps", type=int, default=163_840)
    parser.add_argument("--rdd-sigma", type=float, default=1.0,
                        help="RDD's sigma in the deepsea and riverswim studies (the paper's 1)")
    parser.add_argument("--rdd-readout", choices=READOUTS, default=IntrinsicConfig.readout,
                        help="RDD's bonus against the target's mean (the paper's Eq. 11) or a "
                             "fresh sample (deepsea, riverswim and minatar studies)")
    parser.add_argument("--update-rows", choices=UPDATE_ROWS, default=IntrinsicConfig.update_rows,
                        help="how RND's and RDD's predictor picks its share of each batch: an "
                             "exact subset (the default) or RND's Bernoulli mask (the default "
                             "before session 14; the results recorded then used it)")
    parser.add_output("--json", default=None,
                        help="write the results (with the device, jax version and arguments)")
    parser.add_output("--plot", figure=True, default=None,
                        help="bonus against visit count (pseudo-count study)")
    parser.add_output("--tabular-plot", figure=True, default=None,
                        help="seeds with a success and seeds solved against training episodes "
                             "(deepsea and riverswim studies)")
    parser.add_output("--minatar-plot", figure=True, default=None,
                        help="training-episode return against env steps (minatar study)")
    parser.add_argument("--replot", type=Path, nargs="+", default=None, metavar="JSON",
                        help="draw --tabular-plot and/or --minatar-plot from saved results files "
                             "(runs of one study share its panel) and exit")
    args = parser.parse_args()
    check_args(parser, args)
    if args.replot is not None:
        if args.tabular_plot is None and args.minatar_plot is None:
            parser.error("--replot needs --tabular-plot PATH or --minatar-plot PATH")
        saved = []
        for path in args.replot:
            try:
                data = json.loads(path.read_text())
                rows, sigma = data["results"], data["args"].get("rdd_sigma", 1.0)
                readout = data["args"].get("rdd_readout", "mean")
                # Files written before --update-rows existed were all measured with the mask.
                update_rows = data["args"].get("update_rows", "mask")
                if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                    raise ValueError("its results are not a list of rows")
            except (OSError, ValueError, KeyError, AttributeError, TypeError) as error:
                parser.error(f"--replot {path}: not a results file of this script ({error})")
            for row in rows:  # a run at another setting gets its own legend entry
                label = method = row.get("method", "")
                if method.endswith("rdd"):
                    label += (f" sigma {sigma:g}" if sigma != 1.0 else "") + (
                        f" {readout} readout" if readout != "mean" else "")
                if method.endswith(("rdd", "rnd")) and update_rows != "subset":
                    label += f" {update_rows} rows"
                saved.append(dict(row, method=label))
        for flag, path, key, draw in (
                ("--tabular-plot", args.tabular_plot, "episodes_to_first_success", plot_tabular),
                ("--minatar-plot", args.minatar_plot, "return_by_chunk", plot_returns)):
            if path is None:
                continue
            if not any(row.get(key) for row in saved):
                parser.error(f"{flag}: the --replot files hold no rows for this plot")
            draw(saved, path)
        return
    try:
        run_studies(args)
    except RlkitError as error:  # a budget or setting rlkit.train refuses: one line, exit 2
        parser.error(str(error))


def run_studies(args) -> None:
    start = time.time()
    results: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for study in args.study:
            if study == "deepsea":
                results += deepsea_study(args, workdir)
            elif study == "riverswim":
                results += riverswim_study(args, workdir)
            elif study == "minatar":
                results += minatar_study(args, workdir)
            elif study == "pseudo-count":
                print(f"Bonus against visit count (DeepSea {args.count_size})", flush=True)
                results += pseudo_count_study(args, args.plot)
            else:
                print("Throughput, PPO against PPO+RDD (DeepSea 20)", flush=True)
                results += speed_study(args, workdir)
    if args.json is not None:
        write_results(args.json, args, time.time() - start, results)
        print(f"results: {args.json}")
    if args.tabular_plot is not None:
        plot_tabular(results, args.tabular_plot)
    if args.minatar_plot is not None:
        plot_returns(results, args.minatar_plot)


if __name__ == "__main__":
    main()
