"""rlkit.lm.generate: KV-cache sampling against re-encoding, sampling filters, EOS and masks.

The model is the perturbed tiny Llama of tests/fixtures/lm/llama (its logits match
`transformers`, tests/test_lm_model.py), whose distributions are peaked enough that greedy
decoding has no near-ties.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlkit.errors import RlkitError
from rlkit.lm.checkpoint import load_pretrained
from rlkit.lm.generate import filter_logits, generate, generate_without_cache, sample_token
from rlkit.lm.transformer import Transformer, TransformerConfig, positions_from_mask

FIXTURES = Path(__file__).parent / "fixtures" / "lm"
STATIC = ("model", "max_new_tokens", "temperature", "top_k", "top_p", "eos_id", "pad_id")
PAD = 0
NEW = 12


@pytest.fixture(scope="module")
def llama():
    config, params = load_pretrained(FIXTURES / "llama")
    return Transformer(config), params


def _prompts():
    """Three left-padded prompts of lengths 5, 2 and 4 (pad ids deliberately not PAD)."""
    tokens = jnp.array([[11, 12, 13, 14, 15], [77, 77, 77, 21, 22], [99, 31, 32, 33, 34]],
                       jnp.int32)
    mask = jnp.array([[1, 1, 1, 1, 1], [0, 0, 0, 1, 1], [0, 1, 1, 1, 1]], bool)
    return tokens, mask


def _run(function, model, params, key=0, **settings):
    tokens, mask = _prompts()
    settings = {"max_new_tokens": NEW, "eos_id": None, "pad_id": PAD, **settings}
    run = jax.jit(function, static_argnames=STATIC)
    return jax.device_get(run(model, params, tokens, mask, jax.random.key(key), **settings))


def test_greedy_cache_equals_reencoding_with_eos_in_the_middle(llama):
    model, params = llama
    free = _run(generate, model, params, temperature=0.0)
    assert free.mask.all()
    # As EOS, the first token that row 0 produces from step 2 on and no row produced before.
    step = next(step for step in range(2, NEW - 2)
                if not (free.tokens[:, :step] == free.tokens[0, step]).any())
    eos = int(free.tokens[0, step])
    cached = _run(generate, model, params, temperature=0.0, eos_id=eos)
    reference = _run(generate_without_cache, model, params, temperature=0.0, eos_id=eos)
    np.testing.assert_array_equal(cached.tokens, reference.tokens)
    np.testing.assert_array_equal(cached.mask, reference.mask)
    # Rows are distinct, so the comparison is not trivially about one repeated token.
    assert len({tuple(row) for row in free.tokens.tolist()}) == 3
    for row in range(3):
        hits = np.flatnonzero(free.tokens[row] == eos)
        stop = hits[0] + 1 if hits.size else NEW  # up to and including the first EOS
        assert cached.mask[row].tolist() == [True] * stop + [False] * (NEW - stop)
        np.testing.assert_array_equal(cached.tokens[row, :stop], free.tokens[row, :stop])
        assert (cached.tokens[row, stop:] == PAD).all()
    assert cached.mask[0].sum() == step + 1
    assert (cached.log_probs == 0).all()  # greedy: a point mass


def test_sampling_is_reproducible_and_log_probs_are_the_models(llama):
    model, params = llama
    first = _run(generate, model, params, key=3, temperature=1.0)
    again = _run(generate, model, params, key=3, temperature=1.0)
    other = _run(generate, model, params, key=4, temperature=1.0)
    np.testing.assert_array_equal(first.tokens, again.tokens)
    np.testing.assert_array_equal(first.log_probs, again.log_probs)
    assert (first.tokens != other.tokens).any()
    reference = _run(generate_without_cache, model, params, key=3, temperature=1.0)
    np.testing.assert_array_equal(first.tokens, reference.tokens)
    # At temperature 1 without filters, the log-probs are the model's own: re-score the
    # prompt + completion in one forward pass.
    prompt, prompt_mask = _prompts()
    sequence = jnp.concatenate([prompt, first.tokens], axis=1)
    mask = jnp.concatenate([prompt_mask, first.mask], axis=1)
    logits = jax.jit(model.apply)(params, sequence, positions_from_mask(mask), mask)
    log_probs = jax.nn.log_softmax(logits[:, prompt.shape[1] - 1:-1], axis=-1)
    scored = jnp.take_along_axis(log_probs, first.tokens[..., None], axis=-1)[..., 0]
    np.testing.assert_allclose(first.log_probs, scored, atol=1e-4)
    assert (first.log_probs < 0).all()


def test_top_k_one_is_greedy(llama):
    model, params = llama
    greedy = _run(generate, model, params, temperature=0.0)
    top_one = _run(generate, model, params, key=7, temperature=1.0, top_k=1)
    np.testing.assert_array_equal(top_one.tokens, greedy.tokens)
    np.testing.assert_allclose(top_one.log_probs, 0.0, atol=1e-6)


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = np.array([0.05, 0.5, 0.15, 0.3])  # sorted: 1 (.5), 3 (.3), 2 (.15), 0 (.05)
    logits = jnp.log(jnp.asarray(probs, jnp.float32))[None]
    for top_p, kept in ((0.4, {1}), (0.75, {1, 3}), (0.9, {1, 2, 3}), (1.0, {0, 1, 2, 3})):
        filtered = np.asarray(jax.nn.softmax(filter_logits(logits, top_p=top_p)))[0]
        assert set(np.flatnonzero(filtered > 0)) == kept, top_p
        expected = np.array([probs[i] if i in kept else 0 for i in range(4)])
        np.testing.assert_allclose(filtered, expected / expected.sum(), atol=1e-6)
    # top-k runs before top-p (as in transformers): k=3 renormalises to (.53, .32, .16), whose
    # first two reach 0.82; top-p first would keep three tokens (.5 + .3 < .82).
    filtered = np.asarray(jax.nn.softmax(filter_logits(logits, top_k=3, top_p=0.82)))[0]
    assert set(np.flatnonzero(filtered > 0)) == {1, 3}
    # Temperature scales before the filters: at T=2 the probabilities flatten to
    # sqrt(p) / sum sqrt(p) = (.12, .38, .21, .29), so 0.75 needs three tokens.
    filtered = np.asarray(jax.nn.softmax(filter_logits(logits, temperature=2.0, top_p=0.75)))
    assert set(np.flatnonzero(filtered[0] > 0)) == {1, 2, 3}


def test_sampled_tokens_stay_in_the_nucleus_with_its_probabilities():
    probs = np.array([0.05, 0.5, 0.15, 0.3])
    logits = jnp.tile(jnp.log(jnp.asarray(probs, jnp.float32)), (4000, 1))
    tokens, log_probs = sample_token(jax.random.key(0), logits, temperature=1.0, top_k=0,
                                     top_p=0.75)
    tokens, log_probs = np.asarray(tokens), np.asarray(log_probs)
    assert set(np.unique(tokens)) == {1, 3}
    np.testing.assert_allclose(log_probs[tokens == 1], np.log(0.5 / 0.8), atol=1e-6)
    np.testing.assert_allclose(log_probs[tokens == 3], np.log(0.3 / 0.8), atol=1e-6)
    # 4000 draws: the standard error of the frequency is 0.008.
    assert abs((tokens == 1).mean() - 0.625) < 0.04


def test_bad_settings_are_one_line():
    config = TransformerConfig.gpt2(vocab_size=20, max_length=8)
    model = Transformer(config)
    tokens = jnp.ones((1, 5), jnp.int32)
    mask = jnp.ones((1, 5), bool)
    with pytest.raises(RlkitError, match="exceeds the model's max_length 8"):
        generate(model, {}, tokens, mask, jax.random.key(0), max_new_tokens=4, eos_id=None,
                 pad_id=0)
    with pytest.raises(RlkitError, match="top_p: must be a finite number in"):
        generate(model, {}, tokens, mask, jax.random.key(0), max_new_tokens=2, top_p=1.5,
                 eos_id=None, pad_id=0)
    with pytest.raises(RlkitError, match="prompt_mask of the same shape"):
        generate(model, {}, tokens, mask[:, :3], jax.random.key(0), max_new_tokens=2,
                 eos_id=None, pad_id=0)


def test_extra_left_padding_and_pad_ids_change_no_completion(llama):
    model, params = llama
    tokens, mask = _prompts()
    wider = jnp.concatenate([jnp.array([[5, 6], [0, 0], [42, 1]], jnp.int32),
                             tokens.at[1, :3].set(jnp.array([1, 2, 3]))], axis=1)
    wider_mask = jnp.concatenate([jnp.zeros((3, 2), bool), mask], axis=1)
    run = jax.jit(generate, static_argnames=STATIC)
    settings = {"max_new_tokens": NEW, "temperature": 1.0, "eos_id": None, "pad_id": PAD}
    narrow = run(model, params, tokens, mask, jax.random.key(5), **settings)
    padded = run(model, params, wider, wider_mask, jax.random.key(5), **settings)
    np.testing.assert_array_equal(padded.tokens, narrow.tokens)
    np.testing.assert_allclose(padded.log_probs, narrow.log_probs, atol=1e-5)
