"""`python -m rlkit.train sft|reward-model|dpo|hypo|iterative-dpo --task TASK [--model DIR]
[--dataset pairs.jsonl] [--seeds N] [--total-steps N] [--run-dir DIR [--overwrite]]
[--agent.FIELD VALUE ...] [--task-config.FIELD VALUE ...]`, or `... --resume RUN_DIR`

Language-model training on a text task with an exact true reward (`envs.text_tasks`):

* `sft`: supervised fine-tuning on the task's noisy demonstrations; a model trained from
  scratch (byte tokenizer) unless `--model DIR` names one to fine-tune.
* `reward-model`: a Bradley-Terry reward model on preference pairs (`--dataset`, or pairs
  sampled from `--model`); evaluated by its accuracy on held-out pairs.
* `dpo`: Direct Preference Optimisation of `--model` (the reference policy too) on preference
  pairs: `--dataset pairs.jsonl`, or, without it, `--pairs` pairs sampled from the model and
  labelled by Bradley-Terry on the true reward (written to RUN_DIR/pairs.jsonl).
* `hypo`: HyPO (`agents.hypo`), DPO's pairs as for `dpo` plus lambda times the reverse KL of
  `--agent.k` fresh samples per prompt drawn inside every update.
* `iterative-dpo`: online iterative DPO (`agents.iterative_dpo`) of `--model`: T iterations
  of sampling K completions per prompt from the current policy, labelling them with
  `--reward-model DIR` (a reward-model run; its tokenizer must be the policy's) or, without it,
  the task's exact reward (an oracle labeller), pairing and DPO warm-started from the previous
  policy (`rlkit.loops.preference.run_iterative_dpo`). Prompts are drawn from the task, or
  from the prompts of `--dataset pairs.jsonl`. The updates are `--agent.iterations` x
  `--agent.steps-per-iteration` (no `--total-steps`); a chunk is one iteration of one seed
  (checkpointed after it: `--resume` and `--stop-after-chunks` work as for the other agents).
  It writes metrics.csv (one row per seed and iteration), model/ (seed 0's) and summary.json with
  `true_reward`, `reverse_kl` (to the SFT model), `win_rate`, `labels_used`,
  `responses_scored` and `labeller`.

`--model DIR` is a local model directory: a Hugging Face one (config.json + *.safetensors +
tokenizer.json), or the directory of an SFT or DPO run (its `model/`, the final model of seed
0, in the same layout; `rlkit_model.json` marks a byte-tokenizer model, and a directory with
both it and a tokenizer.json is refused as contradictory; so is a tokenizer with more tokens
than the model's vocab_size). The run directory is
the one every rlkit run has (config.yaml, metrics.csv, summary.json, curves.png, checkpoints/;
`--resume` is exact), plus `model/` (reward-model's is a one-label sequence classifier).
summary.json adds `true_reward`, `reverse_kl` (mean over seeds of the last evaluation),
`initial_true_reward`, `win_rate` (dpo, hypo: against the reference policy under the exact
reward), `preference_accuracy`, `labels_used`, `tokens_per_second` and, for
reward-model, `held_out_pairs` (exactly --eval-prompts). Bad input is one line naming
the flag, file or line and the fix (exit 2).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import yaml

from rlkit.errors import RlkitError, require, tyro_cli

AGENTS = ("sft", "reward-model", "dpo", "hypo", "iterative-dpo")


@dataclass(frozen=True)
class PreferenceRunOptions:
    """Options of a language-model run that belong neither to the agent nor to the task."""

    task: str = "sort"
    """Text task (envs.text_tasks): sort or reverse."""
    model: str | None = None
    """Local model directory to start from (Hugging Face, rlkit, or an SFT/DPO run's
    directory); sft trains a byte-level model from scratch without it."""
    dataset: str | None = None
    """Preference JSON Lines (prompt, chosen, rejected) for reward-model, dpo and hypo; without it,
    pairs are sampled from --model and labelled by the task's true reward."""
    reward_model: str | None = None
    """iterative-dpo: a reward-model run's directory (or its model/) that labels the samples;
    without it, the task's exact reward labels them (an oracle labeller)."""
    pairs: int = 2048
    """Prompts (one pair each) sampled from --model when no --dataset is given."""
    demonstrations: int = 4096
    """SFT demonstrations drawn from the task (a fraction --task-config.demo-noise corrupted)."""
    eval_prompts: int = 256
    """Prompts sampled at every evaluation (the true reward and reverse KL are their means);
    for reward-model, the number of held-out pairs instead (the last ones of the data; the
    rest are trained on; summary.json's held_out_pairs)."""
    max_length: int = 64
    """Context length of a model trained from scratch."""
    seeds: int = 1
    """Independent seeds trained side by side (vmapped)."""
    seed: int = 0
    """Base random seed (the task's data, the pairs and the training keys)."""
    total_steps: int | None = None
    """Gradient updates per seed (default: the agent's total_steps)."""
    run_dir: str | None = None
    """Run directory (default: runs/AGENT-TASK-TIMESTAMP)."""
    num_logs: int = 10
    """About how many chunks the run is cut into (log, evaluate and checkpoint after each)."""
    checkpoint_every: int = 1
    """Save a checkpoint every this many chunks (and always after the last)."""
    stop_after_chunks: int | None = None
    """Stop (checkpointed) after this many chunks of this invocation; continue with --resume."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self):
        text_tasks = _tasks()
        require(self.task in text_tasks.TASKS, "--task",
                f"unknown task {self.task!r}; known: {', '.join(text_tasks.TASKS)}")
        for name, low in (("pairs", 1), ("demonstrations", 1), ("eval_prompts", 1),
                          ("max_length", 2), ("seeds", 1), ("num_logs", 1),
                          ("checkpoint_every", 1)):
            value = getattr(self, name)
            require(value >= low, f"--{name.replace('_', '-')}",
                    f"must be at least {low}, got {value}")
        require(0 <= self.seed < 2**32, "--seed", f"must be in [0, 2**32), got {self.seed}")
        require(self.total_steps is None or self.total_steps > 0, "--total-steps",
                f"must be positive, got {self.total_steps}")
        require(self.stop_after_chunks is None or self.stop_after_chunks >= 1,
                "--stop-after-chunks", f"must be at least 1, got {self.stop_after_chunks}; "
                "drop it to run to the end")


@dataclass(frozen=True)
class PreferenceExperiment:
    """A resolved language-model run: what config.yaml stores."""

    agent: str
    run: PreferenceRunOptions
    agent_config: Any
    task_config: Any

    @property
    def env(self) -> str:  # the run directory's name and summary.json say "env"
        return self.run.task

    def to_dict(self) -> dict:
        return {"agent": self.agent, "task": self.run.task,
                "run": dataclasses.asdict(self.run),
                "agent_config": dataclasses.asdict(self.agent_config),
                "task_config": dataclasses.asdict(self.task_config)}


def _tasks():
    """`envs.text_tasks`, through the registry (rlkit reaches envs only there)."""
    from rlkit import registry

    return registry.text_tasks()


def agent_module(name: str):
    """The module of preference agent `name` (`agents.PREFERENCE_AGENTS`)."""
    from rlkit import registry

    return registry.preference_agent_module(name)


def saved_agent(argv: list[str]) -> str | None:
    """The language-model agent of the run that `--resume RUN_DIR` or `--config FILE` in argv
    names (its config.yaml's `agent`), or None: how `python -m rlkit.train --resume RUN_DIR`
    (no agent named) reaches this CLI. Unreadable files give None (the caller reports them)."""
    try:
        known, _ = _preparse(argv)
    except RlkitError:
        return None
    if known.resume is not None:
        path = Path(known.resume) / "config.yaml"
    elif known.config is not None:
        path = Path(known.config)
    else:
        return None
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    agent = data.get("agent") if isinstance(data, dict) else None
    return agent if agent in AGENTS else None


def _preparse(argv: list[str]):
    """`(known, rest)`: the values of `--config` and `--resume`, and the other arguments."""
    from rlkit.train import _PreParser

    parser = _PreParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--config")
    parser.add_argument("--resume")
    return parser.parse_known_args(argv)


def parse(argv: list[str]) -> tuple[PreferenceExperiment, bool, bool]:
    """`(experiment, resume, overwrite)` of a command line whose first word is an agent.

    `--config FILE` (a run's config.yaml) makes its values the defaults of a new run;
    `--resume RUN_DIR` continues a run and refuses only the flags that would change its saved
    configuration (`rlkit.train.RESUMABLE_EDITS` may change).

    Raises:
        RlkitError: bad flags or values (one line, naming the flag).
    """
    import tyro

    from rlkit.train import _check_resume_edits, _flag_namer, _renamed, help_description

    text_tasks = _tasks()
    name = argv[0]
    module = agent_module(name)
    first, _ = _preparse(argv[1:])
    require(first.config is None or first.resume is None, "--config",
            "cannot be combined with --resume: a resumed run continues with its own saved "
            "config.yaml; to start a new run from it, drop --resume")
    base: PreferenceExperiment | None = None
    if first.resume is not None:
        base = load_experiment(Path(first.resume), resume=True)
        require(base.agent == name, "--resume",
                f"{first.resume} is a {base.agent} run; resume it with python -m rlkit.train "
                f"{base.agent} --resume {first.resume}")
    elif first.config is not None:
        base = load_experiment(Path(first.config))
        require(base.agent == name, "--config",
                f"{first.config} is the config of a {base.agent} run; run it with python -m "
                f"rlkit.train {base.agent} --config {first.config}")
        base = dataclasses.replace(base, run=dataclasses.replace(base.run, run_dir=None))
    agent_default, task_default, run_default = module.Config(), text_tasks.Config(), \
        PreferenceRunOptions()
    if base is not None:  # --total-steps defaults to the agent's (saved) total_steps
        agent_default, task_default = base.agent_config, base.task_config
        run_default = dataclasses.replace(base.run, total_steps=None, stop_after_chunks=None)
    text = lambda help: tyro.conf.arg(help=help)  # noqa: E731
    Root = dataclasses.make_dataclass(name, [
        ("agent", module.Config, field(default=agent_default)),
        ("task_config", text_tasks.Config, field(default=task_default)),
        ("run", Annotated[PreferenceRunOptions, tyro.conf.OmitArgPrefixes],
         field(default=run_default)),
        ("config", Annotated[str | None, text(
            "A config.yaml of an earlier run of this agent: its values become the defaults, "
            "the run gets a new directory.")], field(default=None)),
        ("resume", Annotated[str | None, text(
            "Continue the run in this directory from its newest checkpoint, with its saved "
            "configuration (only --stop-after-chunks, --progress and --checkpoint-every may "
            "change).")], field(default=None)),
        ("overwrite", Annotated[bool, text("Replace the run already in --run-dir.")],
         field(default=False)),
    ], frozen=True)
    Root.__doc__ = help_description(module)
    try:  # a config's own checks name its fields: say which flag set them
        args = tyro_cli(Root, argv[1:], f"python -m rlkit.train {name}")
    except RlkitError as error:
        raise _renamed(error, [(module.Config, _flag_namer("--agent.")),
                               (text_tasks.Config, _flag_namer("--task-config."))]) from None
    run, agent_config = args.run, args.agent
    require(name == "iterative-dpo" or run.reward_model is None, "--reward-model",
            f"labels iterative-dpo's samples; {name} does not use it (drop the flag)")
    if name == "iterative-dpo":  # its budget is the agent's iterations, not --total-steps
        require(run.total_steps is None, "--total-steps",
                "iterative-dpo's updates are --agent.iterations x --agent.steps-per-iteration; "
                "set those instead")
    else:
        if run.total_steps is not None:
            agent_config = dataclasses.replace(agent_config, total_steps=run.total_steps)
        run = dataclasses.replace(run, total_steps=agent_config.total_steps)
    experiment = PreferenceExperiment(name, run, agent_config, args.task_config)
    if first.resume is None:
        return experiment, False, args.overwrite
    require(not args.overwrite, "--overwrite", "cannot be combined with --resume; drop one "
            "of them")
    experiment = dataclasses.replace(experiment, run=dataclasses.replace(
        experiment.run, run_dir=first.resume))
    _check_resume_edits(base, experiment, "--resume",
                        f"drop the flag, or start a new run with python -m rlkit.train {name} "
                        f"--config {Path(first.resume) / 'config.yaml'} and the new value")
    return experiment, True, False


def _option(argv: list[str], flag: str) -> str | None:
    from rlkit.train import option_value

    return option_value(argv, flag)


def load_experiment(run_dir: Path, resume: bool = False) -> PreferenceExperiment:
    """The experiment saved in `run_dir/config.yaml` (or in the file `run_dir`).

    Raises:
        RlkitError: no such run, or a config.yaml that is not one of a language-model run.
    """

    text_tasks = _tasks()
    path = run_dir if run_dir.is_file() else run_dir / "config.yaml"
    require(path.is_file(), "--resume" if resume else "--config",
            f"{run_dir} has no config.yaml; pass the directory of an earlier run"
            if resume or run_dir.is_dir() else f"{run_dir}: no such file; pass a run "
            "directory's config.yaml")
    try:
        data = yaml.safe_load(path.read_text())
        module = agent_module(data["agent"])
        run = PreferenceRunOptions(**data["run"])
        return PreferenceExperiment(data["agent"], run, module.Config(**data["agent_config"]),
                                    text_tasks.Config(**data["task_config"]))
    except (yaml.YAMLError, KeyError, TypeError) as error:
        raise RlkitError(f"{path}: not the config.yaml of a language-model run ({error}); "
                         "pass a run directory made by python -m rlkit.train sft|dpo|"
                         "reward-model") from None


# Models ------------------------------------------------------------------------------------


def save_model(directory: Path, model_config, params, tokenizer, reward_model: bool = False
               ) -> None:
    """Write a model directory in the Hugging Face layout of its family
    (`rlkit.lm.checkpoint.save_pretrained`: config.json, model.safetensors and, for a
    `tokenizers` tokenizer, its files), which `load_model` and `transformers` read back. A model
    of the byte tokenizer also gets `rlkit_model.json` saying so (it has no tokenizer.json).
    `reward_model`: the variables are `TransformerRewardModel`'s (a one-label
    `*ForSequenceClassification`; `load_pretrained(directory, reward_model=True)` reads it)."""
    from rlkit.io import write_text
    from rlkit.lm.checkpoint import save_pretrained
    from rlkit.lm.tokenizer import MODEL_CONFIG, ByteTokenizer

    save_pretrained(directory, model_config, params, tokenizer=tokenizer,
                    reward_model=reward_model)
    if isinstance(tokenizer, ByteTokenizer):
        write_text(directory / MODEL_CONFIG, json.dumps({"tokenizer": "byte"}) + "\n")


def load_model(path: str | Path):
    """`(model_config, params, tokenizer)` of a local model directory.

    Args:
        path: a Hugging Face directory (config.json, *.safetensors, tokenizer.json; or
            `rlkit_model.json` naming the byte tokenizer instead), or a run directory holding
            `model/` (what sft and dpo runs save).

    The tokenizer is the byte one when the directory's `rlkit_model.json` says so, else its
    tokenizer.json (both present is refused); it must fit the model's vocabulary.

    Raises:
        RlkitError: not a directory, an RL run's directory, or no config.json (naming the
            fix); the checkpoint loader's one-line errors for missing or mismatched weights; a
            tokenizer with more tokens than the model's vocab_size
            (`rlkit.lm.checkpoint.check_vocabulary`).
    """
    from rlkit.lm.checkpoint import check_vocabulary, load_pretrained
    from rlkit.lm.tokenizer import load_tokenizer, model_directory

    directory = model_directory(path)
    require((directory / "config.json").is_file(), "--model",
            f"{directory} has no config.json; pass a Hugging Face model directory (config.json, "
            "*.safetensors, tokenizer.json) or the directory of an sft run (it saves model/)")
    model_config, params = load_pretrained(directory)
    tokenizer = load_tokenizer(directory)
    check_vocabulary(tokenizer, model_config, directory)
    return model_config, params, tokenizer


# Building a run ------------------------------------------------------------------------------


@dataclass
class BuiltRun:
    """What `build` makes: the trainer and what the summary needs."""

    trainer: Any
    agent: Any
    spec: Any
    num_chunks: int
    budget_note: str | None
    labels_used: int
    tokens_per_update: int
    pairs: list | None  # sampled preference records to write to RUN_DIR/pairs.jsonl
    tokenizer: Any = None
    held_out_pairs: int | None = None  # reward-model: the pairs evaluated, not trained on


def _text_spec(model_config, tokenizer, prompt_tokens: int, completion_tokens: int):
    """The `TextSpec` of `model_config` with prompts of `prompt_tokens` and completions of
    `completion_tokens` tokens.

    Raises:
        RlkitError: naming --model, when the two lengths do not fit in the model's context.
    """
    from rlkit.types import TextSpec

    require(prompt_tokens + completion_tokens <= model_config.max_length, "--model",
            f"the task's prompts and completions need {prompt_tokens + completion_tokens} "
            f"tokens, more than the model's context of {model_config.max_length}")
    return TextSpec(model_config, prompt_tokens, completion_tokens, tokenizer.pad_id,
                    tokenizer.eos_id)


def build(experiment: PreferenceExperiment, run_dir: Path) -> BuiltRun:
    """Tokenizer, model, task, data, agent and driver of `experiment`.

    Raises:
        RlkitError: bad input: missing --model for dpo, an unusable model directory, a
            preference file with a bad line, a record longer than the model's context.
    """
    import jax

    from rlkit.data.preferences import load_preferences
    from rlkit.lm.tokenizer import ByteTokenizer
    from rlkit.lm.transformer import TransformerConfig
    from rlkit.loops import preference as driver
    from rlkit.train import plan_budget

    text_tasks = _tasks()
    run, name = experiment.run, experiment.agent
    module = agent_module(name)
    require(name not in ("dpo", "hypo") or run.model is not None, "--model",
            f"{name} fine-tunes a model and keeps it as the reference policy; pass --model DIR "
            "(e.g. the directory of an sft run)")
    require(name != "sft" or run.dataset is None, "--dataset",
            "sft learns from the task's demonstrations; drop --dataset (it is for "
            "reward-model, dpo and hypo)")
    if run.model is None:
        tokenizer, params = ByteTokenizer(), None
        # SFT's shape fields; a reward model from scratch has the default small shape.
        shape = {name: getattr(experiment.agent_config, name) for name in
                 ("num_layers", "width", "num_heads", "mlp_width")
                 if hasattr(experiment.agent_config, name)}
        model_config = TransformerConfig(vocab_size=tokenizer.vocab_size,
                                         max_length=run.max_length, **shape)
    else:
        model_config, params, tokenizer = load_model(run.model)
    task = text_tasks.make_text_task(run.task, experiment.task_config, tokenizer)
    rng = np.random.default_rng(run.seed)
    eval_rng = np.random.default_rng([run.seed, 1])  # the evaluation prompts, apart from data
    prompt_tokens, completion_tokens = task.prompt_tokens, task.completion_tokens
    records, lines, source, sampled = None, None, None, None
    if name == "sft":
        items = text_tasks.demonstrations(task, rng, run.demonstrations)
        fields = ("prompt", "completion")
    else:
        if run.dataset is not None:
            source = run.dataset
            records = load_preferences(run.dataset)
            lines = driver.record_lines(run.dataset)
        else:
            require(run.model is not None, "--dataset",
                    f"{name} needs preference pairs: pass --dataset pairs.jsonl, or --model DIR "
                    "to sample them from")
            records = sampled = _sample_pairs(experiment, task, tokenizer, model_config, params,
                                              rng)
        items = [(r.prompt, r.chosen, r.rejected) for r in records]
        fields = ("prompt", "chosen", "rejected")
    lengths = driver.text_lengths(tokenizer, items, model_config.max_length, source=source,
                                  lines=lines, fields=fields)
    prompt_tokens = max(prompt_tokens, lengths[0])
    completion_tokens = max(completion_tokens, lengths[1])
    spec = _text_spec(model_config, tokenizer, prompt_tokens, completion_tokens)
    agent = module.make_agent(experiment.agent_config, spec, params)
    if name == "sft":
        data = driver.tokenize_demonstrations(tokenizer, items, prompt_tokens, completion_tokens)
    else:
        data = driver.tokenize_pairs(tokenizer, records, prompt_tokens, completion_tokens)
    held_out = None
    if agent.feed.generates:
        eval_data = driver.tokenize_prompts(tokenizer, task.sample_prompts(
            eval_rng, run.eval_prompts), prompt_tokens)
    else:
        held_out = run.eval_prompts
        require(len(records) > held_out, "--eval-prompts",
                f"{len(records)} pair(s) leave none to train on after holding out {held_out} "
                f"for evaluation; pass --eval-prompts below {len(records)}")
        eval_data = jax.tree.map(lambda x: x[-held_out:], data)
        data = jax.tree.map(lambda x: x[:-held_out], data)
    budget = plan_budget(run.total_steps, 1, run.num_logs, "updates", name)
    trainer = driver.make_preference_trainer(agent, data, eval_data, budget.iterations_per_chunk,
                                             reward_fn=task.reward_tokens)
    rows = int(jax.tree.leaves(data)[0].shape[0])
    width = prompt_tokens + completion_tokens
    return BuiltRun(trainer=trainer, agent=agent, spec=spec, num_chunks=budget.num_chunks,
                    budget_note=budget.note, labels_used=0 if name == "sft" else rows,
                    tokens_per_update=agent.feed.batch_size * width * (
                        1 if name == "sft" else 2 + getattr(experiment.agent_config, "k", 0)),
                    pairs=sampled, tokenizer=tokenizer, held_out_pairs=held_out)


def _sample_pairs(experiment, task, tokenizer, model_config, params, rng) -> list:
    """Preference pairs sampled from the --model (two completions per prompt, KV cache,
    temperature 1) and labelled by Bradley-Terry on the true reward."""
    import jax

    from rlkit.loops import preference as driver

    text_tasks, sft = _tasks(), agent_module("sft")
    run = experiment.run
    spec = _text_spec(model_config, tokenizer, task.prompt_tokens, task.completion_tokens)
    sampler = sft.make_agent(sft.Config(), spec, params)
    state = sampler.init(jax.random.key(0))
    key = jax.random.key(run.seed)

    def sample(prompts: list[str], draw: int) -> list[str]:
        prompt_batch = driver.tokenize_prompts(tokenizer, prompts, task.prompt_tokens)
        tokens, mask = driver.sample_completions(sampler, state, prompt_batch,
                                                 jax.random.fold_in(key, draw))
        texts = []
        for row, keep in zip(tokens, mask, strict=True):
            ids = [int(i) for i in row[keep & (row != tokenizer.eos_id)]]
            text = tokenizer.decode(ids)
            # A sample whose text is not its tokens (bytes that are not UTF-8, special ids)
            # cannot be written as a preference line faithfully: skipped like an empty one.
            texts.append(text if tokenizer.encode(text) == ids else "")
        return texts

    records, skipped = text_tasks.sample_preference_pairs(task, rng, run.pairs, sample)
    if skipped:
        print(f"note: {skipped} of {run.pairs} prompts skipped: a sampled completion was empty "
              "or not valid text", file=sys.stderr)
    require(bool(records), "--model", "every sampled completion was empty; train the model "
            "longer (sft) before sampling pairs from it")
    return records


# Running -----------------------------------------------------------------------------------


def execute(experiment: PreferenceExperiment, resume: bool = False, overwrite: bool = False):
    """Build and run `experiment`: the final model is saved and summary.json written once,
    with the language-model figures (`run_training`'s `finish`), then curves.png redrawn.

    Returns:
        The `rlkit.runner.RunResult` (its summary completed).
    """
    from rlkit.data.preferences import save_preferences
    from rlkit.runner import run_training
    from rlkit.train import check_run_dir, prepare_run_dir

    run_dir = check_run_dir(experiment, resume, overwrite)
    if experiment.agent == "iterative-dpo":
        return _execute_iterative(experiment, run_dir, resume)
    built = build(experiment, run_dir)
    if built.budget_note is not None:
        print(built.budget_note, file=sys.stderr)
    if built.pairs is not None:  # resumable: the saved config reads the pairs written here
        experiment = dataclasses.replace(experiment, run=dataclasses.replace(
            experiment.run, dataset=str(run_dir / "pairs.jsonl")))
    prepare_run_dir(experiment, run_dir, resume)
    if built.pairs is not None:
        save_preferences(run_dir / "pairs.jsonl", built.pairs)
    run = experiment.run

    def finish(carry, summary: dict) -> dict:  # summary.json is written once, with these
        import jax

        save_model(run_dir / "model", built.spec.model,
                   jax.tree.map(lambda x: x[0], built.trainer.agent_state(carry).params),
                   built.tokenizer, reward_model=experiment.agent == "reward-model")
        return _figures(built, carry, summary, run_dir)

    try:
        result = run_training(
            built.trainer, num_chunks=built.num_chunks, num_seeds=run.seeds, seed=run.seed,
            run_dir=run_dir, header={"agent": experiment.agent, "env": run.task,
                                     "task": run.task},
            resume=resume, checkpoint_every=run.checkpoint_every, show_progress=run.progress,
            stop_after_chunks=run.stop_after_chunks, finish=finish)
    except KeyboardInterrupt as error:
        error.run_dir = run_dir  # for the CLI's "resume with ... --resume RUN" line
        raise
    _plot(experiment, result.carry, run_dir)
    return result


# Online iterative DPO ------------------------------------------------------------------------


def same_tokenizer(first, second) -> str | None:
    """None when two tokenizers encode alike (both the byte tokenizer, or `tokenizers` files
    with the same serialisation and special ids), else a few words saying how they differ."""
    if type(first) is not type(second):
        return f"{type(first).__name__} against {type(second).__name__}"
    specials = ("vocab_size", "pad_id", "bos_id", "eos_id")
    for name in specials:
        if getattr(first, name) != getattr(second, name):
            return f"{name} {getattr(first, name)} against {getattr(second, name)}"
    if hasattr(first, "tokenizer") and first.tokenizer.to_str() != second.tokenizer.to_str():
        return "different tokenizer.json vocabularies or rules"
    return None


def load_reward_model(path: str, tokenizer):
    """`(model_config, params)` of the Bradley-Terry reward model in `path` (a reward-model
    run's directory or its model/), checked against the policy's tokenizer.

    Raises:
        RlkitError: naming --reward-model: no such model, not a reward model, or a tokenizer
            that differs from the policy's.
    """
    from rlkit.lm.checkpoint import load_pretrained
    from rlkit.lm.tokenizer import load_tokenizer, model_directory

    require(Path(path).is_dir(), "--reward-model",
            f"{path} is not a directory; pass the directory of a reward-model run")
    directory = model_directory(path)
    require((directory / "config.json").is_file(), "--reward-model",
            f"{directory} has no config.json; pass the directory of a python -m rlkit.train "
            "reward-model run")
    try:
        model_config, params = load_pretrained(directory, reward_model=True)
        reward_tokenizer = load_tokenizer(directory)
    except RlkitError as error:
        raise RlkitError(f"--reward-model: {error}") from None
    difference = same_tokenizer(reward_tokenizer, tokenizer)
    require(difference is None, "--reward-model",
            f"{directory}'s tokenizer differs from the policy's ({difference}); train the "
            "reward model from the policy's model (python -m rlkit.train reward-model --model "
            "SFT_RUN)")
    return model_config, params


def _execute_iterative(experiment: PreferenceExperiment, run_dir: Path, resume: bool = False):
    """Run online iterative DPO (`agents.iterative_dpo`, `rlkit.loops.preference.
    run_iterative_dpo`) for each seed in turn; write metrics.csv (one row per seed and
    iteration), model/ (seed 0's final policy, as soon as seed 0 is done) and summary.json.

    A chunk is one iteration of one seed (chunk = seed * T + iteration - 1): after each, its
    row is appended to metrics.csv and the carry (`IterativeCarry`: policy, pairs so far, their
    count, key, iterations done) is checkpointed as step `chunk` (every --checkpoint-every
    chunks, and the last of the invocation), so `--resume` continues from the newest complete
    iteration exactly (a resumed seed redraws the prompts of its iterations done, which brings
    its prompt generator where it was); --stop-after-chunks stops there."""
    import jax
    import jax.numpy as jnp

    from rlkit.checkpoint import Checkpointer
    from rlkit.data.preferences import load_preferences
    from rlkit.lm.transformer import TransformerRewardModel, positions_from_mask
    from rlkit.loops import preference as driver
    from rlkit.runner import MetricsLog, RunResult, restore_run, write_json_atomic
    from rlkit.train import prepare_run_dir

    iterative_dpo = agent_module("iterative-dpo")
    run, config = experiment.run, experiment.agent_config
    require(run.model is not None, "--model",
            "iterative-dpo fine-tunes a model and samples from it; pass --model DIR (e.g. the "
            "directory of an sft run)")
    model_config, sft_params, tokenizer = load_model(run.model)
    task = _tasks().make_text_task(run.task, experiment.task_config, tokenizer)
    prompt_tokens, completion_tokens = task.prompt_tokens, task.completion_tokens
    prompt_pool = None
    if run.dataset is not None:  # the prompts to sample from: the file's
        records = load_preferences(run.dataset)
        prompt_pool = [r.prompt for r in records]
        lengths = driver.text_lengths(tokenizer, [(r.prompt, r.chosen) for r in records],
                                      model_config.max_length, source=run.dataset,
                                      lines=driver.record_lines(run.dataset))
        prompt_tokens = max(prompt_tokens, lengths[0])
    spec = _text_spec(model_config, tokenizer, prompt_tokens, completion_tokens)
    if run.reward_model is None:
        labeller = "exact reward (oracle)"

        def score_fn(full, completions, mask):
            return task.reward_tokens(full.tokens[:, :prompt_tokens], completions, mask)
    else:
        reward_config, reward_params = load_reward_model(run.reward_model, tokenizer)
        require(prompt_tokens + completion_tokens <= reward_config.max_length,
                "--reward-model", f"its context of {reward_config.max_length} tokens is "
                f"shorter than the task's {prompt_tokens + completion_tokens}")
        labeller = f"reward model {run.reward_model}"
        reward_network = TransformerRewardModel(reward_config)

        def score_fn(full, completions, mask):
            attention = full.attention_mask
            return reward_network.apply(reward_params, full.tokens,
                                        positions_from_mask(attention), attention)

    def length_fn(completions, mask):  # characters of the decoded completions
        return np.array([len(tokenizer.decode([int(i) for i in row[keep & (row != spec.eos_id)]]))
                         for row, keep in zip(completions, mask, strict=True)], np.float32)

    prepare_run_dir(experiment, run_dir, resume)
    eval_rng = np.random.default_rng([run.seed, 1])
    eval_prompts = driver.tokenize_prompts(tokenizer, task.sample_prompts(
        eval_rng, run.eval_prompts), prompt_tokens)
    agent = iterative_dpo.make_text_agent(config, spec, sft_params)
    iterations, num_chunks = config.iterations, run.seeds * config.iterations

    def seed_key(seed: int):
        return jax.random.key(np.uint32(run.seed) + np.uint32(seed))

    log = MetricsLog(run_dir / "metrics.csv")
    checkpointer = Checkpointer(run_dir / "checkpoints")
    like = {"carry": driver.init_iterative_carry(agent, config, spec, seed_key(0))}
    try:
        first, restored = 0, None
        if resume:
            restored, first = restore_run(checkpointer, log, like, run_dir)
        elif log.path.exists():
            log.path.unlink()
            log = MetricsLog(log.path)
        done = run_dir / "summary.json"  # a stopped run's is rewritten when it ends
        if (first >= num_chunks and done.exists()
                and not json.loads(done.read_text()).get("stopped_early")):
            print(f"note: {run_dir} is finished (all {iterations} iterations of "
                  f"{run.seeds} seed(s)); nothing to do", file=sys.stderr)
            return RunResult(summary=json.loads(done.read_text()), run_dir=run_dir)
        last = num_chunks - 1
        if run.stop_after_chunks is not None:
            last = min(last, first + run.stop_after_chunks - 1)
        for seed in range(first // iterations, last // iterations + 1):
            rng = np.random.default_rng([run.seed, 2, seed])

            def draw_texts(rng=rng) -> list[str]:
                if prompt_pool is None:
                    return task.sample_prompts(rng, config.prompts_per_iteration)
                return [prompt_pool[i] for i in rng.integers(
                    0, len(prompt_pool), config.prompts_per_iteration)]

            carry = None
            if first % iterations and seed == first // iterations:  # within a seed
                carry = restored["carry"]
                for _ in range(int(carry.iteration)):  # the prompts of the iterations done
                    draw_texts()

            def draw_prompts(iteration: int):
                return driver.tokenize_prompts(tokenizer, draw_texts(), prompt_tokens)

            def report(iteration: int, figures: dict, carry, seed=seed) -> None:
                chunk = seed * iterations + iteration
                log.append([{"seed": seed, "chunk": chunk, "iteration": iteration + 1,
                             "updates": (iteration + 1) * config.steps_per_iteration,
                             **figures}])  # on disk at once: a crash keeps what was done
                if seed == 0 and iteration + 1 == iterations:
                    save_model(run_dir / "model", model_config,
                               jax.tree.map(jnp.asarray, carry.params), tokenizer)
                if (chunk + 1) % run.checkpoint_every == 0 or chunk == last:
                    checkpointer.save(chunk, {"carry": carry})
                if run.progress:
                    print(f"seed {seed} iteration {iteration + 1}/{iterations}: "
                          f"true_reward {figures['true_reward']:.4g}, win_rate "
                          f"{figures['win_rate']:.3g}, labels_used {figures['labels_used']}",
                          file=sys.stderr)

            driver.run_iterative_dpo(
                agent, config, spec, sft_params, draw_prompts, score_fn,
                iterative_dpo.select_pairs(config), task.reward_tokens, eval_prompts,
                seed_key(seed), length_fn=length_fn if config.pair_rule == "max_min_p" else None,
                on_iteration=report, carry=carry, stop=last - seed * iterations + 1)
    except KeyboardInterrupt as error:
        error.run_dir = run_dir  # for the CLI's "resume with ... --resume RUN" line
        raise
    finally:
        checkpointer.close()
    summary = _iterative_summary(experiment, labeller, log.read(), stopped=last < num_chunks - 1)
    write_json_atomic(run_dir / "summary.json", summary)
    return RunResult(summary=summary, run_dir=run_dir)


def _iterative_summary(experiment: PreferenceExperiment, labeller: str,
                       rows: list[dict[str, str]], stopped: bool) -> dict:
    """summary.json of an iterative-dpo run, from metrics.csv: each seed's last iteration's
    figures (the CSV's floats read back exactly), means over seeds. A run stopped early
    (--stop-after-chunks) gets its counts and `stopped_early` only."""
    from rlkit.runner import json_safe

    run, config = experiment.run, experiment.agent_config
    summary: dict[str, Any] = {
        "agent": experiment.agent, "env": run.task, "task": run.task, "seeds": run.seeds,
        "iterations": config.iterations, "updates": config.total_steps, "labeller": labeller,
        "stopped_early": stopped}
    if stopped:
        return json_safe({**summary, "last_chunk": max(int(r["chunk"]) for r in rows)})
    finals = [max((r for r in rows if int(r["seed"]) == seed), key=lambda r: int(r["chunk"]))
              for seed in range(run.seeds)]

    def per_seed(name: str) -> list:
        return [(int if name in ("labels_used", "responses_scored") else float)(f[name])
                for f in finals]

    summary.update({name: float(np.mean(per_seed(name))) for name in (
        "true_reward", "reverse_kl", "win_rate", "completion_length")})
    summary.update(labels_used=int(round(np.mean(per_seed("labels_used")))),
                   responses_scored=per_seed("responses_scored")[0],
                   **{f"per_seed_{name}": per_seed(name)
                      for name in ("true_reward", "reverse_kl", "win_rate", "labels_used")})
    return json_safe(summary)


PANELS = {"sft": [("true_reward", "true reward"), ("loss", "loss (next-token)")],
          "dpo": [("true_reward", "true reward"), ("reverse_kl", "reverse KL to the reference "
                                                   "(nats)"), ("loss", "loss")],
          "hypo": [("true_reward", "true reward"), ("reverse_kl", "reverse KL to the reference "
                                                    "(nats)"), ("kl_estimate", "KL of the fresh "
                                                                "samples (nats)")],
          "reward-model": [("eval_preference_accuracy", "held-out preference accuracy"),
                           ("loss", "loss (Bradley-Terry)")]}
"""curves.png's panels per agent: (metrics.csv column, title), against updates."""


def _plot(experiment: PreferenceExperiment, carry, run_dir: Path) -> None:
    """Rewrite curves.png with the agent's `PANELS` against updates, the evaluation of the
    starting model (update 0, from the carry) included (`rlkit.plotting.plot_curves`)."""
    from rlkit.loops.common import UPDATES
    from rlkit.plotting import plot_curves
    from rlkit.runner import MetricsLog

    start = [{"seed": str(seed), UPDATES.column: "0",
              **{name: str(float(np.asarray(values)[seed]))
                 for name, values in carry.initial_evaluation.items()}}
             for seed in range(experiment.run.seeds)]
    plot_curves(start + MetricsLog(run_dir / "metrics.csv").read(), run_dir / "curves.png",
                title=f"{experiment.agent} on {experiment.run.task}", unit=UPDATES,
                panels=PANELS[experiment.agent])


def _figures(built: BuiltRun, carry, summary: dict, run_dir: Path) -> dict:
    """summary.json's language-model figures: the final and initial evaluations of each seed
    (from the carry), the last chunk's training preference accuracy (metrics.csv; the
    held-out one for reward models) and training tokens per second (padded tokens of all
    seeds, compilation excluded)."""
    from rlkit.runner import MetricsLog, json_safe

    def mean(values: list[float]) -> float | None:
        finite = [v for v in values if np.isfinite(v)]
        return float(np.mean(finite)) if finite else None

    figures: dict[str, Any] = {"labels_used": built.labels_used}
    if built.held_out_pairs is not None:
        figures["held_out_pairs"] = built.held_out_pairs
    for prefix, evaluation in (("", carry.evaluation), ("initial_", carry.initial_evaluation)):
        for name, values in evaluation.items():
            per_seed = [float(v) for v in np.asarray(values)]
            figures[f"{prefix}{name}"] = mean(per_seed)
            figures[f"per_seed_{prefix}{name}"] = per_seed
    rows = MetricsLog(run_dir / "metrics.csv").read()
    column = "preference_accuracy"
    if rows and column in rows[-1]:
        last = max(int(row["chunk"]) for row in rows)
        figures[column] = mean([float(row[column]) for row in rows if int(row["chunk"]) == last])
    else:
        figures[column] = figures.get("eval_preference_accuracy")
    rate = summary.get("updates_per_second")
    figures["tokens_per_second"] = None if rate is None else rate * built.tokens_per_update
    return json_safe(figures)


def print_summary(result) -> None:
    """A few lines at the end of a run."""
    s = result.summary
    parts = [f"{s['agent']} on {s['task']}: {s['seeds']} seed(s), {s['updates']:,} updates"]
    if s["agent"] == "iterative-dpo":
        parts.append(f"labeller {s['labeller']}")
    for name in ("initial_true_reward", "true_reward", "reverse_kl", "win_rate",
                 "eval_preference_accuracy",
                 "preference_accuracy", "labels_used", "held_out_pairs", "tokens_per_second"):
        if s.get(name) is not None:
            value = s[name]
            parts.append(f"{name} {value:.4g}" if isinstance(value, float) else f"{name} {value}")
    print("; ".join(parts))
    if s.get("stopped_early"):
        print(f"stopped early (--stop-after-chunks): continue with "
              f"python -m rlkit.train --resume {result.run_dir}")
    files = ["metrics.csv", "summary.json"]
    files += [name for name in ("model/", "curves.png")
              if (Path(result.run_dir) / name.rstrip("/")).exists()]
    print(f"run directory: {result.run_dir}  ({', '.join(files)})")


def main(argv: list[str]) -> int:
    """Run the command line `argv` (its first word is sft, reward-model or dpo).

    Returns:
        The exit status, as `rlkit.train`'s: 0 done, 1 a disk that refused a write, 2 bad input
        (one line on stderr), 3 diverged, 130 Ctrl-C, 143 SIGTERM.
    """
    from rlkit.errors import DIVERGED, run_guarded

    result, status = run_guarded(lambda: execute(*parse(argv)))
    if status is not None:
        return status
    if result.summary.get("diverged") is not None:
        print(f"error: diverged: the parameters stopped being finite "
              f"({result.summary['diverged']}); lower --agent.learning-rate "
              f"({result.run_dir}/summary.json)", file=sys.stderr)
        return DIVERGED
    print_summary(result)
    return 0
