"""Random-action episodes of a functional environment, compiled once (for the env checker).

The drivers own the jit boundary (ARCHITECTURE.md section 5), so `envs.checker` rolls its
episodes out through `run_random_episodes` instead of calling `jax.jit` itself. What the checker
looks for stays in the checker: it passes `init` and `accumulate`, which fold each episode into a
small summary pytree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rlkit.types import Array, Environment, PRNGKey, PyTree


def run_random_episodes(
    env: Environment,
    params: PyTree,
    key: PRNGKey,
    num_episodes: int,
    init: Callable[[Array, PyTree, PyTree], PyTree],
    accumulate: Callable[[PyTree, Array, PyTree, Array, tuple, PyTree], PyTree],
) -> Any:
    """Roll out uniformly random actions for `spec.max_episode_steps` steps, without auto-reset.

    One episode is one compiled `lax.scan`, called once per episode key (`fold_in(key, i)`): a
    vmapped or `lax.map`-ped loop of PRNG calls compiles several times slower. `params` goes in
    as an argument of the compiled program; closed over, it would be baked in as constants that
    XLA spends seconds constant-folding.

    Args:
        env: the environment.
        params: its params.
        key: PRNG key of the whole rollout.
        num_episodes: episodes to roll out.
        init: `(obs, state, params) -> summary` at reset (a pytree of arrays).
        accumulate: `(summary, t, state, action, step_output, params) -> summary` after step t
            (int32, counted from 0), with `step_output` the 6-tuple `env.step` returned from
            `state`. Both get the traced `params`: use those, not the concrete ones.

    Returns:
        The summaries of every episode, stacked: numpy leaves [num_episodes, ...].
    """
    spec = env.spec
    steps = spec.max_episode_steps

    def episode(index: Array, params: PyTree) -> PyTree:
        reset_key, action_key, step_key = jax.random.split(jax.random.fold_in(key, index), 3)
        # Actions and step keys drawn up front: fewer PRNG calls in the loop compile faster.
        actions = jax.random.randint(action_key, (steps,), 0, spec.num_actions, jnp.int32)
        step_keys = jax.random.split(step_key, steps)
        obs, state = env.reset(reset_key, params)

        def body(carry, inputs):
            state, summary = carry
            t, action, step_key = inputs
            out = env.step(step_key, state, action, params)
            return (out[1], accumulate(summary, t, state, action, out, params)), None

        times = jnp.arange(steps, dtype=jnp.int32)
        (_, summary), _ = jax.lax.scan(body, (state, init(obs, state, params)),
                                       (times, actions, step_keys))
        return summary

    run_episode = jax.jit(episode)
    summaries = [run_episode(i, params) for i in range(num_episodes)]
    return jax.tree.map(lambda *leaves: np.stack([np.asarray(x) for x in leaves]), *summaries)
