"""The on-disk offline dataset format (rlkit.data.dataset) and preference JSONL (preferences).

Each corruption test damages one thing a real disk, a killed writer or a careless edit damages,
and asserts that loading fails with one `DatasetError` that names the damaged file.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from rlkit.data import (
    FORMAT_NAME,
    FORMAT_VERSION,
    DatasetError,
    DatasetInfo,
    PreferenceRecord,
    batch_stream,
    load_dataset,
    load_preferences,
    save_dataset,
    save_preferences,
    to_device,
)
from rlkit.data import dataset as dataset_module
from rlkit.errors import RlkitError
from rlkit.types import Transition

ROOT = Path(__file__).resolve().parents[1]
NUM_ACTIONS = 3


def _info(obs_shape=(4, 4, 3), obs_dtype="uint8", **overrides) -> DatasetInfo:
    fields = dict(
        env_id="chain",
        env_params={"length": 5, "pair": (1, 2)},
        obs_shape=obs_shape,
        obs_dtype=obs_dtype,
        num_actions=NUM_ACTIONS,
        behaviour_policy="mixture(epsilon=0.3) of runs/ppo-chain",
        behaviour_return=1.5,
        behaviour_return_std=0.25,
        extra={"seed": np.int64(7), "normalised_score": 0.5},
    )
    fields.update(overrides)
    return DatasetInfo(**fields)


def _transitions(n: int = 50, obs_shape=(4, 4, 3), obs_dtype=np.uint8) -> Transition:
    """Rows whose every field encodes the row id, so a sampled row can be checked whole."""
    ids = np.arange(n)
    obs = np.broadcast_to((ids % 200).reshape(n, *[1] * len(obs_shape)), (n, *obs_shape))
    return Transition(
        obs=obs.astype(obs_dtype),
        action=(ids % NUM_ACTIONS).astype(np.int64),  # cast to int32 on save
        reward=ids.astype(np.float64),  # cast to float32 on save
        terminated=ids % 10 == 9,
        truncated=(ids % 7 == 6).astype(np.int8),  # 0 / 1 ints: cast to bool on save
        next_obs=(obs + 1).astype(obs_dtype),
    )


@pytest.fixture
def saved(tmp_path) -> Path:
    return save_dataset(tmp_path / "ds", _transitions(), _info())


def _edit_metadata(path: Path, edit, *, reseal: bool = True) -> None:
    """Apply `edit` to metadata.json; with `reseal`, update its checksum too (as a buggy or
    foreign writer would), so that the checks behind the checksum are what fails."""
    file = path / "metadata.json"
    metadata = json.loads(file.read_text())
    edit(metadata)
    if reseal:
        metadata["metadata_sha256"] = dataset_module.metadata_checksum(metadata)
    file.write_text(json.dumps(metadata))


def _replace_npy(path: Path, name: str, array: np.ndarray) -> None:
    """Overwrite `name`.npy with `array` and reseal its size, sha256 and the metadata."""
    np.save(path / f"{name}.npy", array)
    digest = dataset_module._sha256(path / f"{name}.npy")
    size = (path / f"{name}.npy").stat().st_size
    _edit_metadata(path, lambda m: m["files"][name].update(sha256=digest, bytes=size))


def _load_error(path: Path, **kwargs) -> str:
    with pytest.raises(DatasetError) as error:
        load_dataset(path, **kwargs)
    return str(error.value)


# --------------------------------------------------------------------------------------------
# Round trip
# --------------------------------------------------------------------------------------------


def test_round_trip_keeps_arrays_info_and_dtypes(saved):
    original = _transitions()
    dataset = load_dataset(saved)
    assert dataset.info == _info()
    assert dataset.info.obs_shape == (4, 4, 3) and isinstance(dataset.info.obs_shape, tuple)
    assert dataset.info.env_params == {"length": 5, "pair": [1, 2]}
    assert dataset.info.extra == {"seed": 7, "normalised_score": 0.5}
    assert dataset.path == saved
    got = dataset.transitions
    assert got.obs.dtype == np.uint8 and got.next_obs.dtype == np.uint8
    assert got.action.dtype == np.int32 and got.reward.dtype == np.float32
    assert got.terminated.dtype == bool and got.truncated.dtype == bool
    for name in ("obs", "action", "reward", "terminated", "truncated", "next_obs"):
        np.testing.assert_array_equal(getattr(got, name), getattr(original, name))
    # Terminated and truncated stay apart (rows 6, 13, ... are truncated only; 9, 19 terminated).
    assert got.truncated[6] and not got.terminated[6]
    assert got.terminated[9] and not got.truncated[9]
    assert dataset.num_episodes == int(np.sum(got.terminated | got.truncated))
    assert got.extras == {}


def test_metadata_layout(saved):
    metadata = json.loads((saved / "metadata.json").read_text())
    assert metadata["format"] == FORMAT_NAME and metadata["format_version"] == FORMAT_VERSION
    assert metadata["env"] == {"id": "chain", "params": {"length": 5, "pair": [1, 2]}}
    assert metadata["observation"] == {"shape": [4, 4, 3], "dtype": "uint8"}
    assert metadata["action"] == {"num_actions": 3, "dtype": "int32"}
    assert metadata["behaviour"]["return_mean"] == 1.5
    assert metadata["counts"]["transitions"] == 50
    assert metadata["files"]["obs"]["shape"] == [50, 4, 4, 3]
    assert metadata["files"]["obs"]["bytes"] == (saved / "obs.npy").stat().st_size
    assert len(metadata["files"]["reward"]["sha256"]) == 64
    assert metadata["created"].endswith("+00:00") and "rlkit_version" in metadata
    # The checksum covers the rest of the file as canonical JSON, computed here by hand.
    import hashlib

    rest = {key: value for key, value in metadata.items() if key != "metadata_sha256"}
    canonical = json.dumps(rest, sort_keys=True, separators=(",", ":"))
    assert metadata["metadata_sha256"] == hashlib.sha256(canonical.encode()).hexdigest()
    assert sorted(p.name for p in saved.iterdir()) == sorted(
        [
            "metadata.json",
            "obs.npy",
            "action.npy",
            "reward.npy",
            "terminated.npy",
            "truncated.npy",
            "next_obs.npy",
        ]
    )


def test_mmap_load_gives_read_only_memmaps(saved):
    dataset = load_dataset(saved, mmap=True)
    assert isinstance(dataset.transitions.obs, np.memmap)
    assert isinstance(dataset.transitions.reward, np.memmap)
    with pytest.raises(ValueError):
        dataset.transitions.obs[0] = 0
    np.testing.assert_array_equal(dataset.transitions.next_obs, _transitions().next_obs)


def test_to_device_gives_jax_arrays(saved):
    batch = to_device(load_dataset(saved, mmap=True))
    assert isinstance(batch.obs, jax.Array) and batch.obs.dtype == np.uint8
    np.testing.assert_array_equal(np.asarray(batch.reward), _transitions().reward)


def test_overwrite_needs_the_flag_and_replaces(saved):
    with pytest.raises(DatasetError, match="overwrite=True"):
        save_dataset(saved, _transitions(20), _info())
    save_dataset(saved, _transitions(20), _info(), overwrite=True)
    assert load_dataset(saved).transitions.reward.shape == (20,)
    assert [p.name for p in saved.parent.iterdir()] == ["ds"]  # nothing left aside


def test_overwrite_refuses_to_delete_a_non_dataset(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("precious")
    with pytest.raises(DatasetError, match="not an rlkit dataset"):
        save_dataset(tmp_path / "notes", _transitions(), _info(), overwrite=True)
    assert (tmp_path / "notes" / "keep.txt").read_text() == "precious"


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (dict(obs=np.zeros((50, 4, 4, 3), np.float32)), "transitions.obs: .* float32"),
        (dict(next_obs=np.zeros((50, 4, 4), np.uint8)), "transitions.next_obs"),
        (dict(reward=np.zeros(49)), "same leading"),
        (dict(action=np.full(50, NUM_ACTIONS)), r"\[0, num_actions\)"),
        (dict(action=np.full(50, -1)), r"\[0, num_actions\)"),
        (dict(action=np.zeros(50, np.float32)), "expected integers"),
        (dict(reward=np.full(50, np.nan)), "finite"),
        (dict(terminated=np.full(50, 2)), "bool"),
        (dict(truncated=np.zeros((50, 2), bool)), r"transitions.truncated: shape"),
    ],
)
def test_save_validates(tmp_path, change, match):
    transitions = _transitions().replace(**change)
    with pytest.raises(DatasetError, match=match):
        save_dataset(tmp_path / "ds", transitions, _info())
    assert list(tmp_path.iterdir()) == []  # validation happens before anything is written


def test_save_rejects_empty_and_info_validates(tmp_path):
    empty = jax.tree.map(lambda x: x[:0], _transitions())
    with pytest.raises(DatasetError, match="N >= 1"):
        save_dataset(tmp_path / "ds", empty, _info())
    with pytest.raises(RlkitError, match="num_actions"):
        _info(num_actions=0)
    with pytest.raises(RlkitError, match="obs_dtype"):
        _info(obs_dtype="object")
    with pytest.raises(RlkitError, match="extra: must be JSON-able"):
        _info(extra={"bad": object()})
    with pytest.raises(RlkitError, match="extra: must be JSON-able"):
        _info(extra={"nan": float("nan")})


def test_a_failed_write_leaves_nothing(tmp_path, monkeypatch):
    real_save = np.save
    calls = []

    def failing_save(handle, array, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        real_save(handle, array, **kwargs)

    monkeypatch.setattr(dataset_module.np, "save", failing_save)
    with pytest.raises(RlkitError, match=r"ds: cannot write it \(disk full\)"):
        save_dataset(tmp_path / "ds", _transitions(), _info())
    assert list(tmp_path.iterdir()) == []


def test_a_failed_swap_puts_the_old_dataset_back(saved, monkeypatch):
    real_rename = os.rename

    def rename(src, dst):
        if ".partial-" in str(src):
            raise OSError("rename failed")
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(RlkitError, match="rename failed"):
        save_dataset(saved, _transitions(20), _info(), overwrite=True)
    assert load_dataset(saved).transitions.reward.shape == (50,)
    assert [p.name for p in saved.parent.iterdir()] == ["ds"]


# --------------------------------------------------------------------------------------------
# batch_stream
# --------------------------------------------------------------------------------------------


def _first_blocks(dataset, seed, count=3, batch_size=8, num_batches=4):
    stream = batch_stream(dataset, batch_size, num_batches, seed)
    blocks = [next(stream) for _ in range(count)]
    stream.close()
    return blocks


def test_batch_stream_shapes_determinism_and_valid_rows(saved):
    dataset = load_dataset(saved, mmap=True)
    blocks = _first_blocks(dataset, seed=3)
    again = _first_blocks(load_dataset(saved), seed=3)
    other = _first_blocks(dataset, seed=4)
    for block, same in zip(blocks, again, strict=True):
        assert block.obs.shape == (4, 8, 4, 4, 3) and block.obs.dtype == np.uint8
        assert block.action.shape == (4, 8) and block.action.dtype == np.int32
        assert block.terminated.dtype == bool and block.extras == {}
        assert isinstance(block.obs, np.ndarray) and not isinstance(block.obs, np.memmap)
        jax.tree.map(np.testing.assert_array_equal, block, same)
        # Every field of a sampled row comes from the same stored row (the row id is the reward).
        ids = block.reward.astype(int)
        assert ((ids >= 0) & (ids < 50)).all()
        np.testing.assert_array_equal(block.action, ids % NUM_ACTIONS)
        np.testing.assert_array_equal(block.obs[..., 0, 0, 0], ids % 200)
        np.testing.assert_array_equal(block.next_obs[..., 0, 0, 0], ids % 200 + 1)
        np.testing.assert_array_equal(block.terminated, ids % 10 == 9)
        np.testing.assert_array_equal(block.truncated, ids % 7 == 6)
    assert not np.array_equal(blocks[0].reward, other[0].reward)
    assert not np.array_equal(blocks[0].reward, blocks[1].reward)  # blocks differ


def test_batch_stream_resumes_at_any_block_with_a_seed_axis(saved):
    # The offline driver's resume-exact property: block i depends on (seed, i) only.
    dataset = load_dataset(saved, mmap=True)
    stream = batch_stream(dataset, 8, 4, seed=3, num_seeds=2)
    blocks = [next(stream) for _ in range(4)]
    stream.close()
    resumed = batch_stream(dataset.transitions, 8, 4, seed=3, start=2, num_seeds=2)
    for block in blocks[2:]:
        jax.tree.map(np.testing.assert_array_equal, next(resumed), block)
    resumed.close()
    for index, block in enumerate(blocks):
        assert block.obs.shape == (2, 4, 8, 4, 4, 3)
        rows = np.random.default_rng((3, index)).integers(0, 50, (2, 4, 8))
        np.testing.assert_array_equal(block.reward, rows)  # the reward is the row id
    assert not np.array_equal(blocks[0].reward[0], blocks[0].reward[1])  # seeds differ


def test_batch_stream_prepares_one_block_ahead_only(saved, monkeypatch):
    # Image blocks are large: the block in use plus the next one, never more.
    real_rng, gathered = np.random.default_rng, []

    def counting_rng(seed):
        gathered.append(seed)
        return real_rng(seed)

    monkeypatch.setattr(dataset_module.np.random, "default_rng", counting_rng)
    stream = batch_stream(load_dataset(saved, mmap=True), 8, 4, seed=3)
    next(stream)
    time.sleep(0.5)
    assert gathered == [(3, 0), (3, 1)]
    next(stream)
    time.sleep(0.5)
    assert gathered == [(3, 0), (3, 1), (3, 2)]
    stream.close()


def test_batch_stream_is_uniform_and_stops_its_thread(saved):
    dataset = load_dataset(saved, mmap=True)
    stream = batch_stream(dataset, 250, 20, seed=0)
    ids = next(stream).reward.astype(int).ravel()
    counts = np.bincount(ids, minlength=50)
    assert counts.min() > 50 and counts.max() < 150  # 5000 draws, expected 100 per row
    stream.close()
    time.sleep(0.3)
    assert not any(t.name == "rlkit-batch-stream" for t in threading.enumerate())


def test_batch_stream_validates_sizes(saved):
    dataset = load_dataset(saved)
    with pytest.raises(RlkitError, match="batch_size"):
        batch_stream(dataset, 0, 4, seed=0)
    with pytest.raises(RlkitError, match="num_batches"):
        batch_stream(dataset, 4, 0, seed=0)
    with pytest.raises(RlkitError, match="start: must be an int >= 0"):
        batch_stream(dataset, 4, 4, seed=0, start=-1)
    with pytest.raises(RlkitError, match="num_seeds"):
        batch_stream(dataset, 4, 4, seed=0, num_seeds=0)


# --------------------------------------------------------------------------------------------
# Corruption: one clear DatasetError naming the file
# --------------------------------------------------------------------------------------------


def test_missing_path_and_not_a_directory(tmp_path):
    assert "no such dataset" in _load_error(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    message = _load_error(tmp_path / "file")
    assert "file" in message and "not a directory" in message


def test_missing_metadata(saved):
    (saved / "metadata.json").unlink()
    message = _load_error(saved)
    assert "metadata.json" in message and "incomplete or not an rlkit dataset" in message


def test_bad_json_metadata(saved):
    (saved / "metadata.json").write_text('{"format": "rlkit-dataset", ')
    message = _load_error(saved)
    assert str(saved / "metadata.json") in message and "not valid JSON" in message


def test_wrong_format_name(saved):
    _edit_metadata(saved, lambda m: m.update(format="something-else"))
    assert "not an rlkit dataset" in _load_error(saved)


def test_newer_format_version(saved):
    _edit_metadata(saved, lambda m: m.update(format_version=FORMAT_VERSION + 1))
    message = _load_error(saved)
    assert "metadata.json" in message and "newer rlkit" in message and "Upgrade" in message


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda m: m.pop("counts"), "missing key 'counts.transitions'"),
        (lambda m: m["files"].pop("reward"), "missing key 'files.reward.path'"),
        (lambda m: m["counts"].update(transitions="50"), "'counts.transitions' should be int"),
        (lambda m: m["files"]["obs"].update(shape=[50, 4, 4, 4]), "files.obs says shape"),
        (lambda m: m["files"]["obs"].update(dtype="float32"), "files.obs says .* float32"),
        (lambda m: m["observation"].update(dtype="float32"), "files.obs says"),
        (lambda m: m["counts"].update(episodes=1), "counts.episodes is 1"),
    ],
)
def test_inconsistent_metadata(saved, edit, match):
    _edit_metadata(saved, edit)
    message = _load_error(saved)
    assert str(saved / "metadata.json") in message
    assert re.search(match, message), message


def test_metadata_consistent_but_file_disagrees(saved):
    # Metadata claims float32 observations throughout; obs.npy holds uint8 (size check off).
    def edit(m):
        m["observation"]["dtype"] = "float32"
        for name in ("obs", "next_obs"):
            m["files"][name]["dtype"] = "float32"

    _edit_metadata(saved, edit)
    message = _load_error(saved, verify=False)
    assert "obs.npy" in message and "holds shape" in message and "uint8" in message


def test_actions_out_of_range(saved):
    _edit_metadata(saved, lambda m: m["action"].update(num_actions=2))
    message = _load_error(saved)
    assert "action.npy" in message and "outside [0, num_actions)" in message


def test_missing_npy(saved):
    (saved / "next_obs.npy").unlink()
    message = _load_error(saved)
    assert str(saved / "next_obs.npy") in message and "missing" in message


def test_truncated_npy(saved):
    file = saved / "obs.npy"
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])
    message = _load_error(saved)
    assert str(file) in message and "truncated" in message
    # With the recorded size edited to match too, np.load's own failure is still one clear error.
    _edit_metadata(saved, lambda m: m["files"]["obs"].update(bytes=len(data) // 2))
    message = _load_error(saved, verify=False)
    assert str(file) in message and "truncated or corrupt" in message


def test_flipped_byte_fails_the_checksum(saved):
    file = saved / "reward.npy"
    data = bytearray(file.read_bytes())
    data[-1] ^= 0xFF
    file.write_bytes(bytes(data))
    message = _load_error(saved)
    assert str(file) in message and "sha256" in message
    load_dataset(saved, verify=False)  # documented: verify=False skips the hash


def test_an_edited_horizon_in_the_metadata_is_refused(saved):
    # Issue 11 item 9: env parameters were covered by no checksum.
    _edit_metadata(saved, lambda m: m["env"]["params"].update(length=9), reseal=False)
    for verify in (True, False):  # the metadata checksum is cheap: always checked
        message = _load_error(saved, verify=verify)
        assert message.startswith(f"{saved / 'metadata.json'}: does not match its "
                                  "metadata_sha256"), message
        assert "\n" not in message
    # Re-indenting without editing changes nothing: the checksum is over canonical JSON.
    _edit_metadata(saved, lambda m: m["env"]["params"].update(length=5), reseal=False)
    assert load_dataset(saved).info.env_params == {"length": 5, "pair": [1, 2]}


def test_a_dataset_without_a_metadata_checksum_loads_only_unverified(saved):
    _edit_metadata(saved, lambda m: m.pop("metadata_sha256"), reseal=False)
    message = _load_error(saved)
    assert "has no metadata_sha256" in message and "verify=False" in message
    dataset = load_dataset(saved, verify=False)
    assert dataset.transitions.reward.shape == (50,)
    # The documented fix: saving again adds the checksum.
    resaved = save_dataset(saved.parent / "resaved", dataset.transitions, dataset.info)
    assert load_dataset(resaved).info == dataset.info


@pytest.mark.parametrize("name", ["reward", "obs", "next_obs"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_load_refuses_non_finite_rewards_and_observations(tmp_path, name, value):
    # Issue 11 item 7: save refused them, load did not.
    path = save_dataset(tmp_path / "ds", _transitions(obs_dtype=np.float32),
                        _info(obs_dtype="float32"))
    array = np.load(path / f"{name}.npy")
    array.reshape(-1)[7] = value
    _replace_npy(path, name, array)
    for mmap in (False, True):
        message = _load_error(path, mmap=mmap)
        assert message.startswith(f"{path / (name + '.npy')}: holds NaN or inf values"), message
    with pytest.raises(DatasetError, match=f"transitions.{name}: .*NaN"):
        save_dataset(tmp_path / "again", _with(_transitions(obs_dtype=np.float32), name, value),
                     _info(obs_dtype="float32"))


def _with(transitions: Transition, name: str, value: float) -> Transition:
    array = np.array(getattr(transitions, name), dtype=np.float32)
    array.reshape(-1)[7] = value
    return transitions.replace(**{name: array})


def test_an_empty_dataset_gives_one_line(saved):
    # Issue 11 item 8: 0 transitions crashed in action.min() with a traceback.
    def empty(metadata):
        metadata["counts"].update(transitions=0, episodes=0)
        for entry in metadata["files"].values():
            entry["shape"][0] = 0

    _edit_metadata(saved, empty)
    message = _load_error(saved)
    assert message == (f"{saved / 'metadata.json'}: counts.transitions is 0: the dataset holds "
                       "no transitions, so there is nothing to learn from. Collect at least one "
                       "episode.")


def test_saving_removes_partial_directories_of_dead_writers_only(tmp_path):
    # Issue 11 item 10: leftovers of killed writers piled up. The name records pid and host.
    from rlkit import io

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # its pid is now free: a writer that is gone
    dead = tmp_path / f".ds.partial-{child.pid}-{io.host_tag()}-0123abcd"
    alive = tmp_path / f".other.partial-{os.getppid()}-{io.host_tag()}-0123abcd"
    for leftover in (dead, alive):
        leftover.mkdir()
        np.save(leftover / "obs.npy", np.zeros((1000, 8), np.float32))
    path = save_dataset(tmp_path / "ds", _transitions(), _info())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["ds", alive.name])
    assert load_dataset(path).transitions.reward.shape == (50,)


def test_leftovers_of_interrupted_writes_are_refused(saved, tmp_path):
    partial = tmp_path / f".ds.partial-{os.getpid()}-0123abcd"
    os.rename(saved, partial)  # a complete directory, but named as an unfinished write
    assert "interrupted save_dataset" in _load_error(partial)
    aside = tmp_path / f".ds.old-{os.getpid()}-0123abcd"
    os.rename(partial, aside)
    assert "Rename it" in _load_error(aside)


# --------------------------------------------------------------------------------------------
# A writer killed mid-write leaves nothing loadable
# --------------------------------------------------------------------------------------------

# A fork server: importing jax costs seconds, so one process imports once and forks a fresh
# writer per trial; the test SIGKILLs the writer at chosen points of its write.
_WRITER = textwrap.dedent("""
    import os, sys
    import numpy as np
    from rlkit.data.dataset import DatasetInfo, save_dataset
    from rlkit.types import Transition

    print("ready", flush=True)
    for line in sys.stdin:
        path, rows, value, overwrite = line.split()
        rows, value = int(rows), int(value)
        obs = np.full((rows, 32, 32, 3), value, np.uint8)
        transitions = Transition(obs=obs, action=np.zeros(rows, np.int32),
                                 reward=np.zeros(rows, np.float32),
                                 terminated=np.arange(rows) % 100 == 99,
                                 truncated=np.zeros(rows, bool), next_obs=obs)
        info = DatasetInfo("chain", {}, (32, 32, 3), "uint8", 2, "random")
        pid = os.fork()
        if pid == 0:
            save_dataset(path, transitions, info, overwrite=overwrite == "1")
            os._exit(0)
        print(pid, flush=True)
        os.waitpid(pid, 0)
        print("reaped", flush=True)
""")


def _wait_and_kill(pid: int, trigger) -> bool:
    """SIGKILL `pid` once `trigger()` holds; False if the writer finished first."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        if trigger():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                return False
            return True
        time.sleep(0.0005)
    raise AssertionError("the writer neither finished nor reached the trigger")


def _partials(parent: Path, kind: str = "partial") -> list[Path]:
    return [p for p in parent.iterdir() if p.name.startswith(".") and f".{kind}-" in p.name]


def _has(parent: Path, name: str):
    return lambda: any((p / name).exists() for p in _partials(parent))


def test_killed_writer_leaves_nothing_loadable(tmp_path):
    rows = 4000  # two 12 MB observation files: the write takes a while
    server = subprocess.Popen(
        [sys.executable, "-c", _WRITER],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout.readline().strip() == "ready"

        def trial(path: Path, value: int, overwrite: bool, trigger) -> bool:
            server.stdin.write(f"{path} {rows} {value} {int(overwrite)}\n")
            server.stdin.flush()
            pid = int(server.stdout.readline())
            killed = _wait_and_kill(pid, trigger)
            assert server.stdout.readline().strip() == "reaped"
            return killed

        def check(path: Path, allowed_values: set[int]) -> None:
            if path.exists():  # the rename happened: it must be a whole, verified dataset
                dataset = load_dataset(path)
                assert dataset.transitions.obs.shape[0] == rows
                assert int(dataset.transitions.obs[0, 0, 0, 0]) in allowed_values
            for leftover in [p for p in path.parent.iterdir() if p.name.startswith(".")]:
                with pytest.raises(DatasetError):
                    load_dataset(leftover)

        triggers = {
            "at once": lambda: True,
            "partial dir": lambda parent: bool(_partials(parent)),
            "writing obs": lambda parent: _has(parent, "obs.npy")(),
            "writing next_obs": lambda parent: _has(parent, "next_obs.npy")(),
            "writing metadata": lambda parent: _has(parent, "metadata.json")(),
        }
        left_partial = 0
        for index, (name, trigger) in enumerate(triggers.items()):
            parent = tmp_path / f"fresh-{index}"
            parent.mkdir()
            path = parent / "ds"
            condition = trigger if name == "at once" else (lambda t=trigger, p=parent: t(p))
            trial(path, 1, False, condition)
            left_partial += bool(_partials(parent)) and not path.exists()
            check(path, {1})

        # Overwriting: the old dataset stays whole until the new one replaces it.
        for index, name in enumerate(["writing obs", "writing metadata"]):
            parent = tmp_path / f"overwrite-{index}"
            parent.mkdir()
            path = parent / "ds"
            assert trial(path, 1, False, lambda: False) is False  # the old dataset, completed
            trial(path, 2, True, lambda t=triggers[name], p=parent: t(p))
            check(path, {1, 2})
            if not path.exists():  # killed between the two renames: the old one waits aside
                assert len(_partials(parent, "old")) == 1
        # The test must have caught a write in progress, or it proves nothing.
        assert left_partial >= 2, left_partial
    finally:
        server.stdin.close()
        server.wait(timeout=30)


# --------------------------------------------------------------------------------------------
# Preference JSONL
# --------------------------------------------------------------------------------------------


def test_preferences_round_trip(tmp_path):
    records = [
        PreferenceRecord("2 + 2 =", " 4", " 5"),
        PreferenceRecord("Grüß dich 👋", "Hallo!\nWie geht's?", "Nein.", 8.5, -2.0),
    ]
    path = save_preferences(tmp_path / "sub" / "prefs.jsonl", records)
    assert load_preferences(path) == records
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2 and "Grüß" in lines[1]
    assert json.loads(lines[0]) == {
        "prompt": "2 + 2 =",
        "chosen": " 4",
        "rejected": " 5",
        "score_chosen": None,
        "score_rejected": None,
    }
    save_preferences(path, records[:1])  # atomic replace leaves no temporary files
    assert load_preferences(path) == records[:1]
    assert [p.name for p in path.parent.iterdir()] == ["prefs.jsonl"]


def test_preferences_extra_keys_and_blank_lines(tmp_path):
    path = tmp_path / "prefs.jsonl"
    path.write_text(
        '\n{"id": 3, "prompt": "p", "chosen": "a", "rejected": "b", "score_chosen": 1}\n\n'
    )
    assert load_preferences(path) == [PreferenceRecord("p", "a", "b", 1.0, None)]


GOOD = '{"prompt": "p", "chosen": "a", "rejected": "b"}'


@pytest.mark.parametrize(
    ("bad_line", "match"),
    [
        ('{"prompt": "p", "chosen": "a", ', "invalid JSON"),
        ('["p", "a", "b"]', "expected a JSON object"),
        ('{"prompt": "p", "chosen": "a"}', "missing key.*'rejected'"),
        ('{"prompt": "p", "chosen": ["a"], "rejected": "b"}', "'chosen' must be a string"),
        (
            '{"prompt": "p", "chosen": "a", "rejected": "b", "score_chosen": "8"}',
            "'score_chosen' must be a number",
        ),
        (
            '{"prompt": "p", "chosen": "a", "rejected": "b", "score_rejected": true}',
            "'score_rejected' must be a number",
        ),
        ('{"prompt": "p", "chosen": "a", "rejected": "b", "score_chosen": NaN}', "finite"),
    ],
)
def test_preferences_errors_name_the_line(tmp_path, bad_line, match):
    path = tmp_path / "prefs.jsonl"
    path.write_text(f"{GOOD}\n\n{bad_line}\n{GOOD}\n")  # the bad record is on line 3
    with pytest.raises(DatasetError, match=match) as error:
        load_preferences(path)
    assert f"{path}, line 3:" in str(error.value)


def test_preferences_empty_and_missing(tmp_path):
    path = tmp_path / "prefs.jsonl"
    path.write_text("\n  \n")
    with pytest.raises(DatasetError, match="empty"):
        load_preferences(path)
    with pytest.raises(DatasetError, match="no such preference file"):
        load_preferences(tmp_path / "nope.jsonl")
    with pytest.raises(DatasetError, match="no records"):
        save_preferences(path, [])
    with pytest.raises(DatasetError, match=r"records\[0\]: 'prompt' must be a string"):
        save_preferences(path, [PreferenceRecord(1, "a", "b")])
