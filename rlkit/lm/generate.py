"""Sampling from a `Transformer`: batched, left-padded prompts, a KV cache, temperature / top-k /
top-p, EOS handling and completion masks.

`generate` prefills a KV cache with the prompts in one call, then decodes one token per row per
step in a `jax.lax.while_loop` that stops as soon as every row has produced EOS.
`generate_without_cache` re-encodes the whole sequence at every step; it is the reference the
tests and `benchmarks/lm.py` compare against (same tokens for the same key).

Both are pure functions: the caller jits them, with `model`, `max_new_tokens`, `temperature`,
`top_k`, `top_p`, `eos_id` and `pad_id` static, e.g.
`jax.jit(generate, static_argnames=("model", "max_new_tokens", "temperature", "top_k",
"top_p", "eos_id", "pad_id"))`.

Sampling order follows `transformers`' logits processors: divide by the temperature, keep the
top k, then the nucleus (Holtzman et al. 2020): the smallest set of most likely tokens whose
probability reaches top_p.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from rlkit.errors import require, require_int_at_least, require_number
from rlkit.lm.transformer import MASKED, Transformer, init_cache, positions_from_mask
from rlkit.types import Array, PRNGKey, PyTree, Sequences, TextSpec


class Generation(NamedTuple):
    """Sampled completions.

    Attributes:
        tokens: [B, N] int32; `pad_id` after a row's EOS (and after the loop stopped early).
        mask: [B, N] bool, True for generated tokens up to and including the first EOS.
        log_probs: [B, N] float32, log-probability of each sampled token under the sampling
            distribution (temperature, top-k, top-p applied; 0 for greedy decoding); 0 where
            mask is False.
    """

    tokens: Array
    mask: Array
    log_probs: Array


def filter_logits(logits: Array, *, temperature: float = 1.0, top_k: int = 0,
                  top_p: float = 1.0) -> Array:
    """The sampling distribution's logits: scaled by 1 / temperature, then everything outside
    the top k and outside the nucleus set to a large negative number.

    Args:
        logits: [B, V] float32.
        temperature: > 0 (greedy decoding does not call this).
        top_k: keep the k most likely tokens (ties at the k-th value all kept); 0 keeps all.
        top_p: keep the smallest set of most likely tokens whose probability is >= top_p
            (always at least the most likely one); 1 keeps all.

    Returns:
        [B, V] float32 logits; `jax.nn.log_softmax` of them is the sampling distribution.
    """
    logits = logits.astype(jnp.float32) / temperature
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]  # [B, 1]
        logits = jnp.where(logits >= kth, logits, MASKED)
    if top_p < 1.0:
        order = jnp.argsort(-logits, axis=-1)  # [B, V] most likely first
        sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        mass_before = jnp.cumsum(probs, axis=-1) - probs  # [B, V]
        keep_sorted = mass_before < top_p  # the first token always (mass_before = 0)
        keep = jnp.zeros_like(keep_sorted).at[
            jnp.arange(logits.shape[0])[:, None], order].set(keep_sorted)
        logits = jnp.where(keep, logits, MASKED)
    return logits


def sample_token(key: PRNGKey, logits: Array, *, temperature: float, top_k: int,
                 top_p: float) -> tuple[Array, Array]:
    """One token per row and its log-probability under the sampling distribution.

    Args:
        key: PRNG key (unused when temperature == 0).
        logits: [B, V] float32.
        temperature: 0 for greedy (argmax; log-prob 0, the distribution being a point mass).

    Returns:
        ([B] int32 tokens, [B] float32 log-probabilities).
    """
    if temperature == 0:
        token = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        return token, jnp.zeros(token.shape, jnp.float32)
    filtered = filter_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p)
    token = jax.random.categorical(key, filtered, axis=-1).astype(jnp.int32)
    log_prob = jnp.take_along_axis(jax.nn.log_softmax(filtered, axis=-1), token[:, None],
                                   axis=-1)[:, 0]
    return token, log_prob


def _check(prompt_tokens, prompt_mask, max_new_tokens, temperature, top_k, top_p, config):
    require(prompt_tokens.ndim == 2 and prompt_mask.shape == prompt_tokens.shape,
            "prompt_tokens", f"must be [B, P] with prompt_mask of the same shape, got "
            f"{prompt_tokens.shape} and {prompt_mask.shape}.")
    require_int_at_least(max_new_tokens, "max_new_tokens", 1)
    require_number(temperature, "temperature", low=0)
    require_int_at_least(top_k, "top_k", 0)
    require_number(top_p, "top_p", low=0, high=1, low_open=True)
    total = prompt_tokens.shape[1] + max_new_tokens
    require(config.positions != "learned" or total <= config.max_length, "max_new_tokens",
            f"prompt length {prompt_tokens.shape[1]} + {max_new_tokens} new tokens exceeds the "
            f"model's max_length {config.max_length}; shorten the prompts or generate fewer.")


class _Loop(NamedTuple):
    step: Array  # int32 scalar
    logits: Array  # [B, V] for the next token
    position: Array  # [B] int32 position of the next token
    done: Array  # [B] bool, EOS already produced
    tokens: Array  # [B, N]
    mask: Array  # [B, N]
    log_probs: Array  # [B, N]
    context: PyTree  # the KV cache, or the full token/mask buffers without one


def _decode_loop(first_logits, first_position, context, advance, key, batch, max_new_tokens,
                 temperature, top_k, top_p, eos_id, pad_id) -> Generation:
    """The shared decode loop: sample, record, `advance(context, token, position, real)` ->
    (next logits, context), until N tokens or every row is done."""

    def body(loop: _Loop) -> _Loop:
        token, log_prob = sample_token(jax.random.fold_in(key, loop.step), loop.logits,
                                       temperature=temperature, top_k=top_k, top_p=top_p)
        real = ~loop.done
        token = jnp.where(real, token, pad_id)
        done = loop.done if eos_id is None else loop.done | (token == eos_id)
        tokens = loop.tokens.at[:, loop.step].set(token)
        mask = loop.mask.at[:, loop.step].set(real)
        log_probs = loop.log_probs.at[:, loop.step].set(jnp.where(real, log_prob, 0.0))
        logits, context = advance(loop.context, loop.step, token, loop.position, real)
        return _Loop(loop.step + 1, logits, loop.position + 1, done, tokens, mask, log_probs,
                     context)

    def more(loop: _Loop) -> Array:
        return (loop.step < max_new_tokens) & ~jnp.all(loop.done)

    start = _Loop(step=jnp.zeros((), jnp.int32), logits=first_logits, position=first_position,
                  done=jnp.zeros((batch,), bool),
                  tokens=jnp.full((batch, max_new_tokens), pad_id, jnp.int32),
                  mask=jnp.zeros((batch, max_new_tokens), bool),
                  log_probs=jnp.zeros((batch, max_new_tokens), jnp.float32), context=context)
    end = jax.lax.while_loop(more, body, start)
    return Generation(end.tokens, end.mask, end.log_probs)


def generate(model: Transformer, params: PyTree, prompt_tokens: Array, prompt_mask: Array,
             key: PRNGKey, *, max_new_tokens: int, temperature: float = 1.0, top_k: int = 0,
             top_p: float = 1.0, eos_id: int | None, pad_id: int) -> Generation:
    """Sample completions with a KV cache: prefill with the prompts, then a while-loop decode.

    Args:
        model: the `Transformer` (static under jit).
        params: its variables (`model.init(...)` or `load_pretrained`).
        prompt_tokens: [B, P] int32, LEFT-padded.
        prompt_mask: [B, P] bool, True for real prompt tokens.
        key: PRNG key; step i samples with `fold_in(key, i)`.
        max_new_tokens: N, the most tokens generated per row.
        temperature: 0 for greedy decoding, else the softmax temperature.
        top_k: 0 for no top-k filter.
        top_p: 1 for no nucleus filter.
        eos_id: the id that ends a completion (None: always N tokens).
        pad_id: written after a row's EOS.

    Returns:
        `Generation` of [B, N] arrays.

    Raises:
        RlkitError: bad shapes or sampling settings, or (learned positions) a prompt plus
            completion longer than the model's max_length.
    """
    _check(prompt_tokens, prompt_mask, max_new_tokens, temperature, top_k, top_p, model.config)
    batch, prompt_length = prompt_tokens.shape
    prompt_mask = prompt_mask.astype(bool)
    positions = positions_from_mask(prompt_mask)
    cache = init_cache(model.config, batch, prompt_length + max_new_tokens)
    logits, cache = model.apply(params, prompt_tokens.astype(jnp.int32), positions, prompt_mask,
                                cache=cache, last_only=True)  # [B, 1, V]

    def advance(cache, step, token, position, real):
        logits, cache = model.apply(params, token[:, None], position[:, None], real[:, None],
                                    cache=cache)
        return logits[:, -1], cache

    first_position = positions[:, -1] + prompt_mask[:, -1].astype(jnp.int32)
    return _decode_loop(logits[:, -1], first_position, cache, advance, key, batch,
                        max_new_tokens, temperature, top_k, top_p, eos_id, pad_id)


def generate_without_cache(model: Transformer, params: PyTree, prompt_tokens: Array,
                           prompt_mask: Array, key: PRNGKey, *, max_new_tokens: int,
                           temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                           eos_id: int | None, pad_id: int) -> Generation:
    """`generate` by re-encoding the whole sequence [B, P + N] at every step (no cache): the
    reference for tests and benchmarks. Same arguments, same result for the same key (up to
    floating-point summation order)."""
    _check(prompt_tokens, prompt_mask, max_new_tokens, temperature, top_k, top_p, model.config)
    batch, prompt_length = prompt_tokens.shape
    prompt_mask = prompt_mask.astype(bool)
    sequence = jnp.concatenate([prompt_tokens.astype(jnp.int32),
                                jnp.full((batch, max_new_tokens), pad_id, jnp.int32)], axis=1)
    sequence_mask = jnp.concatenate([prompt_mask, jnp.zeros((batch, max_new_tokens), bool)],
                                    axis=1)

    def encode(sequence, sequence_mask, column):
        logits = model.apply(params, sequence, positions_from_mask(sequence_mask),
                             sequence_mask)  # [B, P + N, V]
        return jax.lax.dynamic_index_in_dim(logits, column, axis=1, keepdims=False)

    def advance(context, step, token, position, real):
        sequence, sequence_mask = context
        sequence = sequence.at[:, prompt_length + step].set(token)
        sequence_mask = sequence_mask.at[:, prompt_length + step].set(real)
        return encode(sequence, sequence_mask, prompt_length + step), (sequence, sequence_mask)

    first_logits = encode(sequence, sequence_mask, prompt_length - 1)
    first_position = positions_from_mask(prompt_mask)[:, -1] + prompt_mask[:, -1].astype(
        jnp.int32)
    return _decode_loop(first_logits, first_position, (sequence, sequence_mask), advance, key,
                        batch, max_new_tokens, temperature, top_k, top_p, eos_id, pad_id)


def sample_completions(model: Transformer, params: PyTree, prompts: Sequences, key: PRNGKey,
                       spec: TextSpec, temperature: float = 1.0) -> tuple[Generation, Sequences]:
    """Completions sampled at temperature 1 (the policy itself), with the full sequences.

    What SFT's and DPO's `act` return and score: the policy's own samples, of which the
    preference driver measures the true reward and the reverse KL to the reference.

    Args:
        model, params: the language model.
        prompts: left-padded prompts, [B, P] each field (`loss_mask` unused).
        key: the sampling key.
        spec: the task's layout (`completion_tokens` N new tokens, `eos_id`, `pad_id`).
        temperature: the sampling temperature (1: the policy itself; iterative DPO also
            samples at 0.7).

    Returns:
        (generation, sequences): the `Generation` ([B, N] tokens, mask, log-probs) and the
        prompt + completion `Sequences` [B, P + N] whose `loss_mask` covers the completion's
        tokens up to and including EOS.
    """
    generation = generate(model, params, prompts.tokens, prompts.attention_mask, key,
                          max_new_tokens=spec.completion_tokens, temperature=temperature, top_k=0,
                          top_p=1.0, eos_id=spec.eos_id, pad_id=spec.pad_id)
    sequences = Sequences(
        tokens=jnp.concatenate([prompts.tokens, generation.tokens], axis=1),
        attention_mask=jnp.concatenate([prompts.attention_mask, generation.mask], axis=1),
        loss_mask=jnp.concatenate([jnp.zeros_like(prompts.attention_mask), generation.mask],
                                  axis=1))  # [B, P + N]
    return generation, sequences


def policy_functions(model: Transformer, spec: TextSpec, log_probs):
    """`act` and `policy` of an agent that fine-tunes `model` against a reference policy (DPO,
    HyPO): the agent's state has `params` and `reference_params`, and `log_probs(params,
    sequences) -> [B]` is its sequence log-probability.

    Returns:
        `act(state, prompts, key, step) -> (completions [B, N], {completion_mask [B, N],
        log_probs [B], reference_log_probs [B]})`, sampled at temperature 1 (`step` unused),
        and `policy(state, prompts) -> [B, V]` next-token probabilities after each left-padded
        prompt.
    """

    def act(state, prompts: Sequences, key: PRNGKey, step: Array) -> tuple[Array, dict]:
        del step
        generation, full = sample_completions(model, state.params, prompts, key, spec)
        return generation.tokens, {
            "completion_mask": generation.mask,
            "log_probs": log_probs(state.params, full),
            "reference_log_probs": log_probs(state.reference_params, full),
        }

    def policy(state, prompts: Sequences) -> Array:
        mask = prompts.attention_mask
        logits = model.apply(state.params, prompts.tokens, positions_from_mask(mask), mask)
        return jax.nn.softmax(logits[:, -1])

    return act, policy
