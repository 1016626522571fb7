"""The procgen generalisation protocol of Mediratta, You, Jiang and Raileanu, "The Generalization
Gap in Offline Reinforcement Learning" (ICLR 2024, arXiv 2312.05742): level splits and the
per-game normalisation of returns.

Level splits (facebookresearch/gen_dgrl, procgen/offline/evaluate_offline_agent.py), in procgen's
own terms (`start_level`, `num_levels`; `num_levels=0` is the unbounded distribution of level
seeds from `start_level` on):

=========== =========== ========== =====================================================
split       start_level num_levels levels
=========== =========== ========== =====================================================
train       0           200        0-199, the levels the behaviour policy and datasets saw
validation  200         50         200-249
test        250         0          250 and up (unbounded)
=========== =========== ========== =====================================================

Each split is evaluated for 100 episodes in the paper. The number of training levels is a
parameter (the paper's Fig. 5 varies it at fixed dataset size), and so is where training starts
(single-level datasets: `num_levels=1, start_level=L`). Where validation and test then begin is
a reading the paper leaves open [R in the spec], so it is a switch, `protocol`:

* `"fixed"` (default, the paper's code): validation 200-249 and test from 250 whatever the
  training levels. Training levels that reach 200 would overlap them, which is refused (use
  `"after-train"`).
* `"after-train"`: validation is the 50 levels right after the training levels, test everything
  after those: `start + n .. start + n + 49`, then `start + n + 50` on. With 200 training levels
  from 0 the two protocols agree.

Training on `num_levels=0` (every level) leaves no unseen level to test on and is refused.

Normalised return (Cobbe et al. 2020, easy mode; gen_dgrl procgen/utils/plot.py):
`(R - R_min) / (R_max - R_min)` with the per-game constants of `RETURN_RANGES`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from rlkit.errors import RlkitError, require, unknown_name

# (R_min, R_max) of each game in easy mode (Cobbe et al. 2020, Table 1; gen_dgrl plot.py).
RETURN_RANGES: dict[str, tuple[float, float]] = {
    "bigfish": (1.0, 40.0),
    "bossfight": (0.5, 13.0),
    "caveflyer": (3.5, 12.0),
    "chaser": (0.5, 13.0),
    "climber": (2.0, 12.6),
    "coinrun": (5.0, 10.0),
    "dodgeball": (1.5, 19.0),
    "fruitbot": (-1.5, 32.4),
    "heist": (3.5, 10.0),
    "jumper": (1.0, 10.0),
    "leaper": (1.5, 10.0),
    "maze": (5.0, 10.0),
    "miner": (1.5, 13.0),
    "ninja": (3.5, 10.0),
    "plunder": (4.5, 30.0),
    "starpilot": (2.5, 64.0),
}

SPLITS = ("train", "validation", "test")
PROTOCOLS = ("fixed", "after-train")
TRAIN_LEVELS = 200
VALIDATION_LEVELS = 50
FIXED_VALIDATION_START = 200  # the paper's validation levels 200-249
FIXED_TEST_START = 250  # the paper's test levels: 250 and up
EPISODES_PER_SPLIT = 100  # the paper's evaluation episodes per split


def _game_name(game: str) -> str:
    """`coinrun` from `coinrun` or `procgen:coinrun`."""
    return game.removeprefix("procgen:") if isinstance(game, str) else game


def return_range(game: str) -> tuple[float, float]:
    """(R_min, R_max) of `game` (`coinrun` or `procgen:coinrun`), easy mode.

    Raises:
        RlkitError: a game that is not one of the 16, naming it and the closest names.
    """
    name = _game_name(game)
    if name not in RETURN_RANGES:
        raise RlkitError(f"game: {unknown_name('procgen game', str(game), list(RETURN_RANGES))}")
    return RETURN_RANGES[name]


def normalize(game: str, returns: Any) -> jnp.ndarray:
    """Normalised returns `(R - R_min) / (R_max - R_min)` (Cobbe et al. 2020; Mediratta et al.
    2024 sec. 4), elementwise: 0 at the game's R_min, 1 at its R_max.

    Args:
        game: a procgen game (`starpilot` or `procgen:starpilot`).
        returns: episode returns, any shape [...] (a number, list or array).

    Returns:
        float32 [...] normalised returns (may leave [0, 1] for returns outside the range).

    Raises:
        RlkitError: an unknown game, naming it.
    """
    low, high = return_range(game)
    return (jnp.asarray(returns, jnp.float32) - low) / (high - low)


class LevelSplit(NamedTuple):
    """A set of procgen levels: seeds `start_level .. start_level + num_levels - 1`, or every
    seed from `start_level` on when `num_levels` is 0 (procgen's own convention)."""

    name: str
    start_level: int
    num_levels: int

    def contains(self, level_seeds: Any) -> np.ndarray:
        """[...] bool: which of the level seeds [...] lie in this split."""
        seeds = np.asarray(level_seeds, np.int64)
        inside = seeds >= self.start_level
        if self.num_levels:
            inside &= seeds < self.start_level + self.num_levels
        return inside

    def describe(self) -> str:
        """`levels 200-249` or `levels 250 and up`."""
        if self.num_levels == 0:
            return f"levels {self.start_level} and up"
        return f"levels {self.start_level}-{self.start_level + self.num_levels - 1}"


def level_splits(num_train_levels: int = TRAIN_LEVELS, train_start: int = 0,
                 protocol: str = "fixed") -> dict[str, LevelSplit]:
    """The train, validation and test levels of the protocol (see the module docstring).

    Args:
        num_train_levels: training levels (procgen's `num_levels`; 200 in the paper, 1 for a
            single-level dataset); must be >= 1.
        train_start: the first training level (procgen's `start_level`).
        protocol: `"fixed"` (validation 200-249, test 250 and up) or `"after-train"` (the 50
            levels after the training levels, then the rest).

    Returns:
        {"train": ..., "validation": ..., "test": ...} `LevelSplit`s; the test split is
        unbounded (`num_levels=0`). The three are disjoint.

    Raises:
        RlkitError: an unknown protocol, no training levels or every level (num_levels 0), or,
            under "fixed", training levels that reach the validation levels (200 and up).
    """
    require(protocol in PROTOCOLS, "--split-protocol",
            f"unknown protocol {protocol!r}; choose fixed (the paper's: validation 200-249, "
            "test 250 and up) or after-train (validation and test after the training levels)")
    require(num_train_levels >= 1, "num_levels",
            f"is {num_train_levels}: training on every level (0) leaves no unseen level to "
            "evaluate generalisation on; set --env-config.num-levels (the paper: 200)")
    require(train_start >= 0, "start_level", f"must be >= 0, got {train_start}")
    train = LevelSplit("train", train_start, num_train_levels)
    if protocol == "fixed":
        last = train_start + num_train_levels - 1
        require(last < FIXED_VALIDATION_START, "num_levels",
                f"training levels {train_start}-{last} overlap the fixed validation and test "
                f"levels ({FIXED_VALIDATION_START} and up); train on levels below "
                f"{FIXED_VALIDATION_START}, or pass --split-protocol after-train")
        validation_start = FIXED_VALIDATION_START
    else:
        validation_start = train_start + num_train_levels
    validation = LevelSplit("validation", validation_start, VALIDATION_LEVELS)
    test = LevelSplit("test", validation_start + VALIDATION_LEVELS, 0)
    return {"train": train, "validation": validation, "test": test}


def eval_configs(config: Any, protocol: str = "fixed") -> dict[str, Any]:
    """The three evaluation env configs of a procgen env config (`envs.procgen_adapter.Config`).

    The training split is the config's own levels (`start_level`, `num_levels`); the game and
    distribution mode are kept.

    Returns:
        {"train": config, "validation": config, "test": config} with each split's
        `start_level` and `num_levels`.

    Raises:
        RlkitError: as `level_splits`.
    """
    splits = level_splits(config.num_levels, config.start_level, protocol)
    return {name: dataclasses.replace(config, start_level=split.start_level,
                                      num_levels=split.num_levels)
            for name, split in splits.items()}
