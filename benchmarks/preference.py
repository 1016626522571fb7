"""Offline DPO, HyPO, online iterative DPO and best-of-n on preference bandits, scored exactly
(issue 13 item 6).

Three studies, each seed-vmapped in one compiled program per method (`run_over_seeds`):

1. **Tajwar not-aligned bandit** (Tajwar et al. 2024; iterative_dpo.md 5.7): one prompt, 100
   actions, data policy mode at bin 16, reward peak at bin 70. Online iterative DPO (best-vs-worst
   and random pairs, K samples per iteration, oracle labels from the exact reward) against
   offline DPO on pairs drawn once from the data policy with the same number of labels, and
   HyPO on those offline pairs. Reported after every iteration: exact true reward, exact reverse
   KL to the reference, labels used. Best-of-n (exact, by enumeration) gives the reward-KL
   frontier of sampling n responses from the reference and keeping the best.
2. **Tabular bandit** (hypo.md 4.4: 4 prompts, 8 responses, offline pairs cover responses 0..3):
   DPO (HyPO with lambda = 0) against HyPO over a grid of lambda: reward and reverse KL.
3. **Length-biased reward model** (iterative_dpo.md 5.6): iterative DPO on the Tajwar bandit
   ranked by r + c * length with length(a) = a / 100 (action index as a length), with and
   without the length penalty of "max_min_p".

    uv run python benchmarks/preference.py                 # all three, 5 seeds, plots
    uv run python benchmarks/preference.py --seeds 10 --json benchmarks/results/x.json

Confidence intervals are 95% percentile bootstraps of the mean over seeds.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from agents import hypo  # noqa: E402
from agents import iterative_dpo as it  # noqa: E402
from envs.preference_bandits import (  # noqa: E402
    PreferenceBandit,
    TabularBanditConfig,
    TajwarBanditConfig,
    make_tabular_bandit,
    make_tajwar_bandit,
)
from rlkit.errors import ArgumentParser  # noqa: E402
from rlkit.loops.preference import make_bandit_pair_run, run_over_seeds  # noqa: E402


def bootstrap_ci(values: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): 95% percentile bootstrap of the mean over the first axis."""
    values = np.asarray(values, np.float64)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (10_000, len(values)))].mean(1)
    return float(values.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means,
                                                                                  0.975))


def best_of_n(bandit: PreferenceBandit, n: int) -> tuple[float, float]:
    """Exact (reward, reverse KL) of best-of-n sampling from the reference, one-token responses:
    q(y) = F(y)^n - F_<(y)^n with F the reference's CDF of responses ordered by reward."""
    rewards, kls = [], []
    for x in range(bandit.num_prompts):
        reward = np.asarray(bandit.token_reward[x], np.float64)
        reference = np.exp(np.asarray(bandit.reference_logits[x, 0], np.float64))
        order = np.argsort(reward, kind="stable")
        cdf = np.cumsum(reference[order])
        below = np.concatenate([[0.0], cdf[:-1]])
        q = np.zeros_like(reference)
        q[order] = np.clip(cdf, 0, 1) ** n - np.clip(below, 0, 1) ** n
        rewards.append(float((q * reward).sum()) + float(bandit.prompt_reward[x]))
        kls.append(float(np.where(q > 0, q * (np.log(np.maximum(q, 1e-300))
                                              - np.log(reference)), 0.0).sum()))
    return float(np.mean(rewards)), float(np.mean(kls))


def tajwar_study(args) -> dict:
    """Online iterative DPO vs offline DPO vs HyPO on the not-aligned Tajwar bandit."""
    bandit = make_tajwar_bandit(TajwarBanditConfig(reward="not-aligned"))
    iterations, per_iteration, steps = args.iterations, args.prompts, args.steps
    keys = jax.random.split(jax.random.key(args.seed), args.seeds)
    shared = dict(beta=args.beta, learning_rate=args.learning_rate, max_grad_norm=None,
                  batch_size=args.batch_size)
    results = {"data_policy_reward": float(bandit.expected_reward(bandit.reference_logits)[0]),
               "labels": [(t + 1) * per_iteration for t in range(iterations)]}

    def online(rule):
        config = it.Config(num_samples=args.num_samples, pair_rule=rule, iterations=iterations,
                           prompts_per_iteration=per_iteration, steps_per_iteration=steps,
                           **shared)
        return lambda key: it.make_tabular_run(config, bandit)(key)[1]

    for name, rule in (("iterative_dpo", "max_min"), ("iterative_dpo_random_pairs", "random")):
        start = time.perf_counter()
        metrics = jax.tree.map(np.asarray, run_over_seeds(online(rule), keys))
        results[name] = {"reward": metrics["true_reward"].tolist(),
                         "kl": metrics["reverse_kl"].tolist(),
                         "labels_used": metrics["labels_used"].tolist(),
                         "seconds": time.perf_counter() - start}

    def offline(lam, budget):
        agent = hypo.make_tabular_agent(hypo.Config(lam=lam, k=args.k, **shared), bandit)

        def run(key):
            pairs_key, train_key = jax.random.split(key)
            pairs = bandit.sample_pairs(pairs_key, budget)
            state, _ = make_bandit_pair_run(agent, steps * iterations, args.batch_size)(
                train_key, pairs)
            return (bandit.expected_reward(state.params).mean(),
                    bandit.kl_to_reference(state.params).mean())

        return run

    for name, lam in (("offline_dpo", 0.0), ("hypo", args.lam)):
        start = time.perf_counter()
        curves = [np.asarray(run_over_seeds(offline(lam, budget), keys))  # [2, S]
                  for budget in results["labels"]]
        results[name] = {"reward": np.stack([c[0] for c in curves], 1).tolist(),  # [S, T]
                         "kl": np.stack([c[1] for c in curves], 1).tolist(),
                         "labels_used": [results["labels"]] * args.seeds,
                         "seconds": time.perf_counter() - start}
    results["best_of_n"] = {str(n): best_of_n(bandit, n) for n in (1, 2, 4, 8, 16, 32, 64,
                                                                  128, 256)}
    final_online = np.asarray(results["iterative_dpo"]["reward"])[:, -1]
    final_offline = np.asarray(results["offline_dpo"]["reward"])[:, -1]
    results["online_beats_offline_seeds"] = int((final_online > final_offline).sum())
    return results


def seed_bandit(config: TabularBanditConfig, key):
    """The tabular study's bandit of the seed with `key` (the first of its three keys: bandit,
    pairs, training), for its runs and for `covered_bound`."""
    return make_tabular_bandit(config, jax.random.split(key, 3)[0])


def tabular_study(args) -> dict:
    """DPO vs HyPO (lambda grid) on the partially covered tabular bandit of hypo.md 4.4."""
    config = TabularBanditConfig(label_temperature=1.0)
    keys = jax.random.split(jax.random.key(args.seed + 1), args.seeds)
    results = {}
    for lam in (0.0, *args.tabular_lams):
        agent_config = hypo.Config(lam=lam, beta=args.tabular_beta, k=args.k,
                                   learning_rate=args.tabular_learning_rate,
                                   max_grad_norm=None, batch_size=64)

        def run(key, agent_config=agent_config):
            _, pairs_key, train_key = jax.random.split(key, 3)
            bandit = seed_bandit(config, key)
            pairs = bandit.sample_pairs(pairs_key, args.tabular_pairs)
            state, _ = make_bandit_pair_run(hypo.make_tabular_agent(agent_config, bandit),
                                            args.tabular_steps, 64)(train_key, pairs)
            return (bandit.expected_reward(state.params).mean(),
                    bandit.kl_to_reference(state.params).mean(),
                    bandit.expected_reward(bandit.reference_logits).mean())

        reward, kl, initial = map(np.asarray, run_over_seeds(run, keys))
        results[f"lam={lam:g}"] = {"reward": reward.tolist(), "kl": kl.tolist(),
                                   "reference_reward": initial.tolist()}
    results["covered_bound"] = covered_bound(config, keys, np.asarray(results["lam=0"]["kl"]) / 2)
    return results


def covered_bound(config: TabularBanditConfig, keys, kl_budget: np.ndarray) -> dict:
    """Per seed, at the KL budget (half DPO's KL: the bar's), the reward of the best policy for a
    chooser who knows the covered responses' rewards exactly and nothing of the others (their
    prior mean, 0): `expected_reward` is what any method learning from covered pairs alone can
    expect at that KL over the unknown rewards' prior (HyPO's fresh samples carry no reward);
    `realised_reward` is that policy's reward on the seed's actual uncovered rewards."""
    def bound(key, budget):
        bandit = seed_bandit(config, key)
        known = jnp.broadcast_to(jnp.arange(config.num_responses) < config.num_covered,
                                 bandit.token_reward.shape)
        logits = bandit.frontier_logits(budget, known)
        expected = bandit.replace(token_reward=jnp.where(known, bandit.token_reward, 0.0))
        return (expected.expected_reward(logits).mean(), bandit.expected_reward(logits).mean(),
                bandit.kl_to_reference(logits).mean())

    expected, realised, kl = map(np.asarray, jax.vmap(bound)(keys, jnp.asarray(kl_budget)))
    return {"kl_budget": kl_budget.tolist(), "kl": kl.tolist(),
            "expected_reward": expected.tolist(), "realised_reward": realised.tolist()}


def length_study(args) -> dict:
    """Iterative DPO ranked by a length-biased score, with and without the length penalty."""
    bandit = make_tajwar_bandit(TajwarBanditConfig(reward="not-aligned"))
    keys = jax.random.split(jax.random.key(args.seed + 2), args.seeds)
    bias = args.length_bias

    def length(prompt_ids, responses):
        return responses.sum(-1).astype(jnp.float32) / 100.0  # action a has length a / 100

    def biased_score(prompt_ids, responses):
        return bandit.true_reward(prompt_ids, responses) + bias * length(prompt_ids, responses)

    results = {"length_bias": bias}
    for penalty in (0.0, bias / 2, bias):
        config = it.Config(num_samples=args.num_samples, pair_rule="max_min_p",
                           length_penalty=penalty, iterations=args.iterations,
                           prompts_per_iteration=args.prompts, steps_per_iteration=args.steps,
                           beta=args.beta, learning_rate=args.learning_rate,
                           max_grad_norm=None, batch_size=args.batch_size)
        run_fn = it.make_tabular_run(config, bandit, score_fn=biased_score, length_fn=length)

        def run(key, run_fn=run_fn):
            logits, metrics = run_fn(key)
            probs = jax.nn.softmax(logits[0, 0])
            return metrics, (probs * jnp.arange(probs.shape[0])).sum() / 100.0

        metrics, mean_length = run_over_seeds(run, keys)
        results[f"penalty={penalty:g}"] = {
            "reward": np.asarray(metrics["true_reward"])[:, -1].tolist(),
            "kl": np.asarray(metrics["reverse_kl"])[:, -1].tolist(),
            "length": np.asarray(mean_length).tolist()}
    return results


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tajwar = results["tajwar"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for name in ("offline_dpo", "hypo", "iterative_dpo", "iterative_dpo_random_pairs"):
        reward = np.asarray(tajwar[name]["reward"])  # [S, T]
        kl = np.asarray(tajwar[name]["kl"])
        labels = np.asarray(tajwar[name]["labels_used"]).mean(0)
        cis = np.array([bootstrap_ci(reward[:, t]) for t in range(reward.shape[1])])
        axes[0].plot(labels, cis[:, 0], marker="o", label=name)
        axes[0].fill_between(labels, cis[:, 1], cis[:, 2], alpha=0.2)
        axes[1].plot(kl.mean(0), reward.mean(0), marker="o", label=name)
    bon = np.array(list(tajwar["best_of_n"].values()))
    axes[1].plot(bon[:, 1], bon[:, 0], "k--", marker=".", label="best-of-n (exact)")
    axes[0].set(xlabel="preference labels used", ylabel="true reward",
                title="Tajwar not-aligned: reward vs labels")
    axes[1].set(xlabel="reverse KL to reference (nats)", ylabel="true reward",
                title="Tajwar not-aligned: reward vs KL")
    for name, row in results["tabular"].items():
        if name == "covered_bound":
            continue
        axes[2].scatter(np.mean(row["kl"]), np.mean(row["reward"]), label=name)
    axes[2].set(xlabel="reverse KL (nats)", ylabel="true reward",
                title="tabular bandit: DPO (lam=0) vs HyPO")
    for axis in axes:
        axis.legend(fontsize=7)
        axis.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main() -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--prompts", type=int, default=64, help="prompts (labels) per iteration")
    parser.add_argument("--num-samples", type=int, default=8, help="K, samples per prompt")
    parser.add_argument("--steps", type=int, default=200, help="DPO updates per iteration")
    parser.add_argument("--beta", type=float, default=0.05)
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lam", type=float, default=0.1, help="HyPO's lambda (Tajwar)")
    parser.add_argument("--k", type=int, default=4, help="HyPO's samples per prompt")
    parser.add_argument("--tabular-beta", type=float, default=0.1)
    parser.add_argument("--tabular-learning-rate", type=float, default=0.05)
    parser.add_argument("--tabular-pairs", type=int, default=512)
    parser.add_argument("--tabular-steps", type=int, default=2000)
    parser.add_argument("--tabular-lams", type=float, nargs="*", default=[0.03, 0.1, 0.3])
    parser.add_argument("--length-bias", type=float, default=1.0,
                        help="c of the biased score r + c * a / 100")
    parser.add_output("--json", default=None)
    parser.add_output("--plot", figure=True, default=Path("benchmarks/results/preference.png"))
    args = parser.parse_args()

    results = {"config": {k: (str(v) if isinstance(v, Path) else v)
                          for k, v in vars(args).items()}, "device": str(jax.devices()[0])}
    start = time.perf_counter()
    results["tajwar"] = tajwar_study(args)
    tajwar = results["tajwar"]
    print(f"Tajwar not-aligned, {args.seeds} seeds, labels {tajwar['labels']}; data policy "
          f"reward {tajwar['data_policy_reward']:.4f}")
    for name in ("offline_dpo", "hypo", "iterative_dpo", "iterative_dpo_random_pairs"):
        reward = np.asarray(tajwar[name]["reward"])
        kl = np.asarray(tajwar[name]["kl"])
        mean, low, high = bootstrap_ci(reward[:, -1])
        used = np.asarray(tajwar[name]["labels_used"])[:, -1].mean()
        print(f"  {name:>26}: final reward {mean:.3f} [{low:.3f}, {high:.3f}], reverse KL "
              f"{kl[:, -1].mean():.2f}, labels {used:.0f}; per iteration "
              + " ".join(f"{r:.3f}" for r in reward.mean(0)))
    print(f"  iterative DPO > offline DPO at equal labels on "
          f"{tajwar['online_beats_offline_seeds']} of {args.seeds} seeds")
    print("  best-of-n (reward, KL): " + ", ".join(
        f"n={n}: ({r:.3f}, {k:.2f})" for n, (r, k) in tajwar["best_of_n"].items()))

    results["tabular"] = tabular_study(args)
    print(f"Tabular bandit (hypo.md 4.4), {args.tabular_pairs} pairs, {args.tabular_steps} "
          f"steps, beta {args.tabular_beta}")
    for name, row in results["tabular"].items():
        if name == "covered_bound":
            dpo = np.asarray(results["tabular"]["lam=0"]["reward"])
            print("  best reward any covered-pairs method can expect at half DPO's KL, per seed: "
                  + ", ".join(f"{b:.3f}" for b in row["expected_reward"])
                  + f" (DPO's reward: {', '.join(f'{d:.3f}' for d in dpo)}; below it on "
                  f"{int((np.asarray(row['expected_reward']) < dpo).sum())} of {len(dpo)} seeds)")
            continue
        mean, low, high = bootstrap_ci(row["reward"])
        kl_mean, kl_low, kl_high = bootstrap_ci(row["kl"])
        print(f"  {name:>9}: reward {mean:.3f} [{low:.3f}, {high:.3f}], reverse KL "
              f"{kl_mean:.3f} [{kl_low:.3f}, {kl_high:.3f}]")

    results["length"] = length_study(args)
    print(f"Length-biased score r + {args.length_bias} * a / 100, iterative DPO (max_min_p)")
    for name, row in results["length"].items():
        if isinstance(row, dict):
            mean, low, high = bootstrap_ci(row["reward"])
            print(f"  {name:>12}: true reward {mean:.3f} [{low:.3f}, {high:.3f}], mean length "
                  f"{np.mean(row['length']):.3f}, reverse KL {np.mean(row['kl']):.2f}")
    results["seconds"] = time.perf_counter() - start
    print(f"total {results['seconds']:.0f} s on {results['device']}")
    if args.plot:
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        plot(results, args.plot)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
