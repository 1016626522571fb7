"""Online iterative DPO on language models (issue 13, item 2 on text): the driver's loop
(`rlkit.loops.preference.run_iterative_dpo`) on a tiny random model, and
`python -m rlkit.train iterative-dpo` end to end."""

import json
import os
import shutil
import signal
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import iterative_dpo
from rlkit.checkpoint import Checkpointer
from rlkit.lm import ByteTokenizer
from rlkit.lm.transformer import TransformerConfig
from rlkit.loops.preference import run_iterative_dpo, tokenize_prompts
from rlkit.train import main
from rlkit.train_preference import same_tokenizer
from rlkit.types import Agent, TextSpec

FIXTURES = Path(__file__).parent / "fixtures" / "lm"
TOKENIZER = ByteTokenizer()
MODEL = TransformerConfig(vocab_size=TOKENIZER.vocab_size, num_layers=1, width=16, num_heads=2,
                          mlp_width=32, max_length=12)
SPEC = TextSpec(MODEL, 4, 4, TOKENIZER.pad_id, TOKENIZER.eos_id)
PROMPTS = 6  # per iteration
TIED = ("a=", "b=")  # prompts whose completions all score 0: never a pair


def _config(**changes) -> iterative_dpo.Config:
    return iterative_dpo.Config(**{
        "num_samples": 4, "iterations": 2, "prompts_per_iteration": PROMPTS,
        "steps_per_iteration": 3, "batch_size": 8, "learning_rate": 1e-3, **changes})


def _draw(iteration: int):
    """Iteration t's prompts: TIED, then "D=" with digit D = t + 1 (a pair tells its
    iteration)."""
    texts = [*TIED, *[f"{iteration + 1}="] * (PROMPTS - len(TIED))]
    return tokenize_prompts(TOKENIZER, texts, SPEC.prompt_tokens)


def _score(full, completions, mask):
    """The first completion token's id, 0 for the TIED prompts (their first byte is a or b)."""
    first_prompt_byte = full.tokens[:, SPEC.prompt_tokens - 2]  # [M] 'a' = 97, 'b' = 98
    tied = (first_prompt_byte == TOKENIZER.encode("a")[0]) | (
        first_prompt_byte == TOKENIZER.encode("b")[0])
    return jnp.where(tied, 0.0, completions[:, 0].astype(jnp.float32))


def _reward(prompt_tokens, completions, mask):
    return (completions[:, 0] % 2).astype(jnp.float32)


def _params():
    from rlkit.lm.transformer import Transformer, positions_from_mask

    tokens = jnp.zeros((1, 8), jnp.int32)
    mask = jnp.ones(tokens.shape, bool)
    return Transformer(MODEL).init(jax.random.key(1), tokens, positions_from_mask(mask), mask)


def _run(config, agent=None):
    sft = _params()
    agent = agent or iterative_dpo.make_text_agent(config, SPEC, sft)
    eval_prompts = tokenize_prompts(TOKENIZER, ["12=", "21="], SPEC.prompt_tokens)
    return sft, run_iterative_dpo(agent, config, SPEC, sft, _draw, _score,
                                  iterative_dpo.select_pairs(config), _reward, eval_prompts,
                                  jax.random.key(0))


def _probe(config, sft, measure) -> Agent:
    """DPO's agent whose `update` reports `measure(state, batch)` as its loss."""
    dpo = iterative_dpo.make_text_agent(config, SPEC, sft)

    def update(state, batch, key):
        new_state, metrics = dpo.update(state, batch, key)
        return new_state, {**metrics, "loss": measure(state, batch)}

    return dpo._replace(update=update)


def test_labels_used_counts_the_kept_pairs():
    config = _config()
    _, (params, history) = _run(config)
    # The random model's 4 samples per prompt differ (259 tokens); the two TIED prompts tie.
    assert [h["pairs_kept"] for h in history] == [PROMPTS - len(TIED)] * 2
    assert [h["labels_used"] for h in history] == [4, 8]
    assert [h["responses_scored"] for h in history] == [PROMPTS * 4, 2 * PROMPTS * 4]
    for h in history:
        assert 0.0 <= h["win_rate"] <= 1.0 and np.isfinite(h["loss"])
    assert np.isfinite(history[-1]["reverse_kl"]) and history[-1]["reverse_kl"] != 0.0


def _distance(first, second):
    return sum(jnp.abs(a - b).sum() for a, b in zip(jax.tree.leaves(first),
                                                     jax.tree.leaves(second), strict=True))


@pytest.mark.parametrize("reference", ["sft", "previous"])
def test_the_reference_is_the_sft_model_or_the_previous_iterate(reference):
    config = _config(reference=reference)
    sft = _params()
    # The loss reported: how far the update's reference is from the SFT model.
    agent = _probe(config, sft, lambda state, batch: _distance(state.reference_params, sft))
    _, (_, history) = _run(config, agent)
    assert history[0]["loss"] == 0.0  # iteration 1: pi_0 either way
    if reference == "sft":
        assert history[1]["loss"] == 0.0
    else:  # the previous iterate: pi_1, which training moved away from pi_0
        assert history[1]["loss"] > 0.0


@pytest.mark.parametrize("data", ["all", "current"])
def test_the_data_is_every_pair_so_far_or_the_current_iterations(data):
    config = _config(data=data)
    sft = _params()
    one = TOKENIZER.encode("1")[0]
    # The loss reported: the share of the batch's pairs collected in iteration 1 (prompt 1...).
    agent = _probe(config, sft, lambda state, batch: (
        batch.chosen.tokens[:, SPEC.prompt_tokens - 2] == one).mean(dtype=jnp.float32))
    _, (_, history) = _run(config, agent)
    assert history[0]["loss"] == 1.0  # iteration 1's pairs are all of "1="
    assert (history[1]["loss"] > 0.0) == (data == "all")


def test_bad_config_fields_name_themselves():
    from rlkit.errors import RlkitError

    for changes, field in (({"num_samples": 1}, "num_samples"), ({"pair_rule": "best"},
                           "pair_rule"), ({"iterations": 0}, "iterations")):
        with pytest.raises(RlkitError, match=field):
            _config(**changes)


# The CLI ----------------------------------------------------------------------------------

TINY = ["--task", "sort", "--task-config.num-digits", "1", "--eval-prompts", "16",
        "--no-progress"]
TINY_ITERATIVE = ["--agent.iterations", "2", "--agent.steps-per-iteration", "3",
                  "--agent.prompts-per-iteration", "8", "--agent.num-samples", "4",
                  "--agent.batch-size", "8"]


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("sft") / "run"
    assert main(["sft", *TINY, "--agent.num-layers", "1", "--agent.width", "16",
                 "--agent.num-heads", "2", "--agent.mlp-width", "32", "--max-length", "16",
                 "--demonstrations", "64", "--total-steps", "100", "--agent.learning-rate",
                 "3e-3", "--num-logs", "1", "--run-dir", str(run_dir)]) == 0
    # Trained enough to be right now and then: samples that differ in reward, so pairs.
    return run_dir


def test_the_cli_writes_the_summary_fields(sft_run, tmp_path):
    run_dir = tmp_path / "run"
    assert main(["iterative-dpo", *TINY, *TINY_ITERATIVE, "--model", str(sft_run),
                 "--run-dir", str(run_dir)]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["agent"] == "iterative-dpo" and summary["updates"] == 6
    assert summary["responses_scored"] == 2 * 8 * 4
    assert 0 <= summary["labels_used"] <= 16  # at most one pair per prompt
    assert 0.0 <= summary["true_reward"] <= 1.0 and 0.0 <= summary["win_rate"] <= 1.0
    assert np.isfinite(summary["reverse_kl"])
    assert summary["labeller"] == "exact reward (oracle)"
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[0].startswith("seed,chunk,iteration,updates")
    assert (run_dir / "model" / "model.safetensors").is_file()


def test_a_reward_model_with_another_tokenizer_is_refused(sft_run, tmp_path, capsys):
    # The llama reward-model fixture with the llama tokenizer; the policy has the byte one.
    reward_model = tmp_path / "reward_model"
    reward_model.mkdir()
    for folder, name in (("llama_reward", "config.json"), ("llama_reward", "model.safetensors"),
                         ("llama", "tokenizer.json"), ("llama", "tokenizer_config.json")):
        (reward_model / name).write_bytes((FIXTURES / folder / name).read_bytes())
    code = main(["iterative-dpo", *TINY, "--model", str(sft_run), "--reward-model",
                 str(reward_model), "--run-dir", str(tmp_path / "run")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1, lines
    assert "--reward-model" in lines[0] and "tokenizer differs from the policy's" in lines[0]


@pytest.mark.parametrize(("flag", "value", "field"), [
    ("--agent.num-samples", "1", "--agent.num-samples"),
    ("--agent.pair-rule", "best", "--agent.pair-rule"),
    ("--agent.iterations", "0", "--agent.iterations"),
])
def test_bad_cli_input_is_one_line_naming_the_flag(sft_run, tmp_path, capsys, flag, value,
                                                   field):
    code = main(["iterative-dpo", *TINY, "--model", str(sft_run), flag, value,
                 "--run-dir", str(tmp_path / "run")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1, lines
    assert field in lines[0]


def test_same_tokenizer_compares_kind_special_ids_and_vocabulary(tmp_path):
    from rlkit.lm import load_tokenizer

    llama = load_tokenizer(FIXTURES / "llama")
    assert same_tokenizer(ByteTokenizer(), ByteTokenizer()) is None
    assert same_tokenizer(llama, load_tokenizer(FIXTURES / "llama")) is None
    assert "ByteTokenizer" in same_tokenizer(ByteTokenizer(), llama)
    # The same file with the ids of '1' and '2' swapped: same size, another vocabulary.
    data = json.loads((FIXTURES / "llama" / "tokenizer.json").read_text())
    vocab = data["model"]["vocab"]
    vocab["1"], vocab["2"] = vocab["2"], vocab["1"]
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    (tmp_path / "tokenizer_config.json").write_bytes(
        (FIXTURES / "llama" / "tokenizer_config.json").read_bytes())
    assert same_tokenizer(llama, load_tokenizer(tmp_path)) == (
        "different tokenizer.json vocabularies or rules")


def _error_lines(capsys) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


def test_an_interrupted_run_resumes_exactly(sft_run, tmp_path, capsys, monkeypatch):
    """Stopped after iteration 1 of 3 (seed 0), then after seed 1's first iteration (seed 0
    done: its model/ written, its figures only in metrics.csv), then by SIGTERM in seed 1's
    second iteration, then resumed to the end: the same metrics.csv byte for byte, summary
    figures and model as one uninterrupted run."""
    common = ["iterative-dpo", *TINY, *TINY_ITERATIVE, "--agent.iterations", "3",
              "--model", str(sft_run), "--seeds", "2"]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert main([*common, "--run-dir", str(whole)]) == 0
    assert main([*common, "--run-dir", str(cut), "--stop-after-chunks", "1"]) == 0
    assert len((cut / "metrics.csv").read_text().splitlines()) == 2  # header, one iteration
    assert json.loads((cut / "summary.json").read_text())["stopped_early"] is True
    # The README's form (no agent named); a row logged after the checkpoint is cut back.
    with (cut / "metrics.csv").open("a") as f:
        f.write((whole / "metrics.csv").read_text().splitlines()[2] + "\n")
    assert main(["--resume", str(cut), "--no-progress", "--stop-after-chunks", "3"]) == 0
    assert len((cut / "metrics.csv").read_text().splitlines()) == 5
    # SIGTERM after seed 1's second iteration is logged, before its checkpoint: exit 143, the
    # row of that iteration cut back on resume.
    save = Checkpointer.save

    def terminated_before(self, step, tree):
        if step == 4:
            os.kill(os.getpid(), signal.SIGTERM)
        save(self, step, tree)

    monkeypatch.setattr(Checkpointer, "save", terminated_before)
    capsys.readouterr()
    assert main(["--resume", str(cut), "--no-progress"]) == 143
    assert f"resume with python -m rlkit.train --resume {cut}" in _error_lines(capsys)[-1]
    assert len((cut / "metrics.csv").read_text().splitlines()) == 6
    monkeypatch.setattr(Checkpointer, "save", save)
    assert main(["--resume", str(cut), "--no-progress"]) == 0
    assert (whole / "metrics.csv").read_text() == (cut / "metrics.csv").read_text()
    assert len((whole / "metrics.csv").read_text().splitlines()) == 1 + 2 * 3
    first = json.loads((whole / "summary.json").read_text())
    second = json.loads((cut / "summary.json").read_text())
    for name in ("true_reward", "reverse_kl", "win_rate", "completion_length", "labels_used",
                 "responses_scored", "per_seed_true_reward", "per_seed_labels_used",
                 "iterations", "updates", "stopped_early"):
        assert first[name] == second[name], name
    assert first["stopped_early"] is False and first["updates"] == 9
    assert min(first["per_seed_labels_used"]) > 0  # pairs were kept, so the policy moved
    assert ((whole / "model" / "model.safetensors").read_bytes()
            == (cut / "model" / "model.safetensors").read_bytes())
    capsys.readouterr()
    # A finished run: nothing to do, one line; a run with rows but no checkpoint: refused.
    assert main(["--resume", str(cut), "--no-progress"]) == 0
    lines = _error_lines(capsys)
    assert len(lines) == 1 and "is finished" in lines[0], lines
    shutil.rmtree(cut / "checkpoints")
    assert main(["--resume", str(cut), "--no-progress"]) == 2
    lines = _error_lines(capsys)
    assert len(lines) == 1 and "no checkpoint" in lines[0], lines
    assert main(["iterative-dpo", "--resume", str(cut), "--agent.iterations", "4"]) == 2
    lines = _error_lines(capsys)
    assert len(lines) == 1 and "--agent.iterations" in lines[0], lines
