"""The one place where `rlkit` reaches into `agents` and `envs`: names to factories, for the CLIs.

Imports are lazy so that `rlkit` itself never depends on a specific agent or environment, and so
that importing this module (and `envs`) stays light: gymnax, gymnasium and procgen are imported
only when an environment of that family is built.
"""

from __future__ import annotations

import importlib
import inspect
from types import ModuleType, SimpleNamespace
from typing import Any

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


def preference_agent_names() -> dict[str, str]:
    """Language-model agent name -> one-line description (`agents.PREFERENCE_AGENTS`)."""
    from agents import PREFERENCE_AGENTS

    return {name: description for name, (_, description) in PREFERENCE_AGENTS.items()}


def preference_agent_module(name: str) -> ModuleType:
    """The module of language-model agent `name` (sft, reward-model, dpo), or a clear error."""
    from agents import PREFERENCE_AGENTS

    if name not in PREFERENCE_AGENTS:
        raise unknown_name("language-model agent", name, list(PREFERENCE_AGENTS))
    return importlib.import_module(PREFERENCE_AGENTS[name][0])


def identification_agent_names() -> dict[str, str]:
    """Policy-identification agent name -> description (`agents.IDENTIFICATION_AGENTS`)."""
    from agents import IDENTIFICATION_AGENTS

    return {name: description for name, (_, description) in IDENTIFICATION_AGENTS.items()}


def identification_agent_module(name: str) -> ModuleType:
    """The module of pedel / ftpedel (`agents.ftpedel`), or a clear error."""
    from agents import IDENTIFICATION_AGENTS

    if name not in IDENTIFICATION_AGENTS:
        raise unknown_name("identification agent", name, list(IDENTIFICATION_AGENTS))
    return importlib.import_module(IDENTIFICATION_AGENTS[name][0].partition(":")[0])


def text_task_names() -> dict[str, str]:
    """Text task name -> one-line description (`envs.text_tasks.TASKS`)."""
    return dict(text_tasks().TASKS)


def text_tasks() -> ModuleType:
    """The `envs.text_tasks` module (its config, `make_text_task`, demonstrations, pairs)."""
    return importlib.import_module("envs.text_tasks")


def env_entry(name: str):
    """The `envs.EnvEntry` of env `name`, or a clear error listing the known names."""
    import envs

    return envs.get_env_entry(name)


def env_module(name: str) -> ModuleType:
    """The module that defines env `name`: its config class and constants (e.g. procgen's
    `NUM_ACTIONS` and `OBS_SHAPE`); a missing optional extra fails when the module is imported."""
    return importlib.import_module(env_entry(name).module)


def env_descriptions() -> dict[str, str]:
    """Env name -> one-line description (families as `family:ID`)."""
    import envs

    described = {name: entry.description for name, entry in envs.ENVS.items()}
    described.update({f"{f}:ID": entry.description for f, entry in envs.FAMILIES.items()})
    described[envs.CUSTOM] = envs.CUSTOM_DESCRIPTION
    return described


def make_env(name: str, config):
    import envs

    return envs.make_env(name, config)


def make_host_env(name: str, config, num_envs: int, seed: int):
    import envs

    return envs.make_host_env(name, config, num_envs, seed)


def make_agent(name: str, config: Any, spec: Any, env: Any = None):
    """Build agent `name` for an env, handing it what it takes from the env besides the spec.

    An agent whose `make_agent` has a `value_class` parameter (GLOW, HyGLOW) gets the env's
    finite value class from the env's own hook (`rlkit.types.Environment.value_class`, built from
    the env's config), or None when the env has none (host envs, or `env=None`); one with a
    `model` parameter also gets the env's exact model at its default params (`env.model`), or
    None.

    Args:
        name: agent name (see `agent_names`).
        config: the agent's config.
        spec: the env's `EnvSpec`.
        env: the `rlkit.types.Environment`, or None (host environments).

    Returns:
        The `rlkit.types.Agent`.
    """
    module = agent_module(name)
    if "value_class" not in inspect.signature(module.make_agent).parameters:
        return module.make_agent(config, spec)
    hook = getattr(env, "value_class", None)
    kwargs = {"value_class": hook() if hook is not None else None}
    if "model" in inspect.signature(module.make_agent).parameters:
        model = getattr(env, "model", None)
        kwargs["model"] = model(env.default_params) if model is not None else None
    return module.make_agent(config, spec, **kwargs)


def check_env(env, name: str) -> None:
    """Run `envs.checker.check_env` on a user's environment (`--env MODULE:FACTORY`) before
    anything is built on it, with its list of problems folded into one line.

    Raises:
        RlkitError: `--env NAME: breaks the Environment contract: problem; problem; ...`.
    """
    from envs.checker import check_env as check
    from rlkit.errors import RlkitError

    try:
        check(env, num_episodes=2)
    except RlkitError as error:
        lines = [line.strip(" -") for line in str(error).splitlines()[1:]] or [str(error)]
        raise RlkitError(f"--env {name}: breaks the Environment contract (envs.checker): "
                         + "; ".join(lines)) from None
