"""H2O: the reduction from hybrid RL to offline RL (Amortila et al. 2024), for any offline agent.

    for t = 1, 2, ...:
        pi_t <- OffAlg(D_off U D_on)          # the offline agent's updates on the union
        roll out pi_t for n episodes, add them to D_on

The paper proves that an offline algorithm whose guarantee scales with the coverage of the
comparator by the mixed data, plus an on-policy term under its own occupancy, becomes a sample
efficient hybrid algorithm this way (HyGLOW is the instance with the clipped density-ratio
minimax learner, `agents.glow`). `make_h2o_agent` turns any `OfflineFeed` agent (BC, CQL, IQL)
into a `RoundFeed` agent that `rlkit.loops.rounds` runs; on the command line, `--h2o` does it:

    python -m rlkit.train cql --dataset DIR --h2o --h2o-episodes-per-round 4

Choices: OffAlg is not refit from scratch each round; it continues from the previous round's
parameters with `updates_per_round` more updates (the usual practical reading, and what the
neural HyGLOW does). Batches draw from the union in proportion to the two sources' sizes unless
`offline_fraction` fixes the share. Rollouts use the agent's `act` (greedy for CQL and IQL's Q
argmax, sampled for BC).
"""

from __future__ import annotations

from rlkit.errors import require, require_int_at_least
from rlkit.types import Agent, EnvSpec, OfflineFeed, RoundFeed


def make_h2o_agent(agent: Agent, spec: EnvSpec, *, episodes_per_round: int = 4,
                   updates_per_round: int = 100, buffer_episodes: int = 5_000,
                   offline_fraction: float | None = None) -> Agent:
    """Wrap an offline agent into H2O's rounds.

    Args:
        agent: an agent with an `OfflineFeed` (its batch size is kept).
        spec: the environment's spec (a round rolls out `max_episode_steps` steps per episode).
        episodes_per_round: episodes of pi_t per round.
        updates_per_round: the offline agent's updates per round.
        buffer_episodes: online episodes kept.
        offline_fraction: share of each batch from the dataset, or None (proportional).

    Returns:
        The same functions with a `RoundFeed` that needs a dataset.
    """
    require(isinstance(agent.feed, OfflineFeed), "--h2o",
            f"wraps offline agents (bc, cql, iql); this agent's feed is "
            f"{type(agent.feed).__name__}")
    require_int_at_least(episodes_per_round, "--h2o-episodes-per-round", 1)
    require_int_at_least(updates_per_round, "--h2o-updates-per-round", 1)
    require_int_at_least(buffer_episodes, "buffer_episodes", 1)
    require(offline_fraction is None or 0.0 <= offline_fraction <= 1.0, "offline_fraction",
            f"must be in [0, 1] or None, got {offline_fraction}")
    feed = RoundFeed(num_envs=episodes_per_round, episode_length=spec.max_episode_steps,
                     updates_per_round=updates_per_round, batch_size=agent.feed.batch_size,
                     buffer_episodes=buffer_episodes, offline_fraction=offline_fraction,
                     uses_dataset=True)
    return agent._replace(feed=feed)


__all__ = ["make_h2o_agent"]
