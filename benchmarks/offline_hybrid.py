"""Does offline data help, and do offline RL methods beat imitation? Two side-by-side studies.

1. **Hybrid** (Hy-Q vs DQN): on combination locks of growing horizon, online episodes until the
   greedy policy is exactly optimal (`episodes_to_optimal`, from `rlkit.planning`), for Hy-Q with
   an offline dataset of a near-optimal policy and for epsilon-greedy DQN without data. Same
   network, optimiser and budget.
2. **Offline** (CQL, IQL vs BC): on a chain with a distractor reward at the left end, from a
   dataset of mixed quality: a quarter of the episodes from the optimal policy and three quarters
   from a myopic one (greedy in the immediate reward, so it farms the distractor), each with 10%
   random actions. The final policy's exact return and normalised score (D4RL's: 0 is the
   uniform policy, 100 the optimal one).

Every configuration runs `--seeds` seeds side by side (vmapped) through the same drivers as
`python -m rlkit.train`; results are means with 95% bootstrap confidence intervals over seeds.

    uv run python benchmarks/offline_hybrid.py                 # both studies, ~10 min on 2 CPUs
    uv run python benchmarks/offline_hybrid.py --study offline --seeds 4
    uv run python benchmarks/offline_hybrid.py --json benchmarks/results/offline_hybrid.json
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlkit import registry  # noqa: E402
from rlkit.errors import ArgumentParser  # noqa: E402
from rlkit.stats import aggregate  # noqa: E402
from rlkit.train import Experiment, RunOptions, execute  # noqa: E402


def train(agent: str, env: str, env_config, *, seeds: int, total_steps: int, run_dir: Path,
          dataset: Path | None = None, num_logs: int = 20, **agent_overrides) -> dict:
    """One `python -m rlkit.train` run, programmatically; returns its summary."""
    module = registry.agent_module(agent)
    fields = {f.name for f in dataclasses.fields(module.Config)}
    if "total_steps" in fields:
        agent_overrides.setdefault("total_steps", total_steps)
    experiment = Experiment(
        agent=agent, env=env,
        run=RunOptions(seeds=seeds, total_steps=total_steps, run_dir=str(run_dir),
                       num_logs=num_logs, progress=False,
                       dataset=None if dataset is None else str(dataset)),
        agent_config=module.Config(**agent_overrides), env_config=env_config)
    return execute(experiment).summary


def describe(values: list[float]) -> str:
    stats = aggregate(np.asarray(values, np.float64))
    if stats["ci95"] is None:  # one seed: no interval
        return f"{stats['mean']:8.2f}  (one seed)"
    lo, hi = stats["ci95"]
    return f"{stats['mean']:8.2f}  [{lo:7.2f}, {hi:7.2f}]"


# --------------------------------------------------------------------------------------------
# 1. Hybrid: Hy-Q vs DQN on combination locks
# --------------------------------------------------------------------------------------------


def hybrid_study(args, workdir: Path) -> list[dict]:
    from rlkit.collect import collect
    from rlkit.data.dataset import save_dataset

    entry = registry.env_entry("combination-lock")
    results = []
    for horizon in args.horizons:
        env_config = dataclasses.replace(entry.default_config(), horizon=horizon,
                                         num_actions=args.lock_actions)
        data = collect("combination-lock", env_config, "mixture", args.offline_episodes,
                       seed=1, epsilon=args.offline_epsilon, checkpoint="optimal")
        path = save_dataset(workdir / f"lock{horizon}", data.transitions, data.info)
        budget = args.lock_steps_per_horizon * horizon
        common = dict(seeds=args.seeds, total_steps=budget, num_logs=args.lock_logs,
                      learning_rate=1e-3, hidden_sizes=(64, 64), target_update_every=50)
        runs = {
            "hyq": train("hyq", "combination-lock", env_config, dataset=path,
                         run_dir=workdir / f"hyq{horizon}", **common),
            "dqn": train("dqn", "combination-lock", env_config,
                         run_dir=workdir / f"dqn{horizon}", **common),
        }
        for agent, summary in runs.items():
            per_seed = summary["per_seed_episodes_to_optimal"]
            total_episodes = budget // horizon
            # Unsolved seeds count as the whole budget: a lower bound on their true cost.
            censored = [total_episodes if x is None else x for x in per_seed]
            results.append({
                "study": "hybrid", "horizon": horizon, "actions": args.lock_actions,
                "agent": agent, "budget_episodes": total_episodes,
                "solved": sum(x is not None for x in per_seed), "seeds": args.seeds,
                "episodes_to_optimal": per_seed, "episodes_censored": censored,
                "final_suboptimality": summary["per_seed_suboptimality"],
                "dataset_exact_return": data.info.extra["exact_return"],
                "dataset_episodes": args.offline_episodes,
                "wall_seconds": summary["wall_seconds"],
            })
            print(f"lock H={horizon:2d} A={args.lock_actions} {agent:4s}: solved "
                  f"{results[-1]['solved']}/{args.seeds}, episodes to optimal "
                  f"{describe(censored)}  (budget {total_episodes}; "
                  f"{summary['wall_seconds']:.0f} s)", flush=True)
    return results


# --------------------------------------------------------------------------------------------
# 2. Offline: CQL and IQL vs BC on data of mixed quality
# --------------------------------------------------------------------------------------------


def mixed_chain_dataset(env_config, episodes: int, expert_share: float, epsilon: float):
    """Episodes of the optimal policy and of the myopic one, each with epsilon random actions."""
    import jax
    import jax.numpy as jnp

    from rlkit.collect import TablePolicy, collect
    from rlkit.data.dataset import Dataset
    from rlkit.types import Transition

    env = registry.make_env("chain", env_config)
    model = env.model(env.default_params)
    # Greedy in the immediate reward: pushes left at the left end for the distractor and,
    # where every reward is 0, takes action 0 (left) as argmax does: it never leaves the start.
    myopic = jax.nn.one_hot(jnp.argmax(model.rewards, axis=-1), model.num_actions)
    myopic = jnp.broadcast_to(myopic, (env.spec.max_episode_steps, *myopic.shape))
    num_expert = round(expert_share * episodes)
    parts = [
        collect("chain", env_config, "mixture", num_expert, seed=2, epsilon=epsilon,
                checkpoint="optimal"),
        collect("chain", env_config, TablePolicy("myopic", myopic), episodes - num_expert,
                seed=3, epsilon=epsilon),
    ]
    transitions = Transition(**{
        name: np.concatenate([getattr(p.transitions, name) for p in parts])
        for name in ("obs", "action", "reward", "terminated", "truncated", "next_obs")})
    returns = [p.info.behaviour_return for p in parts]
    weights = [num_expert / episodes, 1 - num_expert / episodes]
    exact = sum(w * p.info.extra["exact_return"] for w, p in zip(weights, parts, strict=True))
    extra = dict(parts[0].info.extra, exact_return=exact, expert_share=expert_share)
    optimal, random = extra["optimal_return"], extra["random_return"]
    extra["normalised_score"] = 100 * (exact - random) / (optimal - random)
    info = dataclasses.replace(
        parts[0].info,
        behaviour_policy=(f"{expert_share:.0%} episodes optimal + {1 - expert_share:.0%} "
                          f"myopic, each mixture(epsilon={epsilon:g})"),
        behaviour_return=float(np.dot(weights, returns)), behaviour_return_std=None, extra=extra)
    return Dataset(info=info, transitions=transitions, num_episodes=episodes, path=None)


def offline_study(args, workdir: Path) -> list[dict]:
    from rlkit.data.dataset import save_dataset

    entry = registry.env_entry("chain")
    env_config = dataclasses.replace(entry.default_config(), length=args.chain_length,
                                     horizon=2 * args.chain_length,
                                     left_reward=args.left_reward)
    data = mixed_chain_dataset(env_config, args.offline_episodes, args.expert_share,
                               args.offline_epsilon)
    path = save_dataset(workdir / "chain-mixed", data.transitions, data.info)
    extra = data.info.extra
    optimal, random = extra["optimal_return"], extra["random_return"]
    print(f"chain(length {args.chain_length}, left reward {args.left_reward}): J* = "
          f"{optimal:.2f}, J(uniform) = {random:.2f}; dataset: {data.info.behaviour_policy}, "
          f"{len(data.transitions.action)} transitions, behaviour J = "
          f"{extra['exact_return']:.2f} (score {extra['normalised_score']:.1f})", flush=True)
    variants = {
        "bc": dict(agent="bc"),
        "bc (sampled)": dict(agent="bc", eval_policy="sample"),
        "cql": dict(agent="cql"),
        "iql": dict(agent="iql"),
    }
    results = []
    for label, overrides in variants.items():
        overrides = dict(overrides)
        agent = overrides.pop("agent")
        summary = train(agent, "chain", env_config, dataset=path, seeds=args.seeds,
                        total_steps=args.offline_updates, run_dir=workdir / label.replace(" ", "_"),
                        **overrides)
        scores = [100 * (x - random) / (optimal - random) for x in summary["per_seed"]]
        results.append({
            "study": "offline", "agent": label, "seeds": args.seeds,
            "final_return": summary["per_seed"], "normalised_score": scores,
            "dataset_behaviour_return": extra["exact_return"],
            "dataset_normalised_score": extra["normalised_score"],
            "optimal_return": optimal, "updates": args.offline_updates,
            "wall_seconds": summary["wall_seconds"],
        })
        print(f"{label:13s}: return {describe(summary['per_seed'])}   score "
              f"{describe(scores)}  ({summary['wall_seconds']:.0f} s)", flush=True)
    return results


def write_results(path: Path, args, seconds: float, results: list[dict]) -> None:
    """The benchmark's JSON: device, jax version, arguments, wall seconds, results (NaN: null)."""
    import jax

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "device": jax.devices()[0].device_kind, "jax": jax.__version__,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "seconds": seconds, "results": results,
    }, indent=2, default=lambda x: None if isinstance(x, float) and math.isnan(x) else x) + "\n")


def main() -> None:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", choices=("both", "hybrid", "offline"), default="both")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--horizons", type=int, nargs="+", default=[3, 5, 7])
    parser.add_argument("--lock-actions", type=int, default=4)
    parser.add_argument("--lock-steps-per-horizon", type=int, default=4000,
                        help="online env steps per seed, per unit of horizon")
    parser.add_argument("--lock-logs", type=int, default=50,
                        help="evaluations per run (the resolution of episodes_to_optimal)")
    parser.add_argument("--offline-episodes", type=int, default=100)
    parser.add_argument("--offline-epsilon", type=float, default=0.1)
    parser.add_argument("--expert-share", type=float, default=0.25)
    parser.add_argument("--chain-length", type=int, default=8)
    parser.add_argument("--left-reward", type=float, default=0.05)
    parser.add_argument("--offline-updates", type=int, default=5000)
    parser.add_output("--json", default=None)
    args = parser.parse_args()

    import jax

    start = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory(prefix="rlkit-offline-hybrid-") as tmp:
        workdir = Path(tmp)
        if args.study in ("both", "hybrid"):
            results += hybrid_study(args, workdir)
        if args.study in ("both", "offline"):
            results += offline_study(args, workdir)
    elapsed = time.perf_counter() - start
    print(f"total {elapsed:.0f} s on {jax.devices()[0].device_kind}")
    if args.json:
        write_results(args.json, args, elapsed, results)


if __name__ == "__main__":
    main()
