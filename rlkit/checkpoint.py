"""Checkpoints through orbax: the whole training carry (params, optimiser, RNG keys, counters,
replay buffers), so that a resumed run continues exactly where it stopped.

orbax writes each step into a temporary directory and renames it when complete, so a crash
mid-save never leaves a checkpoint that restores. Ctrl-C during a save is held until the save has
finished (then raised), so an interrupted run keeps the checkpoint it was writing. Typed PRNG keys
are stored as their raw key data and re-wrapped on restore.
"""

from __future__ import annotations

import contextlib
import signal
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


def _from_storable(stored: PyTree, like: PyTree) -> PyTree:
    return jax.tree.map(
        lambda s, x: jax.random.wrap_key_data(s, impl=jax.random.key_impl(x)) if _is_key(x) else s,
        stored, like,
    )


@contextlib.contextmanager
def _ctrl_c_held():
    """Hold SIGINT until the block ends, then raise KeyboardInterrupt if one came."""
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or previous is None:
        yield  # only the main thread can install handlers; None: a handler not set by Python
        return
    received: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


class Checkpointer:
    """Keeps the newest `max_to_keep` checkpoints of a run under `directory`."""

    def __init__(self, directory: str | Path, max_to_keep: int = 2):
        self.directory = Path(directory)
        self.manager = ocp.CheckpointManager(
            Path(directory).absolute(),
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep, enable_async_checkpointing=False, create=True
            ),
        )

    def save(self, step: int, tree: PyTree) -> None:
        """Save `tree` as checkpoint `step` (synchronously: the caller may donate it next)."""
        with _ctrl_c_held():
            self.manager.save(step, args=ocp.args.StandardSave(_to_storable(tree)), force=True)
            self.manager.wait_until_finished()

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def restore(self, step: int, like: PyTree) -> PyTree:
        """Restore checkpoint `step` into the structure, shapes, dtypes and shardings of `like`."""
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
            _to_storable(like),
        )
        stored = self.manager.restore(step, args=ocp.args.StandardRestore(abstract))
        return _from_storable(stored, like)

    def restore_newest_readable(self, like: PyTree, set_aside: bool = False
                                ) -> tuple[int | None, PyTree, list[str]]:
        """Restore the newest checkpoint that reads back; older ones stand in for damaged ones.

        With `set_aside`, damaged checkpoints are renamed `unreadable-STEP-TIME` (kept for
        inspection), so that a resumed run can save that step again.

        Returns:
            (step, tree, skipped): the step restored (None, and `like` itself, when there is no
            checkpoint at all) and one line per damaged newer checkpoint that was passed over.

        Raises:
            RlkitError: checkpoints exist but none of them can be read.
        """
        skipped: list[str] = []
        steps = sorted(self.manager.all_steps(), reverse=True)
        for step in steps:
            try:
                tree = self.restore(step, like)
            except Exception as error:  # orbax and tensorstore raise many kinds on damaged files
                reason = str(error).strip().splitlines()[0][:200] if str(error) else ""
                skipped.append(f"checkpoint {step} in {self.directory} is unreadable "
                               f"({type(error).__name__}: {reason})")
                if set_aside:
                    aside = self.directory / f"unreadable-{step}-{time.strftime('%Y%m%d-%H%M%S')}"
                    (self.directory / str(step)).rename(aside)
                    self.manager.reload()
                continue
            return step, tree, skipped
        if steps:
            raise RlkitError(
                f"{self.directory}: no checkpoint can be read ({'; '.join(skipped)}); the run "
                "cannot be resumed: start it again in a new --run-dir")
        return None, like, skipped

    def close(self) -> None:
        self.manager.close()
