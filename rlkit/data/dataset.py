"""The versioned on-disk format of offline datasets (ARCHITECTURE.md section 4).

A dataset is a directory holding one `.npy` file per `Transition` field and a `metadata.json`
written last::

    my-dataset/
        metadata.json     format, version, env, schema, counts, checksums (below)
        obs.npy           [N, *obs_shape] obs_dtype (uint8 images stay uint8)
        action.npy        [N] int32 in [0, num_actions)
        reward.npy        [N] float32, finite
        terminated.npy    [N] bool, the episode entered a terminal state (do not bootstrap)
        truncated.npy     [N] bool, the episode was cut by a time limit (bootstrap)
        next_obs.npy      [N, *obs_shape] obs_dtype, the true next observation (before any reset)
        level_seed.npy    [N] int32, optional: the procgen level each transition was played on
                          (`Dataset.level_seed`; rlkit.procgen checks it against level splits)

`metadata.json` (format version 1)::

    {
      "format": "rlkit-dataset", "format_version": 1,
      "created": "2025-01-01T00:00:00+00:00", "rlkit_version": "0.1.0",
      "env": {"id": "chain", "params": {...}},
      "observation": {"shape": [4], "dtype": "float32"},
      "action": {"num_actions": 2, "dtype": "int32"},
      "behaviour": {"policy": "random", "return_mean": 21.3, "return_std": 9.8},
      "counts": {"transitions": N, "episodes": E},
      "files": {"obs": {"path": "obs.npy", "shape": [N, 4], "dtype": "float32",
                        "sha256": "...", "bytes": 1234}, ...},
      "extra": {...},
      "metadata_sha256": "..."
    }

`metadata_sha256` is `metadata_checksum` of everything else in the file (canonical JSON, so the
indentation does not matter): an edited env id, horizon or count is refused on load, as a
modified `.npy` file is refused by its own sha256. Rewards and float observations are finite
(saving refuses NaN and inf, and so does loading).

Datasets written before the metadata checksum existed (same format version: older readers
ignore the new key) load only with `verify=False`; `load_dataset(path, verify=True)` refuses them
with the fix: check the metadata, then load with `verify=False` and save again.

Rows are transitions; `episodes` counts the rows where `terminated | truncated`. Terminated and
truncated are kept apart, since only terminated rows stop bootstrapping. Nothing requires the
rows of one episode to be contiguous (a collector may store several environments' steps
interleaved), but exporting to Minari (`rlkit.data.minari_io.to_minari`) does. `Transition.extras`
is not stored.

Writes are atomic (`rlkit.io.atomic_directory`): `save_dataset` writes into a hidden sibling
directory `.<name>.partial-<pid>-<host>-<token>`, fsyncs every file, writes `metadata.json` last
and renames the directory into place, so a writer killed at any moment leaves either nothing at
`path` or a complete dataset (`load_dataset` refuses the hidden leftovers by name). The next write
into the same directory removes the leftovers of writers that are gone (see `rlkit.io`).
Loading validates everything it reads and reports each problem as one `DatasetError` that names
the file, the problem and the fix. Readers refuse datasets with a newer `format_version`; a
change that older readers could misread bumps it.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import json
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from rlkit.errors import RlkitError, require
from rlkit.io import LEFTOVER_RE, atomic_directory
from rlkit.types import Transition

FORMAT_NAME = "rlkit-dataset"
FORMAT_VERSION = 1
METADATA_FILE = "metadata.json"
FIELDS = ("obs", "action", "reward", "terminated", "truncated", "next_obs")
OPTIONAL_FIELDS = ("level_seed",)
"""Per-transition [N] int32 arrays a dataset may hold beside the `Transition` fields (older
readers ignore files they do not know, so they need no new format version)."""

METADATA_CHECKSUM = "metadata_sha256"
"""The metadata key holding `metadata_checksum` of the rest of the metadata."""

_HASH_CHUNK = 1 << 20  # sha256 over 1 MiB reads: constant memory for image datasets
_FINITE_CHUNK_BYTES = 1 << 26  # finiteness checks read memmaps 64 MiB at a time


class DatasetError(RlkitError):
    """A dataset file or directory is missing, incomplete, corrupt or inconsistent."""


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset is: where it came from, its schema and the behaviour policy's quality.

    `env_params` and `extra` are normalised through JSON on construction (tuples become lists,
    numpy scalars become Python numbers), so an info equals itself after a save / load round
    trip; non-JSON-able content fails here, not halfway through a write.

    Attributes:
        env_id: registry name, e.g. "chain" or "gym:CartPole-v1".
        env_params: JSON-able env config (`dataclasses.asdict` of the env config), {} if none.
        obs_shape: shape of one observation, e.g. (4,) or (84, 84, 4).
        obs_dtype: numpy dtype name of observations ("float32", "uint8").
        num_actions: number of discrete actions.
        behaviour_policy: free text, e.g. "random" or "mixture(epsilon=0.3) of runs/ppo-chain".
        behaviour_return: measured mean episode return of the behaviour policy, if known.
        behaviour_return_std: standard deviation of those returns, if known.
        extra: anything JSON-able (normalised score, exact J(pi), seed, ...).
    """

    env_id: str
    env_params: dict
    obs_shape: tuple[int, ...]
    obs_dtype: str
    num_actions: int
    behaviour_policy: str
    behaviour_return: float | None = None
    behaviour_return_std: float | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        require(
            isinstance(self.env_id, str) and bool(self.env_id),
            "DatasetInfo.env_id",
            f"must be a non-empty registry name such as 'chain', got {self.env_id!r}",
        )
        try:
            shape = tuple(int(d) for d in self.obs_shape)
        except (TypeError, ValueError):
            shape = None
        require(
            shape is not None and all(d >= 0 for d in shape),
            "DatasetInfo.obs_shape",
            f"must be a tuple of non-negative ints, got {self.obs_shape!r}",
        )
        try:
            dtype = np.dtype(self.obs_dtype)
        except TypeError:
            dtype = None
        require(
            dtype is not None and dtype.kind in "biuf",
            "DatasetInfo.obs_dtype",
            f"must name a numeric numpy dtype such as 'float32' or 'uint8', got {self.obs_dtype!r}",
        )
        require(
            isinstance(self.num_actions, int | np.integer) and self.num_actions >= 1,
            "DatasetInfo.num_actions",
            f"must be an int >= 1, got {self.num_actions!r}",
        )
        require(
            isinstance(self.behaviour_policy, str),
            "DatasetInfo.behaviour_policy",
            f"must be a string, got {self.behaviour_policy!r}",
        )
        object.__setattr__(self, "obs_shape", shape)
        object.__setattr__(self, "obs_dtype", dtype.name)
        object.__setattr__(self, "num_actions", int(self.num_actions))
        for name in ("behaviour_return", "behaviour_return_std"):
            value = getattr(self, name)
            if value is not None:
                require(
                    isinstance(value, int | float | np.number) and np.isfinite(value),
                    f"DatasetInfo.{name}",
                    f"must be a finite number or None, got {value!r}",
                )
                object.__setattr__(self, name, float(value))
        for name in ("env_params", "extra"):
            value = getattr(self, name)
            require(
                isinstance(value, dict),
                f"DatasetInfo.{name}",
                f"must be a dict, got {type(value).__name__}",
            )
            try:
                normalised = json.loads(_dumps(value))
            except (TypeError, ValueError) as error:
                raise RlkitError(
                    f"DatasetInfo.{name}: must be JSON-able (strings, finite numbers, lists, "
                    f"dicts with string keys): {error}"
                ) from None
            object.__setattr__(self, name, normalised)


class Dataset(NamedTuple):
    """A loaded dataset.

    Attributes:
        info: the `DatasetInfo` from the metadata.
        transitions: numpy arrays (or read-only `np.memmap`s) with a leading [N] axis:
            obs / next_obs [N, *obs_shape], action [N] int32, reward [N] float32,
            terminated / truncated [N] bool; `extras` is {}.
        num_episodes: number of rows where an episode ended (terminated or truncated).
        path: the dataset directory, or None for a dataset built in memory.
        level_seed: [N] int32, the procgen level of each transition, or None (other envs).
    """

    info: DatasetInfo
    transitions: Transition
    num_episodes: int
    path: Path | None
    level_seed: np.ndarray | None = None


# --------------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------------


def save_dataset(
    path: str | Path, transitions: Transition, info: DatasetInfo, *, overwrite: bool = False,
    level_seed: np.ndarray | None = None,
) -> Path:
    """Validate `transitions` against `info` and write them atomically as a dataset directory.

    Args:
        path: the dataset directory to create (its parent is created if missing).
        transitions: numpy or JAX arrays with a leading [N] axis, N >= 1: obs / next_obs
            [N, *info.obs_shape] of dtype info.obs_dtype; integer action [N] in
            [0, num_actions); finite reward [N]; terminated / truncated [N] (bool, or 0 / 1).
            Stored as int32 actions, float32 rewards and bool flags; `extras` is not stored.
        info: the dataset's description (see `DatasetInfo`).
        overwrite: replace an existing dataset at `path`. The old one stays readable until the
            new one is complete; if the process dies between the two renames, `path` is absent
            and the old dataset waits at `.<name>.old-...` next to it.
        level_seed: [N] non-negative ints, the procgen level of each transition (stored as
            level_seed.npy, int32), or None.

    Returns:
        The dataset directory, as a `Path`.

    Raises:
        DatasetError: `path` exists (without `overwrite`), or the transitions do not match `info`
            (including NaN or inf rewards or observations).
        RlkitError: the file system refused the write (read-only, full), naming the path.
    """
    path = Path(path)
    arrays = _validated_arrays(transitions, info)
    if level_seed is not None:
        seeds = np.asarray(level_seed)
        if (seeds.shape != arrays["action"].shape or seeds.dtype.kind not in "iu"
                or (seeds.size and (seeds.min() < 0 or seeds.max() >= 2**31))):
            raise DatasetError(
                f"level_seed: must be [N] = ({len(arrays['action'])},) ints in [0, 2**31), got "
                f"shape {seeds.shape} dtype {seeds.dtype}."
            )
        arrays["level_seed"] = seeds.astype(np.int32)
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise DatasetError(
                f"{path}: already exists. Pass overwrite=True to replace it, or choose another "
                f"path."
            )
        if not (path.is_dir() and (path / METADATA_FILE).is_file()):
            raise DatasetError(
                f"{path}: exists but is not an rlkit dataset (no {METADATA_FILE}); refusing to "
                f"delete it even with overwrite=True. Remove it yourself or choose another path."
            )
    with atomic_directory(path, replace=overwrite) as partial:
        files = {}
        for name, array in arrays.items():
            file = partial / f"{name}.npy"
            with open(file, "wb") as handle:
                np.save(handle, array, allow_pickle=False)
            files[name] = {
                "path": file.name,
                "shape": list(array.shape),
                "dtype": array.dtype.name,
                "sha256": _sha256(file),
                "bytes": file.stat().st_size,
            }
        ended = arrays["terminated"] | arrays["truncated"]
        metadata = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "rlkit_version": _rlkit_version(),
            "env": {"id": info.env_id, "params": info.env_params},
            "observation": {"shape": list(info.obs_shape), "dtype": info.obs_dtype},
            "action": {"num_actions": info.num_actions, "dtype": "int32"},
            "behaviour": {
                "policy": info.behaviour_policy,
                "return_mean": info.behaviour_return,
                "return_std": info.behaviour_return_std,
            },
            "counts": {"transitions": len(ended), "episodes": int(ended.sum())},
            "files": files,
            "extra": info.extra,
        }
        metadata[METADATA_CHECKSUM] = metadata_checksum(metadata)
        # metadata.json last: a directory without it is never a dataset.
        (partial / METADATA_FILE).write_text(_dumps(metadata, indent=2) + "\n", encoding="utf-8")
    return path


def _validated_arrays(transitions: Transition, info: DatasetInfo) -> dict[str, np.ndarray]:
    """The six stored arrays, cast to their stored dtypes, or a `DatasetError` naming the field."""
    if not isinstance(info, DatasetInfo):
        raise DatasetError(f"info: must be a DatasetInfo, got {type(info).__name__}.")
    arrays = {}
    for name in FIELDS:
        try:
            arrays[name] = np.asarray(getattr(transitions, name))
        except AttributeError:
            raise DatasetError(
                f"transitions: has no field {name!r}; pass an rlkit.types.Transition."
            ) from None
    sizes = {name: (array.shape[0] if array.ndim else None) for name, array in arrays.items()}
    size = sizes["obs"]
    if size is None or size < 1 or any(s != size for s in sizes.values()):
        raise DatasetError(
            f"transitions: every field needs the same leading [N] axis with N >= 1, got leading "
            f"sizes {sizes}."
        )
    for name in ("obs", "next_obs"):
        array = arrays[name]
        if array.shape[1:] != info.obs_shape or array.dtype != np.dtype(info.obs_dtype):
            raise DatasetError(
                f"transitions.{name}: shape {array.shape} dtype {array.dtype} does not match the "
                f"info's [N, *obs_shape] = [{size}, {', '.join(map(str, info.obs_shape))}] "
                f"{info.obs_dtype}. Fix DatasetInfo.obs_shape / obs_dtype or cast the data."
            )
    for name in ("obs", "next_obs"):
        if not _all_finite(arrays[name]):
            raise DatasetError(
                f"transitions.{name}: holds NaN or inf values; observations must be finite."
            )
    for name in FIELDS[1:5]:
        if arrays[name].shape != (size,):
            raise DatasetError(
                f"transitions.{name}: shape {arrays[name].shape}, expected [N] = ({size},)."
            )
    action = arrays["action"]
    if action.dtype.kind not in "iu":
        raise DatasetError(
            f"transitions.action: dtype {action.dtype}, expected integers (discrete actions)."
        )
    if action.min() < 0 or action.max() >= info.num_actions:
        raise DatasetError(
            f"transitions.action: values in [{action.min()}, {action.max()}], expected "
            f"[0, num_actions) = [0, {info.num_actions})."
        )
    arrays["action"] = action.astype(np.int32)
    reward = arrays["reward"]
    if reward.dtype.kind not in "biuf" or not np.all(np.isfinite(reward)):
        raise DatasetError(
            f"transitions.reward: must be finite numbers (dtype {reward.dtype}); found NaN, inf "
            f"or non-numeric values."
        )
    arrays["reward"] = reward.astype(np.float32)
    for name in ("terminated", "truncated"):
        flags = arrays[name]
        if flags.dtype != bool:
            if flags.dtype.kind not in "biuf" or not np.all((flags == 0) | (flags == 1)):
                raise DatasetError(
                    f"transitions.{name}: must be bool (or 0 / 1), got dtype {flags.dtype} with "
                    f"other values."
                )
            arrays[name] = flags.astype(bool)
    return arrays


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def load_dataset(path: str | Path, *, mmap: bool = False, verify: bool = True) -> Dataset:
    """Load and validate a dataset directory written by `save_dataset`.

    Args:
        path: the dataset directory.
        mmap: open the arrays read-only with `np.load(mmap_mode="r")` instead of reading them
            into memory (for image datasets larger than memory; see `batch_stream`).
        verify: check every file's sha256 against the metadata (reads each file once, in
            1 MiB chunks), and refuse a metadata.json without `metadata_sha256` (written before
            it existed). Sizes, shapes, dtypes, counts, finiteness and a present
            `metadata_sha256` are always checked.

    Returns:
        A `Dataset` whose transitions are numpy arrays (or memmaps) with a leading [N] axis.

    Raises:
        DatasetError: one message naming the file, the problem and the fix, for a missing path,
            an incomplete or foreign directory, bad or edited metadata, a newer format version,
            no transitions, missing, truncated or modified files, mismatched shapes, dtypes or
            counts, NaN or inf rewards or observations, or actions out of range.
    """
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such dataset directory. Check the path.")
    if not path.is_dir():
        raise DatasetError(
            f"{path}: not a directory; an rlkit dataset is a directory holding {METADATA_FILE} "
            f"and one .npy file per field."
        )
    leftover = LEFTOVER_RE.match(path.name)
    if leftover and leftover["kind"] == "partial":
        raise DatasetError(
            f"{path}: the unfinished output of an interrupted save_dataset, not a dataset. "
            f"Delete it and save again."
        )
    if leftover:
        raise DatasetError(
            f"{path}: a dataset moved aside by an interrupted overwrite. Rename it (without the "
            f"leading dot and '.old-...' suffix) to recover it."
        )
    meta_file = path / METADATA_FILE
    if not meta_file.is_file():
        raise DatasetError(
            f"{meta_file}: missing, so {path} is incomplete or not an rlkit dataset. Write it "
            f"with rlkit.data.save_dataset (or python -m rlkit.collect)."
        )
    try:
        metadata = json.loads(meta_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DatasetError(
            f"{meta_file}: not valid JSON ({error}). The file is corrupt: restore or rewrite the "
            f"dataset."
        ) from None
    if not isinstance(metadata, dict):
        raise DatasetError(f"{meta_file}: expected a JSON object at the top level.")
    meta = _Metadata(meta_file, metadata)
    if metadata.get("format") != FORMAT_NAME:
        raise DatasetError(
            f"{meta_file}: format is {metadata.get('format')!r}, expected {FORMAT_NAME!r}: not "
            f"an rlkit dataset. (For Minari datasets use rlkit.data.minari_io.from_minari.)"
        )
    version = meta.get("format_version", int)
    if version > FORMAT_VERSION:
        raise DatasetError(
            f"{meta_file}: format_version {version} was written by a newer rlkit; this rlkit "
            f"reads versions up to {FORMAT_VERSION}. Upgrade rlkit."
        )
    if version < 1:
        raise DatasetError(f"{meta_file}: format_version {version} is invalid (must be >= 1).")
    _check_metadata_checksum(meta, verify)
    info = _info_from_metadata(meta)
    num_transitions = meta.get("counts.transitions", int)
    num_episodes = meta.get("counts.episodes", int)
    meta.get("files", dict)
    if num_transitions < 1:
        raise DatasetError(
            f"{meta_file}: counts.transitions is {num_transitions}: the dataset holds no "
            f"transitions, so there is nothing to learn from. Collect at least one episode."
        )

    arrays = {}
    present = [name for name in OPTIONAL_FIELDS if name in metadata["files"]]
    for name in (*FIELDS, *present):
        expected_dtype = _expected_dtype(name, info)
        relative = meta.get(f"files.{name}.path", str)
        shape = tuple(meta.get(f"files.{name}.shape", list))
        dtype = meta.get(f"files.{name}.dtype", str)
        digest = meta.get(f"files.{name}.sha256", str)
        size = meta.get(f"files.{name}.bytes", int)
        if Path(relative).name != relative or relative in ("", ".", ".."):
            raise DatasetError(
                f"{meta_file}: files.{name}.path {relative!r} must be a plain file name inside "
                f"the dataset directory."
            )
        expected_shape = (num_transitions,) + (
            info.obs_shape if name in ("obs", "next_obs") else ()
        )
        if shape != expected_shape or dtype != expected_dtype:
            raise DatasetError(
                f"{meta_file}: files.{name} says shape {list(shape)} dtype {dtype}, but counts and "
                f"observation / action metadata imply {list(expected_shape)} {expected_dtype}. "
                f"The metadata is inconsistent: rewrite the dataset."
            )
        file = path / relative
        if not file.is_file():
            raise DatasetError(
                f"{file}: missing; the dataset is incomplete. Restore the file or rewrite the "
                f"dataset."
            )
        actual_size = file.stat().st_size
        if actual_size != size:
            raise DatasetError(
                f"{file}: {actual_size} bytes but {METADATA_FILE} records {size}: the file is "
                f"{'truncated' if actual_size < size else 'modified'}. Restore it or rewrite "
                f"the dataset."
            )
        if verify and _sha256(file) != digest:
            raise DatasetError(
                f"{file}: sha256 does not match {METADATA_FILE}: the file was modified or is "
                f"corrupt. Restore it or rewrite the dataset (verify=False skips this check)."
            )
        try:
            array = np.load(file, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (ValueError, OSError, EOFError) as error:
            raise DatasetError(
                f"{file}: not a readable .npy file, truncated or corrupt ({error}). Restore it "
                f"or rewrite the dataset."
            ) from None
        if array.shape != shape or array.dtype.name != dtype:
            raise DatasetError(
                f"{file}: holds shape {list(array.shape)} dtype {array.dtype.name}, but "
                f"{METADATA_FILE} records {list(shape)} {dtype}. Restore it or rewrite the "
                f"dataset."
            )
        arrays[name] = array

    ended = int(
        np.count_nonzero(np.asarray(arrays["terminated"]) | np.asarray(arrays["truncated"]))
    )
    if ended != num_episodes:
        raise DatasetError(
            f"{meta_file}: counts.episodes is {num_episodes} but terminated.npy / truncated.npy "
            f"end {ended} episodes. Rewrite the dataset."
        )
    for name in ("reward", "obs", "next_obs"):
        if not _all_finite(arrays[name]):
            raise DatasetError(
                f"{path / meta.get(f'files.{name}.path', str)}: holds NaN or inf values; "
                f"save_dataset refuses non-finite {name}, so the file was written by another "
                f"tool or modified. Rewrite the dataset with finite values."
            )
    action = np.asarray(arrays["action"])
    low, high = int(action.min()), int(action.max())
    if low < 0 or high >= info.num_actions:
        raise DatasetError(
            f"{path / meta.get('files.action.path', str)}: actions in [{low}, {high}], outside "
            f"[0, num_actions) = [0, {info.num_actions}) from {METADATA_FILE}. Fix "
            f"action.num_actions or rewrite the dataset."
        )
    level_seed = arrays.pop("level_seed", None)
    return Dataset(
        info=info, transitions=Transition(**arrays), num_episodes=num_episodes, path=path,
        level_seed=level_seed,
    )


class _Metadata:
    """Typed access to nested metadata keys, failing with one message that names the key."""

    def __init__(self, file: Path, data: dict):
        self.file = file
        self.data = data

    def get(self, key: str, kind: type | tuple[type, ...], *, optional: bool = False) -> Any:
        value: Any = self.data
        for part in key.split("."):
            if not isinstance(value, dict) or part not in value:
                raise DatasetError(
                    f"{self.file}: missing key {key!r}. The metadata is incomplete or from "
                    f"another tool: rewrite the dataset with rlkit.data.save_dataset."
                )
            value = value[part]
        if optional and value is None:
            return None
        kinds = kind if isinstance(kind, tuple) else (kind,)
        bad_bool = isinstance(value, bool) and bool not in kinds
        if bad_bool or not isinstance(value, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise DatasetError(
                f"{self.file}: key {key!r} should be {names}"
                f"{' or null' if optional else ''}, got {value!r}. Rewrite the dataset."
            )
        return value


def metadata_checksum(metadata: dict) -> str:
    """sha256 (hex) of `metadata` without its `metadata_sha256` key, as canonical JSON.

    Canonical: keys sorted, no whitespace, ASCII only, so the checksum depends on the content
    and not on how the file is indented. It covers everything `metadata.json` says (env id and
    parameters, schema, counts, the files' checksums), so an edited horizon is caught.
    """
    content = {key: value for key, value in metadata.items() if key != METADATA_CHECKSUM}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _check_metadata_checksum(meta: _Metadata, verify: bool) -> None:
    """Refuse an edited `metadata.json`; refuse one without a checksum unless not `verify`."""
    recorded = meta.data.get(METADATA_CHECKSUM)
    if recorded is None:
        if verify:
            raise DatasetError(
                f"{meta.file}: has no {METADATA_CHECKSUM} (written before rlkit covered the "
                f"metadata by a checksum), so an edit to it would go unnoticed. Check it, then "
                f"load it with verify=False and save it again with save_dataset to add one."
            )
        return
    try:
        actual = metadata_checksum(meta.data)
    except ValueError:  # NaN or inf in the file: Python's json reads them, canonical JSON not
        actual = None
    if actual != recorded:
        raise DatasetError(
            f"{meta.file}: does not match its {METADATA_CHECKSUM}: the metadata (env id and "
            f"parameters, schema, counts or checksums) was edited after the dataset was "
            f"written. Restore it, or rewrite the dataset."
        )


def _info_from_metadata(meta: _Metadata) -> DatasetInfo:
    shape = meta.get("observation.shape", list)
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise DatasetError(f"{meta.file}: observation.shape {shape} must be a list of ints >= 0.")
    dtype = meta.get("observation.dtype", str)
    action_dtype = meta.get("action.dtype", str)
    if action_dtype != "int32":
        raise DatasetError(f"{meta.file}: action.dtype is {action_dtype!r}, expected 'int32'.")
    try:
        return DatasetInfo(
            env_id=meta.get("env.id", str),
            env_params=meta.get("env.params", dict),
            obs_shape=tuple(shape),
            obs_dtype=dtype,
            num_actions=meta.get("action.num_actions", int),
            behaviour_policy=meta.get("behaviour.policy", str),
            behaviour_return=meta.get("behaviour.return_mean", (int, float), optional=True),
            behaviour_return_std=meta.get("behaviour.return_std", (int, float), optional=True),
            extra=meta.get("extra", dict),
        )
    except DatasetError:
        raise
    except RlkitError as error:
        raise DatasetError(
            f"{meta.file}: invalid metadata ({error}). Rewrite the dataset."
        ) from None


def _expected_dtype(name: str, info: DatasetInfo) -> str:
    return {"action": "int32", "reward": "float32", "terminated": "bool", "truncated": "bool",
            "level_seed": "int32"}.get(name, info.obs_dtype)


def first_transitions(columns: dict[str, np.ndarray], count: int) -> dict[str, np.ndarray]:
    """The first `count` rows of episode-major columns, the cut episode marked truncated.

    A dataset of exactly `count` transitions (Mediratta et al. 2024's loader with
    `capacity_type="transitions"`): when the cut falls inside an episode, its last kept row gets
    `truncated = True`, so no bootstrapped or n-step target runs past the cut into rows that are
    not there (its `next_obs` is still the true next observation, so bootstrapping from it is
    right).

    Args:
        columns: {field: [M, ...]} with at least `terminated` and `truncated` [M] bool, rows
            episode-major.
        count: rows to keep, 1 <= count <= M.

    Returns:
        {field: [count, ...]} copies of the first rows.

    Raises:
        RlkitError: `count` outside [1, M].
    """
    available = len(columns["terminated"])
    require(1 <= count <= available, "--transitions",
            f"asks for {count:,} transitions, but only {available:,} are there")
    kept = {name: np.array(values[:count]) for name, values in columns.items()}
    if not (kept["terminated"][-1] or kept["truncated"][-1]):
        kept["truncated"][-1] = True
    return kept


# --------------------------------------------------------------------------------------------
# Feeding
# --------------------------------------------------------------------------------------------


def to_device(dataset: Dataset) -> Transition:
    """The whole dataset as JAX arrays in device memory (for datasets that fit there).

    Args:
        dataset: a loaded (or memory-mapped) dataset.

    Returns:
        A `Transition` of `jax.Array`s with leaves [N, ...]; sample it inside `jit` with
        `jax.random.randint(key, (batch_size,), 0, N)` and `jax.tree.map(lambda x: x[idx], ...)`.
    """
    import jax  # the host-only paths (save, load, batch_stream) never need it
    import jax.numpy as jnp

    return jax.tree.map(jnp.asarray, dataset.transitions)


def batch_stream(
    dataset: Dataset | Transition,
    batch_size: int,
    num_batches: int,
    seed: int,
    *,
    start: int = 0,
    num_seeds: int | None = None,
    windows: tuple[Any, int] | None = None,
) -> Iterator[Transition]:
    """Endless blocks of uniformly sampled batches, read from host memory or a memmap.

    Each block holds `num_batches` batches of `batch_size` rows drawn uniformly with replacement
    (one compiled chunk's worth: scan over the leading axis), optionally for each of `num_seeds`
    seeds. Only the sampled rows are read, in sorted order, so a memory-mapped image dataset
    larger than memory streams from disk. A background thread prepares the next block while the
    caller trains on the current one. This is the offline driver's streamed feed
    (`rlkit.loops.offline`).

    Block `i` draws its rows from `numpy.random.default_rng((seed, i))`, independently of the
    blocks before it, so `start=i` resumes a stream exactly: a resumed streamed run draws exactly
    the batches an uninterrupted one would.

    Args:
        dataset: a loaded dataset (`load_dataset(path, mmap=True)` for large image datasets), or
            its `Transition` of [N, ...] numpy arrays or memmaps.
        batch_size: rows per batch (>= 1).
        num_batches: batches per block (>= 1).
        seed: seeds the row indices; the same seed yields the same blocks.
        start: the index of the first block (>= 0).
        num_seeds: None, or a leading seed axis of this size (each seed its own rows).
        windows: None for rows, or `(episode_index, K)`: each batch item is then the context
            window of K steps ending at the drawn row (`rlkit.data.sequences.gather_windows`,
            with `episode_index` its numpy `EpisodeIndex`), leaves [..., batch_size, K, ...].

    Returns:
        An iterator of numpy `Transition`s with leaves [num_batches, batch_size, ...] (with
        `num_seeds`, [num_seeds, num_batches, batch_size, ...]) and extras {} (the window
        extras with `windows`). Closing it (or dropping it) stops the background thread.

    Raises:
        RlkitError: a size below 1 (or `start` below 0), or a dataset without transitions.
    """
    for name, value, low in (("batch_size", batch_size, 1), ("num_batches", num_batches, 1),
                             ("start", start, 0)):
        require(isinstance(value, int) and value >= low, name,
                f"must be an int >= {low}, got {value!r}")
    require(num_seeds is None or (isinstance(num_seeds, int) and num_seeds >= 1), "num_seeds",
            f"must be None or an int >= 1, got {num_seeds!r}")
    transitions = dataset.transitions if isinstance(dataset, Dataset) else dataset
    arrays = {name: getattr(transitions, name) for name in FIELDS}
    size = len(arrays["action"])
    require(size >= 1, "dataset", "holds no transitions")
    shape = (num_batches, batch_size) if num_seeds is None else (num_seeds, num_batches,
                                                                 batch_size)
    return _stream(arrays, size, shape, seed, start, windows)


def _stream(arrays: dict, size: int, shape: tuple[int, ...], seed: int,
            start: int, windows: tuple[Any, int] | None = None) -> Iterator[Transition]:
    blocks: queue.Queue = queue.Queue()
    # One block is prepared while the caller holds the last one it got: two blocks in host
    # memory at most (an image block can take hundreds of MB).
    ahead = threading.Semaphore(1)
    stop = threading.Event()

    def gather(block_index: int) -> Transition:
        index = np.random.default_rng((seed, block_index)).integers(0, size, shape)
        if windows is not None:
            from rlkit.data.sequences import gather_windows  # it imports this module

            return gather_windows(Transition(**arrays), windows[0], index, windows[1])
        return Transition(**{name: read_rows(array, index) for name, array in arrays.items()})

    def produce() -> None:
        try:
            block_index = start
            while not stop.is_set():
                if ahead.acquire(timeout=0.1):
                    blocks.put(gather(block_index))
                    block_index += 1
        except BaseException as error:  # handed to the consumer, which re-raises it
            blocks.put(error)

    thread = threading.Thread(target=produce, name="rlkit-batch-stream", daemon=True)
    thread.start()
    try:
        while True:
            item = blocks.get()
            ahead.release()  # the caller trains on this block while the next is gathered
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


def read_rows(array: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """`array[rows]` for an array or memmap [N, ...] and int rows of any shape, read in sorted
    row order, so a memmap's pages are touched once each and in order."""
    flat = rows.reshape(-1)
    order = np.argsort(flat, kind="stable")
    values = np.empty((len(flat), *array.shape[1:]), array.dtype)
    values[order] = array[flat[order]]
    return values.reshape(*rows.shape, *array.shape[1:])


def first_break(obs: np.ndarray, next_obs: np.ndarray, ended: np.ndarray,
                chunk: int = 1 << 14) -> int | None:
    """The first row i that ends no episode yet has next_obs[i] != obs[i + 1], else None: where a
    dataset's episodes stop being contiguous (Minari export, context windows). Arrays or memmaps
    [N, ...], read `chunk` rows at a time; `ended` is [N] bool (terminated | truncated)."""
    for start in range(0, len(obs) - 1, chunk):
        stop = min(start + chunk, len(obs) - 1)
        differs = (next_obs[start:stop] != obs[start + 1 : stop + 1]).reshape(stop - start, -1)
        broken = np.flatnonzero(differs.any(axis=1) & ~ended[start:stop])
        if len(broken):
            return start + int(broken[0])
    return None


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _all_finite(array: np.ndarray) -> bool:
    """Whether a numeric array (or memmap) holds no NaN or inf, read in bounded chunks."""
    if array.dtype.kind != "f":
        return True
    row_bytes = max(1, array[:1].nbytes)
    step = max(1, _FINITE_CHUNK_BYTES // row_bytes)
    return all(bool(np.isfinite(array[start : start + step]).all())
               for start in range(0, len(array), step))


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} {value!r} is not JSON-able")


def _dumps(value: Any, **kwargs) -> str:
    return json.dumps(value, default=_json_default, allow_nan=False, **kwargs)


def _rlkit_version() -> str:
    try:
        return importlib.metadata.version("rlkit")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
