"""Agents: one readable module per algorithm, each exposing `Config`, `State` and `make_agent`.

`AGENTS` maps CLI names to modules (imported lazily by `rlkit.registry`).
"""

AGENTS: dict[str, tuple[str, str]] = {
    "ppo": ("agents.ppo", "PPO with clipped surrogate and GAE (Schulman et al. 2017)"),
    "dqn": ("agents.dqn", "double DQN with a target network and epsilon-greedy exploration"),
}
