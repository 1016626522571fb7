"""Online iterative DPO (issue 13 item 2; iterative_dpo.md 5.5): pair selection on the spec's
rewards, and the toy loop beating offline DPO at an equal label budget (20 seeds, vmapped)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import hypo
from agents import iterative_dpo as it
from envs.preference_bandits import TabularBanditConfig, make_tabular_bandit
from rlkit.errors import RlkitError
from rlkit.loops.preference import make_bandit_pair_run, run_over_seeds

REWARDS = jnp.array([0.1, 0.9, -0.3, 0.9])  # iterative_dpo.md 5.5.1
DISTINCT = jnp.eye(4, dtype=bool)  # only a response is identical to itself


def _pair(rewards, rule, lengths=None, identical=DISTINCT, key=0, penalty=0.0):
    lengths = jnp.zeros_like(rewards) if lengths is None else jnp.asarray(lengths, jnp.float32)
    chosen, rejected, valid = it.select_pair(rewards, lengths, identical, jax.random.key(key),
                                             rule, penalty)
    return int(chosen), int(rejected), bool(valid)


def test_best_vs_worst_takes_the_first_maximum_and_skips_ties():
    assert _pair(REWARDS, "max_min") == (1, 2, True)
    assert _pair(jnp.full(4, 0.5), "max_min")[2] is False  # equal rewards: no pair
    assert _pair(REWARDS, "max_max") == (1, 3, False)  # best vs second best: a tie, dropped
    assert _pair(jnp.array([0.1, 0.9, -0.3, 0.5]), "max_max") == (1, 3, True)
    same = DISTINCT.at[1, 2].set(True).at[2, 1].set(True)  # responses 1 and 2 are one text
    assert _pair(REWARDS, "max_min", identical=same)[2] is False


def test_length_penalty_prefers_the_shorter_response_at_equal_reward():
    rewards = jnp.array([1.0, 1.0, 0.0])
    assert _pair(rewards, "max_min_p", lengths=[5, 2, 3], penalty=0.01) == (1, 2, True)
    assert _pair(rewards, "max_min", lengths=[5, 2, 3], penalty=0.01) == (0, 2, True)
    # A long enough response loses even to a worse short one: 1 - 0.1 * 20 < 0 - 0.1 * 1.
    assert _pair(jnp.array([1.0, 0.0]), "max_min_p", lengths=[20, 1], penalty=0.1)[:2] == (1, 0)


def test_random_rules_draw_distinct_responses_uniformly():
    keys = jax.random.split(jax.random.key(0), 1200)

    def draw(rule):
        return jax.jit(jax.vmap(lambda key: it.select_pair(
            REWARDS, jnp.zeros(4), DISTINCT, key, rule)[:2]))(keys)

    chosen, rejected = map(np.asarray, draw("max_random"))
    assert (chosen == 1).all() and (rejected != 1).all()
    np.testing.assert_allclose(np.bincount(rejected, minlength=4)[[0, 2, 3]] / 1200, 1 / 3,
                               atol=0.04)  # 3 standard errors
    chosen, rejected = map(np.asarray, draw("random"))
    assert (chosen != rejected).all()
    assert (np.asarray(REWARDS)[chosen] >= np.asarray(REWARDS)[rejected]).all()
    pairs = {tuple(sorted(p)) for p in zip(chosen.tolist(), rejected.tolist(), strict=True)}
    assert len(pairs) == 6  # every unordered pair of distinct responses occurs


def test_three_iterations_beat_offline_dpo_at_an_equal_label_budget_over_20_seeds():
    # iterative_dpo.md 5.5.4: 16 prompts, 32 responses; pi_0 (logit std 2) puts most of its
    # mass on a few responses, so its own pairs cover the reward only partly.
    iterations, prompts, steps, beta, lr = 3, 32, 50, 0.1, 0.05
    bandit_config = TabularBanditConfig(num_prompts=16, num_responses=32, num_covered=32,
                                        reference_logit_std=2.0, label_temperature=0.0)
    config = it.Config(beta=beta, iterations=iterations, prompts_per_iteration=prompts,
                       steps_per_iteration=steps, learning_rate=lr, batch_size=32,
                       max_grad_norm=None)
    offline = hypo.Config(lam=0.0, k=2, beta=beta, learning_rate=lr, batch_size=32,
                          max_grad_norm=None)  # lambda = 0: DPO exactly (tests/test_hypo.py)

    def run(key):
        bandit_key, online_key, pairs_key, offline_key = jax.random.split(key, 4)
        bandit = make_tabular_bandit(bandit_config, bandit_key)
        _, metrics = it.make_tabular_run(config, bandit)(online_key)
        # Offline DPO gets the most labels iterative DPO could have used, drawn once from pi_0.
        pairs = bandit.sample_pairs(pairs_key, iterations * prompts)
        state, _ = make_bandit_pair_run(hypo.make_tabular_agent(offline, bandit),
                                        iterations * steps, 32)(offline_key, pairs)
        return metrics, bandit.expected_reward(state.params).mean(), bandit.expected_reward(
            bandit.reference_logits).mean()

    metrics, offline_reward, initial = run_over_seeds(run, jax.random.split(jax.random.key(0),
                                                                            20))
    online = np.asarray(metrics["true_reward"]).mean(0)  # [3], mean over seeds
    labels = np.asarray(metrics["labels_used"])  # [20, 3]
    assert (labels[:, -1] <= iterations * prompts).all()  # never more labels than offline
    assert np.all(np.diff(labels, axis=1) >= 0)
    assert online[-1] > float(np.mean(offline_reward)) > float(np.mean(initial))
    assert online[0] < online[1] < online[2]  # increases in expectation


@pytest.mark.parametrize("overrides, field", [
    ({"num_samples": 1}, "num_samples"), ({"pair_rule": "best"}, "pair_rule"),
    ({"num_samples": 5}, "num_samples"), ({"reference": "init"}, "reference"),
    ({"data": "some"}, "data"), ({"length_penalty": -1.0}, "length_penalty"),
    ({"temperatures": ()}, "temperatures"),
])
def test_config_names_the_bad_field(overrides, field):
    with pytest.raises(RlkitError, match=field) as error:
        it.Config(**overrides)
    assert "\n" not in str(error.value)
