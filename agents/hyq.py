"""Hy-Q: Song, Zhou, Sekhari, Bagnell, Krishnamurthy and Sun 2023, "Hybrid RL: Using Both Offline
and Online Data Can Make RL Efficient" (ICLR 2023).

Idea: Q-learning (fitted Q iteration in the analysis) where every regression batch mixes the
offline dataset and the data the agent collects itself, in a fixed proportion (half and half in
the paper). The offline data covers a good policy's state distribution; the online data covers the
learner's own, which is where a Bellman error would mislead it. With both, Q-learning needs neither
an exploration bonus nor the coverage assumptions of purely offline or purely online methods: the
paper proves it efficient when the offline data supports a high-quality policy and the MDP has
bounded bilinear rank. Hy-Q is the baseline HyGLOW and FTPedel are measured against.

The implementation is DQN's machinery (`rlkit.qlearning`: double-DQN target, target network,
Adam) with a hybrid `ReplayFeed`: each batch holds exactly `round(offline_fraction *
batch_size)` dataset rows and the rest from the online replay buffer (`rlkit.data.hybrid`).
Train it with `python -m rlkit.train hyq --env ENV --dataset DIR`.

Choices where the paper leaves room, and why:

* Rollouts are greedy by default (`epsilon_start = epsilon_end = 0`), as in the paper's
  algorithm, which explores only through the online data its greedy policies collect. Set the
  epsilon fields for epsilon-greedy rollouts.
* The paper's analysis refits Q from scratch on all data every round (FQI); like its neural
  experiments this uses incremental gradient steps with a target network.
* `offline_fraction` may follow a linear schedule (`offline_fraction_end`,
  `offline_fraction_steps`, in driver iterations), as in offline-to-online work that anneals
  towards online data; the paper keeps it at 0.5.
* Updates start once the online buffer holds `learning_starts` transitions (default one batch),
  so online rows never repeat a handful of transitions.

Metrics: those of DQN (`loss`, `q_mean`, `target_mean`, `td_abs_mean`, `grad_norm`, `epsilon`,
`env_steps`) plus `offline_fraction`, the fraction of the batch drawn from the dataset.
"""

from __future__ import annotations

from dataclasses import dataclass

from rlkit.errors import require
from rlkit.qlearning import OnlineQConfig, make_online_q_agent, require_int_at_least
from rlkit.types import Agent, EnvSpec


@dataclass(frozen=True)
class Config(OnlineQConfig):
    """Hy-Q hyper-parameters: DQN's plus the offline share of each batch."""

    learning_starts: int = 128
    """Online transitions stored before the first update (batch_size <= it <= buffer_size)."""
    epsilon_start: float = 0.0
    """Exploration rate when learning starts (0: the paper's greedy rollouts)."""
    epsilon_end: float = 0.0
    """Exploration rate after the decay."""
    epsilon_decay_steps: int = 0
    """Env steps over which epsilon decays linearly (0: constant epsilon_end)."""
    offline_fraction: float = 0.5
    """Share of each batch drawn from the offline dataset (the paper's 0.5), in [0, 1]."""
    offline_fraction_end: float | None = None
    """If set, the share moves linearly to this value over offline_fraction_steps iterations."""
    offline_fraction_steps: int = 0
    """Driver iterations over which offline_fraction moves to offline_fraction_end."""

    def __post_init__(self):
        super().__post_init__()
        for name in ("offline_fraction", "offline_fraction_end"):
            value = getattr(self, name)
            require(value is None or 0.0 <= value <= 1.0, name,
                    f"must be in [0, 1], got {value}.")
        require_int_at_least(self.offline_fraction_steps, "offline_fraction_steps", 0)
        # A schedule over 0 steps never moves (feed_fraction keeps the start value).
        scheduled = bool(self.offline_fraction_end) and self.offline_fraction_steps > 0
        require(self.offline_fraction > 0 or scheduled,
                "offline_fraction", "is 0 with no schedule, so Hy-Q would never see the dataset; "
                "use dqn for purely online learning.")


def make_agent(config: Config, spec: EnvSpec) -> Agent:
    """Build Hy-Q for an environment.

    Args:
        config: the hyper-parameters.
        spec: the environment's spec.

    Returns:
        The `Agent`, fed by a hybrid `ReplayFeed` (the driver needs a dataset).
    """
    feed = config.replay_feed(
        offline_fraction=config.offline_fraction,
        offline_fraction_end=config.offline_fraction_end,
        offline_fraction_steps=config.offline_fraction_steps,
    )
    return make_online_q_agent(config, spec, feed)


__all__ = ["Config", "make_agent"]
