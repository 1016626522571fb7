"""`python -m rlkit.train AGENT --env ENV [--dataset DIR] [--seeds N] [--total-steps N]
[--run-dir DIR] [--resume DIR] [--config FILE] [--agent.FIELD VALUE ...]
[--env-config.FIELD VALUE ...]`

Trains an agent on an environment, several seeds side by side, and writes a run directory
(see `rlkit.runner`). Offline agents (bc, cql, iql) learn from `--dataset` alone and use the
environment only to evaluate (`--total-steps` then counts updates); hybrid agents (hyq, hyglow)
mix the dataset into their online batches, and `--h2o` runs an offline agent inside H2O's rounds.
With `--dataset`, `--env` and the env's parameters default to the dataset's own.
`python -m rlkit.train --help` lists the agents and environments;
`python -m rlkit.train AGENT --env ENV --help` lists every field of that agent and env.

Every input error (unknown agent or env, impossible config, missing optional extra, broken
config file) is reported as one line naming the field and the fix, with exit status 2, before
anything is compiled.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

import rlkit
from rlkit import registry
from rlkit.errors import INTERRUPTED, RlkitError, exit_cli, require


@dataclass(frozen=True)
class RunOptions:
    """Options of a run that belong to neither the agent nor the environment."""

    seeds: int = 1
    """Independent seeds trained side by side (vmapped; sharded over devices when possible)."""
    seed: int = 0
    """Base random seed; seed i of a run uses the i-th split of jax.random.key(seed)."""
    total_steps: int | None = None
    """Environment steps per seed (default: the agent's own total_steps, else 100000)."""
    run_dir: str | None = None
    """Run directory (default: runs/AGENT-ENV-TIMESTAMP)."""
    num_logs: int = 20
    """Number of chunks the run is cut into: log, evaluate and checkpoint after each."""
    checkpoint_every: int = 1
    """Save a checkpoint every this many chunks (and always after the last)."""
    eval_episodes: int = 16
    """Evaluation episodes per seed, for environments without an exact model."""
    progress: bool = True
    """Show a progress bar."""
    shard_seeds: bool = True
    """With several local devices, split the seed axis over them (seeds must divide evenly)."""
    stop_after_chunks: int | None = None
    """Stop (checkpointed) after this many chunks of this invocation; continue with --resume.
    For time-boxed or preemptible jobs."""
    dataset: str | None = None
    """Offline dataset directory (written by python -m rlkit.collect) for offline and hybrid
    agents."""
    stream_dataset: bool = False
    """Offline agents: keep the dataset memory-mapped on disk and stream batches to the device
    (for image datasets larger than device memory) instead of loading it whole."""
    h2o: bool = False
    """Offline agents (bc, cql, iql): run inside H2O's reduction to hybrid RL, alternating
    updates on dataset + online data with rollouts of the policy (--total-steps counts env
    steps)."""
    h2o_episodes_per_round: int = 4
    """With --h2o: episodes rolled out per round."""
    h2o_updates_per_round: int = 100
    """With --h2o: the offline agent's updates per round."""
    deterministic: bool = True
    """On GPUs, ask XLA for deterministic kernels, so the same config and seed reproduce
    metrics.csv exactly (PPO on an H200 measured 1.4-1.5x slower with it). CPUs are
    deterministic either way."""

    def __post_init__(self):
        require(self.seeds >= 1, "--seeds", f"must be at least 1, got {self.seeds}")
        require(self.total_steps is None or self.total_steps > 0, "--total-steps",
                f"must be positive, got {self.total_steps}")
        require(self.num_logs >= 1, "--num-logs", f"must be at least 1, got {self.num_logs}")
        require(self.checkpoint_every >= 1, "--checkpoint-every",
                f"must be at least 1, got {self.checkpoint_every}")
        require(self.eval_episodes >= 1, "--eval-episodes",
                f"must be at least 1, got {self.eval_episodes}")


@dataclass(frozen=True)
class Experiment:
    """A fully resolved training job: what config.yaml stores."""

    agent: str
    env: str
    run: RunOptions
    agent_config: Any
    env_config: Any

    def to_dict(self) -> dict:
        def plain(config):
            return {k: list(v) if isinstance(v, tuple) else v
                    for k, v in dataclasses.asdict(config).items()}

        return {
            "agent": self.agent,
            "env": self.env,
            "run": plain(self.run),
            "agent_config": plain(self.agent_config),
            "env_config": plain(self.env_config),
        }


def _from_dict(cls: type, values: dict, where: str):
    """Build dataclass `cls` from a dict, with a clear error for unknown or bad fields."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    require(not unknown, where, f"unknown field(s) {unknown}; known: {sorted(known)}")
    # YAML has no tuples: every sequence field of rlkit's configs is a tuple.
    converted = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    try:
        return cls(**converted)
    except TypeError as error:
        raise RlkitError(f"{where}: {error}") from None


def load_experiment(path: Path) -> Experiment:
    """Read a config.yaml written by a run (or by hand)."""
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise RlkitError(f"{path}: no such file; pass a run directory's config.yaml") from None
    except yaml.YAMLError as error:
        raise RlkitError(f"{path}: not valid YAML ({error}); fix or regenerate it") from None
    require(isinstance(data, dict) and {"agent", "env"} <= set(data), str(path),
            "must be a mapping with at least 'agent' and 'env' (as written by rlkit.train)")
    module = registry.agent_module(data["agent"])
    entry = registry.env_entry(data["env"])
    return Experiment(
        agent=data["agent"],
        env=data["env"],
        run=_from_dict(RunOptions, data.get("run") or {}, f"{path}: run"),
        agent_config=_from_dict(module.Config, data.get("agent_config") or {},
                                f"{path}: agent_config"),
        env_config=_from_dict(entry.config_class(),
                              {**dict(entry.defaults), **(data.get("env_config") or {})},
                              f"{path}: env_config"),
    )


def _option_value(argv: list[str], flag: str) -> str | None:
    """The value of `--flag VALUE` or `--flag=VALUE` in argv (None if absent)."""
    for i, arg in enumerate(argv):
        if arg == flag:
            if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                raise RlkitError(f"{flag} needs a value")
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def _without_option(argv: list[str], flag: str) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == flag:
            skip = True
            continue
        if arg.startswith(flag + "="):
            continue
        out.append(arg)
    return out


def top_level_help() -> str:
    lines = [__doc__.strip(), "", "Agents:"]
    lines += [f"  {name:24s} {text}" for name, text in registry.agent_names().items()]
    lines += ["", "Environments (--env):"]
    lines += [f"  {name:24s} {text}" for name, text in registry.env_descriptions().items()]
    lines += ["", "Example: python -m rlkit.train ppo --env cartpole --seeds 4"]
    return "\n".join(lines)


def parse_experiment(argv: list[str]) -> tuple[Experiment, bool]:
    """Turn command-line arguments into an `Experiment` (and whether to resume).

    Raises:
        RlkitError: for unknown names and impossible values.
    """
    import tyro

    resume_dir = _option_value(argv, "--resume")
    if resume_dir is not None:
        path = Path(resume_dir) / "config.yaml"
        require(path.exists(), "--resume",
                f"{resume_dir} has no config.yaml; pass the directory of an earlier run")
        experiment = load_experiment(path)
        stop = _option_value(argv, "--stop-after-chunks")
        run = dataclasses.replace(
            experiment.run, run_dir=resume_dir, stop_after_chunks=int(stop) if stop else None,
            progress=experiment.run.progress and "--no-progress" not in argv)
        return dataclasses.replace(experiment, run=run), True

    base: Experiment | None = None
    config_file = _option_value(argv, "--config")
    if config_file is not None:
        base = load_experiment(Path(config_file))
        argv = _without_option(argv, "--config")
    if argv and not argv[0].startswith("-"):
        agent_name, argv = argv[0], argv[1:]
    elif base is not None:
        agent_name = base.agent
    else:
        raise RlkitError("name an agent first, e.g. `python -m rlkit.train ppo --env cartpole`; "
                         f"agents: {', '.join(registry.agent_names())}")
    module = registry.agent_module(agent_name)
    dataset_dir = _option_value(argv, "--dataset")
    info = dataset_info(dataset_dir) if dataset_dir is not None else None
    env_name = (_option_value(argv, "--env") or (base.env if base else None)
                or (info.env_id if info else None))
    if env_name is None:
        raise RlkitError("--env is required, e.g. --env cartpole (see --help for the list)")
    argv = _without_option(argv, "--env")
    entry = registry.env_entry(env_name)

    same_agent = base is not None and base.agent == agent_name
    same_env = base is not None and base.env == env_name
    agent_default = base.agent_config if same_agent else module.Config()
    env_default = base.env_config if same_env else entry.default_config()
    if info is not None and info.env_id == env_name and info.env_params and not same_env:
        # Evaluate in the environment the data came from unless told otherwise.
        env_default = _from_dict(type(env_default), info.env_params,
                                 f"{dataset_dir}/metadata.json: env params")
    run_default = base.run if base else RunOptions()
    fields = [(f.name, f.type, field(default=getattr(run_default, f.name)))
              for f in dataclasses.fields(RunOptions)]
    fields += [
        ("agent", type(agent_default), field(default=agent_default)),
        ("env_config", type(env_default), field(default=env_default)),
    ]
    Args = dataclasses.make_dataclass("Args", fields, frozen=True)
    Args.__doc__ = f"Train {agent_name} on {env_name}. {module.__doc__.strip().splitlines()[0]}"
    args = tyro.cli(Args, args=argv, prog=f"python -m rlkit.train {agent_name} --env {env_name}")
    run = RunOptions(**{f.name: getattr(args, f.name) for f in dataclasses.fields(RunOptions)})
    agent_config = args.agent
    if run.total_steps is not None and hasattr(agent_config, "total_steps"):
        agent_config = dataclasses.replace(agent_config, total_steps=run.total_steps)
    if run.total_steps is None:
        run = dataclasses.replace(run, total_steps=getattr(agent_config, "total_steps", 100_000))
    return Experiment(agent_name, env_name, run, agent_config, args.env_config), False


def dataset_info(path: str):
    """The metadata of the dataset at `path` (arrays opened lazily; checksums checked later)."""
    from rlkit.data.dataset import load_dataset

    return load_dataset(path, mmap=True, verify=False).info


def load_run_dataset(experiment: Experiment, spec, feed):
    """Load and check the run's dataset against the agent's feed and the environment.

    Returns:
        The `rlkit.data.dataset.Dataset` (memory-mapped), or None for agents without one.
    """
    run = experiment.run
    if not feed.uses_dataset:
        require(run.dataset is None, "--dataset",
                f"{experiment.agent} learns online only and ignores datasets; drop --dataset or "
                "use an offline agent (bc, cql, iql) or a hybrid one (hyq, hyglow)")
        return None
    require(run.dataset is not None, "--dataset",
            f"{experiment.agent} learns from a dataset; pass --dataset DIR (make one with "
            f"python -m rlkit.collect --env {experiment.env} --policy random --episodes 100 "
            "--out DIR)")
    require(not run.stream_dataset or feed.steps_per_iteration == 0, "--stream-dataset",
            f"only offline agents stream their dataset; {experiment.agent} mixes it into online "
            "batches on the device, so drop --stream-dataset")
    from rlkit.data.dataset import load_dataset

    dataset = load_dataset(run.dataset, mmap=True, verify=True)
    info = dataset.info
    where = f"--dataset {run.dataset}"
    require(info.env_id == experiment.env, where,
            f"was collected on {info.env_id!r} but --env is {experiment.env!r}; pass "
            f"--env {info.env_id} or a dataset of {experiment.env}")
    require(tuple(info.obs_shape) == tuple(spec.obs_shape) and info.obs_dtype == spec.obs_dtype,
            where, f"holds observations {tuple(info.obs_shape)} {info.obs_dtype}, the env emits "
            f"{tuple(spec.obs_shape)} {spec.obs_dtype}; check --env-config against the "
            "dataset's env params")
    require(info.num_actions == spec.num_actions, where,
            f"has {info.num_actions} actions, the env {spec.num_actions}; check --env-config")
    return dataset


def chunk_length(total_iterations: int, num_logs: int) -> int:
    """Iterations per chunk: a divisor of the total giving about `num_logs` chunks, so the run
    does exactly the requested iterations; if no divisor comes within a factor of two of
    `num_logs`, the nearest length and a run shorter by less than one chunk."""
    small = [d for d in range(1, math.isqrt(total_iterations) + 1) if total_iterations % d == 0]
    divisors = small + [total_iterations // d for d in small]
    best = min(divisors, key=lambda d: abs(math.log((total_iterations / d) / num_logs)))
    if num_logs / 2 <= total_iterations / best <= 2 * num_logs:
        return best
    return max(1, total_iterations // num_logs)


def _mesh(num_seeds: int, enabled: bool):
    import jax
    import numpy as np

    devices = jax.local_devices()
    if not enabled or len(devices) == 1:
        return None
    require(num_seeds % len(devices) == 0, "--seeds",
            f"{num_seeds} seeds cannot be split evenly over {len(devices)} devices; use a "
            f"multiple of {len(devices)} or pass --no-shard-seeds")
    return jax.sharding.Mesh(np.array(devices), ("seed",))


@dataclass
class Built:
    """Everything `execute` needs to run an experiment (see `build`)."""

    agent: Any
    spec: Any
    trainer: Any
    num_chunks: int
    optimal_return: float | None
    summary_extras: dict | None


def build(experiment: Experiment) -> Built:
    """Build the environment, agent, dataset and driver of `experiment` (nothing compiled yet).

    Raises:
        RlkitError: for impossible budgets and datasets that do not fit the agent or env.
    """
    from rlkit.types import OfflineFeed, RoundFeed

    run = experiment.run
    entry = registry.env_entry(experiment.env)
    if entry.kind == "host":
        from rlkit.loops.host import make_host_trainer

        probe = registry.make_host_env(experiment.env, experiment.env_config, 1, run.seed)
        spec = probe.spec
        probe.close()
    else:
        env = registry.make_env(experiment.env, experiment.env_config)
        spec = env.spec
    agent = registry.make_agent(experiment.agent, experiment.agent_config, spec,
                                None if entry.kind == "host" else env)
    if run.h2o:
        from rlkit.h2o import make_h2o_agent

        agent = make_h2o_agent(agent, spec, episodes_per_round=run.h2o_episodes_per_round,
                               updates_per_round=run.h2o_updates_per_round)
    dataset = load_run_dataset(experiment, spec, agent.feed)
    offline = isinstance(agent.feed, OfflineFeed)
    # Offline agents take no env steps: their iterations are updates.
    steps_per_iteration = agent.feed.steps_per_iteration or 1
    total_iterations = run.total_steps // steps_per_iteration
    require(total_iterations >= 1, "--total-steps",
            f"{run.total_steps} is less than one iteration of {experiment.agent} "
            f"({steps_per_iteration} env steps); raise it")
    iterations_per_chunk = chunk_length(total_iterations, run.num_logs)
    num_chunks = total_iterations // iterations_per_chunk

    optimal_return = None
    if entry.kind != "host" and env.model is not None:
        from rlkit import planning

        optimal_return = float(planning.value_iteration(env.model(env.default_params))
                               .optimal_return)
    device_dataset = None
    if dataset is not None and not offline:
        from rlkit.data.dataset import to_device

        device_dataset = to_device(dataset)
    if offline:
        trainer = _offline_trainer(experiment, agent, dataset, spec, iterations_per_chunk)
    elif isinstance(agent.feed, RoundFeed):
        from rlkit.loops.rounds import make_rounds_trainer

        require(entry.kind != "host", "--env",
                f"{experiment.agent} runs in rounds on the device; {experiment.env} is a host "
                "environment, use a JAX one (e.g. combination-lock, deepsea, gymnax:...)")
        feed = agent.feed
        require(feed.batch_size is not None
                or total_iterations * feed.num_envs <= feed.buffer_episodes, "--total-steps",
                f"{total_iterations} rounds of {feed.num_envs} episodes outgrow the "
                f"{feed.buffer_episodes} episodes kept, and {experiment.agent}'s exact learner "
                "refits on all its data each round; lower --total-steps or raise "
                "--agent.buffer-episodes")
        trainer = make_rounds_trainer(
            agent, env, env.default_params, iterations_per_chunk,
            num_eval_episodes=run.eval_episodes, mesh=_mesh(run.seeds, run.shard_seeds),
            dataset=device_dataset)
    elif entry.kind == "host":
        trainer = make_host_trainer(
            agent, lambda num_envs, seed: registry.make_host_env(
                experiment.env, experiment.env_config, num_envs, seed),
            num_seeds=run.seeds, seed=run.seed, iterations_per_chunk=iterations_per_chunk,
            num_eval_episodes=run.eval_episodes, dataset=device_dataset)
    else:
        from rlkit.loops.on_device import make_on_device_trainer

        trainer = make_on_device_trainer(
            agent, env, env.default_params, iterations_per_chunk,
            num_eval_episodes=run.eval_episodes, mesh=_mesh(run.seeds, run.shard_seeds),
            dataset=device_dataset)
    extras = None
    if dataset is not None:
        extras = {"dataset": {
            "path": str(run.dataset), "transitions": int(dataset.transitions.action.shape[0]),
            "episodes": dataset.num_episodes, "behaviour_policy": dataset.info.behaviour_policy,
            "behaviour_return": dataset.info.behaviour_return}}
    return Built(agent=agent, spec=spec, trainer=trainer, num_chunks=num_chunks,
                 optimal_return=optimal_return, summary_extras=extras)


def execute(experiment: Experiment, resume: bool = False):
    """Build the environment, agent and driver of `experiment` and run it.

    Returns:
        The `rlkit.runner.RunResult`.
    """
    from rlkit.io import write_text
    from rlkit.runner import run_training

    run = experiment.run
    built = build(experiment)
    run_dir = Path(run.run_dir or f"runs/{experiment.agent}-{experiment.env.replace(':', '_')}"
                   f"-{time.strftime('%Y%m%d-%H%M%S')}")
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        write_text(run_dir / "config.yaml", yaml.safe_dump(experiment.to_dict(), sort_keys=False))
    header = {"agent": experiment.agent, "env": experiment.env}
    try:
        return run_training(
            built.trainer, num_chunks=built.num_chunks, num_seeds=run.seeds, seed=run.seed,
            run_dir=run_dir, header=header, resume=resume, checkpoint_every=run.checkpoint_every,
            optimal_return=built.optimal_return, show_progress=run.progress,
            stop_after_chunks=run.stop_after_chunks, summary_extras=built.summary_extras)
    finally:
        built.trainer.close()


def load_policy(run_dir: str | Path, seed_index: int = 0):
    """The trained agent of a run directory: `(experiment, agent, agent_state)` of one seed.

    Restores the newest checkpoint of `run_dir` into the run's own structure, then takes seed
    `seed_index`'s agent state (unbatched), ready for `agent.policy(agent_state, obs)`.

    Raises:
        RlkitError: no config.yaml, no checkpoint, or no such seed.
    """
    import jax

    from rlkit.checkpoint import Checkpointer

    run_dir = Path(run_dir)
    require((run_dir / "config.yaml").exists(), str(run_dir),
            "has no config.yaml; pass the directory of a run made by python -m rlkit.train")
    experiment = load_experiment(run_dir / "config.yaml")
    experiment = dataclasses.replace(
        experiment, run=dataclasses.replace(experiment.run, shard_seeds=False,
                                            run_dir=str(run_dir)))
    require(0 <= seed_index < experiment.run.seeds, "seed index",
            f"{seed_index} is not one of the run's {experiment.run.seeds} seeds")
    checkpointer = Checkpointer(run_dir / "checkpoints")
    try:
        require(checkpointer.latest_step() is not None, str(run_dir),
                "has no checkpoint yet; train it (or --resume it) until one is saved")
        built = build(experiment)
        try:
            keys = jax.random.split(jax.random.key(experiment.run.seed), experiment.run.seeds)
            _, carry, skipped = checkpointer.restore_newest_readable(built.trainer.init(keys))
            for line in skipped:
                print(f"warning: {line}; using an older checkpoint", file=sys.stderr)
        finally:
            built.trainer.close()
    finally:
        checkpointer.close()
    agent_state = jax.tree.map(lambda x: x[seed_index], built.trainer.agent_state(carry))
    return experiment, built.agent, agent_state


def _offline_trainer(experiment: Experiment, agent, dataset, spec, iterations_per_chunk: int):
    """The offline driver with the right evaluator for the env (JAX or host)."""
    from rlkit.loops.offline import make_jax_evaluator, make_offline_trainer

    run = experiment.run
    entry = registry.env_entry(experiment.env)
    close = lambda: None  # noqa: E731
    if entry.kind == "host":
        from rlkit.loops.host import make_host_evaluator

        evaluate, close = make_host_evaluator(
            agent.policy, lambda num_envs, seed: registry.make_host_env(
                experiment.env, experiment.env_config, num_envs, seed),
            spec, run.seeds, run.seed, run.eval_episodes)
    else:
        env = registry.make_env(experiment.env, experiment.env_config)
        evaluate = make_jax_evaluator(agent, env, env.default_params, run.eval_episodes)
    return make_offline_trainer(agent, dataset.transitions, iterations_per_chunk, evaluate,
                                seed=run.seed, stream=run.stream_dataset, close=close)


def print_summary(result) -> None:
    """The results table printed at the end of a run."""
    from rich.console import Console
    from rich.table import Table

    s = result.summary
    budget = (f"{s['updates']:,} updates (offline)" if "updates" in s
              else f"{s['env_steps']:,} env steps")
    table = Table(title=f"{s['agent']} on {s['env']}: {s['seeds']} seed(s), {budget} each")
    table.add_column("metric")
    table.add_column("value", justify="right")
    lo, hi = s["final_return_ci95"]
    table.add_row("final return (mean over seeds)", f"{s['final_return']:.4g}")
    table.add_row("95% CI", f"[{lo:.4g}, {hi:.4g}]")
    table.add_row("IQM", f"{s['final_return_iqm']:.4g}")
    if "optimal_return" in s:
        table.add_row("optimal return (exact)", f"{s['optimal_return']:.4g}")
        table.add_row("sub-optimality", f"{s['suboptimality']:.4g}")
    if s.get("stopped_early"):
        table.add_row("stopped early", f"after chunk {s['last_chunk']}: continue with --resume")
    table.add_row("per seed", ", ".join(f"{x:.4g}" for x in s["per_seed"]))
    if "updates" in s:
        table.add_row("updates / second (all seeds)", f"{s['updates_per_second']:,.0f}")
        table.add_row("dataset", f"{s['dataset']['path']} ({s['dataset']['transitions']:,} "
                      "transitions)")
    else:
        table.add_row("env steps / second (all seeds)", f"{s['steps_per_second']:,.0f}")
    table.add_row("compile seconds", f"{s['compile_seconds']:.1f}")
    table.add_row("wall seconds", f"{s['wall_seconds']:.1f}")
    table.add_row("device", s["device"])
    console = Console()
    console.print(table)
    console.print(f"run directory: {result.run_dir}  (curves.png, metrics.csv, summary.json)")


def _deterministic_requested(argv: list[str]) -> bool:
    """`--deterministic` as the parsed run will see it, read before JAX starts."""
    if "--no-deterministic" in argv:
        return False
    if "--deterministic" in argv:
        return True
    saved = _option_value(argv, "--resume")
    saved = Path(saved) / "config.yaml" if saved is not None else _option_value(argv, "--config")
    if saved is not None and Path(saved).is_file():
        try:
            data = yaml.safe_load(Path(saved).read_text()) or {}
            return bool((data.get("run") or {}).get("deterministic", True))
        except (yaml.YAMLError, AttributeError):
            return True  # parse_experiment reports the broken file
    return True


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(top_level_help())
        return 0
    try:
        # XLA reads its flags when the backend starts, which parsing may already do.
        rlkit.request_gpu_determinism(_deterministic_requested(argv))
        experiment, resume = parse_experiment(argv)
        result = execute(experiment, resume)
    except RlkitError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: resume with --resume RUN_DIR (the last checkpoint is kept)",
              file=sys.stderr)
        return INTERRUPTED
    print_summary(result)
    return 0


if __name__ == "__main__":
    exit_cli(main())
