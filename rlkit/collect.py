"""`python -m rlkit.collect --env ENV --policy {random, optimal, RUN_DIR, mixture} --episodes N
--out DIR [--checkpoint RUN_DIR|optimal] [--epsilon E] [--seed S] [--num-envs N] [--overwrite]
[--no-progress] [--env-config.FIELD VALUE ...]`

Rolls out a behaviour policy for N whole episodes and writes them as an offline dataset
(`rlkit.data.dataset`, written atomically), with the behaviour policy's quality in the metadata.

Behaviour policies (--policy):

  random    uniform random actions.
  optimal   the exact optimal policy of the env's model (`rlkit.planning.value_iteration`), for
            environments with an exact model (chain, riverswim, combination-lock, deepsea,
            gridworld, tabular): expert data without training.
  RUN_DIR   the agent of a `python -m rlkit.train` run (its newest checkpoint, seed 0); actions
            are sampled from `agent.policy` (one-hot for value-based agents, so greedy).
  mixture   each step, a uniform random action with probability --epsilon, else the action of
            the expert given by --checkpoint (a RUN_DIR, or `optimal`).

--epsilon mixes uniform actions into optimal and RUN_DIR policies too (default 0). Without --env
the run's environment and env config are used; with both, they must name the same env.

Datasets of chosen quality, as in the offline-RL literature (D4RL, Fu et al. 2020):

  expert   --policy optimal (or a fully trained RUN_DIR), epsilon 0
  medium   a partially trained RUN_DIR (D4RL: about a third of expert return), or a mixture
           --policy mixture --checkpoint optimal --epsilon 0.5 on toy MDPs
  random   --policy random (the same as --policy mixture --checkpoint optimal --epsilon 1)

For example::

  python -m rlkit.collect --env chain --policy optimal --episodes 1000 --out data/chain-expert
  python -m rlkit.collect --env chain --policy mixture --checkpoint optimal --epsilon 0.5 \\
      --episodes 1000 --out data/chain-medium
  python -m rlkit.collect --policy runs/dqn-cartpole --episodes 100 --out data/cartpole-dqn

Every dataset records the env id and parameters, the behaviour policy (`behaviour_policy`, e.g.
"mixture(epsilon=0.5) of optimal") and its return measured over the collected episodes (mean and
population standard deviation). `extra` holds `seed`, `epsilon` (the probability of a uniform
action: 1 for random), `episodes`, `num_envs`, `expert`, and for environments with an exact
model the exact returns from `rlkit.planning`: `exact_return` J(pi) of the behaviour policy
((1 - epsilon) * expert + epsilon * uniform, as a table), `optimal_return` J*, `random_return`
J(uniform) and D4RL's `normalised_score` 100 * (J - J_random) / (J* - J_random).

How episodes are collected:

* JAX environments: `--num-envs` episodes (default min(N, 64), fewer where a batch's
  observations would pass 1 GiB) run side by side in one compiled program, the drivers'
  evaluation scan (`rlkit.loops.on_device.run_episodes`) over `max_episode_steps` steps without
  auto-reset; a `valid` mask keeps each episode's rows until it ends. Batches repeat until N
  episodes; the last batch's surplus episodes are dropped.
* Host environments (gym:..., procgen:...): `--num-envs` environments (default min(N, 8); each
  may be a process) step together. Only the first N episodes started are kept, each appended
  when it ends, so the dataset does not favour short episodes; the rest are discarded.

Either way the rows are episode-major (all of episode 0, then episode 1, ...), what Minari export
needs, and `next_obs` is the true next observation. The dataset is held in memory until it is
saved: once the first episodes tell their length, a collection whose projected size (twice the
dataset, while it is assembled) exceeds the memory available is refused in one line, with the
number of episodes that would fit (`MemoryCheck`). Every input error is one line `error: ...`
naming the flag and the fix, exit status 2, before anything is compiled where possible.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from rlkit import registry
from rlkit.errors import INTERRUPTED, RlkitError, one_line_parse_error, require, run_cli

if TYPE_CHECKING:
    from rlkit.data.dataset import Dataset

_JAX_NUM_ENVS, _HOST_NUM_ENVS = 64, 8
CHECKPOINT_POLICIES = ("mixed", "suboptimal")  # behaviours read from a run's kept checkpoints
_ROLLOUT_BYTES = 1 << 30  # default JAX batches keep their observations under 1 GiB


@dataclass(frozen=True)
class Options:
    """Collect an offline dataset by rolling out a behaviour policy."""

    policy: str
    """random, optimal (exact optimal policy of a toy MDP), mixture, mixed or suboptimal (with
    --checkpoint), or the directory of a python -m rlkit.train run."""
    out: str
    """Dataset directory to write (must not exist unless --overwrite)."""
    env: str | None = None
    """Environment name (default: the env of the run given as --policy / --checkpoint)."""
    episodes: int | None = None
    """Number of whole episodes to collect (or --transitions)."""
    transitions: int | None = None
    """Collect exactly this many transitions (or --episodes): whole episodes until there are
    enough, then the first N rows, the cut episode marked truncated."""
    checkpoint: str | None = None
    """The expert of --policy mixture (a run directory, or `optimal`), or the training run of
    --policy mixed / suboptimal."""
    target_fraction: float = 0.75
    """--policy mixed: take the run's kept checkpoint whose evaluated return is nearest this
    fraction of the final checkpoint's (Mediratta et al. 2024: 0.75)."""
    epsilon: float = 0.0
    """Probability of a uniform random action at each step instead of the expert's."""
    seed: int = 0
    """Random seed of the environments and the action sampling."""
    num_envs: int | None = None
    """Episodes run side by side (default: min(episodes, 64) for JAX envs, fewer if their
    observations would pass 1 GiB; min(episodes, 8) for host envs)."""
    overwrite: bool = False
    """Replace an existing dataset at --out (the old one stays readable until the new one is
    complete)."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self):
        _check_numbers(self.episodes, self.epsilon, self.num_envs, self.seed, self.transitions)
        require(0.0 < self.target_fraction <= 1.0, "--target-fraction",
                f"must lie in (0, 1], got {self.target_fraction}")


def _check_numbers(episodes: int | None, epsilon: float, num_envs: int | None, seed: int,
                   transitions: int | None = None) -> None:
    require(isinstance(seed, int) and 0 <= seed < 2**32, "--seed",
            f"must be in [0, 2**32), got {seed}; JAX and numpy seeds are 32-bit")
    require((episodes is None) != (transitions is None), "--episodes",
            "pass either --episodes N (whole episodes) or --transitions N (exactly N rows), "
            "not both" if episodes is not None else "or --transitions is required, e.g. "
            "--episodes 100")
    require(episodes is None or (isinstance(episodes, int) and episodes >= 1), "--episodes",
            f"must be at least 1, got {episodes}")
    require(transitions is None or (isinstance(transitions, int) and transitions >= 1),
            "--transitions", f"must be at least 1, got {transitions}")
    require(0.0 <= epsilon <= 1.0, "--epsilon",
            f"is a probability and must lie in [0, 1], got {epsilon}")
    require(num_envs is None or num_envs >= 1, "--num-envs",
            f"must be at least 1 (or omitted for the default), got {num_envs}")


# --------------------------------------------------------------------------------------------
# Behaviour policies
# --------------------------------------------------------------------------------------------


class Behaviour(NamedTuple):
    """The policy that collects the data: `(1 - epsilon) * expert + epsilon * uniform`.

    Attributes:
        text: `DatasetInfo.behaviour_policy`, e.g. "mixture(epsilon=0.3) of optimal".
        expert: None (uniform), "optimal", or the run directory of a trained agent.
        epsilon: probability of a uniform action (1.0 for the random policy).
        agent: the run's `Agent` (for a run directory), else None.
        agent_state: its unbatched state, else None.
        optimal_table: [H, S, A] the one-hot optimal policy (for "optimal"), else None.
    """

    text: str
    expert: str | None
    epsilon: float
    agent: Any = None
    agent_state: Any = None
    optimal_table: Any = None


def _expert_source(policy: str, checkpoint: str | None) -> tuple[str | None, str]:
    """The expert ("optimal", a run directory or None) and the flag that named it."""
    require(isinstance(policy, str) and bool(policy), "--policy",
            "is required: random, optimal, mixture (with --checkpoint) or a run directory")
    if policy == "mixture":
        require(checkpoint is not None, "--checkpoint",
                "--policy mixture needs an expert: pass --checkpoint RUN_DIR (a python -m "
                "rlkit.train run) or --checkpoint optimal")
        return checkpoint, "--checkpoint"
    if policy in CHECKPOINT_POLICIES:
        require(checkpoint is not None and checkpoint != "optimal", "--checkpoint",
                f"--policy {policy} replays the checkpoints of a training run: pass "
                "--checkpoint RUN_DIR (a python -m rlkit.train run)")
        return checkpoint, "--checkpoint"
    require(checkpoint is None, "--checkpoint",
            f"names the expert of --policy mixture, mixed or suboptimal and is not used with "
            f"--policy {policy}; drop it, or pass one of those")
    if policy == "random":
        return None, "--policy"
    return policy, "--policy"


def _read_run(run_dir: str, flag: str):
    """The `rlkit.train.Experiment` of a run directory (config.yaml only: nothing is built)."""
    from rlkit.train import load_experiment

    path = Path(run_dir)
    require(path.is_dir(), flag,
            f"{run_dir!r} is not {'random, optimal, mixture nor ' if flag == '--policy' else ''}"
            "an existing run directory; pass the directory of a python -m rlkit.train run"
            + (" or optimal" if flag == "--checkpoint" else ""))
    require((path / "config.yaml").is_file(), flag,
            f"{run_dir} has no config.yaml, so it is not a run directory; pass the directory "
            "of a python -m rlkit.train run")
    require((path / "checkpoints").is_dir() and any((path / "checkpoints").iterdir()), flag,
            f"{run_dir} has no checkpoint yet; train it (or --resume it) until one is saved")
    return load_experiment(path / "config.yaml")


def _resolve_env(env_name: str | None, env_config: Any, policy: str, checkpoint: str | None):
    """(env name, env config, the run's Experiment or None, expert, flag) from the inputs."""
    expert, flag = _expert_source(policy, checkpoint)
    experiment = None
    if expert is not None and expert != "optimal":
        experiment = _read_run(expert, flag)
    if env_name is None:
        require(experiment is not None, "--env",
                "is required, e.g. --env chain (or pass a run directory as --policy / "
                "--checkpoint to collect in the run's env)")
        env_name = experiment.env
    elif experiment is not None:
        require(env_name == experiment.env, "--env",
                f"{env_name!r} differs from {experiment.env!r}, the env that {expert} was "
                f"trained on; drop --env to collect in the run's env, or pass a run trained on "
                f"{env_name}")
    entry = registry.env_entry(env_name)
    if env_config is None:
        same = experiment is not None and experiment.env == env_name
        env_config = experiment.env_config if same else entry.default_config()
    return env_name, env_config, experiment, expert, flag


def _spec_of(env_name: str, env_config: Any):
    if registry.env_entry(env_name).kind == "host":
        probe = registry.make_host_env(env_name, env_config, 1, 0)
        try:
            return probe.spec
        finally:
            probe.close()
    return registry.make_env(env_name, env_config).spec


def _behaviour(policy: str, expert: str | None, flag: str, epsilon: float, env_name: str,
               env_config: Any, env: Any, spec: Any, experiment: Any,
               step: int | None = None) -> Behaviour:
    """Check the expert against the env (before anything compiles), then load it (checkpoint
    `step` of a run; None: its newest)."""
    if expert is None:
        return Behaviour("random", None, 1.0)
    mixed = policy == "mixture" or epsilon > 0
    if expert == "optimal":
        require(env is not None and env.model is not None and env.state_index is not None, flag,
                f"optimal needs an env with an exact model, and {env_name!r} has none; use "
                f"--policy random, a trained run directory, or an env with a model (chain, "
                f"riverswim, combination-lock, deepsea, gridworld, tabular)")
        from rlkit import planning
        from rlkit.loops.on_device import solve_model

        table = solve_model(env, env.default_params, lambda model: planning.value_iteration(
            model, horizon=spec.max_episode_steps).policy)
        text = f"mixture(epsilon={epsilon:g}) of optimal" if mixed else "optimal"
        return Behaviour(text, "optimal", epsilon, optimal_table=table)

    same_config = experiment.env_config == env_config
    run_spec = spec if same_config else _spec_of(experiment.env, experiment.env_config)
    require(run_spec.num_actions == spec.num_actions, flag,
            f"{expert} was trained with {run_spec.num_actions} actions but the env has "
            f"{spec.num_actions} with these --env-config values; drop the --env-config "
            "overrides that change the action count")
    require(tuple(run_spec.obs_shape) == tuple(spec.obs_shape)
            and run_spec.obs_dtype == spec.obs_dtype, flag,
            f"{expert} was trained on observations {tuple(run_spec.obs_shape)} "
            f"{run_spec.obs_dtype} but the env emits {tuple(spec.obs_shape)} {spec.obs_dtype} "
            "with these --env-config values; drop the overrides that change the observations")
    from rlkit.train import load_policy

    _, agent, agent_state = load_policy(expert, 0, step)
    name = f"{expert} seed 0" + ("" if step is None else f" checkpoint {step}")
    text = f"mixture(epsilon={epsilon:g}) of {name}" if mixed else name
    return Behaviour(text, expert, epsilon, agent=agent, agent_state=agent_state)


def _exact_returns(env: Any, spec: Any, behaviour: Behaviour) -> dict[str, float]:
    """J(pi) of the behaviour policy, J*, J(uniform) and the normalised score, exactly."""
    from rlkit import planning
    from rlkit.loops.on_device import solve_model

    horizon = spec.max_episode_steps

    def returns(model, policy_state, epsilon):
        optimal = planning.value_iteration(model, horizon=horizon)
        uniform = planning.uniform_policy(model)
        if behaviour.expert is None:
            expert = uniform
        elif behaviour.expert == "optimal":
            expert = optimal.policy  # [H, S, A]: an optimal policy may depend on the step
        elif behaviour.expert == "table":
            expert = behaviour.optimal_table
        else:
            expert = planning.policy_table(behaviour.agent.policy, policy_state, model)
        table = (1.0 - epsilon) * expert + epsilon * uniform
        return (planning.expected_return(model, table, horizon=horizon), optimal.optimal_return,
                planning.expected_return(model, uniform, horizon=horizon))

    # One compiled program: the planning scans run op by op (slowly) outside jit.
    exact, optimal, random = (float(x) for x in solve_model(
        env, env.default_params, returns, behaviour.agent_state, behaviour.epsilon))
    figures = {"exact_return": exact, "optimal_return": optimal, "random_return": random}
    # D4RL's normalisation; undefined when the uniform policy is already optimal.
    if optimal - random > 1e-6 * max(1.0, abs(optimal)):
        figures["normalised_score"] = 100.0 * (exact - random) / (optimal - random)
    return figures


# --------------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------------

# A collection holds every batch's rows, then their concatenation: twice the dataset at the peak.
_COPIES_AT_PEAK = 2


def available_memory() -> int | None:
    """Bytes this process can still allocate: `MemAvailable` of /proc/meminfo, lowered to the
    room left under a cgroup memory limit (v2 `memory.max`, v1 `memory.limit_in_bytes`) where
    a container sets one. None where neither can be read (not Linux)."""
    figures = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                figures.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                          "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            cap = Path(limit).read_text().strip()
            if cap != "max" and int(cap) < 2**60:  # "max" / 2**63: no limit
                figures.append(max(0, int(cap) - int(Path(usage).read_text())))
        except (OSError, ValueError):
            continue
    return min(figures) if figures else None


def transition_bytes(spec: Any) -> int:
    """Bytes of one stored transition: obs and next_obs, an int32 action, a float32 reward and
    the two bool flags."""
    obs = np.dtype(spec.obs_dtype).itemsize * math.prod(spec.obs_shape)
    return 2 * obs + 4 + 4 + 1 + 1


def _size(n: float) -> str:
    """Bytes for people: `25.7 GB`, `2.37 MB`."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f} bytes"


class MemoryCheck:
    """Refuses, in one line, a collection whose dataset will not fit in memory, as soon as the
    first episodes tell how long they are (a collection is held whole in memory, then saved).

    The dataset's size is projected from the mean length of the episodes collected so far:
    `episodes * mean length * transition_bytes`, held `_COPIES_AT_PEAK` times while assembled.
    It must fit in the memory that was available when the collection started.
    """

    def __init__(self, env_name: str, spec: Any, episodes: int | None,
                 transitions: int | None = None):
        self.env_name, self.episodes, self.transitions = env_name, episodes, transitions
        self.bytes_per_transition = transition_bytes(spec)
        self.available = available_memory()
        if transitions is not None and self.available is not None:
            # Known from the start; a last episode may run past it (at most one per env).
            needed = _COPIES_AT_PEAK * transitions * self.bytes_per_transition
            fits = int(self.available / (_COPIES_AT_PEAK * self.bytes_per_transition))
            require(needed <= self.available, "--transitions",
                    f"{transitions:,} transitions of {env_name} would need about "
                    f"{_size(needed)} of memory, more than the {_size(self.available)} "
                    f"available; collect at most {fits:,} per dataset, or free memory")

    def __call__(self, episodes_done: int, transitions_done: int) -> None:
        """Check the projection after `episodes_done` whole episodes of `transitions_done` rows.

        Raises:
            RlkitError: naming --episodes, the projected size, the available memory and how
                many episodes would fit.
        """
        if self.available is None or episodes_done == 0 or self.episodes is None:
            return
        mean_length = transitions_done / episodes_done
        dataset = self.episodes * mean_length * self.bytes_per_transition
        needed = _COPIES_AT_PEAK * dataset
        if needed <= self.available:
            return
        fits = int(self.available / (_COPIES_AT_PEAK * mean_length * self.bytes_per_transition))
        raise RlkitError(
            f"--episodes: {self.episodes:,} episodes of {self.env_name} would need about "
            f"{_size(needed)} of memory ({_size(dataset)} of transitions, "
            f"{mean_length:.4g} per episode over the first {episodes_done:,}, held "
            f"{_COPIES_AT_PEAK} times while assembled), more than the "
            f"{_size(self.available)} available; collect at most {fits:,} episodes per "
            "dataset (several datasets with different --seed), or free memory")


# --------------------------------------------------------------------------------------------
# Rollouts
# --------------------------------------------------------------------------------------------


def _jax_rollouts(env: Any, behaviour: Behaviour, episodes: int | None, num_envs: int,
                  seed: int, progress: Any, check_memory: MemoryCheck,
                  transitions: int | None = None):
    """Whole episodes of a JAX env, `num_envs` at a time in one compiled program (the drivers'
    evaluation scan, `rlkit.loops.on_device.run_episodes`): `episodes` of them, or batches until
    there are at least `transitions` rows.

    Returns:
        (columns, returns): a dict of episode-major numpy arrays [M, ...] (M transitions) and
        the [episodes] episode returns.
    """
    import jax
    import jax.numpy as jnp

    from rlkit.loops.on_device import make_episode_rollout

    spec, params = env.spec, env.default_params
    num_actions = spec.num_actions

    def expert_probs(policy_state, obs, env_state, t):
        """[B, A] the expert's action probabilities at step t."""
        if behaviour.expert is None:
            return jnp.full((obs.shape[0], num_actions), 1.0 / num_actions)
        if behaviour.expert in ("optimal", "table"):
            index = jax.vmap(env.state_index, in_axes=(0, None))(env_state, params)
            return policy_state[t, index]
        return behaviour.agent.policy(policy_state, obs)

    def action_logits(policy_args, obs, env_state, t):
        policy_state, epsilon = policy_args
        # Sampling from the mixed distribution is the per-step coin flip in one draw.
        probs = expert_probs(policy_state, obs, env_state, t)
        probs = (1.0 - epsilon) * probs + epsilon / num_actions
        return jnp.log(jnp.clip(probs, 1e-30, None))

    # The drivers' evaluation scan (no auto-reset), compiled once for every batch.
    rollout = make_episode_rollout(env, params, action_logits, num_envs)
    if behaviour.expert is None:
        policy_state = jnp.zeros(())
    elif behaviour.expert in ("optimal", "table"):
        policy_state = behaviour.optimal_table
    else:
        policy_state = behaviour.agent_state
    # An argument, not a constant: every epsilon shares one compiled program.
    epsilon = jnp.float32(behaviour.epsilon)
    key = jax.random.key(seed)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in
                                          ("obs", "action", "reward", "terminated", "truncated",
                                           "next_obs")}
    returns: list[np.ndarray] = []
    rows_done, batch = 0, 0
    while (batch * num_envs < episodes) if episodes is not None else (rows_done < transitions):
        keep = num_envs if episodes is None else min(num_envs, episodes - batch * num_envs)
        rows = jax.device_get(rollout((policy_state, epsilon), jax.random.fold_in(key, batch)))
        obs_sequence, action, reward, terminated, truncated, valid = (
            np.asarray(x)[:keep] for x in rows[:6]
        )
        # Guards envs whose own time limit disagrees with spec.max_episode_steps: an episode
        # still running after the last step is cut there, so every kept episode ends.
        truncated = truncated.copy()
        truncated[:, -1] |= valid[:, -1] & ~(terminated[:, -1] | truncated[:, -1])
        # Boolean masks select in C order: episode 0's rows, then episode 1's, ...
        parts["obs"].append(obs_sequence[:, :-1][valid])
        parts["next_obs"].append(obs_sequence[:, 1:][valid])
        parts["action"].append(action[valid])
        parts["reward"].append(reward[valid])
        parts["terminated"].append(terminated[valid])
        parts["truncated"].append(truncated[valid])
        batch_returns = np.where(valid, reward, 0.0).sum(axis=1, dtype=np.float64)
        returns.append(batch_returns)
        rows_done += int(valid.sum())
        check_memory(batch * num_envs + keep, rows_done)
        progress.advance(keep if episodes is not None else int(valid.sum()),
                         {"return": float(np.concatenate(returns).mean())})
        batch += 1
    columns = {name: np.concatenate(chunks) for name, chunks in parts.items()}
    return columns, np.concatenate(returns)


def _host_rollouts(host_env: Any, behaviour: Behaviour, episodes: int | None, seed: int,
                   progress: Any, check_memory: MemoryCheck, transitions: int | None = None):
    """Whole episodes of a `HostEnvironment` (same-step auto-reset), episode-major.

    Only the first `episodes` episodes started count: an environment whose finished episode
    was the last one needed goes on stepping (it steps with the others) but is no longer
    recorded. Stopping at the first N episodes to *finish* would favour short episodes.
    With `transitions` instead, every environment records until the finished episodes hold
    that many rows (the episodes still running then are dropped). Environments that report
    their level (procgen's `last_info["level_seed"]`) add a `level_seed` column.

    Returns:
        (columns, returns) as `_jax_rollouts`.
    """
    spec, num_envs = host_env.spec, host_env.num_envs
    num_actions, epsilon = spec.num_actions, behaviour.epsilon
    if behaviour.agent is not None:
        from rlkit.loops.host import make_host_policy

        policy = make_host_policy(behaviour.agent.policy)
    rng = np.random.default_rng(seed)
    counted = np.arange(num_envs) < (num_envs if episodes is None else episodes)  # recorded
    started = int(counted.sum())
    rows: list[list[tuple]] = [[] for _ in range(num_envs)]
    finished: list[dict[str, np.ndarray]] = []
    returns: list[float] = []
    rows_done = 0
    obs = host_env.reset(seed)
    while (len(finished) < episodes) if episodes is not None else (rows_done < transitions):
        level_seed = getattr(host_env, "last_info", {}).get("level_seed")
        if behaviour.agent is None:
            probs = np.full((num_envs, num_actions), 1.0 / num_actions)
        else:
            probs = np.asarray(policy(behaviour.agent_state, obs), np.float64)
        probs = (1.0 - epsilon) * probs + epsilon / num_actions
        probs /= probs.sum(axis=1, keepdims=True)
        draw = rng.random((num_envs, 1))
        action = np.minimum((probs.cumsum(axis=1) > draw).argmax(axis=1), num_actions - 1)
        action = action.astype(np.int32)
        step = host_env.step(action)
        for i in np.flatnonzero(counted):
            rows[i].append((obs[i], action[i], step.reward[i], step.terminated[i],
                            step.truncated[i], step.final_obs[i],
                            -1 if level_seed is None else level_seed[i]))
        for i in np.flatnonzero(counted & (step.terminated | step.truncated)):
            obs_i, action_i, reward_i, terminated_i, truncated_i, next_obs_i, level_i = zip(
                *rows[i], strict=True)
            finished.append({
                "obs": np.stack(obs_i), "action": np.asarray(action_i, np.int32),
                "reward": np.asarray(reward_i, np.float32),
                "terminated": np.asarray(terminated_i, bool),
                "truncated": np.asarray(truncated_i, bool), "next_obs": np.stack(next_obs_i),
            })
            if level_seed is not None:
                finished[-1]["level_seed"] = np.asarray(level_i, np.int32)
            returns.append(float(finished[-1]["reward"].sum()))
            rows_done += len(rows[i])
            check_memory(len(finished), rows_done)
            rows[i] = []
            if episodes is None or started < episodes:
                started += 1
            else:
                counted[i] = False
            progress.advance(1 if episodes is not None else len(obs_i),
                             {"return": float(np.mean(returns))})
            if episodes is None and rows_done >= transitions:
                break
        obs = step.obs
    columns = {name: np.concatenate([episode[name] for episode in finished])
               for name in finished[0]}
    return columns, np.asarray(returns)


# --------------------------------------------------------------------------------------------
# The Python API
# --------------------------------------------------------------------------------------------


class TablePolicy(NamedTuple):
    """A tabular behaviour policy for envs with an exact model (Python API only).

    Attributes:
        name: how `DatasetInfo.behaviour_policy` names it, e.g. "myopic".
        table: [H, S, A] action probabilities at each step and state of the env's model (e.g.
            an optimal policy of a modified model from `rlkit.planning`).
    """

    name: str
    table: Any


def collect(env_name: str | None, env_config: Any, policy: str | os.PathLike | TablePolicy,
            episodes: int | None, seed: int, epsilon: float = 0.0,
            checkpoint: str | os.PathLike | None = None, num_envs: int | None = None,
            progress: bool = False, transitions: int | None = None,
            target_fraction: float = 0.75) -> Dataset:
    """Roll out a behaviour policy for `episodes` whole episodes (or exactly `transitions`
    rows) into an in-memory dataset.

    Args:
        env_name: registry name ("chain", "gym:CartPole-v1", ...); None takes the env of the run
            given as `policy` / `checkpoint`.
        env_config: the env's config dataclass; None takes the run's (same env) or the default.
        policy: "random", "optimal", "mixture" (expert from `checkpoint`), "mixed" or
            "suboptimal" (checkpoints of the run `checkpoint`, see `checkpoint_plan`), a run
            directory, or a `TablePolicy` (envs with an exact model; `env_name` required).
        episodes: number of whole episodes (>= 1), or None with `transitions`.
        seed: seeds the environments and the action sampling.
        epsilon: probability of a uniform action at each step instead of the expert's.
        checkpoint: the expert of "mixture" (a run directory or "optimal"), the run of "mixed"
            and "suboptimal".
        num_envs: episodes run side by side (default min(episodes, 64) for JAX envs,
            min(episodes, 8) for host envs).
        progress: show a progress bar over episodes (transitions with `transitions`).
        transitions: exactly this many rows (`rlkit.data.dataset.first_transitions`: whole
            episodes, then the cut one marked truncated), or None with `episodes`.
        target_fraction: for "mixed", the fraction of the final checkpoint's return to aim at.

    Returns:
        A `Dataset` (path None) whose transitions are episode-major numpy arrays: obs / next_obs
        [M, *obs_shape], action [M] int32, reward [M] float32, terminated / truncated [M] bool;
        `level_seed` [M] int32 for procgen. Save it with `rlkit.data.dataset.save_dataset(path,
        dataset.transitions, dataset.info, level_seed=dataset.level_seed)`.

    Raises:
        RlkitError: for every bad input (named after its CLI flag), before any compilation
            except the loading of a checkpoint; a dataset that will not fit in memory
            (`MemoryCheck`), after the first batch of episodes.
    """
    from rlkit.data.dataset import Dataset, DatasetInfo, first_transitions
    from rlkit.progress import Progress
    from rlkit.types import Transition

    _check_numbers(episodes, epsilon, num_envs, seed, transitions)
    table_policy = policy if isinstance(policy, TablePolicy) else None
    if table_policy is not None:
        require(env_name is not None, "env_name", "is required with a TablePolicy")
        policy = "optimal"  # resolved like the optimal policy, replaced below
    policy = os.fspath(policy) if isinstance(policy, os.PathLike) else policy
    checkpoint = os.fspath(checkpoint) if isinstance(checkpoint, os.PathLike) else checkpoint
    env_name, env_config, experiment, expert, flag = _resolve_env(
        env_name, env_config, policy, checkpoint)
    entry = registry.env_entry(env_name)
    host = entry.kind == "host"
    env = None if host else registry.make_env(env_name, env_config)
    spec = _spec_of(env_name, env_config) if host else env.spec
    if num_envs is None:
        wanted = episodes if episodes is not None else transitions
        num_envs = min(wanted, _HOST_NUM_ENVS if host else _JAX_NUM_ENVS)
        if not host:  # a batch holds [num_envs, T + 1] observations on the device
            obs_bytes = np.dtype(spec.obs_dtype).itemsize * math.prod(spec.obs_shape)
            fits = _ROLLOUT_BYTES // ((spec.max_episode_steps + 1) * obs_bytes)
            num_envs = max(1, min(num_envs, fits))
    env_params = dataclasses.asdict(env_config) if dataclasses.is_dataclass(env_config) else {}
    # Built before collecting so that a config that is not JSON-able fails now, not after.
    info = DatasetInfo(env_id=env_name, env_params=env_params, obs_shape=tuple(spec.obs_shape),
                       obs_dtype=spec.obs_dtype, num_actions=spec.num_actions,
                       behaviour_policy="pending")
    plan = None
    if policy in CHECKPOINT_POLICIES:
        plan = checkpoint_plan(checkpoint, policy, target_fraction)
        behaviours = [_behaviour(policy, expert, flag, epsilon, env_name, env_config, env, spec,
                                 experiment, step=step) for step in plan.steps]
    else:
        behaviours = [_behaviour(policy, expert, flag, epsilon, env_name, env_config, env, spec,
                                 experiment)]
    if table_policy is not None:
        import jax.numpy as jnp

        table = jnp.asarray(table_policy.table, jnp.float32)
        require(table.shape == behaviours[0].optimal_table.shape, "TablePolicy.table",
                f"has shape {table.shape}, the env's model needs "
                f"{behaviours[0].optimal_table.shape} ([H, S, A])")
        text = (f"mixture(epsilon={epsilon:g}) of {table_policy.name}" if epsilon > 0
                else table_policy.name)
        behaviours = [Behaviour(text, "table", epsilon, optimal_table=table)]

    check_memory = MemoryCheck(env_name, spec, episodes, transitions)
    # Several behaviours (--policy suboptimal) share the amount in order, the first ones
    # taking the remainder; each part has its own seed.
    shares = [_share(episodes, len(behaviours), i) for i in range(len(behaviours))]
    row_shares = [_share(transitions, len(behaviours), i) for i in range(len(behaviours))]
    parts: list[tuple[dict, np.ndarray]] = []
    with Progress(episodes or transitions, enabled=progress, description="collecting",
                  unit="episodes" if episodes is not None else "transitions") as bar:
        for i, behaviour in enumerate(behaviours):
            part_seed = seed if i == 0 else _part_seed(seed, i)
            if host:
                host_env = registry.make_host_env(env_name, env_config, num_envs, part_seed)
                try:
                    part = _host_rollouts(host_env, behaviour, shares[i], part_seed, bar,
                                          check_memory, row_shares[i])
                finally:
                    host_env.close()
            else:
                part = _jax_rollouts(env, behaviour, shares[i], num_envs, part_seed, bar,
                                     check_memory, row_shares[i])
            if transitions is not None:
                part = (first_transitions(part[0], row_shares[i]), part[1])
            parts.append(part)
    columns = {name: np.concatenate([p[0][name] for p in parts]) for name in parts[0][0]}
    returns = np.concatenate([p[1] for p in parts])
    columns["obs"] = columns["obs"].astype(spec.obs_dtype, copy=False)
    columns["next_obs"] = columns["next_obs"].astype(spec.obs_dtype, copy=False)
    level_seed = columns.pop("level_seed", None)
    num_episodes = int(np.count_nonzero(columns["terminated"] | columns["truncated"]))

    behaviour = behaviours[0]
    extra: dict[str, Any] = {
        "seed": seed, "epsilon": behaviour.epsilon, "episodes": num_episodes,
        "num_envs": num_envs, "expert": behaviour.expert,
    }
    if transitions is not None:
        extra["transitions"] = transitions
    if plan is not None:
        extra.update(plan.extra)
    if env is not None and env.model is not None and plan is None:
        extra.update(_exact_returns(env, spec, behaviour))
    text = plan.text if plan is not None else behaviour.text
    info = dataclasses.replace(
        info, behaviour_policy=text, behaviour_return=float(returns.mean()),
        behaviour_return_std=float(returns.std()), extra=extra)
    return Dataset(info=info, transitions=Transition(**columns), num_episodes=num_episodes,
                   path=None, level_seed=level_seed)


def _share(total: int | None, parts: int, index: int) -> int | None:
    """Part `index` of `total` split over `parts` in order, the first ones one larger."""
    if total is None:
        return None
    return total // parts + (1 if index < total % parts else 0)


def _part_seed(seed: int, index: int) -> int:
    """An unrelated seed for part `index` of a collection (31 bits: procgen's limit)."""
    return int(np.random.SeedSequence((seed, index)).generate_state(1)[0] >> 1)


class CheckpointPlan(NamedTuple):
    """Which checkpoints of a training run a collection replays (`checkpoint_plan`).

    Attributes:
        steps: the checkpoints (chunk indices), in order.
        text: `DatasetInfo.behaviour_policy`.
        extra: what the metadata's `extra` records about the choice.
    """

    steps: list[int]
    text: str
    extra: dict


def kept_checkpoint_returns(run_dir: str) -> dict[int, float]:
    """{checkpoint step: the evaluated return logged at that chunk (seed 0)} for every kept
    checkpoint of a run, oldest first.

    The return is metrics.csv's `eval_return` (on procgen the test-level return, as
    gen_dgrl's `model_{index}_{test return}.pt` names record).

    Raises:
        RlkitError: a run without a readable metrics.csv row for a kept checkpoint.
    """
    from rlkit.checkpoint import Checkpointer
    from rlkit.runner import MetricsLog

    checkpointer = Checkpointer(Path(run_dir) / "checkpoints")
    try:
        steps = checkpointer.all_steps()
    finally:
        checkpointer.close()
    logged = {int(row["chunk"]): float(row["eval_return"])
              for row in MetricsLog(Path(run_dir) / "metrics.csv").read()
              if int(row["seed"]) == 0 and row.get("eval_return") not in (None, "")}
    missing = [step for step in steps if step not in logged]
    require(not missing, "--checkpoint",
            f"{run_dir}/metrics.csv has no eval_return of checkpoint(s) {missing[:5]}; pass an "
            "intact run directory")
    return {step: logged[step] for step in steps}


def checkpoint_plan(run_dir: str, policy: str, target_fraction: float) -> CheckpointPlan:
    """The checkpoints a `mixed` or `suboptimal` collection replays (Mediratta et al. 2024).

    * `mixed`: the one kept checkpoint whose evaluated return is nearest `target_fraction`
      times the final checkpoint's (gen_dgrl's `_pick_checkpoint_from_pool`: nearest by
      absolute difference; ties go to the earlier checkpoint). The paper asks the dataset's
      mean return to be 75% of the expert's; choosing the checkpoint by its evaluated return
      is how its code reads that, and the collected mean is recorded to check it.
    * `suboptimal`: every checkpoint, oldest first, each collecting an equal share: a replay
      of the whole training run. It needs the run to have kept them all: train it with
      `--keep-checkpoints 0` (and `--num-logs` as the number of snapshots).

    Raises:
        RlkitError: a run that did not keep every checkpoint (suboptimal), or without the
            logged returns of its checkpoints.
    """
    returns = kept_checkpoint_returns(run_dir)
    steps = list(returns)
    final_step = steps[-1]
    if policy == "suboptimal":
        from rlkit.train import load_experiment

        kept = load_experiment(Path(run_dir) / "config.yaml").run.keep_checkpoints
        require(kept == 0, "--checkpoint",
                f"{run_dir} kept only its newest {kept} checkpoints, so its training cannot be "
                "replayed; train it again with --keep-checkpoints 0 (every checkpoint kept)")
        text = f"suboptimal: {len(steps)} checkpoints of {run_dir} in order (seed 0)"
        return CheckpointPlan(steps, text, {"checkpoints": steps,
                                            "checkpoint_returns": list(returns.values())})
    target = target_fraction * returns[final_step]
    chosen = min(steps, key=lambda step: abs(returns[step] - target))
    text = (f"mixed(target_fraction={target_fraction:g}): {run_dir} checkpoint {chosen} "
            "(seed 0)")
    return CheckpointPlan([chosen], text, {
        "target_fraction": target_fraction, "checkpoint": chosen,
        "checkpoint_return": returns[chosen], "final_checkpoint": final_step,
        "final_return": returns[final_step], "target_return": target,
        "kept_checkpoints": steps})


# --------------------------------------------------------------------------------------------
# The CLI
# --------------------------------------------------------------------------------------------


def top_level_help() -> str:
    lines = [__doc__.strip(), "", "Environments (--env):"]
    lines += [f"  {name:24s} {text}" for name, text in registry.env_descriptions().items()]
    lines += ["", "python -m rlkit.collect --env ENV --help lists the env's --env-config fields."]
    return "\n".join(lines)


def parse_options(argv: list[str]) -> tuple[Options, Any]:
    """Turn command-line arguments into `Options` and the env config.

    Raises:
        RlkitError: for missing flags, unknown names and impossible values.
    """
    import tyro

    from rlkit.train import _option_value

    asks_help = any(arg in ("-h", "--help") for arg in argv)
    if not asks_help:
        for flag, example in (("--policy", "--policy random"),
                              ("--out", "--out data/my-dataset")):
            require(_option_value(argv, flag) is not None, flag, f"is required, e.g. {example}")
    env_flag, policy = _option_value(argv, "--env"), _option_value(argv, "--policy")
    try:
        env_name, env_default, *_ = _resolve_env(
            env_flag, None, policy or "random", _option_value(argv, "--checkpoint"))
    except RlkitError:
        if not asks_help:
            raise
        # --help with an incomplete policy: the env's fields are still worth showing.
        env_name, env_default, *_ = _resolve_env(env_flag, None, "random", None)

    Args = dataclasses.make_dataclass(
        "Args", [("env_config", type(env_default), field(default=env_default))],
        bases=(Options,), frozen=True)
    Args.__doc__ = f"Collect an offline dataset of {env_name} by rolling out a policy."
    prog = f"python -m rlkit.collect --env {env_name}"
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            args = tyro.cli(Args, args=argv, prog=prog)
    except SystemExit as exit_:
        if exit_.code:  # a parse error: tyro's box, condensed to one line
            raise RlkitError(one_line_parse_error(captured.getvalue(), prog)) from None
        raise
    except RlkitError as error:
        # The env configs name their fields ("length: ..."); say which flag set them.
        text = str(error)
        name, sep, rest = text.partition(": ")
        if sep and name.isidentifier():
            text = f"--env-config.{name.replace('_', '-')}: {rest}"
        raise RlkitError(text) from None
    options = Options(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Options)})
    return options, args.env_config


def _check_out(out: str, overwrite: bool) -> None:
    # Path("") is Path("."): an empty --out would otherwise name the working directory.
    require(out.strip() != "", "--out",
            "is empty; pass the dataset directory to write, e.g. --out data/my-dataset")
    path = Path(out)
    if path.exists() or path.is_symlink():
        require(overwrite, "--out",
                f"{out} already exists; pass --overwrite to replace it, or choose another "
                "directory")
        require(path.is_dir() and (path / "metadata.json").is_file(), "--out",
                f"{out} exists and is not an rlkit dataset, so --overwrite will not delete it; "
                "remove it yourself or choose another directory")
    # Before collecting, not after: the nearest existing folder must take new entries (a
    # read-only file system fails here even for root; a full disk is caught when writing).
    folder = path.absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    require(folder.is_dir(), "--out",
            f"{folder} is a file, so {out} cannot be a directory inside it; choose another path")
    require(folder.is_dir() and os.access(folder, os.W_OK | os.X_OK), "--out",
            f"cannot write into {folder} (read-only, or no permission); choose a writable "
            "directory")


def print_summary(dataset: Dataset, path: Path) -> None:
    """The short report printed after a collection."""
    info = dataset.info
    extra = info.extra
    transitions = int(dataset.transitions.action.shape[0])
    print(f"collected {dataset.num_episodes:,} episodes, {transitions:,} transitions of "
          f"{info.env_id} with {info.behaviour_policy}")
    line = f"return {info.behaviour_return:.4g} ± {info.behaviour_return_std:.4g} (measured)"
    if "exact_return" in extra:
        line += (f"; exact {extra['exact_return']:.4g} (optimal {extra['optimal_return']:.4g}, "
                 f"random {extra['random_return']:.4g})")
    if "normalised_score" in extra:
        line += f"; normalised score {extra['normalised_score']:.1f}"
    print(line)
    print(f"dataset: {path}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "import-gen-dgrl":
        from rlkit.data import gen_dgrl

        return gen_dgrl.main(argv[1:])
    from rlkit.train import _option_value

    if not argv or (any(arg in ("-h", "--help") for arg in argv)
                    and _option_value(argv, "--env") is None):
        print(top_level_help())
        return 0
    try:
        options, env_config = parse_options(argv)
        _check_out(options.out, options.overwrite)
        dataset = collect(
            options.env, env_config, options.policy, options.episodes, options.seed,
            epsilon=options.epsilon, checkpoint=options.checkpoint, num_envs=options.num_envs,
            progress=options.progress, transitions=options.transitions,
            target_fraction=options.target_fraction)
        from rlkit.data.dataset import save_dataset

        path = save_dataset(options.out, dataset.transitions, dataset.info,
                            overwrite=options.overwrite, level_seed=dataset.level_seed)
    except RlkitError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except SystemExit as exit_:  # tyro's --help and its own parse errors
        return exit_.code if isinstance(exit_.code, int) else 2
    except KeyboardInterrupt:
        print("interrupted: nothing was written", file=sys.stderr)
        return INTERRUPTED
    print_summary(dataset, path)
    return 0


if __name__ == "__main__":
    run_cli(main)
