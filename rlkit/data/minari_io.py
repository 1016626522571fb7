"""Import from and export to Minari, the offline-RL ecosystem's dataset standard.

Minari stores episodes: observations [T + 1, ...], actions / rewards / terminations /
truncations [T]. rlkit stores transitions (`rlkit.data.dataset`). The conversion is:

* `from_minari`: each episode of T steps becomes T rows with obs = observations[:-1] and
  next_obs = observations[1:]. Only the episode's last row carries flags: minari's terminated /
  truncated at its last step; an episode whose last step has neither (collection stopped
  mid-episode) is marked truncated, so that episode boundaries survive.
* `to_minari`: the rows are split into episodes after every terminated | truncated row, which
  needs each episode's rows to be contiguous (next_obs[i] == obs[i + 1] inside an episode; a
  dataset with several environments' steps interleaved is refused). A trailing partial episode
  (rows after the last ended one) is exported with truncated=True on its last step: nothing is
  dropped, and truncation is the right reading of "the data stops here".

Only Box observation spaces and Discrete action spaces are supported, as in every rlkit dataset.
rlkit stores actions 0-based; a `Discrete(n, start)` space's actions are `start, ..., start + n -
1`. `from_minari` subtracts the start (and records it as `extra["minari"]["action_start"]`);
`to_minari` adds it back and exports `Discrete(n, start)`, taking the start from the gymnasium env
where it can build it, else from that record, else 0, so export is the inverse of import.
`to_minari` also stores the `DatasetInfo` under the key "rlkit" of the Minari metadata, and
`from_minari` restores it from there, so rlkit -> Minari -> rlkit keeps env params, behaviour
policy and extras. Datasets are found the way `minari.load_dataset` finds them: by id under
`MINARI_DATASETS_PATH` (default ~/.minari/datasets), or by path. `minari` is imported only when
these functions run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import os
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from rlkit.data.dataset import (
    FORMAT_NAME,
    FORMAT_VERSION,
    Dataset,
    DatasetError,
    DatasetInfo,
    _validated_arrays,
    first_break,
)
from rlkit.errors import RlkitError
from rlkit.types import Transition


def from_minari(dataset_id_or_path: str | Path, *, env_id: str | None = None) -> Dataset:
    """Load a Minari dataset into memory as an rlkit `Dataset`.

    Args:
        dataset_id_or_path: a Minari dataset id under the local Minari root
            (`MINARI_DATASETS_PATH`, default ~/.minari/datasets), e.g. "cartpole/random-v0", or
            the path of a Minari dataset directory (the one holding `data/`, or `data/` itself).
        env_id: the rlkit registry name of the environment. Defaults to the one stored by
            `to_minari`, else "gym:" + the id of the dataset's gymnasium env spec.

    Returns:
        A `Dataset` with `path=None` whose transitions are numpy arrays with a leading [N] axis
        (N = total steps): obs / next_obs [N, *obs_shape] in the observation space's dtype,
        action [N] int32, reward [N] float32, terminated / truncated [N] bool. Without stored
        rlkit info, `behaviour_return` is the mean episode return in the data and `extra["minari"]`
        records the dataset id, Minari version, algorithm name and reference scores.

    Raises:
        DatasetError: the dataset is not found or unreadable, its spaces are not Box
            observations / Discrete actions, or no env id can be determined.
    """
    minari = _import_minari()
    import gymnasium as gym

    source, data = _open(minari, dataset_id_or_path)
    obs_space, action_space = data.observation_space, data.action_space
    if not isinstance(obs_space, gym.spaces.Box):
        raise DatasetError(
            f"{source}: observation space {obs_space} is not supported; rlkit datasets need a Box "
            f"observation space (flatten Dict / Tuple observations first)."
        )
    if not isinstance(action_space, gym.spaces.Discrete):
        raise DatasetError(
            f"{source}: action space {action_space} is not supported; rlkit datasets need a "
            f"Discrete action space."
        )
    obs_dtype = np.dtype(obs_space.dtype)
    action_start = int(action_space.start)

    columns: dict[str, list[np.ndarray]] = {
        name: [] for name in ("obs", "action", "reward", "terminated", "truncated", "next_obs")
    }
    returns = []
    for episode in data.iterate_episodes():
        steps = len(episode.rewards)
        if steps == 0:
            continue
        observations = np.asarray(episode.observations)
        if observations.shape[0] != steps + 1:
            raise DatasetError(
                f"{source}: episode {episode.id} has {observations.shape[0]} observations for "
                f"{steps} steps (expected steps + 1); the dataset is malformed."
            )
        terminated = np.zeros(steps, bool)
        truncated = np.zeros(steps, bool)
        terminated[-1] = bool(episode.terminations[-1])
        truncated[-1] = bool(episode.truncations[-1]) or not terminated[-1]
        rewards = np.asarray(episode.rewards, np.float64)
        columns["obs"].append(observations[:-1].astype(obs_dtype, copy=False))
        columns["next_obs"].append(observations[1:].astype(obs_dtype, copy=False))
        columns["action"].append(np.asarray(episode.actions).reshape(steps) - action_start)
        columns["reward"].append(rewards)
        columns["terminated"].append(terminated)
        columns["truncated"].append(truncated)
        returns.append(rewards.sum())
    if not returns:
        raise DatasetError(f"{source}: holds no steps; nothing to load.")

    metadata = data.storage.metadata
    info = _info(source, metadata, data, obs_space, action_space, returns, env_id)
    transitions = Transition(**{name: np.concatenate(parts) for name, parts in columns.items()})
    arrays = _validated_arrays(transitions, info)
    transitions = Transition(**arrays)
    return Dataset(info=info, transitions=transitions, num_episodes=len(returns), path=None)


def to_minari(dataset: Dataset, dataset_id: str, *, data_path: str | Path | None = None) -> str:
    """Export an rlkit dataset as a Minari dataset (hdf5, images stored losslessly).

    Args:
        dataset: the dataset to export; each episode's rows must be contiguous.
        dataset_id: the Minari id, `(namespace/)name-v(version)`, e.g. "rlkit/chain-random-v0".
        data_path: the Minari root to write under; defaults to `MINARI_DATASETS_PATH` (or
            ~/.minari/datasets). Setting it changes `MINARI_DATASETS_PATH` while the export runs
            (not thread-safe).

    Returns:
        The absolute path of the new Minari dataset directory, as a string. Both
        `minari.load_dataset(path)` and `from_minari(path)` accept it; with the default root,
        `minari.load_dataset(dataset_id)` works too.

    Raises:
        DatasetError: the id is malformed or taken, or the rows are not stored episode by
            episode. A failed export removes what it wrote.
    """
    minari = _import_minari()
    import gymnasium as gym
    from minari.dataset.minari_dataset import parse_dataset_id
    from minari.storage.datasets_root_dir import get_dataset_path

    info = dataset.info
    arrays = _validated_arrays(dataset.transitions, info)
    try:
        parse_dataset_id(dataset_id)
    except ValueError:
        raise DatasetError(
            f"minari dataset id {dataset_id!r}: malformed; use (namespace/)name-v(version), e.g. "
            f"'rlkit/chain-random-v0'."
        ) from None
    env_spec, env_action_start = _gym_spec(info.env_id)
    action_start = _action_start(info, env_action_start)
    buffers = list(_episode_buffers(arrays, dataset, action_start))
    obs_space = gym.spaces.Box(
        *_bounds(np.dtype(info.obs_dtype)), shape=info.obs_shape, dtype=np.dtype(info.obs_dtype)
    )
    action_space = gym.spaces.Discrete(info.num_actions, start=action_start)
    options: dict[str, Any] = {}
    if "jpeg_encoding" in inspect.signature(minari.create_dataset_from_buffers).parameters:
        options["jpeg_encoding"] = False  # JPEG is lossy: exports must read back identical

    with _minari_root(data_path):
        target = Path(get_dataset_path(dataset_id)).absolute()
        if target.exists():
            raise DatasetError(
                f"{target}: a Minari dataset with id {dataset_id!r} already exists. Choose "
                f"another id (bump its -v version) or delete it with minari.delete_dataset."
            )
        try:
            with warnings.catch_warnings():
                # Minari nags about unset author / email / permalink; rlkit has none to give.
                warnings.simplefilter("ignore", UserWarning)
                exported = minari.create_dataset_from_buffers(
                    dataset_id,
                    buffers,
                    env=env_spec,
                    observation_space=obs_space,
                    action_space=action_space,
                    algorithm_name=info.behaviour_policy,
                    description=(
                        f"Exported from the rlkit dataset "
                        f"{dataset.path or '(in memory)'}: env {info.env_id}, "
                        f"behaviour policy {info.behaviour_policy}."
                    ),
                    **options,
                )
            info_dict = dataclasses.asdict(info)
            info_dict["obs_shape"] = list(info.obs_shape)
            exported.storage.update_metadata(
                {
                    "rlkit": {
                        "format": FORMAT_NAME,
                        "format_version": FORMAT_VERSION,
                        "info": info_dict,
                    }
                }
            )
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise
    return str(target)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _import_minari():
    try:
        import minari
    except ImportError as error:
        raise RlkitError(
            f"Minari interchange needs the minari package ({error}). Install it with: "
            f"pip install 'minari[hdf5]'"
        ) from None
    return minari


def _open(minari, dataset_id_or_path: str | Path):
    """(a name for messages, the `MinariDataset`) for an id or a path."""
    candidate = Path(dataset_id_or_path).expanduser()
    if candidate.is_dir():
        for data_dir in (candidate / "data", candidate):
            if (data_dir / "metadata.json").is_file():
                try:
                    return data_dir, minari.MinariDataset(str(data_dir))
                except Exception as error:
                    raise DatasetError(
                        f"{data_dir}: not a readable Minari dataset ({error})."
                    ) from None
        raise DatasetError(
            f"{candidate}: not a Minari dataset (no data/metadata.json). Pass a Minari dataset "
            f"directory or id; for rlkit datasets use rlkit.data.load_dataset."
        )
    dataset_id = str(dataset_id_or_path)
    try:
        return f"minari dataset {dataset_id!r}", minari.load_dataset(dataset_id)
    except FileNotFoundError:
        from minari.storage.datasets_root_dir import get_dataset_path

        raise DatasetError(
            f"minari dataset {dataset_id!r}: not found at {get_dataset_path(dataset_id)} (the "
            f"Minari root is MINARI_DATASETS_PATH, default ~/.minari/datasets). Download it "
            f"with `minari download {dataset_id}` or pass the dataset's path."
        ) from None
    except Exception as error:
        raise DatasetError(f"minari dataset {dataset_id!r}: cannot be read ({error}).") from None


def _info(
    source, metadata: dict, data, obs_space, action_space, returns: list[float], env_id: str | None
) -> DatasetInfo:
    """The rlkit `DatasetInfo` of a Minari dataset: stored by `to_minari`, else rebuilt."""
    stored = metadata.get("rlkit")
    if isinstance(stored, dict) and isinstance(stored.get("info"), dict):
        fields = dict(stored["info"])
        fields["obs_shape"] = tuple(fields["obs_shape"])
        if env_id is not None and env_id != fields["env_id"]:
            fields.update(env_id=env_id, env_params={})
        try:
            return DatasetInfo(**fields)
        except (TypeError, RlkitError) as error:
            raise DatasetError(f"{source}: the stored rlkit info is invalid ({error}).") from None
    if env_id is None:
        if data.env_spec is None:
            raise DatasetError(
                f"{source}: has no environment spec, so its env id is unknown. Pass "
                f"env_id='<rlkit env name>' to from_minari."
            )
        env_id = f"gym:{data.env_spec.id}"
    details = {
        "dataset_id": metadata.get("dataset_id"),
        "minari_version": metadata.get("minari_version"),
        "algorithm_name": metadata.get("algorithm_name"),
        "ref_min_score": metadata.get("ref_min_score"),
        "ref_max_score": metadata.get("ref_max_score"),
        "action_start": int(action_space.start) or None,
    }
    return DatasetInfo(
        env_id=env_id,
        env_params={},
        obs_shape=tuple(obs_space.shape),
        obs_dtype=np.dtype(obs_space.dtype).name,
        num_actions=int(action_space.n),
        behaviour_policy=(
            f"{metadata.get('algorithm_name') or 'unknown'} "
            f"(minari dataset {metadata.get('dataset_id')})"
        ),
        behaviour_return=float(np.mean(returns)),
        behaviour_return_std=float(np.std(returns)),
        extra={"minari": {key: value for key, value in details.items() if value is not None}},
    )


def _action_start(info: DatasetInfo, env_action_start: int | None) -> int:
    """The `start` of the exported `Discrete` action space: the env's own where gymnasium can
    build it, else the one recorded when the data came from Minari, else 0."""
    if env_action_start is not None:
        return env_action_start
    recorded = info.extra.get("minari", {})
    start = recorded.get("action_start") if isinstance(recorded, dict) else None
    return int(start) if isinstance(start, int) and not isinstance(start, bool) else 0


def _episode_buffers(arrays: dict[str, np.ndarray], dataset: Dataset,
                     action_start: int) -> Iterator[Any]:
    """Minari `EpisodeBuffer`s of the contiguous episodes in `arrays` (leaves [N, ...]), with
    the env's actions: rlkit's 0-based action plus `action_start`."""
    from minari.data_collector import EpisodeBuffer

    ended = arrays["terminated"] | arrays["truncated"]
    stops = list(np.flatnonzero(ended) + 1)
    size = len(ended)
    if not stops or stops[-1] != size:
        stops.append(size)  # the trailing partial episode, exported as truncated
    broken = first_break(arrays["obs"], arrays["next_obs"], ended)
    if broken is not None:
        raise DatasetError(
            f"{dataset.path or 'dataset'}: next_obs of row {broken} differs from obs of row "
            f"{broken + 1} although no episode ends there; Minari needs each episode's rows "
            f"contiguous. Store the steps episode by episode (one environment after another) "
            f"before exporting."
        )
    start = 0
    for episode_id, stop in enumerate(stops):
        obs, next_obs = arrays["obs"][start:stop], arrays["next_obs"][start:stop]
        truncated = arrays["truncated"][start:stop].copy()
        truncated[-1] |= not arrays["terminated"][stop - 1]
        yield EpisodeBuffer(
            id=episode_id,
            observations=np.concatenate([obs, next_obs[-1:]]),
            actions=arrays["action"][start:stop].astype(np.int64) + action_start,
            rewards=arrays["reward"][start:stop],
            terminations=arrays["terminated"][start:stop],
            truncations=truncated,
        )
        start = stop


def _bounds(dtype: np.dtype) -> tuple[Any, Any]:
    """The widest Box bounds for `dtype` (the data's true range is not part of the schema)."""
    if dtype.kind in "iu":
        return np.iinfo(dtype).min, np.iinfo(dtype).max
    if dtype.kind == "b":
        return 0, 1
    return -np.inf, np.inf


def _gym_spec(env_id: str) -> tuple[Any, int | None]:
    """(EnvSpec, the start of its Discrete action space) of a "gym:ID" env that gymnasium can
    build, else (None, None)."""
    family, _, ident = env_id.partition(":")
    if family != "gym" or not ident:
        return None, None
    import gymnasium as gym

    try:
        spec = gym.spec(ident)
        env = gym.make(spec)  # minari builds it too; it must not fail halfway through a write
        try:
            space = env.action_space
            start = int(space.start) if isinstance(space, gym.spaces.Discrete) else None
        finally:
            env.close()
    except Exception:
        return None, None
    return spec, start


@contextlib.contextmanager
def _minari_root(data_path: str | Path | None) -> Iterator[None]:
    """Point Minari at `data_path` (via MINARI_DATASETS_PATH) for the duration of the block."""
    if data_path is None:
        yield
        return
    previous = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(Path(data_path).expanduser().absolute())
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = previous
