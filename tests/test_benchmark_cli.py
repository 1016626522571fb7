"""Every benchmark script answers a bad argument with one line and exit status 2.

argparse's own `error` prints the whole usage block above the message; the scripts build their
parsers from `rlkit.errors.ArgumentParser`, whose errors are one line like the rest of rlkit's
CLIs. Each script runs in a subprocess, as a user runs it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rlkit.errors import ArgumentParser

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(path.name for path in BENCHMARKS.glob("*.py")
                 if "ArgumentParser(" in path.read_text())


def test_every_argparse_script_uses_the_one_line_parser():
    plain = [path.name for path in BENCHMARKS.glob("*.py")
             if "argparse.ArgumentParser(" in path.read_text()]
    assert not plain, f"build these parsers from rlkit.errors.ArgumentParser: {plain}"
    assert len(SCRIPTS) >= 10


def test_error_is_one_line_naming_the_problem_and_help(capsys):
    parser = ArgumentParser(prog="bench.py")
    parser.add_argument("--seeds", type=int, default=1)
    with pytest.raises(SystemExit) as stop:
        parser.parse_args(["--seeds", "many"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("bench.py: error: argument --seeds: invalid int value: 'many'")
    assert err.rstrip().endswith("see bench.py --help")


@pytest.mark.parametrize("script", SCRIPTS)
def test_unknown_flag_is_one_line_and_exit_2(script):
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), "--no-such-flag"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "unrecognized arguments: --no-such-flag" in lines[0]
    assert f"see {script} --help" in lines[0]
