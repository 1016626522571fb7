"""Direct Preference Optimisation (Rafailov et al. 2023, "Direct Preference Optimization: Your
Language Model is Secretly a Reward Model"), with IPO (Azar et al. 2023) as an option.

Not Discovered Policy Optimisation (Lu et al. 2022, the meta-learned PPO variant that JAX RL
code also calls "DPO"): this module fine-tunes a language model on preference pairs.

Idea: the KL-regularised reward-maximisation problem max_pi E[r] - beta KL(pi || pi_ref) has the
closed form pi*(y | x) proportional to pi_ref(y | x) exp(r(x, y) / beta), so the reward is
beta log(pi / pi_ref) up to a function of x. Substituting it into the Bradley-Terry likelihood
of the preferences gives a classification loss on the policy directly (eq. 7):
L = -log sigmoid(beta z), z = [log pi(y_w) - log pi(y_l)] - [log pi_ref(y_w) - log pi_ref(y_l)],
with log pi(y | x) summed over the completion's tokens only (`rlkit.ops.sequence_log_probs`).

Choices, and why:

* Label smoothing eps (conservative DPO; the form of TRL and RLHFlow,
  iterative_dpo.md 5.2): L = -(1 - eps) log sigmoid(beta z) - eps log sigmoid(-beta z).
  `loss_type="ipo"` uses (z - 1 / (2 beta))^2 instead (`rlkit.ops.dpo_loss`).
* The frozen reference policy is part of the state (`reference_params`, a copy of the initial
  parameters), and its log-probabilities are computed alongside the policy's, under
  `stop_gradient`, rather than precomputed: the reverse KL of fresh samples needs the reference
  anyway, and a resumed run restores it with the rest of the state.
* Chosen and rejected completions go through the network in one [2B, T] call (TRL's
  "concatenated forward").
* AdamW after global-norm clipping, constant step size.

How it runs: a `PreferenceFeed` with `data="pairs"` (`rlkit.loops.preference`:
`python -m rlkit.train dpo --task sort --model SFT_RUN`); one `update` is one gradient step on
`batch_size` pairs drawn with replacement. `act` samples completions with the KV cache and
returns the policy's and the reference's log-probabilities of them, from which the driver
estimates the reverse KL(pi || pi_ref).

Metrics (float32 scalars): `loss`; `preference_accuracy` (share of pairs whose chosen implicit
reward beta log(pi / pi_ref)(y_w) exceeds the rejected one's); `chosen_reward`,
`rejected_reward` (mean implicit rewards) and `reward_margin` (their mean difference);
`chosen_log_prob`, `rejected_log_prob` (mean policy sequence log-probabilities); `grad_norm`.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import optax
from flax import struct

from rlkit.errors import (
    check_optimiser_fields,
    require,
    require_number,
    require_one_of,
)
from rlkit.lm.generate import policy_functions
from rlkit.lm.transformer import Transformer, positions_from_mask
from rlkit.ops import clipped_adam, dpo_loss, gradient_step, sequence_log_probs
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
    """Direct Preference Optimisation hyper-parameters."""

    beta: float = 0.5
    """KL-regularisation strength: the implicit reward is beta * log(pi / pi_ref). The papers
    use 0.1 on pretrained models; on the small models trained here from scratch, 0.1 (with
    learning rate 1e-4) over-optimised (reverse KL 5 to 7 nats, true reward back below SFT's),
    while 0.5 with 5e-5 raised it on 5 of 5 seeds (README, "The DPO bar")."""
    label_smoothing: float = 0.0
    """Assumed probability that a label is flipped, in [0, 0.5) (sigmoid loss only)."""
    loss_type: str = "sigmoid"
    """"sigmoid" (DPO) or "ipo" (Azar et al. 2023)."""
    learning_rate: float = 5e-5
    """AdamW step size (5e-7 is usual for pretrained billion-parameter models)."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay."""
    batch_size: int = 64
    """Preference pairs per update."""
    total_steps: int = 200
    """Gradient updates in a run."""
    max_grad_norm: float | None = 1.0
    """Clip gradients to this global norm; None disables clipping."""

    def __post_init__(self):
        require_number(self.beta, "beta", low=0, low_open=True,
                       hint="the default is 0.5; the DPO paper uses 0.1.")
        require_number(self.label_smoothing, "label_smoothing", low=0.0, high=0.5,
                       high_open=True)
        require_one_of(self.loss_type, "loss_type", ("sigmoid", "ipo"))
        require(self.loss_type == "sigmoid" or self.label_smoothing == 0.0, "label_smoothing",
                f"applies to loss_type 'sigmoid' only; set it to 0 for {self.loss_type!r}.")
        check_optimiser_fields(
            self, "try 5e-5 for a small model, 5e-7 for a large pretrained one.", network=False)


@struct.dataclass
class State:
    """DPO's training state.

    Attributes:
        params: the policy's parameters.
        reference_params: the frozen reference policy's parameters (a copy of the initial ones).
        opt_state: optax state.
        update_step: int32 scalar, updates done so far.
    """

    params: PyTree
    reference_params: PyTree
    opt_state: optax.OptState
    update_step: Array


def make_agent(config: Config, spec: TextSpec, initial_params: PyTree | None = None) -> Agent:
    """Build Direct Preference Optimisation for a language model.

    Args:
        config: the hyper-parameters.
        spec: the model's config and the task's token layout.
        initial_params: the parameters of the model to fine-tune (usually an SFT model's), which
            are also the reference policy; None initialises both at random from `init`'s key
            (for tests).

    Returns:
        The `Agent`: `update` takes a `PreferencePairs` batch ([B, P + N] each); `act(state,
        prompts: Sequences [B, P], key, step)` samples completions (tokens [B, N] int32) with
        extras `completion_mask` [B, N], `log_probs` [B] and `reference_log_probs` [B] (log pi
        and log pi_ref of each completion); `policy(state, prompts)` is the next-token
        distribution after each prompt [B, V].
    """
    network = Transformer(spec.model)
    optimizer = clipped_adam(config.learning_rate, config.max_grad_norm, config.weight_decay)

    def log_probs(params: PyTree, sequences: Sequences) -> Array:
        """log pi(completion | prompt) [B], completion tokens only."""
        mask = sequences.attention_mask  # [B, T]
        logits = network.apply(params, sequences.tokens, positions_from_mask(mask), mask)
        return sequence_log_probs(logits, sequences.tokens, sequences.loss_mask)  # [B]

    def init(key: PRNGKey) -> State:
        if initial_params is None:
            tokens = jnp.zeros((1, spec.prompt_tokens + spec.completion_tokens), jnp.int32)
            mask = jnp.ones(tokens.shape, bool)
            params = network.init(key, tokens, positions_from_mask(mask), mask)
        else:
            params = jax.tree.map(jnp.array, initial_params)
        # A copy, never the same arrays: the driver donates the state (STYLE.md rule 6).
        reference_params = jax.tree.map(jnp.copy, params)
        return State(params=params, reference_params=reference_params,
                     opt_state=optimizer.init(params), update_step=jnp.zeros((), jnp.int32))

    def loss_fn(params: PyTree, reference_params: PyTree, batch: PreferencePairs):
        both = jax.tree.map(lambda c, r: jnp.concatenate([c, r]), batch.chosen,
                            batch.rejected)  # [2B, T]
        size = batch.chosen.tokens.shape[0]
        policy_logps = log_probs(params, both)  # [2B]
        reference_logps = jax.lax.stop_gradient(log_probs(reference_params, both))  # [2B]
        losses, chosen_rewards, rejected_rewards = dpo_loss(
            policy_logps[:size], policy_logps[size:], reference_logps[:size],
            reference_logps[size:], beta=config.beta, label_smoothing=config.label_smoothing,
            loss_type=config.loss_type)  # [B] each
        return losses.mean(), {
            "preference_accuracy": (chosen_rewards > rejected_rewards).mean(),
            "chosen_reward": chosen_rewards.mean(),
            "rejected_reward": rejected_rewards.mean(),
            "reward_margin": (chosen_rewards - rejected_rewards).mean(),
            "chosen_log_prob": jax.lax.stop_gradient(policy_logps[:size]).mean(),
            "rejected_log_prob": jax.lax.stop_gradient(policy_logps[size:]).mean(),
        }

    def update(state: State, batch: PreferencePairs, key: PRNGKey) -> tuple[State, Metrics]:
        """One AdamW step on a batch of B preference pairs; `key` is unused."""
        del key
        params, opt_state, loss, aux, grad_norm = gradient_step(
            optimizer, loss_fn, state.params, state.opt_state, state.reference_params, batch)
        state = state.replace(params=params, opt_state=opt_state,
                              update_step=state.update_step + 1)
        metrics = {"loss": loss, **aux, "grad_norm": grad_norm}
        return state, {name: value.astype(jnp.float32) for name, value in metrics.items()}

    act, policy = policy_functions(network, spec, log_probs)

    return Agent(init=init, act=act, update=update, policy=policy,
                 feed=PreferenceFeed(batch_size=config.batch_size, data="pairs",
                                     generates=True))


__all__ = ["Config", "State", "make_agent"]
