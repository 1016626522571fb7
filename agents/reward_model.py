"""A Bradley-Terry reward model on preference pairs (Bradley and Terry 1952; the reward model of
RLHF, Ouyang et al. 2022, eq. 1; RLHFlow's `bradley-terry-rm`, iterative_dpo.md 5.2).

Idea: a Transformer with a scalar head read at the last real token,
`rlkit.lm.transformer.TransformerRewardModel`, scores r(x, y) for a prompt x and completion y;
it is fit by maximum likelihood of the labels under P(y_w > y_l) = sigmoid(r(x, y_w) -
r(x, y_l)), i.e. by minimising -mean log sigmoid(r_w - r_l) (`rlkit.ops.bradley_terry_loss`).

Choices, and why:

* The body starts from `initial_params` (an SFT model's or a pretrained one's decoder) when
  given, as RLHF reward models start from the SFT model; the scalar head starts at random
  (normal, std 0.02, as `transformers`).
* Rewards are identified only up to a constant per prompt; no centring is applied.
* AdamW after global-norm clipping, constant step size.

How it runs: a `PreferenceFeed` with `data="pairs"` and `generates=False`
(`rlkit.loops.preference`: `python -m rlkit.train reward-model --task sort --dataset
pairs.jsonl`); one `update` is one gradient step on `batch_size` pairs drawn with replacement.
`act` scores sequences, and the driver reports the accuracy on held-out pairs.

Metrics (float32 scalars): `loss`, `preference_accuracy` (share of pairs with r_w > r_l),
`chosen_reward`, `rejected_reward`, `reward_margin`, `grad_norm`.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import optax
from flax import struct

from rlkit.errors import check_optimiser_fields
from rlkit.lm.transformer import (
    TransformerRewardModel,
    positions_from_mask,
    reward_model_params,
)
from rlkit.ops import bradley_terry_loss, clipped_adam, gradient_step
from rlkit.types import (
    Agent,
    Array,
    Metrics,
    PreferenceFeed,
    PreferencePairs,
    PRNGKey,
    PyTree,
    Sequences,
    TextSpec,
)


@dataclass(frozen=True)
class Config:
    """Bradley-Terry reward-model hyper-parameters."""

    learning_rate: float = 3e-4
    """AdamW step size."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay."""
    batch_size: int = 64
    """Preference pairs per update."""
    total_steps: int = 1000
    """Gradient updates in a run."""
    max_grad_norm: float | None = 1.0
    """Clip gradients to this global norm; None disables clipping."""

    def __post_init__(self):
        check_optimiser_fields(
            self, "try 3e-4 for a small model, 2e-6 for a large pretrained one.", network=False)


@struct.dataclass
class State:
    """The reward model's training state.

    Attributes:
        params: the reward model's parameters ("decoder" body and "score" head).
        opt_state: optax state.
        update_step: int32 scalar, updates done so far.
    """

    params: PyTree
    opt_state: optax.OptState
    update_step: Array


def make_agent(config: Config, spec: TextSpec, initial_params: PyTree | None = None) -> Agent:
    """Build a Bradley-Terry reward model.

    Args:
        config: the hyper-parameters.
        spec: the model's config and the task's token layout.
        initial_params: a language model's parameters whose "decoder" body the reward model
            starts from; None initialises the body at random.

    Returns:
        The `Agent`: `update` takes a `PreferencePairs` batch ([B, P + N] each); `act(state,
        sequences: Sequences [B, T], key, step)` and `policy(state, sequences)` return the
        rewards [B] float32 of the sequences.
    """
    network = TransformerRewardModel(spec.model)
    optimizer = clipped_adam(config.learning_rate, config.max_grad_norm, config.weight_decay)

    def rewards(params: PyTree, sequences: Sequences) -> Array:
        mask = sequences.attention_mask  # [B, T]
        return network.apply(params, sequences.tokens, positions_from_mask(mask), mask)  # [B]

    def init(key: PRNGKey) -> State:
        if initial_params is None:
            tokens = jnp.zeros((1, spec.prompt_tokens + spec.completion_tokens), jnp.int32)
            mask = jnp.ones(tokens.shape, bool)
            params = network.init(key, tokens, positions_from_mask(mask), mask)
        else:  # the language model's body (copied: the driver donates the state), a fresh head
            params = jax.tree.map(jnp.array, reward_model_params(initial_params, key))
        return State(params=params, opt_state=optimizer.init(params),
                     update_step=jnp.zeros((), jnp.int32))

    def loss_fn(params: PyTree, batch: PreferencePairs):
        both = jax.tree.map(lambda c, r: jnp.concatenate([c, r]), batch.chosen,
                            batch.rejected)  # [2B, T]
        size = batch.chosen.tokens.shape[0]
        scores = rewards(params, both)  # [2B]
        chosen, rejected = scores[:size], scores[size:]  # [B] each
        return bradley_terry_loss(chosen, rejected).mean(), {
            "preference_accuracy": (chosen > rejected).mean(),
            "chosen_reward": chosen.mean(),
            "rejected_reward": rejected.mean(),
            "reward_margin": (chosen - rejected).mean(),
        }

    def update(state: State, batch: PreferencePairs, key: PRNGKey) -> tuple[State, Metrics]:
        """One AdamW step on a batch of B preference pairs; `key` is unused."""
        del key
        params, opt_state, loss, aux, grad_norm = gradient_step(
            optimizer, loss_fn, state.params, state.opt_state, batch)
        state = State(params=params, opt_state=opt_state, update_step=state.update_step + 1)
        metrics = {"loss": loss, **aux, "grad_norm": grad_norm}
        return state, {name: value.astype(jnp.float32) for name, value in metrics.items()}

    def act(state: State, sequences: Sequences, key: PRNGKey, step: Array) -> tuple[Array, dict]:
        """Rewards [B] of the sequences (`key` and `step` unused); no extras."""
        del key, step
        return rewards(state.params, sequences), {}

    def policy(state: State, sequences: Sequences) -> Array:
        """Rewards [B] of the sequences."""
        return rewards(state.params, sequences)

    return Agent(init=init, act=act, update=update, policy=policy,
                 feed=PreferenceFeed(batch_size=config.batch_size, data="pairs",
                                     generates=False))


__all__ = ["Config", "State", "make_agent"]
