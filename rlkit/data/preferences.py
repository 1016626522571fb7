"""Preference data for language-model alignment, as JSON Lines (ARCHITECTURE.md section 4).

One JSON object per line, the shape DPO-family trainers and the usual public preference sets use::

    {"prompt": "2 + 2 =", "chosen": " 4", "rejected": " 5"}
    {"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away.", "score_chosen": 8.5,
     "score_rejected": 2.0}

`prompt`, `chosen` and `rejected` are required strings; `score_chosen` and `score_rejected` are
optional finite numbers (a reward model's or a rater's scores) or null. Other keys (ids, sources,
...) are allowed and ignored, so public datasets with extra columns load as they are; they are
not written back. Blank lines are skipped. Files are UTF-8 and written atomically.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from rlkit.data.dataset import DatasetError
from rlkit.io import write_text

REQUIRED_KEYS = ("prompt", "chosen", "rejected")
SCORE_KEYS = ("score_chosen", "score_rejected")


@dataclass(frozen=True)
class PreferenceRecord:
    """One preference: for `prompt`, the completion `chosen` is preferred over `rejected`.

    Attributes:
        prompt: the prompt both completions answer.
        chosen: the preferred completion.
        rejected: the dispreferred completion.
        score_chosen: optional score of `chosen` (finite), e.g. from a reward model.
        score_rejected: optional score of `rejected` (finite).
    """

    prompt: str
    chosen: str
    rejected: str
    score_chosen: float | None = None
    score_rejected: float | None = None


def save_preferences(path: str | Path, records: Iterable[PreferenceRecord]) -> Path:
    """Write `records` as JSON Lines, atomically (`rlkit.io.write_text`).

    Args:
        path: the .jsonl file to write (its parent is created if missing; an existing file is
            replaced only once the new one is complete).
        records: at least one `PreferenceRecord`; scores that are None are written as null.

    Returns:
        The file written, as a `Path`.

    Raises:
        DatasetError: no records, or a record with a non-string text or non-finite score
            (named by its index).
        RlkitError: the file system refused the write (read-only, full), naming the path.
    """
    path = Path(path)
    lines = []
    for index, record in enumerate(records):
        if not isinstance(record, PreferenceRecord):
            raise DatasetError(
                f"records[{index}]: expected a PreferenceRecord, got {type(record).__name__}."
            )
        problem = _problem(asdict(record))
        if problem:
            raise DatasetError(f"records[{index}]: {problem}.")
        lines.append(json.dumps(asdict(record), ensure_ascii=False, allow_nan=False))
    if not lines:
        raise DatasetError(f"{path}: no records to write; a preference file needs at least one.")
    write_text(path, "\n".join(lines) + "\n")
    return path


def load_preferences(path: str | Path) -> list[PreferenceRecord]:
    """Read a JSON Lines preference file.

    Args:
        path: the .jsonl file.

    Returns:
        The records in file order.

    Raises:
        DatasetError: the file is missing, unreadable or holds no records, or a line is not a
            JSON object with string prompt / chosen / rejected and numeric (or null) scores;
            the message names the file and the line number (1-based).
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such preference file. Check the path.")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path}: cannot be read as UTF-8 text ({error}).") from None
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise DatasetError(
                f"{path}, line {number}: invalid JSON ({error.msg} at column {error.colno})."
            ) from None
        if not isinstance(row, dict):
            raise DatasetError(
                f"{path}, line {number}: expected a JSON object with keys "
                f"{', '.join(REQUIRED_KEYS)}, got {type(row).__name__}."
            )
        problem = _problem(row)
        if problem:
            raise DatasetError(f"{path}, line {number}: {problem}.")
        scores = {key: None if row.get(key) is None else float(row[key]) for key in SCORE_KEYS}
        records.append(PreferenceRecord(**{key: row[key] for key in REQUIRED_KEYS}, **scores))
    if not records:
        raise DatasetError(
            f"{path}: empty; a preference file needs at least one JSON line with keys "
            f"{', '.join(REQUIRED_KEYS)}."
        )
    return records


def _problem(row: dict) -> str | None:
    """What is wrong with one record's fields, or None."""
    missing = [key for key in REQUIRED_KEYS if key not in row]
    if missing:
        return f"missing key(s) {', '.join(repr(k) for k in missing)}"
    for key in REQUIRED_KEYS:
        if not isinstance(row[key], str):
            return f"{key!r} must be a string, got {type(row[key]).__name__} {row[key]!r:.60}"
    for key in SCORE_KEYS:
        value = row.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"{key!r} must be a number or null, got {type(value).__name__} {value!r:.60}"
        if not math.isfinite(value):
            return f"{key!r} must be finite, got {value}"
    return None
