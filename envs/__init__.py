"""Environments: functional JAX environments and host (CPU) adapters, behind one registry.

Names resolve to an `EnvEntry`: a frozen config dataclass and a factory. JAX environments are built
with `make_env(name, config) -> rlkit.types.Environment`; host environments (gymnasium, procgen)
with `make_host_env(name, config, num_envs, seed) -> rlkit.types.HostEnvironment`.

Families take an id after a colon: `gymnax:Acrobot-v1`, `gym:CartPole-v1`, `procgen:coinrun`.
`gym:my_module:MyEnv-v0` imports `my_module` first (where your `gymnasium.register` calls are).

Your own JAX environment: `my_module:make_env` names a factory returning an
`rlkit.types.Environment`. Its config is the frozen dataclass its one parameter is annotated with
(`def make_env(config: MyConfig) -> Environment`; every field needs a default, and on the command
line each field is `--env-config.FIELD`), or nothing for a factory without parameters. Check a new
environment once with `envs.checker.check_env`.

Text tasks for language models (`sort`, `reverse`: digit strings with an exact reward) are not
environments: `envs.text_tasks.TASKS` lists them for `python -m rlkit.train sft|reward-model|dpo
--task TASK`.

Modules are imported lazily: importing `envs` imports none of gymnax, gymnasium or procgen, and a
missing optional extra (procgen, box2d, ...) only matters when its environment is built.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import typing
from dataclasses import dataclass
from typing import Any

from rlkit.errors import RlkitError, import_user_module, unknown_name


def uv_sync_command(extra: str) -> str:
    """The uv command that installs optional extra `extra` as the README says: procgen pins
    numpy<2, so it gets an environment of its own; the others join the default one."""
    if extra == "procgen":
        return ("UV_PROJECT_ENVIRONMENT=.venv-procgen uv sync --frozen --extra procgen "
                "--no-group numpy2")
    return f"uv sync --frozen --extra {extra}"


@dataclass(frozen=True)
class EnvEntry:
    """How to build one named environment.

    Attributes:
        kind: "jax" (functional, on-device driver) or "host" (CPU-stepped, host driver).
        module: import path of the module holding the config and the factory.
        config: name of the frozen config dataclass in that module.
        factory: name of the factory: `make(config) -> Environment` for "jax",
            `make(config, num_envs, seed) -> HostEnvironment` for "host".
        description: one line for `--help`.
        defaults: field values that this name sets on the config (e.g. the gymnax id).
        extra: the pip extra the module needs, named in the error when it is missing.
        custom: a user's factory (`module:factory`): the config class is the dataclass its
            parameter is annotated with (`NoConfig` for a factory without parameters).
    """

    kind: str
    module: str
    config: str
    factory: str
    description: str
    defaults: tuple[tuple[str, Any], ...] = ()
    extra: str | None = None
    custom: bool = False

    def config_class(self) -> type:
        if self.custom:
            return _factory_config_class(self)
        return getattr(_import(self), self.config)

    def default_config(self) -> Any:
        return self.config_class()(**dict(self.defaults))


def _gymnax(env_id: str, description: str) -> EnvEntry:
    return EnvEntry("jax", "envs.gymnax_adapter", "Config", "make", description,
                    (("env_id", env_id),))


ENVS: dict[str, EnvEntry] = {
    # Toy MDPs with exact models.
    "chain": EnvEntry("jax", "envs.toy", "ChainConfig", "make_chain",
                      "deterministic chain: walk right to the rewarding end (exact model)"),
    "riverswim": EnvEntry("jax", "envs.toy", "RiverSwimConfig", "make_riverswim",
                          "RiverSwim (Strehl & Littman 2008), stochastic chain (exact model)"),
    "combination-lock": EnvEntry("jax", "envs.toy", "CombinationLockConfig",
                                 "make_combination_lock",
                                 "combination lock: one secret action per step (exact model)"),
    "deepsea": EnvEntry("jax", "envs.toy", "DeepSeaConfig", "make_deepsea",
                        "DeepSea (Osband et al. 2019), exploration benchmark (exact model)"),
    "gridworld": EnvEntry("jax", "envs.toy", "GridWorldConfig", "make_gridworld",
                          "grid world with a goal cell and optional slip (exact model)"),
    "tabular": EnvEntry("jax", "envs.tabular", "Config", "make",
                        "random tabular MDP built from arrays (exact model)"),
    "linear-hard-state": EnvEntry("jax", "envs.linear_mdp", "HardStateConfig", "make_hard_state",
                                  "linear MDP, d=2, H=2, a hard state reached with probability p "
                                  "(FTPedel spec 2.3; exact model)"),
    "linear-random": EnvEntry("jax", "envs.linear_mdp", "RandomConfig", "make_random",
                              "random linear MDP, low-rank random tabular MDP (exact model)"),
    "linear-tabular": EnvEntry("jax", "envs.linear_mdp", "TabularConfig", "make_tabular",
                               "random tabular MDP as a linear MDP, one-hot features (exact "
                               "model)"),
    # gymnax.
    "cartpole": _gymnax("CartPole-v1", "gymnax CartPole-v1"),
    "acrobot": _gymnax("Acrobot-v1", "gymnax Acrobot-v1"),
    "mountaincar": _gymnax("MountainCar-v0", "gymnax MountainCar-v0"),
    "breakout-minatar": _gymnax("Breakout-MinAtar", "gymnax MinAtar Breakout"),
    "asterix-minatar": _gymnax("Asterix-MinAtar", "gymnax MinAtar Asterix"),
    "freeway-minatar": _gymnax("Freeway-MinAtar", "gymnax MinAtar Freeway"),
    "space-invaders-minatar": _gymnax("SpaceInvaders-MinAtar", "gymnax MinAtar SpaceInvaders"),
}

FAMILIES: dict[str, EnvEntry] = {
    "gymnax": EnvEntry("jax", "envs.gymnax_adapter", "Config", "make",
                       "any gymnax id with discrete actions, e.g. gymnax:Acrobot-v1"),
    "gym": EnvEntry("host", "envs.gymnasium_adapter", "Config", "make",
                    "a gymnasium id with discrete actions, e.g. gym:CartPole-v1 (gym:MODULE:ID "
                    "imports MODULE first)"),
    "procgen": EnvEntry("host", "envs.procgen_adapter", "Config", "make",
                        "a procgen game (needs the procgen extra), e.g. procgen:coinrun",
                        extra="procgen"),
}
_FAMILY_FIELD = {"gymnax": "env_id", "gym": "env_id", "procgen": "game"}
CUSTOM = "MODULE:FACTORY"
CUSTOM_DESCRIPTION = ("your JAX env: FACTORY(config: ADataclass) -> rlkit.types.Environment; "
                      "fields are --env-config.*")


@dataclass(frozen=True)
class NoConfig:
    """The config of a custom factory that takes no parameters (it has no fields)."""


def env_names() -> list[str]:
    """Every name `get_env_entry` accepts (families as `family:ID`, factories as MODULE:FACTORY)."""
    return sorted(ENVS) + [f"{family}:ID" for family in FAMILIES] + [CUSTOM]


def get_env_entry(name: str) -> EnvEntry:
    """The registry entry for `name`, or an `RlkitError` that lists the known names."""
    if name in ENVS:
        return ENVS[name]
    family, sep, ident = name.partition(":")
    if sep and family in FAMILIES and ident:
        entry = FAMILIES[family]
        return dataclasses.replace(entry, defaults=((_FAMILY_FIELD[family], ident),))
    if sep and family and ident:
        return _custom_entry(name, family, ident)
    raise unknown_name("env", name, env_names())


def _custom_entry(name: str, module_name: str, factory_name: str) -> EnvEntry:
    """The entry of a user's factory `module:factory`, or one line saying what is wrong."""

    def not_found(error: ModuleNotFoundError) -> RlkitError | None:
        if error.name is None or not module_name.startswith(error.name):
            return None  # the module itself imports something missing: the generic message
        close = difflib.get_close_matches(module_name, list(FAMILIES), n=2)
        hint = f"Did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
        return RlkitError(
            f"--env {name!r}: {module_name!r} is neither an env family ({', '.join(FAMILIES)})"
            f" nor an importable module ({error}). {hint}For your own env, run from the "
            "folder holding the module or add that folder to PYTHONPATH.")

    module = import_user_module(module_name, f"--env {name!r}: importing {module_name!r}",
                                not_found)
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        public = [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                  and getattr(v, "__module__", None) == module.__name__]
        what = "is not callable" if hasattr(module, factory_name) else "does not exist"
        raise RlkitError(
            f"--env {name!r}: {module_name}.{factory_name} {what}; name a function returning an "
            f"rlkit.types.Environment. Functions in {module_name}: {', '.join(public) or 'none'}."
        )
    entry = EnvEntry("jax", module_name, "", factory_name, CUSTOM_DESCRIPTION, custom=True)
    _factory_config_class(entry)  # a bad signature fails here, before anything is built
    return entry


def _factory_config_class(entry: EnvEntry) -> type:
    """The config class of a custom factory: its parameter's dataclass annotation, or NoConfig."""
    factory = getattr(importlib.import_module(entry.module), entry.factory)
    where = f"--env '{entry.module}:{entry.factory}'"
    parameters = list(inspect.signature(factory).parameters.values())
    if not parameters:
        return NoConfig
    try:
        hints = typing.get_type_hints(factory)
    except Exception:  # noqa: BLE001 - an unresolvable annotation is reported below
        hints = {}
    config_class = hints.get(parameters[0].name)
    required = [p for p in parameters[1:] if p.default is inspect.Parameter.empty]
    if not (dataclasses.is_dataclass(config_class) and isinstance(config_class, type)) or required:
        raise RlkitError(
            f"{where}: the factory must take no parameters or one config parameter annotated with "
            f"a dataclass, e.g. def {entry.factory}(config: MyConfig) -> Environment; got "
            f"{entry.factory}{inspect.signature(factory)}."
        )
    try:
        config_class()
    except TypeError as error:
        raise RlkitError(f"{where}: every field of {config_class.__name__} needs a default "
                         f"({error}).") from None
    return config_class


def _import(entry: EnvEntry):
    try:
        return importlib.import_module(entry.module)
    except ImportError as error:
        if entry.extra:
            raise RlkitError(
                f"this environment needs the optional extra {entry.extra!r} ({error}). "
                f"Install it with: pip install -e '.[{entry.extra}]' "
                f"(or: {uv_sync_command(entry.extra)})"
            ) from None
        raise


def make_env(name: str, config: Any | None = None):
    """Build the functional JAX environment `name` (an `rlkit.types.Environment`)."""
    entry = get_env_entry(name)
    if entry.kind != "jax":
        raise RlkitError(f"env {name!r} is a host environment: build it with make_host_env")
    config = entry.default_config() if config is None else config
    factory = getattr(_import(entry), entry.factory)
    if not entry.custom:
        return factory(config)
    from rlkit.types import Environment

    env = factory() if isinstance(config, NoConfig) else factory(config)
    if not isinstance(env, Environment):
        raise RlkitError(
            f"--env {name!r}: {entry.module}.{entry.factory} returned {type(env).__name__}, "
            "expected an rlkit.types.Environment(spec, default_params, reset, step)."
        )
    return env


def make_host_env(name: str, config: Any | None, num_envs: int, seed: int):
    """Build the batched CPU environment `name` (an `rlkit.types.HostEnvironment`)."""
    entry = get_env_entry(name)
    if entry.kind != "host":
        raise RlkitError(f"env {name!r} is a JAX environment: build it with make_env")
    config = entry.default_config() if config is None else config
    return getattr(_import(entry), entry.factory)(config, num_envs, seed)
