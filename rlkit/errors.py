"""The one exception type that reaches users as a clean message.

Anything that is the user's input being wrong (unknown names, impossible configs, missing extras,
broken files) raises `RlkitError` with a message that names the field, file or value and the fix.
The CLIs print it on one line and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import io
import math
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn


class RlkitError(Exception):
    """A user-facing error: the message says what is wrong and how to fix it."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose parse errors are one line, like the rest of rlkit's CLIs, and whose
    output files are checked before any work.

    argparse prints its whole usage block above the error; this prints only
    `PROG: error: MESSAGE; see PROG --help` on stderr and exits with status 2. The benchmark
    scripts build their parsers from it, so `parser.error(...)` in their own checks is one line
    too. Flags added with `add_output` name files the script writes at its end (results, plots):
    they are checked right after parsing (`output_error`), so a path that cannot be written
    stops the script at once instead of after hours of training.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        # `python benchmarks/x.py`, as it was run, rather than argparse's bare `x.py`.
        kwargs.setdefault("prog", f"python {sys.argv[0]}" if sys.argv[0].endswith(".py")
                          else None)
        super().__init__(*args, **kwargs)
        self._outputs: list[tuple[argparse.Action, bool]] = []

    def add_output(self, *flags: str, figure: bool = False, **kwargs: Any) -> argparse.Action:
        """`add_argument(*flags, type=Path, **kwargs)` for a file the script writes; `figure`:
        also check that matplotlib writes its extension."""
        action = self.add_argument(*flags, type=Path, **kwargs)
        self._outputs.append((action, figure))
        return action

    def parse_known_args(self, args=None, namespace=None):
        parsed, rest = super().parse_known_args(args, namespace)
        for action, figure in self._outputs:
            path = getattr(parsed, action.dest, None)
            problem = None if path is None else output_error(Path(path), figure=figure)
            if problem:
                self.error(f"{action.option_strings[-1]} {path}: {problem}")
        return parsed, rest

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}; see {self.prog} --help\n")


def output_error(path: Path, figure: bool = False) -> str | None:
    """Why a file cannot be written at `path` later (None if it can): the path is a folder, its
    folder cannot be made (made here if missing) or is not writable, or, for a `figure`, its
    extension names no format matplotlib writes."""
    if path.is_dir():
        return "is a folder; pass a file name"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return f"cannot make its folder ({error.strerror})"
    if not os.access(path.parent, os.W_OK):
        return f"its folder {path.parent} is not writable"
    if figure:
        from rlkit.plotting import format_error

        return format_error(path)
    return None


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


def require_one_of(value: object, field: str, choices: tuple) -> None:
    """Raise `RlkitError` naming `field` unless `value` is one of `choices` (the message lists
    them: "must be 'huber' or 'mse', got 'l1'.")."""
    quoted = [repr(choice) for choice in choices]
    listed = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
    require(value in choices, field, f"must be {listed}, got {value!r}.")


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
    require_one_of(config.activation, "activation", ("relu", "tanh"))
    require_one_of(config.cnn, "cnn", ("nature", "impala", "impala-small"))


def check_optimiser_fields(config, learning_rate_hint: str, network: bool = True) -> None:
    """Validate the fields every config trained by gradient steps on batches has:
    `learning_rate` (> 0), `batch_size` and `total_steps` (ints >= 1), `max_grad_norm` (> 0, or
    None for no clipping), `weight_decay` (>= 0) where the config has it, and the network fields
    (`check_network_fields`) unless `network` is False (language models carry theirs in a
    `TransformerConfig`).

    Args:
        config: a flat agent config with those fields.
        learning_rate_hint: the end of the learning-rate message, e.g. "try 3e-4.".
        network: also check `hidden_sizes` and friends.

    Raises:
        RlkitError: naming the first field out of range.
    """
    require_number(config.learning_rate, "learning_rate", low=0, low_open=True,
                   hint=learning_rate_hint)
    require_int_at_least(config.batch_size, "batch_size", 1)
    require_int_at_least(config.total_steps, "total_steps", 1)
    if config.max_grad_norm is not None:
        require_number(config.max_grad_norm, "max_grad_norm", low=0, low_open=True,
                       hint="None disables clipping.")
    if hasattr(config, "weight_decay"):
        require_number(config.weight_decay, "weight_decay", low=0)
    if network:
        check_network_fields(config)


def import_user_module(module_name: str, what: str,
                       not_found: Callable[[ModuleNotFoundError], RlkitError | None]) -> ModuleType:
    """Import a module the user named; any failure becomes one `RlkitError` line.

    Args:
        module_name: the dotted module name.
        what: the message's opening, e.g. "--env 'my_envs:make': importing 'my_envs'"; the
            generic messages go on with " failed: <reason>".
        not_found: given a `ModuleNotFoundError`, the caller's own error (the module is not on
            the path, an optional extra is missing, ...) or None for the generic message.

    Raises:
        RlkitError: the import failed, for whatever reason (the user's module may raise
            anything while it runs; only its first line is kept).
    """
    import importlib

    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        raise (not_found(error) or RlkitError(f"{what} failed: {error}.")) from None
    except Exception as error:  # noqa: BLE001 - the user's module: any failure is reported
        first_line = (str(error).splitlines() or [""])[0]
        raise RlkitError(f"{what} failed: {type(error).__name__}: {first_line}") from None


def one_line_parse_error(box: str, prog: str) -> str:
    """tyro's boxed parse error as one line: its first message and any suggested flag.

    Args:
        box: what tyro wrote to stderr (a panel: title, message, rules, hints; with UTF-8 box
            drawing, or plain dashes where stdout is not UTF-8).
        prog: the command, for the closing `see PROG --help`.
    """
    lines = [line.strip().strip("│╭╮╰╯ ").strip() for line in box.splitlines()]
    lines = [line for line in lines if line]

    def separator(line: str) -> bool:  # rich's rule, or the dashes of tyro's plain format
        return not set(line) - set("─-")

    # The title comes first: inside the panel's top border (`─ Unrecognized options ───`), or,
    # where stdout is not UTF-8 (tyro's plain format), on a line above a rule of dashes. The
    # message runs (wrapped) from there up to the next rule.
    start = 0
    if lines and lines[0].startswith("─") and not separator(lines[0]):
        start = 1
    elif len(lines) > 1 and separator(lines[1]) and not separator(lines[0]):
        start = 2
    first: list[str] = []
    for line in lines[start:]:
        if separator(line):
            break
        first.append(line)
    message = " ".join(first).rstrip(".") or "could not parse the arguments"
    message = message[0].lower() + message[1:]
    # A value for an optional field (`int | None`): tyro lists each type's failure; say what
    # was given and what fits instead.
    union = re.match(r"error parsing (\S+): no type matching (\S+) could be instantiated "
                     r"from \[(.*?)\]", message)
    if union:
        flag, types, value = union.groups()
        kinds = " or ".join(kind.strip("{}") for kind in types.split("|"))
        message = f"error parsing {flag}: {value} is not a valid value (expected {kinds})"
    # tyro's subcommand notes mean nothing with one agent per command: "(applied to PROG
    # AGENT)" after each option, "Arguments are applied to the directly preceding subcommand".
    message = re.sub(r" \(applied to [^)]*\)", "", message)
    message = re.sub(r"\s*Arguments are applied to the directly preceding subcommand, so "
                     r"ordering can matter\.?", "", message)
    listed = re.match(r"(unrecognized (?:or misplaced )?options): (.*)", message)
    if listed:  # the flags only (their values are listed too), or the stray words if no flag
        tokens = re.split(r"[,\s]+", listed.group(2).strip())
        flags = [token for token in tokens if token.startswith("-")]
        message = f"{listed.group(1)}: " + ", ".join(flags or tokens)
    if "Perhaps you meant:" in lines:
        suggestions = _suggested_flags(lines[lines.index("Perhaps you meant:") + 1:])
        unknown = set(re.findall(r"--[\w.-]+", listed.group(2))) if listed else set()
        elsewhere = [(flag, agents) for flag, agents in suggestions.items()
                     if flag in unknown and agents]
        if elsewhere:  # the flag exists, for other agents (`--agent.extrinsic-coef` of PPO)
            flag, agents = elsewhere[0]
            message += f" ({flag} is a flag of {', '.join(agents)}, not of this agent)"
        elif suggestions:
            message += f" (did you mean {next(iter(suggestions))}?)"
    return f"{message}; see {prog} --help"


def _suggested_flags(lines: list[str]) -> dict[str, list[str]]:
    """tyro's "Perhaps you meant:" block as {flag: [agents whose help lists it]}, in its
    order (an entry is `--flag TYPE`, its help text, then `in PROG AGENT --help` lines)."""
    suggestions: dict[str, list[str]] = {}
    current = None
    for line in lines:
        if not set(line) - set("─-"):  # the block ends at the next rule
            break
        if line.startswith("--"):
            current = line.split()[0]
            suggestions.setdefault(current, [])
        elif current is not None and (where := re.fullmatch(r"in \S+ (\S+) --help", line)):
            suggestions[current].append(where.group(1))
    return suggestions


def tyro_cli(cls: Any, argv: list[str], prog: str, **kwargs) -> Any:
    """`tyro.cli(cls, args=argv, prog=prog, **kwargs)` whose parse errors are one line.

    Raises:
        RlkitError: tyro could not parse argv (its box condensed by `one_line_parse_error`).
        SystemExit: with status 0 after `--help`.
    """
    import tyro

    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            return tyro.cli(cls, args=argv, prog=prog, **kwargs)
    except SystemExit as exit_:
        if exit_.code:
            raise RlkitError(one_line_parse_error(captured.getvalue(), prog)) from None
        raise


INTERRUPTED = 130  # a CLI's exit status after Ctrl-C (128 + SIGINT)
TERMINATED = 143  # after SIGTERM (128 + SIGTERM), which the CLIs handle like Ctrl-C
DIVERGED = 3  # a run stopped because its parameters stopped being finite
FAILED = 1  # the machine refused (a read-only or full disk, ...), not the input


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C's KeyboardInterrupt would be, so that every cleanup path
    (checkpoint in flight finished, TensorBoard flushed, writers closed) serves both."""


_pending_interrupt: type[KeyboardInterrupt] | None = None


def raise_on_signal(signum, frame) -> None:
    """The CLIs' SIGINT and SIGTERM handler: remember the interruption, then raise
    `KeyboardInterrupt` (SIGINT) or `Terminated` (SIGTERM) in the main thread.

    Python drops an exception raised inside a garbage-collector callback or a `__del__` (it
    prints "Exception ignored in: ..."): a Ctrl-C that lands in JAX's `_xla_gc_callback` while a
    program compiles was lost and the run went on to its end. The remembered interruption is
    raised again by `raise_pending_interrupt`, which the training loops call between chunks.
    """
    import signal

    global _pending_interrupt
    _pending_interrupt = Terminated if signum == signal.SIGTERM else KeyboardInterrupt
    raise _pending_interrupt


def raise_pending_interrupt() -> None:
    """Raise a Ctrl-C or SIGTERM that arrived but was swallowed (see `raise_on_signal`); a
    no-op otherwise. Called by the training loops between chunks."""
    global _pending_interrupt
    if _pending_interrupt is not None:
        interruption, _pending_interrupt = _pending_interrupt, None
        raise interruption


def clear_pending_interrupt() -> None:
    """Forget the remembered interruption: called where one is handled."""
    global _pending_interrupt
    _pending_interrupt = None


def handle_sigterm_like_ctrl_c() -> None:
    """Install `raise_on_signal` for SIGINT and SIGTERM (CLIs call this at start; only the main
    thread can)."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, raise_on_signal)
        signal.signal(signal.SIGINT, raise_on_signal)


def interrupted_status(error: KeyboardInterrupt) -> int:
    """The exit status after `error`: `TERMINATED` for SIGTERM, else `INTERRUPTED`."""
    return TERMINATED if isinstance(error, Terminated) else INTERRUPTED


def describe_os_error(error: OSError) -> str:
    """One line for a failed write or read: the file and the system's reason."""
    where = f"{error.filename}: " if error.filename else ""
    return (f"{where}{error.strerror or error} (a read-only or full disk?); free space or "
            "choose a writable directory")


def run_guarded(run: Callable[[], Any], resumable: bool = True) -> tuple[Any, int | None]:
    """Run a CLI's work (`run()`: parse, then train) with SIGTERM handled like Ctrl-C.

    Every failure becomes one line on stderr and an exit status instead of a traceback: bad
    input (`RlkitError`) 2, a refused write (`OSError`) `FAILED`, Ctrl-C `INTERRUPTED`, SIGTERM
    `TERMINATED` (naming the run directory to `--resume` when the interruption carries
    `run_dir`), and tyro's own exit (`--help`) its code. A CLI whose runs keep no checkpoint
    (`resumable=False`: pedel, ftpedel) says so instead of pointing to `--resume`.

    Returns:
        (result, None) when `run` returned, or (None, the exit status) when it failed.
    """
    import signal
    import threading

    previous = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
    clear_pending_interrupt()
    try:
        handle_sigterm_like_ctrl_c()
        return run(), None
    except SystemExit as exit_:  # tyro printed --help
        return None, exit_.code if isinstance(exit_.code, int) else 0
    except RlkitError as error:
        print(f"error: {error}", file=sys.stderr)
        return None, 2
    except OSError as error:
        print(f"error: {describe_os_error(error)}", file=sys.stderr)
        return None, FAILED
    except KeyboardInterrupt as error:
        clear_pending_interrupt()
        where = getattr(error, "run_dir", None)
        if not resumable:
            print("interrupted: this command keeps no checkpoint; run it again", file=sys.stderr)
        elif where is None:
            print("interrupted before a run directory held a checkpoint; run the command again",
                  file=sys.stderr)
        else:
            print(f"interrupted: resume with python -m rlkit.train --resume {where} "
                  "(the last checkpoint is kept)", file=sys.stderr)
        return None, interrupted_status(error)
    finally:
        if threading.current_thread() is threading.main_thread():
            for number, handler in previous.items():
                signal.signal(number, handler)


def run_cli(main: Callable[[], int]) -> NoReturn:
    """Run a CLI's `main` and leave with its status (`exit_cli`).

    Output piped into a reader that stops early (`python -m rlkit.train --help | head`) closes
    the pipe: the rest of the output is dropped quietly instead of ending in a traceback.
    """
    try:
        code = main()
    except BrokenPipeError:
        # Python's documented recipe: point stdout at devnull so the exit flush cannot fail.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    exit_cli(code)


def exit_cli(code: int) -> NoReturn:
    """Leave a command-line entry point with status `code`.

    After Ctrl-C (or SIGTERM) the interrupted computation may still be running on XLA's own
    threads, and a normal interpreter teardown can then abort ("terminate called without an
    active exception", seen with jax 0.11). The CLIs close their writers and checkpoints before
    returning `INTERRUPTED` or `TERMINATED`, so this leaves at once in those cases.
    """
    if code in (INTERRUPTED, TERMINATED):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
