"""benchmarks/procgen_generalization.py without procgen: the aggregation over finished runs,
the report and the claims, from summary.json files written here by hand."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import procgen_generalization as study_module  # noqa: E402

SPLITS = ("train", "validation", "test")


def write_run(run_dir: Path, train: list[float], test: list[float]) -> None:
    run_dir.mkdir(parents=True)
    summary = {}
    for split, values in (("train", train), ("validation", test), ("test", test)):
        summary[f"per_seed_{split}_return"] = [5 + 5 * v for v in values]  # maze: [5, 10]
        summary[f"per_seed_{split}_normalized_return"] = values
    (run_dir / "summary.json").write_text(json.dumps(summary))


def test_aggregate_reports_iqm_gap_and_claims(tmp_path):
    study = study_module.Study(games=("maze", "coinrun"), seeds=2, ppo_steps=1, ppo_envs=1,
                               ppo_rollout=1, ppo_epochs=1, ppo_minibatches=1, cnn="impala",
                               transitions=1, few_levels=10, offline_updates=1, batch_size=1,
                               split_episodes=1)
    # (train, test) per seed; BC is the best offline method and 200 levels beat 10.
    runs = {"ppo": ([0.9, 0.8], [0.6, 0.5]), "bc": ([0.7, 0.7], [0.5, 0.4]),
            "cql": ([0.6, 0.6], [0.3, 0.2]), "bc-10": ([0.8, 0.9], [0.1, 0.2])}
    for game in study.games:
        for name, (train, test) in runs.items():
            write_run(tmp_path / game / name, train, test)
    report = study_module.aggregate(study, tmp_path, ("bc", "cql"))
    bc = report["methods"]["bc"]
    assert bc["test"]["iqm"] == pytest.approx(0.45)
    assert bc["gap"]["iqm"] == pytest.approx(0.25)
    assert bc["test"]["runs"] == 4 and bc["test"]["games"] == 2
    assert report["claims"]["test_below_train_for_every_method"] == {
        "ppo": True, "bc": True, "cql": True, "bc-10": True}
    assert report["claims"]["bc_best_offline_on_test"] is True
    assert report["claims"]["200_levels_beat_few_levels_on_test"] is True

    # A claim that fails is reported as False, not hidden.
    write_run(tmp_path / "maze" / "iql", [0.9, 0.9], [0.9, 0.9])
    write_run(tmp_path / "coinrun" / "iql", [0.9, 0.9], [0.9, 0.9])
    report = study_module.aggregate(study, tmp_path, ("bc", "cql", "iql"))
    assert report["claims"]["bc_best_offline_on_test"] is False
    assert report["claims"]["test_below_train_for_every_method"]["iql"] is False

    study_module.write_report(report, tmp_path, "test")
    table = (tmp_path / "study.md").read_text()
    assert "| bc | 0.700 [0.700, 0.700] | 0.450" in table
    assert (tmp_path / "study.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "study.json").read_text())["claims"]


def test_a_run_without_split_returns_is_one_line(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "summary.json").write_text("{}")
    with pytest.raises(study_module.RlkitError, match="has no per_seed_train_return"):
        study_module.read_run(tmp_path / "run")


@pytest.mark.parametrize("argv, field", [
    (["--methods", "bc,ppo2"], "--methods: unknown ppo2"),
    (["--games", "mazes"], "mazes"),
    (["--jobs", "0"], "--jobs: must be at least 1"),
])
def test_bad_arguments_are_one_line(tmp_path, argv, field):
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "procgen_generalization.py"),
         "--out", str(tmp_path), *argv], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2
    assert field in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
