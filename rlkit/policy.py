"""A trained policy from a run directory, for using it outside rlkit's drivers.

    policy = rlkit.load_policy("runs/ppo-cartpole-20261130-101500")
    action = policy.act(obs)                         # the most probable action
    action = policy.act(obs, deterministic=False)    # sampled from the policy

`act` takes one observation (`spec.obs_shape`) or a batch (`[N, *obs_shape]`) and returns actions
(an int, or int32 [N]), never probabilities. It runs the agent's `policy` function eagerly (no
compilation): fine for interactive use and small evaluations; training and bulk evaluation
belong to the drivers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rlkit.errors import require


@dataclass
class Policy:
    """One seed's trained policy.

    Attributes:
        experiment: the run's configuration (`rlkit.train.Experiment`).
        agent: the agent's pure functions (`rlkit.types.Agent`).
        agent_state: that seed's agent state (unbatched).
        spec: the environment's `EnvSpec` (observation shape and dtype, action count).
    """

    experiment: Any = field(repr=False)
    agent: Any = field(repr=False)
    agent_state: Any = field(repr=False)  # every parameter: far too long to print
    spec: Any
    seed: int = 0
    _rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self):
        self._rng = np.random.default_rng(self.seed)

    def __repr__(self) -> str:
        return (f"Policy(agent={self.experiment.agent!r}, env={self.experiment.env!r}, "
                f"seed={self.seed}, obs_shape={tuple(self.spec.obs_shape)}, "
                f"num_actions={self.spec.num_actions})")

    def probabilities(self, obs) -> np.ndarray:
        """Action probabilities: [A] for one observation, [N, A] for a batch [N, *obs_shape].

        Raises:
            RlkitError: `obs` has neither the env's observation shape nor a batch of it, or
                holds non-finite values.
        """
        obs = np.asarray(obs, dtype=self.spec.obs_dtype)
        shape = tuple(self.spec.obs_shape)
        single = obs.shape == shape
        require(single or obs.shape[1:] == shape, "obs",
                f"has shape {obs.shape}; the policy takes {shape} or a batch [N, *{shape}]")
        require(bool(np.isfinite(obs).all()), "obs",
                "holds NaN or infinite values; an action chosen from them would be meaningless")
        probs = np.asarray(self.agent.policy(self.agent_state, obs[None] if single else obs),
                           np.float64)
        return probs[0] if single else probs

    def act(self, obs, deterministic: bool = True):
        """Actions for `obs`: the most probable one, or one sampled from the policy.

        Args:
            obs: one observation (`spec.obs_shape`) or a batch [N, *obs_shape].
            deterministic: take the argmax of the probabilities (ties: the lowest action);
                otherwise sample (from this policy's own generator, seeded by `seed`).

        Returns:
            An int for one observation, int32 [N] for a batch.
        """
        probs = self.probabilities(obs)
        batch = np.atleast_2d(probs)
        if deterministic:
            actions = batch.argmax(axis=-1)
        else:
            cumulative = np.cumsum(batch / batch.sum(axis=-1, keepdims=True), axis=-1)
            draws = self._rng.random((batch.shape[0], 1))
            actions = np.minimum((cumulative < draws).sum(axis=-1), batch.shape[-1] - 1)
        actions = actions.astype(np.int32)
        return int(actions[0]) if probs.ndim == 1 else actions


def load_policy(run_dir: str | Path, seed_index: int = 0) -> Policy:
    """The trained policy of seed `seed_index` of the run in `run_dir` (its newest checkpoint).

    Raises:
        RlkitError: no run there, no checkpoint yet, or no such seed.
    """
    from rlkit.train import load_policy as load_agent

    experiment, agent, agent_state = load_agent(run_dir, seed_index)
    from rlkit import registry

    entry = registry.env_entry(experiment.env)
    if entry.kind == "host":
        probe = registry.make_host_env(experiment.env, experiment.env_config, 1, 0)
        spec = probe.spec
        probe.close()
    else:
        spec = registry.make_env(experiment.env, experiment.env_config).spec
    return Policy(experiment, agent, agent_state, spec, seed=seed_index)
