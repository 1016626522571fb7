"""SFT, the Bradley-Terry reward model and Direct Preference Optimisation through their agents,
the digit text tasks' exact reward, and the preference driver (issue 12, items 4 and 5c)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import dpo, reward_model, sft
from envs import text_tasks
from rlkit.data.preferences import PreferenceRecord
from rlkit.errors import RlkitError
from rlkit.lm.tokenizer import ByteTokenizer
from rlkit.lm.transformer import Transformer, TransformerConfig, positions_from_mask
from rlkit.loops import preference as driver
from rlkit.types import PreferencePairs, TextSpec

TOKENIZER = ByteTokenizer()
TASK = text_tasks.make_text_task("sort", text_tasks.Config(num_digits=3), TOKENIZER)
P, N = TASK.prompt_tokens, TASK.completion_tokens  # 5 and 4
MODEL = TransformerConfig(vocab_size=TOKENIZER.vocab_size, num_layers=1, width=16, num_heads=2,
                          mlp_width=32, max_length=16)
SPEC = TextSpec(MODEL, P, N, TOKENIZER.pad_id, TOKENIZER.eos_id)


def _pairs(records):
    return jax.tree.map(jnp.asarray, driver.tokenize_pairs(TOKENIZER, records, P, N))


# Short prompts and completions leave padding on both sides.
RECORDS = [PreferenceRecord("312=", "123", "321"), PreferenceRecord("97=", "79", "9"),
           PreferenceRecord("5=", "5", "5a5")]


# The task's exact reward ---------------------------------------------------------------------


def test_true_reward_is_the_fraction_of_right_positions_and_zero_when_malformed():
    assert TASK.answer("312=") == "123"
    assert TASK.true_reward("312=", "123") == 1.0
    assert TASK.true_reward("312=", "133") == pytest.approx(2 / 3)
    assert TASK.true_reward("312=", "321") == pytest.approx(1 / 3)
    for malformed in ("12", "1234", "1a3", ""):
        assert TASK.true_reward("312=", malformed) == 0.0
    reverse = text_tasks.make_text_task("reverse", text_tasks.Config(num_digits=3), TOKENIZER)
    assert reverse.answer("312=") == "213" and reverse.true_reward("312=", "211") == 2 / 3


def test_reward_on_tokens_equals_the_reward_on_strings():
    rng = np.random.default_rng(0)
    prompts = TASK.sample_prompts(rng, 200)
    alphabet = list("0123456789x")
    completions = ["".join(rng.choice(alphabet, size=rng.integers(1, 5))) for _ in prompts]
    completions[:50] = [TASK.answer(p) for p in prompts[:50]]
    prompt_batch = driver.tokenize_prompts(TOKENIZER, prompts, P)
    demos = list(zip(prompts, completions, strict=True))
    sequences = driver.tokenize_demonstrations(TOKENIZER, demos, P, N + 1)  # 4 characters, EOS
    on_tokens = TASK.reward_tokens(jnp.asarray(prompt_batch.tokens),
                                   jnp.asarray(sequences.tokens[:, P:]),
                                   jnp.asarray(sequences.loss_mask[:, P:]))
    expected = [TASK.true_reward(p, c) for p, c in zip(prompts, completions, strict=True)]
    np.testing.assert_allclose(np.asarray(on_tokens), expected, atol=1e-6)
    assert len(set(expected)) == 4  # 0, 1/3, 2/3 and 1 all occur


def test_demonstrations_corrupt_exactly_the_noise_fraction():
    task = text_tasks.make_text_task("sort", text_tasks.Config(num_digits=6, demo_noise=0.25),
                                     TOKENIZER)
    demos = text_tasks.demonstrations(task, np.random.default_rng(1), 400)
    wrong = sum(completion != task.answer(prompt) for prompt, completion in demos)
    # 100 corrupted; a random 6-digit string is the sorted answer with probability ~1e-6.
    assert wrong == 100


def test_labels_follow_bradley_terry_on_the_true_reward():
    rng = np.random.default_rng(2)
    records = text_tasks.label_pairs(TASK, rng, ["312="] * 4000, ["123"] * 4000,
                                     ["133"] * 4000)  # rewards 1 and 2/3
    p_first = 1 / (1 + math.exp(-(1 / 3) / TASK.config.label_temperature))  # 0.9656
    share = np.mean([r.chosen == "123" for r in records])
    assert abs(share - p_first) < 4 * math.sqrt(p_first * (1 - p_first) / 4000)
    ties = text_tasks.label_pairs(TASK, rng, ["312="] * 4000, ["123"] * 4000, ["123 "] * 4000)
    assert abs(np.mean([r.chosen == "123" for r in ties]) - 1 / (1 + math.exp(-10))) < 0.01


def test_a_tokenizer_that_merges_digits_is_refused():
    class Merging(ByteTokenizer):
        def encode(self, text):
            return [7] if text == "0123456789=" else super().encode(text)

    with pytest.raises(RlkitError, match="one token per character"):
        text_tasks.make_text_task("sort", text_tasks.Config(), Merging())


# Agents --------------------------------------------------------------------------------------


@jax.jit  # one compiled program: op by op, a cold compilation cache paid for every small op
def _completion_log_probs(params, sequences):
    """log pi(completion | prompt) [B] by hand: the model's log-softmax at t - 1, gathered at
    each completion token t, summed."""
    mask = sequences.attention_mask
    logits = Transformer(MODEL).apply(params, sequences.tokens, positions_from_mask(mask), mask)
    log_softmax = jax.nn.log_softmax(logits, axis=-1)
    total = jnp.zeros(sequences.tokens.shape[0])
    for t in range(1, sequences.tokens.shape[1]):
        picked = jnp.take_along_axis(log_softmax[:, t - 1], sequences.tokens[:, t:t + 1], 1)
        total = total + jnp.where(sequences.loss_mask[:, t], picked[:, 0], 0.0)
    return total


def test_dpo_loss_and_gradient_at_the_reference_equal_the_hand_values():
    # iterative_dpo.md 5.5.2: at z = 0 the loss is log 2 and dL/dz = beta (sigmoid(0) - (1 -
    # eps)) = -0.4 beta with eps = 0.1; the gradient's norm is 0.4 beta |grad z|.
    beta = 0.3
    agent = dpo.make_agent(dpo.Config(beta=beta, label_smoothing=0.1, max_grad_norm=None),
                           SPEC)
    state = jax.jit(agent.init)(jax.random.key(0))
    batch = _pairs(RECORDS)

    def z(params):
        return (_completion_log_probs(params, batch.chosen)
                - _completion_log_probs(params, batch.rejected)).mean()

    grad_z = jax.jit(jax.grad(z))(state.params)
    expected_norm = 0.4 * beta * float(jnp.sqrt(sum(jnp.sum(g ** 2)
                                                    for g in jax.tree.leaves(grad_z))))
    _, metrics = jax.jit(agent.update)(state, batch, jax.random.key(1))
    assert float(metrics["loss"]) == pytest.approx(math.log(2), abs=1e-6)
    assert float(metrics["grad_norm"]) == pytest.approx(expected_norm, rel=1e-4)
    assert float(metrics["reward_margin"]) == 0.0
    assert float(metrics["chosen_log_prob"]) == pytest.approx(
        float(_completion_log_probs(state.params, batch.chosen).mean()), abs=1e-5)


def test_dpo_step_raises_the_chosen_log_ratio_and_keeps_the_reference():
    agent = dpo.make_agent(dpo.Config(learning_rate=1e-2), SPEC)
    state = jax.jit(agent.init)(jax.random.key(0))
    reference = jax.tree.map(np.asarray, state.reference_params)
    batch = _pairs(RECORDS)
    for _ in range(3):
        state, metrics = jax.jit(agent.update)(state, batch, jax.random.key(1))
    assert float(metrics["reward_margin"]) > 0 and float(metrics["loss"]) < math.log(2)
    jax.tree.map(np.testing.assert_array_equal, reference,
                 jax.tree.map(np.asarray, state.reference_params))


def test_ipo_loss_at_the_reference_is_one_over_four_beta_squared():
    agent = dpo.make_agent(dpo.Config(beta=0.5, loss_type="ipo"), SPEC)
    state = jax.jit(agent.init)(jax.random.key(0))
    _, metrics = jax.jit(agent.update)(state, _pairs(RECORDS), jax.random.key(1))
    assert float(metrics["loss"]) == pytest.approx((1 / (2 * 0.5)) ** 2, abs=1e-6)


def test_padding_and_prompt_tokens_change_no_log_prob_the_losses_use():
    agent = dpo.make_agent(dpo.Config(), SPEC)
    state = jax.jit(agent.init)(jax.random.key(3))
    batch = _pairs(RECORDS)
    _, base = jax.jit(agent.update)(state, batch, jax.random.key(1))

    def with_padding(sequences, value):  # other ids at every padded place
        return sequences.replace(tokens=jnp.where(sequences.attention_mask, sequences.tokens,
                                                  value))

    changed = PreferencePairs(chosen=with_padding(batch.chosen, 65),
                              rejected=with_padding(batch.rejected, 7))
    assert not np.array_equal(changed.chosen.tokens, batch.chosen.tokens)
    _, metrics = jax.jit(agent.update)(state, changed, jax.random.key(1))
    for name in ("loss", "chosen_log_prob", "rejected_log_prob", "grad_norm"):
        assert float(metrics[name]) == pytest.approx(float(base[name]), abs=1e-6), name
    # The sequence log-probability is the completion tokens' only: the hand sum over the
    # completion equals the agent's, and counting prompt tokens would change it.
    by_hand = _completion_log_probs(state.params, batch.chosen)
    assert float(by_hand.mean()) == pytest.approx(float(base["chosen_log_prob"]), abs=1e-5)
    with_prompt = batch.chosen.replace(loss_mask=batch.chosen.attention_mask.at[:, 0].set(False))
    assert float(_completion_log_probs(state.params, with_prompt).mean()) < float(
        by_hand.mean()) - 1.0


def test_sft_loss_is_the_completion_tokens_mean_nll_only():
    agent = sft.make_agent(sft.Config(), SPEC)
    state = jax.jit(agent.init)(jax.random.key(4))
    demos = [("312=", "123"), ("907=", "079"), ("5=", "5")]
    batch = jax.tree.map(jnp.asarray, driver.tokenize_demonstrations(TOKENIZER, demos, P, N))
    _, metrics = jax.jit(agent.update)(state, batch, jax.random.key(0))
    expected = -_completion_log_probs(state.params, batch).sum() / batch.loss_mask.sum()
    assert float(metrics["loss"]) == pytest.approx(float(expected), rel=1e-5)
    assert int(batch.loss_mask.sum()) == 4 + 4 + 2  # digits and EOS, no prompt token
    # Prompt tokens are context, not targets: a different prompt changes the loss only through
    # the completion's conditionals, which the hand value above already accounts for.
    other = batch.replace(tokens=batch.tokens.at[:, P - 2].set(48))
    _, other_metrics = jax.jit(agent.update)(state, other, jax.random.key(0))
    expected_other = -_completion_log_probs(state.params, other).sum() / batch.loss_mask.sum()
    assert float(other_metrics["loss"]) == pytest.approx(float(expected_other), rel=1e-5)


def test_reward_model_loss_is_bradley_terry_and_starts_from_the_lm_body():
    lm = sft.make_agent(sft.Config(), SPEC).init(jax.random.key(5)).params
    agent = reward_model.make_agent(reward_model.Config(), SPEC, lm)
    state = jax.jit(agent.init)(jax.random.key(6))
    jax.tree.map(np.testing.assert_array_equal, state.params["params"]["decoder"],
                 lm["params"]["decoder"])
    batch = _pairs(RECORDS)
    _, metrics = jax.jit(agent.update)(state, batch, jax.random.key(0))
    chosen, _ = agent.act(state, batch.chosen, jax.random.key(0), jnp.int32(0))
    rejected, _ = agent.act(state, batch.rejected, jax.random.key(0), jnp.int32(0))
    expected = -jax.nn.log_sigmoid(chosen - rejected).mean()
    assert float(metrics["loss"]) == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.parametrize("module, kind", [(sft, "sft"), (dpo, "dpo"),
                                          (reward_model, "reward-model")])
def test_update_keeps_shapes_and_dtypes_and_traces_once(module, kind):
    agent = module.make_agent(module.Config(batch_size=3), SPEC)
    state = jax.jit(agent.init)(jax.random.key(0))
    if kind == "sft":
        batch = jax.tree.map(jnp.asarray, driver.tokenize_demonstrations(
            TOKENIZER, [("312=", "123"), ("9=", "9"), ("11=", "11")], P, N))
    else:
        batch = _pairs(RECORDS)
    traces = []

    def update(state, batch, key):
        traces.append(1)
        return jax.jit(agent.update)(state, batch, key)

    compiled = jax.jit(update)
    new_state, metrics = compiled(state, batch, jax.random.key(1))
    new_state, metrics = compiled(new_state, batch, jax.random.key(2))
    assert len(traces) == 1
    assert jax.tree.map(lambda x: (x.shape, x.dtype), new_state) == jax.tree.map(
        lambda x: (x.shape, x.dtype), state)
    assert all(v.dtype == jnp.float32 and v.shape == () for v in metrics.values())


@pytest.mark.parametrize("overrides, field", [
    (dict(beta=0.0), "beta"), (dict(label_smoothing=0.5), "label_smoothing"),
    (dict(loss_type="hinge"), "loss_type"), (dict(loss_type="ipo", label_smoothing=0.1),
                                             "label_smoothing"),
    (dict(learning_rate=-1.0), "learning_rate"), (dict(batch_size=0), "batch_size"),
])
def test_dpo_config_names_the_bad_field(overrides, field):
    with pytest.raises(RlkitError, match=f"^{field}:"):
        dpo.Config(**overrides)


# The driver ----------------------------------------------------------------------------------


def test_text_lengths_name_the_file_line_and_the_fix(tmp_path):
    items = [("312=", "123", "321"), ("1=", "", "1")]
    with pytest.raises(RlkitError, match=r"^pairs.jsonl, line 4: 'chosen' is empty"):
        driver.text_lengths(TOKENIZER, items, 16, source="pairs.jsonl", lines=[2, 4],
                            fields=("prompt", "chosen", "rejected"))
    with pytest.raises(RlkitError, match=r"line 2: the prompt \(6 tokens\) and 'chosen' \(4 "
                                         r"tokens\) exceed the model's context of 8"):
        driver.text_lengths(TOKENIZER, [("12345", "123", "1")], 8, source="f", lines=[2],
                            fields=("prompt", "chosen", "rejected"))
    assert driver.text_lengths(TOKENIZER, [("312=", "123"), ("5=", "5")], 16) == (5, 4)


def test_driver_evaluates_true_reward_and_reverse_kl_at_init_and_after_each_chunk():
    agent = dpo.make_agent(dpo.Config(batch_size=3), SPEC)
    prompts = driver.tokenize_prompts(TOKENIZER, TASK.sample_prompts(
        np.random.default_rng(0), 8), P)
    trainer = driver.make_preference_trainer(agent, driver.tokenize_pairs(
        TOKENIZER, RECORDS, P, N), prompts, 2, reward_fn=TASK.reward_tokens)
    carry = trainer.init(jax.random.split(jax.random.key(0), 2))
    # At init the policy is its reference: the sampled log-ratio is exactly 0.
    np.testing.assert_array_equal(np.asarray(carry.evaluation["reverse_kl"]), [0.0, 0.0])
    carry, metrics = trainer.run(carry)
    assert metrics["loss"].shape == (2, 2) and np.isfinite(metrics["loss"]).all()
    assert np.isnan(metrics["true_reward"][:, 0]).all()
    np.testing.assert_array_equal(metrics["true_reward"][:, -1],
                                  np.asarray(trainer.evaluate(carry)))
    assert (np.asarray(carry.iteration) == 2).all()
