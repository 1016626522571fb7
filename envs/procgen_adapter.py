"""Procgen games (Cobbe et al. 2020) as an rlkit `HostEnvironment`, through procgen's native
batched gym3 interface (`procgen.ProcgenGym3Env`).

Needs the optional extra: `pip install -e '.[procgen]'` (or `uv sync --extra procgen --no-group
numpy2`); `procgen` is imported only inside `make`, so the rest of rlkit works without it.

Semantics, and where they deviate from gymnasium's:

* Observations are [N, 64, 64, 3] uint8 RGB frames; there are 15 actions for every game.
* **Every episode end is `terminated`; `truncated` is always False.** Procgen ends an episode
  either in the game (death, level complete, ...) or at an internal per-game timeout (500 to 6000
  steps, listed in `TIMEOUTS` and reported as `EnvSpec.max_episode_steps`), and reports both as one
  `done`. Its C++ side resets immediately and never exposes the last frame of the finished
  episode, so a timeout could not be bootstrapped from the true final observation anyway. We
  therefore follow Cobbe et al. (2020) and the offline procgen datasets (Mediratta et al. 2024),
  which treat every `done` as terminal.
* `final_obs` equals `obs` (the first frame of the next episode where one ended). With
  truncated always False no consumer bootstraps from it; it is there to keep the `HostStep`
  contract.
* `last_info` holds procgen's per-env info of the latest step as [N] arrays: `level_seed` (the
  level now being played), `prev_level_seed` and `prev_level_complete` (the level of the step just
  taken and whether it was completed; meaningful where an episode ended). Evaluations use them
  to check the level split (train / validation / test levels) and success rates.
* Seeding: procgen cannot reseed a running env, so `reset(seed)` builds a fresh one with
  `rand_seed=seed`. The same seed gives the same level sequence and frames. Procgen draws each
  env's level seeds from its own generator seeded with `rand_seed` (not `rand_seed + i`), and the
  host driver gives every reset an unrelated seed (`rlkit.loops.host.reset_seed`), so runs with
  neighbouring seeds do not share their level sequences.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rlkit.errors import RlkitError, require, unknown_name
from rlkit.types import EnvSpec, HostEnvironment, HostStep

GAMES = (
    "bigfish", "bossfight", "caveflyer", "chaser", "climber", "coinrun", "dodgeball", "fruitbot",
    "heist", "jumper", "leaper", "maze", "miner", "ninja", "plunder", "starpilot",
)

# Which games each distribution mode supports. Procgen checks this in C++ with an assertion that
# kills the whole process, so it has to be checked here first (procgen/src/game.cpp,
# Game::parse_options; exploration levels from procgen/env.py EXPLORATION_LEVEL_SEEDS).
DISTRIBUTION_MODES = {
    "easy": GAMES,
    "hard": GAMES,
    "extreme": ("chaser", "dodgeball", "leaper", "starpilot"),
    "memory": ("caveflyer", "dodgeball", "heist", "jumper", "maze", "miner"),
    "exploration": ("caveflyer", "climber", "coinrun", "heist", "jumper", "leaper", "maze",
                    "ninja"),
}

# Each game's episode timeout in steps (the `timeout` field of procgen's serialized game state,
# read from procgen-mirror 0.10.7 and checked by tests/test_procgen.py).
TIMEOUTS = {
    "bigfish": 6000, "bossfight": 4000, "caveflyer": 1000, "chaser": 1000, "climber": 1000,
    "coinrun": 1000, "dodgeball": 1000, "fruitbot": 1000, "heist": 1000, "jumper": 1000,
    "leaper": 500, "maze": 500, "miner": 1000, "ninja": 1000, "plunder": 4000, "starpilot": 1000,
}
_MODE_TIMEOUTS = {("jumper", "memory"): 2000}

NUM_ACTIONS = 15
OBS_SHAPE = (64, 64, 3)
_INFO_DTYPES = {"level_seed": np.int32, "prev_level_seed": np.int32, "prev_level_complete": bool}


@dataclass(frozen=True)
class Config:
    """A procgen game and its level distribution."""

    game: str = "coinrun"
    """One of the 16 procgen games, e.g. coinrun, bigfish, maze, miner."""
    num_levels: int = 200
    """How many distinct levels (seeds start_level .. start_level + num_levels - 1); 0: all."""
    start_level: int = 0
    """First level seed (200 for the validation split, 250 with num_levels=0 for test)."""
    distribution_mode: str = "easy"
    """Level difficulty: easy, hard, extreme, memory or exploration (not every game has each)."""

    def __post_init__(self) -> None:
        if self.game not in GAMES:
            raise RlkitError(f"game: {unknown_name('procgen game', self.game, list(GAMES))}")
        require(self.distribution_mode in DISTRIBUTION_MODES, "distribution_mode",
                f"unknown mode {self.distribution_mode!r}; choose one of "
                f"{', '.join(DISTRIBUTION_MODES)}.")
        supported = DISTRIBUTION_MODES[self.distribution_mode]
        require(self.game in supported, "distribution_mode",
                f"procgen's {self.game!r} has no {self.distribution_mode!r} mode; that mode "
                f"exists for {', '.join(supported)}. Use easy or hard.")
        require(self.num_levels >= 0, "num_levels",
                f"must be >= 0 (0 = unbounded), got {self.num_levels}.")
        require(self.start_level >= 0, "start_level", f"must be >= 0, got {self.start_level}.")

    @property
    def max_episode_steps(self) -> int:
        """The game's episode timeout in steps."""
        return _MODE_TIMEOUTS.get((self.game, self.distribution_mode), TIMEOUTS[self.game])


class ProcgenEnv(HostEnvironment):
    """`num_envs` procgen environments stepped together by procgen's C++ batch.

    Attributes:
        spec: the static `EnvSpec` ([64, 64, 3] uint8 observations, 15 actions).
        num_envs: number of environments N.
        seed: the seed that `reset()` uses when it is called without one.
        last_info: dict of [N] arrays from the latest reset or step (see the module docstring).
    """

    def __init__(self, procgen_module, config: Config, num_envs: int, seed: int):
        require(num_envs >= 1, "num_envs", f"must be at least 1, got {num_envs}.")
        self._procgen = procgen_module
        self._config = config
        self.num_envs = num_envs
        self.seed = seed
        self.spec = EnvSpec(
            name=f"procgen:{config.game}",
            obs_shape=OBS_SHAPE,
            obs_dtype="uint8",
            num_actions=NUM_ACTIONS,
            max_episode_steps=config.max_episode_steps,
        )
        self.last_info: dict[str, np.ndarray] = {}
        self._env = None
        self._build(seed)
        self._needs_reset = True

    def _build(self, seed: int) -> None:
        require(0 <= seed < 2**31, "seed", f"procgen needs a seed in [0, 2**31), got {seed}.")
        if self._env is not None:
            self._env.close()
        self._env = self._procgen.ProcgenGym3Env(
            num=self.num_envs,
            env_name=self._config.game,
            num_levels=self._config.num_levels,
            start_level=self._config.start_level,
            distribution_mode=self._config.distribution_mode,
            # gym3's option packing accepts Python ints only (not numpy integers).
            rand_seed=int(seed),
        )

    def _observe(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        reward, obs, first = self._env.observe()
        infos = self._env.get_info()
        self.last_info = {key: np.array([info[key] for info in infos], dtype)
                          for key, dtype in _INFO_DTYPES.items()}
        # gym3 may hand out views of buffers that the next step overwrites: copy.
        return np.array(obs["rgb"], np.uint8), np.asarray(reward, np.float32), np.array(first, bool)

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Start afresh: a new procgen batch seeded with `seed` (None: the seed given to `make`).

        Returns:
            [N, 64, 64, 3] uint8 first observations.
        """
        self._build(self.seed if seed is None else seed)
        self._needs_reset = False
        obs, _, _ = self._observe()
        return obs

    def step(self, actions: np.ndarray) -> HostStep:
        """Step every environment once; procgen restarts those whose episode ended.

        Args:
            actions: [N] ints in [0, 15).

        Returns:
            A `HostStep` of [N, ...] arrays; terminated marks every episode end, truncated is
            always False and final_obs equals obs (see the module docstring for why).
        """
        if self._needs_reset:
            raise RlkitError("ProcgenEnv.step: call reset(seed) before the first step.")
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,):
            raise RlkitError(f"actions: expected shape ({self.num_envs},), got {actions.shape}.")
        # Procgen reads action -1 as "force a reset", so out-of-range actions must not pass.
        if actions.min() < 0 or actions.max() >= NUM_ACTIONS:
            raise RlkitError(f"actions: must lie in [0, {NUM_ACTIONS}), got {actions}.")
        self._env.act(actions.astype(np.int32))
        obs, reward, first = self._observe()
        return HostStep(
            obs=obs,
            reward=reward,
            # `first` marks the first frame of a new episode, i.e. the step just taken ended one.
            terminated=first,
            truncated=np.zeros(self.num_envs, bool),
            final_obs=obs.copy(),
        )

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None


def make(config: Config, num_envs: int, seed: int) -> ProcgenEnv:
    """Build `num_envs` environments of `config.game` behind the `HostEnvironment` interface.

    Args:
        config: the game and its level distribution.
        num_envs: number of environments N stepped together.
        seed: procgen's `rand_seed`, which fixes the sequence of levels each env plays.

    Raises:
        RlkitError: procgen is not installed (the message names the extra to install).
    """
    try:
        import procgen
    except ImportError as error:
        raise RlkitError(
            f"procgen:{config.game} needs the optional extra 'procgen' ({error}). Install it with: "
            "pip install -e '.[procgen]' (or: UV_PROJECT_ENVIRONMENT=.venv-procgen uv sync "
            "--frozen --extra procgen --no-group numpy2)"
        ) from None
    return ProcgenEnv(procgen, config, num_envs, seed)
