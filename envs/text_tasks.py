"""Text tasks with an exact true reward, for preference optimisation on small language models
(issue 12, item 5c).

A task is a prompt distribution, a verifiable answer and a partial-credit reward in [0, 1], so
that SFT, reward models and DPO are judged exactly, without a judge model. It also makes the
data those agents learn from:

* **noisy demonstrations** for SFT: a fixed fraction `demo_noise` of the answers are replaced
  by uniformly random digit strings, so that a model that imitates them well is only partly
  competent (its expected true reward is about `(1 - demo_noise) + demo_noise / 10`);
* **preference pairs**, labelled by Bradley-Terry on the true reward with a known temperature:
  P(a preferred to b) = sigmoid((r(a) - r(b)) / label_temperature) (`label_pairs`).

`sort`: the prompt is `num_digits` random decimal digits followed by `=` (e.g. `3141=`), the
right completion is the digits in ascending order (`1134`). The true reward of a completion is
the fraction of its positions that hold the right digit, and 0 for a malformed completion (not
exactly `num_digits` digits). `reverse` is the same with the digits in reverse order.

Token layout (what `rlkit.loops.preference` and the reward in JAX assume): a prompt is
`[BOS] + encode(prompt)`, left-padded to `prompt_tokens`; a completion is `encode(completion) +
[EOS]`, right-padded to `completion_tokens`. Each digit and `=` must be one token (true of the
byte tokenizer that models trained from scratch use); `make_text_task` checks it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from rlkit.data.preferences import PreferenceRecord
from rlkit.errors import RlkitError, require_int_at_least, require_number, require_one_of
from rlkit.types import Array

SEPARATOR = "="
OPERATIONS = ("sort", "reverse")


@dataclass(frozen=True)
class Config:
    """A digit-string task (`sort` or `reverse`)."""

    num_digits: int = 4
    """Digits in a prompt (and in the right completion)."""
    demo_noise: float = 0.5
    """Fraction of SFT demonstrations whose answer is replaced by random digits."""
    label_temperature: float = 0.1
    """Bradley-Terry temperature of the preference labels: P(a > b) = sigmoid((r(a) - r(b)) /
    label_temperature); smaller is a more reliable rater."""

    def __post_init__(self):
        require_int_at_least(self.num_digits, "num_digits", 1)
        require_number(self.demo_noise, "demo_noise", low=0.0, high=1.0)
        require_number(self.label_temperature, "label_temperature", low=0.0, low_open=True,
                       hint="try 0.1.")


class TextTask(NamedTuple):
    """A text task with an exact reward (see the module docstring).

    Attributes:
        name: the task's registry name.
        config: its `Config`.
        prompt_tokens: P, the prompt length in tokens (BOS included).
        completion_tokens: N, the right completion's length in tokens (EOS included); also the
            number of tokens generated.
        sample_prompts: `(rng: numpy Generator, n) -> list of n prompt strings`.
        answer: `(prompt) -> the right completion string`.
        true_reward: `(prompt, completion) -> float in [0, 1]`, exact, on strings (the
            completion without EOS).
        reward_tokens: `(prompt_tokens int32[B, P], completion_tokens int32[B, N],
            completion_mask bool[B, N]) -> float32[B]`, the same reward on token arrays, in JAX
            (usable inside compiled code).
    """

    name: str
    config: Config
    prompt_tokens: int
    completion_tokens: int
    sample_prompts: Callable[[np.random.Generator, int], list[str]]
    answer: Callable[[str], str]
    true_reward: Callable[[str, str], float]
    reward_tokens: Callable[[Array, Array, Array], Array]


def make_text_task(name: str, config: Config, tokenizer: Any) -> TextTask:
    """Build the task `name` ("sort" or "reverse") for `tokenizer`.

    Args:
        name: the operation the right completion applies to the prompt's digits.
        config: the task's `Config`.
        tokenizer: an `rlkit.lm.tokenizer` tokenizer (`encode`, `bos_id`, `eos_id`).

    Returns:
        The `TextTask`.

    Raises:
        RlkitError: an unknown name, or a tokenizer that does not encode each digit and `=` as
            one token.
    """
    require_one_of(name, "task", OPERATIONS)
    length = config.num_digits
    digit_ids = []
    for symbol in "0123456789" + SEPARATOR:
        ids = tokenizer.encode(symbol)
        if len(ids) != 1:
            raise RlkitError(f"task {name}: the tokenizer encodes {symbol!r} as {len(ids)} tokens;"
                             " the digit tasks need one token per digit (use the byte tokenizer,"
                             " i.e. no --model, or a model trained with it)")
        digit_ids.append(ids[0])
    digit_ids, separator_id = digit_ids[:10], digit_ids[10]
    probe = "0123456789" + SEPARATOR
    if tokenizer.encode(probe) != digit_ids + [separator_id]:
        raise RlkitError(f"task {name}: the tokenizer merges digits ({probe!r} is not one token "
                         "per character); use the byte tokenizer")
    # Token id -> digit value, -1 for every other id (EOS, padding, letters, ...).
    vocab = max(max(digit_ids), tokenizer.eos_id, tokenizer.pad_id, tokenizer.bos_id) + 1
    digit_of_np = np.full(vocab, -1, np.int32)
    digit_of_np[np.asarray(digit_ids)] = np.arange(10)
    eos_id = tokenizer.eos_id

    def transform(digits):  # works on strings and on arrays [..., L] (sorted along the last axis)
        if name == "sort":
            return "".join(sorted(digits)) if isinstance(digits, str) else jnp.sort(digits, -1)
        return digits[::-1] if isinstance(digits, str) else digits[..., ::-1]

    def sample_prompts(rng: np.random.Generator, n: int) -> list[str]:
        digits = rng.integers(0, 10, size=(n, length))
        return ["".join(map(str, row)) + SEPARATOR for row in digits]

    def answer(prompt: str) -> str:
        return transform(prompt.removesuffix(SEPARATOR))

    def true_reward(prompt: str, completion: str) -> float:
        if len(completion) != length or not all(c in "0123456789" for c in completion):
            return 0.0  # malformed
        right = answer(prompt)
        return sum(a == b for a, b in zip(completion, right, strict=True)) / length

    def reward_tokens(prompt_tokens: Array, completion_tokens: Array,
                      completion_mask: Array) -> Array:
        digit_of = jnp.asarray(digit_of_np)
        ids = jnp.clip(prompt_tokens[:, -(length + 1):-1], 0, vocab - 1)  # [B, L] left-padded
        right = transform(digit_of[ids])  # [B, L]
        head = completion_tokens[:, :length]  # [B, L]
        got = jnp.where(head < vocab, digit_of[jnp.clip(head, 0, vocab - 1)], -1)  # [B, L]
        well_formed = ((got >= 0).all(-1) & completion_mask[:, :length].all(-1)
                       & (completion_tokens[:, length] == eos_id)
                       & completion_mask[:, length])  # [B] exactly L digits, then EOS
        score = (got == right).mean(-1)  # [B]
        return jnp.where(well_formed, score, 0.0).astype(jnp.float32)

    return TextTask(name=name, config=config, prompt_tokens=length + 2,
                    completion_tokens=length + 1, sample_prompts=sample_prompts, answer=answer,
                    true_reward=true_reward, reward_tokens=reward_tokens)


def demonstrations(task: TextTask, rng: np.random.Generator, n: int) -> list[tuple[str, str]]:
    """`n` (prompt, completion) SFT demonstrations, a fraction `demo_noise` of them corrupted.

    Exactly `round(n * demo_noise)` answers (at random rows) are replaced by uniformly random
    digit strings of the right length, so the noise level is the same in every draw.

    Returns:
        A list of n (prompt, completion) pairs.
    """
    prompts = task.sample_prompts(rng, n)
    noisy = set(rng.permutation(n)[: round(n * task.config.demo_noise)].tolist())
    length = task.config.num_digits
    out = []
    for i, prompt in enumerate(prompts):
        if i in noisy:
            completion = "".join(map(str, rng.integers(0, 10, size=length)))
        else:
            completion = task.answer(prompt)
        out.append((prompt, completion))
    return out


def label_pairs(task: TextTask, rng: np.random.Generator, prompts: Sequence[str],
                first: Sequence[str], second: Sequence[str]) -> list[PreferenceRecord]:
    """Label two completions per prompt by Bradley-Terry on the true reward.

    P(first[i] preferred) = sigmoid((r(first[i]) - r(second[i])) / label_temperature) (Bradley
    and Terry 1952); a pair of equal rewards is a fair coin. The true rewards are kept as
    `score_chosen` / `score_rejected` (for analysis; the agents never read them).

    Args:
        task: the task (its `true_reward` and `label_temperature`).
        rng: numpy generator of the labels' coins.
        prompts, first, second: equal-length lists of prompts and of the two completions.

    Returns:
        One `PreferenceRecord` per prompt.
    """
    records = []
    for prompt, a, b in zip(prompts, first, second, strict=True):
        reward_a, reward_b = task.true_reward(prompt, a), task.true_reward(prompt, b)
        p_first = 1.0 / (1.0 + np.exp(-(reward_a - reward_b) / task.config.label_temperature))
        if rng.random() < p_first:
            records.append(PreferenceRecord(prompt, a, b, reward_a, reward_b))
        else:
            records.append(PreferenceRecord(prompt, b, a, reward_b, reward_a))
    return records


def sample_preference_pairs(task: TextTask, rng: np.random.Generator, num_prompts: int,
                            sample: Callable[[list[str], int], list[str]]
                            ) -> tuple[list[PreferenceRecord], int]:
    """Offline preference pairs: two completions per prompt from a model, Bradley-Terry labels.

    Args:
        task: the task (prompts, true reward, label temperature).
        rng: numpy generator of the prompts and the labels' coins.
        num_prompts: prompts drawn (one pair each).
        sample: `(prompts, draw) -> completions`, one sampled completion (text, EOS removed)
            per prompt; `draw` is 0 or 1, so the two completions use different randomness.
            It returns "" for a completion it cannot write as text (then skipped).

    Returns:
        (records, skipped): the labelled pairs, and how many prompts were skipped because a
        completion was empty (the preference format requires non-empty completions).
    """
    prompts = task.sample_prompts(rng, num_prompts)
    first, second = sample(prompts, 0), sample(prompts, 1)
    kept = [i for i in range(num_prompts) if first[i] and second[i]]
    records = label_pairs(task, rng, [prompts[i] for i in kept], [first[i] for i in kept],
                          [second[i] for i in kept])
    return records, num_prompts - len(kept)


TASKS: dict[str, str] = {
    "sort": "digit strings to sort (e.g. 3141= -> 1134); exact partial-credit reward",
    "reverse": "digit strings to reverse (e.g. 3141= -> 1413); exact partial-credit reward",
}


__all__ = ["Config", "TASKS", "TextTask", "demonstrations", "label_pairs", "make_text_task",
           "sample_preference_pairs"]
