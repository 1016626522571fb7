"""DQN with the double-DQN target: Mnih et al. 2015 (Nature), van Hasselt et al. 2016 (AAAI).

Idea: fit Q(s, a) by regressing on bootstrapped one-step targets sampled uniformly from a replay
buffer, with a slowly updated copy of the network (the target network) providing the bootstrap.
Double DQN (van Hasselt et al. 2016, eq. 4) picks the next action with the online network and
evaluates it with the target network, which removes most of the max-operator's overestimation:

    y = r + gamma * (1 - terminated) * Q_target(s', argmax_a Q_online(s', a))

The agent acts epsilon-greedily, with epsilon annealed linearly, and reports the greedy policy.

Deviations from the papers, and why:

* Adam (as CleanRL and most modern ports) instead of the Nature paper's RMSProp, and the squared
  TD error by default with gradients clipped by global norm (`max_grad_norm`). The Nature paper's
  error clipping, i.e. the Huber loss (delta 1), is `loss="huber"`: it suits clipped Atari rewards
  but learns slowly where returns are large (CartPole's reach 100 with gamma 0.99: at 200k steps
  Huber plateaued near 40-140 where MSE reached 300-500).
* `double=False` gives the Nature target `r + gamma * max_a Q_target(s', a)`.
* Truncated transitions (time limits) bootstrap from the true next observation; only terminated
  ones do not (Pardo et al. 2018). The papers treated every episode end as terminal.
* The target network is updated every `target_update_every` *updates* (not env steps) as
  `target <- tau * online + (1 - tau) * target`; `tau = 1` is the papers' hard copy, and
  `target_update_every = 1` with a small `tau` is Polyak averaging.
* The epsilon schedule is keyed on `State.env_steps`, which `update` advances by
  `num_envs * train_every` per call: `act` cannot change the state, and the driver calls `update`
  once per `train_every` iterations of `num_envs` env steps (`rlkit.types.ReplayFeed`). So the
  counter measures env steps since learning started, and epsilon stays at `epsilon_start` while
  the buffer fills up to `learning_starts` (the papers anneal from step 0; with
  `epsilon_start = 1` both explore uniformly during warm-up).
* The replay buffer stores `next_obs` beside `obs` (simple, twice the memory of frame stacking).

The network, the TD update and the epsilon-greedy `act` live in `rlkit.qlearning`, which Hy-Q
and CQL share; this module is DQN's configuration and feed.

Metrics returned by `update` (float32 scalars):

* `loss` (= `td_loss` here): the mean half-squared (or Huber) TD error of the batch, before the
  step.
* `q_mean`: mean Q(s, a) of the sampled actions; drifting far above plausible returns is
  overestimation.
* `target_mean`: mean bootstrapped target y.
* `td_abs_mean`: mean |Q(s, a) - y|.
* `grad_norm`: global gradient norm before clipping.
* `epsilon`: the exploration rate `act` uses after this update.
* `env_steps`: env steps since learning started, as counted for the epsilon schedule.
"""

from __future__ import annotations

from dataclasses import dataclass

from rlkit.errors import RlkitError
from rlkit.qlearning import OnlineQConfig, QNetwork, State, epsilon_schedule, make_online_q_agent
from rlkit.types import Agent, EnvSpec


@dataclass(frozen=True)
class Config(OnlineQConfig):
    """DQN hyper-parameters. The defaults learn CartPole and small toy MDPs, whatever the budget."""

    def validate(self, spec: EnvSpec) -> None:
        """Check the config against an environment; raises `RlkitError` naming the problem."""
        if spec.num_actions < 1:
            raise RlkitError(
                f"env {spec.name!r}: DQN needs discrete actions, got "
                f"num_actions={spec.num_actions}."
            )


def make_agent(config: Config, spec: EnvSpec) -> Agent:
    """Build DQN for an environment.

    Args:
        config: the hyper-parameters.
        spec: the environment's spec (observation shape and dtype, number of actions).

    Returns:
        The `Agent` (init, act, update, policy) fed by a `ReplayFeed`.
    """
    config.validate(spec)
    feed = config.replay_feed()
    return make_online_q_agent(config, spec, feed)


__all__ = ["Config", "QNetwork", "State", "epsilon_schedule", "make_agent"]
