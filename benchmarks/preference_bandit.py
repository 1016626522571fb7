"""Offline DPO against on-policy DPO on the Tajwar et al. bandit, scored exactly (issue 12 item 5b).

The one-step 100-action bandit of Tajwar et al. 2024 (`envs.preference_bandits`,
iterative_dpo.md 5.7): the data policy's interior mode is bin 16, the reward peaks at bin 70
("not-aligned") or 20 ("aligned"). A tabular policy starts at the reference (the data policy) and
is trained with the DPO loss (`rlkit.ops.dpo_loss`, sigmoid) on a budget of preference labels:

* **offline**: all labels at once, pairs drawn from the data policy;
* **on-policy**: the same labels spread over R rounds, each round's pairs drawn from the current
  policy, training on every pair collected so far (the loop of iterative DPO, with a fixed
  reference, iterative_dpo.md 5.1).

Both take the same number of Adam steps. Labels are Bradley-Terry on the true reward (the
config's temperature; 0 = the higher reward wins). After every round the script reports the
exact expected true reward E_pi r and the reverse KL(pi || pi_ref), and the KL-regularised
optimum's reward at the same beta as a reference point. Seeds run vmapped in one compiled
program per method.

    uv run python benchmarks/preference_bandit.py                       # not-aligned, 8 seeds
    uv run python benchmarks/preference_bandit.py --reward aligned --json out.json
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
import optax  # noqa: E402

from envs.preference_bandits import (  # noqa: E402
    PreferenceBandit,
    TajwarBanditConfig,
    make_tajwar_bandit,
    tabular_log_probs,
)
from rlkit.errors import ArgumentParser  # noqa: E402
from rlkit.ops import dpo_loss  # noqa: E402


def make_run(bandit: PreferenceBandit, *, labels: int, rounds: int, steps_per_round: int,
             beta: float, learning_rate: float, on_policy: bool):
    """`run(key) -> (rewards [R], kls [R])`: DPO over `rounds` rounds of `labels // rounds`
    pairs each (on-policy), or one batch of `labels` pairs from the data policy trained for the
    same total number of steps (offline, reported at the same round boundaries)."""
    per_round = labels // rounds
    optimizer = optax.adam(learning_rate)

    def weighted_loss(logits, pairs, weights):
        chosen = tabular_log_probs(logits, pairs.prompt_ids, pairs.chosen_ids)  # [N]
        rejected = tabular_log_probs(logits, pairs.prompt_ids, pairs.rejected_ids)  # [N]
        reference_chosen = tabular_log_probs(bandit.reference_logits, pairs.prompt_ids,
                                             pairs.chosen_ids)
        reference_rejected = tabular_log_probs(bandit.reference_logits, pairs.prompt_ids,
                                               pairs.rejected_ids)
        losses = dpo_loss(chosen, rejected, reference_chosen, reference_rejected,
                          beta=beta).losses  # [N]
        return (weights * losses).sum() / weights.sum()

    def train(logits, opt_state, pairs, weights):
        def step(carry, _):
            logits, opt_state = carry
            updates, opt_state = optimizer.update(
                jax.grad(weighted_loss)(logits, pairs, weights), opt_state)
            return (optax.apply_updates(logits, updates), opt_state), None

        (logits, opt_state), _ = jax.lax.scan(step, (logits, opt_state), length=steps_per_round)
        return logits, opt_state

    def run(key):
        logits = bandit.reference_logits
        opt_state = optimizer.init(logits)
        if on_policy:
            # Every round's pairs get a slot of a fixed [labels] buffer; unfilled slots weigh 0.
            empty = bandit.sample_pairs(key, labels)  # placeholder ids, weight 0 until filled

            def one_round(carry, round_key):
                logits, opt_state, pairs, filled = carry
                fresh = bandit.sample_pairs(round_key, per_round, jax.lax.stop_gradient(logits))
                start = filled * per_round
                pairs = jax.tree.map(
                    lambda buffer, new: jax.lax.dynamic_update_slice_in_dim(buffer, new, start, 0),
                    pairs, fresh)
                weights = (jnp.arange(labels) < start + per_round).astype(jnp.float32)
                logits, opt_state = train(logits, opt_state, pairs, weights)
                metrics = (bandit.expected_reward(logits).mean(),
                           bandit.kl_to_reference(logits).mean())
                return (logits, opt_state, pairs, filled + 1), metrics

            _, (rewards, kls) = jax.lax.scan(
                one_round, (logits, opt_state, empty, jnp.int32(0)),
                jax.random.split(key, rounds))
            return rewards, kls
        pairs = bandit.sample_pairs(key, labels)
        weights = jnp.ones(labels, jnp.float32)

        def offline_round(carry, _):
            logits, opt_state = train(*carry, pairs, weights)
            return (logits, opt_state), (bandit.expected_reward(logits).mean(),
                                         bandit.kl_to_reference(logits).mean())

        _, (rewards, kls) = jax.lax.scan(offline_round, (logits, opt_state), length=rounds)
        return rewards, kls

    return run


def main() -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reward", default="not-aligned", choices=["not-aligned", "aligned"])
    parser.add_argument("--reward-width", type=float, default=10.0)
    parser.add_argument("--label-temperature", type=float, default=0.0)
    parser.add_argument("--labels", type=int, default=1024, help="preference labels per seed")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--steps-per-round", type=int, default=200)
    parser.add_argument("--beta", type=float, default=0.05)
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_output("--json", default=None, help="write the results here")
    args = parser.parse_args()

    bandit = make_tajwar_bandit(TajwarBanditConfig(
        reward=args.reward, reward_width=args.reward_width,
        label_temperature=args.label_temperature))
    keys = jax.random.split(jax.random.key(0), args.seeds)
    reference_reward = float(bandit.expected_reward(bandit.reference_logits).mean())
    optimum = bandit.optimal_logits(args.beta)
    results = {"config": vars(args) | {"json": str(args.json)},
               "data_policy_reward": reference_reward,
               "optimum_reward": float(bandit.expected_reward(optimum).mean()),
               "optimum_kl": float(bandit.kl_to_reference(optimum).mean()),
               "steps": [(r + 1) * args.steps_per_round for r in range(args.rounds)],
               "labels_used": {"offline": [args.labels] * args.rounds,
                               "on-policy": [(r + 1) * (args.labels // args.rounds)
                                             for r in range(args.rounds)]}}
    print(f"Tajwar bandit ({args.reward}, width {args.reward_width}), beta {args.beta}, "
          f"{args.labels} labels, {args.rounds} rounds, {args.seeds} seeds")
    print(f"data policy: reward {reference_reward:.4f}; KL-regularised optimum: reward "
          f"{results['optimum_reward']:.4f}, KL {results['optimum_kl']:.3f}")
    for method in ("offline", "on-policy"):
        run = make_run(bandit, labels=args.labels, rounds=args.rounds,
                       steps_per_round=args.steps_per_round, beta=args.beta,
                       learning_rate=args.learning_rate, on_policy=method == "on-policy")
        start = time.perf_counter()
        rewards, kls = jax.block_until_ready(jax.jit(jax.vmap(run))(keys))  # [S, R]
        seconds = time.perf_counter() - start
        rewards, kls = np.asarray(rewards), np.asarray(kls)
        results[method] = {"reward_mean": rewards.mean(0).tolist(),
                           "reward_std": rewards.std(0).tolist(),
                           "kl_mean": kls.mean(0).tolist(), "seconds": seconds}
        final = rewards[:, -1]
        print(f"{method:>9}: final reward {final.mean():.4f} +- {final.std():.4f} "
              f"(min {final.min():.4f}), reverse KL {kls[:, -1].mean():.3f}, "
              f"{seconds:.1f} s with compilation")
        print("           mean reward after each round (labels used): " + ", ".join(
            f"{r:.3f} ({n})" for n, r in zip(results["labels_used"][method], rewards.mean(0),
                                             strict=True)))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
