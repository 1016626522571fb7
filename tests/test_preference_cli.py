"""`python -m rlkit.train sft|reward-model|dpo` end to end at tiny budgets: the run directory,
summary.json's figures, exact resume, one-line errors (issue 12, items 4, 6 and the DPO bar)."""

import json
from pathlib import Path

import numpy as np
import pytest

from rlkit.runner import MetricsLog
from rlkit.train import main, top_level_help

FIXTURES = Path(__file__).parent / "fixtures" / "lm"  # tiny Hugging Face models (rlkit.lm)

# A small model and data: each run compiles in seconds and trains in a few more.
TINY = ["--task", "sort", "--task-config.num-digits", "3", "--eval-prompts", "16",
        "--no-progress"]
TINY_MODEL = ["--agent.num-layers", "1", "--agent.width", "16", "--agent.num-heads", "2",
              "--agent.mlp-width", "32", "--max-length", "16"]


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("sft") / "run"
    code = main(["sft", *TINY, *TINY_MODEL, "--demonstrations", "64", "--total-steps", "4",
                 "--num-logs", "2", "--run-dir", str(run_dir)])
    assert code == 0
    return run_dir


def _error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_sft_writes_a_run_directory_and_a_model(sft_run):
    for name in ("config.yaml", "metrics.csv", "summary.json", "curves.png", "checkpoints",
                 "model/config.json", "model/model.safetensors", "model/rlkit_model.json"):
        assert (sft_run / name).exists(), name
    summary = json.loads((sft_run / "summary.json").read_text())
    assert summary["unit"] == "updates" and summary["updates"] == 4
    assert summary["labels_used"] == 0
    assert 0.0 <= summary["true_reward"] <= 1.0
    assert summary["reverse_kl"] is None  # SFT has no reference policy
    assert summary["win_rate"] is None
    assert summary["tokens_per_second"] > 0
    rows = MetricsLog(sft_run / "metrics.csv").read()
    assert [int(r["updates"]) for r in rows] == [2, 4]
    assert {"loss", "token_accuracy", "true_reward"} <= set(rows[0])


def test_the_python_api_reads_what_the_cli_writes(sft_run):
    from rlkit.lm import ByteTokenizer, load_pretrained, load_tokenizer

    assert isinstance(load_tokenizer(sft_run / "model"), ByteTokenizer)
    assert isinstance(load_tokenizer(sft_run), ByteTokenizer)
    config, params = load_pretrained(sft_run)  # a run directory: its model/
    assert config == load_pretrained(sft_run / "model")[0]
    assert config.vocab_size == 259 and config.width == 16


def test_dpo_from_an_sft_run_and_its_exact_resume(sft_run, tmp_path, monkeypatch):
    import rlkit.plotting

    plotted = {}
    monkeypatch.setattr(rlkit.plotting, "plot_curves", lambda rows, path, **kwargs:
                        plotted.update(rows=rows, path=path, **kwargs))
    common = ["dpo", *TINY, "--model", str(sft_run), "--pairs", "32", "--total-steps", "4",
              "--num-logs", "2", "--agent.batch-size", "8", "--seeds", "2"]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert main([*common, "--run-dir", str(whole)]) == 0
    assert main([*common, "--run-dir", str(cut), "--stop-after-chunks", "1"]) == 0
    assert len(MetricsLog(cut / "metrics.csv").read()) == 2  # one chunk, two seeds
    # The README's form (no agent named), with flags equal to the saved values.
    assert main(["--resume", str(cut), "--no-progress", "--total-steps", "4", "--pairs", "32",
                 "--task", "sort", "--model", str(sft_run)]) == 0
    assert (whole / "metrics.csv").read_text() == (cut / "metrics.csv").read_text()
    summary = json.loads((whole / "summary.json").read_text())
    for name in ("true_reward", "reverse_kl", "preference_accuracy", "initial_true_reward"):
        assert summary[name] is not None and np.isfinite(summary[name]), name
    assert 0.0 <= summary["win_rate"] <= 1.0  # against the reference (the SFT model)
    assert summary["labels_used"] == len((whole / "pairs.jsonl").read_text().splitlines())
    assert summary["per_seed_initial_reverse_kl"] == [0.0, 0.0]  # pi = pi_ref at the start
    rows = MetricsLog(whole / "metrics.csv").read()
    assert {"chosen_reward", "rejected_reward", "reward_margin", "reverse_kl",
            "preference_accuracy"} <= set(rows[0])
    # No leftovers of RL runs: no episodes, returns or env steps.
    assert not {"episode_return", "episodes", "eval_return"} & set(rows[0])
    assert not {"env_steps", "steps_per_second", "final_return", "per_seed"} & set(summary)
    # curves.png (of the last run, the resumed one): true reward, reverse KL and loss against
    # updates, from update 0 (the reference policy itself: reverse KL exactly 0).
    assert [column for column, _ in plotted["panels"]] == ["true_reward", "reverse_kl", "loss"]
    from rlkit.plotting import curve

    x, kl, _, _ = curve(plotted["rows"], "reverse_kl", "updates")
    assert list(x) == [0, 2, 4] and kl[0] == 0.0
    assert plotted["path"] == cut / "curves.png" and plotted["title"] == "dpo on sort"


def test_a_run_again_from_its_config_yaml(sft_run, tmp_path):
    again = tmp_path / "again"
    # The README's form: no agent named, the config's agent runs, in a new directory.
    assert main(["--config", str(sft_run / "config.yaml"), "--run-dir", str(again)]) == 0
    assert (again / "metrics.csv").read_text() == (sft_run / "metrics.csv").read_text()
    shorter = tmp_path / "shorter"
    assert main(["sft", "--config", str(sft_run / "config.yaml"), "--total-steps", "2",
                 "--num-logs", "1", "--run-dir", str(shorter)]) == 0
    summary = json.loads((shorter / "summary.json").read_text())
    assert summary["updates"] == 2 and summary["seeds"] == 1


def test_reward_model_on_a_pairs_file(sft_run, tmp_path, monkeypatch):
    import rlkit.runner

    written = []  # summary.json is written once, complete, after model/ is saved
    write = rlkit.runner.write_json_atomic
    monkeypatch.setattr(rlkit.runner, "write_json_atomic", lambda path, data: (
        written.append((path.name, dict(data), (path.parent / "model").is_dir())),
        write(path, data))[-1])
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"{a}{b}{c}=", "chosen": "".join(sorted(
        f"{a}{b}{c}")), "rejected": f"{c}{b}{a}"}) + "\n" for a, b, c in
        np.random.default_rng(0).integers(0, 10, (24, 3))))
    run_dir = tmp_path / "rm"
    assert main(["reward-model", *TINY, "--model", str(sft_run), "--dataset", str(pairs),
                 "--total-steps", "2", "--num-logs", "1", "--agent.batch-size", "4",
                 "--eval-prompts", "8", "--run-dir", str(run_dir)]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["labels_used"] == 24 - 8 and summary["held_out_pairs"] == 8
    assert [(name, saved) for name, _, saved in written] == [("summary.json", True)]
    assert written[0][1] == summary
    # Its model/ is a one-label sequence classifier that loads back as a reward model.
    from rlkit.lm import TransformerRewardModel, load_pretrained, load_tokenizer
    from rlkit.lm.transformer import positions_from_mask

    config, params = load_pretrained(run_dir, reward_model=True)
    tokenizer = load_tokenizer(run_dir)
    assert config.vocab_size == tokenizer.vocab_size == 259
    tokens = np.array([tokenizer.encode("123=123")])
    mask = np.ones_like(tokens, bool)
    reward = TransformerRewardModel(config).apply(params, tokens, positions_from_mask(mask), mask)
    assert reward.shape == (1,) and np.isfinite(reward).all()
    assert 0.0 <= summary["eval_preference_accuracy"] <= 1.0


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_bad_inputs_are_one_line_each_and_exit_2(sft_run, tmp_path, capsys):
    good = json.dumps({"prompt": "312=", "chosen": "123", "rejected": "321"})
    missing = _write(tmp_path / "missing.jsonl", [good, json.dumps({"prompt": "1=",
                                                                    "chosen": "1"})])
    empty = _write(tmp_path / "empty.jsonl", [good, "", json.dumps(
        {"prompt": "1=", "chosen": "", "rejected": "1"})])
    long = _write(tmp_path / "long.jsonl", [json.dumps(
        {"prompt": "1" * 40 + "=", "chosen": "1", "rejected": "2"})])
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((sft_run / "model" / "config.json").read_text())
    nothing = tmp_path / "nothing"
    nothing.mkdir()
    # The llama fixture's weights (vocab_size 100) marked as a byte-tokenizer model (259 ids).
    byte_marked = tmp_path / "byte_marked"
    byte_marked.mkdir()
    for name in ("config.json", "model.safetensors"):
        (byte_marked / name).write_bytes((FIXTURES / "llama" / name).read_bytes())
    (byte_marked / "rlkit_model.json").write_text('{"tokenizer": "byte"}\n')
    both = tmp_path / "both"
    both.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        (both / name).write_bytes((FIXTURES / "llama" / name).read_bytes())
    (both / "rlkit_model.json").write_text('{"tokenizer": "byte"}\n')
    control_run = tmp_path / "control_run"
    control_run.mkdir()
    (control_run / "config.yaml").write_text("agent: dqn\nenv: CartPole-v1\n")
    dpo = ["dpo", *TINY, "--model", str(sft_run), "--run-dir", str(tmp_path / "run")]
    cases = [
        ([*dpo, "--dataset", str(missing)], f"{missing}, line 2: missing key(s) 'rejected'"),
        ([*dpo, "--dataset", str(empty)], f"{empty}, line 3: 'chosen' is empty"),
        ([*dpo, "--dataset", str(long)], "exceed the model's context of 16 tokens"),
        (["dpo", *TINY, "--model", str(no_weights)], "no model.safetensors"),
        (["dpo", *TINY, "--model", str(nothing)],
         "has no config.json; pass a Hugging Face model directory"),
        (["dpo", *TINY], "--model: dpo fine-tunes a model"),
        (["dpo", *TINY, "--model", str(byte_marked)],
         f"{byte_marked}: the tokenizer has 259 tokens but the model's vocab_size is 100"),
        (["dpo", *TINY, "--model", str(both)],
         f"{both}: both tokenizer.json and rlkit_model.json (byte tokenizer)"),
        (["dpo", *TINY, "--model", str(control_run)],
         f"{control_run}: a dqn run, not a language model"),
        # A Hugging Face directory loads (rlkit.lm.checkpoint), but its tokenizer splits '0'.
        (["dpo", *TINY, "--model", str(FIXTURES / "llama")],
         "task sort: the tokenizer encodes '0' as 2 tokens"),
        (["sft", "--task", "sorting"], "--task: unknown task 'sorting'"),
        (["sft", *TINY, "--stop-after-chunks", "0"], "--stop-after-chunks: must be at least 1"),
        # --overwrite would delete the model the run reads (its run directory's model/).
        (["iterative-dpo", *TINY, "--model", str(sft_run), "--run-dir", str(sft_run),
          "--overwrite"], f"--model: {sft_run} lies inside --run-dir {sft_run}"),
        (["iterative-dpo", *TINY, "--model", str(sft_run / "model"), "--run-dir", str(sft_run),
          "--overwrite"], f"--model: {sft_run / 'model'} lies inside --run-dir {sft_run}"),
        (["reward-model", *TINY], "--dataset: reward-model needs preference pairs"),
        (["reward-model", *TINY, "--model", str(sft_run), "--dataset", str(_write(
            tmp_path / "two.jsonl", [good, good])), "--eval-prompts", "2"],
         "--eval-prompts: 2 pair(s) leave none to train on after holding out 2"),
        (["dpo", *TINY, "--model", str(sft_run), "--agent.beta", "-1"],
         "--agent.beta: must be a finite number in (0, inf), got -1.0; the default is 0.5;"),
        (["sft", *TINY, "--task-config.demo-noise", "2"], "--task-config.demo-noise: "),
        (["sft", "--resume", str(sft_run), "--agent.width", "8"],
         "--resume: agent_config.width (--agent.width) would change from 16 to 8, but a "
         "resumed run continues with its saved configuration; drop the flag, or start a new "
         f"run with python -m rlkit.train sft --config {sft_run / 'config.yaml'}"),
        (["--resume", str(sft_run), "--task-config.num-digits", "4"],
         "--resume: task_config.num_digits (--task-config.num-digits) would change from 3 to 4"),
        (["dpo", "--config", str(sft_run / "config.yaml")],
         f"--config: {sft_run / 'config.yaml'} is the config of a sft run; run it with "
         f"python -m rlkit.train sft --config"),
        (["dpo", "--resume", str(sft_run)], f"{sft_run} is a sft run; resume it with"),
    ]
    for argv, needle in cases:
        assert main(argv) == 2, argv
        line = _error_line(capsys)
        assert needle in line, (needle, line)
    assert not (tmp_path / "run").exists()  # nothing written before the input is checked


def test_help_lists_the_language_model_agents_and_tasks(capsys):
    text = top_level_help()
    for name in ("sft", "reward-model", "dpo", "Direct Preference Optimisation", "sort",
                 "reverse", "--task"):
        assert name in text, name
    with pytest.raises(SystemExit):
        from rlkit.train_preference import parse

        parse(["dpo", "--help"])
    out = capsys.readouterr().out
    for flag in ("--agent.beta", "--agent.label-smoothing", "--model", "--dataset",
                 "--task-config.demo-noise"):
        assert flag in out, flag


# The DPO bar ---------------------------------------------------------------------------------

BAR_DPO = ["--agent.beta", "0.5", "--agent.learning-rate", "5e-5", "--total-steps", "200",
           "--num-logs", "2", "--pairs", "2048", "--eval-prompts", "512"]


def _bar_seed(tmp_path: Path, seed: int) -> dict:
    """SFT on the noisy demonstrations of `sort` (4 digits), then DPO from it on 2048 pairs
    sampled from it; the figures of the DPO run's summary.json."""
    sft_dir, dpo_dir = tmp_path / f"sft{seed}", tmp_path / f"dpo{seed}"
    assert main(["sft", "--task", "sort", "--seed", str(seed), "--total-steps", "1000",
                 "--num-logs", "1", "--eval-prompts", "512", "--no-progress",
                 "--run-dir", str(sft_dir)]) == 0
    assert main(["dpo", "--task", "sort", "--seed", str(seed), "--model", str(sft_dir),
                 *BAR_DPO, "--no-progress", "--run-dir", str(dpo_dir)]) == 0
    return json.loads((dpo_dir / "summary.json").read_text())


@pytest.mark.slow
def test_dpo_raises_the_true_reward_over_sft_on_at_least_4_of_5_seeds(tmp_path):
    # Issue 12's bar. The initial evaluation of each DPO run is its SFT model's, on the same
    # 512 prompts; demonstrations are half corrupted, so SFT is about 0.55 (1/2 + 1/20).
    summaries = [_bar_seed(tmp_path, seed) for seed in range(5)]
    sft = [s["initial_true_reward"] for s in summaries]
    tuned = [s["true_reward"] for s in summaries]
    kl = [s["reverse_kl"] for s in summaries]
    print(json.dumps({"sft_true_reward": sft, "dpo_true_reward": tuned, "reverse_kl": kl}))
    assert sum(after > before for before, after in zip(sft, tuned, strict=True)) >= 4
    assert all(np.isfinite(kl)) and min(kl) > 0


def test_hypo_help_describes_it_whole_and_its_dataset(capsys):
    """The description is the docstring's whole first paragraph (it was cut at the first line
    break, mid-quotation), and --dataset names hypo among its users."""
    from rlkit.train_preference import parse

    with pytest.raises(SystemExit):
        parse(["hypo", "--help"])
    out = capsys.readouterr().out
    description = out.split("\n\n")[1].strip()
    assert description.endswith(".") and description.count('"') % 2 == 0, description
    assert "HyPO" in description
    flat = " ".join(out.replace("│", " ").split())
    assert "for reward-model, dpo and hypo" in flat
