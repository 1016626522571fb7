"""Environments: functional JAX environments and host (CPU) adapters, behind one registry.

Names resolve to an `EnvEntry`: a frozen config dataclass and a factory. JAX environments are built
with `make_env(name, config) -> rlkit.types.Environment`; host environments (gymnasium, procgen)
with `make_host_env(name, config, num_envs, seed) -> rlkit.types.HostEnvironment`.

Families take an id after a colon: `gymnax:Acrobot-v1`, `gym:CartPole-v1`, `procgen:coinrun`.
Modules are imported lazily, so a missing optional extra (procgen) only matters when it is used.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from typing import Any

from rlkit.errors import RlkitError, unknown_name


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
    """

    kind: str
    module: str
    config: str
    factory: str
    description: str
    defaults: tuple[tuple[str, Any], ...] = ()
    extra: str | None = None

    def config_class(self) -> type:
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
                    "any registered gymnasium id with discrete actions, e.g. gym:CartPole-v1"),
    "procgen": EnvEntry("host", "envs.procgen_adapter", "Config", "make",
                        "a procgen game (needs the procgen extra), e.g. procgen:coinrun",
                        extra="procgen"),
}
_FAMILY_FIELD = {"gymnax": "env_id", "gym": "env_id", "procgen": "game"}


def env_names() -> list[str]:
    """Every name `get_env_entry` accepts (families as `family:ID`)."""
    return sorted(ENVS) + [f"{family}:ID" for family in FAMILIES]


def get_env_entry(name: str) -> EnvEntry:
    """The registry entry for `name`, or an `RlkitError` that lists the known names."""
    if name in ENVS:
        return ENVS[name]
    family, sep, ident = name.partition(":")
    if sep and family in FAMILIES and ident:
        entry = FAMILIES[family]
        return dataclasses.replace(entry, defaults=((_FAMILY_FIELD[family], ident),))
    raise unknown_name("env", name, env_names())


def _import(entry: EnvEntry):
    try:
        return importlib.import_module(entry.module)
    except ImportError as error:
        if entry.extra:
            raise RlkitError(
                f"this environment needs the optional extra {entry.extra!r} ({error}). "
                f"Install it with: pip install -e '.[{entry.extra}]' "
                f"(or: uv sync --extra {entry.extra} --no-group numpy2)"
            ) from None
        raise


def make_env(name: str, config: Any | None = None):
    """Build the functional JAX environment `name` (an `rlkit.types.Environment`)."""
    entry = get_env_entry(name)
    if entry.kind != "jax":
        raise RlkitError(f"env {name!r} is a host environment: build it with make_host_env")
    config = entry.default_config() if config is None else config
    return getattr(_import(entry), entry.factory)(config)


def make_host_env(name: str, config: Any | None, num_envs: int, seed: int):
    """Build the batched CPU environment `name` (an `rlkit.types.HostEnvironment`)."""
    entry = get_env_entry(name)
    if entry.kind != "host":
        raise RlkitError(f"env {name!r} is a JAX environment: build it with make_env")
    config = entry.default_config() if config is None else config
    return getattr(_import(entry), entry.factory)(config, num_envs, seed)
