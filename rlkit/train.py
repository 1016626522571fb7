"""`python -m rlkit.train AGENT --env ENV [--dataset DIR] [--seeds N] [--total-steps N]
[--run-dir DIR [--overwrite]] [--config FILE] [--agent.FIELD VALUE ...]
[--env-config.FIELD VALUE ...]`, or `python -m rlkit.train --resume RUN_DIR`

Trains an agent on an environment, several seeds side by side, and writes a run directory
(see `rlkit.runner`). Offline agents (bc, bcq, cql, iql, dt) learn from `--dataset` alone and use
the environment only to evaluate (`--total-steps` then counts updates); hybrid agents (hyq, hyglow)
mix the dataset into their online batches, and `--h2o` runs an offline agent inside H2O's rounds.
With `--dataset`, `--env` and the env's parameters default to the dataset's own.
`python -m rlkit.train --help` lists the agents and environments;
`python -m rlkit.train AGENT --env ENV --help` lists every field of that agent and env.

Every input error (unknown agent or env, impossible config, missing optional extra, broken
config file, a flag tyro cannot parse) is reported as one line naming the field and the fix,
with exit status 2, before anything is compiled. A run never writes into another run's directory
(--overwrite replaces it); --resume continues with the run's saved configuration. Exit status:
0 done, 1 a disk that refused a write, 2 bad input, 3 diverged (non-finite parameters),
130 Ctrl-C, 143 SIGTERM.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import sys
import time
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, NamedTuple, Union

import yaml

import rlkit
from rlkit import registry
from rlkit.errors import (
    DIVERGED,
    RlkitError,
    require,
    run_cli,
    run_guarded,
    tyro_cli,
)
from rlkit.io import write_text

MAX_CHUNKS = 100_000  # --num-logs beyond this only slows the run down with host round trips
MAX_ITERATIONS = 2**31 - 1  # drivers count iterations in int32
# Agent fields that repeat a run option (the agent's schedules need the budget). Only the run
# option is a flag; config.yaml keeps both copies, which must agree.
RUN_LEVEL_AGENT_FIELDS = {"total_steps": "--total-steps"}


@dataclass(frozen=True)
class RunOptions:
    """Options of a run that belong to neither the agent nor the environment."""

    seeds: int = 1
    """Independent seeds trained side by side (vmapped; sharded over devices when possible)."""
    seed: int = 0
    """Base random seed; seed i of a run uses the i-th split of jax.random.key(seed)."""
    total_steps: int | None = None
    """Budget per seed, in the unit of the agent's driver: env steps for online and hybrid
    agents (ppo, dqn, hyq; glow, hyglow and --h2o count the env steps of their rounds),
    gradient updates for offline agents (bc, bcq, cql, iql, dt). Default: the agent's own
    total_steps, else 100000. A budget that is not a whole number of chunks is cut to one, said
    at the start."""
    run_dir: str | None = None
    """Run directory (default: runs/AGENT-ENV-TIMESTAMP)."""
    num_logs: int = 20
    """About how many chunks the run is cut into (log, evaluate and checkpoint after each):
    the nearest count that divides the budget, said at the start when it differs."""
    checkpoint_every: int = 1
    """Save a checkpoint every this many chunks (and always after the last)."""
    keep_checkpoints: int = 2
    """Keep the newest this many checkpoints; 0 keeps every one (needed by python -m
    rlkit.collect --policy suboptimal, which replays them all, and useful for --policy mixed)."""
    eval_episodes: int | None = None
    """Evaluation episodes per seed, for environments without an exact model (default 16).
    Not for procgen, which is evaluated on its level splits: see --split-episodes."""
    split_episodes: int = 100
    """procgen only: evaluation episodes per seed on each of the train, validation and test
    levels (Mediratta et al. 2024: 100); metrics.csv and summary.json get train_return,
    validation_return, test_return and their *_normalized_return, and eval_return is the test
    return."""
    split_protocol: str = "fixed"
    """procgen only: where the validation and test levels lie. fixed (the paper's): levels
    200-249 and 250 and up, whatever the training levels; after-train: the 50 levels after the
    training levels, then every level after those (see rlkit.procgen)."""
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
    """Offline agents (bc, bcq, cql, iql, dt): run inside H2O's reduction to hybrid RL, alternating
    updates on dataset + online data with rollouts of the policy (--total-steps counts env
    steps)."""
    h2o_episodes_per_round: int | None = None
    """With --h2o: episodes rolled out per round (None: 4, or 1 with --h2o-preset paper)."""
    h2o_preset: str = "practical"
    """With --h2o: "practical" (warm starts, the whole dataset in proportion) or "paper" (one
    episode a round, the dataset's first t - 1 episodes half and half, refit each round:
    `rlkit.h2o`)."""
    h2o_updates_per_round: int = 100
    """With --h2o: the offline agent's updates per round."""
    deterministic: bool = True
    """On GPUs, ask XLA for deterministic kernels, so the same config and seed reproduce
    metrics.csv exactly (PPO on an H200 measured 1.4-1.5x slower with it). CPUs are
    deterministic either way."""

    def __post_init__(self):
        require(self.run_dir is None or self.run_dir.strip() != "", "--run-dir",
                "is empty; pass a directory, or drop it for runs/AGENT-ENV-TIMESTAMP")
        require(self.seeds >= 1, "--seeds", f"must be at least 1, got {self.seeds}")
        require(0 <= self.seed < 2**32, "--seed",
                f"must be in [0, 2**32), got {self.seed}; JAX and numpy seeds are 32-bit")
        require(self.total_steps is None or self.total_steps > 0, "--total-steps",
                f"must be positive, got {self.total_steps}")
        require(1 <= self.num_logs <= MAX_CHUNKS, "--num-logs",
                f"must be between 1 and {MAX_CHUNKS:,}, got {self.num_logs}")
        require(self.stop_after_chunks is None or self.stop_after_chunks >= 1,
                "--stop-after-chunks", f"must be at least 1, got {self.stop_after_chunks}; "
                "drop it to run to the end")
        require(self.checkpoint_every >= 1, "--checkpoint-every",
                f"must be at least 1, got {self.checkpoint_every}")
        require(self.keep_checkpoints >= 0, "--keep-checkpoints",
                f"must be at least 0 (0: keep every checkpoint), got {self.keep_checkpoints}")
        require(self.eval_episodes is None or self.eval_episodes >= 1, "--eval-episodes",
                f"must be at least 1, got {self.eval_episodes}")
        require(self.split_episodes >= 1, "--split-episodes",
                f"must be at least 1, got {self.split_episodes}")
        from rlkit.procgen import PROTOCOLS

        require(self.split_protocol in PROTOCOLS, "--split-protocol",
                f"unknown protocol {self.split_protocol!r}; choose fixed (the paper's) or "
                "after-train")
        if not self.h2o:  # H2O's options would be read by nothing
            for flag, value, default in (
                    ("--h2o-preset", self.h2o_preset, "practical"),
                    ("--h2o-episodes-per-round", self.h2o_episodes_per_round, None),
                    ("--h2o-updates-per-round", self.h2o_updates_per_round, 100)):
                require(value == default, flag, f"has no effect without --h2o; add --h2o to "
                        f"run the offline agent inside H2O, or drop {flag}")


    @property
    def evaluation_episodes(self) -> int:
        """--eval-episodes, or its default 16."""
        return 16 if self.eval_episodes is None else self.eval_episodes


def is_procgen(env_name: str) -> bool:
    """Whether `env_name` is a procgen game (evaluated on level splits)."""
    return env_name.startswith("procgen:")


def check_split_options(experiment: Experiment) -> None:
    """procgen runs are evaluated on level splits (--split-episodes, --split-protocol), other
    runs on --eval-episodes; a flag the run would not read is refused, and so are impossible
    splits (before anything is built).

    Raises:
        RlkitError: --eval-episodes on procgen, a split flag elsewhere, or splits that overlap
            the training levels (see `rlkit.procgen.level_splits`).
    """
    run = experiment.run
    if is_procgen(experiment.env):
        require(run.eval_episodes is None, "--eval-episodes",
                f"{experiment.env} is evaluated on its train, validation and test levels; pass "
                f"--split-episodes {run.eval_episodes} (episodes per seed and split) instead")
        from rlkit.procgen import level_splits

        config = experiment.env_config
        level_splits(config.num_levels, config.start_level, run.split_protocol)
        return
    for flag, value, default in (("--split-episodes", run.split_episodes, 100),
                                 ("--split-protocol", run.split_protocol, "fixed")):
        require(value == default, flag,
                f"has no effect on {experiment.env}: level splits exist for procgen games "
                f"only; drop {flag} (--eval-episodes sets the evaluation episodes)")


def host_evaluator(experiment: Experiment, policy_fn: Callable, spec, history=None):
    """`(evaluate, close)` of a host env: the level-split evaluator for procgen
    (`rlkit.loops.host.make_level_split_evaluator`), else `make_host_evaluator`; an agent's
    `HistoryPolicy` (DT), if any, is evaluated instead of `policy_fn`."""
    from rlkit.loops.host import make_host_evaluator, make_level_split_evaluator

    run = experiment.run
    if is_procgen(experiment.env):
        return make_level_split_evaluator(
            policy_fn, lambda config, num_envs, seed: registry.make_host_env(
                experiment.env, config, num_envs, seed),
            experiment.env_config, spec, run.seeds, run.seed, run.split_episodes,
            run.split_protocol, history=history)
    return make_host_evaluator(
        policy_fn, lambda num_envs, seed: registry.make_host_env(
            experiment.env, experiment.env_config, num_envs, seed),
        spec, run.seeds, run.seed, run.evaluation_episodes, history=history)


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


def _typed(value: Any, hint: Any) -> tuple[bool, Any]:
    """(whether `value` fits type `hint`, the value converted to it): YAML gives lists for
    tuples, and strings for floats written without a dot (`1e-3`)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or isinstance(hint, typing.TypeVar):
        return True, value
    if origin in (Union, types.UnionType):
        for option in args:
            ok, converted = _typed(value, option)
            if ok:
                return True, converted
        return False, value
    if hint is type(None):
        return value is None, value
    if origin is typing.Literal:
        return value in args, value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False, value
        items = args[:1] * len(value) if len(args) == 2 and args[1] is Ellipsis else args
        if len(items) != len(value):
            return False, value
        converted = [_typed(v, h) for v, h in zip(value, items, strict=True)]
        return all(ok for ok, _ in converted), tuple(v for _, v in converted)
    if hint is float and isinstance(value, str):
        try:
            return True, float(value)
        except ValueError:
            return False, value
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if isinstance(hint, type):
        return isinstance(value, hint), value
    return True, value  # a type this check does not know: the config's own validation decides


def _from_dict(cls: type, values: dict, where: str):
    """Build dataclass `cls` from a dict, with a clear error for unknown or wrong-typed fields.

    Raises:
        RlkitError: naming `where.FIELD`, the value and the type it should have.
    """
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    require(not unknown, where, f"unknown field(s) {unknown}; known: {sorted(known)}")
    hints = typing.get_type_hints(cls)
    converted = {}
    for name, value in values.items():
        ok, converted[name] = _typed(value, hints[name])
        require(ok, f"{where}.{name}",
                f"{value!r} is not of type {_type_name(hints[name])}; fix the value in the file")
    try:
        return cls(**converted)
    except TypeError as error:
        raise RlkitError(f"{where}: {error}") from None
    except RlkitError as error:  # the config's own checks: name the key path in the file
        file, _, section = where.rpartition(": ")
        renamed = _renamed(error, [(cls, lambda name: f"{section}.{name}")])
        text = str(renamed) if renamed is not error else f"{section}: {error}"
        raise RlkitError(f"{file}: {text}" if file else text) from None


def _type_name(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


def load_experiment(path: Path, one_budget: bool = True) -> Experiment:
    """Read a config.yaml written by a run (or by hand).

    Args:
        path: the file.
        one_budget: refuse a file whose `agent_config.total_steps` (if written) differs from
            `run.total_steps` (`RUN_LEVEL_AGENT_FIELDS`). `--resume` checks edits against the
            run's saved copy first, whose message says more.

    Raises:
        RlkitError: no such file, a directory, not YAML, unknown fields or wrong-typed values,
            two budgets that differ.
    """
    if path.is_dir():
        hint = (f"; did you mean {path / 'config.yaml'}?" if (path / "config.yaml").is_file()
                else "")
        raise RlkitError(f"{path}: is a directory, not a config file{hint}")
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise RlkitError(f"{path}: no such file; pass a run directory's config.yaml") from None
    except (OSError, UnicodeDecodeError) as error:
        raise RlkitError(f"{path}: cannot be read ({error}); pass a config.yaml") from None
    except yaml.YAMLError as error:
        detail = " ".join(str(error).split())  # yaml's message spans lines; the CLI prints one
        raise RlkitError(f"{path}: not valid YAML ({detail}); fix or regenerate it") from None
    require(isinstance(data, dict) and {"agent", "env"} <= set(data), str(path),
            "must be a mapping with at least 'agent' and 'env' (as written by rlkit.train)")
    try:
        module = registry.agent_module(data["agent"])
        entry = registry.env_entry(data["env"])
    except RlkitError as error:
        raise RlkitError(f"{path}: {error}") from None
    experiment = Experiment(
        agent=data["agent"],
        env=data["env"],
        run=_from_dict(RunOptions, data.get("run") or {}, f"{path}: run"),
        agent_config=_from_dict(module.Config, data.get("agent_config") or {},
                                f"{path}: agent_config"),
        env_config=_from_dict(entry.config_class(),
                              {**dict(entry.defaults), **(data.get("env_config") or {})},
                              f"{path}: env_config"),
    )
    # One budget: where the file writes both copies, they agree.
    written = data.get("agent_config") or {}
    for name, flag in RUN_LEVEL_AGENT_FIELDS.items() if one_budget else ():
        run_value, agent_value = getattr(experiment.run, name), written.get(name)
        require(name not in written or run_value is None or agent_value == run_value,
                f"{path}: agent_config.{name}",
                f"is {agent_value!r} but run.{name} is {run_value!r}; they are one setting "
                f"({flag}): set run.{name} and delete agent_config.{name}")
    return experiment


class _PreParser(argparse.ArgumentParser):
    """argparse that raises `RlkitError` instead of printing usage and exiting."""

    def error(self, message: str):
        raise RlkitError(message)


def _preparse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """The flags that decide the types and defaults of the full parse: `--config`, `--resume`,
    `--env`, `--dataset` and `--deterministic` (read before JAX starts).

    A real parser (argparse, exact flag names, every other flag left to tyro); tyro parses these
    flags again, so they appear in `--help` and their values are checked there too.

    Returns:
        (known, rest): the five flags' values and the arguments left to tyro.
    """
    parser = _PreParser(add_help=False, allow_abbrev=False)
    for flag in ("--config", "--resume", "--env", "--dataset"):
        parser.add_argument(flag)
    parser.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=None)
    return parser.parse_known_args(argv)


def option_value(argv: list[str], flag: str) -> str | None:
    """The value of `--flag VALUE` or `--flag=VALUE` in argv (None if absent), through argparse.

    Raises:
        RlkitError: the flag is given without a value.
    """
    parser = _PreParser(add_help=False, allow_abbrev=False)
    parser.add_argument(flag)
    known, _ = parser.parse_known_args(argv)
    return getattr(known, flag.lstrip("-").replace("-", "_"))


_option_value = option_value  # rlkit.collect reads its flags through this name


def top_level_help() -> str:
    lines = [__doc__.strip(), "", "Agents:"]
    lines += [f"  {name:24s} {text}" for name, text in registry.agent_names().items()]
    lines += ["", "Environments (--env):"]
    lines += [f"  {name:24s} {text}" for name, text in registry.env_descriptions().items()]
    lines += ["", "Language-model agents (python -m rlkit.train AGENT --task TASK "
              "[--model DIR] [--dataset pairs.jsonl]; see rlkit.train_preference):"]
    lines += [f"  {name:24s} {text}" for name, text in registry.preference_agent_names().items()]
    lines += ["", "Policy identification in linear MDPs (python -m rlkit.train AGENT --env "
              "linear-hard-state [--dataset DIR]; see rlkit.loops.ftpedel):"]
    lines += [f"  {name:24s} {text}"
              for name, text in registry.identification_agent_names().items()]
    lines += ["", "Text tasks (--task):"]
    lines += [f"  {name:24s} {text}" for name, text in registry.text_task_names().items()]
    lines += ["", "Example: python -m rlkit.train ppo --env cartpole --seeds 4"]
    return "\n".join(lines)


class Parsed(NamedTuple):
    """A parsed command line: the experiment and what to do with its run directory."""

    experiment: Experiment
    resume: bool
    overwrite: bool


# Run options a resumed run may change: they alter neither shapes nor the chunk schedule.
RESUMABLE_EDITS = ("run_dir", "stop_after_chunks", "progress", "checkpoint_every",
                   "keep_checkpoints", "deterministic", "shard_seeds")


def _flag_of(path: str) -> str:
    """The command-line flag of a config.yaml field path (`run.seeds` -> `--seeds`)."""
    section, _, name = path.partition(".")
    if section == "agent_config" and name in RUN_LEVEL_AGENT_FIELDS:
        return RUN_LEVEL_AGENT_FIELDS[name]
    dashed = name.replace("_", "-")
    return {"run": f"--{dashed}", "agent_config": f"--agent.{dashed}",
            "env_config": f"--env-config.{dashed}",
            "task_config": f"--task-config.{dashed}"}.get(section, f"--{section}")


def config_differences(old: dict, new: dict, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """`(field path, old value, new value)` for every field of two config.yaml dicts that
    differs (`run.seeds`, `agent_config.learning_rate`, ...)."""
    out = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append((f"{prefix}{key}", a, b))
    return out


def _check_resume_edits(saved: Experiment, asked: Experiment, where: str, fix: str) -> None:
    """Refuse any change of `asked` over `saved` except `RESUMABLE_EDITS`, naming the field."""
    differences = config_differences(saved.to_dict(), asked.to_dict())
    # A run option first: --total-steps changes run.total_steps and the agent's copy alike.
    for path, old, new in sorted(differences, key=lambda d: not d[0].startswith("run.")):
        if path.startswith("run.") and path[4:] in RESUMABLE_EDITS:
            continue
        raise RlkitError(
            f"{where}: {path} ({_flag_of(path)}) would change from {old!r} to {new!r}, but a "
            f"resumed run continues with its saved configuration; {fix}")


def _without_run_level_fields(config_type: type) -> type:
    """`config_type` with its `RUN_LEVEL_AGENT_FIELDS` hidden from tyro (a frozen subclass), so
    that `--agent.total-steps` does not exist beside `--total-steps`: one budget, one flag."""
    import tyro

    hidden = [(f.name, Annotated[f.type, tyro.conf.Suppress], field(default=f.default))
              for f in dataclasses.fields(config_type) if f.name in RUN_LEVEL_AGENT_FIELDS]
    if not hidden:
        return config_type
    return dataclasses.make_dataclass(config_type.__name__, hidden, bases=(config_type,),
                                      frozen=True)


def _as_config(value, config_type: type):
    """`value` (an instance of a `_without_run_level_fields` subclass) as `config_type`."""
    if type(value) is config_type:
        return value
    return config_type(**{f.name: getattr(value, f.name) for f in dataclasses.fields(config_type)})


def _agent_arguments(name: str, default) -> type:
    """The tyro subcommand of agent `name`: its config as `--agent.FIELD` flags."""
    module = registry.agent_module(name)
    cli_type = _without_run_level_fields(type(default))
    default = _as_config(default, cli_type) if cli_type is not type(default) else default
    Args = dataclasses.make_dataclass(name, [("agent", cli_type, field(default=default))],
                                      frozen=True)
    Args.__doc__ = help_description(module)
    return Args


def help_description(module) -> str:
    """An agent module's `--help` description: its docstring's whole first paragraph on one
    line (its first line alone can stop mid-sentence)."""
    return " ".join(module.__doc__.strip().split("\n\n")[0].split())


def _renamed(error: RlkitError, namers: list[tuple[type | tuple[type, ...], Callable]]
             ) -> RlkitError:
    """`error` with the config fields it names (`learning_rate: must be ...`) renamed for the
    user: the flag they typed (`--agent.learning-rate: ...`) or a config file's key path.

    Args:
        error: raised while a config dataclass was built (its `__post_init__` names fields).
        namers: `(config classes, field name -> shown name)` for the configs that may have
            raised it; the one whose `__post_init__` raised it is found in the traceback.

    Returns:
        The renamed error, or `error` itself when no config of `namers` raised it.
    """
    owner = None
    traceback = error.__traceback__
    while traceback is not None and owner is None:
        frame = traceback.tb_frame
        if frame.f_code.co_name == "__post_init__":
            owner = frame.f_locals.get("self")
        traceback = traceback.tb_next
    namer = next((namer for classes, namer in namers if isinstance(owner, classes)), None)
    if namer is None:
        return error
    fields = {f.name for f in dataclasses.fields(owner)}
    first, sep, rest = str(error).partition(": ")
    name = first.removeprefix("--").replace("-", "_")  # RunOptions names its flags already
    if not sep or name not in fields:
        return error
    # Other fields the message names (`num_envs * rollout_length`) are renamed too; plain words
    # that happen to be field names (`gamma`) are left alone.
    for other in sorted(fields, key=len, reverse=True):
        if "_" in other:
            rest = re.sub(rf"(?<![\w.-]){other}(?!\w)", namer(other), rest)
    return RlkitError(f"{namer(name)}: {rest}")


def _flag_namer(prefix: str) -> Callable[[str], str]:
    """field -> its flag: `--agent.learning-rate` for prefix `--agent.`, and the run flag of
    the agent fields the run sets (`RUN_LEVEL_AGENT_FIELDS`)."""

    def flag(name: str) -> str:
        if prefix == "--agent." and name in RUN_LEVEL_AGENT_FIELDS:
            return RUN_LEVEL_AGENT_FIELDS[name]
        return f"{prefix}{name.replace('_', '-')}"

    return flag


def _parser(env_name: str, env_default, run_default: RunOptions, base: Experiment | None,
            env_config_type: type) -> type:
    """The tyro root of `python -m rlkit.train`: one subcommand per agent, the run options as
    top-level flags (`--seeds`, ...), `--env`, `--env-config.FIELD`, `--config`, `--resume`."""
    import tyro

    commands = {name: _agent_arguments(name, base.agent_config if base is not None
                                       and base.agent == name
                                       else registry.agent_module(name).Config())
                for name in registry.agent_names()}
    subcommands = [Annotated[cls, tyro.conf.subcommand(name)] for name, cls in commands.items()]
    agent_field = field()
    if base is not None:  # --config / --resume name the agent; naming it again is optional
        agent_field = field(default=commands[base.agent]())
    text = lambda help: tyro.conf.arg(help=help)  # noqa: E731
    Root = dataclasses.make_dataclass("Args", [
        ("algorithm", Union[tuple(subcommands)], agent_field),  # noqa: UP007 (a runtime union)
        ("run", Annotated[RunOptions, tyro.conf.OmitArgPrefixes], field(default=run_default)),
        ("env", Annotated[str, text("Environment (python -m rlkit.train --help lists them).")],
         field(default=env_name)),
        ("env_config", env_config_type, field(default=env_default)),
        ("config", Annotated[str | None, text(
            "A config.yaml of an earlier run (or written by hand): its values become the "
            "defaults, the run gets a new directory.")], field(default=None)),
        ("resume", Annotated[str | None, text(
            "Continue the run in this directory from its newest checkpoint, with its saved "
            "configuration (only --stop-after-chunks, --progress, --checkpoint-every and "
            "--deterministic may change).")], field(default=None)),
        ("overwrite", Annotated[bool, text(
            "Replace the run already in --run-dir (its checkpoints, metrics and summary are "
            "deleted first).")], field(default=False)),
    ], frozen=True)
    Root.__doc__ = (f"Train an agent on {env_name}; --total-steps counts env steps, or updates "
                    "for offline agents.")
    return Root


def parse_experiment(argv: list[str]) -> Parsed:
    """Turn command-line arguments into a `Parsed` experiment.

    Raises:
        RlkitError: for unknown names, impossible values and tyro's parse errors (one line).
    """
    import tyro

    first, rest = _preparse(argv)
    for name, flag in RUN_LEVEL_AGENT_FIELDS.items():
        typed = {f"--agent.{name}", f"--agent.{name.replace('_', '-')}"}
        require(not any(arg.split("=")[0] in typed for arg in rest),
                f"--agent.{name.replace('_', '-')}",
                f"is not a flag: {flag} sets it for the run and the agent alike; pass {flag}")
    require(first.config is None or first.resume is None, "--config",
            "cannot be combined with --resume: a resumed run continues with its own saved "
            "config.yaml; to start a new run from it, drop --resume")
    base: Experiment | None = None
    if first.resume is not None:
        base = load_saved_experiment(Path(first.resume))
    elif first.config is not None:
        # A run from another run's config is a new run: it gets its own directory.
        base = load_experiment(Path(first.config))
        base = dataclasses.replace(base, run=dataclasses.replace(base.run, run_dir=None))
    if base is not None:  # --stop-after-chunks is for one invocation, not the run
        base = dataclasses.replace(base, run=dataclasses.replace(base.run,
                                                                 stop_after_chunks=None))
    info = dataset_info(first.dataset) if first.dataset is not None else None
    env_name = first.env or (base.env if base else None) or (info.env_id if info else None)
    if env_name is None and any(arg in ("-h", "--help") for arg in rest):
        # `AGENT --help` without an env: the agent's flags, with CartPole's env flags.
        env_name = "cartpole"
        print("(no --env given: the --env-config flags below are CartPole's; "
              "`python -m rlkit.train AGENT --env ENV --help` shows another env's)")
    if env_name is None:
        raise RlkitError("--env is required, e.g. --env cartpole (see --help for the list)")
    entry = registry.env_entry(env_name)
    same_env = base is not None and base.env == env_name
    try:
        env_default = base.env_config if same_env else entry.default_config()
    except RlkitError as error:  # the id in --env gym:ID (its env_id) is not known
        raise _renamed(error, [(entry.config_class(), lambda name: "--env" if name == "env_id"
                                else _flag_namer("--env-config.")(name))]) from None
    if info is not None and info.env_id == env_name and info.env_params and not same_env:
        # Evaluate in the environment the data came from unless told otherwise.
        env_default = _from_dict(type(env_default), info.env_params,
                                 f"{first.dataset}/metadata.json: env_params")
    named = rest[0] if rest and not rest[0].startswith("-") else None
    if named is not None:
        registry.agent_module(named)  # an unknown name: one line with the closest names
    elif base is None:
        raise RlkitError("name an agent first, e.g. `python -m rlkit.train ppo --env cartpole`; "
                         f"agents: {', '.join(registry.agent_names())}")
    run_default = base.run if base else RunOptions()
    Root = _parser(env_name, env_default, run_default, base, type(env_default))
    prog = "python -m rlkit.train"
    agent_configs = tuple(registry.agent_module(name).Config for name in registry.agent_names())
    try:  # a config's own checks name its fields: say which flag set them
        args = tyro_cli(Root, argv, prog,
                        config=(tyro.conf.CascadeSubcommandArgs, tyro.conf.OmitSubcommandPrefixes))
        agent_name = type(args.algorithm).__name__
        run = args.run
        agent_config = _as_config(args.algorithm.agent,
                                  registry.agent_module(agent_name).Config)
        if run.total_steps is not None and hasattr(agent_config, "total_steps"):
            agent_config = dataclasses.replace(agent_config, total_steps=run.total_steps)
    except RlkitError as error:
        raise _renamed(error, [(agent_configs, _flag_namer("--agent.")),
                               (type(env_default), _flag_namer("--env-config."))]) from None
    if run.total_steps is None:
        run = dataclasses.replace(run, total_steps=getattr(agent_config, "total_steps", 100_000))
    experiment = Experiment(agent_name, env_name, run, agent_config, args.env_config)
    if first.resume is None:
        return Parsed(experiment, resume=False, overwrite=args.overwrite)
    require(not args.overwrite, "--overwrite",
            "cannot be combined with --resume; drop one of them")
    experiment = dataclasses.replace(
        experiment, run=dataclasses.replace(experiment.run, run_dir=first.resume))
    _check_resume_edits(base, experiment, "--resume",
                        f"drop the flag, or start a new run with --config "
                        f"{Path(first.resume) / 'config.yaml'} and the new value")
    return Parsed(experiment, resume=True, overwrite=False)


SAVED_CONFIG = Path("checkpoints") / "config.yaml"  # the configuration a run started with


def load_saved_experiment(run_dir: Path) -> Experiment:
    """The configuration of the run in `run_dir`, for `--resume`.

    A run keeps a copy of the config.yaml it started with beside its checkpoints; an edit of
    config.yaml since then is refused (naming the field) unless it is one of `RESUMABLE_EDITS`.

    Raises:
        RlkitError: no run in `run_dir`, or config.yaml edited in a field a resume cannot change.
    """
    require(run_dir.is_dir() and (run_dir / "config.yaml").is_file(), "--resume",
            f"{run_dir} has no config.yaml; pass the directory of an earlier run")
    saved = (run_dir / SAVED_CONFIG).is_file()
    current = load_experiment(run_dir / "config.yaml", one_budget=not saved)
    if saved:  # the saved copy has one budget; an edit of either is refused below
        _check_resume_edits(
            load_experiment(run_dir / SAVED_CONFIG), current, str(run_dir / "config.yaml"),
            f"undo the edit ({run_dir / SAVED_CONFIG} keeps the configuration the run started "
            f"with), or start a new run with --config {run_dir / 'config.yaml'}")
    return current


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
        for flag, given in (("--dataset", run.dataset is not None),
                            ("--stream-dataset", run.stream_dataset)):
            require(not given, flag,
                    f"{experiment.agent} learns online only and uses no dataset; drop {flag} or "
                    "use an offline agent (bc, bcq, cql, iql, dt) or a hybrid one (hyq, hyglow)")
        return None
    require(run.dataset is not None, "--dataset",
            f"{experiment.agent} learns from a dataset; pass --dataset DIR (make one with "
            f"python -m rlkit.collect --env {experiment.env} --policy random --episodes 100 "
            "--out DIR)")
    from rlkit.types import OfflineFeed

    require(not run.stream_dataset or isinstance(feed, OfflineFeed), "--stream-dataset",
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
    does exactly the requested iterations; if no divisor gives between `num_logs / 2` and
    `2 * num_logs` chunks, the nearest length and a run shorter by less than one chunk.

    Only chunk counts in that window are tried (O(num_logs), whatever the total). Among equally
    near counts the larger is taken.
    """
    low, high = max(1, math.ceil(num_logs / 2)), min(total_iterations, 2 * num_logs)
    counts = [c for c in range(low, high + 1) if total_iterations % c == 0]
    if counts:
        best = min(counts, key=lambda c: (abs(math.log(c / num_logs)), -c))
        return total_iterations // best
    return max(1, total_iterations // num_logs)


class Budget(NamedTuple):
    """How a run's `--total-steps` is cut into compiled chunks."""

    iterations_per_chunk: int
    num_chunks: int
    note: str | None  # said once at the start when the run differs from what was asked


def plan_budget(total: int, units_per_iteration: int, num_logs: int, unit_label: str,
                agent: str) -> Budget:
    """Cut a budget of `total` units per seed into chunks of whole iterations.

    Raises:
        RlkitError: less than one iteration, or more iterations than an int32 counter holds.
    """
    total_iterations = total // units_per_iteration
    require(total_iterations >= 1, "--total-steps",
            f"{total} is less than one iteration of {agent} ({units_per_iteration:,} "
            f"{unit_label}); raise it")
    require(total_iterations <= MAX_ITERATIONS, "--total-steps",
            f"{total:,} is {total_iterations:,} iterations of {agent}, more than the "
            f"{MAX_ITERATIONS:,} the drivers count; lower it")
    iterations_per_chunk = chunk_length(total_iterations, num_logs)
    num_chunks = total_iterations // iterations_per_chunk
    runs = num_chunks * iterations_per_chunk * units_per_iteration
    note = None
    if runs != total or num_chunks != num_logs:
        note = (f"note: running {runs:,} {unit_label} per seed in {num_chunks} "
                f"chunk{'' if num_chunks == 1 else 's'} "
                f"(asked: --total-steps {total:,}, --num-logs {num_logs}): an iteration of "
                f"{agent} is {units_per_iteration:,} {unit_label} and every chunk has the same "
                f"{iterations_per_chunk:,} iteration{'' if iterations_per_chunk == 1 else 's'}")
    return Budget(iterations_per_chunk, num_chunks, note)


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
    budget_note: str | None = None


def make_agent(experiment: Experiment) -> tuple[Any, Any, Any]:
    """The agent of `experiment` (wrapped in H2O's reduction with `--h2o`), with its env.

    Returns:
        `(agent, spec, env)`: the `rlkit.types.Agent`, the env's `EnvSpec`, and the JAX
        environment (None for host environments, which are only probed for their spec).

    Raises:
        RlkitError: an env or agent config that cannot be built, a user's env that breaks the
            Environment contract.
    """
    run = experiment.run
    entry = registry.env_entry(experiment.env)
    env = None
    if entry.kind == "host":
        probe = registry.make_host_env(experiment.env, experiment.env_config, 1, run.seed)
        spec = probe.spec
        probe.close()
    else:
        env = registry.make_env(experiment.env, experiment.env_config)
        if entry.custom:  # a user's environment: checked once, before it can fail deep in jax
            registry.check_env(env, experiment.env)
        spec = env.spec
    agent = registry.make_agent(experiment.agent, experiment.agent_config, spec, env)
    if run.h2o:
        from rlkit.h2o import make_h2o_agent

        agent = make_h2o_agent(agent, spec, episodes_per_round=run.h2o_episodes_per_round,
                               updates_per_round=run.h2o_updates_per_round,
                               preset=run.h2o_preset)
    return agent, spec, env


def build(experiment: Experiment) -> Built:
    """Build the environment, agent, dataset and driver of `experiment` (nothing compiled yet).

    Raises:
        RlkitError: for impossible budgets and datasets that do not fit the agent or env.
    """
    from rlkit.loops.common import ENV_STEPS, UPDATES
    from rlkit.types import OfflineFeed, RoundFeed

    run = experiment.run
    entry = registry.env_entry(experiment.env)
    check_split_options(experiment)
    agent, spec, env = make_agent(experiment)
    dataset = load_run_dataset(experiment, spec, agent.feed)
    offline = isinstance(agent.feed, OfflineFeed)
    # The unit the driver will declare: offline iterations are updates, the others env steps.
    unit, units_per_iteration = ((UPDATES, 1) if offline
                                 else (ENV_STEPS, agent.feed.steps_per_iteration))
    budget = plan_budget(run.total_steps, units_per_iteration, run.num_logs, unit.label,
                         experiment.agent)
    iterations_per_chunk, num_chunks = budget.iterations_per_chunk, budget.num_chunks
    total_iterations = num_chunks * iterations_per_chunk

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
        if optimal_return is not None:
            from rlkit.h2o import outside_assumptions

            reasons = outside_assumptions(env.model(env.default_params), optimal_return)
            if reasons:
                print(f"note: {experiment.env} has {reasons}: outside the assumptions of "
                      "Amortila et al. 2024 (rewards in [0, 1], returns at most 1), so "
                      f"{experiment.agent}'s rounds run without the paper's guarantees",
                      file=sys.stderr)
        trainer = make_rounds_trainer(
            agent, env, env.default_params, iterations_per_chunk,
            num_eval_episodes=run.evaluation_episodes, mesh=_mesh(run.seeds, run.shard_seeds),
            dataset=device_dataset)
    elif entry.kind == "host":
        from rlkit.loops.host import make_host_trainer

        trainer = make_host_trainer(
            agent, lambda num_envs, seed: registry.make_host_env(
                experiment.env, experiment.env_config, num_envs, seed),
            num_seeds=run.seeds, seed=run.seed, iterations_per_chunk=iterations_per_chunk,
            evaluator=host_evaluator(experiment, agent.policy, spec), dataset=device_dataset)
    else:
        from rlkit.loops.on_device import make_on_device_trainer

        trainer = make_on_device_trainer(
            agent, env, env.default_params, iterations_per_chunk,
            num_eval_episodes=run.evaluation_episodes, mesh=_mesh(run.seeds, run.shard_seeds),
            dataset=device_dataset)
    extras = None
    if dataset is not None:
        extras = {"dataset": {
            "path": str(run.dataset), "transitions": int(dataset.transitions.action.shape[0]),
            "episodes": dataset.num_episodes, "behaviour_policy": dataset.info.behaviour_policy,
            "behaviour_return": dataset.info.behaviour_return}}
    assert (trainer.unit, trainer.units_per_iteration) == (unit, units_per_iteration), (
        "the driver's unit differs from the one the budget was planned in")
    return Built(agent=agent, spec=spec, trainer=trainer, num_chunks=num_chunks,
                 optimal_return=optimal_return, summary_extras=extras,
                 budget_note=budget.note)


def _new_run_dir(experiment: Experiment) -> Path:
    """runs/AGENT-ENV-TIMESTAMP, with a -2, -3, ... suffix if a run started the same second."""
    stem = (f"runs/{experiment.agent}-{experiment.env.replace(':', '_')}"
            f"-{time.strftime('%Y%m%d-%H%M%S')}")
    run_dir, n = Path(stem), 1
    while run_dir.exists():
        n += 1
        run_dir = Path(f"{stem}-{n}")
    return run_dir


def _holds_run(path: Path) -> bool:
    return any((path / name).exists() for name in ("config.yaml", "metrics.csv", "checkpoints",
                                                    "summary.json"))


_RUN_FILES = ("config.yaml", "metrics.csv", "metrics.tmp", "summary.json", "summary.json.tmp",
              "curves.png", "curves.tmp.png", "pairs.jsonl")
# model/: a preference run's saved model (`rlkit.train_preference`); left behind, it would pass
# for the new run's until (unless) that run wrote its own.
_RUN_FOLDERS = ("checkpoints", "model")


def _remove_run(run_dir: Path) -> None:
    """Delete the files a run writes in `run_dir` (for --overwrite), and nothing else."""
    import shutil

    for name in _RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)
    for events in run_dir.glob("events.out.tfevents.*"):
        events.unlink()
    for directory in _RUN_FOLDERS:
        shutil.rmtree(run_dir / directory, ignore_errors=True)


def _check_inputs_survive(run, run_dir: Path) -> None:
    """An input of the run (--dataset, and a preference run's --model, --reward-model) must not
    be what replacing `run_dir`'s run deletes (`_remove_run`): the run directory itself (a
    model directory's model/) or one of a run's files and folders in it."""
    deleted = [run_dir.resolve() / name for name in (*_RUN_FILES, *_RUN_FOLDERS)]
    for flag, name in (("--dataset", "dataset"), ("--model", "model"),
                       ("--reward-model", "reward_model")):
        path = getattr(run, name, None)
        if path is None:
            continue
        given = Path(path).resolve()
        require(given != run_dir.resolve() and not any(
            place == given or place in given.parents for place in deleted), flag,
            f"{path} lies inside --run-dir {run_dir}; a run replaces its directory's model/ "
            "and run files, so pass a new --run-dir")


def check_run_dir(experiment: Experiment, resume: bool, overwrite: bool) -> Path:
    """The run's directory, checked before anything is built or written: a new run never
    writes where another run lives.

    A new run needs a new or empty directory, or one holding a run with `overwrite`.

    Raises:
        RlkitError: the directory is a file, holds a run (without `overwrite`) or other files.
    """
    run = experiment.run
    run_dir = Path(run.run_dir) if run.run_dir is not None else _new_run_dir(experiment)
    require(not run_dir.exists() or run_dir.is_dir(), "--run-dir",
            f"{run_dir} is a file; pass a new or empty directory")
    if resume or not (run_dir.exists() and any(run_dir.iterdir())):
        return run_dir
    require(_holds_run(run_dir), "--run-dir",
            f"{run_dir} is not empty and holds no run; pass a new or empty directory")
    _check_inputs_survive(run, run_dir)
    require(overwrite, "--run-dir",
            f"{run_dir} already holds a run; pass --overwrite to replace it, --resume "
            f"{run_dir} to continue it, or choose another directory")
    return run_dir


def prepare_run_dir(experiment: Experiment, run_dir: Path, resume: bool) -> None:
    """Make a new run's directory ready (see `check_run_dir`): delete the run it replaces,
    write config.yaml and the copy beside the checkpoints that `--resume` checks edits against.

    Raises:
        RlkitError: the directory cannot be written (read-only, full, not permitted).
    """
    if resume:
        return
    text = yaml.safe_dump(experiment.to_dict(), sort_keys=False)
    try:
        if run_dir.exists():
            _remove_run(run_dir)
        (run_dir / SAVED_CONFIG).parent.mkdir(parents=True, exist_ok=True)
        write_text(run_dir / "config.yaml", text)
        write_text(run_dir / SAVED_CONFIG, text)
    except OSError as error:
        raise RlkitError(f"--run-dir: cannot write {run_dir} ({error.strerror or error}); "
                         "choose a writable directory with free space") from None


def execute(experiment: Experiment, resume: bool = False, overwrite: bool = False):
    """Build the environment, agent and driver of `experiment` and run it.

    Args:
        experiment: the resolved configuration.
        resume: continue the run in `experiment.run.run_dir` from its newest checkpoint.
        overwrite: replace a run already in `experiment.run.run_dir`.

    Returns:
        The `rlkit.runner.RunResult`.

    Raises:
        RlkitError: bad input (see `build` and `prepare_run_dir`).
    """
    from rlkit.runner import run_training

    run = experiment.run
    run_dir = check_run_dir(experiment, resume, overwrite)
    built = build(experiment)
    try:
        if built.budget_note is not None:
            print(built.budget_note, file=sys.stderr)
        prepare_run_dir(experiment, run_dir, resume)
        header = {"agent": experiment.agent, "env": experiment.env}
        if run.h2o:
            header["h2o"] = True
        from rlkit.types import RoundFeed

        # The round driver's carry holds the figures the paper bounds (envs with a model).
        rounds = isinstance(built.agent.feed, RoundFeed) and built.optimal_return is not None
        finish = round_figures if rounds else None
        return run_training(
            built.trainer, num_chunks=built.num_chunks, num_seeds=run.seeds, seed=run.seed,
            run_dir=run_dir, header=header, resume=resume, checkpoint_every=run.checkpoint_every,
            keep_checkpoints=run.keep_checkpoints or None,
            optimal_return=built.optimal_return, show_progress=run.progress,
            stop_after_chunks=run.stop_after_chunks, summary_extras=built.summary_extras,
            finish=finish)
    except KeyboardInterrupt as error:
        error.run_dir = run_dir  # for the CLI's "resume with --resume RUN" line
        raise
    finally:
        built.trainer.close()


def round_figures(carry, summary: dict) -> dict:
    """summary.json's figures of a round-based run (GLOW, HyGLOW, H2O) from its final carry:
    what Amortila et al. 2024 bound (Alg. 1 line 13, Thm 3.1), per seed and averaged.

    * `cumulative_regret`: sum over rounds of episodes * (J* - J(pi_t)), pi_t the round's policy;
    * `mixture_return`: (1/T) sum_t J(pi_t), the exact return of the uniform mixture of the T
      rounds' policies (the paper's output), and `mixture_suboptimality` = J* - it.

    `episodes_to_optimal` stays in the summary as a secondary figure (not one the paper bounds).
    """
    import numpy as np

    regret = np.asarray(carry.regret_sum, np.float64)
    rounds = np.maximum(np.asarray(carry.iteration, np.float64), 1.0)
    mixture = np.asarray(carry.return_sum, np.float64) / rounds
    figures = {
        "cumulative_regret": float(regret.mean()),
        "per_seed_cumulative_regret": [float(x) for x in regret],
        "mixture_return": float(mixture.mean()),
        "per_seed_mixture_return": [float(x) for x in mixture],
        "mixture_suboptimality": float(summary["optimal_return"] - mixture.mean()),
        "rounds": int(rounds.max()),
    }
    if "episodes_to_optimal" in summary:
        figures["episodes_to_optimal_note"] = ("secondary: online episodes before the fitted "
                                               "policy was first optimal, not a figure the "
                                               "paper bounds")
    return figures


def load_policy(run_dir: str | Path, seed_index: int = 0, step: int | None = None):
    """The trained agent of a run directory: `(experiment, agent, agent_state)` of one seed.

    Restores only the agents' states from checkpoint `step` (None: the newest readable
    checkpoint) of `run_dir` (an
    orbax partial restore into the shapes `agent.init` has, found by tracing it without
    compiling): no trainer is built, no replay buffer is read. Then takes seed `seed_index`'s
    agent state (unbatched), ready for `agent.policy(agent_state, obs)`.

    Raises:
        RlkitError: no config.yaml, no checkpoint, no such seed, no checkpoint that reads back,
            or a policy whose parameters are not finite (a run that diverged before rlkit
            checked for it).
    """
    import jax

    from rlkit.checkpoint import Checkpointer
    from rlkit.runner import non_finite_seeds

    run_dir = Path(run_dir)
    require((run_dir / "config.yaml").exists(), str(run_dir),
            "has no config.yaml; pass the directory of a run made by python -m rlkit.train")
    # The configuration the checkpoints were written with: an edit of config.yaml that changes
    # the run is refused naming the field (checkpoints of other shapes would not read back).
    experiment = load_saved_experiment(run_dir)
    experiment = dataclasses.replace(
        experiment, run=dataclasses.replace(experiment.run, run_dir=str(run_dir)))
    run = experiment.run
    require(0 <= seed_index < run.seeds, "seed index",
            f"{seed_index} is not one of the run's {run.seeds} seeds")
    agent, _, _ = make_agent(experiment)
    keys = jax.random.split(jax.random.key(run.seed), run.seeds)
    like = jax.eval_shape(jax.vmap(agent.init), keys)  # [S, ...] shapes, nothing compiled
    checkpointer = Checkpointer(run_dir / "checkpoints")
    try:
        require(checkpointer.latest_step() is not None, str(run_dir),
                "has no checkpoint yet; train it (or --resume it) until one is saved")
        if step is None:
            _, agent_states, skipped = checkpointer.restore_newest_readable(
                like, part="agent_state")
            for line in skipped:
                print(f"warning: {line}; using an older checkpoint", file=sys.stderr)
        else:
            require(step in checkpointer.all_steps(), str(run_dir),
                    f"keeps no checkpoint {step} (kept: {checkpointer.all_steps()})")
            agent_states = checkpointer.restore(step, like, part="agent_state")
    finally:
        checkpointer.close()
    require(seed_index not in non_finite_seeds(agent_states), str(run_dir),
            f"seed {seed_index}'s parameters in the newest checkpoint are not finite (the run "
            "diverged); retrain it with a smaller learning rate, or use another seed")
    agent_state = jax.tree.map(lambda x: x[seed_index], agent_states)
    return experiment, agent, agent_state


def _offline_trainer(experiment: Experiment, agent, dataset, spec, iterations_per_chunk: int):
    """The offline driver with the right evaluator for the env (JAX or host)."""
    from rlkit.loops.offline import make_jax_evaluator, make_offline_trainer

    run = experiment.run
    entry = registry.env_entry(experiment.env)
    close = lambda: None  # noqa: E731
    if entry.kind == "host":
        evaluate, close = host_evaluator(experiment, agent.policy, spec, history=agent.history)
    else:
        env = registry.make_env(experiment.env, experiment.env_config)
        evaluate = make_jax_evaluator(agent, env, env.default_params, run.evaluation_episodes)
    return make_offline_trainer(agent, dataset.transitions, iterations_per_chunk, evaluate,
                                seed=run.seed, stream=run.stream_dataset, close=close)


def print_summary(result) -> None:
    """The results table printed at the end of a run."""
    from rich.console import Console
    from rich.table import Table

    s = result.summary
    unit = s.get("unit", "env_steps")
    budget = (f"{s[unit]:,} {unit.replace('_', ' ')}" + (" (offline)" if unit == "updates" else "")
              if unit != "env_steps" else f"{s['env_steps']:,} env steps")
    agent = f"{s['agent']} inside H2O" if s.get("h2o") else s["agent"]
    table = Table(title=f"{agent} on {s['env']}: {s['seeds']} seed(s), {budget} each")
    table.add_column("metric")
    table.add_column("value", justify="right")
    number = lambda x: "n/a" if x is None else f"{x:.4g}"  # noqa: E731 (JSON null: no value)
    table.add_row("final return (mean over seeds)", number(s["final_return"]))
    if s["final_return_ci95"] is not None:
        lo, hi = s["final_return_ci95"]
        table.add_row("95% CI (bootstrap)", f"[{number(lo)}, {number(hi)}]")
    else:
        table.add_row("95% CI (bootstrap)", "none with one seed")
    table.add_row("IQM", number(s["final_return_iqm"]))
    if "optimal_return" in s:
        table.add_row("optimal return (exact)", number(s["optimal_return"]))
        table.add_row("sub-optimality", number(s["suboptimality"]))
    if "cumulative_regret" in s:  # round-based runs: the figures the paper bounds
        table.add_row("cumulative regret (paper's figure)", number(s["cumulative_regret"]))
        table.add_row("uniform-mixture return (paper's output)", number(s["mixture_return"]))
        if "episodes_to_optimal" in s:
            table.add_row("episodes to optimal (secondary)", number(s["episodes_to_optimal"]))
    if s.get("stopped_early"):
        table.add_row("stopped early", f"after chunk {s['last_chunk']}: continue with --resume")
    table.add_row("per seed", ", ".join(number(x) for x in s["per_seed"]))
    # After a resume the timings and the rate are this invocation's (the chunks it ran).
    part = ("" if s.get("resumed_from_chunk") is None
            else f" (since the resume at chunk {s['resumed_from_chunk']})")
    rate = s[f"{unit}_per_second" if unit != "env_steps" else "steps_per_second"]
    if rate is not None:  # None: no chunk ran in this invocation
        table.add_row(f"{unit.replace('_', ' ')} / second (all seeds){part}", f"{rate:,.0f}")
    if "dataset" in s:
        table.add_row("dataset", f"{s['dataset']['path']} ({s['dataset']['transitions']:,} "
                      "transitions)")
    table.add_row(f"compile seconds{part}", f"{s['compile_seconds']:.1f}")
    table.add_row(f"wall seconds{part}", f"{s['wall_seconds']:.1f}")
    table.add_row("device", s["device"])
    console = Console()
    console.print(table)
    console.print(f"run directory: {result.run_dir}  (curves.png, metrics.csv, summary.json)")


def _deterministic_requested(argv: list[str]) -> bool:
    """`--deterministic` as the parsed run will see it, read before JAX starts."""
    try:
        first, _ = _preparse(argv)
    except RlkitError:
        return True  # parse_experiment reports the bad flag
    if first.deterministic is not None:
        return first.deterministic
    saved = Path(first.resume) / "config.yaml" if first.resume is not None else first.config
    if saved is not None and Path(saved).is_file():
        try:
            data = yaml.safe_load(Path(saved).read_text()) or {}
            return bool((data.get("run") or {}).get("deterministic", True))
        except (yaml.YAMLError, AttributeError, OSError, UnicodeDecodeError):
            return True  # parse_experiment reports the broken file
    return True


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(top_level_help())
        return 0
    from rlkit import train_preference

    if argv[0] in registry.preference_agent_names():
        return train_preference.main(argv)
    if argv[0] in registry.identification_agent_names():
        from rlkit.loops import ftpedel

        return ftpedel.main(argv)
    lm_agent = train_preference.saved_agent(argv)  # --resume / --config of a language-model run
    if lm_agent is not None:
        return train_preference.main([lm_agent, *argv])
    def parse_and_execute():
        # XLA reads its flags when the backend starts, which parsing may already do.
        rlkit.request_gpu_determinism(_deterministic_requested(argv))
        return execute(*parse_experiment(argv))

    result, status = run_guarded(parse_and_execute)
    if status is not None:
        return status
    diverged = result.summary.get("diverged")
    if diverged is not None:
        unit = result.summary["unit"]
        last = diverged["last_checkpoint"]
        print(f"error: diverged: the parameters of seed(s) {diverged['seeds']} stopped being "
              f"finite in chunk {diverged['chunk']} ({diverged[unit]:,} "
              f"{unit.replace('_', ' ')}); stopped, the last finite checkpoint is "
              f"{'none' if last is None else f'chunk {last}'}; lower --agent.learning-rate or "
              f"check the dataset for non-finite values ({result.run_dir}/summary.json)",
              file=sys.stderr)
        return DIVERGED
    print_summary(result)
    return 0


if __name__ == "__main__":
    run_cli(main)
