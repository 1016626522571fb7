"""benchmarks/exploration.py: every method's settings build a valid agent config in every study
(a plain agent refuses intrinsic fields that act on nothing, so the shared settings must drop
them), and the first-success count reads the metrics rows as documented."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import exploration  # noqa: E402

from rlkit import registry  # noqa: E402


@pytest.mark.parametrize("method", list(exploration.METHODS))
@pytest.mark.parametrize("study", ["deepsea", "minatar"])
def test_every_method_gets_a_valid_config(method, study):
    agent, options = exploration.METHODS[method]
    base = {"deepsea": exploration.PPO_DEEPSEA if agent == "ppo" else exploration.DQN_DEEPSEA,
            "minatar": exploration.PPO_MINATAR if agent == "ppo"
            else exploration.DQN_MINATAR}[study]
    fields = exploration.agent_overrides(method, base)
    config = registry.agent_module(agent).Config(**fields)
    assert config.intrinsic == options["intrinsic"]
    if options["intrinsic"] != "none" and "intrinsic_coef" in base:
        assert config.intrinsic_coef == base["intrinsic_coef"]


def test_first_success_counts_episodes_to_the_first_chunk_with_a_success():
    """Seed 0 succeeds once in chunk 1 among failures that sum below 0 (the chunk's mean is
    negative); seed 1 never succeeds."""
    rows = [{"seed": 0, "chunk": 0, "episodes": 10, "episode_return": -0.01,
             "episode_return_max": -0.001},
            {"seed": 0, "chunk": 1, "episodes": 200, "episode_return": -0.004,
             "episode_return_max": 0.99},
            {"seed": 1, "chunk": 0, "episodes": 10, "episode_return": -0.01,
             "episode_return_max": 0.0},
            {"seed": 1, "chunk": 1, "episodes": 10, "episode_return": 0.0,
             "episode_return_max": "nan"}]
    assert exploration.first_success(rows, 2) == [210, None]


def test_solved_curve_counts_seeds_at_ninety_percent_of_the_optimum_per_chunk():
    rows = [{"seed": s, "chunk": c, "episodes": 10 + s, "eval_return": value}
            for (s, c, value) in ((0, 0, 0.5), (1, 0, 0.95), (0, 1, 0.9), (1, 1, -0.01))]
    curve = exploration.solved_curve(rows, seeds=2, optimal=1.0)
    assert curve == {"episodes": [10.5, 21.0], "solved": [1, 1]}


def test_tabular_plot_is_drawn_from_a_saved_results_file(tmp_path, monkeypatch, capsys):
    import json

    row = {"study": "deepsea20", "method": "ppo+rdd", "seeds": 2, "solved": 1,
           "budget_episodes": 100, "episodes_to_first_success": [40, None],
           "solved_by_chunk": {"episodes": [50.0, 100.0], "solved": [0, 1]}}
    saved = tmp_path / "results.json"
    saved.write_text(json.dumps({"args": {}, "results": [
        row, dict(row, method="ppo", solved=0, episodes_to_first_success=[None, None])]}))
    plot = tmp_path / "plot.png"
    monkeypatch.setattr(sys, "argv", ["exploration.py", "--replot", str(saved),
                                      "--tabular-plot", str(plot)])
    exploration.main()
    assert plot.stat().st_size > 1000


def test_return_curve_keeps_seed_order_and_marks_chunks_without_episodes():
    rows = [{"seed": s, "chunk": c, "env_steps": 100 * (c + 1), "episodes": n,
             "episode_return": value}
            for (s, c, n, value) in ((1, 0, 3, 2.0), (0, 0, 0, "nan"), (0, 1, 4, 1.5),
                                     (1, 1, 2, 3.0))]
    assert exploration.return_curve(rows, seeds=2) == {
        "env_steps": [100, 200], "episode_return": [[None, 2.0], [1.5, 3.0]]}


def test_minatar_plot_is_drawn_from_a_saved_results_file(tmp_path, monkeypatch):
    import json

    row = {"study": "minatar", "method": "ppo", "seeds": 2,
           "return_by_chunk": {"env_steps": [100, 200],
                               "episode_return": [[None, 2.0], [1.5, 3.0]]}}
    saved = tmp_path / "results.json"
    saved.write_text(json.dumps({"args": {}, "results": [row]}))
    plot = tmp_path / "plot.png"
    monkeypatch.setattr(sys, "argv", ["exploration.py", "--replot", str(saved),
                                      "--minatar-plot", str(plot)])
    exploration.main()
    assert plot.stat().st_size > 1000


@pytest.mark.parametrize("content, needle", [
    ('{"args": {}, "results": [1, 2]}', "not a results file of this script"),
    ("[1]", "not a results file of this script"),
    ('{"args": {}, "results": []}', "--minatar-plot: the --replot files hold no rows"),
])
def test_replot_of_a_wrong_file_is_one_line(content, needle, tmp_path, monkeypatch, capsys):
    saved = tmp_path / "results.json"
    saved.write_text(content)
    monkeypatch.setattr(sys, "argv", ["exploration.py", "--replot", str(saved),
                                      "--minatar-plot", str(tmp_path / "m.png")])
    with pytest.raises(SystemExit) as stop:
        exploration.main()
    assert stop.value.code == 2
    assert needle in capsys.readouterr().err


@pytest.mark.parametrize("argv, needle", [
    (["--seeds", "0"], "--seeds must be at least 1, got 0"),
    (["--deepsea-episodes", "-5"], "--deepsea-episodes must be at least 1"),
    (["--sizes", "1"], "DeepSea sizes"),
    (["--count-learning-rate", "0"], "--count-learning-rate must be > 0"),
    (["--rdd-sigma", "-1"], "--rdd-sigma must be > 0"),
    (["--count-decay", "0"], "--count-decay must be > 0"),
    (["--count-mean-scale", "-2"], "--count-mean-scale must be > 0"),
    (["--replot", "missing.json"], "--replot needs --tabular-plot PATH or --minatar-plot"),
    (["--minatar-plot", "out.xyz"], "--minatar-plot out.xyz: matplotlib cannot write .xyz"),
    (["--tabular-plot", "out.xyz"], "--tabular-plot out.xyz: matplotlib cannot write .xyz"),
    # A budget under one rollout: rlkit.train's own one-line error, not a traceback.
    (["--study", "riverswim", "--riverswim-steps", "10", "--seeds", "1", "--methods", "ppo"],
     "total_steps: 10 is less than one rollout"),
])
def test_bad_arguments_exit_2_naming_the_flag(argv, needle, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["exploration.py", *argv])
    with pytest.raises(SystemExit) as exit_info:
        exploration.main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
