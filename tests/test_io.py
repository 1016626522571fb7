"""The one atomic-write routine (rlkit.io): files and directories appear whole or not at all,
a refused write is one line naming the path, and leftovers of dead writers are removed."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time

import pytest

from rlkit import io
from rlkit.errors import RlkitError


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_write_text_replaces_whole_and_keeps_newlines(tmp_path):
    path = tmp_path / "sub" / "summary.json"
    io.write_text(path, "a\nb\r\n")
    assert path.read_bytes() == b"a\nb\r\n"  # no newline translation
    io.write_text(path, "c\n")
    assert path.read_bytes() == b"c\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["summary.json"]


def test_atomic_directory_builds_replaces_and_refuses_without_replace(tmp_path):
    path = tmp_path / "ds"
    with io.atomic_directory(path) as partial:
        assert partial.parent == tmp_path and partial.name.startswith(".ds.partial-")
        assert not path.exists()
        (partial / "a.txt").write_text("1")
    assert (path / "a.txt").read_text() == "1"
    with pytest.raises(RlkitError, match="ds: already exists"), io.atomic_directory(path) as p:
        (p / "a.txt").write_text("2")
    with io.atomic_directory(path, replace=True) as partial:
        (partial / "b.txt").write_text("3")
    assert sorted(p.name for p in path.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


@pytest.mark.parametrize(
    ("code", "fix"),
    [(errno.EROFS, "read-only"), (errno.ENOSPC, "disk is full"), (errno.EACCES, "permission")],
)
@pytest.mark.parametrize("kind", ["file", "directory"])
def test_a_refused_write_is_one_line_naming_the_path_and_leaves_nothing(
        tmp_path, monkeypatch, code, fix, kind):
    # As root chmod stops nothing, so the file system's refusal is simulated at the rename.
    path = tmp_path / "out"
    if kind == "file":
        io.write_text(path, "old")

    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "replace", refuse)
    monkeypatch.setattr(os, "rename", refuse)
    with pytest.raises(RlkitError) as error:
        if kind == "file":
            io.write_text(path, "new")
        else:
            with io.atomic_directory(path) as partial:
                (partial / "x").write_text("x")
    message = str(error.value)
    assert message.startswith(f"{path}: cannot write it ({os.strerror(code)})"), message
    assert fix in message and "\n" not in message
    expected = ["out"] if kind == "file" else []
    assert sorted(p.name for p in tmp_path.iterdir()) == expected
    if kind == "file":
        assert path.read_text() == "old"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_directory_is_one_line(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(RlkitError, match="permission denied"):
            io.write_text(locked / "f", "x")
    finally:
        locked.chmod(0o755)


def test_stale_partials_of_dead_writers_are_removed_live_ones_kept(tmp_path):
    host, dead = io.host_tag(), _dead_pid()
    dead_dir = tmp_path / f".ds.partial-{dead}-{host}-0123abcd"
    dead_file = tmp_path / f".summary.json.partial-{dead}-{host}-0123abcd"
    live = tmp_path / f".ds.partial-{os.getpid()}-{host}-0123abcd"
    other_host = tmp_path / f".ds.partial-{dead}-{'0' * 8 if host != '0' * 8 else '1' * 8}-ab"
    legacy = tmp_path / f".ds.partial-{dead}-0123abcd"  # older rlkit: no host in the name
    aside = tmp_path / f".ds.old-{dead}-{host}-0123abcd"  # an old dataset: never removed
    for directory in (dead_dir, live, other_host, legacy, aside):
        directory.mkdir()
        (directory / "obs.npy").write_bytes(b"x" * 10)
    dead_file.write_text("{}")
    removed = io.remove_stale_partials(tmp_path)
    assert sorted(removed) == sorted([dead_dir, dead_file])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in (live, other_host, legacy, aside))
    # After a day, what no pid check could decide goes too, but never an `.old-` directory.
    later = time.time() + io.STALE_AFTER_SECONDS + 60
    removed = io.remove_stale_partials(tmp_path, now=later)
    assert sorted(removed) == sorted([live, other_host, legacy])
    assert [p.name for p in tmp_path.iterdir()] == [aside.name]


def test_every_atomic_write_cleans_its_directory_first(tmp_path):
    stale = tmp_path / f".ds.partial-{_dead_pid()}-{io.host_tag()}-0123abcd"
    stale.mkdir()
    io.write_text(tmp_path / "config.yaml", "a: 1\n")
    assert not stale.exists()


def test_the_metrics_rewrite_on_resume_is_atomic_and_keeps_newline_endings(tmp_path):
    # Issue 11 item 4: the rewrite used csv's "\r\n" while appended rows use "\n".
    from rlkit.runner import MetricsLog

    metrics = MetricsLog(tmp_path / "metrics.csv")
    metrics.append([{"chunk": 0, "seed": 0, "loss": 0.5}, {"chunk": 1, "seed": 0, "loss": 0.25}])
    metrics.truncate_after(0)
    metrics.append([{"chunk": 1, "seed": 0, "loss": 0.125}])
    assert (tmp_path / "metrics.csv").read_bytes() == b"chunk,seed,loss\n0,0,0.5\n1,0,0.125\n"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]
