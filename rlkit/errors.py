"""The one exception type that reaches users as a clean message.

Anything that is the user's input being wrong (unknown names, impossible configs, missing extras,
broken files) raises `RlkitError` with a message that names the field, file or value and the fix.
The CLIs print it on one line and exit with status 2, without a traceback.
"""

from __future__ import annotations

import difflib
import math
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


def require_int_at_least(value: object, field: str, minimum: int) -> None:
    """Raise `RlkitError` naming `field` unless `value` is an int (not a bool) >= `minimum`."""
    require(isinstance(value, int) and not isinstance(value, bool) and value >= minimum, field,
            f"must be an int >= {minimum}, got {value!r}.")


def require_number(value: object, field: str, *, low: float | None = None,
                   high: float | None = None, low_open: bool = False, high_open: bool = False,
                   hint: str = "") -> None:
    """Raise `RlkitError` naming `field` unless `value` is a finite number in the given range.

    Args:
        value: the config value (an int or float; a bool is refused).
        field: the field's name, first word of the message.
        low, high: the bounds (None: unbounded on that side; the value must be finite anyway,
            so `inf` and `nan` are always refused).
        low_open, high_open: exclude the bound itself.
        hint: appended to the message (e.g. "try 3e-4.").
    """
    bracket = ("(" if low_open else "[") + ("-inf" if low is None else f"{low:g}") + ", " + (
        "inf" if high is None else f"{high:g}") + (")" if high_open or high is None else "]")
    ok = (isinstance(value, int | float) and not isinstance(value, bool)
          and math.isfinite(value)
          and (low is None or (value > low if low_open else value >= low))
          and (high is None or (value < high if high_open else value <= high)))
    require(ok, field, f"must be a finite number in {bracket}, got {value!r}" + (
        f"; {hint}" if hint else "."))


def check_network_fields(config) -> None:
    """Validate the `hidden_sizes`, `activation` and `cnn` fields agent configs share.

    Raises:
        RlkitError: no layer, a width that is not a positive int, an unknown activation or CNN.
    """
    sizes = config.hidden_sizes
    require(isinstance(sizes, tuple | list) and len(sizes) > 0
            and all(isinstance(size, int) and not isinstance(size, bool) and size >= 1
                    for size in sizes),
            "hidden_sizes", f"must be one or more positive ints (layer widths), got {sizes!r}.")
    require(config.activation in ("relu", "tanh"), "activation",
            f"must be 'relu' or 'tanh', got {config.activation!r}.")
    require(config.cnn in ("nature", "impala"), "cnn",
            f"must be 'nature' or 'impala', got {config.cnn!r}.")


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
