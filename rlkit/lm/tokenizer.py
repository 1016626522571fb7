"""Tokenizers: bytes for models trained from scratch, `tokenizers` for a local model directory.

Both expose the same small surface, which is all rlkit's language-model code uses:

* `vocab_size` (int), `pad_id`, `bos_id`, `eos_id` (ints);
* `encode(text) -> list[int]`, with no special token added (callers add BOS / EOS where their
  format needs them);
* `decode(ids) -> str`, dropping special tokens.

Chat and prompt templates are deliberately not here: a task formats its own text and encodes it.
Nothing is downloaded: a Hugging Face tokenizer is read from a local directory's
`tokenizer.json`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from rlkit.errors import RlkitError


class ByteTokenizer:
    """UTF-8 bytes as tokens: ids 0..255 are the bytes, then `pad_id` 256, `bos_id` 257 and
    `eos_id` 258 (`vocab_size` 259).

    Every string round-trips (`decode(encode(text)) == text`); `decode` of ids that do not form
    valid UTF-8 replaces the broken bytes with U+FFFD.
    """

    vocab_size = 259
    pad_id = 256
    bos_id = 257
    eos_id = 258

    def encode(self, text: str) -> list[int]:
        """The UTF-8 bytes of `text` as ids in [0, 256); no special token is added."""
        return list(text.encode("utf-8"))

    def decode(self, ids: Iterable[int]) -> str:
        """The text of `ids`, special ids (>= 256) dropped."""
        return bytes(int(i) for i in ids if 0 <= int(i) < 256).decode("utf-8", errors="replace")

    def __repr__(self) -> str:
        return "ByteTokenizer()"


def read_model_json(path: Path) -> dict:
    """A model directory's JSON file as a dict: {} when it is absent (or not an object).

    Raises:
        RlkitError: the file exists but is not readable JSON (names the file).
    """
    if not path.is_file():
        return {}
    try:
        with open(path, encoding="utf-8") as file:
            data = json.load(file)
    except (OSError, ValueError) as error:
        raise RlkitError(f"{path}: not readable JSON ({error}); restore the file from the "
                         "model's snapshot.") from None
    return data if isinstance(data, dict) else {}


def _token_text(value: object) -> str | None:
    """A special token as `tokenizer_config.json` / `special_tokens_map.json` write it: a string,
    or an AddedToken dict with "content"."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _first_id(value: object) -> int | None:
    """A `config.json` id field: an int, a list of ints (the first counts) or null."""
    if isinstance(value, list):
        value = value[0] if value else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class HFTokenizer:
    """A Hugging Face `tokenizers` tokenizer read from a local model directory.

    Build it with `HFTokenizer.from_dir(path)`. Special ids follow `transformers`' order: the
    token strings of `tokenizer_config.json`, then `special_tokens_map.json`, then the ids of
    `generation_config.json` / `config.json`. A model without a pad token (GPT-2, Llama) pads
    with its EOS id, as is usual for decoder-only models; padding is always masked, so the id
    itself never matters.

    Attributes:
        tokenizer: the `tokenizers.Tokenizer`.
        vocab_size: size of its vocabulary, added tokens included. The model's embedding may be
            larger (Qwen2 pads it), never smaller.
        pad_id, bos_id, eos_id: special ids (bos_id may equal eos_id, as in GPT-2).
    """

    def __init__(self, tokenizer, *, pad_id: int, bos_id: int, eos_id: int,
                 source: str = "") -> None:
        self.tokenizer = tokenizer
        self.vocab_size = int(tokenizer.get_vocab_size(with_added_tokens=True))
        self.pad_id = int(pad_id)
        self.bos_id = int(bos_id)
        self.eos_id = int(eos_id)
        self.source = source

    @classmethod
    def from_dir(cls, path: str | Path) -> HFTokenizer:
        """Read `path/tokenizer.json` and the special tokens of the directory's JSON files.

        Args:
            path: a local Hugging Face model (or tokenizer) directory.

        Raises:
            RlkitError: no `tokenizer.json`, an unreadable one, or no EOS token anywhere.
        """
        from tokenizers import Tokenizer

        directory = Path(path)
        file = directory / "tokenizer.json"
        if not file.is_file():
            raise RlkitError(f"{directory}: no tokenizer.json; point at a Hugging Face model "
                             "directory that has one, or use the byte tokenizer.")
        try:
            tokenizer = Tokenizer.from_file(str(file))
        except Exception as error:  # noqa: BLE001 - the Rust parser's error type is private
            first = (str(error).splitlines() or [""])[0]
            raise RlkitError(f"{file}: not a tokenizers file ({first}); restore it from the "
                             "model's snapshot.") from None
        token_files = [read_model_json(directory / "tokenizer_config.json"),
                       read_model_json(directory / "special_tokens_map.json")]
        id_files = [read_model_json(directory / "generation_config.json"),
                    read_model_json(directory / "config.json")]

        def special(name: str) -> int | None:
            for data in token_files:
                text = _token_text(data.get(f"{name}_token"))
                if text is not None and tokenizer.token_to_id(text) is not None:
                    return int(tokenizer.token_to_id(text))
            for data in id_files:
                found = _first_id(data.get(f"{name}_token_id"))
                if found is not None:
                    return found
            return None

        eos_id = special("eos")
        if eos_id is None:
            raise RlkitError(f"{directory}: no EOS token in tokenizer_config.json, "
                             "special_tokens_map.json or config.json; add \"eos_token\" to "
                             "tokenizer_config.json.")
        bos_id = special("bos")
        pad_id = special("pad")
        return cls(tokenizer, pad_id=eos_id if pad_id is None else pad_id,
                   bos_id=eos_id if bos_id is None else bos_id, eos_id=eos_id,
                   source=str(directory))

    def encode(self, text: str) -> list[int]:
        """The ids of `text`, with no special token added (no BOS, no EOS)."""
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Iterable[int]) -> str:
        """The text of `ids`, special tokens dropped."""
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)

    def __repr__(self) -> str:
        return f"HFTokenizer.from_dir({self.source!r})"


Tokenizer = ByteTokenizer | HFTokenizer


MODEL_CONFIG = "rlkit_model.json"
"""A model directory's rlkit file: `{"tokenizer": "byte"}` marks a model of `ByteTokenizer`
(it then has no tokenizer.json; a directory with both is refused as contradictory)."""


def model_directory(path: str | Path) -> Path:
    """The model directory `path` names: itself, or the `model/` of an rlkit run directory
    (sft, dpo and reward-model runs save their final model there).

    Raises:
        RlkitError: not a directory; the directory of a run that saved no model (a control
            agent's run: named, with what to pass instead).
    """
    directory = Path(path)
    if not directory.is_dir():
        raise RlkitError(f"{directory}: not a directory; give a local model directory (a "
                         "Hugging Face one, or the directory of an sft or dpo run).")
    if (directory / "config.json").is_file():
        return directory
    if (directory / "model").is_dir():
        return directory / "model"
    run_config = directory / "config.yaml"
    if run_config.is_file():
        import yaml

        try:
            agent = (yaml.safe_load(run_config.read_text()) or {}).get("agent")
        except (yaml.YAMLError, AttributeError, OSError):
            agent = None
        if agent is not None:
            raise RlkitError(f"{directory}: a {agent} run, not a language model (it saved no "
                             "model/); pass a Hugging Face model directory or the directory "
                             "of an sft or dpo run.")
    return directory


def load_tokenizer(path: str | Path | None) -> Tokenizer:
    """The tokenizer of a model: `ByteTokenizer()` for None or "byte"; for a directory (or an
    rlkit run directory, through `model_directory`), `ByteTokenizer()` when its
    `rlkit_model.json` says `{"tokenizer": "byte"}`, else `HFTokenizer.from_dir`.

    Raises:
        RlkitError: `path` is not a directory, has no tokenizer.json, or has both
            tokenizer.json and an `rlkit_model.json` naming the byte tokenizer (or another
            value).
    """
    if path is None or str(path) == "byte":
        return ByteTokenizer()
    directory = model_directory(path)
    marker = directory / MODEL_CONFIG
    if marker.is_file():
        data = read_model_json(marker)
        name = data.get("tokenizer") if isinstance(data, dict) else None
        if name != "byte":
            raise RlkitError(f"{marker}: \"tokenizer\" is {name!r}; the only value is "
                             "\"byte\" (delete the file to use tokenizer.json).")
        if (directory / "tokenizer.json").is_file():
            raise RlkitError(f"{directory}: both tokenizer.json and {MODEL_CONFIG} (byte "
                             "tokenizer); delete the one that does not belong to the model.")
        return ByteTokenizer()
    return HFTokenizer.from_dir(directory)
