"""Checkpoints through orbax: the whole training carry (params, optimiser, RNG keys, counters,
replay buffers), so that a resumed run continues exactly where it stopped.

orbax writes each step into a temporary directory and renames it when complete, so a crash
mid-save never leaves a checkpoint that restores. Ctrl-C or SIGTERM during a save is held until
the save has finished (then raised), so an interrupted run keeps the checkpoint it was writing.
Typed PRNG keys are stored as their raw key data and re-wrapped on restore.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from rlkit.errors import RlkitError
from rlkit.types import PyTree


def _is_key(x) -> bool:
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _to_storable(tree: PyTree) -> PyTree:
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def _key_impl(x):
    """The PRNG implementation of a key array, or of a key's shape (`jax.ShapeDtypeStruct`, as
    `jax.eval_shape` gives), which `jax.random.key_impl` itself refuses."""
    if not isinstance(x, jax.ShapeDtypeStruct):
        return jax.random.key_impl(x)
    found = []
    jax.eval_shape(lambda k: found.append(jax.random.key_impl(k)), x)
    return found[0]


def _from_storable(stored: PyTree, like: PyTree) -> PyTree:
    return jax.tree.map(
        lambda s, x: jax.random.wrap_key_data(s, impl=_key_impl(x)) if _is_key(x) else s,
        stored, like,
    )


@contextlib.contextmanager
def _ctrl_c_held():
    """Hold SIGINT and SIGTERM until the block ends, then raise what the first of them would
    have raised (KeyboardInterrupt, or `Terminated` where SIGTERM is handled like Ctrl-C)."""
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.getsignal(s) for s in signals}
    if threading.current_thread() is not threading.main_thread() or None in previous.values():
        yield  # only the main thread can install handlers; None: a handler not set by Python
        return
    received: list[int] = []
    for s in signals:
        signal.signal(s, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        for s in signals:
            signal.signal(s, previous[s])
    if received:
        signum, handler = received[0], previous[received[0]]
        if callable(handler):
            handler(signum, None)  # Python's SIGINT handler, or rlkit's SIGTERM one: raises
        elif signum == signal.SIGINT:
            raise KeyboardInterrupt
        else:
            signal.raise_signal(signum)  # the restored disposition (default: end the process)


@contextlib.contextmanager
def _quiet_orbax():
    """Silence what orbax, tensorstore's asyncio loop and absl log while a damaged checkpoint
    fails to restore (dozens of "Event loop is closed" tracebacks): the caller reports the
    failure itself, in one line."""
    names = ("absl", "asyncio", "orbax", "orbax.checkpoint", "jax")
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _drop_closed_event_loop_noise() -> None:
    """Keep `RuntimeError('Event loop is closed')` raised in callbacks out of stderr, and the
    errors of orbax's abandoned array readers ("Encountered error while reading array index").

    After a damaged checkpoint fails to restore, tensorstore's threads still call back into the
    asyncio loop orbax has already closed; Python prints each of those (dozens) as "Exception
    ignored in ... Event loop is closed". They are harmless, and the failure itself is reported
    in one line, so a filter in `sys.unraisablehook` drops exactly those (installed once, from
    the first restore on).
    """
    previous = sys.unraisablehook
    if getattr(previous, "drops_closed_event_loop", False):
        return

    def hook(unraisable) -> None:
        error = unraisable.exc_value
        if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
            return
        if str(error).startswith("Encountered error while reading array index"):
            return  # orbax's reader coroutines, abandoned after the failed restore
        previous(unraisable)

    hook.drops_closed_event_loop = True
    sys.unraisablehook = hook


class Checkpointer:
    """Keeps the newest `max_to_keep` checkpoints of a run under `directory` (None: all)."""

    def __init__(self, directory: str | Path, max_to_keep: int | None = 2):
        self.directory = Path(directory)
        self.manager = ocp.CheckpointManager(
            Path(directory).absolute(),
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep, enable_async_checkpointing=False, create=True
            ),
        )

    def save(self, step: int, tree: PyTree) -> None:
        """Save `tree` as checkpoint `step` (synchronously: the caller may donate it next).

        Raises:
            OSError: the disk is full or read-only (tensorstore reports those as other
                exception kinds, with the system's message; they become OSError here, so the
                CLIs report them in one line).
        """
        with _ctrl_c_held():
            try:
                self.manager.save(step, args=ocp.args.StandardSave(_to_storable(tree)),
                                  force=True)
                self.manager.wait_until_finished()
            except OSError:
                raise
            except Exception as error:
                for code in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT):
                    if os.strerror(code) in str(error):
                        raise OSError(code, os.strerror(code), str(self.directory)) from error
                raise

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        """The steps of every kept checkpoint, oldest first."""
        return sorted(self.manager.all_steps())

    def restore(self, step: int, like: PyTree, part: str | None = None) -> PyTree:
        """Restore checkpoint `step` into the structure, shapes, dtypes and shardings of `like`.

        Args:
            step: the checkpoint.
            like: the tree (arrays), or, with `part`, its shapes (`jax.eval_shape`); those
                arrays are placed on the default device.
            part: restore only this top-level field of the saved tree (an orbax partial
                restore: nothing else is read), e.g. `agent_state` of a training carry.
        """
        if part is None:
            abstract = jax.tree.map(
                lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                _to_storable(like),
            )
            stored = self.manager.restore(step, args=ocp.args.StandardRestore(abstract))
            return _from_storable(stored, like)
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                                jax.eval_shape(_to_storable, like))
        stored = self.manager.restore(step, args=ocp.args.PyTreeRestore(
            item={part: abstract}, partial_restore=True,
            restore_args=ocp.checkpoint_utils.construct_restore_args({part: abstract})))[part]
        return _from_storable(stored, like)

    def restore_newest_readable(self, like: PyTree, set_aside: bool = False,
                                part: str | None = None
                                ) -> tuple[int | None, PyTree, list[str]]:
        """Restore the newest checkpoint that reads back; older ones stand in for damaged ones.

        With `set_aside`, damaged checkpoints newer than the one restored are renamed
        `unreadable-STEP-TIME` (kept for inspection), so that a resumed run can save those steps
        again. Only then: when no checkpoint reads back, the likelier cause is `like` itself (a
        configuration that no longer matches the run), and nothing is renamed.

        `part` restores one top-level field only (see `restore`).

        Returns:
            (step, tree, skipped): the step restored (None, and `like` itself, when there is no
            checkpoint at all) and one line per damaged newer checkpoint that was passed over.

        Raises:
            RlkitError: checkpoints exist but none of them can be read.
        """
        skipped: list[str] = []
        damaged: list[int] = []
        steps = sorted(self.manager.all_steps(), reverse=True)
        # Before the first restore: tensorstore's callbacks into orbax's closed loop can fire
        # while a failing restore is still unwinding, before any `except` here runs.
        _drop_closed_event_loop_noise()
        for step in steps:
            try:
                with _quiet_orbax():
                    tree = self.restore(step, like, part)
            except Exception as error:  # orbax and tensorstore raise many kinds on damaged files
                reason = str(error).strip().splitlines()[0][:200] if str(error) else ""
                skipped.append(f"checkpoint {step} in {self.directory} is unreadable "
                               f"({type(error).__name__}: {reason})")
                damaged.append(step)
                continue
            if set_aside and damaged:
                stamp = time.strftime("%Y%m%d-%H%M%S")
                for bad in damaged:
                    (self.directory / str(bad)).rename(self.directory / f"unreadable-{bad}-{stamp}")
                self.manager.reload()
            return step, tree, skipped
        if steps:
            raise RlkitError(
                f"{self.directory}: no checkpoint can be read ({'; '.join(skipped)}); the run "
                "cannot be resumed: start it again in a new --run-dir")
        return None, like, skipped

    def close(self) -> None:
        self.manager.close()
