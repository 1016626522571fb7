"""gymnax environments behind rlkit's functional contract (`rlkit.types.Environment`).

gymnax's own `Environment.step` auto-resets inside the step. rlkit keeps auto-reset in one wrapper
(`rlkit.loops.autoreset`), so this adapter calls the environment's `step_env` / `reset_env`
directly and computes the two end signals the way gymnax 1.0.1's `step` does:

* `terminated` is the `done` that `step_env` returns. In gymnax 1.0.1 every built-in environment
  reports only its natural terminal condition there (the time limit moved out of `step_env`).
* `truncated` is `is_truncated(next_state, params)`, i.e. `time >= params.max_steps_in_episode`.
  CartPole at step 500 therefore comes out as truncated=True, terminated=False, and agents
  bootstrap from the true final observation.

The step key is split exactly as gymnax's `step` splits it, so a trajectory of this adapter equals
gymnax's own trajectory (same keys, same actions) up to the first episode end.

Observations are float32 (MinAtar's boolean [10, 10, C] grids become 0.0 / 1.0 floats with the
same shape), rewards float32 scalars, terminated / truncated bool scalars, and `info` is the dict
`step_env` returns (its structure is fixed per environment, e.g. {"discount": ...}).
Only discrete action spaces are accepted: every rlkit agent outputs one categorical action.

`import gymnax` takes about 12 s (it imports every gymnax environment, matplotlib and seaborn), so
it happens inside `make`, not when this module is imported: `--help` and config errors stay fast.
`Config` checks ids against gymnax's own registry when gymnax is already imported, and against
`BUILTIN_IDS` (gymnax 1.0's built-in ids, pinned by tests/test_adapters.py) otherwise.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from rlkit.errors import RlkitError, require, unknown_name
from rlkit.types import Array, Environment, EnvSpec, PRNGKey, PyTree


def _typed(tree: PyTree) -> PyTree:
    """Every leaf as a strongly typed JAX array.

    gymnax states carry Python numbers (e.g. `time=0` after a reset), which become weakly typed
    arrays in jit: their dtype can change between reset and step and break a `lax.scan` carry.
    """
    return jax.tree.map(lambda x: jnp.asarray(x, dtype=jnp.asarray(x).dtype), tree)


BUILTIN_IDS = (
    "CartPole-v1", "Pendulum-v1", "Acrobot-v1", "MountainCar-v0", "MountainCarContinuous-v0",
    "Asterix-MinAtar", "Breakout-MinAtar", "Freeway-MinAtar", "Seaquest-MinAtar",
    "SpaceInvaders-MinAtar", "Catch-bsuite", "DeepSea-bsuite", "MemoryChain-bsuite",
    "UmbrellaChain-bsuite", "DiscountingChain-bsuite", "MNISTBandit-bsuite", "SimpleBandit-bsuite",
    "FourRooms-misc", "MetaMaze-misc", "PointRobot-misc", "BernoulliBandit-misc",
    "GaussianBandit-misc", "Reacher-misc", "Swimmer-misc", "Pong-misc", "FrozenLake-misc",
)
"""gymnax 1.0's built-in environment ids (`gymnax.registered_envs` before any `gymnax.register`)."""


def registered_ids() -> list[str]:
    """The gymnax ids `Config` accepts, without importing gymnax when it is not imported yet.

    An id registered at run time (`gymnax.register`) needs gymnax imported, so the live registry
    is read whenever gymnax is in `sys.modules`.
    """
    gymnax = sys.modules.get("gymnax")
    registered = getattr(gymnax, "registered_envs", None)
    return list(registered) if registered is not None else list(BUILTIN_IDS)


@dataclass(frozen=True)
class Config:
    """A gymnax environment."""

    env_id: str = "CartPole-v1"
    """gymnax id with discrete actions, e.g. CartPole-v1, Acrobot-v1, Breakout-MinAtar."""
    max_episode_steps: int | None = None
    """Time limit (params.max_steps_in_episode); None keeps gymnax's default for the id."""

    def __post_init__(self) -> None:
        known = registered_ids()
        if self.env_id not in known:
            error = unknown_name("gymnax env id", self.env_id, known)
            raise RlkitError(f"env_id: {error}")
        if self.max_episode_steps is not None:
            require(self.max_episode_steps >= 1, "max_episode_steps",
                    f"must be a positive number of steps or None, got {self.max_episode_steps}.")


def make(config: Config) -> Environment:
    """Wrap the gymnax environment `config.env_id` into an `rlkit.types.Environment`.

    Args:
        config: which environment, and an optional time-limit override.

    Returns:
        The environment: `reset(key, params) -> (obs [*obs_shape] float32, state)` and
        `step(key, state, action int32 [], params) -> (obs, state, reward float32 [],
        terminated bool [], truncated bool [], info)`, without auto-reset.

    Raises:
        RlkitError: the id is unknown, its action space is not discrete, or its observation is not
            a single array.
    """
    import gymnax  # ~12 s: imported only when a gymnax env is built (see the module docstring)
    from gymnax.environments import spaces

    env, params = gymnax.make(config.env_id)
    if config.max_episode_steps is not None:
        params = params.replace(max_steps_in_episode=config.max_episode_steps)

    action_space = env.action_space(params)
    if not isinstance(action_space, spaces.Discrete):
        raise RlkitError(
            f"env_id: gymnax env {config.env_id!r} has a {type(action_space).__name__} action "
            f"space; rlkit's agents need discrete actions. Use an id with a Discrete action "
            "space, e.g. CartPole-v1, Acrobot-v1, MountainCar-v0 or Breakout-MinAtar."
        )

    # eval_shape traces reset_env once without compiling it; params stay concrete (closed over)
    # because some environments use them in Python control flow.
    obs_struct, _ = jax.eval_shape(lambda key: env.reset_env(key, params), jax.random.key(0))
    if not isinstance(obs_struct, jax.ShapeDtypeStruct):
        raise RlkitError(
            f"env_id: gymnax env {config.env_id!r} returns a structured observation "
            f"({jax.tree.structure(obs_struct)}); rlkit needs one observation array."
        )

    spec = EnvSpec(
        name=f"gymnax:{config.env_id}",
        obs_shape=tuple(obs_struct.shape),
        obs_dtype="float32",
        num_actions=int(action_space.n),
        max_episode_steps=int(params.max_steps_in_episode),
    )

    def reset(key: PRNGKey, params: PyTree) -> tuple[Array, PyTree]:
        obs, state = env.reset_env(key, params)
        return obs.astype(jnp.float32), _typed(state)

    def step(
        key: PRNGKey, state: PyTree, action: Array, params: PyTree
    ) -> tuple[Array, PyTree, Array, Array, Array, dict]:
        # gymnax's step splits (key_step, key_reset) and steps with key_step; doing the same keeps
        # this adapter's trajectories identical to gymnax's own.
        key_step, _ = jax.random.split(key)
        obs, next_state, reward, done, info = env.step_env(key_step, state, action, params)
        truncated = env.is_truncated(next_state, params)
        info = jax.tree.map(jnp.asarray, dict(info))
        return (
            obs.astype(jnp.float32),
            _typed(next_state),
            jnp.asarray(reward, jnp.float32),
            jnp.asarray(done, jnp.bool_),
            jnp.asarray(truncated, jnp.bool_),
            info,
        )

    return Environment(spec=spec, default_params=params, reset=reset, step=step)
