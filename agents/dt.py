"""Decision transformer: offline RL as return-conditioned sequence modelling (Chen et al. 2021,
"Decision Transformer: Reinforcement Learning via Sequence Modeling").

Idea: write a trajectory as tokens (R_hat_1, s_1, a_1, R_hat_2, s_2, a_2, ...), where
R_hat_t = sum_{t' >= t} r_t' is the return-to-go (section 3, eq. 1 of the trajectory
representation), and train a causal transformer to predict a_t from the tokens up to s_t, by
maximum likelihood over windows of the last K steps. Nothing is bootstrapped: the model learns
"which action was taken when this much return was still to come". At evaluation, the first
return-to-go is the return one asks for; after each step it drops by the reward received
(Algorithm 1). Asking for the return of a poor episode in the data reproduces a poor episode;
asking for a high one extrapolates towards the best behaviour the data shows.

Network: each step gives three tokens of width `embed_dim`: a linear embedding of
R_hat / `return_scale`, an embedding of the observation (the IMPALA CNN for images, as the other
offline agents on procgen, or an MLP for vectors, then a linear layer), and a learned embedding
of the action; a learned embedding of the step's timestep within the episode is added to all
three, and the sequence is layer-normed (the paper's `embed_ln`). The blocks are the language
model's (`rlkit.lm.transformer.Block`: pre-norm causal attention with padding masks, GELU MLP,
GPT-2's switches), which take embeddings directly; attention keys at left padding get zero
weight. Action logits are a linear read-out of the hidden state at each state token.

Choices, and why (the procgen study's settings are spec 6.3, gen_dgrl's final configs):

* Context K = `context_length` = 10, lr 5e-4, batch 512, AdamW weight decay 0.01 and gradient
  clipping at global norm 0.1: spec 6.3 (the DT row and `configs/offline/default.json`).
* Evaluation target: `target_return_scale` x the dataset's best episode return (5 in the spec:
  gen_dgrl's `dt_eval_ret=5` is that multiplier); `target_return` sets an absolute target
  instead. The dataset's best return reaches the agent in every batch (the `max_return` extra of
  `rlkit.data.sequences`) and lives in its state (`State.max_return`), so a checkpoint carries
  its own evaluation target.
* Windows end at uniformly drawn rows and are left-padded at an episode's start
  (`rlkit.data.sequences`); the loss is the mean cross-entropy over every real step of each
  window (the paper's, all K predictions), not only the last.
* Returns-to-go are undiscounted and per episode; an episode cut by the end of the dataset
  counts the rewards it recorded.
* Timesteps are the step within the episode (the paper's absolute timestep embedding, as in its
  Atari code), clipped to the env's `max_episode_steps` - 1.
* The reported policy samples the predicted action distribution by default
  (`eval_policy = "sample"`, as the paper's Atari evaluation does); "greedy" takes its argmax.
* Deviations: no dropout (the shared blocks have none; the paper uses 0.1) and no learning-rate
  warm-up (the spec's final config has none).

Evaluation needs the episode so far, so the agent has a `HistoryPolicy` (`Agent.history`): its
memory holds the last K (R_hat, obs, action, timestep) of each environment; `policy` appends the
current observation with the remaining target and predicts, `observe` records the action and
subtracts the reward from the target. The drivers' evaluators run it step by step on JAX and host
environments, procgen's train / validation / test level splits included (never through a model's
policy table: the policy is not Markov). `Agent.policy`
and `act` are the policy of an episode's first step (an empty history).

How it runs: `python -m rlkit.train dt --dataset DIR` (offline driver `rlkit.loops.offline`,
`OfflineFeed(batch_size, context_length)`: every update is one gradient step on [batch_size, K]
windows). `--h2o` is refused: H2O's rounds feed rows, not windows.

Metrics (float32 scalars): `loss` (mean negative log-likelihood of the data actions over real
window steps), `accuracy` (share of real steps where the argmax is the data action), `entropy`,
`grad_norm`, `max_return` (the dataset's best episode return).
"""

from __future__ import annotations

from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from rlkit.errors import (
    check_optimiser_fields,
    require,
    require_int_at_least,
    require_number,
    require_one_of,
)
from rlkit.lm.transformer import Block, Norm, TransformerConfig
from rlkit.nets import make_torso
from rlkit.ops import clipped_adam, gradient_step, policy_from_logits
from rlkit.types import (
    Agent,
    Array,
    EnvSpec,
    HistoryPolicy,
    Metrics,
    OfflineFeed,
    PRNGKey,
    PyTree,
    Transition,
)


@dataclass(frozen=True)
class Config:
    """Decision-transformer hyper-parameters (defaults: spec 6.3's DT row, the paper's model
    shape)."""

    learning_rate: float = 5e-4
    """AdamW step size."""
    batch_size: int = 512
    """Context windows per update."""
    total_steps: int = 10_000
    """Gradient updates in a run (offline: no environment steps)."""
    context_length: int = 10
    """K, the steps of history in each window (and at evaluation)."""
    weight_decay: float = 0.01
    """AdamW's decoupled weight decay."""
    max_grad_norm: float | None = 0.1
    """Clip gradients to this global norm; None disables clipping."""
    target_return_scale: float = 5.0
    """Evaluation target = this x the dataset's best episode return (gen_dgrl's dt_eval_ret);
    where that return is negative, set target_return instead."""
    target_return: float | None = None
    """An absolute evaluation target return instead (None: use target_return_scale)."""
    return_scale: float = 1.0
    """Returns-to-go are divided by this before their embedding (the paper uses 1000 on MuJoCo,
    1 on Atari)."""
    eval_policy: str = "sample"
    """Policy reported and evaluated: "sample" (the predicted distribution) or "greedy"."""
    embed_dim: int = 128
    """Token width."""
    num_layers: int = 3
    """Transformer blocks."""
    num_heads: int = 1
    """Attention heads (must divide embed_dim)."""
    hidden_sizes: tuple[int, ...] = (128,)
    """Observation-embedding MLP widths for vector observations."""
    activation: str = "relu"
    """MLP activation: "relu" or "tanh"."""
    cnn: str = "impala"
    """Torso for image observations: "impala", "impala-small" or "nature" (rlkit.nets)."""

    def __post_init__(self):
        check_optimiser_fields(self, learning_rate_hint="try 5e-4.")
        require_int_at_least(self.context_length, "context_length", 1)
        require_number(self.target_return_scale, "target_return_scale", low=0,
                       hint="the target is this multiple of the dataset's best return.")
        if self.target_return is not None:
            require_number(self.target_return, "target_return")
        require_number(self.return_scale, "return_scale", low=0, low_open=True,
                       hint="it divides the returns-to-go.")
        require_one_of(self.eval_policy, "eval_policy", ("greedy", "sample"))
        require_int_at_least(self.embed_dim, "embed_dim", 1)
        require_int_at_least(self.num_layers, "num_layers", 1)
        require_int_at_least(self.num_heads, "num_heads", 1)
        require(self.embed_dim % self.num_heads == 0, "num_heads",
                f"must divide embed_dim ({self.embed_dim}), got {self.num_heads}.")

    def transformer(self) -> TransformerConfig:
        """The blocks' shape: GPT-2's switches (LayerNorm, GELU MLP of 4 x width, biases)."""
        return TransformerConfig.gpt2(vocab_size=1, width=self.embed_dim,
                                      num_layers=self.num_layers, num_heads=self.num_heads,
                                      max_length=3 * self.context_length)


@struct.dataclass
class State:
    """DT's training state.

    Attributes:
        params: network parameters.
        opt_state: optax state.
        update_step: int32 scalar, updates done so far.
        max_return: float32 scalar, the dataset's best episode return (0 before any update).
    """

    params: PyTree
    opt_state: optax.OptState
    update_step: Array
    max_return: Array


@struct.dataclass
class Memory:
    """The evaluation history of N environments: the last K steps of each, oldest first, and
    what the next step needs.

    Attributes:
        return_to_go: [N, K] float32.
        obs: [N, K, *obs_shape].
        action: [N, K] int32 (0 at the current step until `observe` records it).
        timestep: [N, K] int32.
        mask: [N, K] bool, True at recorded steps (left padding is False).
        target: [N] float32, the return still asked for (the next step's R_hat).
        step: [N] int32, steps taken in the episode.
    """

    return_to_go: Array
    obs: Array
    action: Array
    timestep: Array
    mask: Array
    target: Array
    step: Array


class DecisionTransformer(nn.Module):
    """(R_hat, s, a) windows [B, K] -> action logits [B, K, A], predicted at the state tokens.

    Attributes:
        torso: the observation torso ([B, *obs_shape] -> [B, F]).
        config: the blocks' `TransformerConfig`.
        num_actions: A.
        max_timestep: size of the timestep table (timesteps are clipped below it).
        return_scale: R_hat is divided by it.
    """

    torso: nn.Module
    config: TransformerConfig
    num_actions: int
    max_timestep: int
    return_scale: float

    @nn.compact
    def __call__(self, return_to_go: Array, obs: Array, action: Array, timestep: Array,
                 mask: Array) -> Array:
        """
        Args:
            return_to_go: [B, K] float32 R_hat of each step.
            obs: [B, K, *obs_shape].
            action: [B, K] int32 (the action at step k is seen only by later steps' tokens).
            timestep: [B, K] int32 step within the episode.
            mask: [B, K] bool, True at real steps (padding keys get zero attention).

        Returns:
            [B, K] x A float32 logits of a_k, read at each state token s_k.
        """
        batch, length = mask.shape
        width = self.config.width
        features = self.torso(obs.reshape(batch * length, *obs.shape[2:]))
        state_tokens = nn.Dense(width)(features).reshape(batch, length, width)
        return_tokens = nn.Dense(width)(return_to_go[..., None] / self.return_scale)
        action_tokens = nn.Embed(self.num_actions, width)(action)
        time = nn.Embed(self.max_timestep, width)(jnp.clip(timestep, 0, self.max_timestep - 1))
        # Interleave (R_hat_t, s_t, a_t): [B, K, 3, W] -> [B, 3K, W] (the paper's stacking).
        tokens = jnp.stack([return_tokens, state_tokens, action_tokens], axis=2) + time[:, :, None]
        x = nn.LayerNorm()(tokens.reshape(batch, 3 * length, width))
        key_mask = jnp.repeat(mask, 3, axis=1)  # [B, 3K]
        positions = jnp.broadcast_to(jnp.arange(3 * length, dtype=jnp.int32), key_mask.shape)
        slots = jnp.arange(3 * length, dtype=jnp.int32)
        for _ in range(self.config.num_layers):
            x, _ = Block(self.config)(x, positions, slots, key_mask, None, jnp.int32(0))
        x = Norm(self.config)(x)
        return nn.Dense(self.num_actions)(x[:, 1::3]).astype(jnp.float32)  # state tokens


def make_agent(config: Config, spec: EnvSpec) -> Agent:
    """Build the decision transformer for an environment with discrete actions.

    Args:
        config: the hyper-parameters (model, optimiser, evaluation target).
        spec: the environment's spec (observation shape and dtype, `num_actions`,
            `max_episode_steps` sizes the timestep table).

    Returns:
        The `Agent`: `update` fits the windows of an `OfflineFeed(batch_size, context_length)`
        batch; `history` is the return-conditioned policy the evaluators run; `policy` and
        `act` are its first-step policy.
    """
    num_actions, length = spec.num_actions, config.context_length
    torso = make_torso(spec, config.cnn, config.hidden_sizes, config.activation)
    network = DecisionTransformer(torso, config.transformer(), num_actions,
                                  max_timestep=spec.max_episode_steps,
                                  return_scale=config.return_scale)
    optimizer = clipped_adam(config.learning_rate, config.max_grad_norm, config.weight_decay)

    def init(key: PRNGKey) -> State:
        zeros = jnp.zeros((1, length), jnp.float32)
        params = network.init(key, zeros, jnp.zeros((1, length, *spec.obs_shape), spec.obs_dtype),
                              zeros.astype(jnp.int32), zeros.astype(jnp.int32),
                              jnp.ones((1, length), bool))
        return State(params=params, opt_state=optimizer.init(params),
                     update_step=jnp.zeros((), jnp.int32), max_return=jnp.zeros((), jnp.float32))

    def loss_fn(params: PyTree, batch: Transition):
        extras = batch.extras
        logits = network.apply(params, extras["return_to_go"], batch.obs, batch.action,
                               extras["timestep"], extras["mask"])  # [B, K, A]
        log_probs = jax.nn.log_softmax(logits)
        action = batch.action.astype(jnp.int32)
        real = extras["mask"].astype(jnp.float32)  # [B, K]
        count = real.sum()

        def mean(x):  # over the real steps of every window
            return (x * real).sum() / count

        nll = -jnp.take_along_axis(log_probs, action[..., None], axis=-1)[..., 0]  # [B, K]
        return mean(nll), {
            "accuracy": mean((jnp.argmax(logits, axis=-1) == action).astype(jnp.float32)),
            "entropy": mean(-(jnp.exp(log_probs) * log_probs).sum(-1)),
        }

    def update(state: State, batch: Transition, key: PRNGKey) -> tuple[State, Metrics]:
        """One gradient step on [B, K] windows; `key` is unused (no dropout)."""
        del key
        params, opt_state, loss, aux, grad_norm = gradient_step(
            optimizer, loss_fn, state.params, state.opt_state, batch)
        state = State(params=params, opt_state=opt_state, update_step=state.update_step + 1,
                      max_return=batch.extras["max_return"].max().astype(jnp.float32))
        metrics = {"loss": loss, **aux, "grad_norm": grad_norm, "max_return": state.max_return}
        return state, {name: value.astype(jnp.float32) for name, value in metrics.items()}

    def init_memory(state: State, num_envs: int) -> Memory:
        target = (config.target_return if config.target_return is not None
                  else config.target_return_scale * state.max_return)
        zeros = jnp.zeros((num_envs, length), jnp.int32)
        return Memory(return_to_go=zeros.astype(jnp.float32),
                      obs=jnp.zeros((num_envs, length, *spec.obs_shape), spec.obs_dtype),
                      action=zeros, timestep=zeros, mask=zeros.astype(bool),
                      target=jnp.full((num_envs,), target, jnp.float32),
                      step=jnp.zeros((num_envs,), jnp.int32))

    def predict(state: State, memory: Memory, obs: Array) -> tuple[Array, Memory]:
        """Append (target, obs, t) to each window; logits [N, A] of the newest step."""

        def push(window: Array, value: Array) -> Array:  # drop the oldest step, append value
            return jnp.concatenate([window[:, 1:], value[:, None].astype(window.dtype)], axis=1)

        memory = memory.replace(
            return_to_go=push(memory.return_to_go, memory.target),
            obs=push(memory.obs, obs), action=push(memory.action, jnp.zeros_like(memory.step)),
            timestep=push(memory.timestep, memory.step),
            mask=push(memory.mask, jnp.ones_like(memory.step, bool)))
        logits = network.apply(state.params, memory.return_to_go, memory.obs, memory.action,
                               memory.timestep, memory.mask)  # [N, K, A]
        return logits[:, -1], memory

    def history_policy(state: State, memory: Memory, obs: Array) -> tuple[Array, Memory]:
        """The reported policy [N, A] given each environment's history, and the new memory."""
        logits, memory = predict(state, memory, obs)
        return policy_from_logits(logits, config.eval_policy), memory

    def observe(memory: Memory, action: Array, reward: Array) -> Memory:
        """Record the action taken at the newest step; the target drops by the reward."""
        return memory.replace(action=memory.action.at[:, -1].set(action.astype(jnp.int32)),
                              target=memory.target - reward.astype(jnp.float32),
                              step=memory.step + 1)

    def policy(state: State, obs: Array) -> Array:
        """The first-step policy [N, A] (an empty history; see the module docstring)."""
        return history_policy(state, init_memory(state, obs.shape[0]), obs)[0]

    def act(state: State, obs: Array, key: PRNGKey, step: Array) -> tuple[Array, dict]:
        """Actions [N] int32 sampled from the first-step prediction (step unused)."""
        logits, _ = predict(state, init_memory(state, obs.shape[0]), obs)
        return jax.random.categorical(key, logits).astype(jnp.int32), {}

    return Agent(init=init, act=act, update=update, policy=policy,
                 feed=OfflineFeed(batch_size=config.batch_size, context_length=length),
                 history=HistoryPolicy(init=init_memory, policy=history_policy,
                                       observe=observe))


__all__ = ["Config", "DecisionTransformer", "Memory", "State", "make_agent"]
