"""Import the procgen datasets of Mediratta et al. 2024 ("The Generalization Gap in Offline
Reinforcement Learning", ICLR 2024; facebookresearch/gen_dgrl) into rlkit's dataset format:

    python -m rlkit.collect import-gen-dgrl DIR --game miner --out data/miner-expert \\
        [--num-levels 200] [--start-level 0] [--transitions N] [--overwrite]

The published layout (gen_dgrl `procgen/online/datasets/storage.py`, `RolloutStorage.
_save_episode`) is one compressed `.npz` file per episode, anywhere under DIR, named

    {timestamp}_{episode index}_{episode length}_{level seed}_{return:.2f}.npz

e.g. `20230401T120000_17_312_42_10.00.npz`, holding

    observations  [T + 1, 3, 64, 64] uint8 (channels first, as PyTorch stores them; [T + 1, 64,
                  64, 3] is read too): the reset frame, then the frame after each step; the last
                  one is already the next episode's first frame, since procgen resets at once
    actions       [T] or [T, 1] ints in [0, 15)
    rewards       [T] or [T, 1] floats
    dones         [T] bools, True on the episode's last step

gen_dgrl's own loader (`procgen/offline/dataloader.py`) parses the name from the right: the
return is the last field, the level seed the one before, the length the one before that. This
module does the same, and checks the name against the contents: the length must equal T and the
return the sum of the rewards (to the name's two decimals).

Each episode becomes T rows: obs[t], actions[t], rewards[t], next_obs = observations[t + 1],
terminated = dones[t] (every procgen episode end is terminal, see `envs.procgen_adapter`), and
`level_seed` = the name's level seed, which must lie in the training levels given by
`--start-level` / `--num-levels` (spec 6.5.1: [0, 199] for a 200-level dataset). An episode whose
last step is not `done` (cut by the writer) ends truncated.

Order and size: like gen_dgrl's loader, episodes are taken in decreasing order of return (ties
by file name); `--transitions N` keeps exactly the first N rows
(`rlkit.data.dataset.first_transitions`, the cut episode marked truncated), as the loader's
`capacity_type="transitions"`, `dataset_size=N` reads. Files are read one at a time, but the
dataset is assembled in memory before it is written.

Every bad file (not a zip, a missing array, lengths that disagree with each other or with the
name, a level outside the training levels) is one error line naming the file.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, NamedTuple

import numpy as np
import tyro

from rlkit.errors import RlkitError, require

_NAME = re.compile(r"^(?P<prefix>.+)_(?P<length>\d+)_(?P<level_seed>-?\d+)_"
                   r"(?P<episode_return>-?\d+(?:\.\d+)?)\.npz$")
_KEYS = ("observations", "actions", "rewards", "dones")


class EpisodeName(NamedTuple):
    """What a gen_dgrl episode file name says (`parse_episode_name`)."""

    path: Path
    length: int
    level_seed: int
    episode_return: float


def parse_episode_name(path: str | Path) -> EpisodeName:
    """The length, level seed and return in a gen_dgrl episode file name.

    Args:
        path: a file named `{timestamp}_{index}_{length}_{level seed}_{return:.2f}.npz`.

    Raises:
        RlkitError: a name without those fields, naming the file and the pattern.
    """
    path = Path(path)
    match = _NAME.match(path.name)
    require(match is not None, str(path),
            "is not named like a gen_dgrl episode: expected "
            "{timestamp}_{index}_{length}_{level seed}_{return}.npz, e.g. "
            "20230401T120000_17_312_42_10.00.npz")
    return EpisodeName(path, int(match["length"]), int(match["level_seed"]),
                       float(match["episode_return"]))


def episode_files(directory: str | Path) -> list[EpisodeName]:
    """Every `.npz` file under `directory`, parsed, in decreasing order of return (ties by path),
    the order gen_dgrl's loader reads them in.

    Raises:
        RlkitError: no such directory, no `.npz` file in it, or a badly named file.
    """
    directory = Path(directory)
    require(directory.is_dir(), str(directory),
            "is not a directory; pass the folder holding a gen_dgrl dataset's .npz episodes")
    names = [parse_episode_name(path) for path in sorted(directory.rglob("*.npz"))]
    require(bool(names), str(directory),
            "holds no .npz episode files; pass the folder of a gen_dgrl dataset")
    return sorted(names, key=lambda name: (-name.episode_return, str(name.path)))


def read_episode(name: EpisodeName) -> dict[str, np.ndarray]:
    """One episode file as rlkit columns [T, ...] (obs and next_obs [T, 64, 64, 3] uint8).

    Raises:
        RlkitError: naming the file: unreadable, a missing array, or contents that disagree
            with each other or with the name.
    """
    where = str(name.path)
    try:
        with np.load(name.path, allow_pickle=False) as data:
            missing = [key for key in _KEYS if key not in data.files]
            require(not missing, where, f"has no {missing} array(s); a gen_dgrl episode holds "
                    f"{', '.join(_KEYS)}")
            arrays = {key: np.asarray(data[key]) for key in _KEYS}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise RlkitError(f"{where}: is not a readable .npz file ({error}); re-download "
                         "it or delete it") from None
    actions = arrays["actions"].reshape(len(arrays["actions"]), -1)[:, 0]
    rewards = arrays["rewards"].reshape(len(arrays["rewards"]), -1)[:, 0]
    dones = arrays["dones"].reshape(len(arrays["dones"]), -1)[:, 0]
    obs = arrays["observations"]
    if obs.ndim == 4 and obs.shape[1] == 3 and obs.shape[-1] != 3:
        obs = obs.transpose(0, 2, 3, 1)  # PyTorch's [C, H, W] to rlkit's [H, W, C]
    length = len(actions)
    require(length >= 1 and len(rewards) == length and len(dones) == length, where,
            f"has {len(actions)} actions, {len(rewards)} rewards and {len(dones)} dones; they "
            "must agree (and be at least 1)")
    require(obs.ndim == 4 and obs.shape[1:] == (64, 64, 3) and len(obs) in (length, length + 1),
            where, f"has observations of shape {arrays['observations'].shape}; expected "
            f"[{length + 1}, 3, 64, 64] (the reset frame and one per step)")
    require(length == name.length, where,
            f"holds {length} steps but its name says {name.length}; the file is damaged")
    require(abs(float(rewards.sum()) - name.episode_return) <= 0.006, where,
            f"has rewards summing to {float(rewards.sum()):.4g} but its name says "
            f"{name.episode_return:.2f}; the file is damaged")
    require(actions.dtype.kind in "iu" and actions.min() >= 0 and actions.max() < 15, where,
            f"has actions in [{actions.min()}, {actions.max()}], procgen's are in [0, 15)")
    if len(obs) == length:  # no frame after the last step: it stands in for itself
        obs = np.concatenate([obs, obs[-1:]])
    terminated = dones.astype(bool)
    truncated = np.zeros(length, bool)
    truncated[-1] = not terminated[-1]  # cut by the writer: bootstrap, do not terminate
    return {
        "obs": obs[:-1].astype(np.uint8), "next_obs": obs[1:].astype(np.uint8),
        "action": actions.astype(np.int32), "reward": rewards.astype(np.float32),
        "terminated": terminated, "truncated": truncated,
        "level_seed": np.full(length, name.level_seed, np.int32),
    }


def import_gen_dgrl(directory: str | Path, game: str, num_levels: int = 200,
                    start_level: int = 0, distribution_mode: str = "easy",
                    transitions: int | None = None):
    """A gen_dgrl episode folder as an in-memory rlkit `Dataset` (see the module docstring).

    Args:
        directory: the folder of `.npz` episode files (searched recursively).
        game: the procgen game the episodes were played in.
        num_levels, start_level, distribution_mode: the training levels the data came from
            (the paper: 200 levels from 0, easy); every file's level seed must lie in them.
        transitions: keep exactly this many rows (highest-return episodes first), or all.

    Returns:
        A `rlkit.data.dataset.Dataset` (path None) with `level_seed` [M] int32, env
        `procgen:{game}` and the levels as its env params.

    Raises:
        RlkitError: a bad directory, file or level seed (naming the file), too few
            transitions for `transitions`, an unknown game or mode.
    """
    from rlkit import registry
    from rlkit.data.dataset import Dataset, DatasetInfo, first_transitions
    from rlkit.procgen import LevelSplit
    from rlkit.types import Transition

    adapter = registry.env_module(f"procgen:{game}")  # envs.procgen_adapter
    config = adapter.Config(game=game, num_levels=num_levels, start_level=start_level,
                            distribution_mode=distribution_mode)
    require(transitions is None or transitions >= 1, "--transitions",
            f"must be at least 1, got {transitions}")
    levels = LevelSplit("train", start_level, num_levels)
    names = episode_files(directory)
    for name in names:  # every name is checked before any file is read
        require(bool(levels.contains(name.level_seed)), str(name.path),
                f"was played on level {name.level_seed}, outside the training "
                f"{levels.describe()}; pass the dataset's --num-levels / --start-level")
    episodes, rows = [], 0
    for name in names:
        episodes.append(read_episode(name))
        rows += len(episodes[-1]["action"])
        if transitions is not None and rows >= transitions:
            break
    columns = {key: np.concatenate([episode[key] for episode in episodes])
               for key in episodes[0]}
    if transitions is not None:
        require(rows >= transitions, "--transitions",
                f"asks for {transitions:,} transitions, but {directory} holds only {rows:,}")
        columns = first_transitions(columns, transitions)
    returns = np.array([float(episode["reward"].sum()) for episode in episodes])
    level_seed = columns.pop("level_seed")
    info = DatasetInfo(
        env_id=f"procgen:{game}", env_params=dataclasses.asdict(config),
        obs_shape=adapter.OBS_SHAPE, obs_dtype="uint8", num_actions=adapter.NUM_ACTIONS,
        behaviour_policy=f"gen_dgrl episodes from {Path(directory).name}",
        behaviour_return=float(returns.mean()), behaviour_return_std=float(returns.std()),
        extra={"source": "gen_dgrl", "directory": str(directory), "files": len(episodes),
               "files_available": len(names), "transitions": transitions})
    num_episodes = int(np.count_nonzero(columns["terminated"] | columns["truncated"]))
    return Dataset(info=info, transitions=Transition(**columns), num_episodes=num_episodes,
                   path=None, level_seed=level_seed)


@dataclass(frozen=True)
class ImportOptions:
    """Import a gen_dgrl procgen dataset (one .npz file per episode) into rlkit's format."""

    directory: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="DIR")]
    """The folder holding the episode files (searched recursively)."""
    out: str
    """Dataset directory to write (must not exist unless --overwrite)."""
    game: str
    """The procgen game the episodes were played in (the files do not say), e.g. coinrun."""
    num_levels: int = 200
    """Training levels the data came from (the paper: 200); level seeds must lie in them."""
    start_level: int = 0
    """First training level."""
    distribution_mode: str = "easy"
    """Procgen's distribution mode of the data (the paper: easy)."""
    transitions: int | None = None
    """Keep exactly this many transitions (highest-return episodes first, as gen_dgrl's
    loader); default all."""
    overwrite: bool = False
    """Replace an existing dataset at --out."""


def main(argv: list[str]) -> int:
    """`python -m rlkit.collect import-gen-dgrl DIR --out OUT ...`; 0 done, 2 bad input."""
    from rlkit.collect import _check_out
    from rlkit.data.dataset import save_dataset
    from rlkit.errors import tyro_cli

    try:
        options = tyro_cli(ImportOptions, argv, "python -m rlkit.collect import-gen-dgrl")
        _check_out(options.out, options.overwrite)
        dataset = import_gen_dgrl(options.directory, options.game, options.num_levels,
                                  options.start_level, options.distribution_mode,
                                  options.transitions)
        path = save_dataset(options.out, dataset.transitions, dataset.info,
                            overwrite=options.overwrite, level_seed=dataset.level_seed)
    except RlkitError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except SystemExit as exit_:  # --help
        return exit_.code if isinstance(exit_.code, int) else 2
    count = len(dataset.transitions.action)
    print(f"imported {dataset.num_episodes:,} episodes, {count:,} transitions of "
          f"{dataset.info.env_id} (return {dataset.info.behaviour_return:.4g}); dataset: {path}")
    return 0
