"""The preference driver: SFT, reward models and Direct Preference Optimisation on tokenized
text, the one jit boundary of those agents (ARCHITECTURE.md section 5).

For agents with a `PreferenceFeed`. A run is `lax.scan` over updates inside one jitted,
seed-vmapped chunk, as in the offline driver: the tokenized data ([M, T] `Sequences` or
`PreferencePairs`) is an argument of the compiled chunk shared by every seed, and each update
draws `batch_size` rows with replacement with `jax.random` inside the scan.

At the end of every chunk (and once at `init`) the driver evaluates the current model inside the
same compiled program:

* agents that generate (SFT, DPO): `act` samples one completion per evaluation prompt with the
  KV cache at temperature 1; the task's exact reward scores them (`true_reward`, the mean), and
  where `act` also returns the reference policy's log-probabilities (DPO), the reverse
  KL(pi || pi_ref) is estimated by the mean over samples of log pi(y | x) - log pi_ref(y | x)
  (`reverse_kl`; unbiased, since y ~ pi). `completion_length` is the mean generated length.
  Those agents also get `win_rate`: one completion of the reference policy per prompt (its
  own key), and the share of prompts where the policy's completion has the higher exact
  reward, ties counted 1/2 (0.5 for the initial model in expectation; NaN for SFT).
* reward models: `eval_preference_accuracy`, the share of held-out pairs it orders as labelled.

Those figures are metrics of the chunk's last iteration (NaN on the others, so metrics.csv gets
the end-of-chunk value), and `evaluate(carry)` returns the headline one (`true_reward`, or the
held-out accuracy) from the carry, so `rlkit.runner` logs it as `eval_return` with no extra
work. The carry also keeps the evaluation of the initial model (`initial_evaluation`), the
baseline a fine-tuning run is compared with.

With several devices (GPUs, or forced host devices), every language-model phase is data
parallel: the batch axis of each update's batch, of generation's prompts and of the evaluation
prompts is split over the most devices that divide it (`data_parallel`: a sharding constraint
inside the jitted program; parameters replicated, gradients all-reduced by GSPMD), and the
numbers are the single-device ones up to floating-point summation order
(tests/test_preference_sharding.py). One device runs the plain single-device program.

The unit is `UPDATES`: `--total-steps`, progress and curves count gradient updates. The module
also turns text into the arrays the agents take (`tokenize_*`), with one-line errors naming the
file and line of a record that cannot be used.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from rlkit.data.preferences import PreferenceRecord
from rlkit.errors import RlkitError, raise_pending_interrupt, require
from rlkit.loops.common import UPDATES, BoundRun, Trainer, over_seeds
from rlkit.types import Agent, Array, PreferencePairs, PyTree, Sequences

GENERATION_METRICS = ("true_reward", "reverse_kl", "completion_length", "win_rate")
REWARD_MODEL_METRICS = ("eval_preference_accuracy",)


@struct.dataclass
class PreferenceCarry:
    """One seed's training state (all arrays: checkpointable).

    Attributes:
        agent_state: the agent's state.
        key: the seed's PRNG key.
        iteration: int32, updates done.
        evaluation: float32 scalars of the latest evaluation (`GENERATION_METRICS` or
            `REWARD_MODEL_METRICS`).
        initial_evaluation: the same figures for the initial model.
    """

    agent_state: PyTree
    key: Array
    iteration: Array
    evaluation: dict
    initial_evaluation: dict


def headline_metric(agent: Agent) -> str:
    """The evaluation figure `evaluate` reports for `agent` (summary.json's `final_return`)."""
    return "true_reward" if agent.feed.generates else "eval_preference_accuracy"


def win_rate_against(rewards: Array, reference_rewards: Array) -> Array:
    """The share of prompts where the policy's completion has the higher reward than the
    reference policy's, ties counted 1/2 (AlpacaEval's convention).

    Args:
        rewards: [E] exact rewards of one policy completion per prompt.
        reference_rewards: [E] the same for the reference policy's completion.

    Returns:
        A float32 scalar in [0, 1].
    """
    return ((rewards > reference_rewards)
            + 0.5 * (rewards == reference_rewards)).mean(dtype=jnp.float32)


def data_parallel(batch_size: int, devices: Sequence[jax.Device] | None = None
                  ) -> tuple[Callable[[PyTree], PyTree], int]:
    """Data parallelism for the language-model phases: a function that constrains a batch's
    leading axis to be split over a 1-D device mesh ("batch"), inside a jitted program (GSPMD
    partitions the rest: parameters stay replicated, gradients are all-reduced). It uses the
    most devices (of `devices`, default every device JAX sees) that split `batch_size` evenly;
    with one device (or a prime batch size above the device count) it is the identity, and the
    program is the single-device one.

    Args:
        batch_size: the leading axis of every batch the function will see.
        devices: the devices to split over (default `jax.devices()`).

    Returns:
        (constrain, the number of devices used).
    """
    devices = list(jax.devices() if devices is None else devices)
    count = max(d for d in range(1, len(devices) + 1) if batch_size % d == 0)
    if count == 1:
        return (lambda tree: tree), 1
    sharding = jax.sharding.NamedSharding(jax.sharding.Mesh(np.array(devices[:count]), ("batch",)),
                                          jax.sharding.PartitionSpec("batch"))
    return (lambda tree: jax.lax.with_sharding_constraint(tree, sharding)), count


def make_preference_trainer(
    agent: Agent,
    data: Sequences | PreferencePairs,
    eval_data: Sequences | PreferencePairs,
    iterations_per_chunk: int,
    *,
    reward_fn: Callable[[Array, Array, Array], Array] | None = None,
) -> Trainer:
    """Build a `Trainer` that trains a language-model agent on tokenized data.

    Args:
        agent: an agent with a `PreferenceFeed`.
        data: training rows, numpy leaves [M, T]: `Sequences` (demonstrations) or
            `PreferencePairs`, as `agent.feed.data` says.
        eval_data: for agents that generate, the evaluation prompts (`Sequences` [E, P],
            left-padded); for reward models, held-out `PreferencePairs` [E, T].
        iterations_per_chunk: updates per `run` call.
        reward_fn: for agents that generate, the task's exact reward on tokens,
            `(prompt_tokens [E, P], completion_tokens [E, N], completion_mask [E, N]) -> [E]`.

    Returns:
        A `Trainer` whose iterations are updates.

    Raises:
        RlkitError: no rows, data of the wrong kind for the agent, or a generating agent
            without `reward_fn`.
    """
    feed = agent.feed
    pairs = isinstance(data, PreferencePairs)
    require(pairs == (feed.data == "pairs"), "dataset",
            f"this agent learns from {feed.data}, got "
            f"{'preference pairs' if pairs else 'demonstrations'}")
    size = int(jax.tree.leaves(data)[0].shape[0])
    require(size >= 1, "dataset", "holds no rows; it needs at least one")
    require(not feed.generates or reward_fn is not None, "reward_fn",
            "an agent that generates is evaluated by the task's reward; pass reward_fn")
    batch_size = feed.batch_size
    split_batch, _ = data_parallel(batch_size)
    split_eval, _ = data_parallel(int(jax.tree.leaves(eval_data)[0].shape[0]))

    def evaluate_state(agent_state: PyTree, key: Array, eval_data) -> dict:
        eval_data = split_eval(eval_data)
        if not feed.generates:
            chosen, _ = agent.act(agent_state, eval_data.chosen, key, jnp.int32(0))  # [E]
            rejected, _ = agent.act(agent_state, eval_data.rejected, key, jnp.int32(0))  # [E]
            return {"eval_preference_accuracy": (chosen > rejected).mean(dtype=jnp.float32)}
        completions, extras = agent.act(agent_state, eval_data, key, jnp.int32(0))  # [E, N]
        mask = extras["completion_mask"]  # [E, N]
        rewards = reward_fn(eval_data.tokens, completions, mask)  # [E]
        if "reference_log_probs" in extras:
            log_ratio = extras["log_probs"] - extras["reference_log_probs"]  # [E]
            reverse_kl = log_ratio.mean()
            # One completion of the reference policy per prompt, on a key of its own.
            reference_tokens, reference_extras = agent.act(
                agent_state.replace(params=agent_state.reference_params), eval_data,
                jax.random.fold_in(key, 1), jnp.int32(0))
            reference_rewards = reward_fn(eval_data.tokens, reference_tokens,
                                          reference_extras["completion_mask"])  # [E]
            win_rate = win_rate_against(rewards, reference_rewards)
        else:  # no reference policy (SFT)
            reverse_kl = win_rate = jnp.float32(jnp.nan)
        return {"true_reward": rewards.mean(), "reverse_kl": reverse_kl.astype(jnp.float32),
                "completion_length": mask.sum(-1).mean(dtype=jnp.float32),
                "win_rate": win_rate}

    def init_one(key: Array, eval_data) -> PreferenceCarry:
        agent_key, eval_key, key = jax.random.split(key, 3)
        agent_state = agent.init(agent_key)
        evaluation = evaluate_state(agent_state, eval_key, eval_data)
        return PreferenceCarry(agent_state=agent_state, key=key,
                               iteration=jnp.zeros((), jnp.int32), evaluation=evaluation,
                               initial_evaluation=jax.tree.map(jnp.copy, evaluation))

    def run_chunk(carry: PreferenceCarry, data, eval_data):
        def body(carry: PreferenceCarry, _):
            key, batch_key, update_key = jax.random.split(carry.key, 3)
            rows = jax.random.randint(batch_key, (batch_size,), 0, size)  # with replacement
            batch = split_batch(jax.tree.map(lambda x: x[rows], data))  # [B, T] leaves
            agent_state, metrics = agent.update(carry.agent_state, batch, update_key)
            carry = carry.replace(agent_state=agent_state, key=key,
                                  iteration=carry.iteration + 1)
            return carry, metrics

        carry, metrics = jax.lax.scan(body, carry, None, length=iterations_per_chunk)
        key, eval_key = jax.random.split(carry.key)
        evaluation = evaluate_state(carry.agent_state, eval_key, eval_data)
        carry = carry.replace(key=key, evaluation=evaluation)
        # Evaluated once per chunk: the last iteration holds the value, the others NaN.
        blank = jnp.full((iterations_per_chunk,), jnp.nan, jnp.float32)
        metrics = {**metrics, **{name: blank.at[-1].set(value)
                                 for name, value in evaluation.items()}}
        return carry, metrics

    device_data, device_eval = jax.device_put(data), jax.device_put(eval_data)
    init_compiled = jax.jit(over_seeds(init_one, num_shared=1, map_on_cpu=True))
    run = BoundRun(jax.jit(over_seeds(run_chunk, num_shared=2), donate_argnums=0),
                   device_data, device_eval)
    headline = headline_metric(agent)
    return Trainer(
        init=lambda keys: init_compiled(keys, device_eval),
        run=run,
        evaluate=lambda carry: carry.evaluation[headline],
        steps_per_iteration=0,
        iterations_per_chunk=iterations_per_chunk,
        unit=UPDATES,
        units_per_iteration=1,
        agent_state=lambda carry: carry.agent_state,
        episodic=False,
    )


def sample_completions(agent: Agent, agent_state: PyTree, prompts: Sequences, key: Array
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Sample one completion per prompt with `agent.act` (compiled here, on one seed's state).

    Args:
        agent: an agent that generates.
        agent_state: one seed's state (no seed axis).
        prompts: `Sequences` [B, P], left-padded.
        key: PRNG key.

    Returns:
        (tokens [B, N] int32, completion_mask [B, N] bool) as numpy arrays.
    """
    tokens, extras = jax.jit(agent.act)(agent_state, prompts, key, jnp.int32(0))
    return np.asarray(tokens), np.asarray(extras["completion_mask"])


# Preference bandits ------------------------------------------------------------------------


def make_bandit_pair_run(agent: Agent, num_updates: int, batch_size: int) -> Callable:
    """One seed's training of a tabular agent on a fixed set of bandit pairs (offline DPO, HyPO).

    Args:
        agent: a tabular agent (`agents.hypo.make_tabular_agent`) whose `update` takes
            `envs.preference_bandits.PreferencePairs` batches.
        num_updates: gradient updates.
        batch_size: pairs per update, drawn with replacement.

    Returns:
        `run(key, pairs) -> (state, metrics)`: pairs [M, ...] (this seed's dataset), the final
        agent state and the updates' metrics stacked [num_updates]. Pure: vmap it over seeds and
        compile it with `run_over_seeds`.
    """

    def run(key: Array, pairs) -> tuple[PyTree, dict]:
        init_key, key = jax.random.split(key)
        size = pairs.prompt_ids.shape[0]

        def body(state, step_key):
            batch_key, update_key = jax.random.split(step_key)
            rows = jax.random.randint(batch_key, (batch_size,), 0, size)  # with replacement
            return agent.update(state, jax.tree.map(lambda x: x[rows], pairs), update_key)

        return jax.lax.scan(body, agent.init(init_key), jax.random.split(key, num_updates))

    return run


def run_over_seeds(run: Callable, *args):
    """`run` compiled once and vmapped over the leading (seed) axis of every argument: the
    bandit tasks' jit boundary."""
    return jax.jit(jax.vmap(run))(*args)


# Online iterative DPO on language models --------------------------------------------------


@struct.dataclass
class IterativeCarry:
    """What online iterative DPO carries from one iteration to the next, for one seed (all
    arrays: checkpointable). The optimiser state is not in it: every iteration starts a fresh
    one (`agent.init`'s), and the reference is the SFT model or a copy of `params`.

    Attributes:
        params: the current policy's parameters.
        pairs: `PreferencePairs` [T * n, P + N], every pair kept so far in rows [0, count).
        count: int32, the pairs kept so far.
        key: the PRNG key of the iterations still to run.
        iteration: int32, the iterations done.
    """

    params: PyTree
    pairs: PreferencePairs
    count: Array
    key: Array
    iteration: Array


def _iterative_start(agent: Agent, config, spec, key: Array) -> tuple[PyTree, IterativeCarry]:
    """`(blank, carry)`: the agent state every iteration starts from (pi_0 and a fresh
    optimiser state) and the carry before iteration 1 (pi_0, no pair)."""
    init_key, key = jax.random.split(key)
    blank = agent.init(init_key)
    capacity = config.iterations * config.prompts_per_iteration
    empty = np.full((capacity, spec.prompt_tokens + spec.completion_tokens), spec.pad_id,
                    np.int32)
    pairs = PreferencePairs(*(Sequences(empty.copy(), np.zeros(empty.shape, bool),
                                        np.zeros(empty.shape, bool)) for _ in range(2)))
    return blank, IterativeCarry(params=blank.params, pairs=pairs, count=np.asarray(0, np.int32),
                                 key=key, iteration=np.asarray(0, np.int32))


def init_iterative_carry(agent: Agent, config, spec, key: Array) -> IterativeCarry:
    """The carry of `run_iterative_dpo(..., key)` before its first iteration: the shapes and
    dtypes a checkpoint of that run restores into (`rlkit.checkpoint.Checkpointer.restore`)."""
    return jax.tree.map(jnp.asarray, _iterative_start(agent, config, spec, key)[1])


def run_iterative_dpo(agent: Agent, config, spec, sft_params: PyTree,
                      draw_prompts: Callable[[int], Sequences],
                      score_fn: Callable[[Sequences, Array, Array], Array],
                      pair_fn: Callable, reward_fn: Callable[[Array, Array, Array], Array],
                      eval_prompts: Sequences, key: Array,
                      length_fn: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
                      on_iteration: Callable[[int, dict, IterativeCarry], None] | None = None,
                      carry: IterativeCarry | None = None, stop: int | None = None
                      ) -> tuple[PyTree, list[dict]]:
    """Online iterative DPO of a language model (`agents.iterative_dpo`), one seed.

    For t = 1..T (`config.iterations`): sample `config.num_samples` (K) completions for each of
    `config.prompts_per_iteration` (n) prompts from the current policy with the KV cache, K/G of
    them at each of the G `config.temperatures`; score them; keep one pair per prompt
    (`pair_fn`, dropping ties and identical completions); then `config.steps_per_iteration`
    DPO updates (`agent.update`) warm-started from the previous policy with a fresh optimiser
    state, on batches drawn with replacement from every pair so far (`config.data == "all"`)
    or this iteration's (`"current"`), against the SFT model (`config.reference == "sft"`) or
    the previous iterate (`"previous"`). Every phase is compiled once (generation per
    temperature, scoring with pairing, the update scan, evaluation): the pair buffer has the
    fixed capacity T * n and a count.

    Args:
        agent: a DPO agent (`agents.dpo.make_agent(..., initial_params=sft_params)`) whose
            state has `params` and `reference_params`.
        config: `agents.iterative_dpo.Config`.
        spec: the `TextSpec` (prompt length P, completion length N).
        sft_params: pi_0's parameters (the start, and the "sft" reference).
        draw_prompts: `iteration -> Sequences [n, P]` (left-padded), the iteration's prompts.
        score_fn: `(full sequences [M, P + N], completion_tokens [M, N], completion_mask
            [M, N]) -> [M]` float rewards (a reward model or the task's exact reward).
        pair_fn: `(rewards [n, K], lengths [n, K], identical [n, K, K], key) -> (chosen [n],
            rejected [n], valid [n])` (`agents.iterative_dpo.select_pairs`).
        reward_fn: the task's exact reward, `(prompt_tokens, completion_tokens,
            completion_mask) -> [E]`, for the evaluation.
        eval_prompts: `Sequences` [E, P] evaluated after every iteration.
        key: PRNG key.
        length_fn: `(completion_tokens [M, N], completion_mask [M, N]) -> [M]` lengths (host,
            numpy; characters for text) for the "max_min_p" rule; None: tokens generated.
        on_iteration: called with (t, that iteration's figures, the carry after it) after
            each iteration (t from 0): where a run logs and checkpoints (at once: the pair
            buffer is the one the next iteration fills in place).
        carry: continue from this carry (a checkpoint's, restored into
            `init_iterative_carry(agent, config, spec, key)`; the same `key` as the run it
            continues) instead of the start: the iterations that follow are those of an
            uninterrupted run, bit for bit.
        stop: run iterations up to this one only (exclusive; None: all T).

    Returns:
        (the final parameters, one dict per iteration): `true_reward` (mean exact reward of one
        completion per evaluation prompt at temperature 1), `reverse_kl` (mean of log pi -
        log pi_0 over those samples, nats: the reverse KL to the SFT model), `win_rate` (share
        of evaluation prompts whose policy completion beats pi_0's under the exact reward, ties
        counted 1/2), `completion_length`, `labels_used` (pairs kept so far), `pairs_kept`
        (this iteration's), `responses_scored` (so far), `loss` (mean DPO loss of the
        iteration's updates; NaN when it kept no pair and did not train); the iterations run
        in this call only.
    """
    from rlkit.lm.generate import sample_completions as generate_completions
    from rlkit.lm.transformer import Transformer

    network = Transformer(spec.model)
    num_prompts, num_samples = config.prompts_per_iteration, config.num_samples
    per_temperature = num_samples // len(config.temperatures)
    capacity = config.iterations * num_prompts
    width = spec.prompt_tokens + spec.completion_tokens

    split_prompts, _ = data_parallel(num_prompts * per_temperature)
    split_batch, _ = data_parallel(agent.feed.batch_size)
    split_eval, _ = data_parallel(int(eval_prompts.tokens.shape[0]))
    generate = jax.jit(lambda params, prompts, key, temperature: generate_completions(
        network, params, split_prompts(prompts), key, spec, temperature), static_argnums=3)

    @jax.jit
    def score_and_pair(full: Sequences, completions, mask, lengths, key):
        rewards = score_fn(full, completions, mask).reshape(num_prompts, num_samples)  # [n, K]
        grouped = completions.reshape(num_prompts, num_samples, -1)  # [n, K, N]
        identical = (grouped[:, :, None] == grouped[:, None, :]).all(-1)  # [n, K, K]
        return pair_fn(rewards, lengths.reshape(num_prompts, num_samples), identical, key)

    @jax.jit
    def train(state, buffer: PreferencePairs, low, count, key):
        def body(state, step_key):
            batch_key, update_key = jax.random.split(step_key)
            rows = jax.random.randint(batch_key, (agent.feed.batch_size,), low, count)
            return agent.update(state, split_batch(jax.tree.map(lambda x: x[rows], buffer)),
                                update_key)

        state, metrics = jax.lax.scan(body, state, jax.random.split(
            key, config.steps_per_iteration))
        return state, metrics["loss"].mean()

    @jax.jit
    def evaluate(state, key):
        prompts = split_eval(eval_prompts)
        policy_key, reference_key = jax.random.split(key)
        tokens, extras = agent.act(state.replace(reference_params=sft_params), prompts,
                                   policy_key, jnp.int32(0))  # [E, N]
        reference_tokens, reference_extras = agent.act(
            state.replace(params=sft_params), prompts, reference_key, jnp.int32(0))
        mask, reference_mask = extras["completion_mask"], reference_extras["completion_mask"]
        reward = reward_fn(prompts.tokens, tokens, mask)  # [E]
        reference_reward = reward_fn(prompts.tokens, reference_tokens, reference_mask)
        return {"true_reward": reward.mean(),
                "reverse_kl": (extras["log_probs"] - extras["reference_log_probs"]).mean(),
                "win_rate": win_rate_against(reward, reference_reward),
                "completion_length": mask.sum(-1).mean(dtype=jnp.float32)}

    blank, start = _iterative_start(agent, config, spec, key)  # pi_0, fresh optimiser state
    if carry is not None:  # the buffer is filled in place on the host: writable copies
        require(carry.pairs.chosen.tokens.shape == (capacity, width), "carry",
                f"a pair buffer of shape {carry.pairs.chosen.tokens.shape}, not this run's "
                f"{(capacity, width)}")
        start = carry.replace(pairs=jax.tree.map(np.array, carry.pairs))
    params, buffer, key = start.params, start.pairs, start.key
    count, history = int(start.count), []
    end = config.iterations if stop is None else min(stop, config.iterations)
    for iteration in range(int(start.iteration), end):
        raise_pending_interrupt()  # a Ctrl-C Python swallowed (rlkit.errors.raise_on_signal)
        key, sample_key, pair_key, train_key, eval_key = jax.random.split(key, 5)
        prompts = draw_prompts(iteration)  # [n, P]
        repeated = jax.tree.map(lambda x: np.repeat(np.asarray(x), per_temperature, axis=0),
                                prompts)  # [n K/G, P]
        groups = [generate(params, repeated, jax.random.fold_in(sample_key, g), float(t))
                  for g, t in enumerate(config.temperatures)]

        def merge(*leaves):  # G x [n K/G, ...] -> [n K, ...], row p * K + i
            stacked = [np.asarray(x).reshape(num_prompts, per_temperature, *x.shape[1:])
                       for x in leaves]
            return np.concatenate(stacked, axis=1).reshape(num_samples * num_prompts,
                                                           *leaves[0].shape[1:])

        completions = merge(*(g.tokens for g, _ in groups))  # [nK, N]
        mask = merge(*(g.mask for g, _ in groups))  # [nK, N]
        full = jax.tree.map(merge, *(f for _, f in groups))  # [nK, P + N]
        lengths = (mask.sum(-1) if length_fn is None else length_fn(completions, mask))
        chosen, rejected, valid = (np.asarray(x) for x in score_and_pair(
            full, completions, mask, np.asarray(lengths, np.float32), pair_key))
        rows = np.flatnonzero(valid)  # prompts that gave a pair
        kept = len(rows)
        for target, index in ((buffer.chosen, chosen), (buffer.rejected, rejected)):
            flat = rows * num_samples + index[rows]  # [kept] rows of full
            picked = jax.tree.map(lambda x, flat=flat: np.asarray(x)[flat], full)
            for name in ("tokens", "attention_mask", "loss_mask"):
                getattr(target, name)[count:count + kept] = getattr(picked, name)
        low = count if config.data == "current" else 0
        count += kept
        state = blank.replace(params=params, reference_params=(
            sft_params if config.reference == "sft" else jax.tree.map(jnp.copy, params)))
        loss = float("nan")
        if count > low:  # no pair, no update
            state, loss = train(state, buffer, jnp.int32(low), jnp.int32(count), train_key)
            params = state.params
        figures = {name: float(value) for name, value in evaluate(state, eval_key).items()}
        figures.update(labels_used=count, pairs_kept=kept,
                       responses_scored=(iteration + 1) * num_prompts * num_samples,
                       loss=float(loss))
        history.append(figures)
        if on_iteration is not None:
            on_iteration(iteration, figures, IterativeCarry(
                params=params, pairs=buffer, count=np.asarray(count, np.int32), key=key,
                iteration=np.asarray(iteration + 1, np.int32)))
    return params, history


# Text -> arrays ----------------------------------------------------------------------------


def _where(source: str | Path | None, index: int, lines: Sequence[int] | None) -> str:
    """"FILE, line N" of record `index` (or "record N" for records not read from a file)."""
    if source is None:
        return f"record {index}"
    return f"{source}, line {lines[index] if lines else index + 1}"


def record_lines(path: str | Path) -> list[int]:
    """The 1-based line numbers of the records of a JSON Lines file (its non-blank lines), as
    `rlkit.data.preferences.load_preferences` reads them."""
    text = Path(path).read_text(encoding="utf-8")
    return [n for n, line in enumerate(text.splitlines(), start=1) if line.strip()]


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    """`[BOS] + encode(prompt)`: the layout every prompt of the preference driver has."""
    return [tokenizer.bos_id, *tokenizer.encode(prompt)]


def encode_completion(tokenizer, completion: str) -> list[int]:
    """`encode(completion) + [EOS]`."""
    return [*tokenizer.encode(completion), tokenizer.eos_id]


def tokenize_prompts(tokenizer, prompts: Sequence[str], prompt_tokens: int) -> Sequences:
    """Left-padded prompts, numpy `Sequences` [B, P] (`loss_mask` all False).

    Raises:
        RlkitError: a prompt longer than `prompt_tokens`.
    """
    tokens = np.full((len(prompts), prompt_tokens), tokenizer.pad_id, np.int32)
    mask = np.zeros(tokens.shape, bool)
    for row, prompt in enumerate(prompts):
        ids = encode_prompt(tokenizer, prompt)
        require(len(ids) <= prompt_tokens, f"prompt {row}",
                f"{len(ids)} tokens, longer than the {prompt_tokens} allowed")
        tokens[row, prompt_tokens - len(ids):] = ids
        mask[row, prompt_tokens - len(ids):] = True
    return Sequences(tokens=tokens, attention_mask=mask, loss_mask=np.zeros(tokens.shape, bool))


def _sequences(prompts: list[list[int]], completions: list[list[int]], prompt_tokens: int,
               completion_tokens: int, pad_id: int) -> Sequences:
    """Prompt left-padded to P, completion right-padded to N, numpy [B, P + N]."""
    rows = len(prompts)
    tokens = np.full((rows, prompt_tokens + completion_tokens), pad_id, np.int32)
    attention = np.zeros(tokens.shape, bool)
    loss = np.zeros(tokens.shape, bool)
    for row, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
        start, end = prompt_tokens - len(prompt), prompt_tokens + len(completion)
        tokens[row, start:prompt_tokens] = prompt
        tokens[row, prompt_tokens:end] = completion
        attention[row, start:end] = True
        loss[row, prompt_tokens:end] = True
    return Sequences(tokens=tokens, attention_mask=attention, loss_mask=loss)


def text_lengths(tokenizer, items: Sequence[tuple[str, ...]], max_length: int, *,
                 source: str | Path | None = None, lines: Sequence[int] | None = None,
                 fields: tuple[str, ...] = ("prompt", "completion")) -> tuple[int, int]:
    """The prompt and completion lengths (P, N) in tokens that fit every item, checked.

    Args:
        tokenizer: the model's tokenizer.
        items: tuples (prompt, completion, ...) of strings, named by `fields`.
        max_length: the model's context (`TransformerConfig.max_length`).
        source, lines: the file the items came from and their line numbers, for messages.
        fields: the names of the tuple's entries, for messages.

    Returns:
        (P, N): the longest `[BOS] + prompt` and the longest `completion + [EOS]`.

    Raises:
        RlkitError: an empty completion, or an item whose prompt and completion exceed the
            context, naming the file and line (or the record's index) and the fix.
    """
    prompt_length = completion_length = 0
    for index, (prompt, *completions) in enumerate(items):
        where = _where(source, index, lines)
        prompt_ids = encode_prompt(tokenizer, prompt)
        for name, completion in zip(fields[1:], completions, strict=True):
            if not completion:
                raise RlkitError(f"{where}: {name!r} is empty; every completion needs at least "
                                 "one token (fix or drop the record)")
            ids = encode_completion(tokenizer, completion)
            if len(prompt_ids) + len(ids) > max_length:
                raise RlkitError(
                    f"{where}: the prompt ({len(prompt_ids)} tokens) and {name!r} "
                    f"({len(ids)} tokens) exceed the model's context of {max_length} tokens; "
                    "shorten the record or use a model with a longer max_length")
            completion_length = max(completion_length, len(ids))
        prompt_length = max(prompt_length, len(prompt_ids))
    return prompt_length, completion_length


def tokenize_demonstrations(tokenizer, demonstrations: Sequence[tuple[str, str]],
                            prompt_tokens: int, completion_tokens: int) -> Sequences:
    """(prompt, completion) demonstrations as numpy `Sequences` [M, P + N] (check lengths with
    `text_lengths` first)."""
    return _sequences([encode_prompt(tokenizer, p) for p, _ in demonstrations],
                      [encode_completion(tokenizer, c) for _, c in demonstrations],
                      prompt_tokens, completion_tokens, tokenizer.pad_id)


def tokenize_pairs(tokenizer, records: Sequence[PreferenceRecord], prompt_tokens: int,
                   completion_tokens: int) -> PreferencePairs:
    """Preference records as numpy `PreferencePairs` [M, P + N] (check lengths with
    `text_lengths` first)."""
    prompts = [encode_prompt(tokenizer, r.prompt) for r in records]
    pad = tokenizer.pad_id
    return PreferencePairs(
        chosen=_sequences(prompts, [encode_completion(tokenizer, r.chosen) for r in records],
                          prompt_tokens, completion_tokens, pad),
        rejected=_sequences(prompts, [encode_completion(tokenizer, r.rejected) for r in records],
                            prompt_tokens, completion_tokens, pad))


__all__ = [
    "GENERATION_METRICS", "IterativeCarry", "PreferenceCarry", "REWARD_MODEL_METRICS",
    "encode_completion", "encode_prompt", "headline_metric", "init_iterative_carry",
    "make_bandit_pair_run", "make_preference_trainer", "record_lines", "run_iterative_dpo",
    "run_over_seeds", "sample_completions", "text_lengths", "tokenize_demonstrations",
    "tokenize_pairs", "tokenize_prompts", "win_rate_against",
]
