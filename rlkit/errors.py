"""The one exception type that reaches users as a clean message.

Anything that is the user's input being wrong (unknown names, impossible configs, missing extras,
broken files) raises `RlkitError` with a message that names the field, file or value and the fix.
The CLIs print it on one line and exit with status 2, without a traceback.
"""

from __future__ import annotations

import difflib
import os
import sys
from typing import NoReturn


class RlkitError(Exception):
    """A user-facing error: the message says what is wrong and how to fix it."""


def unknown_name(kind: str, name: str, known: list[str]) -> RlkitError:
    """An error for an unknown agent / env / ... name that suggests the closest known names."""
    close = difflib.get_close_matches(name, known, n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return RlkitError(f"unknown {kind} {name!r}.{hint} Known: {', '.join(sorted(known))}.")


def require(condition: bool, field: str, message: str) -> None:
    """Raise an `RlkitError` naming `field` when `condition` does not hold."""
    if not condition:
        raise RlkitError(f"{field}: {message}")


INTERRUPTED = 130  # a CLI's exit status after Ctrl-C (128 + SIGINT)


def exit_cli(code: int) -> NoReturn:
    """Leave a command-line entry point with status `code`.

    After Ctrl-C the interrupted computation may still be running on XLA's own threads, and a
    normal interpreter teardown can then abort ("terminate called without an active exception",
    seen with jax 0.11). The CLIs close their writers and checkpoints before returning
    `INTERRUPTED`, so this leaves at once in that case.
    """
    if code == INTERRUPTED:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
