"""H2O: the reduction from hybrid RL to offline RL (Amortila et al. 2024), for any offline agent.

    for t = 1, 2, ...:
        pi_t <- OffAlg(D_off U D_on)          # the offline agent's updates on the union
        roll out pi_t for n episodes, add them to D_on
    output: the uniform mixture of pi_1..pi_T

What the paper proves, and for which learners: an offline algorithm whose guarantee scales with
the coverage of the comparator by the mixed data, plus an on-policy term under its own
occupancy, becomes a sample-efficient hybrid algorithm this way (Alg. 3, Thm F.6). The paper
shows this for its own offline learners: the clipped density-ratio minimax learner (MABO-style;
HyGLOW, `agents.glow`), fitted Q-iteration and model-based MLE. It does not for BCQ, CQL, IQL or BC:
with those (`--h2o` on the command line) the loop is a heuristic, with no guarantee from the
paper. The guarantee is on the uniform mixture of the rounds' policies and on cumulative regret,
which the round driver logs (`cumulative_regret`, `mixture_return`) on envs with an exact model.

`make_h2o_agent` turns any row-fed `OfflineFeed` agent (BC, BCQ, CQL, IQL; not DT, whose context
windows H2O's rounds do not make) into a `RoundFeed` agent that
`rlkit.loops.rounds` runs; on the command line, `--h2o` does it:

    python -m rlkit.train cql --dataset DIR --h2o                      # practical preset
    python -m rlkit.train cql --dataset DIR --h2o --h2o-preset paper   # the paper's loop

Presets:

* "practical" (the default): 4 episodes per round; OffAlg continues from the previous round's
  parameters with `updates_per_round` more updates (warm start); batches draw from the whole
  dataset and the online data in proportion to their sizes unless `offline_fraction` fixes it.
* "paper": one episode per round; round t's fit sees the dataset's first t - 1 episodes and the
  t - 1 online ones, half and half (Alg. 3 line 8); OffAlg is re-initialised before every round
  (run afresh on the round's data), then takes `updates_per_round` updates.

The paper is silent on how many gradient steps an iterative learner such as CQL should take per
round (it treats OffAlg as an oracle); `updates_per_round` is ours. Rollouts use the agent's `act`
(greedy for CQL and IQL's Q argmax, sampled for BC).

The paper's analysis assumes rewards in [0, 1] and returns at most 1, with value functions in
[0, 1] (`outside_assumptions`): on other MDPs (DeepSea's negative move costs, noisy rewards) the
reduction runs but the guarantees do not apply, and a run says so once.
"""

from __future__ import annotations

from rlkit.errors import require, require_int_at_least
from rlkit.types import Agent, EnvSpec, OfflineFeed, RoundFeed

PRESETS = ("practical", "paper")


def make_h2o_agent(agent: Agent, spec: EnvSpec, *, episodes_per_round: int | None = None,
                   updates_per_round: int = 100, buffer_episodes: int = 5_000,
                   offline_fraction: float | None = None, preset: str = "practical") -> Agent:
    """Wrap an offline agent into H2O's rounds.

    Args:
        agent: an agent with an `OfflineFeed` (its batch size is kept).
        spec: the environment's spec (a round rolls out `max_episode_steps` steps per episode).
        episodes_per_round: episodes of pi_t per round; None: 4 (practical) or 1 (paper).
        updates_per_round: the offline agent's updates per round.
        buffer_episodes: online episodes kept.
        offline_fraction: share of each batch from the dataset, or None (proportional);
            practical preset only (the paper's is one half).
        preset: "practical" or "paper" (see the module docstring).

    Returns:
        The same functions with a `RoundFeed` that needs a dataset.

    Raises:
        RlkitError: a non-offline agent or a sequence one (dt), a bad count, fraction or
            preset (one line naming it).
    """
    require(isinstance(agent.feed, OfflineFeed), "--h2o",
            f"wraps offline agents (bc, bcq, cql, iql); this agent's feed is "
            f"{type(agent.feed).__name__}")
    require(not agent.feed.context_length, "--h2o",
            "wraps offline agents that learn from rows (bc, bcq, cql, iql); dt learns from context "
            "windows of whole episodes, which H2O's rounds do not make; drop --h2o")
    require(preset in PRESETS, "--h2o-preset",
            f"must be 'practical' or 'paper', got {preset!r}")
    paper = preset == "paper"
    if episodes_per_round is None:
        episodes_per_round = 1 if paper else 4
    require_int_at_least(episodes_per_round, "--h2o-episodes-per-round", 1)
    require_int_at_least(updates_per_round, "--h2o-updates-per-round", 1)
    require_int_at_least(buffer_episodes, "buffer_episodes", 1)
    require(offline_fraction is None or 0.0 <= offline_fraction <= 1.0, "offline_fraction",
            f"must be in [0, 1] or None, got {offline_fraction}")
    require(not (paper and offline_fraction is not None), "offline_fraction",
            "the paper preset mixes half and half; leave it None")
    feed = RoundFeed(num_envs=episodes_per_round, episode_length=spec.max_episode_steps,
                     updates_per_round=updates_per_round, batch_size=agent.feed.batch_size,
                     buffer_episodes=buffer_episodes, offline_fraction=offline_fraction,
                     uses_dataset=True, offline_schedule="paper" if paper else "all",
                     refit=paper)
    return agent._replace(feed=feed)


def outside_assumptions(model, optimal_return: float) -> str | None:
    """Why a tabular MDP lies outside the paper's assumptions (rewards in [0, 1], returns at
    most 1), or None when it does not.

    Args:
        model: the env's `rlkit.planning.TabularModel`.
        optimal_return: its exact optimal return J*.
    """
    import numpy as np

    rewards = np.asarray(model.rewards)
    reasons = []
    if rewards.min() < 0:
        reasons.append(f"negative rewards (min {rewards.min():.3g})")
    if rewards.max() > 1:
        reasons.append(f"rewards above 1 (max {rewards.max():.3g})")
    if optimal_return > 1 + 1e-6:
        reasons.append(f"an optimal return above 1 ({optimal_return:.3g})")
    return ", ".join(reasons) or None


__all__ = ["PRESETS", "make_h2o_agent", "outside_assumptions"]
