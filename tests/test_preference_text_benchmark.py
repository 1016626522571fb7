"""benchmarks/preference_text.py: impossible arguments are one line naming the flag (exit 2)
before any training, and the per-method aggregate is the mean with a bootstrap interval."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import preference_text  # noqa: E402


@pytest.mark.parametrize("argv, needle", [
    (["--seeds", "1"], "--seeds must be at least 2"),
    (["--beta", "0"], "--beta must be > 0, got 0.0"),
    (["--lam", "-0.5"], "--lam must be >= 0"),
    (["--reward-model-pairs", "8"], "--reward-model-pairs must be at least 16"),
    (["--offline-steps", "0"], "--offline-steps must be at least 1, got 0"),
    (["--iterations", "0"], "--iterations must be at least 1"),
    (["--plot", "out.xyz"], "--plot out.xyz: matplotlib cannot write .xyz"),
])
def test_bad_arguments_exit_2_naming_the_flag(argv, needle, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(sys, "argv", ["preference_text.py", "--work-dir", str(tmp_path), *argv])
    with pytest.raises(SystemExit) as stop:
        preference_text.main()
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert not any(tmp_path.iterdir())  # nothing trained


def test_aggregate_gives_mean_and_interval_per_figure():
    rows = [{"true_reward": r, "reverse_kl": 1.0, "win_rate": 0.5, "labels_used": 10}
            for r in (0.2, 0.4, 0.6)]
    out = preference_text.aggregate(rows)
    assert out["true_reward"]["mean"] == pytest.approx(0.4)
    low, high = out["true_reward"]["ci95"]
    assert 0.2 <= low < 0.4 < high <= 0.6
    assert out["labels_used"]["per_seed"] == [10.0, 10.0, 10.0]


def test_a_work_dir_of_other_arguments_is_refused_and_the_same_ones_continue(
        tmp_path, monkeypatch, capsys):
    (tmp_path / "arguments.json").write_text('{"seeds": 7}')
    monkeypatch.setattr(sys, "argv", ["preference_text.py", "--work-dir", str(tmp_path)])
    with pytest.raises(SystemExit) as stop:
        preference_text.main()
    assert stop.value.code == 2
    assert "holds runs made with other arguments" in capsys.readouterr().err
    # A finished run is reused without starting a child; one stopped early is not.
    run = tmp_path / "sft"
    run.mkdir()
    (run / "summary.json").write_text('{"true_reward": 0.5, "labels_used": 0}')
    assert preference_text.train("sft", run)["true_reward"] == 0.5
    assert "reused" in capsys.readouterr().out


def test_a_folder_this_script_did_not_make_is_never_adopted_or_deleted(tmp_path, monkeypatch,
                                                                         capsys):
    (tmp_path / "notes.txt").write_text("keep me")
    for extra in ([], ["--overwrite"]):
        monkeypatch.setattr(sys, "argv", ["preference_text.py", "--work-dir", str(tmp_path),
                                          *extra])
        with pytest.raises(SystemExit) as stop:
            preference_text.main()
        assert stop.value.code == 2
        assert "not this script's runs" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    monkeypatch.setattr(sys, "argv", ["preference_text.py", "--work-dir",
                                      str(tmp_path / "notes.txt")])
    with pytest.raises(SystemExit):
        preference_text.main()
    assert "is a file" in capsys.readouterr().err
