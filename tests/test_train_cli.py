"""The CLI end to end at tiny budgets: run directory, determinism, resume, clean errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlkit.train import main

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args, cwd=ROOT):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "rlkit.train", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("args, needle", [
    (["nosuchagent", "--env", "cartpole"], "unknown agent 'nosuchagent'"),
    (["ppo", "--env", "cartpol"], "Did you mean 'cartpole'"),
    (["ppo", "--env", "cartpole", "--agent.num-minibatches", "3"],
     "--agent.num-minibatches: 3 must divide --agent.num-envs * --agent.rollout-length = 512"),
    (["ppo", "--env", "cartpole", "--agent.learning-rate", "-0.1"],
     "--agent.learning-rate: must be a finite number in (0, inf), got -0.1"),
    (["ppo", "--env", "cartpole", "--seeds", "0"], "--seeds"),
    (["ppo"], "--env is required"),
    (["ppo", "--env", "cartpole", "--resume", "/nonexistent/run"], "--resume"),
])
def test_bad_input_gives_one_clear_line_and_exit_2(args, needle, capsys):
    # In process (a subprocess per case spent 10-17 s importing); the subprocess test below
    # checks that the process itself exits cleanly.
    assert main(list(args)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], lines


def test_bad_input_exits_2_without_a_traceback_from_the_command_line():
    result = _cli("ppo", "--env", "cartpole", "--agent.num-minibatches", "3")
    assert result.returncode == 2, result.stderr
    assert "--agent.num-minibatches" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_procgen_extra_is_a_clear_error(capsys):
    try:
        import procgen  # noqa: F401

        pytest.skip("procgen is installed here")
    except ImportError:
        pass
    # In process (7 s of a second interpreter saved): the exit code and the absence of a
    # traceback from the command line are the test above's.
    assert main(["ppo", "--env", "procgen:coinrun"]) == 2
    err = capsys.readouterr().err
    assert "pip install -e '.[procgen]'" in err
    assert "Traceback" not in err


def test_help_lists_every_agent_and_env(capsys):
    # In process (the help text is not about the process; two interpreters cost 10 s): the
    # subprocess --help of test_help_piped_into_a_reader_that_stops_early_ends_quietly checks
    # the process exit.
    assert main(["--help"]) == 0
    stdout = capsys.readouterr().out
    for name in ("ppo", "dqn", "cartpole", "chain", "combination-lock", "deepsea", "gym:ID",
                 "procgen:ID"):
        assert name in stdout
    assert main(["ppo", "--env", "chain", "--help"]) == 0
    agent_help = capsys.readouterr().out
    assert "--agent.learning-rate" in agent_help
    assert "--env-config.length" in agent_help
    # Run-level flags carry their help text (the RunOptions docstrings), --total-steps its unit.
    text = " ".join(agent_help.replace("│", " ").split())
    for flag in ("--seeds", "--num-logs", "--checkpoint-every", "--overwrite", "--resume"):
        assert flag in text, flag
    assert "Independent seeds trained side by side" in text
    # An agent's help without --env: the agent's flags, CartPole's env flags, and a note.
    assert main(["dqn", "--help"]) == 0
    agent_help = capsys.readouterr().out
    assert agent_help.startswith("(no --env given: the --env-config flags below are CartPole's")
    assert "--agent.intrinsic" in agent_help
    assert "gradient updates for offline agents" in text


def _train(tmp_path: Path, name: str, *extra: str) -> Path:
    run_dir = tmp_path / name
    code = main(["ppo", "--env", "cartpole", "--total-steps", "4096", "--seeds", "2",
                 "--num-logs", "4", "--no-progress", "--run-dir", str(run_dir),
                 "--agent.num-envs", "4", "--agent.rollout-length", "64",
                 "--eval-episodes", "2", *extra])
    assert code == 0
    return run_dir


@pytest.fixture(scope="module")
def first(tmp_path_factory) -> Path:
    """One finished run of `_train`, read-only for the tests that compare runs with it."""
    return _train(tmp_path_factory.mktemp("first"), "a")


def test_run_directory_determinism_and_exact_resume(first, tmp_path, capsys):
    for name in ("config.yaml", "metrics.csv", "summary.json", "curves.png"):
        assert (first / name).exists(), name
    assert list(first.glob("events.*"))
    assert (first / "checkpoints").is_dir()
    summary = json.loads((first / "summary.json").read_text())
    for key in ("agent", "env", "seeds", "env_steps", "wall_seconds", "steps_per_second",
                "final_return", "per_seed"):
        assert key in summary
    assert summary["seeds"] == 2 and len(summary["per_seed"]) == 2
    assert summary["env_steps"] == 4096
    metrics = (first / "metrics.csv").read_text().splitlines()
    assert len(metrics) == 1 + 4 * 2  # header + chunks x seeds

    # Same config and seed: identical metrics.
    second = _train(tmp_path, "b")
    assert (second / "metrics.csv").read_text() == (first / "metrics.csv").read_text()

    # Interrupted after one chunk, then resumed: same final numbers as uninterrupted.
    interrupted = _train(tmp_path, "c", "--stop-after-chunks", "1")
    assert len((interrupted / "metrics.csv").read_text().splitlines()) == 1 + 2
    capsys.readouterr()
    assert main(["ppo", "--resume", str(interrupted), "--no-progress"]) == 0
    assert (interrupted / "metrics.csv").read_text() == (first / "metrics.csv").read_text()
    resumed = json.loads((interrupted / "summary.json").read_text())
    assert resumed["per_seed"] == summary["per_seed"]
    # The table says its timings are the resumed invocation's, not the run's.
    table = " ".join(capsys.readouterr().out.replace("│", " ").split())
    assert "wall seconds (since the resume at chunk 1)" in table, table


def test_config_file_reruns_a_run(first, tmp_path):
    rerun = tmp_path / "rerun"
    assert main(["--config", str(first / "config.yaml"), "--run-dir", str(rerun),
                 "--no-progress"]) == 0
    assert (rerun / "metrics.csv").read_text() == (first / "metrics.csv").read_text()


def test_gpu_determinism_flag_is_requested_unless_the_user_chose(monkeypatch):
    import rlkit

    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
    assert rlkit.request_gpu_determinism(True)
    assert os.environ["XLA_FLAGS"].split() == [
        "--xla_force_host_platform_device_count=1", "--xla_gpu_deterministic_ops=true"]
    monkeypatch.setenv("XLA_FLAGS", "--xla_gpu_deterministic_ops=false")
    assert not rlkit.request_gpu_determinism(True)  # the user's value wins
    assert os.environ["XLA_FLAGS"] == "--xla_gpu_deterministic_ops=false"
    monkeypatch.delenv("XLA_FLAGS")
    assert not rlkit.request_gpu_determinism(False)
    assert "XLA_FLAGS" not in os.environ


def test_deterministic_choice_is_read_before_jax_starts(tmp_path):
    from rlkit.train import _deterministic_requested, parse_experiment

    assert _deterministic_requested(["ppo", "--env", "chain"])
    assert not _deterministic_requested(["ppo", "--env", "chain", "--no-deterministic"])
    experiment = parse_experiment(["ppo", "--env", "chain", "--no-deterministic"]).experiment
    assert experiment.run.deterministic is False  # the same flag reaches config.yaml
    (tmp_path / "config.yaml").write_text("agent: ppo\nenv: chain\nrun:\n  deterministic: false\n")
    assert not _deterministic_requested(["--resume", str(tmp_path)])
    assert not _deterministic_requested(["--config", str(tmp_path / "config.yaml")])
    assert _deterministic_requested(["--config", str(tmp_path / "config.yaml"), "--deterministic"])
    (tmp_path / "config.yaml").write_text("agent: ppo\nenv: chain\n")  # written before the option
    assert _deterministic_requested(["--resume", str(tmp_path)])


def test_help_piped_into_a_reader_that_stops_early_ends_quietly():
    """`python -m rlkit.train --help | head -1`: a closed pipe is no traceback, exit 0.

    The reader is gone before the CLI writes (its end of the pipe is closed first), so every
    write fails with EPIPE, deterministically.
    """
    import os
    import subprocess
    import sys

    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run([sys.executable, "-m", "rlkit.train", "--help"],
                                stdout=write_end, stderr=subprocess.PIPE, timeout=60)
    finally:
        os.close(write_end)
    stderr = result.stderr.decode()
    assert result.returncode == 0, stderr
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr


def test_the_budget_is_one_flag_for_the_run_and_the_agent(tmp_path, capsys):
    from rlkit.train import parse_experiment

    # --total-steps sets the agent's copy (its schedules) too; without it both are the default.
    experiment = parse_experiment(["ppo", "--env", "chain", "--total-steps", "8192"]).experiment
    assert experiment.run.total_steps == experiment.agent_config.total_steps == 8192
    experiment = parse_experiment(["dqn", "--env", "chain"]).experiment
    assert experiment.run.total_steps == experiment.agent_config.total_steps == 100_000
    # --agent.total-steps is no flag (it used to lose silently to --total-steps).
    for flag in (["--agent.total-steps", "5000"], ["--agent.total_steps=5000"]):
        assert main(["ppo", "--env", "chain", *flag, "--total-steps", "9000"]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert lines == ["error: --agent.total-steps: is not a flag: --total-steps sets it for "
                         "the run and the agent alike; pass --total-steps"], lines
    # A config file whose two copies disagree is refused, naming both keys.
    config = tmp_path / "config.yaml"
    config.write_text("agent: ppo\nenv: chain\nrun: {total_steps: 8192}\n"
                      "agent_config: {total_steps: 4096}\n")
    assert main(["--config", str(config), "--run-dir", str(tmp_path / "r")]) == 2
    line = capsys.readouterr().err.strip()
    assert line == (f"error: {config}: agent_config.total_steps: is 4096 but run.total_steps is "
                    "8192; they are one setting (--total-steps): set run.total_steps and delete "
                    "agent_config.total_steps"), line
    # Only run.total_steps in the file: the agent's copy follows it.
    config.write_text("agent: ppo\nenv: chain\nrun: {total_steps: 8192}\n")
    experiment = parse_experiment(["--config", str(config)]).experiment
    assert experiment.agent_config.total_steps == 8192
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("args, line", [
    (["ppo", "--env", "chain", "--total-step", "5"],
     "unrecognized options: --total-step (did you mean --total-steps?)"),
    (["ppo", "--env", "chain", "--total-steps", "100"],
     "--total-steps: 100 is less than one rollout (512 steps)"),
    (["ppo", "--env", "chain", "--agent.gamma", "2"],
     "--agent.gamma: must be a finite number in [0, 1], got 2.0."),
    (["ppo", "--env", "chain", "--agent.hidden-sizes", "0"],
     "--agent.hidden-sizes: must be one or more positive ints (layer widths), got (0,)."),
    (["ppo", "--env", "chain", "--env-config.length", "1"],
     "--env-config.length: must be >= 2, got 1"),
    (["dqn", "--env", "chain", "--agent.epsilon-start", "inf"],
     "--agent.epsilon-start: must be a finite number in [0, 1], got inf."),
    (["ppo", "--env", "chain", "--total-steps", "abc"],
     "error parsing --total-steps: 'abc' is not a valid value (expected None or INT); see"),
])
def test_value_errors_name_the_flag_the_user_typed(args, line, capsys):
    assert main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {line}"), lines


@pytest.mark.parametrize("section, values, line", [
    ("run", {"seeds": 0}, "run.seeds: must be at least 1, got 0"),
    ("agent_config", {"learning_rate": -1.0},
     "agent_config.learning_rate: must be a finite number in (0, inf), got -1.0"),
    ("agent_config", {"num_minibatches": 3},
     "agent_config.num_minibatches: 3 must divide agent_config.num_envs * "
     "agent_config.rollout_length = 512"),
    ("env_config", {"length": 1}, "env_config.length: must be >= 2, got 1"),
])
def test_value_errors_in_a_config_file_name_the_key_path(section, values, line, tmp_path,
                                                         capsys):
    import yaml

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"agent": "ppo", "env": "chain", section: values}))
    assert main(["--config", str(config)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"error: {config}: {line}"] or (
        len(lines) == 1 and lines[0].startswith(f"error: {config}: {line}")), lines


def test_tyro_errors_are_one_line_with_box_drawing_or_plain_dashes():
    from rlkit.errors import one_line_parse_error

    boxed = ("╭─ Unrecognized options ──────────────╮\n"
             "│ Unrecognized options: --total-step, │\n"
             "│ 5                                   │\n"
             "│ ─────────────────────────────────── │\n"
             "│ Perhaps you meant:                  │\n"
             "│     --total-steps INT               │\n"
             "│ ─────────────────────────────────── │\n"
             "│ For full helptext, run p --help     │\n"
             "╰─────────────────────────────────────╯\n")
    plain = (" Unrecognized options                  \n"
             " ------------------------------------- \n"
             "  Unrecognized options: --total-step,  \n"
             "  5                                    \n"
             "  ------------------------------------ \n"
             "  Perhaps you meant:                   \n"
             "      --total-steps INT                \n"
             "  ------------------------------------ \n"
             "  For full helptext, run p --help      \n")
    expected = ("unrecognized options: --total-step (did you mean --total-steps?); "
                "see p --help")
    assert one_line_parse_error(boxed, "p") == expected
    assert one_line_parse_error(plain, "p") == expected


def test_a_flag_of_another_agent_is_named_as_such():
    """tyro's notes about subcommands ("applied to", "ordering can matter") are dropped, and a
    flag that exists for another agent says so instead of suggesting a near name."""
    from rlkit.errors import one_line_parse_error

    box = ("╭─ Unrecognized options ─────────────────────────────────────╮\n"
           "│ Unrecognized or misplaced options:                         │\n"
           "│   --agent.extrinsic-coef (applied to python -m x dqn)      │\n"
           "│   1.0 (applied to python -m x dqn)                         │\n"
           "│                                                            │\n"
           "│ Arguments are applied to the directly preceding            │\n"
           "│ subcommand, so ordering can matter.                        │\n"
           "│ ────────────────────────────────────────────────────────── │\n"
           "│ Perhaps you meant:                                         │\n"
           "│     --agent.intrinsic-coef FLOAT                           │\n"
           "│         Weight of the normalised intrinsic reward.         │\n"
           "│         in python dqn --help                               │\n"
           "│     --agent.extrinsic-coef FLOAT                           │\n"
           "│         Weight of the extrinsic advantage. (default: 2.0)  │\n"
           "│         in python ppo --help                               │\n"
           "│ ────────────────────────────────────────────────────────── │\n"
           "│ For full helptext, run python -m x --help                  │\n"
           "╰────────────────────────────────────────────────────────────╯\n")
    assert one_line_parse_error(box, "p") == (
        "unrecognized or misplaced options: --agent.extrinsic-coef "
        "(--agent.extrinsic-coef is a flag of ppo, not of this agent); see p --help")


@pytest.mark.parametrize("args, line", [
    (["ppo", "--env", "chain", "--run-dir", ""],
     "--run-dir: is empty; pass a directory, or drop it for runs/AGENT-ENV-TIMESTAMP"),
    (["ppo", "--env", "gymnax:NoSuch-v1"], "--env: unknown gymnax env id 'NoSuch-v1'. Known: "),
    (["--config", "{tmp}/agent.yaml"], "{tmp}/agent.yaml: unknown agent 'nosuch'. Known: "),
])
def test_fresh_malformed_inputs_are_one_line_naming_the_flag_or_file(args, line, tmp_path,
                                                                     capsys):
    (tmp_path / "agent.yaml").write_text("agent: nosuch\nenv: chain\n")
    assert main([arg.format(tmp=tmp_path) for arg in args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {line.format(tmp=tmp_path)}"), lines
