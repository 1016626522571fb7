"""Shared RL maths: what two or more agents compute the same way.

Every function here is **batched**: it takes arrays with leading batch axes (a rollout's
`[T, N]`, or a batch's `[B]`) and works on all rows at once; the shapes are in each docstring.
The naming follows a rollout's convention: index t holds (obs_t, a_t, r_t, terminated_t,
truncated_t, next_obs_t), `next_obs_t` being the true next observation before any auto-reset.

* acting: `epsilon_greedy`, `policy_from_logits`;
* gathering: `batched_index` (`values[b, index[b]]`, e.g. Q(s, a) of the batch's actions);
* targets: `q_learning_target`, `double_q_learning_target`, `generalized_advantage_estimation`,
  `next_state_values` (V(next_obs) of a rollout with truncations);
* losses: `td_loss` (DQN's and CQL's TD part, from online and target Q-values);
* preferences (language models and preference bandits): `token_log_probs` and
  `sequence_log_probs` (log pi(y | x) of completion tokens from next-token logits), `dpo_loss`
  (Direct Preference Optimisation, sigmoid with label smoothing, or IPO) and
  `bradley_terry_loss` (reward models);
* optimisation: `clipped_adam`, `gradient_step`, `target_network_update`.

None of them jits: the drivers own the jit boundary.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from rlkit.errors import require, require_one_of
from rlkit.types import Array, PRNGKey, PyTree


def batched_index(values: Array, index: Array) -> Array:
    """`values[b, index[b]]` for every row b: Q(s, a) or log pi(a | s) of the batch's actions.

    Args:
        values: [B, A] one value per action.
        index: [B] int actions in [0, A).

    Returns:
        [B] the selected values, dtype of `values`.
    """
    chex.assert_rank([values, index], [2, 1])
    return jnp.take_along_axis(values, index[:, None].astype(jnp.int32), axis=-1)[:, 0]


def epsilon_greedy(key: PRNGKey, q_values: Array, epsilon: float | Array) -> Array:
    """Epsilon-greedy actions: uniform with probability `epsilon`, else argmax_a Q(s, a).

    Args:
        key: one PRNG key for the whole batch.
        q_values: [N, A] action values (ties go to the first maximum).
        epsilon: float or float32 scalar in [0, 1].

    Returns:
        [N] int32 actions.
    """
    num_actions = q_values.shape[-1]
    greedy = jnp.argmax(q_values, axis=-1)
    # One draw serves both coin flips: split + randint + uniform would inline the threefry hash
    # five times into every driver's program, and XLA compiles each copy. floor(u * A) is
    # uniform over actions up to a bias of A / 2**23 (uniform draws 23 mantissa bits).
    explore_u, action_u = jax.random.uniform(key, (2, *greedy.shape))
    random = jnp.minimum(jnp.floor(action_u * num_actions), num_actions - 1).astype(jnp.int32)
    return jnp.where(explore_u < epsilon, random, greedy).astype(jnp.int32)


def q_learning_target(reward: Array, terminated: Array, q_next: Array, gamma: float) -> Array:
    """The Q-learning target (Watkins 1989; DQN's Nature target): r + gamma * max_a Q(s', a).

    Args:
        reward: [B] rewards.
        terminated: [B] bool; truncated transitions still bootstrap (Pardo et al. 2018).
        q_next: [B, A] values of next_obs (the target network's, in DQN).
        gamma: discount.

    Returns:
        [B] targets (not stopped: callers apply `jax.lax.stop_gradient`).
    """
    chex.assert_rank([reward, q_next], [1, 2])
    return reward + gamma * (1.0 - terminated.astype(jnp.float32)) * q_next.max(axis=-1)


def generalized_advantage_estimation(
    reward: Array,
    value: Array,
    next_value: Array,
    terminated: Array,
    truncated: Array,
    gamma: float,
    gae_lambda: float,
) -> tuple[Array, Array]:
    """GAE(lambda) (Schulman et al. 2016) with terminated and truncated kept apart.

    A terminated step does not bootstrap; a truncated step bootstraps from the value of the true
    final observation (`next_value` there is V(final_obs), not the value of the reset observation),
    and no advantage flows across any episode boundary.

    Args:
        reward: [T, ...] r_t.
        value: [T, ...] V(obs_t).
        next_value: [T, ...] V(next_obs_t), next_obs_t being the observation before any reset.
        terminated: [T, ...] bool.
        truncated: [T, ...] bool.
        gamma: discount.
        gae_lambda: the lambda of GAE.

    Returns:
        (advantages [T, ...], returns [T, ...]) with returns = advantages + value.
    """
    chex.assert_equal_shape([reward, value, next_value, terminated, truncated])
    not_terminated = 1.0 - terminated.astype(jnp.float32)
    episode_continues = 1.0 - jnp.logical_or(terminated, truncated).astype(jnp.float32)
    delta = reward + gamma * not_terminated * next_value - value

    def backward(advantage_next, inputs):
        delta_t, continues_t = inputs
        advantage = delta_t + gamma * gae_lambda * continues_t * advantage_next
        return advantage, advantage

    # Unrolling the short backward recursion cuts loop overhead (PureJaxRL unrolls by 16 too).
    _, advantages = jax.lax.scan(
        backward, jnp.zeros_like(delta[0]), (delta, episode_continues), reverse=True, unroll=16
    )
    return advantages, advantages + value


def double_q_learning_target(
    reward: Array, terminated: Array, q_next_online: Array, q_next_target: Array, gamma: float
) -> Array:
    """Double-DQN target (van Hasselt et al. 2016): r + gamma * Q_target(s', argmax_a Q(s', a)).

    Args:
        reward: [B] rewards.
        terminated: [B] bool; truncated transitions still bootstrap.
        q_next_online: [B, A] online-network values of next_obs (selects the action).
        q_next_target: [B, A] target-network values of next_obs (evaluates it).
        gamma: discount.

    Returns:
        [B] targets (not stopped: callers apply `jax.lax.stop_gradient`).
    """
    chex.assert_rank([reward, q_next_online, q_next_target], [1, 2, 2])
    q_next = batched_index(q_next_target, jnp.argmax(q_next_online, axis=-1))
    return reward + gamma * (1.0 - terminated.astype(jnp.float32)) * q_next


class TDLoss(NamedTuple):
    """What `td_loss` returns.

    Attributes:
        loss: float32 scalar, the mean (weighted) per-row loss.
        q_taken: [B] Q(s, a) of the batch's actions (online network).
        target: [B] the bootstrapped targets, gradient stopped.
        td_error: [B] q_taken - target.
    """

    loss: Array
    q_taken: Array
    target: Array
    td_error: Array


def td_loss(
    q_tm1: Array,
    a_tm1: Array,
    r_t: Array,
    terminated_t: Array,
    q_t_online: Array,
    q_t_target: Array,
    gamma: float,
    *,
    double: bool = True,
    loss: str = "mse",
    weight: Array | None = None,
) -> TDLoss:
    """The one-step TD loss of a batch of Q-values (DQN, Mnih et al. 2015; double DQN, van Hasselt
    et al. 2016): regress Q(s, a) on `double_q_learning_target` (or, with `double=False`,
    `q_learning_target`, which ignores `q_t_online`).

    Args:
        q_tm1: [B, A] online-network values of obs.
        a_tm1: [B] int actions taken.
        r_t: [B] rewards.
        terminated_t: [B] bool; truncated transitions still bootstrap.
        q_t_online: [B, A] online-network values of next_obs (selects the double-DQN action).
        q_t_target: [B, A] target-network values of next_obs (evaluates it).
        gamma: discount.
        double: the double-DQN target; False gives the max target.
        loss: "mse" (half squared error per row) or "huber" (delta 1, the Nature paper's error
            clipping).
        weight: optional [B] per-row weights (prioritised replay's importance weights) applied
            before the mean.

    Returns:
        A `TDLoss`; gradients flow into `q_tm1` only.
    """
    chex.assert_rank([q_tm1, a_tm1, q_t_online, q_t_target], [2, 1, 2, 2])
    if double:
        target = double_q_learning_target(r_t, terminated_t, q_t_online, q_t_target, gamma)
    else:
        target = q_learning_target(r_t, terminated_t, q_t_target, gamma)
    target = jax.lax.stop_gradient(target)  # [B]
    q_taken = batched_index(q_tm1, a_tm1)  # [B]
    td_error = q_taken - target  # [B]
    if loss == "huber":
        row_loss = optax.huber_loss(q_taken, target, delta=1.0)  # [B]
    else:
        row_loss = 0.5 * jnp.square(td_error)  # [B]
    if weight is not None:
        row_loss = weight * row_loss  # [B]
    return TDLoss(row_loss.mean(), q_taken, target, td_error)


def next_state_values(
    value_fn: Callable[[Array], Array],
    value: Array,
    next_obs: Array,
    truncated: Array,
    max_episode_steps: int,
) -> Array:
    """V(next_obs_t) for every step of a rollout, reusing the values computed while acting.

    Where an episode goes on, next_obs_t is obs_{t+1}, whose value the rollout already holds
    (value[t + 1]). Two kinds of steps need a forward pass: the last step, and truncated steps,
    whose next observation is the final one before the reset. An environment that truncates only
    at its time limit does so at most ceil(T / max_episode_steps) times in T steps, so the
    truncated observations are gathered in chunks of `num_envs * ceil(T / max_episode_steps)`:
    the first chunk always (a rollout of [T, N] then costs N * (1 + ceil(T /
    max_episode_steps)) value evaluations instead of T * N), and further chunks in a
    `lax.while_loop` only while truncations remain, for environments that truncate on their own
    more often than their time limit says (issue 11 item 11). Every truncated step gets V(final
    observation), however many there are. Terminated steps keep value[t + 1], which GAE
    multiplies by zero.

    Args:
        value_fn: `obs [K, ...] -> values [K]` under the parameters that produced `value`.
        value: [T, N] V(obs_t) from acting.
        next_obs: [T, N, ...] the true next observations (before any auto-reset).
        truncated: [T, N] bool.
        max_episode_steps: the environment's time limit (sets the chunk size only).

    Returns:
        [T, N] V(next_obs_t), exact wherever GAE uses it.
    """
    num_steps, num_envs = value.shape
    last = value_fn(next_obs[-1])
    next_value = jnp.concatenate([value[1:], last[None]], axis=0).reshape(-1)
    chunk = num_envs * -(-num_steps // max_episode_steps)
    flat_truncated = truncated.reshape(-1)
    flat_next_obs = next_obs.reshape((num_steps * num_envs, *next_obs.shape[2:]))
    # Padding points at the last entry, whose gathered value is exact there too.
    padding = num_steps * num_envs - 1

    def gather(next_value: Array, mask: Array) -> Array:
        (index,) = jnp.nonzero(mask, size=chunk, fill_value=padding)
        return next_value.at[index].set(value_fn(flat_next_obs[index]))

    next_value = gather(next_value, flat_truncated)  # the first `chunk` truncated steps
    rank = jnp.cumsum(flat_truncated, dtype=jnp.int32) - 1  # k-th truncated step has rank k
    count = rank[-1] + 1

    def more(carry):
        done, _ = carry
        return done < count

    def next_chunk(carry):
        done, next_value = carry
        mask = flat_truncated & (rank >= done) & (rank < done + chunk)
        return done + chunk, gather(next_value, mask)

    _, next_value = jax.lax.while_loop(more, next_chunk, (jnp.int32(chunk), next_value))
    return next_value.reshape(num_steps, num_envs)


def policy_from_logits(logits: Array, mode: str) -> Array:
    """The policy an agent reports from action logits [N, A]: "greedy" gives the one-hot argmax,
    "sample" the softmax itself. Float32 probabilities [N, A]."""
    if mode == "greedy":
        return jax.nn.one_hot(jnp.argmax(logits, axis=-1), logits.shape[-1], dtype=jnp.float32)
    return jax.nn.softmax(logits).astype(jnp.float32)


def clipped_adam(learning_rate: float | optax.Schedule, max_grad_norm: float | None,
                 weight_decay: float = 0.0) -> optax.GradientTransformation:
    """Adam (Kingma and Ba 2015) after clipping gradients to a global norm; AdamW (Loshchilov
    and Hutter 2019, decoupled weight decay) when `weight_decay` > 0.

    Args:
        learning_rate: step size, or an optax schedule of the update count.
        max_grad_norm: the global-norm clip; None (or 0) disables clipping.
        weight_decay: AdamW's decoupled weight-decay coefficient; 0 gives plain Adam.
    """
    clip = optax.clip_by_global_norm(max_grad_norm) if max_grad_norm else optax.identity()
    if weight_decay:
        return optax.chain(clip, optax.adamw(learning_rate, weight_decay=weight_decay))
    return optax.chain(clip, optax.adam(learning_rate))


def gradient_step(optimizer: optax.GradientTransformation, loss_fn: Callable, params: PyTree,
                  opt_state: optax.OptState, *args) -> tuple[PyTree, optax.OptState, Array, Any,
                                                             Array]:
    """One optimiser step down `loss_fn(params, *args) -> (loss scalar, aux)`.

    Returns:
        (params, opt_state, loss, aux, grad_norm): the stepped parameters and optimiser state,
        the loss and aux at the parameters before the step, and the global gradient norm
        before any clipping (a float32 scalar).
    """
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, *args)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, aux, optax.tree.norm(grads)


def target_network_update(params: PyTree, target_params: PyTree, step: Array, tau: float,
                          every: int) -> PyTree:
    """The target network after update `step`: every `every` updates, `target <- tau * online +
    (1 - tau) * target` (`tau = 1`: the hard copy of Mnih et al. 2015; `every = 1` with a small
    tau: Polyak averaging); unchanged otherwise.

    Args:
        params, target_params: pytrees of the same structure.
        step: int32 scalar, updates done including this one.
        tau: in (0, 1].
        every: >= 1.

    Returns:
        The new target parameters (fresh arrays, never aliases of `params`).

    The same values as `optax.periodic_update(optax.incremental_update(...))`, written as a
    select: optax's `lax.cond`, nested inside the drivers' update `cond`, cost DQN about 8% of
    its CPU run time (benchmarks/README.md, "CPU ratios").
    """
    due = step % every == 0
    if tau == 1.0:  # incremental_update's 1 * online + 0 * target, without the arithmetic
        return jax.tree.map(lambda p, t: jnp.where(due, p, t), params, target_params)
    return jax.tree.map(lambda p, t: jnp.where(due, tau * p + (1.0 - tau) * t, t), params,
                        target_params)


def token_log_probs(logits: Array, tokens: Array, loss_mask: Array) -> Array:
    """Per-token log-probabilities of a batch of sequences under next-token logits.

    Position t - 1 predicts the token at t, so entry [b, t] is
    `log_softmax(logits[b, t - 1])[tokens[b, t]]` where `loss_mask[b, t]`, and 0 elsewhere.
    Position 0 has no prediction and always gives 0: `loss_mask[:, 0]` should be False (a prompt
    token starts every sequence); a True there is not counted. The softmax is taken in float32
    whatever the logits' dtype (bf16 logits on a GPU), as `logits - logsumexp(logits)` so that
    no [B, T, V] log-softmax is kept.

    Args:
        logits: [B, T, V] next-token logits of a causal model over `tokens`.
        tokens: [B, T] int token ids in [0, V).
        loss_mask: [B, T] bool, True at the tokens whose log-probability counts (the completion,
            not the prompt or the padding).

    Returns:
        [B, T] float32 log pi(tokens[b, t] | tokens[b, :t]), 0 where the mask is False.
    """
    chex.assert_rank([logits, tokens, loss_mask], [3, 2, 2])
    chex.assert_equal_shape([tokens, loss_mask])
    chex.assert_equal_shape_prefix([logits, tokens], 2)
    logits = logits[:, :-1].astype(jnp.float32)  # [B, T - 1, V] predicting tokens 1..T-1
    targets = tokens[:, 1:].astype(jnp.int32)  # [B, T - 1]
    picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]  # [B, T - 1]
    log_probs = picked - jax.nn.logsumexp(logits, axis=-1)  # [B, T - 1]
    log_probs = jnp.pad(log_probs, ((0, 0), (1, 0)))  # [B, T], position 0 predicted by nothing
    # where, not a product: a masked position may hold -inf (a padding id the model never emits).
    return jnp.where(loss_mask, log_probs, 0.0)


def sequence_log_probs(logits: Array, tokens: Array, loss_mask: Array) -> Array:
    """log pi(y | x) of each sequence: the sum of `token_log_probs` over the masked tokens.

    DPO's and SFT's sequence log-probability (Rafailov et al. 2023, eq. 7, uses log pi(y | x) of
    the completion only): prompt and padding tokens are masked out, so changing them changes
    nothing here unless it changes the logits at completion positions.

    Args:
        logits: [B, T, V] next-token logits; position t - 1 predicts the token at t.
        tokens: [B, T] int token ids.
        loss_mask: [B, T] bool, True at completion tokens; `loss_mask[:, 0]` is not counted.

    Returns:
        [B] float32 sums of log-probabilities (0 for a row with no masked token).
    """
    return token_log_probs(logits, tokens, loss_mask).sum(axis=-1)


class DPOLoss(NamedTuple):
    """What `dpo_loss` returns.

    Attributes:
        losses: [B] per-pair losses (callers take the mean).
        chosen_rewards: [B] implicit rewards beta * (log pi(y_w) - log pi_ref(y_w)), gradient
            stopped (metrics only).
        rejected_rewards: [B] the same for y_l.
    """

    losses: Array
    chosen_rewards: Array
    rejected_rewards: Array


DPO_LOSS_TYPES = ("sigmoid", "ipo")


def dpo_loss(
    policy_chosen_logps: Array,
    policy_rejected_logps: Array,
    reference_chosen_logps: Array,
    reference_rejected_logps: Array,
    *,
    beta: float | Array,
    label_smoothing: float = 0.0,
    loss_type: str = "sigmoid",
) -> DPOLoss:
    """Direct Preference Optimisation losses of a batch of preference pairs.

    Not to be confused with *Discovered* Policy Optimisation (Lu et al. 2022, the meta-learned
    PPO variant also called "DPO" in JAX RL code): this is Direct Preference Optimisation for
    preference fine-tuning (Rafailov et al. 2023).

    With the log-ratio difference
    z = [log pi(y_w) - log pi(y_l)] - [log pi_ref(y_w) - log pi_ref(y_l)]:

    * "sigmoid" (Rafailov et al. 2023, eq. 7; label smoothing as conservative DPO, Mitchell 2023,
      the form of TRL's `DPOTrainer` and RLHFlow's `dpo.py`):
      L = -(1 - eps) log sigmoid(beta z) - eps log sigmoid(-beta z), so
      dL/dz = beta (sigmoid(beta z) - (1 - eps)); L = log 2 at z = 0.
    * "ipo" (Azar et al. 2023, "A General Theoretical Paradigm to Understand Learning from Human
      Preferences", eq. 17 with tau = beta): L = (z - 1 / (2 beta))^2, minimised at
      z = 1 / (2 beta); label smoothing does not apply to it.

    Args:
        policy_chosen_logps: [B] log pi(y_w | x) under the policy (e.g. `sequence_log_probs`).
        policy_rejected_logps: [B] log pi(y_l | x).
        reference_chosen_logps: [B] log pi_ref(y_w | x) (callers stop its gradient or precompute
            it).
        reference_rejected_logps: [B] log pi_ref(y_l | x).
        beta: the KL-regularisation strength, > 0 (0.1 in TRL and RLHFlow).
        label_smoothing: eps in [0, 0.5), the assumed probability that a label is flipped
            ("sigmoid" only; 0.1 in RLHFlow's training.yaml).
        loss_type: "sigmoid" or "ipo".

    Returns:
        A `DPOLoss` (losses [B], chosen_rewards [B], rejected_rewards [B]), float32.

    Raises:
        RlkitError: an unknown `loss_type`, a float `beta` <= 0, `label_smoothing` outside
            [0, 0.5), or label smoothing with "ipo".
    """
    require_one_of(loss_type, "loss_type", DPO_LOSS_TYPES)
    if isinstance(beta, int | float):  # an array beta (a schedule) is the caller's to check
        require(beta > 0, "beta", f"must be > 0 (0.1 is usual), got {beta!r}.")
    require(0.0 <= label_smoothing < 0.5, "label_smoothing",
            f"must be in [0, 0.5) (the probability that a label is flipped), got "
            f"{label_smoothing!r}.")
    require(loss_type == "sigmoid" or label_smoothing == 0.0, "label_smoothing",
            f"applies to loss_type 'sigmoid' only; set it to 0 for {loss_type!r}.")
    chex.assert_equal_shape([policy_chosen_logps, policy_rejected_logps,
                             reference_chosen_logps, reference_rejected_logps])
    chosen_log_ratio = policy_chosen_logps - reference_chosen_logps  # [B]
    rejected_log_ratio = policy_rejected_logps - reference_rejected_logps  # [B]
    z = (chosen_log_ratio - rejected_log_ratio).astype(jnp.float32)  # [B]
    if loss_type == "ipo":
        losses = jnp.square(z - 1.0 / (2.0 * beta))
    else:
        losses = (-(1.0 - label_smoothing) * jax.nn.log_sigmoid(beta * z)
                  - label_smoothing * jax.nn.log_sigmoid(-beta * z))
    chosen_rewards = jax.lax.stop_gradient(beta * chosen_log_ratio).astype(jnp.float32)
    rejected_rewards = jax.lax.stop_gradient(beta * rejected_log_ratio).astype(jnp.float32)
    return DPOLoss(losses, chosen_rewards, rejected_rewards)


def bradley_terry_loss(chosen_rewards: Array, rejected_rewards: Array) -> Array:
    """The Bradley-Terry negative log-likelihood of preference pairs (Bradley and Terry 1952;
    the reward-model loss of Ouyang et al. 2022, eq. 1, and RLHFlow's `bradley-terry-rm`):
    -log sigmoid(r(x, y_w) - r(x, y_l)).

    Args:
        chosen_rewards: [B] rewards of the chosen responses.
        rejected_rewards: [B] rewards of the rejected responses.

    Returns:
        [B] float32 per-pair losses (callers take the mean); log 2 at equal rewards.
    """
    chex.assert_equal_shape([chosen_rewards, rejected_rewards])
    margin = (chosen_rewards - rejected_rewards).astype(jnp.float32)  # [B]
    return -jax.nn.log_sigmoid(margin)


def tabular_log_probs(policy_logits: Array, prompt_ids: Array, response_ids: Array) -> Array:
    """log pi(y | x) of responses under a factorised tabular policy.

    Args:
        policy_logits: [X, L, V] logits, position t of a response to prompt x drawn from
            softmax(policy_logits[x, t]).
        prompt_ids: [B, 1] int prompt tokens in [0, X).
        response_ids: [B, L] int response tokens in [0, V).

    Returns:
        [B] float32 sum_t log softmax(policy_logits[x, t])[y_t].
    """
    log_probs = jax.nn.log_softmax(policy_logits.astype(jnp.float32), axis=-1)  # [X, L, V]
    per_prompt = log_probs[prompt_ids[:, 0]]  # [B, L, V]
    picked = jnp.take_along_axis(per_prompt, response_ids[..., None].astype(jnp.int32), axis=-1)
    return picked[..., 0].sum(axis=-1)  # [B]
