"""Exact checks of the preference bandits (envs.preference_bandits): reward, KL and the
KL-regularised optimum against brute-force enumeration, the pair sampler against the enumerated
expected DPO loss, DPO's convergence to the analytic optimum on covered responses (and its
indifference to the uncovered ones), and the Tajwar et al. bandit's data policy and rewards."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from envs.preference_bandits import (
    PreferenceBandit,
    TabularBanditConfig,
    TajwarBanditConfig,
    make_tabular_bandit,
    make_tajwar_bandit,
    squashed_cauchy_bins,
    tabular_log_probs,
)
from rlkit.errors import RlkitError
from rlkit.ops import dpo_loss

_SMALL_TOKEN = TajwarBanditConfig(version="token", num_actions=4, num_new_tokens=3)


def _random_bandit(key, num_prompts=3, length=3, num_responses=4):
    """A factorised bandit with random rewards (prompt constants included) and a reference that
    differs across positions: 4^3 = 64 responses per prompt, few enough to enumerate."""
    reward_key, prompt_key, reference_key = jax.random.split(key, 3)
    reference = jax.nn.log_softmax(
        jax.random.normal(reference_key, (num_prompts, length, num_responses)), axis=-1)
    return PreferenceBandit(
        token_reward=jax.random.normal(reward_key, (num_prompts, num_responses)),
        prompt_reward=jax.random.normal(prompt_key, (num_prompts,)),
        reference_logits=reference, behaviour_logits=reference,
        label_temperature=jnp.float32(1.0))


def _all_responses(bandit):
    """Every response [V^L, L] of a bandit, enumerated."""
    return np.array(list(itertools.product(range(bandit.num_responses),
                                           repeat=bandit.response_length)), np.int32)


def _enumerate(bandit, prompt):
    """(prompt_ids [V^L, 1], responses [V^L, L]) for one prompt."""
    responses = _all_responses(bandit)
    return np.full((len(responses), 1), prompt, np.int32), responses


def test_expected_reward_kl_and_log_probs_match_brute_force_over_all_sequences():
    bandit = _random_bandit(jax.random.key(0))
    policy = jax.random.normal(jax.random.key(1), bandit.reference_logits.shape)
    expected_reward = bandit.expected_reward(policy)  # [X]
    kl = bandit.kl_to_reference(policy)  # [X]
    for prompt in range(bandit.num_prompts):
        prompt_ids, responses = _enumerate(bandit, prompt)
        log_pi = np.asarray(tabular_log_probs(policy, prompt_ids, responses), np.float64)
        log_ref = np.asarray(tabular_log_probs(bandit.reference_logits, prompt_ids, responses))
        # r(x, y) = prompt_reward[x] + sum_t token_reward[x, y_t], written out.
        reward = np.asarray(bandit.prompt_reward)[prompt] + np.asarray(
            bandit.token_reward)[prompt][responses].sum(axis=-1)
        np.testing.assert_allclose(bandit.true_reward(prompt_ids, responses), reward, rtol=1e-5)
        pi = np.exp(log_pi)
        np.testing.assert_allclose(pi.sum(), 1.0, rtol=1e-5)
        np.testing.assert_allclose(expected_reward[prompt], pi @ reward, rtol=1e-5)
        np.testing.assert_allclose(kl[prompt], pi @ (log_pi - log_ref), rtol=1e-4)
    assert np.all(np.asarray(kl) > 0.1)


def test_optimal_logits_reach_beta_log_partition_function_and_beat_perturbations():
    bandit = _random_bandit(jax.random.key(2))
    beta = 0.3
    star = bandit.optimal_logits(beta)
    objective = bandit.regularised_objective(star, beta)  # [X]
    for prompt in range(bandit.num_prompts):
        prompt_ids, responses = _enumerate(bandit, prompt)
        log_ref = np.asarray(tabular_log_probs(bandit.reference_logits, prompt_ids, responses),
                             np.float64)
        reward = np.asarray(bandit.true_reward(prompt_ids, responses), np.float64)
        # max_pi E r - beta KL = beta log sum_y pi_ref(y) exp(r(y) / beta), over all 64 y.
        log_partition = np.log(np.sum(np.exp(log_ref + reward / beta)))
        np.testing.assert_allclose(objective[prompt], beta * log_partition, rtol=1e-5)
        # and pi* is the Gibbs distribution of the enumeration, sequence by sequence.
        np.testing.assert_allclose(tabular_log_probs(star, prompt_ids, responses),
                                   log_ref + reward / beta - log_partition, atol=1e-4)
    perturbed = star + 0.3 * jax.random.normal(jax.random.key(3), (50, *star.shape))
    others = jax.vmap(bandit.regularised_objective, (0, None))(perturbed, beta)  # [50, X]
    assert np.all(others < objective - 1e-6)


def test_frontier_spends_the_kl_budget_and_no_policy_within_it_earns_more():
    """Random policies within the budget (mean KL over prompts) never beat the frontier's reward
    of the known rewards; the frontier spends the whole budget; with `known` the unknown rewards
    count as 0, exactly as in a bandit whose unknown rewards are 0."""
    config = TabularBanditConfig()
    bandit = make_tabular_bandit(config, jax.random.key(4))
    known = jnp.broadcast_to(jnp.arange(config.num_responses) < config.num_covered,
                             bandit.token_reward.shape)
    zeroed = bandit.replace(token_reward=jnp.where(known, bandit.token_reward, 0.0))
    for budget in (0.05, 0.3, 1.0):
        frontier = bandit.frontier_logits(budget, known)
        np.testing.assert_allclose(bandit.kl_to_reference(frontier).mean(), budget, rtol=1e-4)
        best = zeroed.expected_reward(frontier).mean()
        np.testing.assert_allclose(
            zeroed.expected_reward(zeroed.frontier_logits(budget)).mean(), best, rtol=1e-5)
        scale = jnp.array([0.1, 0.3, 1.0, 3.0])[:, None, None, None, None]
        others = scale * jax.random.normal(jax.random.key(5), (4, 500, *frontier.shape))
        others = (bandit.reference_logits + others).reshape(-1, *frontier.shape)
        kl = jax.vmap(lambda logits: bandit.kl_to_reference(logits).mean())(others)
        reward = jax.vmap(lambda logits: zeroed.expected_reward(logits).mean())(others)
        within = np.asarray(kl <= budget)
        assert within.sum() > 50  # the check has policies to compare
        assert np.all(np.asarray(reward)[within] <= best + 1e-5)
    # A budget beyond the greedy policy's KL buys the best known response in every prompt.
    greedy = bandit.frontier_logits(50.0, known)
    np.testing.assert_allclose(zeroed.expected_reward(greedy),
                               zeroed.token_reward.max(-1), atol=1e-4)


def _two_response_bandit(reward_gap, temperature=1.0):
    """One prompt, responses {0, 1} with rewards (gap, 0), uniform reference and behaviour."""
    uniform = jnp.full((1, 1, 2), math.log(0.5))
    return PreferenceBandit(token_reward=jnp.array([[reward_gap, 0.0]]),
                            prompt_reward=jnp.zeros(1), reference_logits=uniform,
                            behaviour_logits=uniform,
                            label_temperature=jnp.float32(temperature))


def test_expected_dpo_loss_by_hand_on_two_responses():
    bandit = _two_response_bandit(1.0)
    # The policy's log-ratio difference d = 1 between responses 0 and 1, beta = 1.
    policy = jnp.array([[[1.0, 0.0]]])
    sig = 1.0 / (1.0 + math.exp(-1.0))  # P(0 preferred to 1) = sigmoid(1); -log sigmoid(1)...
    # Identical pairs (probability 1/2) pay log 2; distinct ones (1/2) pay the label-weighted
    # losses -log sigmoid(d) if 0 wins, -log sigmoid(-d) if 1 wins.
    expected = 0.5 * math.log(2) + 0.5 * (sig * -math.log(sig) + (1 - sig) * -math.log(1 - sig))
    np.testing.assert_allclose(bandit.expected_dpo_loss(policy, beta=1.0), expected, rtol=1e-6)
    # Deterministic labels (tau = 0): response 0 always wins.
    hard = _two_response_bandit(1.0, temperature=0.0)
    np.testing.assert_allclose(hard.expected_dpo_loss(policy, beta=1.0),
                               0.5 * math.log(2) + 0.5 * -math.log(sig), rtol=1e-6)
    # At the reference every pair has z = 0: log 2.
    np.testing.assert_allclose(bandit.expected_dpo_loss(bandit.reference_logits, beta=0.1),
                               math.log(2), rtol=1e-6)


def _sampled_pair_statistics(bandit, policy, key, num_pairs):
    """From `num_pairs` sampled pairs: the largest response id, for prompt 0 and responses
    {0, 1} the number of such pairs and how many 0 won, and the pairs' DPO losses of `policy`
    (beta 0.7, label smoothing 0.1). One compiled program instead of dozens of eager ops."""
    pairs = bandit.sample_pairs(key, num_pairs)
    chosen, rejected = pairs.chosen_ids[:, 0], pairs.rejected_ids[:, 0]
    is_01 = (pairs.prompt_ids[:, 0] == 0) & (chosen + rejected == 1)
    log_pi = [tabular_log_probs(policy, pairs.prompt_ids, ids)
              for ids in (pairs.chosen_ids, pairs.rejected_ids)]
    log_ref = [tabular_log_probs(bandit.reference_logits, pairs.prompt_ids, ids)
               for ids in (pairs.chosen_ids, pairs.rejected_ids)]
    losses = dpo_loss(*log_pi, *log_ref, beta=0.7, label_smoothing=0.1).losses
    return (jnp.maximum(chosen, rejected).max(), is_01.sum(), (is_01 & (chosen == 0)).sum(),
            losses.mean(), losses.std())


def test_sampled_pairs_cover_only_the_covered_responses_and_match_the_enumerated_loss():
    bandit = make_tabular_bandit(TabularBanditConfig(), jax.random.key(2))
    policy = bandit.reference_logits + jax.random.normal(jax.random.key(4), (4, 1, 8))
    num_pairs = 200_000
    shapes = jax.eval_shape(lambda key: bandit.sample_pairs(key, num_pairs), jax.random.key(3))
    assert shapes.prompt_ids.shape == (num_pairs, 1) and shapes.chosen_ids.shape == (num_pairs, 1)
    assert shapes.chosen_ids.dtype == jnp.int32 and shapes.rejected_ids.dtype == jnp.int32
    largest, num_01, zero_wins, mean_loss, std_loss = jax.jit(
        _sampled_pair_statistics, static_argnums=3)(bandit, policy, jax.random.key(3), num_pairs)
    assert int(largest) == 3  # the behaviour policy covers responses 0..3 only
    # Label frequencies follow Bradley-Terry: among pairs {0, 1} of prompt 0, 0 is chosen with
    # probability sigmoid(r(0) - r(1)).
    target = float(jax.nn.sigmoid(bandit.token_reward[0, 0] - bandit.token_reward[0, 1]))
    standard_error = math.sqrt(target * (1 - target) / int(num_01))
    assert abs(int(zero_wins) / int(num_01) - target) < 4 * standard_error
    # The Monte-Carlo DPO loss of the sampled pairs matches the enumerated expectation.
    exact = float(bandit.expected_dpo_loss(policy, beta=0.7, label_smoothing=0.1))
    assert abs(float(mean_loss) - exact) < 4 * float(std_loss) / math.sqrt(num_pairs), (
        mean_loss, exact)


_BETA = 0.5
_STEPS = 1500


def _train_dpo(bandit, init_logits, loss_type="sigmoid"):
    """Adam (cosine-decayed step) on the exact expected DPO (or IPO) loss of a tabular policy."""
    optimizer = optax.adam(optax.cosine_decay_schedule(0.05, _STEPS))

    def loss(logits):
        return bandit.expected_dpo_loss(logits, beta=_BETA, loss_type=loss_type)

    def step(carry, _):
        logits, opt_state = carry
        grads = jax.grad(loss)(logits)
        updates, opt_state = optimizer.update(grads, opt_state)
        return (optax.apply_updates(logits, updates), opt_state), None

    (logits, _), _ = jax.lax.scan(step, (init_logits, optimizer.init(init_logits)),
                                  length=_STEPS)
    return jax.nn.log_softmax(logits, axis=-1)


def _covered_log_ratios(log_probs, num_covered=4):
    """log pi(y) - log pi(0) for covered y: [..., X, num_covered]."""
    covered = log_probs[..., 0, :num_covered]
    return covered - covered[..., :1]


def _uncovered_mass(log_probs, num_covered=4):
    return jnp.exp(log_probs[..., 0, num_covered:]).sum(axis=-1)  # [..., X]


def test_dpo_on_the_tabular_bandit_reaches_the_analytic_optimum_on_covered_responses():
    """hypo.md 4.4 / issue 12 item 7: with labels of temperature 1, DPO's population minimiser
    satisfies log pi(y) - log pi(y') = log pi*(y) - log pi*(y') for covered y, y', pi* being
    proportional to pi_ref exp(r / beta); vmapped over three seeds."""
    config = TabularBanditConfig()
    bandits = jax.vmap(make_tabular_bandit, (None, 0))(config,
                                                        jax.random.split(jax.random.key(5), 3))
    trained = jax.vmap(lambda bandit: _train_dpo(bandit, bandit.reference_logits))(bandits)
    optimum = jax.vmap(lambda bandit: bandit.optimal_logits(_BETA))(bandits)
    np.testing.assert_allclose(_covered_log_ratios(trained), _covered_log_ratios(optimum),
                               atol=1e-3)
    # The optimum is not the reference: the test would fail for an untrained policy.
    assert np.abs(_covered_log_ratios(bandits.reference_logits)
                  - _covered_log_ratios(optimum)).max() > 0.5


def test_dpo_leaves_the_mass_on_uncovered_responses_uncontrolled():
    """What HyPO fixes (hypo.md 4.4): the offline DPO loss does not see uncovered responses, so
    their mass is wherever the optimiser leaves it, not where pi* puts it."""
    bandit = make_tabular_bandit(TabularBanditConfig(), jax.random.key(6))
    reference = bandit.reference_logits
    uncovered = (jnp.arange(8) >= 4).astype(jnp.float32)
    # The expected loss is exactly invariant to any shift of the uncovered logits.
    shifted = reference + jnp.array([3.0, -2.0, 1.0, 5.0])[:, None, None] * uncovered
    policy = reference + jax.random.normal(jax.random.key(7), reference.shape)
    np.testing.assert_allclose(bandit.expected_dpo_loss(policy + shifted - reference, beta=_BETA),
                               bandit.expected_dpo_loss(policy, beta=_BETA), rtol=1e-6)
    # Two starts that differ on the uncovered logits only: both reach pi*'s covered ratios,
    # yet their uncovered masses stay apart, and neither is pi*'s.
    trained = jax.vmap(lambda init: _train_dpo(bandit, init))(jnp.stack([reference, shifted]))
    optimum = bandit.optimal_logits(_BETA)
    np.testing.assert_allclose(_covered_log_ratios(trained),
                               jnp.stack([_covered_log_ratios(optimum)] * 2), atol=1e-3)
    masses = _uncovered_mass(trained)  # [2, X]
    assert np.abs(masses[0] - masses[1]).max() > 0.3, masses
    assert np.all(np.abs(masses - _uncovered_mass(optimum)).max(axis=-1) > 0.1), (
        masses, _uncovered_mass(optimum))


def test_ipo_on_the_tabular_bandit_reaches_its_bounded_optimum():
    """IPO's population minimiser (Azar et al. 2023, section 5): on the support of the pair
    policy mu, log pi(y)/pi_ref(y) - log pi(y')/pi_ref(y') = (p(y > mu) - p(y' > mu)) / beta,
    with p(y > mu) = E_{y' ~ mu} P(y preferred to y'). (Setting the gradient of the enumerated
    loss to zero gives it: rho(y) - E_mu rho = (p(y > mu) - 1/2) / beta.) Unlike DPO's target it
    stays bounded with deterministic labels."""
    bandit = make_tabular_bandit(TabularBanditConfig(label_temperature=0.0), jax.random.key(9))
    trained = _train_dpo(bandit, bandit.reference_logits, loss_type="ipo")
    mu = np.exp(np.asarray(bandit.behaviour_logits[:, 0, :4], np.float64))  # [X, 4]
    reward = np.asarray(bandit.token_reward[:, :4], np.float64)  # [X, 4]
    beats = 0.5 * (1.0 + np.sign(reward[:, :, None] - reward[:, None, :]))  # [X, 4, 4]
    win_rate = np.einsum("xab,xb->xa", beats, mu)  # p(y > mu), [X, 4]
    log_ratio = np.asarray(trained[:, 0, :4] - bandit.reference_logits[:, 0, :4])
    np.testing.assert_allclose(log_ratio - log_ratio[:, :1],
                               (win_rate - win_rate[:, :1]) / _BETA, atol=1e-3)
    assert np.abs(win_rate - win_rate[:, :1]).max() / _BETA > 0.5


def test_tajwar_data_policy_is_an_exact_squashed_cauchy_histogram():
    bandit = make_tajwar_bandit(TajwarBanditConfig())
    assert (bandit.num_prompts, bandit.response_length, bandit.num_responses) == (1, 1, 100)
    probs = np.exp(np.asarray(bandit.behaviour_logits[0, 0], np.float64))
    np.testing.assert_allclose(probs.sum(), 1.0, rtol=1e-6)
    # The interior mode is bin 16 ("near bin 15"); the Cauchy's tails pile mass into the edge
    # bins, so the global argmax is bin 0.
    assert int(np.argmax(probs[1:-1])) + 1 == 16
    assert int(np.argmax(probs)) == 0
    # Bin 0 by hand: F(atanh(-0.98)) - F(-inf) with F(x) = 1/2 + arctan((x + 0.7) / 0.4) / pi.
    np.testing.assert_allclose(
        probs[0], 0.5 + math.atan((math.atanh(-0.98) + 0.7) / 0.4) / math.pi, rtol=1e-5)
    # A histogram of samples (how the paper's code builds it) agrees within sampling noise.
    rng = np.random.default_rng(0)
    samples = np.tanh(-0.7 + 0.4 * rng.standard_cauchy(400_000))
    histogram = np.histogram(samples, range=(-1.0, 1.0), bins=100)[0] / len(samples)
    np.testing.assert_allclose(histogram, probs, atol=2e-3)
    np.testing.assert_allclose(squashed_cauchy_bins(100, -0.7, 0.4), probs, rtol=1e-5)
    np.testing.assert_array_equal(bandit.reference_logits, bandit.behaviour_logits)


@pytest.mark.parametrize(("reward", "width", "peak", "at_one_width"),
                         [("not-aligned", 10.0, 70, (60, 80)), ("aligned", 10.0, 20, (10, 30)),
                          ("not-aligned", 20.0, 70, (50, 90)), ("not-aligned", 30.0, 70, (40,))])
def test_tajwar_reward_peaks_where_the_paper_puts_it(reward, width, peak, at_one_width):
    bandit = make_tajwar_bandit(TajwarBanditConfig(reward=reward, reward_width=width))
    token_reward = bandit.token_reward[0]
    assert int(jnp.argmax(token_reward)) == peak
    np.testing.assert_allclose(token_reward[peak], 1.0)
    np.testing.assert_allclose(token_reward[np.array(at_one_width)], math.exp(-1.0), rtol=1e-6)
    prompt = jnp.zeros((1, 1), jnp.int32)
    np.testing.assert_allclose(bandit.true_reward(prompt, jnp.array([[peak + 5]])),
                               [math.exp(-((5 / width) ** 2))], rtol=1e-6)


def test_tajwar_token_version_reward_is_the_mean_over_new_tokens():
    bandit = make_tajwar_bandit(TajwarBanditConfig(version="token"))
    assert (bandit.num_prompts, bandit.response_length, bandit.vocab_size) == (100, 9, 100)
    responses = jnp.array([[70] * 9, [70] * 3 + [60] * 6, [0] * 9], jnp.int32)
    prompts = jnp.array([[5], [70], [99]], jnp.int32)
    expected = [1.0, (3 + 6 * math.exp(-1)) / 9, math.exp(-49.0)]
    np.testing.assert_allclose(bandit.true_reward(prompts, responses), expected, rtol=1e-5)
    # The paper code's reading averages the prompt token in: (r(prompt) + sum_t r(y_t)) / 10.
    with_prompt = make_tajwar_bandit(TajwarBanditConfig(version="token",
                                                        reward_includes_prompt=True))
    np.testing.assert_allclose(
        with_prompt.true_reward(prompts, responses),
        [(math.exp(-42.25) + 9) / 10, (1 + 3 + 6 * math.exp(-1)) / 10,
         (math.exp(-(2.9**2)) + 9 * math.exp(-49.0)) / 10], rtol=1e-5)
    # Sampling from the data policy gives 9 in-vocabulary tokens per prompt.
    pairs = bandit.sample_pairs(jax.random.key(8), 64)
    assert pairs.chosen_ids.shape == (64, 9) and int(pairs.chosen_ids.max()) < 100
    assert np.all(bandit.true_reward(pairs.prompt_ids, pairs.chosen_ids)
                  >= bandit.true_reward(pairs.prompt_ids, pairs.rejected_ids))  # tau = 0


def test_bad_configs_and_calls_fail_with_one_line_naming_the_field():
    with pytest.raises(RlkitError, match="version: must be 'one-step' or 'token'"):
        TajwarBanditConfig(version="two-step")
    with pytest.raises(RlkitError, match="reward: must be 'not-aligned' or 'aligned'"):
        TajwarBanditConfig(reward="misaligned")
    with pytest.raises(RlkitError, match=r"reward_width: must be a finite number in \(0, inf\)"):
        TajwarBanditConfig(reward_width=0.0)
    with pytest.raises(RlkitError, match=r"num_covered: must be <= num_responses \(8\)"):
        TabularBanditConfig(num_covered=9)
    with pytest.raises(RlkitError, match="label_temperature"):
        TabularBanditConfig(label_temperature=-1.0)
    token = make_tajwar_bandit(_SMALL_TOKEN)
    with pytest.raises(RlkitError, match="response_length: expected_dpo_loss enumerates"):
        token.expected_dpo_loss(token.reference_logits, beta=0.1)
    with pytest.raises(RlkitError, match="beta"):
        token.optimal_logits(0.0)
