"""Nothing a user does loses or mixes a run (issue 11): run-directory safety, resume edge cases,
divergence, SIGTERM, damaged checkpoints, one-line errors, budgets, plots and load_policy.

Every run here is the same tiny PPO program as tests/test_train_cli.py (compiled once through the
persistent cache of conftest.py) and runs in process.
"""

import json
import math
import os
import signal
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import rlkit
from rlkit import runner
from rlkit.train import chunk_length, main, plan_budget

TINY = ["ppo", "--env", "cartpole", "--total-steps", "4096", "--seeds", "2", "--num-logs", "4",
        "--no-progress", "--agent.num-envs", "4", "--agent.rollout-length", "64",
        "--eval-episodes", "2"]


def _one_error_line(capfd) -> str:
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def _files(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished 4-chunk run (read-only for the tests: copy it before changing it)."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    assert main([*TINY, "--run-dir", str(run_dir)]) == 0
    return run_dir


@pytest.fixture(scope="module")
def stopped_once(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("stopped") / "run"
    assert main([*TINY, "--run-dir", str(run_dir), "--stop-after-chunks", "2"]) == 0
    return run_dir


@pytest.fixture
def stopped(stopped_once, tmp_path) -> Path:
    """A run stopped after 2 of its 4 chunks (checkpoints 0 and 1), a copy for each test."""
    import shutil

    return Path(shutil.copytree(stopped_once, tmp_path / "stopped"))


def test_a_new_run_never_writes_into_a_run_and_overwrite_replaces_it(finished, tmp_path,
                                                                     capfd):
    import shutil

    run_dir = tmp_path / "copy"
    shutil.copytree(finished, run_dir)
    before = _files(run_dir)
    assert main([*TINY, "--run-dir", str(run_dir), "--seed", "7"]) == 2
    line = _one_error_line(capfd)
    assert "already holds a run" in line and "--overwrite" in line
    assert _files(run_dir) == before  # nothing touched

    # What a preference run writes besides (rlkit.train_preference) goes too.
    (run_dir / "model").mkdir()
    (run_dir / "model" / "model.safetensors").write_bytes(b"old")
    (run_dir / "pairs.jsonl").write_text("{}\n")
    assert main([*TINY, "--run-dir", str(run_dir), "--seed", "7", "--overwrite",
                 "--stop-after-chunks", "1"]) == 0
    assert not (run_dir / "model").exists() and not (run_dir / "pairs.jsonl").exists()
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["run"]["seed"] == 7
    # The old run's checkpoints are gone: only the new run's chunk 0 is left.
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit()) == ["0"]
    assert len((run_dir / "metrics.csv").read_text().splitlines()) == 1 + 2


def test_a_run_from_another_runs_config_gets_a_new_directory(finished, tmp_path, monkeypatch):
    before = _files(finished)
    monkeypatch.chdir(tmp_path)
    assert main(["--config", str(finished / "config.yaml"), "--no-progress",
                 "--stop-after-chunks", "1"]) == 0
    assert _files(finished) == before
    (new,) = (tmp_path / "runs").iterdir()
    assert new.name.startswith("ppo-cartpole-") and (new / "metrics.csv").exists()


def test_resume_refuses_config_edits_that_change_the_run_and_keeps_checkpoints(stopped, capfd):
    config = stopped / "config.yaml"
    original = config.read_text()
    checkpoints = sorted(p.name for p in (stopped / "checkpoints").iterdir())
    for path, value in (("run.seeds", 4), ("run.total_steps", 8192),
                        ("agent_config.rollout_length", 32)):
        data = yaml.safe_load(original)
        section, name = path.split(".")
        data[section][name] = value
        config.write_text(yaml.safe_dump(data, sort_keys=False))
        assert main(["--resume", str(stopped), "--no-progress"]) == 2
        line = _one_error_line(capfd)
        assert path in line and "saved configuration" in line, line
        assert sorted(p.name for p in (stopped / "checkpoints").iterdir()) == checkpoints
    config.write_text(original)
    # Flags that would change the run are refused the same way; --config cannot join --resume.
    assert main(["--resume", str(stopped), "--seeds", "3"]) == 2
    assert "run.seeds (--seeds)" in _one_error_line(capfd)
    assert main(["--resume", str(stopped), "--total-steps", "8192"]) == 2  # the run flag, first
    assert "run.total_steps (--total-steps) would change from 4096 to 8192" in _one_error_line(
        capfd)
    assert main(["--resume", str(stopped), "--config", str(config)]) == 2
    assert "--config: cannot be combined with --resume" in _one_error_line(capfd)

    # The edit undone: the run continues from chunk 2, not from zero.
    assert main(["--resume", str(stopped), "--no-progress"]) == 0
    summary = json.loads((stopped / "summary.json").read_text())
    assert summary["resumed_from_chunk"] == 2 and summary["last_chunk"] == 3


def test_resume_edge_cases_are_refused_or_a_no_op(finished, stopped, tmp_path, capfd):
    import shutil

    # A finished run: nothing to do, nothing written.
    done = tmp_path / "done"
    shutil.copytree(finished, done)
    before = _files(done)
    assert main(["--resume", str(done), "--no-progress"]) == 0
    assert "is finished" in capfd.readouterr().err
    assert _files(done) == before
    # Finished but killed before summary.json: written from the last checkpoint, no throughput.
    summary = json.loads((done / "summary.json").read_text())
    (done / "summary.json").unlink()
    assert main(["--resume", str(done), "--no-progress"]) == 0
    assert "writing its summary from the last checkpoint" in capfd.readouterr().err
    rewritten = json.loads((done / "summary.json").read_text())
    assert rewritten["per_seed"] == summary["per_seed"] and rewritten["last_chunk"] == 3
    assert rewritten["steps_per_second"] is None and not rewritten["stopped_early"]
    assert (done / "metrics.csv").read_bytes() == before["metrics.csv"]

    # metrics.csv deleted: resuming would silently drop chunks 0 and 1.
    lost = tmp_path / "lost"
    shutil.copytree(stopped, lost)
    (lost / "metrics.csv").unlink()
    assert main(["--resume", str(lost), "--no-progress"]) == 2
    assert "lacks the rows of chunk(s) [0, 1]" in _one_error_line(capfd)

    # metrics.csv cut short (its last row loses its last fields): chunk 1 is incomplete.
    cut = tmp_path / "cut"
    shutil.copytree(stopped, cut)
    (cut / "metrics.csv").write_bytes((cut / "metrics.csv").read_bytes()[:-20])
    assert main(["--resume", str(cut), "--no-progress"]) == 2
    assert "lacks the rows of chunk(s) [1]" in _one_error_line(capfd)

    # Logged chunks but no checkpoint: refused, metrics.csv kept as it was.
    bare = tmp_path / "bare"
    shutil.copytree(stopped, bare)
    metrics = (bare / "metrics.csv").read_bytes()
    for step in ("0", "1"):
        shutil.rmtree(bare / "checkpoints" / step)
    assert main(["--resume", str(bare), "--no-progress"]) == 2
    assert "no checkpoint to continue from" in _one_error_line(capfd)
    assert (bare / "metrics.csv").read_bytes() == metrics


def test_resumed_metrics_have_one_line_ending_and_equal_the_uninterrupted_run(finished, stopped):
    assert main(["--resume", str(stopped), "--no-progress"]) == 0
    data = (stopped / "metrics.csv").read_bytes()
    assert b"\r" not in data
    assert data == (finished / "metrics.csv").read_bytes()


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_a_damaged_checkpoint_is_passed_over_with_one_warning(stopped, capfd):
    for path in (stopped / "checkpoints" / "1").rglob("*"):
        if path.is_file() and path.parent.name == "d":
            path.write_bytes(b"")
    assert main(["--resume", str(stopped), "--no-progress"]) == 0
    err = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("warning: checkpoint 1 ") and (
        "resuming from an older checkpoint" in err[0]), err
    assert json.loads((stopped / "summary.json").read_text())["resumed_from_chunk"] == 1
    assert any(p.name.startswith("unreadable-1-") for p in (stopped / "checkpoints").iterdir())


def _event_steps(run_dir: Path, tag: str) -> list[int]:
    """The steps at which TensorBoard's event file holds scalar `tag` (TFRecord framing)."""
    from tensorboardX.proto import event_pb2

    (path,) = run_dir.glob("events.out.tfevents.*")
    data, steps, offset = path.read_bytes(), [], 0
    while offset < len(data):
        (length,) = struct.unpack("<Q", data[offset:offset + 8])
        event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
        offset += 12 + length + 4
        steps += [event.step for value in event.summary.value if value.tag == tag]
    return steps


def test_sigterm_is_handled_like_ctrl_c(tmp_path, monkeypatch, capfd):
    log_chunk = runner._log_tensorboard

    def log_then_terminate(writer, rows, unit):
        log_chunk(writer, rows, unit)
        if rows[0]["chunk"] == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(runner, "_log_tensorboard", log_then_terminate)
    run_dir = tmp_path / "term"
    assert main([*TINY, "--run-dir", str(run_dir)]) == 143
    assert "interrupted" in _one_error_line(capfd)
    assert _event_steps(run_dir, "eval_return") == [1024, 2048]  # the last chunk is flushed
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # main put the handler back


def test_a_ctrl_c_python_swallows_still_stops_the_run(tmp_path, monkeypatch, capfd):
    """A Ctrl-C whose KeyboardInterrupt is raised inside a `__del__` or a garbage-collector
    callback (JAX's `_xla_gc_callback` while it compiles) is dropped by Python ("Exception
    ignored in"); the handler remembers it and the loop raises it before the next chunk."""
    log_chunk = runner._log_tensorboard
    swallowed = []
    monkeypatch.setattr(sys, "unraisablehook", lambda info: swallowed.append(info.exc_type))

    class Collected:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(10_000):  # the handler runs here, inside __del__
                pass

    def log_then_swallowed_ctrl_c(writer, rows, unit):
        log_chunk(writer, rows, unit)
        if rows[0]["chunk"] == 1:
            Collected()  # dropped at once: __del__ runs, its KeyboardInterrupt is ignored

    monkeypatch.setattr(runner, "_log_tensorboard", log_then_swallowed_ctrl_c)
    run_dir = tmp_path / "int"
    assert main([*TINY, "--run-dir", str(run_dir)]) == 130
    assert swallowed == [KeyboardInterrupt]  # Python did drop it
    assert _one_error_line(capfd).startswith("interrupted: resume with")
    assert _event_steps(run_dir, "eval_return") == [1024, 2048]  # no chunk after it
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back


@pytest.mark.parametrize("run_dir, resumable, message", [
    ("runs/x", True, "interrupted: resume with python -m rlkit.train --resume runs/x"),
    (None, True, "interrupted before a run directory held a checkpoint; run the command again"),
    ("runs/x", False, "interrupted: this command keeps no checkpoint; run it again"),
])
def test_an_interruption_names_what_can_be_resumed(run_dir, resumable, message, capsys):
    from rlkit.errors import INTERRUPTED, run_guarded

    def interrupted():
        error = KeyboardInterrupt()
        if run_dir is not None:
            error.run_dir = run_dir
        raise error

    assert run_guarded(interrupted, resumable=resumable) == (None, INTERRUPTED)
    assert capsys.readouterr().err.strip().splitlines() == [message
        + (" (the last checkpoint is kept)" if run_dir and resumable else "")]


def test_divergence_stops_with_one_line_and_valid_json(tmp_path, capfd):
    run_dir = tmp_path / "nan"
    code = main([*TINY, "--run-dir", str(run_dir), "--agent.learning-rate", "1e30",
                 "--agent.max-grad-norm", "1e30"])
    assert code == 3
    line = _one_error_line(capfd)
    assert line.startswith("error: diverged") and "chunk 0" in line, line

    def no_nan(text):
        raise AssertionError(f"bare {text} in summary.json")

    summary = json.loads((run_dir / "summary.json").read_text(), parse_constant=no_nan)
    assert summary["diverged"]["chunk"] == 0 and summary["diverged"]["seeds"] == [0, 1]
    assert summary["last_chunk"] == 0 and summary["diverged"]["last_checkpoint"] is None
    # No figure from evaluating non-finite parameters: null per seed and overall, NaN in the CSV.
    assert summary["per_seed"] == [None, None] and summary["final_return"] is None
    assert [row["eval_return"] for row in runner.MetricsLog(run_dir / "metrics.csv").read()
            ] == ["nan", "nan"]
    # The non-finite state was never checkpointed.
    assert not [p for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit()]


def test_json_safe_turns_non_finite_values_into_null():
    data = runner.json_safe({"a": math.nan, "b": [1.0, np.float32(np.inf)], "c": np.int64(3)})
    assert json.dumps(data, allow_nan=False) == '{"a": null, "b": [1.0, null], "c": 3}'


def test_non_finite_seeds_names_the_seeds_whose_state_is_not_finite():
    state = {"w": np.array([[1.0, 2.0], [np.nan, 0.0], [3.0, 4.0]]),
             "b": np.array([0.0, 0.0, -np.inf]), "step": np.array([1, 2, 3])}
    assert runner.non_finite_seeds(state) == [1, 2]
    assert runner.non_finite_seeds({"step": np.array([1, 2])}) == []
    # An infinite loss diverges; a NaN one is a replay agent's iteration without an update.
    finite = {"w": np.zeros((3, 2))}
    metrics = {"td_loss": np.array([[np.nan, 1.0], [np.inf, 1.0], [1.0, 1.0]]),
               "q_mean": np.full((3, 2), np.inf)}
    assert runner.non_finite_seeds(finite, metrics) == [1]


@pytest.mark.parametrize("args, needle", [
    (["--total-steps", str(10**30)], "more than the 2,147,483,647 the drivers count"),
    (["--stop-after-chunks", "0"], "--stop-after-chunks: must be at least 1"),
    (["--num-logs", str(10**9)], "--num-logs: must be between 1 and 100,000"),
    (["--sedes", "2"], "did you mean --seeds?"),
    (["--seeds", "two"], "--seeds"),
    (["--agent.learning-rate"], "--agent.learning-rate"),
    (["--seed", str(10**23)], "--seed: must be in [0, 2**32)"),
    (["--seed", "-1"], "--seed: must be in [0, 2**32)"),
    (["--stream-dataset"], "--stream-dataset: ppo learns online only"),
])
def test_bad_run_flags_give_one_line_and_exit_2(args, needle, tmp_path, capfd):
    assert main([*TINY, "--run-dir", str(tmp_path / "r"), *args]) == 2
    assert needle in _one_error_line(capfd)
    assert not (tmp_path / "r").exists()  # nothing written


def test_bad_paths_give_one_line_and_exit_2(finished, tmp_path, capfd):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert main([*TINY, "--run-dir", str(a_file)]) == 2
    assert "--run-dir: " in (line := _one_error_line(capfd)) and "is a file" in line
    assert main([*TINY, "--run-dir", "/sys/rlkit-test-run"]) == 2  # read-only, even for root
    assert "--run-dir: cannot write /sys/rlkit-test-run" in _one_error_line(capfd)
    assert main(["--config", str(finished), "--run-dir", str(tmp_path / "r")]) == 2
    assert "is a directory" in (line := _one_error_line(capfd)) and "config.yaml" in line
    config = yaml.safe_load((finished / "config.yaml").read_text())
    config["run"]["seeds"] = "two"
    (tmp_path / "typed.yaml").write_text(yaml.safe_dump(config))
    assert main(["--config", str(tmp_path / "typed.yaml"), "--run-dir", str(tmp_path / "r")]) == 2
    assert "run.seeds" in (line := _one_error_line(capfd)) and "'two'" in line, line


def test_a_full_disk_mid_run_gives_one_line_and_a_non_zero_exit(tmp_path, monkeypatch, capfd):
    import errno

    def full(self, rows):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))

    monkeypatch.setattr(runner.MetricsLog, "append", full)
    assert main([*TINY, "--run-dir", str(tmp_path / "full")]) == 1
    line = _one_error_line(capfd)
    assert "metrics.csv: No space left on device" in line, line


def test_budgets_are_cut_into_whole_chunks_and_said_once():
    # 4000 steps of 256-step iterations: 15 iterations; 5 chunks of 3 is the nearest to 4.
    budget = plan_budget(4000, 256, 4, "env steps", "ppo")
    assert budget.iterations_per_chunk == 3 and budget.num_chunks == 5
    assert budget.note.startswith("note: running 3,840 env steps per seed in 5 chunks")
    assert plan_budget(4096, 256, 4, "env steps", "ppo").note is None  # exact: nothing to say
    # One chunk of one iteration is said in the singular.
    assert plan_budget(300, 256, 4, "env steps", "ppo").note.startswith(
        "note: running 256 env steps per seed in 1 chunk (asked")
    assert "the same 1 iteration" in plan_budget(300, 256, 4, "env steps", "ppo").note
    # A huge budget is planned at once (no loop over its divisors): 2**30 has 16 chunks of 2**26.
    assert chunk_length(2**30, 20) == 2**26
    assert chunk_length(10**18 + 9, 20) >= 1


def test_confidence_intervals_are_the_bootstrap_everywhere_and_none_for_one_seed():
    from rlkit.plotting import curve
    from rlkit.stats import aggregate, bootstrap_ci

    assert aggregate(np.array([3.0]))["ci95"] is None
    rows = [{"env_steps": "10", "seed": str(s), "eval_return": str(v)}
            for s, v in enumerate([1.0, 2.0, 4.0])]
    x, mean, low, high = curve(rows, "eval_return")
    assert x.tolist() == [10] and mean.tolist() == [7 / 3]
    assert (low[0], high[0]) == bootstrap_ci([1.0, 2.0, 4.0]) == tuple(
        aggregate(np.array([1.0, 2.0, 4.0]))["ci95"])
    _, _, low, high = curve(rows[:1], "eval_return")
    assert np.isnan(low).all() and np.isnan(high).all()  # one seed: no band


def test_plot_tick_labels_do_not_overlap_at_hundreds_of_thousands_of_steps():
    from rlkit.plotting import draw_curves

    rows = [{"env_steps": str(step), "seed": str(s), "chunk": "0", "episodes": "1",
             "eval_return": str(step / 1e5 + s), "episode_return": str(s)}
            for step in range(20_480, 450_000, 20_480) for s in range(2)]
    fig = draw_curves(rows, "t")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        boxes = [label.get_window_extent(renderer) for label in ax.get_xticklabels()
                 if label.get_text() and label.get_visible()]
        assert len(boxes) >= 3
        for left, right in zip(boxes, boxes[1:], strict=False):
            assert left.x1 < right.x0, [label.get_text() for label in ax.get_xticklabels()]


def test_load_policy_acts_with_actions(finished):
    policy = rlkit.load_policy(finished)
    obs = np.zeros((3, 4), np.float32)
    obs[1, 2] = 0.2  # pole leaning right
    probs = policy.probabilities(obs)
    assert probs.shape == (3, 2) and np.allclose(probs.sum(axis=1), 1.0)
    actions = policy.act(obs)
    assert actions.dtype == np.int32 and actions.tolist() == probs.argmax(axis=1).tolist()
    assert policy.act(obs[1]) == int(probs[1].argmax())  # one observation: an int
    draws = policy.act(np.repeat(obs[1:2], 400, axis=0), deterministic=False)
    assert set(draws.tolist()) <= {0, 1}
    assert abs(draws.mean() - probs[1, 1]) < 0.1  # sampled in proportion to the policy
    with pytest.raises(rlkit.errors.RlkitError, match="obs: has shape"):
        policy.act(np.zeros(5))
    with pytest.raises(rlkit.errors.RlkitError, match="obs: holds NaN"):
        policy.act(np.full(4, np.nan, np.float32))
    assert repr(policy) == ("Policy(agent='ppo', env='cartpole', seed=0, obs_shape=(4,), "
                            "num_actions=2)")


def test_sigterm_during_a_save_is_held_until_the_checkpoint_is_written(tmp_path):
    import jax.numpy as jnp

    from rlkit.checkpoint import Checkpointer
    from rlkit.errors import Terminated, raise_on_signal

    checkpointer = Checkpointer(tmp_path / "checkpoints")
    save = checkpointer.manager.save

    def terminated_save(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # the job scheduler stops us as the write begins
        return save(*args, **kwargs)

    checkpointer.manager.save = terminated_save
    previous = signal.signal(signal.SIGTERM, raise_on_signal)
    try:
        with pytest.raises(Terminated):
            checkpointer.save(0, {"params": jnp.arange(3.0)})
        assert signal.getsignal(signal.SIGTERM) is raise_on_signal
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert checkpointer.latest_step() == 0
    checkpointer.close()


def test_a_full_disk_during_a_checkpoint_becomes_an_os_error(tmp_path):
    import errno

    import jax.numpy as jnp

    from rlkit.checkpoint import Checkpointer

    checkpointer = Checkpointer(tmp_path / "checkpoints")

    def full(*args, **kwargs):  # what tensorstore raises when the disk fills up mid-write
        raise ValueError("Error writing file: [OS error 28: No space left on device]")

    checkpointer.manager.save = full
    with pytest.raises(OSError) as caught:
        checkpointer.save(0, {"params": jnp.arange(3.0)})
    assert caught.value.errno == errno.ENOSPC
    assert caught.value.filename == str(tmp_path / "checkpoints")
    checkpointer.close()


def test_checkpoints_are_not_set_aside_when_none_fits_the_configuration(tmp_path):
    import jax.numpy as jnp

    from rlkit.checkpoint import Checkpointer
    from rlkit.errors import RlkitError

    checkpointer = Checkpointer(tmp_path / "checkpoints")
    for step in (0, 1):
        checkpointer.save(step, {"params": jnp.arange(3.0) + step})
    other_shapes = {"params": jnp.zeros(5), "extra": jnp.zeros(2)}  # another config's state
    with pytest.raises(RlkitError, match="no checkpoint can be read"):
        checkpointer.restore_newest_readable(other_shapes, set_aside=True)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["0", "1"]
    step, tree, skipped = checkpointer.restore_newest_readable({"params": jnp.zeros(3)},
                                                               set_aside=True)
    assert step == 1 and skipped == [] and tree["params"].tolist() == [1.0, 2.0, 3.0]
    checkpointer.close()


def test_load_policy_and_collect_refuse_a_policy_with_non_finite_parameters(finished, tmp_path,
                                                                             capfd):
    """A checkpoint whose parameters are NaN (written by an rlkit older than the divergence
    check, say) is refused in one line by `rlkit.load_policy` and `collect --policy`."""
    import shutil

    import jax
    import jax.numpy as jnp

    from rlkit.checkpoint import Checkpointer
    from rlkit.collect import main as collect_main
    from rlkit.errors import RlkitError
    from rlkit.train import build, load_experiment

    run_dir = Path(shutil.copytree(finished, tmp_path / "nan"))
    checkpointer = Checkpointer(run_dir / "checkpoints")
    try:
        built = build(load_experiment(run_dir / "config.yaml"))
        like = built.trainer.init(jax.random.split(jax.random.key(0), 2))
        built.trainer.close()
        step, carry, _ = checkpointer.restore_newest_readable(like)
        poisoned = jax.tree.map(
            lambda x: jnp.full_like(x, jnp.nan) if jnp.issubdtype(x.dtype, jnp.floating) else x,
            carry)
        checkpointer.save(step + 1, poisoned)
    finally:
        checkpointer.close()
    with pytest.raises(RlkitError, match="not finite"):
        rlkit.load_policy(run_dir)
    capfd.readouterr()
    assert collect_main(["--policy", str(run_dir), "--episodes", "2", "--out",
                         str(tmp_path / "data"), "--no-progress"]) == 2
    assert "not finite" in _one_error_line(capfd)
    assert not (tmp_path / "data").exists()


def test_a_broken_yaml_config_is_one_line(tmp_path, capfd):
    path = tmp_path / "config.yaml"
    path.write_text("agent: ppo\nenv: cartpole\nrun: {seeds: [1, 2\n")
    assert main(["--config", str(path)]) == 2
    assert "not valid YAML" in _one_error_line(capfd)


def test_missing_extras_name_the_install_command_of_the_readme():
    from envs import uv_sync_command

    assert uv_sync_command("procgen") == ("UV_PROJECT_ENVIRONMENT=.venv-procgen uv sync --frozen "
                                          "--extra procgen --no-group numpy2")
    assert uv_sync_command("box2d") == "uv sync --frozen --extra box2d"


def test_on_device_chunks_report_progress_from_inside_without_changing_a_number(monkeypatch):
    # Bit for bit holds for the emitters users compile with (XLA:CPU's default fusion emitters).
    # The suite's legacy emitters (tests/conftest.py) lay the program out differently once the
    # report callback is in it and move last bits (1e-8 of 1e-4), so under them this test
    # compiles its programs with the default emitters: `compiler_options` of every `jax.jit`
    # the trainers make override the process's XLA_FLAGS for those programs only (in process,
    # not in a child: a child's start and imports cost more than the test's own work).
    import functools

    import jax

    import envs
    from agents import ppo
    from rlkit.loops.on_device import (
        ITERATIONS_PER_REPORT,
        PROGRESS_REPORTS_PER_CHUNK,
        make_on_device_trainer,
    )

    if "xla_cpu_use_fusion_emitters=false" in os.environ.get("XLA_FLAGS", ""):
        monkeypatch.setattr(jax, "jit", functools.partial(
            jax.jit, compiler_options={"xla_cpu_use_fusion_emitters": True}))
    env = envs.make_env("chain", None)
    agent = ppo.make_agent(ppo.Config(num_envs=2, rollout_length=8, total_steps=640), env.spec)
    results = []
    for with_reports in (False, True):
        trainer = make_on_device_trainer(agent, env, env.default_params, iterations_per_chunk=40,
                                         num_eval_episodes=1)
        reported: list[int] = []
        if with_reports:
            trainer.report_progress(reported.append)
        carry = trainer.init(jax.random.split(jax.random.key(0), 3))
        chunks = []
        for _ in range(2):
            carry, metrics = trainer.run(carry)
            chunks.append(jax.device_get(metrics))
            chunks.append(list(reported))
            reported.clear()
        results.append((chunks, jax.device_get(trainer.agent_state(carry))))
    (off_chunks, off_state), (on_chunks, on_state) = results
    # 40 iterations: min(3, 40 // 16) = 2 reports, 40 // 3 = 13 iterations apart (after
    # iterations 13 and 26), each of 13 iterations of 16 env steps, once for all 3 seeds (the
    # chunk's end is the run loop's).
    assert (PROGRESS_REPORTS_PER_CHUNK, ITERATIONS_PER_REPORT) == (3, 16)
    assert on_chunks[1] == on_chunks[3] == [208, 208]
    assert off_chunks[1] == off_chunks[3] == []
    for off, on in zip(jax.tree.leaves((off_chunks[0], off_chunks[2], off_state)),
                       jax.tree.leaves((on_chunks[0], on_chunks[2], on_state)), strict=True):
        np.testing.assert_array_equal(off, on)  # bit for bit


def test_load_policy_builds_no_trainer_and_restores_the_saved_parameters(finished, monkeypatch):
    import flax
    import jax

    from rlkit import train
    from rlkit.checkpoint import Checkpointer

    saved = Checkpointer(finished / "checkpoints")
    step = saved.latest_step()
    stored = saved.manager.restore(step)  # the whole carry, as written
    saved.close()

    def no_build(experiment):
        raise AssertionError("load_policy built (and would compile) the trainer")

    monkeypatch.setattr(train, "build", no_build)
    _, _, agent_state = train.load_policy(finished, seed_index=1)
    expected = jax.tree.map(lambda x: np.asarray(x)[1], stored["agent_state"])
    # As nested dicts keyed by field name, like the stored tree (leaves in the same order).
    restored = jax.tree.map(np.asarray, flax.serialization.to_state_dict(agent_state))
    assert jax.tree.leaves(restored), "no parameters restored"
    for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(expected), strict=True):
        np.testing.assert_array_equal(got, want)


def test_load_policy_of_an_edited_run_names_the_edit(finished, tmp_path, capfd):
    import shutil

    run_dir = Path(shutil.copytree(finished, tmp_path / "edited"))
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    config["agent_config"]["hidden_sizes"] = [32, 32]
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    with pytest.raises(rlkit.errors.RlkitError) as raised:
        rlkit.load_policy(run_dir)
    assert str(raised.value).startswith(
        f"{run_dir / 'config.yaml'}: agent_config.hidden_sizes (--agent.hidden-sizes) would "
        "change from [64, 64] to [32, 32]"), raised.value
    assert capfd.readouterr().err == ""  # no checkpoint was tried, nothing printed


def test_a_metrics_file_that_is_not_text_is_refused_on_resume(stopped, capfd):
    (stopped / "metrics.csv").write_bytes(bytes(range(128, 256)))
    assert main(["--resume", str(stopped), "--no-progress"]) == 2
    line = _one_error_line(capfd)
    assert line.startswith(f"error: {stopped / 'metrics.csv'}: is not the CSV text rlkit writes"
                           ), line
    assert line.endswith(f"start the run again with --overwrite --run-dir {stopped}"), line


def _compile_event(seconds: float) -> None:
    import jax

    jax.monitoring.record_event_duration_secs("/jax/core/compile/test_event", seconds)


@pytest.mark.parametrize("available", ["public", "private", "neither"])
def test_compile_timer_counts_inside_its_block_only_on_every_jax(available, monkeypatch):
    """jax 0.7.1 (the procgen env) has no public unregister: the timer falls back to the
    private remover, or to an inert listener; either way it counts only inside its block."""
    import jax
    from jax._src import monitoring

    public = getattr(jax.monitoring, "unregister_event_duration_listener", None)
    private = getattr(monitoring, "_unregister_event_duration_listener_by_callback", None)
    removed: list = []
    real_remove = public or private

    def remover(callback):
        removed.append(callback)
        real_remove(callback)

    monkeypatch.delattr(jax.monitoring, "unregister_event_duration_listener", raising=False)
    monkeypatch.delattr(monitoring, "_unregister_event_duration_listener_by_callback",
                        raising=False)
    if available == "public":
        monkeypatch.setattr(jax.monitoring, "unregister_event_duration_listener", remover,
                            raising=False)
    elif available == "private":
        monkeypatch.setattr(monitoring, "_unregister_event_duration_listener_by_callback",
                            remover, raising=False)
    listeners_before = len(monitoring.get_event_duration_listeners())
    with runner.CompileTimer() as timer:
        _compile_event(1.5)
        jax.monitoring.record_event_duration_secs("/jax/other/event", 10.0)  # not compilation
    _compile_event(2.0)  # after the block: never counted
    assert timer.seconds == 1.5
    registered = len(monitoring.get_event_duration_listeners()) - listeners_before
    if available == "neither":
        assert registered == 1 and not removed  # left registered, inert
        real_remove(timer._on_duration)
    else:
        assert registered == 0 and removed == [timer._on_duration]
