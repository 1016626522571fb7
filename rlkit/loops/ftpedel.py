"""The driver and CLI of verifiable policy identification (PEDEL, FTPedel) on linear MDPs.

    python -m rlkit.train pedel --env linear-hard-state [--env-config.p 0.01] [--seeds 3]
    python -m rlkit.train ftpedel --dataset DIR [--agent.epsilon 0.1] [--agent.delta 0.05]

The algorithm is sequential and small (`agents.ftpedel.run`, numpy); this module owns what is
compiled: the Frank-Wolfe design solver (one `jax.jit`, reused by every budget search) and the
rollouts of T online episodes, each following a policy of the class (one `jax.jit` of a `vmap`
over a fixed chunk of episodes around a `lax.scan` over the H steps). Seeds run one after the
other (the loop is on the host); seed i uses `jax.random.fold_in(jax.random.key(seed), i)`.

`summary.json` holds, per seed: `verified`, `online_episodes` (until the stop), `budgets`
(T_{l,h} per epoch and step; null where the budget ran out), `active` (|Pi_l|), the returned
policy's index, weights, exact return and `suboptimality` (J* - J(pi), `rlkit.planning`), and the
stop's `reason`; then aggregates over seeds (mean and a 95% bootstrap CI of online episodes, the
fraction verified, and the fraction of verified runs whose policy is exactly epsilon-optimal).
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rlkit import registry
from rlkit.errors import require, run_guarded, tyro_cli


@dataclass(frozen=True)
class RunOptions:
    """Where and how often to run."""

    seeds: int = 1
    """Independent runs (one after the other)."""
    seed: int = 0
    """Base seed; run i uses fold_in(key(seed), i)."""
    dataset: str | None = None
    """Offline dataset directory (python -m rlkit.collect); FTPedel needs one."""
    run_dir: str | None = None
    """Run directory (default: runs/AGENT-ENV-TIMESTAMP)."""

    def __post_init__(self):
        require(self.seeds >= 1, "--seeds", f"must be at least 1, got {self.seeds}")
        require(0 <= self.seed < 2**32, "--seed", f"must be in [0, 2**32), got {self.seed}")


@functools.cache
def _compiled_solver(module: Any):
    """`module.frank_wolfe` compiled once per process (shapes and iterations permitting), so
    runs one after the other (seeds, benchmarks, notebooks) share its compilations."""
    return jax.jit(module.frank_wolfe, static_argnames=("iterations",))


@jax.jit
def _class_statistics(mdp: Any, weights: jax.Array):
    from rlkit import planning

    policies = planning.greedy_linear_policies(mdp.features, weights)
    visitation, returns = planning.linear_class_statistics(mdp, policies)
    return visitation, returns, planning.linear_value_iteration(mdp).optimal_return


def make_pieces(module: Any, env: Any, config: Any, weights: np.ndarray):
    """The compiled design solver and rollouts for `module.run` (`agents.ftpedel.Pieces`)."""
    params = env.default_params
    horizon, num_actions = env.spec.max_episode_steps, env.spec.num_actions
    chunk = config.rollout_chunk
    design_solver = _compiled_solver(module)

    def solve(budget, covariances, base, targets, mask, allowed=None):
        return design_solver(budget, covariances, base, targets, mask, allowed,
                             iterations=config.frank_wolfe_iterations)

    policy_weights = jnp.asarray(weights)

    @jax.jit
    def rollout(key, index):
        """[C] episodes, episode i following policy index[i]: obs, action, reward, next_obs
        stacked as [C, H, ...]."""
        reset_key, run_key = jax.random.split(key)
        obs, state = jax.vmap(env.reset, in_axes=(0, None))(
            jax.random.split(reset_key, chunk), params)
        episode_weights = policy_weights[index]  # [C, H, d]

        def body(carry, step_key):
            obs, state = carry
            step, features = module.observation_parts(obs, horizon, num_actions)
            action = jax.vmap(module.act)(episode_weights, features, step)
            next_obs, state, reward, _, _, _ = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
                jax.random.split(step_key, chunk), state, action, params)
            return (next_obs, state), (obs, action, reward, next_obs)

        _, rows = jax.lax.scan(body, (obs, state), jax.random.split(run_key, horizon))
        return jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), rows)

    def collect(key, index):
        parts = []
        for start in range(0, len(index), chunk):
            piece = index[start:start + chunk]
            padded = np.zeros(chunk, np.int32)
            padded[:len(piece)] = piece
            rows = rollout(jax.random.fold_in(key, start), jnp.asarray(padded))
            parts.append([np.asarray(x)[:len(piece)] for x in rows])
        obs, action, reward, next_obs = (np.concatenate([p[i] for p in parts]).reshape(
            len(index) * horizon, *parts[0][i].shape[2:]) for i in range(4))
        return module.split_rows(obs, action, reward, next_obs, horizon, num_actions)

    return module.Pieces(solve=solve, collect=collect)


def offline_rows(module: Any, path: str, env_name: str, env: Any, env_config: Any):
    """The dataset's rows per step, after checking that it belongs to this env.

    Raises:
        RlkitError: one line naming the dataset and the fix, for another env, another feature
            dimension or horizon (observation shape), or other env parameters (the start state
            of the hard-state instance may differ: offline data there are collected with
            --env-config.start hard).
    """
    from rlkit.data.dataset import load_dataset

    dataset = load_dataset(path, mmap=False, verify=True)
    info, where = dataset.info, f"--dataset {path}"
    require(info.env_id == env_name, where,
            f"was collected on env {info.env_id!r}, not {env_name!r}; pass --env "
            f"{info.env_id} or a dataset of {env_name}")
    require(tuple(info.obs_shape) == tuple(env.spec.obs_shape)
            and info.num_actions == env.spec.num_actions, where,
            f"has observations {tuple(info.obs_shape)} and {info.num_actions} actions, but "
            f"{env_name} here has {tuple(env.spec.obs_shape)} and {env.spec.num_actions} "
            "(another feature dimension or horizon); collect it with the same --env-config")
    ours = {k: v for k, v in dataclasses.asdict(env_config).items() if k != "start"}
    theirs = {k: v for k, v in info.env_params.items() if k != "start"}
    require(ours == theirs, where,
            f"was collected with env parameters {theirs}, this run has {ours}; pass the same "
            "--env-config values")
    t = dataset.transitions
    return module.split_rows(np.asarray(t.obs), np.asarray(t.action), np.asarray(t.reward),
                             np.asarray(t.next_obs), env.spec.max_episode_steps,
                             env.spec.num_actions), dataset


def exact_oracle(module: Any, mdp: Any, weights: np.ndarray):
    """The class's exact visitations, covariances and theta (`agents.ftpedel.Oracle`) and
    returns [N], J*."""
    visitation, returns, optimal = _class_statistics(mdp, jnp.asarray(weights))
    oracle = module.Oracle(np.asarray(visitation.mean, np.float64),
                           np.asarray(visitation.covariance, np.float64),
                           np.asarray(mdp.theta, np.float64))
    return oracle, np.asarray(returns, np.float64), float(optimal)


def identify(agent: str, config: Any, env_name: str, env_config: Any, run: RunOptions,
             offline: list | None = None) -> dict:
    """Run PEDEL / FTPedel for `run.seeds` seeds and return the summary (a JSON-able dict).

    Args:
        agent: "pedel" or "ftpedel".
        config: the agent's config.
        env_name: a linear-MDP env (`envs.linear_mdp`).
        env_config: its config.
        run: seeds and dataset.
        offline: H `StepData` of offline rows, overriding `run.dataset` (tests, benchmarks).

    Raises:
        RlkitError: an env without a linear model, a dataset that does not fit, FTPedel
            without one.
    """
    module = registry.identification_agent_module(agent)
    env = registry.make_env(env_name, env_config)
    mdp = getattr(env.default_params, "linear", None)
    require(mdp is not None, "--env", f"{env_name} is not a linear MDP; use linear-hard-state, "
            "linear-random or linear-tabular")
    horizon, num_actions = env.spec.max_episode_steps, env.spec.num_actions
    dim = int(mdp.features.shape[-1])
    require(int(np.count_nonzero(np.asarray(mdp.initial))) == 1, "--env",
            f"{env_name}: PEDEL here needs a deterministic first state")
    weights = module.make_policy_class(config, horizon, dim)
    dataset_info = None
    if offline is None:
        if config.hybrid:
            require(run.dataset is not None, "--dataset",
                    f"{agent} learns from offline data too; pass --dataset DIR (python -m "
                    f"rlkit.collect --env {env_name} ...), or run pedel")
            offline, dataset = offline_rows(module, run.dataset, env_name, env, env_config)
            dataset_info = {"path": run.dataset,
                            "transitions": int(dataset.transitions.action.shape[0])}
        else:
            require(run.dataset is None, "--dataset",
                    f"{agent} learns online only; drop --dataset or run ftpedel")
            offline = [module.empty_step_data(num_actions, dim)] * horizon
    oracle, returns, optimal = exact_oracle(module, mdp, weights)
    first_obs = np.asarray(env.model(env.default_params).observations)[
        int(np.argmax(np.asarray(mdp.initial)))]
    first_features = first_obs[horizon + 1:].reshape(num_actions, dim)
    pieces = make_pieces(module, env, config, weights)
    runs = []
    for index in range(run.seeds):
        key = jax.random.fold_in(jax.random.key(run.seed), index)
        start = time.perf_counter()
        result = module.run(config, weights, first_features, offline, pieces, key,
                            oracle if config.oracle else None)
        suboptimality = optimal - float(returns[result.policy])
        runs.append({
            "seed": index, "verified": result.verified,
            "online_episodes": result.online_episodes, "budgets": result.budgets,
            "active": result.active, "policy": result.policy,
            "policy_weights": weights[result.policy].tolist(),
            "policy_return": float(returns[result.policy]), "suboptimality": suboptimality,
            "epsilon_optimal": bool(suboptimality <= config.epsilon + 1e-9),
            "reason": result.reason, "seconds": time.perf_counter() - start})
    episodes = np.array([r["online_episodes"] for r in runs], float)
    verified = [r for r in runs if r["verified"]]
    return {
        "agent": agent, "env": env_name, "env_config": dataclasses.asdict(env_config),
        "agent_config": dataclasses.asdict(config), "unit": "online_episodes",
        "optimal_return": optimal, "num_policies": int(len(weights)),
        "class_best_return": float(returns.max()), "dataset": dataset_info, "runs": runs,
        "online_episodes": {"mean": float(episodes.mean()),
                            "ci95": bootstrap_ci(episodes, run.seed)},
        "verified_fraction": len(verified) / len(runs),
        "verified_epsilon_optimal_fraction": (
            sum(r["epsilon_optimal"] for r in verified) / len(verified) if verified else None),
    }


def bootstrap_ci(values: np.ndarray, seed: int = 0, draws: int = 2000) -> list[float]:
    """95% percentile-bootstrap interval of the mean of `values` [n] (one value: [v, v])."""
    if len(values) < 2:
        return [float(values.mean())] * 2
    rng = np.random.default_rng(seed)
    means = values[rng.integers(len(values), size=(draws, len(values)))].mean(-1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def parse(argv: list[str]):
    """(agent, agent config, env name, env config, run options) from the command line."""
    from rlkit.train import option_value

    agent = argv[0]
    module = registry.identification_agent_module(agent)
    env_name = option_value(argv, "--env") or "linear-hard-state"
    dataset = option_value(argv, "--dataset")
    env_defaults = None
    if dataset is not None:
        from rlkit.data.dataset import load_dataset

        info = load_dataset(dataset, mmap=True, verify=False).info
        if option_value(argv, "--env") is None:
            env_name = info.env_id
        if env_name == info.env_id:  # the env's parameters default to the dataset's
            env_defaults = {k: v for k, v in info.env_params.items() if k != "start"}
    entry = registry.env_entry(env_name)
    config_class = module.FineTuneConfig if agent == "ftpedel" else module.Config
    env_config_class = entry.config_class()
    fields = [("agent", config_class, dataclasses.field(default_factory=config_class)),
              ("env", str, dataclasses.field(default=env_name)),
              ("env_config", env_config_class, dataclasses.field(
                  default_factory=entry.default_config if env_defaults is None
                  else lambda: env_config_class(**env_defaults))),
              ("run", RunOptions, dataclasses.field(default_factory=RunOptions))]
    args_class = dataclasses.make_dataclass("Args", fields, frozen=True)
    args_class.__doc__ = f"{agent}: verifiable policy identification in a linear MDP."
    rest = list(argv[1:])
    # --dataset / --seeds / --seed / --run-dir are run options; accept them at the top level.
    for flag in ("--dataset", "--seeds", "--seed", "--run-dir"):
        rest = [f"--run.{flag[2:]}" if a == flag else
                (f"--run.{a[2:]}" if a.startswith(flag + "=") else a) for a in rest]
    args = tyro_cli(args_class, rest, prog=f"python -m rlkit.train {agent}")
    return agent, args.agent, args.env, args.env_config, args.run


def main(argv: list[str]) -> int:
    """`python -m rlkit.train pedel|ftpedel ...`: run, write summary.json, print one line per
    seed. Input errors: one line, status 2."""

    def go():
        agent, config, env_name, env_config, run = parse(argv)
        summary = identify(agent, config, env_name, env_config, run)
        run_dir = Path(run.run_dir or "runs/{}-{}-{}".format(
            agent, env_name, datetime.datetime.now().strftime("%Y%m%d-%H%M%S")))
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary, run_dir

    result, status = run_guarded(go, resumable=False)
    if status is not None:
        return status
    summary, run_dir = result
    for r in summary["runs"]:
        state = "verified" if r["verified"] else "not verified"
        print(f"seed {r['seed']}: {state} after {r['online_episodes']:,} online episodes; "
              f"policy {r['policy']} sub-optimality {r['suboptimality']:.4g} ({r['reason']})")
    ci = summary["online_episodes"]["ci95"]
    print(f"online episodes: mean {summary['online_episodes']['mean']:,.0f} "
          f"(95% CI {ci[0]:,.0f}-{ci[1]:,.0f}); verified {summary['verified_fraction']:.0%}; "
          f"summary: {run_dir / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


__all__ = ["RunOptions", "bootstrap_ci", "exact_oracle", "identify", "main", "make_pieces",
           "offline_rows", "parse"]
