"""Supervised fine-tuning (SFT) of a language model on demonstrations: maximum likelihood of the
completion given the prompt (the first stage of RLHF, Ouyang et al. 2022, section 3.5; the
`SFTTrainer` of TRL with a completion-only loss).

Idea: minimise -log pi(y | x) = -sum_t log pi(y_t | x, y_<t) over the completion's tokens only;
the prompt's tokens are context, never targets, and padding is masked out of attention.
The model is `rlkit.lm.transformer.Transformer`, trained from scratch (a small byte-level model)
or fine-tuned from a local checkpoint (`initial_params`).

Choices, and why:

* The loss is the mean over the batch of each sequence's summed token NLL divided by the
  batch's mean completion length (tokens are weighted equally, as in TRL's default); with
  equal-length completions this is the per-token mean.
* AdamW (Loshchilov and Hutter 2019) after global-norm clipping, constant step size: the runs
  are short and small.

How it runs: a `PreferenceFeed` with `data="demonstrations"` (`rlkit.loops.preference`:
`python -m rlkit.train sft --task sort`); one `update` is one gradient step on `batch_size`
demonstrations drawn with replacement. `act` samples completions with the KV cache
(`rlkit.lm.generate`), which the driver scores with the task's exact reward.

Metrics (float32 scalars): `loss` (mean completion-token NLL), `token_accuracy` (share of
completion tokens where the argmax is the demonstrated token), `grad_norm`.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import optax
from flax import struct

from rlkit.errors import check_optimiser_fields, require_int_at_least
from rlkit.lm.generate import sample_completions
from rlkit.lm.transformer import Transformer, positions_from_mask
from rlkit.ops import clipped_adam, gradient_step, sequence_log_probs
from rlkit.types import Agent, Array, Metrics, PreferenceFeed, PRNGKey, PyTree, Sequences, TextSpec


@dataclass(frozen=True)
class Config:
    """SFT hyper-parameters (the model's shape fields apply to a model trained from scratch)."""

    learning_rate: float = 1e-3
    """AdamW step size."""
    weight_decay: float = 0.01
    """AdamW decoupled weight decay."""
    batch_size: int = 64
    """Demonstrations per update."""
    total_steps: int = 2000
    """Gradient updates in a run."""
    max_grad_norm: float | None = 1.0
    """Clip gradients to this global norm; None disables clipping."""
    num_layers: int = 2
    """Transformer blocks of a model trained from scratch (ignored with --model)."""
    width: int = 64
    """Residual width of a model trained from scratch (ignored with --model)."""
    num_heads: int = 4
    """Attention heads of a model trained from scratch (ignored with --model)."""
    mlp_width: int = 256
    """MLP hidden width of a model trained from scratch (ignored with --model)."""

    def __post_init__(self):
        check_optimiser_fields(
            self, "try 1e-3 from scratch, 1e-5 for a pretrained model.", network=False)
        for name in ("num_layers", "width", "num_heads", "mlp_width"):
            require_int_at_least(getattr(self, name), name, 1)


@struct.dataclass
class State:
    """SFT's training state.

    Attributes:
        params: the language model's parameters.
        opt_state: optax state.
        update_step: int32 scalar, updates done so far.
    """

    params: PyTree
    opt_state: optax.OptState
    update_step: Array


def make_agent(config: Config, spec: TextSpec, initial_params: PyTree | None = None) -> Agent:
    """Build SFT for a language model.

    Args:
        config: the hyper-parameters.
        spec: the model's config and the task's token layout.
        initial_params: parameters to start from (a pretrained model); None initialises the
            model at random from `init`'s key.

    Returns:
        The `Agent`: `update` takes a `Sequences` batch [B, P + N]; `act(state, prompts:
        Sequences [B, P], key, step)` samples completions (tokens [B, N] int32) with extras
        `completion_mask` [B, N] and `log_probs` [B] (log pi of each completion, re-scored);
        `policy(state, prompts)` is the next-token distribution after each prompt [B, V].
    """
    network = Transformer(spec.model)
    optimizer = clipped_adam(config.learning_rate, config.max_grad_norm, config.weight_decay)

    def logits(params: PyTree, sequences: Sequences) -> Array:
        mask = sequences.attention_mask  # [B, T]
        return network.apply(params, sequences.tokens, positions_from_mask(mask), mask)

    def init(key: PRNGKey) -> State:
        if initial_params is None:
            tokens = jnp.zeros((1, spec.prompt_tokens + spec.completion_tokens), jnp.int32)
            mask = jnp.ones(tokens.shape, bool)
            params = network.init(key, tokens, positions_from_mask(mask), mask)
        else:  # copies: the driver donates the state, never the caller's arrays
            params = jax.tree.map(jnp.array, initial_params)
        return State(params=params, opt_state=optimizer.init(params),
                     update_step=jnp.zeros((), jnp.int32))

    def loss_fn(params: PyTree, batch: Sequences):
        all_logits = logits(params, batch)  # [B, T, V]
        nll = -sequence_log_probs(all_logits, batch.tokens, batch.loss_mask)  # [B]
        tokens = jnp.maximum(batch.loss_mask.sum(), 1)  # completion tokens in the batch
        predicted = jnp.argmax(all_logits[:, :-1], axis=-1)  # [B, T - 1] predicts tokens 1..
        hits = (predicted == batch.tokens[:, 1:]) & batch.loss_mask[:, 1:]  # [B, T - 1]
        return nll.sum() / tokens, {"token_accuracy": hits.sum() / tokens}

    def update(state: State, batch: Sequences, key: PRNGKey) -> tuple[State, Metrics]:
        """One AdamW step on a [B, T] batch of demonstrations; `key` is unused."""
        del key
        params, opt_state, loss, aux, grad_norm = gradient_step(
            optimizer, loss_fn, state.params, state.opt_state, batch)
        state = State(params=params, opt_state=opt_state, update_step=state.update_step + 1)
        metrics = {"loss": loss, **aux, "grad_norm": grad_norm}
        return state, {name: value.astype(jnp.float32) for name, value in metrics.items()}

    def act(state: State, prompts: Sequences, key: PRNGKey, step: Array) -> tuple[Array, dict]:
        """Completions [B, N] sampled at temperature 1 (`step` unused)."""
        del step
        generation, full = sample_completions(network, state.params, prompts, key, spec)
        log_probs = sequence_log_probs(logits(state.params, full), full.tokens, full.loss_mask)
        return generation.tokens, {"completion_mask": generation.mask, "log_probs": log_probs}

    def policy(state: State, prompts: Sequences) -> Array:
        """Next-token probabilities after each left-padded prompt [B, V]."""
        return jax.nn.softmax(logits(state.params, prompts)[:, -1])

    return Agent(init=init, act=act, update=update, policy=policy,
                 feed=PreferenceFeed(batch_size=config.batch_size, data="demonstrations",
                                     generates=True))


__all__ = ["Config", "State", "make_agent"]
