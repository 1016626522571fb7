"""Online iterative DPO (Dong, Xiong, Pang, Wang, Zhao, Zhou, Jiang, Sahoo, Xiong and Zhang 2024,
"RLHF Workflow: From Reward Modeling to Online RLHF", TMLR, arXiv 2405.07863; code
RLHFlow/Online-RLHF; iterative_dpo.md section 5).

Idea: offline DPO learns only from responses its dataset covers. Iterative DPO collects its own
pairs: for t = 1..T, sample K responses per prompt from the current policy pi_{t-1}, score them
with a reward model (or, on tasks with an exact reward, with the reward itself as an oracle
labeller), keep one pair per prompt chosen by a rule (best-vs-worst by default), and run DPO
warm-started from pi_{t-1}. Every kept pair is one preference label (`labels_used`), so methods
compare at equal label budgets.

Pair rules (`select_pair`, the names of RLHFlow's `choose_type`): "max_min" best vs worst (the
default), "max_random" best vs a uniformly drawn other, "max_max" best vs second best, "random"
two distinct responses ordered by reward, "max_min_p" best vs worst after a length penalty
r - length_penalty * length (length in characters for text). A prompt whose two picked
responses have equal (penalised) rewards, or are the same response, gives no pair.

Readings chosen where the paper or code is not explicit (iterative_dpo.md tags them [R] or [D]):

* Reference (`reference`): "sft" keeps the fixed initial model pi_0 (the paper, Algorithm 2, and
  the code as first published), the default; "previous" uses pi_{t-1} (the later scripts).
* Data (`data`): "all" trains iteration t on every pair collected so far (the paper), the
  default; "current" on iteration t's pairs only (the code).
* Sampling: K responses per prompt split evenly over `temperatures`, default half at 1.0 and
  half at 0.7 (the paper's generation detail); K must be a multiple of their number.
* Each iteration is a fresh DPO run: the optimiser state is reset, the parameters are warm-started
  from pi_{t-1}; `steps_per_iteration` updates on `batch_size` pairs drawn with replacement.
* Labels: one label per kept pair. Scoring K responses with a reward model is not counted as a
  label (the reward model's own labels were spent training it); `responses_scored` reports it.
* Identical responses: two responses are identical when all their tokens are equal.
* Fresh prompts each iteration: `prompts_per_iteration` prompts drawn uniformly (the paper
  draws a new prompt set per iteration).

On a language model (`make_text_agent`, `select_pairs`, driven by
`rlkit.loops.preference.run_iterative_dpo`; CLI `python -m rlkit.train iterative-dpo --task
sort --model SFT_RUN [--reward-model RM_RUN]`): the K completions are sampled with the KV cache,
K/G at each of the G temperatures; scored by a Bradley-Terry reward model or the task's exact
reward (the oracle labeller, the default); identical means the same completion tokens; the
DPO learner is `agents.dpo` (its loss, `rlkit.ops.dpo_loss`), warm-started from the previous
iterate with a fresh optimiser state; lengths for "max_min_p" are the decoded completions'
characters. The reported reverse KL and win rate are against the SFT model pi_0 whichever
`reference` is trained against.

`make_tabular_run` runs the whole loop on a tabular preference bandit (`envs.preference_bandits`)
as one pure function of a key (vmap it over seeds; `rlkit.loops.preference.run_over_seeds`
compiles it), reporting the exact true reward and reverse KL after every iteration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from rlkit.errors import (
    check_optimiser_fields,
    require,
    require_int_at_least,
    require_number,
    require_one_of,
)
from rlkit.ops import clipped_adam, dpo_loss, gradient_step, tabular_log_probs
from rlkit.types import Agent, Array, BanditPairs, PRNGKey, PyTree, TextSpec

PAIR_RULES = ("max_min", "max_random", "max_max", "random", "max_min_p")


@dataclass(frozen=True)
class Config:
    """Online iterative DPO hyper-parameters."""

    beta: float = 0.1
    """DPO's KL-regularisation strength (RLHFlow: 0.1)."""
    label_smoothing: float = 0.0
    """DPO's label smoothing (RLHFlow's training.yaml: 0.1; run_loop.sh: 0)."""
    num_samples: int = 8
    """K, responses sampled per prompt (RLHFlow: 8 in run_loop.sh, 4 in run_loop2.sh)."""
    temperatures: tuple[float, ...] = (1.0, 0.7)
    """Sampling temperatures; the K samples are split evenly over them."""
    pair_rule: str = "max_min"
    """How a prompt's pair is chosen: one of max_min, max_random, max_max, random, max_min_p."""
    length_penalty: float = 0.0
    """max_min_p: rewards are ranked as r - length_penalty * length."""
    reference: str = "sft"
    """"sft": the fixed initial policy (the paper); "previous": the previous iterate."""
    data: str = "all"
    """"all": train on every pair so far (the paper); "current": this iteration's only."""
    iterations: int = 3
    """T, sample-score-pair-train rounds (RLHFlow: 3)."""
    prompts_per_iteration: int = 64
    """Prompts drawn per iteration (each gives at most one pair)."""
    steps_per_iteration: int = 200
    """DPO updates per iteration."""
    learning_rate: float = 5e-5
    """Adam step size."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay."""
    batch_size: int = 64
    """Pairs per DPO update."""
    max_grad_norm: float | None = 1.0
    """Clip gradients to this global norm; None disables clipping."""

    @property
    def total_steps(self) -> int:
        """DPO updates over the whole run."""
        return self.iterations * self.steps_per_iteration

    def __post_init__(self):
        if isinstance(self.temperatures, list):  # config.yaml (YAML has no tuples)
            object.__setattr__(self, "temperatures", tuple(self.temperatures))
        require_number(self.beta, "beta", low=0, low_open=True)
        require_number(self.label_smoothing, "label_smoothing", low=0.0, high=0.5,
                       high_open=True)
        require_int_at_least(self.num_samples, "num_samples", 2)
        require(len(self.temperatures) >= 1 and all(
            isinstance(t, int | float) and t > 0 for t in self.temperatures), "temperatures",
            f"must be one or more numbers > 0, got {self.temperatures!r}.")
        require(self.num_samples % len(self.temperatures) == 0, "num_samples",
                f"{self.num_samples} samples do not split evenly over "
                f"{len(self.temperatures)} temperatures; use a multiple of "
                f"{len(self.temperatures)}.")
        require_one_of(self.pair_rule, "pair_rule", PAIR_RULES)
        require_number(self.length_penalty, "length_penalty", low=0.0)
        require_one_of(self.reference, "reference", ("sft", "previous"))
        require_one_of(self.data, "data", ("all", "current"))
        require_int_at_least(self.iterations, "iterations", 1)
        require_int_at_least(self.prompts_per_iteration, "prompts_per_iteration", 1)
        require_int_at_least(self.steps_per_iteration, "steps_per_iteration", 1)
        check_optimiser_fields(self, "try 5e-5 for a small model, 0.05 for a tabular bandit.",
                               network=False)


def select_pair(rewards: Array, lengths: Array, identical: Array, key: PRNGKey, rule: str,
                length_penalty: float = 0.0) -> tuple[Array, Array, Array]:
    """One prompt's preference pair among its K scored responses.

    Args:
        rewards: [K] float scores of the responses.
        lengths: [K] lengths (characters for text); used by "max_min_p" only.
        identical: [K, K] bool, whether responses i and j are the same.
        key: PRNG key ("max_random" and "random").
        rule: one of `PAIR_RULES`.
        length_penalty: "max_min_p"'s coefficient on length.

    Returns:
        (chosen, rejected, valid): int32 indices into the K responses (the first maximum on
        ties, as numpy's argmax) and a bool, False when the two rewards are equal or the two
        responses identical (no pair is emitted).
    """
    require_one_of(rule, "pair_rule", PAIR_RULES)
    num = rewards.shape[0]
    scores = rewards - length_penalty * lengths if rule == "max_min_p" else rewards  # [K]
    best = jnp.argmax(scores)
    if rule in ("max_min", "max_min_p"):
        chosen, rejected = best, jnp.argmin(scores)
    elif rule == "max_max":
        chosen, rejected = best, jnp.argmax(jnp.where(jnp.arange(num) == best, -jnp.inf, scores))
    elif rule == "max_random":
        other = jax.random.randint(key, (), 0, num - 1)
        chosen, rejected = best, other + (other >= best)  # uniform over the K - 1 others
    else:  # random: two distinct responses, the better one chosen
        first = jax.random.randint(key, (), 0, num)
        second = jax.random.randint(jax.random.fold_in(key, 1), (), 0, num - 1)
        second = second + (second >= first)
        swap = scores[second] > scores[first]
        chosen, rejected = jnp.where(swap, second, first), jnp.where(swap, first, second)
    valid = (scores[chosen] != scores[rejected]) & ~identical[chosen, rejected]
    return chosen.astype(jnp.int32), rejected.astype(jnp.int32), valid


def make_tabular_run(config: Config, bandit: Any,
                     score_fn: Callable[[Array, Array], Array] | None = None,
                     length_fn: Callable[[Array, Array], Array] | None = None) -> Callable:
    """The whole iterative loop on a tabular bandit, as one pure function of a key.

    Args:
        config: the hyper-parameters.
        bandit: the bandit; the policy starts at its reference (pi_0).
        score_fn: `(prompt_ids [M, 1], responses [M, L]) -> [M]` rewards that rank responses;
            None: the bandit's exact true reward (an oracle labeller).
        length_fn: `(prompt_ids, responses) -> [M]` lengths for "max_min_p"; None: all 0.

    Returns:
        `run(key) -> (logits [X, L, V], metrics)`: the final policy, and per iteration [T]
        `true_reward` (exact E_pi r), `reverse_kl` (exact KL(pi || pi_0)), `labels_used`
        (pairs collected so far, int32), `responses_scored` (int32) and `sample_length` (the
        mean `length_fn` of the iteration's K samples per prompt).
    """
    score_fn = score_fn or bandit.true_reward
    optimizer = clipped_adam(config.learning_rate, config.max_grad_norm, config.weight_decay)
    num_prompts, num_samples = config.prompts_per_iteration, config.num_samples
    capacity = config.iterations * num_prompts
    temperatures = jnp.repeat(jnp.asarray(config.temperatures, jnp.float32),
                              num_samples // len(config.temperatures))  # [K]

    def lengths_of(prompt_ids, responses):
        if length_fn is None:
            return jnp.zeros(responses.shape[0], jnp.float32)
        return length_fn(prompt_ids, responses).astype(jnp.float32)

    def dpo_loss_fn(logits, reference, pairs: BanditPairs, weights):
        def log_ratio(ids):
            return (tabular_log_probs(logits, pairs.prompt_ids, ids),
                    tabular_log_probs(reference, pairs.prompt_ids, ids))

        chosen, reference_chosen = log_ratio(pairs.chosen_ids)  # [B]
        rejected, reference_rejected = log_ratio(pairs.rejected_ids)  # [B]
        losses = dpo_loss(chosen, rejected, reference_chosen, reference_rejected,
                          beta=config.beta, label_smoothing=config.label_smoothing).losses
        return (weights * losses).sum() / jnp.maximum(weights.sum(), 1.0), {}

    def collect(key, logits):
        """This iteration's pairs [n] (invalid ones last) and how many are valid."""
        prompt_key, sample_key, pair_key = jax.random.split(key, 3)
        prompt_ids = bandit.sample_prompts(prompt_key, num_prompts)  # [n, 1]
        repeated = jnp.repeat(prompt_ids, num_samples, axis=0)  # [nK, 1], row p * K + i
        tempered = logits[repeated[:, 0]] / jnp.tile(temperatures, num_prompts)[:, None, None]
        responses = jax.random.categorical(sample_key, tempered, axis=-1).astype(
            jnp.int32)  # [nK, L]
        rewards = score_fn(repeated, responses).reshape(num_prompts, num_samples)  # [n, K]
        lengths = lengths_of(repeated, responses).reshape(num_prompts, num_samples)
        grouped = responses.reshape(num_prompts, num_samples, -1)  # [n, K, L]
        identical = (grouped[:, :, None] == grouped[:, None, :]).all(-1)  # [n, K, K]
        chosen, rejected, valid = jax.vmap(
            lambda r, n, same, k: select_pair(r, n, same, k, config.pair_rule,
                                              config.length_penalty))(
            rewards, lengths, identical, jax.random.split(pair_key, num_prompts))
        pick = jax.vmap(lambda g, i: g[i])
        order = jnp.argsort(~valid, stable=True)  # valid pairs first
        pairs = BanditPairs(prompt_ids[order], pick(grouped, chosen)[order],
                            pick(grouped, rejected)[order])
        return pairs, valid.sum(dtype=jnp.int32), lengths.mean()

    def iteration(carry, key):
        logits, buffer, count = carry
        collect_key, train_key = jax.random.split(key)
        fresh, fresh_count, sample_length = collect(collect_key, jax.lax.stop_gradient(logits))
        buffer = jax.tree.map(
            lambda stored, new: jax.lax.dynamic_update_slice_in_dim(stored, new, count, 0),
            buffer, fresh)
        low = count if config.data == "current" else jnp.int32(0)
        count = count + fresh_count
        reference = bandit.reference_logits if config.reference == "sft" else logits

        def step(train, step_key):
            params, opt_state = train
            rows = jax.random.randint(step_key, (config.batch_size,), low,
                                      jnp.maximum(count, low + 1))
            weights = (rows < count).astype(jnp.float32)  # 0 when no pair was collected
            batch = jax.tree.map(lambda x: x[rows], buffer)
            params, opt_state, *_ = gradient_step(optimizer, dpo_loss_fn, params, opt_state,
                                                  reference, batch, weights)
            return (params, opt_state), None

        (logits, _), _ = jax.lax.scan(step, (logits, optimizer.init(logits)),
                                      jax.random.split(train_key, config.steps_per_iteration))
        metrics = {"true_reward": bandit.expected_reward(logits).mean(),
                   "reverse_kl": bandit.kl_to_reference(logits).mean(),
                   "labels_used": count, "sample_length": sample_length}
        return (logits, buffer, count), metrics

    def run(key: PRNGKey) -> tuple[Array, dict]:
        logits = jnp.array(bandit.reference_logits)
        length = bandit.reference_logits.shape[1]
        empty = BanditPairs(jnp.zeros((capacity, 1), jnp.int32),
                            jnp.zeros((capacity, length), jnp.int32),
                            jnp.zeros((capacity, length), jnp.int32))
        (logits, _, _), metrics = jax.lax.scan(
            iteration, (logits, empty, jnp.int32(0)), jax.random.split(key, config.iterations))
        metrics["responses_scored"] = (jnp.arange(1, config.iterations + 1, dtype=jnp.int32)
                                       * num_prompts * num_samples)
        return logits, metrics

    return run


def select_pairs(config: Config) -> Callable[[Array, Array, Array, PRNGKey],
                                            tuple[Array, Array, Array]]:
    """`select_pair` under `config`'s rule, vmapped over prompts.

    Returns:
        `pairs(rewards [n, K], lengths [n, K], identical [n, K, K], key) -> (chosen [n],
        rejected [n], valid [n])`, as `select_pair` per prompt with independent keys.
    """
    require_one_of(config.pair_rule, "pair_rule", PAIR_RULES)

    def pairs(rewards: Array, lengths: Array, identical: Array, key: PRNGKey):
        keys = jax.random.split(key, rewards.shape[0])
        return jax.vmap(lambda r, n, same, k: select_pair(
            r, n, same, k, config.pair_rule, config.length_penalty))(
            rewards, lengths, identical, keys)

    return pairs


def make_text_agent(config: Config, spec: TextSpec, sft_params: PyTree) -> Agent:
    """The DPO learner of each iteration on a language model: `agents.dpo.make_agent` with
    `config`'s beta, label smoothing and optimiser, starting from (and referenced to) the SFT
    model; `rlkit.loops.preference.run_iterative_dpo` warm-starts it from each iterate and sets
    the reference `config.reference` names."""
    from agents import dpo

    return dpo.make_agent(dpo.Config(
        beta=config.beta, label_smoothing=config.label_smoothing,
        learning_rate=config.learning_rate, weight_decay=config.weight_decay,
        batch_size=config.batch_size, total_steps=config.total_steps,
        max_grad_norm=config.max_grad_norm), spec, sft_params)


__all__ = ["Config", "PAIR_RULES", "make_tabular_run", "make_text_agent", "select_pair",
           "select_pairs"]
