"""Shared RL maths, written rlax-style for one unbatched stream and batched by the caller.

Time suffixes follow rlax: `r_t` is the reward after `a_{t-1}`... here we keep the plain
convention of a rollout: index t holds (obs_t, a_t, r_t, terminated_t, truncated_t, next_obs_t).
"""

from __future__ import annotations

from collections.abc import Callable

import chex
import jax
import jax.numpy as jnp

from rlkit.types import Array


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
    best = jnp.argmax(q_next_online, axis=-1)
    q_next = jnp.take_along_axis(q_next_target, best[:, None], axis=-1)[:, 0]
    return reward + gamma * (1.0 - terminated.astype(jnp.float32)) * q_next


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
    whose next observation is the final one before the reset. An environment is truncated at most
    ceil(T / max_episode_steps) times in T steps, so a fixed-size gather of that many
    observations per environment covers every truncation; a rollout of [T, N] costs
    N * (1 + ceil(T / max_episode_steps)) value evaluations instead of T * N. Terminated steps
    keep value[t + 1], which GAE multiplies by zero.

    Args:
        value_fn: `obs [B, ...] -> values [B]` under the parameters that produced `value`.
        value: [T, N] V(obs_t) from acting.
        next_obs: [T, N, ...] the true next observations (before any auto-reset).
        truncated: [T, N] bool.
        max_episode_steps: the environment's time limit (truncation never comes sooner).

    Returns:
        [T, N] V(next_obs_t), exact wherever GAE uses it.
    """
    num_steps, num_envs = value.shape
    last = value_fn(next_obs[-1])
    next_value = jnp.concatenate([value[1:], last[None]], axis=0).reshape(-1)
    max_truncations = num_envs * -(-num_steps // max_episode_steps)
    # Padding points at the last entry, whose gathered value is exact there too.
    (index,) = jnp.nonzero(truncated.reshape(-1), size=max_truncations,
                           fill_value=num_steps * num_envs - 1)
    flat_next_obs = next_obs.reshape((num_steps * num_envs, *next_obs.shape[2:]))
    next_value = next_value.at[index].set(value_fn(flat_next_obs[index]))
    return next_value.reshape(num_steps, num_envs)


def policy_from_logits(logits: Array, mode: str) -> Array:
    """The policy an agent reports from action logits [N, A]: "greedy" gives the one-hot argmax,
    "sample" the softmax itself. Float32 probabilities [N, A]."""
    if mode == "greedy":
        return jax.nn.one_hot(jnp.argmax(logits, axis=-1), logits.shape[-1], dtype=jnp.float32)
    return jax.nn.softmax(logits).astype(jnp.float32)
