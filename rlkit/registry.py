"""The one place where `rlkit` reaches into `agents` and `envs`: names to factories, for the CLIs.

Imports are lazy so that `rlkit` itself never depends on a specific agent or environment.
"""

from __future__ import annotations

import importlib
from types import ModuleType, SimpleNamespace

from rlkit.errors import unknown_name


def agent_names() -> dict[str, str]:
    """Agent name -> one-line description."""
    from agents import AGENTS

    return {name: description for name, (_, description) in AGENTS.items()}


def agent_module(name: str) -> ModuleType | SimpleNamespace:
    """The module of agent `name` (with `Config` and `make_agent`), or a clear error.

    An entry "module:ConfigName" names a variant that shares a module with another agent but has
    its own config class (HyGLOW is GLOW's module with `HybridConfig`).
    """
    from agents import AGENTS

    if name not in AGENTS:
        raise unknown_name("agent", name, list(AGENTS))
    module_name, _, config_name = AGENTS[name][0].partition(":")
    module = importlib.import_module(module_name)
    if not config_name:
        return module
    return SimpleNamespace(Config=getattr(module, config_name), make_agent=module.make_agent,
                           __name__=module.__name__, __doc__=module.__doc__)


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


def value_class_for(spec):
    """The exact value class (GLOW's finite F) of a toy env, or None (`envs.toy`)."""
    from envs.toy import value_class_for as lookup

    return lookup(spec)
