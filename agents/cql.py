"""CQL for discrete actions: Kumar, Zhou, Tucker and Levine 2020, "Conservative Q-Learning for
Offline Reinforcement Learning" (NeurIPS 2020), the CQL(H) variant on a DQN backbone.

Idea: offline Q-learning over-estimates the value of actions the dataset never tried, and the
greedy policy then picks exactly those. CQL adds a regulariser that pushes Q down on all actions
(softly, through a log-sum-exp) and up on the dataset's actions, so the learned Q lower-bounds the
true value off the data (paper eq. 4, CQL(H)):

    loss = TD loss + alpha * E_{s ~ D}[ logsumexp_a Q(s, a) - E_{a ~ D(.|s)} Q(s, a) ]

The greedy policy of the conservative Q is reported and evaluated.

Deviations and choices, and why:

* The TD part is `rlkit.qlearning`'s double-DQN loss with a target network (mean squared error by
  default); the paper's discrete experiments used QR-DQN on Atari. The regulariser is the same.
* `alpha` is fixed (`cql_alpha`); the paper's Lagrangian version that tunes alpha to a target gap
  is for continuous control.
* Trained purely offline (`OfflineFeed`): `python -m rlkit.train cql --env ENV --dataset DIR`;
  `act` is greedy (the policy offline evaluation uses).

Metrics (float32 scalars): `loss` (TD loss plus alpha times the gap), `td_loss`, `cql_gap`
(mean logsumexp Q minus Q of the data action: how far Q is pushed down off the data), `q_mean`,
`target_mean`, `td_abs_mean`, `grad_norm`.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from rlkit.errors import require
from rlkit.qlearning import QLearningConfig, make_q_learner
from rlkit.types import Agent, Array, EnvSpec, OfflineFeed, PRNGKey, Transition


@dataclass(frozen=True)
class Config(QLearningConfig):
    """CQL hyper-parameters: the Q-learning fields plus the conservative weight."""

    learning_rate: float = 3e-4
    """Adam step size."""
    batch_size: int = 256
    """Dataset rows per update."""
    total_steps: int = 20_000
    """Gradient updates in a run (offline: no environment steps)."""
    cql_alpha: float = 1.0
    """Weight of the conservative regulariser (the paper tries 0.5 to 5); 0 gives plain DQN."""

    def __post_init__(self):
        super().__post_init__()
        require(self.cql_alpha >= 0, "cql_alpha", f"must be >= 0, got {self.cql_alpha}.")
        require(self.total_steps >= 1, "total_steps", f"must be >= 1, got {self.total_steps}.")


def conservative_gap(q: Array, action: Array) -> Array:
    """The CQL(H) regulariser before its weight: mean over the batch of
    logsumexp_a Q(s, a) - Q(s, a_data).

    Args:
        q: [B, A] Q-values of the batch's observations.
        action: [B] int dataset actions.

    Returns:
        A float32 scalar (non-negative up to rounding: logsumexp is at least the maximum).
    """
    q_data = jnp.take_along_axis(q, action[:, None].astype(jnp.int32), axis=-1)[:, 0]
    return (jax.nn.logsumexp(q, axis=-1) - q_data).mean()


def make_agent(config: Config, spec: EnvSpec) -> Agent:
    """Build discrete CQL for an environment.

    Args:
        config: the hyper-parameters.
        spec: the environment's spec.

    Returns:
        The `Agent`, fed by an `OfflineFeed`.
    """

    def regulariser(q: Array, batch: Transition):
        gap = conservative_gap(q, batch.action)
        return config.cql_alpha * gap, {"cql_gap": gap}

    learner = make_q_learner(config, spec, regulariser=regulariser)

    def act(state, obs: Array, key: PRNGKey) -> tuple[Array, dict]:
        """Greedy actions [N] int32; extras is empty."""
        del key
        return jnp.argmax(learner.q_values(state, obs), axis=-1).astype(jnp.int32), {}

    return Agent(init=learner.init, act=act, update=learner.update,
                 policy=learner.greedy_policy, feed=OfflineFeed(batch_size=config.batch_size))


__all__ = ["Config", "conservative_gap", "make_agent"]
