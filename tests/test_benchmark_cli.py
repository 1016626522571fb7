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
    assert f"see python {BENCHMARKS / script} --help" in lines[0]  # as the user ran it


def test_outputs_are_checked_right_after_parsing(tmp_path, capsys):
    parser = ArgumentParser(prog="bench.py")
    parser.add_output("--json")
    parser.add_output("--plot", figure=True)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for argv, needle in ((["--json", str(blocker / "out.json")], "cannot make its folder"),
                         (["--json", str(tmp_path)], "is a folder; pass a file name"),
                         (["--plot", str(tmp_path / "p.xyz")], "matplotlib cannot write .xyz")):
        with pytest.raises(SystemExit) as stop:
            parser.parse_args(argv)
        assert stop.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"bench.py: error: {argv[0]} ") and \
            needle in err[0], err
    # A missing folder is made, so the write at the end finds it.
    args = parser.parse_args(["--json", str(tmp_path / "new" / "out.json")])
    assert args.json == tmp_path / "new" / "out.json" and (tmp_path / "new").is_dir()


@pytest.mark.parametrize("script, flag", [("exploration.py", "--json"),
                                          ("glow_lock.py", "--plot"),
                                          ("preference_text.py", "--json")])
def test_an_output_that_cannot_be_written_stops_before_any_work(script, flag, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), flag,
                           str(blocker / "out.png")], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{flag} {blocker / 'out.png'}: cannot make its folder" in lines[0]
    assert done.stdout == ""  # no study started
