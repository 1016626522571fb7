"""Any registered gymnasium environment as an rlkit `HostEnvironment` (CPU, numpy batches).

The environments run under gymnasium's vector API in the same-step auto-reset mode
(`AutoresetMode.SAME_STEP`): where an episode ends, `step` already returns the first observation of
the next episode and gymnasium keeps the true last observation in `info["final_obs"]` (an object
array, set where the mask `info["_final_obs"]` is True). This adapter turns that into
`HostStep.final_obs`, a dense [N, *obs_shape] array that equals `obs` wherever no episode ended, so
truncated episodes bootstrap from the right observation.

Observations are converted to one dtype per space: `Box` with uint8 (images) stays uint8, any other
`Box` becomes float32; a `Discrete` observation becomes a float32 one-hot vector (what an MLP needs
from a state index); `MultiBinary` / `MultiDiscrete` become float32 arrays. Actions must be
`Discrete` (every rlkit agent outputs one categorical action); its `start` offset is applied here.

Your own environments: `env_id="my_module:MyEnv-v0"` (on the command line
`--env gym:my_module:MyEnv-v0`) imports `my_module` first, so the `gymnasium.register` calls in it
run, then builds `MyEnv-v0`. Families with optional dependencies (Box2D, MuJoCo, Atari) fail with
one line that names the rlkit extra to install (`EXTRAS`).

Seeding: `reset(seed)` seeds environment i with `env_seeds(seed, N)[i]`, drawn from numpy's
`SeedSequence(seed)`, rather than gymnasium's `seed + i`, so batches reset with neighbouring seeds
share no environment seed (with `seed + i`, runs with seeds 0 and 1 played N - 1 identical
environments).

gymnasium is imported when an environment is built, not with this module (`--help` stays fast).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from rlkit.errors import RlkitError, import_user_module, require, unknown_name
from rlkit.types import EnvSpec, HostEnvironment, HostStep

if TYPE_CHECKING:
    import gymnasium

_VECTORIZATIONS = ("sync", "async")
_START_METHODS = ("spawn", "forkserver", "fork")


@dataclass(frozen=True)
class Config:
    """A gymnasium environment, vectorised with gymnasium's vector API."""

    env_id: str = "CartPole-v1"
    """Registered gymnasium id with a Discrete action space (module:Id imports the module first)."""
    vectorization: str = "sync"
    """"sync" (all envs in this process) or "async" (one subprocess per env, for slow envs)."""
    max_episode_steps: int | None = None
    """Time limit (gymnasium's TimeLimit); None keeps the limit registered for the id."""
    async_start_method: str = "spawn"
    """How "async" starts its workers: "spawn" (safe next to JAX's threads; scripts need an
    `if __name__ == "__main__":` guard), "forkserver", or "fork" (fast, but forking a process that
    runs JAX threads can deadlock)."""

    def __post_init__(self) -> None:
        require(self.vectorization in _VECTORIZATIONS, "vectorization",
                f"must be one of {', '.join(_VECTORIZATIONS)}, got {self.vectorization!r}.")
        if self.max_episode_steps is not None:
            require(self.max_episode_steps >= 1, "max_episode_steps",
                    f"must be a positive number of steps or None, got {self.max_episode_steps}.")
        require(self.async_start_method in _START_METHODS, "async_start_method",
                f"must be one of {', '.join(_START_METHODS)}, got {self.async_start_method!r}.")


EXTRAS = {
    "gymnasium.envs.box2d": "box2d",
    "gymnasium.envs.mujoco": "mujoco",
    "ale_py": "atari",
}
"""Module of an env family's entry point -> the rlkit extra that installs its dependencies."""

_NAMESPACE_EXTRAS = {"ALE": ("ale_py", "atari")}  # ids registered only once a package is imported


def env_seeds(seed: int, num_envs: int) -> list[int]:
    """The seed of each of `num_envs` environments reset together with `seed`.

    Environment i gets the first 64-bit word of `SeedSequence(seed, spawn_key=(i,))`, numpy's
    recipe for independent child streams: no two (seed, i) pairs share a seed (up to a 2^-64
    chance), and env i's seed does not depend on `num_envs`.

    Args:
        seed: a non-negative int, the batch's seed.
        num_envs: N.

    Returns:
        N Python ints in [0, 2^64).
    """
    require(int(seed) >= 0, "seed", f"must be a non-negative int, got {seed}.")
    return [int(np.random.SeedSequence(int(seed), spawn_key=(i,)).generate_state(1, np.uint64)[0])
            for i in range(num_envs)]


def _import_env_module(env_id: str) -> str:
    """Import the module of a "module:Id" env id (its `gymnasium.register` calls run); return Id.

    Ids of a namespace that a package registers on import (ALE/...) import that package.
    """
    module, _, gym_id = env_id.rpartition(":")
    if not module:
        namespace = gym_id.partition("/")[0] if "/" in gym_id else None
        if namespace not in _NAMESPACE_EXTRAS:
            return gym_id
        module, extra = _NAMESPACE_EXTRAS[namespace]
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise _missing_extra(env_id, extra, error) from None
        return gym_id

    def not_found(error: ModuleNotFoundError) -> RlkitError | None:
        package_extras = {package: extra for package, extra in _NAMESPACE_EXTRAS.values()}
        if error.name in package_extras:  # e.g. ale_py:ALE/Pong-v5 without the atari extra
            return _missing_extra(env_id, package_extras[error.name], error)
        if error.name is not None and module.startswith(error.name):
            return RlkitError(
                f"env_id: cannot import module {module!r} of {env_id!r} ({error}); run from the "
                "folder that holds it or add that folder to PYTHONPATH.")
        return None

    import_user_module(module, f"env_id: importing {module!r} of {env_id!r}", not_found)
    return gym_id


def _missing_extra(env_id: str, extra: str, error: BaseException) -> RlkitError:
    first_line = (str(error).splitlines() or [""])[0]
    return RlkitError(
        f"env_id: {env_id!r} needs the optional extra {extra!r}, which is not installed "
        f"({first_line.rstrip('.')}). Install it with: pip install 'rlkit[{extra}]' "
        f"(from a checkout: pip install -e '.[{extra}]' or uv sync --extra {extra})."
    )


def _family_extra(gym_spec: gymnasium.envs.registration.EnvSpec) -> str | None:
    """The rlkit extra of the env family `gym_spec` belongs to, or None."""
    entry_point = gym_spec.entry_point if isinstance(gym_spec.entry_point, str) else ""
    module = entry_point.partition(":")[0]
    for prefix, extra in EXTRAS.items():
        if module == prefix or module.startswith(prefix + "."):
            return extra
    return None


def _lookup_spec(env_id: str) -> gymnasium.envs.registration.EnvSpec:
    """gymnasium's spec for `env_id` ("Id" or "module:Id"), or an RlkitError naming the fix."""
    import gymnasium

    gym_id = _import_env_module(env_id)
    try:
        return gymnasium.spec(gym_id)
    except ModuleNotFoundError as error:
        raise RlkitError(
            f"env_id: {env_id!r} needs a module that is not installed ({error}); install the "
            "package that registers it."
        ) from None
    except gymnasium.error.Error:
        error = unknown_name("gymnasium env id", gym_id, list(gymnasium.registry))
        raise RlkitError(f"--env gym:{env_id}: {error}") from None


class _ObservationConverter:
    """Maps gymnasium observations of one space to rlkit's fixed shape and dtype."""

    def __init__(self, space: gymnasium.spaces.Space, env_id: str):
        from gymnasium import spaces

        self.space = space
        self._one_hot = isinstance(space, spaces.Discrete)
        if isinstance(space, spaces.Box):
            self.dtype = np.uint8 if space.dtype == np.uint8 else np.float32
            self.shape = tuple(space.shape)
        elif isinstance(space, spaces.Discrete):
            self.dtype, self.shape = np.float32, (int(space.n),)
        elif isinstance(space, spaces.MultiBinary | spaces.MultiDiscrete):
            self.dtype, self.shape = np.float32, tuple(space.shape)
        else:
            raise RlkitError(
                f"env_id: gymnasium env {env_id!r} has a {type(space).__name__} observation "
                "space; rlkit needs one array (Box, Discrete, MultiBinary or MultiDiscrete). "
                "Flatten it with a gymnasium wrapper (e.g. FlattenObservation) and register that."
            )

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """[N, ...] raw batched observations -> [N, *shape] of `dtype`."""
        if self._one_hot:
            index = np.asarray(obs, np.int64) - int(self.space.start)
            return np.eye(self.shape[0], dtype=np.float32)[index]
        return np.asarray(obs, dtype=self.dtype)


class GymnasiumEnv(HostEnvironment):
    """`num_envs` copies of one gymnasium environment that step together and auto-reset.

    Attributes:
        spec: the static `EnvSpec`.
        num_envs: number of environments N.
        seed: the seed that `reset()` uses when it is called without one.
    """

    def __init__(self, config: Config, num_envs: int, seed: int):
        import gymnasium
        from gymnasium import spaces

        require(num_envs >= 1, "num_envs", f"must be at least 1, got {num_envs}.")
        gym_spec = _lookup_spec(config.env_id)
        max_episode_steps = config.max_episode_steps or gym_spec.max_episode_steps
        if max_episode_steps is None:
            raise RlkitError(
                f"max_episode_steps: gymnasium env {config.env_id!r} registers no time limit; "
                "set max_episode_steps so that episodes (and evaluations) end."
            )
        vector_kwargs = {"autoreset_mode": gymnasium.vector.AutoresetMode.SAME_STEP}
        if config.vectorization == "async":
            vector_kwargs["context"] = config.async_start_method
        try:
            self._vec = gymnasium.make_vec(
                config.env_id,
                num_envs=num_envs,
                vectorization_mode=config.vectorization,
                vector_kwargs=vector_kwargs,
                max_episode_steps=max_episode_steps,
            )
        except (gymnasium.error.DependencyNotInstalled, ImportError) as error:
            extra = _family_extra(gym_spec)
            if extra is None:
                first_line = (str(error).splitlines() or [""])[0]
                raise RlkitError(
                    f"env_id: {config.env_id!r} needs a package that is not installed "
                    f"({first_line}); install the package that provides it."
                ) from None
            raise _missing_extra(config.env_id, extra, error) from None
        try:
            action_space = self._vec.single_action_space
            if not isinstance(action_space, spaces.Discrete):
                raise RlkitError(
                    f"env_id: gymnasium env {config.env_id!r} has a {type(action_space).__name__} "
                    "action space; rlkit's agents need discrete actions. Use an id with a "
                    "Discrete action space (e.g. CartPole-v1, Acrobot-v1, LunarLander-v3)."
                )
            self._convert = _ObservationConverter(self._vec.single_observation_space,
                                                  config.env_id)
        except RlkitError:
            self._vec.close()
            raise
        self._action_start = int(action_space.start)
        self.num_envs = num_envs
        self.seed = seed
        self.spec = EnvSpec(
            name=f"gym:{config.env_id}",
            obs_shape=self._convert.shape,
            obs_dtype=np.dtype(self._convert.dtype).name,
            num_actions=int(action_space.n),
            max_episode_steps=int(max_episode_steps),
        )
        self._needs_reset = True

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Start a new episode in every environment.

        Args:
            seed: environment i is seeded with `env_seeds(seed, N)[i]` (not gymnasium's
                seed + i, see the module docstring); None uses the seed given to `make`. The
                same seed gives the same observations and dynamics.

        Returns:
            [N, *obs_shape] first observations.
        """
        seeds = env_seeds(self.seed if seed is None else int(seed), self.num_envs)
        obs, _ = self._vec.reset(seed=seeds)
        self._needs_reset = False
        return self._convert(obs)

    def step(self, actions: np.ndarray) -> HostStep:
        """Step every environment once; those whose episode ended start the next one.

        Args:
            actions: [N] ints in [0, num_actions).

        Returns:
            A `HostStep` of [N, ...] arrays: obs (reset observations where an episode ended),
            reward float32, terminated / truncated bool, final_obs (the true next observations).
        """
        if self._needs_reset:
            raise RlkitError("GymnasiumEnv.step: call reset(seed) before the first step.")
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,):
            raise RlkitError(f"actions: expected shape ({self.num_envs},), got {actions.shape}.")
        if actions.min() < 0 or actions.max() >= self.spec.num_actions:
            raise RlkitError(f"actions: must lie in [0, {self.spec.num_actions}), got {actions}.")
        obs, reward, terminated, truncated, info = self._vec.step(
            actions.astype(np.int64) + self._action_start
        )
        obs = self._convert(obs)
        final_obs = obs.copy()
        ended = info.get("_final_obs")
        if ended is not None:
            for i in np.flatnonzero(ended):
                final_obs[i] = self._convert(np.asarray(info["final_obs"][i])[None])[0]
        return HostStep(
            obs=obs,
            reward=np.asarray(reward, np.float32),
            terminated=np.asarray(terminated, np.bool_),
            truncated=np.asarray(truncated, np.bool_),
            final_obs=final_obs,
        )

    def close(self) -> None:
        self._vec.close()


def make(config: Config, num_envs: int, seed: int) -> GymnasiumEnv:
    """Build `num_envs` copies of `config.env_id` behind the `HostEnvironment` interface.

    Args:
        config: which environment and how to vectorise it.
        num_envs: number of environments N stepped together.
        seed: default seed of `reset()`; environment i gets `env_seeds(seed, num_envs)[i]`.

    Raises:
        RlkitError: unknown id or module, a missing optional extra (named), non-discrete actions,
            an unsupported observation space, or no time limit.
    """
    return GymnasiumEnv(config, num_envs, seed)
