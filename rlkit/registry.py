"""The one place where `rlkit` reaches into `agents` and `envs`: names to factories, for the CLIs.

Imports are lazy so that `rlkit` itself never depends on a specific agent or environment.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from rlkit.errors import unknown_name


def agent_names() -> dict[str, str]:
    """Agent name -> one-line description."""
    from agents import AGENTS

    return {name: description for name, (_, description) in AGENTS.items()}


def agent_module(name: str) -> ModuleType:
    """The module of agent `name` (with `Config` and `make_agent`), or a clear error."""
    from agents import AGENTS

    if name not in AGENTS:
        raise unknown_name("agent", name, list(AGENTS))
    return importlib.import_module(AGENTS[name][0])


def env_entry(name: str):
    """The `envs.EnvEntry` of env `name`, or a clear error listing the known names."""
    import envs

    return envs.get_env_entry(name)


def env_descriptions() -> dict[str, str]:
    """Env name -> one-line description (families as `family:ID`)."""
    import envs

    described = {name: entry.description for name, entry in envs.ENVS.items()}
    described.update({f"{f}:ID": entry.description for f, entry in envs.FAMILIES.items()})
    return described


def make_env(name: str, config):
    import envs

    return envs.make_env(name, config)


def make_host_env(name: str, config, num_envs: int, seed: int):
    import envs

    return envs.make_host_env(name, config, num_envs, seed)
