"""Online episodes to a verified epsilon-optimal policy on the hard-state linear MDP: FTPedel
(with offline data at the hard state) vs PEDEL (online only) vs offline-only.

The instance (`envs.linear_mdp.hard_state_mdp`, spec section 2.3): from s0 every action reaches
s_A with probability 1 - p and the hard state s_B with probability p; the policy's value depends
on theta_1 along e_1 (s_A) and e_2 (s_B). The offline data are `--offline-samples` transitions
at s_B (collected by `rlkit.collect` with the random policy on the env started there), so they
cover e_2 and nothing else. For p in `--p`, each method runs `--seeds` seeds through the same
code as `python -m rlkit.train pedel|ftpedel` (`rlkit.loops.ftpedel.identify`) and reports the
online episodes until its verified stop (mean, 95% bootstrap CI), the fraction verified and the
fraction of verified policies that are exactly epsilon-optimal (`rlkit.planning`).

    uv run python benchmarks/ftpedel.py                       # ~9 min on 2 CPUs
    uv run python benchmarks/ftpedel.py --seeds 2 --p 0.1 0.01 --json /tmp/ftpedel.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents import ftpedel  # noqa: E402
from envs.linear_mdp import HardStateConfig  # noqa: E402
from rlkit.collect import collect  # noqa: E402
from rlkit.errors import ArgumentParser  # noqa: E402
from rlkit.loops.ftpedel import RunOptions, identify  # noqa: E402

METHODS = ("ftpedel", "pedel", "offline-only")


def offline_rows(p: float, samples: int, seed: int) -> list:
    """`samples` transitions at s_B (random actions), split by step (none at step 0)."""
    data = collect("linear-hard-state", HardStateConfig(p=p, start="hard"), "random", samples,
                   seed=seed)
    t = data.transitions
    return ftpedel.split_rows(np.asarray(t.obs), np.asarray(t.action), np.asarray(t.reward),
                              np.asarray(t.next_obs), 2, 2)


def run_method(method: str, p: float, args: argparse.Namespace, offline: list) -> dict:
    fields = dict(epsilon=args.epsilon, delta=args.delta, preset=args.preset)
    env_config = HardStateConfig(p=p)
    run = RunOptions(seeds=args.seeds, seed=args.seed)
    if method == "pedel":
        return identify("pedel", ftpedel.Config(**fields), "linear-hard-state", env_config, run)
    config = ftpedel.FineTuneConfig(**fields, max_online_episodes=(
        0 if method == "offline-only" else ftpedel.Config.max_online_episodes))
    return identify("ftpedel", config, "linear-hard-state", env_config, run, offline=offline)


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 3.6))
    for method, marker in (("ftpedel", "o"), ("pedel", "s")):
        rows = [r for r in results if r["method"] == method]
        ps = np.array([r["p"] for r in rows])
        mean = np.array([r["online_episodes"]["mean"] for r in rows])
        ci = np.array([r["online_episodes"]["ci95"] for r in rows])
        axis.errorbar(ps, mean, yerr=[mean - ci[:, 0], ci[:, 1] - mean], marker=marker,
                      capsize=3, label=method)
    ps = np.array(sorted({r["p"] for r in results}))
    reference = results[0]["online_episodes"]["mean"] * ps.max() / ps
    axis.plot(ps, reference, "k:", label="1/p (reference)")
    axis.set(xscale="log", yscale="log", xlabel="p (probability of the hard state)",
             ylabel="online episodes to a verified stop",
             title="hard-state linear MDP, epsilon = 0.1")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> int:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--p", type=float, nargs="+", default=[0.1, 0.03, 0.01, 0.003])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epsilon", type=float, default=0.1)
    parser.add_argument("--delta", type=float, default=0.05)
    parser.add_argument("--preset", default="practical", choices=("practical", "theory"))
    parser.add_argument("--offline-samples", type=int, default=10_000)
    parser.add_output("--json", default=None)
    parser.add_output("--plot", figure=True, default=None)
    args = parser.parse_args()
    start = time.perf_counter()
    results = []
    for p in args.p:
        offline = offline_rows(p, args.offline_samples, args.seed)
        for method in METHODS:
            began = time.perf_counter()
            summary = run_method(method, p, args, offline)
            row = {"method": method, "p": p, "online_episodes": summary["online_episodes"],
                   "verified_fraction": summary["verified_fraction"],
                   "verified_epsilon_optimal_fraction":
                       summary["verified_epsilon_optimal_fraction"],
                   "budgets_seed0": summary["runs"][0]["budgets"],
                   "episodes": [r["online_episodes"] for r in summary["runs"]],
                   "seconds": time.perf_counter() - began}
            results.append(row)
            ci = row["online_episodes"]["ci95"]
            print(f"p={p:<6g} {method:13s} episodes {row['online_episodes']['mean']:>10,.0f} "
                  f"(CI {ci[0]:,.0f}-{ci[1]:,.0f})  verified {row['verified_fraction']:.0%}  "
                  f"eps-optimal|verified {row['verified_epsilon_optimal_fraction']}  "
                  f"({row['seconds']:.0f} s)", flush=True)
    for method in ("ftpedel", "pedel"):
        rows = {r["p"]: r["online_episodes"]["mean"] for r in results if r["method"] == method}
        print(f"{method}: episodes at p={min(rows):g} / at p={max(rows):g} = "
              f"{rows[min(rows)] / rows[max(rows)]:.2f}")
    total = time.perf_counter() - start
    print(f"total {total / 60:.1f} min")
    if args.json:
        args.json.write_text(json.dumps({"config": {k: str(v) if isinstance(v, Path) else v
                                                    for k, v in vars(args).items()},
                                         "results": results, "seconds": total}, indent=2))
    if args.plot:
        plot(results, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
