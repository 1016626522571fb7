"""Atomic writes: a file or a directory appears whole at its path, or not at all.

Everything rlkit writes that a reader may open later or that a crash may cut short goes through
this module: offline datasets (a directory), preference files, and the run files (config.yaml,
summary.json, rewrites of metrics.csv). Each write follows one recipe:

1. write into a hidden sibling `.<name>.partial-<pid>-<host>-<random>` in the same directory
   (a rename is atomic only within one file system, so never in /tmp);
2. flush and `fsync` every file written (for a directory, every file below it);
3. `os.replace` the sibling onto the path (for a directory that already exists, move the old
   one aside to `.<name>.old-<pid>-<host>-<random>` first and delete it once the new one is in
   place);
4. `fsync` the parent directory, so the rename itself survives a power cut.

A writer killed at any moment leaves either the old content (or nothing) at the path, plus
possibly a hidden `.partial-` leftover. `<pid>` is the writer's process id and `<host>` the
first 8 hex digits of the sha256 of its host name, so the next write into the same directory
removes the leftovers whose writer is gone (`remove_stale_partials`): those written on this
host by a process that no longer exists, and, from any host, those untouched for
`STALE_AFTER_SECONDS` (one day). `.old-` directories are never removed automatically: after a
writer died between the two renames they are the only copy of the old content. (A limit of the
pid check: writers in separate pid namespaces that share a host name and a directory, such as
containers on the host's network, cannot see each other's processes; give them distinct host
names.)

Every `OSError` of a write (a read-only or full file system, a missing permission) becomes one
`RlkitError` line that names the path and the fix.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from rlkit.errors import RlkitError

STALE_AFTER_SECONDS = 24 * 60 * 60
"""A leftover untouched for this long is removed whoever wrote it (a writer on another host,
whose pid cannot be checked from here, or a pid since reused)."""

# `.<name>.partial-<pid>-<host>-<random>`; leftovers of older rlkit versions lack `<host>`.
LEFTOVER_RE = re.compile(
    r"^\.(?P<name>.+)\.(?P<kind>partial|old)-(?P<pid>\d+)(-(?P<host>[0-9a-f]{8}))?-[0-9a-f]+$"
)


def host_tag() -> str:
    """The first 8 hex digits of sha256(host name): the `<host>` of leftover names."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def sibling(path: Path, kind: str = "partial") -> Path:
    """A fresh hidden sibling of `path`: `.<name>.<kind>-<pid>-<host>-<random>`."""
    return path.parent / f".{path.name}.{kind}-{os.getpid()}-{host_tag()}-{secrets.token_hex(4)}"


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """Open a temporary sibling of `path` for writing; on success it replaces `path` atomically.

    Text mode writes UTF-8 with no newline translation (what is written is what is stored, so
    `csv.writer(handle, lineterminator="\\n")` gives "\\n" endings). If the body raises, the
    temporary file is deleted and `path` is untouched.

    Args:
        path: the file to create or replace (its parent is created if missing).
        mode: "w" (text) or "wb" (bytes).

    Yields:
        The open file handle.

    Raises:
        RlkitError: the file system refused the write (read-only, full, no permission), naming
            `path`.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode: must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    with _write_errors(path):
        _prepare_parent(path)
        partial = sibling(path)
        try:
            text = dict(encoding="utf-8", newline="") if mode == "w" else {}
            with open(partial, mode, **text) as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(partial, path)
        except BaseException:
            with contextlib.suppress(OSError):
                partial.unlink()
            raise
        fsync_directory(path.parent)


def write_text(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8, newlines as given) to `path` atomically; see `atomic_file`."""
    with atomic_file(path, "w") as handle:
        handle.write(text)
    return Path(path)


@contextlib.contextmanager
def atomic_directory(path: str | Path, *, replace: bool = False) -> Iterator[Path]:
    """Build a directory in a temporary sibling; on success it is renamed to `path` atomically.

    The body fills the yielded (empty) directory. On a normal exit every file below it is
    fsynced and the directory renamed into place. With `replace`, an existing `path` is moved
    aside first and deleted once the new one is in place; if the second rename fails, the old
    one is put back, and if the process dies between the two, `path` is absent and the old
    content waits at `.<name>.old-...` next to it. If the body raises, the temporary directory
    is deleted.

    Args:
        path: the directory to create (its parent is created if missing).
        replace: replace an existing `path` (the caller decides whether that is allowed).

    Yields:
        The temporary directory, a `Path`.

    Raises:
        RlkitError: `path` exists and not `replace`, or the file system refused the write
            (read-only, full, no permission), naming `path`.
    """
    path = Path(path)
    with _write_errors(path):
        _prepare_parent(path)
        partial = sibling(path)
        partial.mkdir()
        try:
            yield partial
            for file in sorted(partial.rglob("*")):
                if file.is_file():
                    _fsync_file(file)
            fsync_directory(partial)
            if os.path.lexists(path):
                if not replace:
                    raise RlkitError(f"{path}: already exists; choose another path or replace "
                                     f"it deliberately.")
                aside = sibling(path, "old")
                os.rename(path, aside)
                try:
                    os.rename(partial, path)
                except BaseException:
                    os.rename(aside, path)  # put the old content back
                    raise
                fsync_directory(path.parent)
                shutil.rmtree(aside, ignore_errors=True)
            else:
                os.rename(partial, path)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        fsync_directory(path.parent)


def remove_stale_partials(directory: str | Path, *, now: float | None = None) -> list[Path]:
    """Delete the `.partial-` leftovers in `directory` whose writer is gone.

    A leftover goes when its name records this host and a pid with no live process, or when it
    (the entry itself) was last modified more than `STALE_AFTER_SECONDS` ago. Leftovers of live
    writers, of other hosts (until they are old) and every `.old-` directory stay. Called by
    every atomic write before it starts; errors while deleting are ignored (another process may
    be deleting the same leftover).

    Args:
        directory: the directory to clean.
        now: the current time as `time.time()` gives it (for tests).

    Returns:
        The leftovers removed.
    """
    directory = Path(directory)
    now = time.time() if now is None else now
    removed = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    this_host = host_tag()
    for entry in entries:
        match = LEFTOVER_RE.match(entry.name)
        if not match or match["kind"] != "partial":
            continue
        try:
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        dead_here = match["host"] == this_host and not _pid_alive(int(match["pid"]))
        if not (dead_here or age > STALE_AFTER_SECONDS):
            continue
        target = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(target, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                target.unlink()
        if not os.path.lexists(target):
            removed.append(target)
    return removed


def fsync_directory(directory: str | Path) -> None:
    """Make a rename or a new entry in `directory` durable (a no-op where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_FIXES = {
    errno.EROFS: "the file system is read-only; write somewhere writable",
    errno.ENOSPC: "the disk is full; free some space or write somewhere else",
    errno.EDQUOT: "the disk quota is exhausted; free some space or write somewhere else",
    errno.EACCES: "permission denied; write somewhere writable or fix the permissions",
    errno.EPERM: "permission denied; write somewhere writable or fix the permissions",
}


@contextlib.contextmanager
def _write_errors(path: Path) -> Iterator[None]:
    """Turn an `OSError` of a write into one `RlkitError` line naming `path` and the fix."""
    try:
        yield
    except OSError as error:
        fix = _FIXES.get(error.errno, "check that its directory exists and is writable")
        reason = error.strerror or str(error)
        raise RlkitError(f"{path}: cannot write it ({reason}): {fix}.") from None


def _prepare_parent(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(path.parent)


def _fsync_file(file: Path) -> None:
    with open(file, "rb") as handle:
        os.fsync(handle.fileno())


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    except OSError:
        return True  # cannot tell: keep it until it is old
    return True


__all__ = [
    "LEFTOVER_RE",
    "STALE_AFTER_SECONDS",
    "atomic_directory",
    "atomic_file",
    "fsync_directory",
    "host_tag",
    "remove_stale_partials",
    "sibling",
    "write_text",
]
