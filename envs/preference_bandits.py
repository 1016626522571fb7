"""Preference bandits with an exact true reward: tabular "language models" whose answers are
computed by enumeration, so preference learning (DPO, IPO, HyPO, iterative DPO) is tested without
a judge model.

A bandit is a `PreferenceBandit` pytree (vmap its constructor over keys for one bandit per seed).
A prompt is one token x in [0, X); a response is L tokens y = (y_1, ..., y_L) over V tokens. The
true reward is additive over response tokens,

    r(x, y) = prompt_reward[x] + sum_t token_reward[x, y_t],

and the reference policy, the behaviour (data) policy and every tabular policy are *factorised*:
a table of logits [X, L, V], pi(y | x) = prod_t softmax(logits[x, t])[y_t]. Additivity and
factorisation make everything exact for any L: the expected reward and KL(pi || pi_ref) are sums
over positions, and the KL-regularised optimum (Rafailov et al. 2023, eq. 4)

    pi*(y | x) proportional to pi_ref(y | x) exp(r(x, y) / beta)

factorises too, position by position: pi*_t(v | x) proportional to pi_ref_t(v | x)
exp(token_reward[x, v] / beta) (`PreferenceBandit.optimal_logits`).

Preference labels follow Bradley-Terry on the true reward with a temperature tau:
P(y1 preferred to y2 | x) = sigmoid((r(x, y1) - r(x, y2)) / tau); tau = 0 gives deterministic
labels (the higher reward wins, ties are a fair coin). DPO's population minimiser on the pairs it
sees is the optimum for the reward r / tau, so the analytic optimum above is DPO's target on the
covered responses when tau = 1.

Two families (both `PreferenceBandit`s, so a preference driver treats them alike):

* `make_tabular_bandit` (hypo.md 4.4, iterative_dpo.md 5.5.4): X prompts, one-token responses
  (L = 1) over V candidates, r(x, y) ~ N(0, reward_std^2) fixed by the key, a "uniform-ish"
  reference softmax(N(0, reference_logit_std^2)), and offline pairs drawn from the reference
  restricted to the first `num_covered` responses, so coverage is partial. The exact expected
  DPO loss over that pair distribution (`expected_dpo_loss`) enumerates all V^2 pairs.
* `make_tajwar_bandit` (Tajwar et al. 2024, "Preference Fine-Tuning of LLMs Should Leverage
  Suboptimal, On-Policy Data", arXiv 2404.14367, section 4; code `Asap7772/understanding-rlhf`,
  folder `bandit_experiment/`, read for these choices):
  - 100 actions. The data policy is tanh(Cauchy(loc -0.7, scale 0.4)) on [-1, 1] cut into 100
    equal bins. The paper's code estimates the bin masses from a histogram of 10,000 samples;
    here they are exact, from the Cauchy CDF at atanh of the bin edges. The heavy tails pile mass
    into the two edge bins (bin 0: 0.078, bin 99: 0.042, the global argmax is bin 0); the mode of
    the interior is bin 16 (0.0268), which is "near bin 15".
  - Reward exp(-((a - peak) / width)^2): peak 70 "not-aligned" (the code's reward 4), peak 20
    "aligned" (reward 5), width 10, or 20 and 30 (rewards 8 and 9), config switches.
  - "one-step": a single prompt (id 0), one response token, reference = behaviour = the data
    policy. The paper's one-step runs also feed a 100-dimensional uniform context that the
    reward ignores; it is dropped here.
  - "token": the prompt is one token drawn uniformly from the vocabulary of 100 (the code's
    `TransformerEnv.reset`), the response is 9 new tokens, and the reward is the mean of the
    per-token reward over the 9 new tokens (rewards 6 and 7). The code averages over the prompt
    token as well (its sampler returns prompt + response); `reward_includes_prompt=True` gives
    that reading: a per-prompt constant plus the same per-token reward scaled by 1 / 10. The
    reference and the data policy put the data policy's categorical at every position, the
    distribution the code's SFT step fits (KL to pi_data at every position); the code's
    reference is that SFT transformer, whose fit is not exact. Prompts are uniform over all
    100 tokens (the code draws 100 training prompts once).

Nothing here jits: the drivers (or the tests) own the jit boundary.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from rlkit.errors import require, require_int_at_least, require_number, require_one_of
from rlkit.ops import dpo_loss, tabular_log_probs  # noqa: F401 (re-exported for the bandits' users)
from rlkit.types import Array, BanditPairs, PRNGKey

# The pair batch and the log-probabilities live in rlkit (agents read them; agents never import
# envs); the names are kept here for the bandits' users.
PreferencePairs = BanditPairs


def _kl_per_position(logits_p: Array, logits_q: Array) -> Array:
    """KL(softmax(p) || softmax(q)) over the last axis; 0 * log 0 counts as 0."""
    log_p = jax.nn.log_softmax(logits_p, axis=-1)
    log_q = jax.nn.log_softmax(logits_q, axis=-1)
    p = jnp.exp(log_p)
    return jnp.where(p > 0, p * (log_p - log_q), 0.0).sum(axis=-1)


@struct.dataclass
class PreferenceBandit:
    """A preference bandit with an exact true reward (a pytree: vmap it over seeds).

    Attributes:
        token_reward: [X, V] float32, the reward of response token v after prompt x (at any
            position).
        prompt_reward: [X] float32, a per-prompt constant added to every response's reward.
        reference_logits: [X, L, V] float32 normalised log-probabilities of the reference policy
            pi_ref (factorised over the L response positions).
        behaviour_logits: [X, L, V] float32 normalised log-probabilities of the policy that draws
            offline pairs; -inf on responses it never covers.
        label_temperature: float32 scalar tau of the Bradley-Terry labels; 0: deterministic.
    """

    token_reward: Array
    prompt_reward: Array
    reference_logits: Array
    behaviour_logits: Array
    label_temperature: Array

    @property
    def num_prompts(self) -> int:
        """X, the number of prompts (prompt ids are 0..X-1)."""
        return self.reference_logits.shape[-3]

    @property
    def response_length(self) -> int:
        """L, the number of tokens in every response."""
        return self.reference_logits.shape[-2]

    @property
    def num_responses(self) -> int:
        """V, the number of candidate tokens at each response position."""
        return self.reference_logits.shape[-1]

    @property
    def vocab_size(self) -> int:
        """The token space that holds prompts and responses: max(X, V)."""
        return max(self.num_prompts, self.num_responses)

    def true_reward(self, prompt_ids: Array, response_ids: Array) -> Array:
        """r(x, y) = prompt_reward[x] + sum_t token_reward[x, y_t].

        Args:
            prompt_ids: [B, 1] int prompt tokens.
            response_ids: [B, L] int response tokens.

        Returns:
            [B] float32 true rewards.
        """
        prompts = prompt_ids[:, 0]  # [B]
        per_token = jnp.take_along_axis(self.token_reward[prompts],
                                        response_ids.astype(jnp.int32), axis=-1)  # [B, L]
        return self.prompt_reward[prompts] + per_token.sum(axis=-1)

    def expected_reward(self, policy_logits: Array) -> Array:
        """E_{y ~ pi(. | x)} r(x, y) of a tabular policy, exact.

        Args:
            policy_logits: [X, L, V] logits of a factorised policy.

        Returns:
            [X] float32 expected reward per prompt (prompts are uniform: `.mean()` is J(pi)).
        """
        probs = jax.nn.softmax(policy_logits.astype(jnp.float32), axis=-1)  # [X, L, V]
        return self.prompt_reward + jnp.einsum("xlv,xv->x", probs, self.token_reward)

    def kl_to_reference(self, policy_logits: Array) -> Array:
        """KL(pi(. | x) || pi_ref(. | x)) of a tabular policy, exact (a sum over positions, both
        policies being factorised).

        Args:
            policy_logits: [X, L, V] logits.

        Returns:
            [X] float32 reverse KL per prompt, in nats.
        """
        return _kl_per_position(policy_logits.astype(jnp.float32),
                                self.reference_logits).sum(axis=-1)

    def optimal_logits(self, beta: float | Array) -> Array:
        """The KL-regularised optimum argmax_pi E_pi r - beta KL(pi || pi_ref) (Rafailov et al.
        2023, eq. 4): pi*(y | x) proportional to pi_ref(y | x) exp(r(x, y) / beta), factorised.

        Args:
            beta: the KL coefficient, > 0.

        Returns:
            [X, L, V] float32 normalised log-probabilities of pi*.
        """
        if isinstance(beta, int | float):
            require_number(beta, "beta", low=0.0, low_open=True)
        tilted = self.reference_logits + self.token_reward[:, None, :] / beta  # [X, L, V]
        return jax.nn.log_softmax(tilted, axis=-1)

    def frontier_logits(self, kl_budget: float | Array, known: Array | None = None,
                        iterations: int = 100) -> Array:
        """The most rewarding policy within a reverse-KL budget, for a chooser who knows the rewards
        marked `known` and counts every other one at its prior mean, 0 (the tabular bandit's
        N(0, reward_std^2)): argmax_pi E_x E_pi r_known s.t. E_x KL(pi || pi_ref) <= kl_budget.
        By Lagrange duality it is `optimal_logits(beta)` of the known rewards for the beta at
        which the mean KL equals the budget (all of them if even beta -> 0 spends less), found by
        bisection on log beta. With `known` = the covered responses it bounds what any method
        that learns from covered pairs alone can expect at that KL (HyPO's fresh samples carry no
        reward), the reading of the HyPO bar in benchmarks/preference.py.

        Args:
            kl_budget: the mean reverse KL over prompts, nats, >= 0.
            known: [X, V] bool, the rewards the chooser knows (None: all).
            iterations: bisection steps on log beta in [-12, 12].

        Returns:
            [X, L, V] float32 normalised log-probabilities.
        """
        reward = self.token_reward if known is None else jnp.where(known, self.token_reward, 0.0)
        chooser = self.replace(token_reward=reward)

        def mean_kl(log_beta):
            return chooser.kl_to_reference(chooser.optimal_logits(jnp.exp(log_beta))).mean()

        def step(_, bounds):
            low, high = bounds
            mid = 0.5 * (low + high)
            over = mean_kl(mid) > kl_budget  # beta too small: the policy spends too much KL
            return jnp.where(over, mid, low), jnp.where(over, high, mid)

        _, high = jax.lax.fori_loop(0, iterations, step, (jnp.float32(-12.0), jnp.float32(12.0)))
        return chooser.optimal_logits(jnp.exp(high))

    def regularised_objective(self, policy_logits: Array, beta: float | Array) -> Array:
        """E_pi r - beta KL(pi || pi_ref) per prompt, exact; `optimal_logits(beta)` maximises it,
        where it equals prompt_reward[x] + beta sum_t log sum_v pi_ref_t(v | x)
        exp(token_reward[x, v] / beta).

        Args:
            policy_logits: [X, L, V] logits.
            beta: the KL coefficient.

        Returns:
            [X] float32.
        """
        return self.expected_reward(policy_logits) - beta * self.kl_to_reference(policy_logits)

    def sample_prompts(self, key: PRNGKey, batch_size: int) -> Array:
        """Prompts drawn uniformly: [batch_size, 1] int32 in [0, X)."""
        return jax.random.randint(key, (batch_size, 1), 0, self.num_prompts, jnp.int32)

    def sample_responses(self, key: PRNGKey, policy_logits: Array, prompt_ids: Array) -> Array:
        """Responses y ~ pi(. | x) of a tabular policy.

        Args:
            key: PRNG key.
            policy_logits: [X, L, V] logits (the bandit's `behaviour_logits` for offline data).
            prompt_ids: [B, 1] int prompt tokens.

        Returns:
            [B, L] int32 response tokens.
        """
        return jax.random.categorical(key, policy_logits[prompt_ids[:, 0]], axis=-1).astype(
            jnp.int32)

    def preference_probability(self, prompt_ids: Array, first_ids: Array,
                               second_ids: Array) -> Array:
        """P(first preferred to second | x) under Bradley-Terry with temperature tau.

        Args:
            prompt_ids: [B, 1]; first_ids, second_ids: [B, L].

        Returns:
            [B] float32 sigmoid((r(x, first) - r(x, second)) / tau); for tau = 0, 1, 0 or 1/2 as
            the first reward is above, below or equal to the second.
        """
        margin = (self.true_reward(prompt_ids, first_ids)
                  - self.true_reward(prompt_ids, second_ids))  # [B]
        return _bradley_terry_probability(margin, self.label_temperature)

    def sample_pairs(self, key: PRNGKey, num_pairs: int,
                     policy_logits: Array | None = None) -> PreferencePairs:
        """Labelled pairs: x uniform, y1 and y2 drawn independently from a policy, labelled by
        Bradley-Terry on the true reward. Pairs of identical responses are kept (their DPO loss
        is log 2 and has no gradient), as in `expected_dpo_loss`.

        Args:
            key: PRNG key.
            num_pairs: N.
            policy_logits: [X, L, V] the sampling policy; None: the behaviour policy (offline
                data).

        Returns:
            `PreferencePairs` with [N, 1] prompts and [N, L] chosen and rejected responses.
        """
        if policy_logits is None:
            policy_logits = self.behaviour_logits
        prompt_key, first_key, second_key, label_key = jax.random.split(key, 4)
        prompt_ids = self.sample_prompts(prompt_key, num_pairs)  # [N, 1]
        first = self.sample_responses(first_key, policy_logits, prompt_ids)  # [N, L]
        second = self.sample_responses(second_key, policy_logits, prompt_ids)  # [N, L]
        first_wins = jax.random.bernoulli(
            label_key, self.preference_probability(prompt_ids, first, second))[:, None]  # [N, 1]
        return PreferencePairs(prompt_ids, jnp.where(first_wins, first, second),
                               jnp.where(first_wins, second, first))

    def expected_dpo_loss(self, policy_logits: Array, *, beta: float | Array,
                          label_smoothing: float = 0.0, loss_type: str = "sigmoid",
                          pair_logits: Array | None = None) -> Array:
        """The exact expected DPO loss of a tabular policy over labelled pairs, by enumeration.

        E_x E_{y1, y2 ~ mu(. | x)} E_label[L(chosen, rejected)] = sum_x (1 / X) sum_{a, b}
        2 mu(a | x) mu(b | x) P(a preferred to b | x) L(a, b), with L `rlkit.ops.dpo_loss` (the
        reference is the bandit's). One-token responses only (L = 1): V^2 pairs per prompt.

        Args:
            policy_logits: [X, 1, V] logits of the policy being trained.
            beta, label_smoothing, loss_type: as in `rlkit.ops.dpo_loss`.
            pair_logits: [X, 1, V] the policy mu that draws the pairs; None: the behaviour policy.

        Returns:
            float32 scalar, the expected loss (differentiable in `policy_logits`).

        Raises:
            RlkitError: responses longer than one token (V^(2L) pairs is not enumerable).
        """
        require(self.response_length == 1, "response_length",
                f"expected_dpo_loss enumerates one-token responses only, got "
                f"{self.response_length} tokens; sample pairs with `sample_pairs` instead.")
        if pair_logits is None:
            pair_logits = self.behaviour_logits
        log_ratio = (jax.nn.log_softmax(policy_logits[:, 0].astype(jnp.float32), axis=-1)
                     - self.reference_logits[:, 0])  # [X, V]
        mu = jax.nn.softmax(pair_logits[:, 0], axis=-1)  # [X, V]
        reward = self.token_reward  # [X, V]; the prompt's constant cancels in every margin
        chosen_wins = _bradley_terry_probability(reward[:, :, None] - reward[:, None, :],
                                                 self.label_temperature)  # [X, V, V]
        weight = 2.0 * mu[:, :, None] * mu[:, None, :] * chosen_wins  # [X, V(chosen), V]
        num_pairs = weight.size
        chosen = jnp.broadcast_to(log_ratio[:, :, None], weight.shape).reshape(num_pairs)
        rejected = jnp.broadcast_to(log_ratio[:, None, :], weight.shape).reshape(num_pairs)
        zeros = jnp.zeros(num_pairs, jnp.float32)
        losses = dpo_loss(chosen, rejected, zeros, zeros, beta=beta,
                          label_smoothing=label_smoothing, loss_type=loss_type).losses
        return (weight.reshape(num_pairs) * losses).sum() / self.num_prompts


def _bradley_terry_probability(margin: Array, temperature: Array) -> Array:
    """sigmoid(margin / tau), or the step function (1/2 at 0) for tau = 0."""
    safe = jnp.where(temperature > 0, temperature, 1.0)
    soft = jax.nn.sigmoid(margin / safe)
    hard = 0.5 * (1.0 + jnp.sign(margin))
    return jnp.where(temperature > 0, soft, hard).astype(jnp.float32)


@dataclass(frozen=True)
class TabularBanditConfig:
    """The tabular "language model" bandit of hypo.md 4.4 (iterative_dpo.md 5.5.4 uses 16 prompts
    and 32 responses)."""

    num_prompts: int = 4
    """X, the number of prompts."""
    num_responses: int = 8
    """V, the number of one-token responses per prompt."""
    num_covered: int = 4
    """Offline pairs draw only responses 0..num_covered-1 (partial coverage)."""
    reward_std: float = 1.0
    """r(x, y) ~ N(0, reward_std^2), fixed by the key."""
    reference_logit_std: float = 0.5
    """pi_ref = softmax(N(0, reference_logit_std^2)) per prompt; 0: uniform."""
    label_temperature: float = 1.0
    """tau of the Bradley-Terry labels; 0: the higher reward always wins."""

    def __post_init__(self):
        require_int_at_least(self.num_prompts, "num_prompts", 1)
        require_int_at_least(self.num_responses, "num_responses", 2)
        require_int_at_least(self.num_covered, "num_covered", 2)
        require(self.num_covered <= self.num_responses, "num_covered",
                f"must be <= num_responses ({self.num_responses}), got {self.num_covered}.")
        require_number(self.reward_std, "reward_std", low=0.0, low_open=True)
        require_number(self.reference_logit_std, "reference_logit_std", low=0.0)
        require_number(self.label_temperature, "label_temperature", low=0.0)


def make_tabular_bandit(config: TabularBanditConfig, key: PRNGKey) -> PreferenceBandit:
    """A random tabular bandit: rewards and reference drawn from `key`, one-token responses.

    Args:
        config: a `TabularBanditConfig`.
        key: PRNG key (vmap over keys for one bandit per seed).

    Returns:
        A `PreferenceBandit` with L = 1, prompt_reward 0 and a behaviour policy equal to pi_ref
        restricted (and renormalised) to responses 0..num_covered-1.
    """
    reward_key, reference_key = jax.random.split(key)
    shape = (config.num_prompts, config.num_responses)
    reward = config.reward_std * jax.random.normal(reward_key, shape)  # [X, V]
    reference = jax.nn.log_softmax(
        config.reference_logit_std * jax.random.normal(reference_key, shape), axis=-1)  # [X, V]
    covered = jnp.arange(config.num_responses) < config.num_covered  # [V]
    behaviour = jax.nn.log_softmax(jnp.where(covered, reference, -jnp.inf), axis=-1)  # [X, V]
    return PreferenceBandit(
        token_reward=reward.astype(jnp.float32),
        prompt_reward=jnp.zeros(config.num_prompts, jnp.float32),
        reference_logits=reference[:, None, :].astype(jnp.float32),
        behaviour_logits=behaviour[:, None, :].astype(jnp.float32),
        label_temperature=jnp.float32(config.label_temperature),
    )


TAJWAR_REWARD_PEAKS = {"not-aligned": 70, "aligned": 20}


@dataclass(frozen=True)
class TajwarBanditConfig:
    """The 100-action bandit of Tajwar et al. 2024 (iterative_dpo.md 5.7)."""

    version: str = "one-step"
    """"one-step" (one prompt, one response token) or "token" (a prompt token, 9 new tokens)."""
    reward: str = "not-aligned"
    """"not-aligned": the reward peaks at action 70, far from the data's mode; "aligned": 20."""
    reward_width: float = 10.0
    """sigma of exp(-((a - peak) / sigma)^2); the paper's variants are 10, 20 and 30."""
    num_actions: int = 100
    """Actions (one-step) or vocabulary (token): the number of bins of the data policy."""
    num_new_tokens: int = 9
    """Response length of the token version."""
    data_loc: float = -0.7
    """Location of the Cauchy before the tanh squash."""
    data_scale: float = 0.4
    """Scale of the Cauchy before the tanh squash."""
    reward_includes_prompt: bool = False
    """Token version: average the per-token reward over the prompt token too, as the paper's
    code does (a per-prompt constant; the margins shrink by num_new_tokens / (num_new_tokens +
    1))."""
    label_temperature: float = 0.0
    """tau of the Bradley-Terry labels; 0 (default): the higher reward wins, as the paper's
    code ranks samples by their reward."""

    def __post_init__(self):
        require_one_of(self.version, "version", ("one-step", "token"))
        require_one_of(self.reward, "reward", tuple(TAJWAR_REWARD_PEAKS))
        require_number(self.reward_width, "reward_width", low=0.0, low_open=True)
        require_int_at_least(self.num_actions, "num_actions", 2)
        require_int_at_least(self.num_new_tokens, "num_new_tokens", 1)
        require_number(self.data_scale, "data_scale", low=0.0, low_open=True)
        require_number(self.data_loc, "data_loc")
        require_number(self.label_temperature, "label_temperature", low=0.0)


def squashed_cauchy_bins(num_bins: int, loc: float, scale: float) -> np.ndarray:
    """Exact bin masses of tanh(X), X ~ Cauchy(loc, scale), over `num_bins` equal bins of [-1, 1].

    P(tanh X in [a, b]) = F(atanh b) - F(atanh a), F(x) = 1/2 + arctan((x - loc) / scale) / pi.

    Returns:
        [num_bins] float64 probabilities summing to 1.
    """
    edges = np.linspace(-1.0, 1.0, num_bins + 1)
    with np.errstate(divide="ignore"):  # atanh(+-1) = +-inf, where F is 1 and 0
        cdf = 0.5 + np.arctan((np.arctanh(edges) - loc) / scale) / np.pi
    return np.diff(cdf)


def make_tajwar_bandit(config: TajwarBanditConfig) -> PreferenceBandit:
    """The Tajwar et al. bandit, one-step or token version (deterministic: no key).

    Args:
        config: a `TajwarBanditConfig`.

    Returns:
        A `PreferenceBandit`: one-step X = 1, L = 1; token X = V = num_actions,
        L = num_new_tokens. Reference and behaviour are both the data policy at every position.
    """
    actions = np.arange(config.num_actions, dtype=np.float64)
    peak = TAJWAR_REWARD_PEAKS[config.reward]
    reward = np.exp(-(((actions - peak) / config.reward_width) ** 2))  # [V]
    data_log_probs = np.log(squashed_cauchy_bins(config.num_actions, config.data_loc,
                                                 config.data_scale))  # [V]
    if config.version == "one-step":
        num_prompts, length = 1, 1
        token_reward = reward[None, :]
        prompt_reward = np.zeros(1)
    else:
        num_prompts, length = config.num_actions, config.num_new_tokens
        divisor = length + 1 if config.reward_includes_prompt else length
        token_reward = np.broadcast_to(reward / divisor, (num_prompts, config.num_actions))
        # The prompt token x is a token like any other: it pays reward[x] when it is averaged in.
        prompt_reward = reward / divisor if config.reward_includes_prompt else np.zeros(
            num_prompts)
    data = np.broadcast_to(data_log_probs, (num_prompts, length, config.num_actions))
    return PreferenceBandit(
        token_reward=jnp.asarray(token_reward, jnp.float32),
        prompt_reward=jnp.asarray(prompt_reward, jnp.float32),
        reference_logits=jnp.asarray(data, jnp.float32),
        behaviour_logits=jnp.asarray(data, jnp.float32),
        label_temperature=jnp.float32(config.label_temperature),
    )
