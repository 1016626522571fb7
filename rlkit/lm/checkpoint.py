"""Local Hugging Face checkpoints: `config.json` + `*.safetensors` (single file or sharded with
`model.safetensors.index.json`), read with the `safetensors` library. Nothing is downloaded.

Supported `model_type`s: "gpt2", "llama", "qwen2", "gpt_neox" (Pythia). A directory's tensors
are mapped onto `Transformer`'s parameters (or `TransformerRewardModel`'s for a
`*ForSequenceClassification` with one label) with every name and shape checked, so weights of
another architecture or size fail with one line naming the tensor and both shapes.

Layouts (`transformers`' modeling files): `nn.Linear` stores [out, in] and is transposed to
Flax's [in, out]; GPT-2's `Conv1D` already stores [in, out] and packs q, k, v side by side in
`c_attn`; GPT-NeoX packs them per head in `query_key_value` ([heads, 3, head_dim] on the output
axis).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from rlkit.errors import RlkitError
from rlkit.lm.tokenizer import model_directory, read_model_json
from rlkit.lm.transformer import Transformer, TransformerConfig, TransformerRewardModel
from rlkit.types import PyTree

SUPPORTED = ("gpt2", "llama", "qwen2", "gpt_neox")

# Buffers some checkpoints carry that are not parameters (causal-mask and rotary tables).
_BUFFERS = (".attn.bias", ".attn.masked_bias", ".attention.bias", ".attention.masked_bias",
            ".rotary_emb.inv_freq")


def _get(data: dict, *names, default=None):
    for name in names:
        if data.get(name) is not None:
            return data[name]
    return default


def config_from_hf(data: dict, where: str = "config.json") -> TransformerConfig:
    """A `TransformerConfig` from the fields of a Hugging Face `config.json`.

    Args:
        data: the parsed config.json.
        where: the file, for messages.

    Raises:
        RlkitError: an unsupported `model_type`, activation, rope scaling or sliding window.
    """
    model_type = data.get("model_type")
    if model_type not in SUPPORTED:
        raise RlkitError(f"{where}: model_type {model_type!r} is not supported; rlkit loads "
                         f"{', '.join(SUPPORTED)} checkpoints.")
    rope = {**(data.get("rope_scaling") or {}), **(data.get("rope_parameters") or {})}
    rope_type = rope.get("rope_type") or rope.get("type") or "default"
    if rope_type not in ("default", "linear", "llama3"):
        raise RlkitError(f"{where}: rope scaling {rope_type!r} is not supported; rlkit reads "
                         "rope_type 'default', 'linear' and 'llama3'.")
    scaling = {} if rope_type == "default" else {
        "rope_scaling": rope_type, "rope_factor": float(rope["factor"])}
    if rope_type == "llama3":
        scaling.update(rope_low_freq_factor=float(rope["low_freq_factor"]),
                       rope_high_freq_factor=float(rope["high_freq_factor"]),
                       rope_original_max_length=int(rope["original_max_position_embeddings"]))
    if model_type == "gpt2":
        activation = data.get("activation_function", "gelu_new")
        if activation not in ("gelu_new", "gelu_pytorch_tanh", "gelu"):
            raise RlkitError(f"{where}: activation_function {activation!r} is not supported; "
                             "use 'gelu_new' or 'gelu'.")
        if data.get("scale_attn_by_inverse_layer_idx") or data.get("reorder_and_upcast_attn"):
            raise RlkitError(f"{where}: scale_attn_by_inverse_layer_idx / "
                             "reorder_and_upcast_attn are not supported; set them to false.")
        width = data["n_embd"]
        return TransformerConfig.gpt2(
            vocab_size=data["vocab_size"], num_layers=data["n_layer"], width=width,
            num_heads=data["n_head"], mlp_width=data.get("n_inner") or 4 * width,
            max_length=data["n_positions"], norm_eps=data.get("layer_norm_epsilon", 1e-5),
            gelu_approximate=activation != "gelu",
            tie_embeddings=data.get("tie_word_embeddings", True))
    theta = float(_get(rope, "rope_theta", default=_get(data, "rope_theta", "rotary_emb_base",
                                                        default=10000.0)))
    common = dict(vocab_size=data["vocab_size"], num_layers=data["num_hidden_layers"],
                  width=data["hidden_size"], num_heads=data["num_attention_heads"],
                  mlp_width=data["intermediate_size"],
                  max_length=data["max_position_embeddings"], rope_theta=theta,
                  tie_embeddings=data.get("tie_word_embeddings", False), **scaling)
    if model_type == "gpt_neox":
        if data.get("hidden_act", "gelu") not in ("gelu", "gelu_new", "gelu_pytorch_tanh"):
            raise RlkitError(f"{where}: hidden_act {data['hidden_act']!r} is not supported; "
                             "use 'gelu'.")
        fraction = _get(rope, "partial_rotary_factor",
                        default=_get(data, "rotary_pct", "partial_rotary_factor", default=1.0))
        return TransformerConfig.gpt_neox(
            **common, norm_eps=data.get("layer_norm_eps", 1e-5),
            attention_bias=data.get("attention_bias", True),
            parallel_residual=data.get("use_parallel_residual", True),
            rotary_fraction=float(fraction),
            gelu_approximate=data.get("hidden_act", "gelu") != "gelu")
    if data.get("hidden_act", "silu") != "silu":
        raise RlkitError(f"{where}: hidden_act {data['hidden_act']!r} is not supported; "
                         f"{model_type} uses 'silu'.")
    if data.get("use_sliding_window"):
        raise RlkitError(f"{where}: use_sliding_window is not supported; set it to false.")
    width, heads = data["hidden_size"], data["num_attention_heads"]
    head_dim = data.get("head_dim")
    common.update(num_kv_heads=data.get("num_key_value_heads") or heads,
                  norm_eps=data.get("rms_norm_eps", 1e-6),
                  head_dim=None if head_dim in (None, width // heads) else head_dim)
    if model_type == "qwen2":
        return TransformerConfig.qwen2(**common)
    bias = bool(data.get("attention_bias", False))
    return TransformerConfig.llama(**common, attention_bias=bias, attention_output_bias=bias,
                                   mlp_bias=bool(data.get("mlp_bias", False)))


def config_to_hf(config: TransformerConfig, family: str) -> dict:
    """The `config.json` fields of `config` as a `family` model ("gpt2", "llama", "qwen2",
    "gpt_neox"), enough for `transformers` and `config_from_hf` to rebuild it."""
    rope = {"rope_type": "default", "rope_theta": config.rope_theta}
    if config.rope_scaling != "none":
        rope.update(rope_type=config.rope_scaling, factor=config.rope_factor)
    if config.rope_scaling == "llama3":
        rope.update(low_freq_factor=config.rope_low_freq_factor,
                    high_freq_factor=config.rope_high_freq_factor,
                    original_max_position_embeddings=config.rope_original_max_length)
    if family == "gpt2":
        return {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
                "vocab_size": config.vocab_size, "n_layer": config.num_layers,
                "n_embd": config.width, "n_head": config.num_heads,
                "n_inner": config.mlp_width, "n_positions": config.max_length,
                "layer_norm_epsilon": config.norm_eps,
                "activation_function": "gelu_new" if config.gelu_approximate else "gelu",
                "tie_word_embeddings": config.tie_embeddings}
    common = {"vocab_size": config.vocab_size, "num_hidden_layers": config.num_layers,
              "hidden_size": config.width, "num_attention_heads": config.num_heads,
              "intermediate_size": config.mlp_width,
              "max_position_embeddings": config.max_length,
              "tie_word_embeddings": config.tie_embeddings}
    if family == "gpt_neox":
        return {"model_type": "gpt_neox", "architectures": ["GPTNeoXForCausalLM"], **common,
                "layer_norm_eps": config.norm_eps, "attention_bias": config.attention_bias,
                "use_parallel_residual": config.parallel_residual,
                "hidden_act": "gelu_new" if config.gelu_approximate else "gelu",
                "rope_parameters": {**rope, "partial_rotary_factor": config.rotary_fraction},
                "rotary_pct": config.rotary_fraction, "rotary_emb_base": config.rope_theta}
    common.update(num_key_value_heads=config.kv_heads, rms_norm_eps=config.norm_eps,
                  head_dim=config.dims_per_head, hidden_act="silu", rope_parameters=rope,
                  rope_theta=config.rope_theta,
                  rope_scaling=None if config.rope_scaling == "none" else rope)
    if family == "qwen2":
        return {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], **common}
    return {"model_type": "llama", "architectures": ["LlamaForCausalLM"], **common,
            "attention_bias": config.attention_bias, "mlp_bias": config.mlp_bias}


def family_of(config: TransformerConfig) -> str:
    """The Hugging Face family whose layout `config` has ("gpt2", "gpt_neox", "qwen2" or
    "llama")."""
    if config.positions == "learned":
        return "gpt2"
    if config.parallel_residual or config.norm == "layernorm":
        return "gpt_neox"
    if config.attention_bias and not config.output_bias:
        return "qwen2"
    return "llama"


# A mapping entry: our parameter path -> (HF tensor name, HF -> ours, ours -> HF pieces).
_Entry = tuple[tuple[str, ...], str, Callable[[np.ndarray], np.ndarray]]


def _mapping(config: TransformerConfig, family: str, reward_model: bool) -> list[_Entry]:
    """Every parameter of our model with the tensor it comes from and how to convert it."""

    def copy(x):
        return x

    def transpose(x):
        return x.T

    def part(index: int, count: int, along_rows: bool):
        """Slice `index` of `count` equal parts (GPT-2's c_attn: columns of [in, 3W])."""
        def take(x):
            size = (x.shape[0] if along_rows else x.shape[-1]) // count
            sliced = x[index * size:(index + 1) * size] if along_rows else x[
                ..., index * size:(index + 1) * size]
            return sliced
        return take

    def neox_part(index: int, with_transpose: bool):
        heads, dims = config.num_heads, config.dims_per_head
        def take(x):  # x: [3 * H * D, W] or [3 * H * D]
            grouped = x.reshape(heads, 3, dims, *x.shape[1:])[:, index]
            grouped = grouped.reshape(heads * dims, *x.shape[1:])
            return grouped.T if with_transpose else grouped
        return take

    entries: list[_Entry] = []
    decoder = ("decoder",)

    def add(path: tuple[str, ...], name: str, convert=copy) -> None:
        entries.append((decoder + path if path[0] != "@" else path[1:], name, convert))

    if family == "gpt2":
        base = "transformer."
        add(("embed", "embedding"), base + "wte.weight")
        add(("position_embed", "embedding"), base + "wpe.weight")
        for layer in range(config.num_layers):
            here, ours = f"{base}h.{layer}.", (f"layers_{layer}",)
            for norm, hf in (("attention_norm", "ln_1"), ("mlp_norm", "ln_2")):
                add((*ours, norm, "scale"), f"{here}{hf}.weight")
                add((*ours, norm, "bias"), f"{here}{hf}.bias")
            for index, name in enumerate(("query", "key", "value")):
                add((*ours, "attention", name, "kernel"), f"{here}attn.c_attn.weight",
                    part(index, 3, False))
                add((*ours, "attention", name, "bias"), f"{here}attn.c_attn.bias",
                    part(index, 3, False))
            add((*ours, "attention", "output", "kernel"), f"{here}attn.c_proj.weight")
            add((*ours, "attention", "output", "bias"), f"{here}attn.c_proj.bias")
            add((*ours, "mlp", "up", "kernel"), f"{here}mlp.c_fc.weight")
            add((*ours, "mlp", "up", "bias"), f"{here}mlp.c_fc.bias")
            add((*ours, "mlp", "down", "kernel"), f"{here}mlp.c_proj.weight")
            add((*ours, "mlp", "down", "bias"), f"{here}mlp.c_proj.bias")
        add(("final_norm", "scale"), base + "ln_f.weight")
        add(("final_norm", "bias"), base + "ln_f.bias")
        head = "lm_head.weight"
    elif family == "gpt_neox":
        base = "gpt_neox."
        add(("embed", "embedding"), base + "embed_in.weight")
        for layer in range(config.num_layers):
            here, ours = f"{base}layers.{layer}.", (f"layers_{layer}",)
            for norm, hf in (("attention_norm", "input_layernorm"),
                             ("mlp_norm", "post_attention_layernorm")):
                add((*ours, norm, "scale"), f"{here}{hf}.weight")
                add((*ours, norm, "bias"), f"{here}{hf}.bias")
            for index, name in enumerate(("query", "key", "value")):
                add((*ours, "attention", name, "kernel"),
                    f"{here}attention.query_key_value.weight", neox_part(index, True))
                if config.attention_bias:
                    add((*ours, "attention", name, "bias"),
                        f"{here}attention.query_key_value.bias", neox_part(index, False))
            add((*ours, "attention", "output", "kernel"), f"{here}attention.dense.weight",
                transpose)
            if config.output_bias:
                add((*ours, "attention", "output", "bias"), f"{here}attention.dense.bias")
            add((*ours, "mlp", "up", "kernel"), f"{here}mlp.dense_h_to_4h.weight", transpose)
            add((*ours, "mlp", "up", "bias"), f"{here}mlp.dense_h_to_4h.bias")
            add((*ours, "mlp", "down", "kernel"), f"{here}mlp.dense_4h_to_h.weight", transpose)
            add((*ours, "mlp", "down", "bias"), f"{here}mlp.dense_4h_to_h.bias")
        add(("final_norm", "scale"), base + "final_layer_norm.weight")
        add(("final_norm", "bias"), base + "final_layer_norm.bias")
        head = "embed_out.weight"
    else:
        base = "model."
        add(("embed", "embedding"), base + "embed_tokens.weight")
        for layer in range(config.num_layers):
            here, ours = f"{base}layers.{layer}.", (f"layers_{layer}",)
            add((*ours, "attention_norm", "scale"), f"{here}input_layernorm.weight")
            add((*ours, "mlp_norm", "scale"), f"{here}post_attention_layernorm.weight")
            for name, hf in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj"),
                             ("output", "o_proj")):
                add((*ours, "attention", name, "kernel"), f"{here}self_attn.{hf}.weight",
                    transpose)
                bias = config.output_bias if name == "output" else config.attention_bias
                if bias:
                    add((*ours, "attention", name, "bias"), f"{here}self_attn.{hf}.bias")
            for name, hf in (("gate", "gate_proj"), ("up", "up_proj"), ("down", "down_proj")):
                add((*ours, "mlp", name, "kernel"), f"{here}mlp.{hf}.weight", transpose)
                if config.mlp_bias:
                    add((*ours, "mlp", name, "bias"), f"{here}mlp.{hf}.bias")
        add(("final_norm", "scale"), base + "norm.weight")
        head = "lm_head.weight"
    if reward_model:
        add(("@", "score"), "score.weight", transpose)
    elif not config.tie_embeddings:
        add(("@", "lm_head"), head, transpose)
    return entries


def _weight_files(directory: Path) -> list[Path]:
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        try:
            with open(index, encoding="utf-8") as file:
                shards = sorted(set(json.load(file)["weight_map"].values()))
        except (OSError, ValueError, KeyError, AttributeError) as error:
            raise RlkitError(f"{index}: not a safetensors index ({error}); restore it from "
                             "the model's snapshot.") from None
        missing = [shard for shard in shards if not (directory / shard).is_file()]
        if missing:
            raise RlkitError(f"{index}: shard {missing[0]} is missing from {directory}; "
                             "download the complete snapshot.")
        return [directory / shard for shard in shards]
    # As transformers: model.safetensors, else the index; other .safetensors files are not
    # weights (adapters, references).
    single = directory / "model.safetensors"
    if not single.is_file():
        hint = (" (only PyTorch .bin weights: re-save them with safe_serialization=True)"
                if list(directory.glob("*.bin")) else "")
        raise RlkitError(f"{directory}: no model.safetensors or model.safetensors.index.json"
                         f"{hint}; point at a Hugging Face model directory with config.json "
                         "and *.safetensors weights.")
    return [single]


def _read_tensors(files: list[Path]) -> dict[str, np.ndarray]:
    from safetensors import safe_open

    tensors: dict[str, np.ndarray] = {}
    for file in files:
        try:
            # framework "numpy" cannot read bfloat16; flax reads every dtype safetensors
            # writes and gives jax arrays we convert once to float32 numpy.
            with safe_open(str(file), framework="flax") as handle:
                for name in handle.keys():  # noqa: SIM118 - safe_open is not a dict
                    tensors[name] = np.asarray(handle.get_tensor(name), dtype=np.float32)
        except (OSError, ValueError, RuntimeError) as error:
            raise RlkitError(f"{file}: not a readable safetensors file ({error}); restore it "
                             "from the model's snapshot.") from None
    return tensors


def read_config(model_dir: str | Path) -> TransformerConfig:
    """The `TransformerConfig` of a local Hugging Face directory's `config.json`.

    Raises:
        RlkitError: not a directory, no or unreadable config.json, unsupported model.
    """
    directory = Path(model_dir)
    if not directory.is_dir():
        raise RlkitError(f"{directory}: not a directory; --model takes a local Hugging Face "
                         "model directory (config.json + *.safetensors).")
    file = directory / "config.json"
    if not file.is_file():
        raise RlkitError(f"{directory}: no config.json; point at a Hugging Face model "
                         "directory (config.json + *.safetensors).")
    data = read_model_json(file)
    try:
        return config_from_hf(data, str(file))
    except KeyError as error:
        raise RlkitError(f"{file}: field {error.args[0]!r} is missing; restore the file from "
                         "the model's snapshot.") from None


def _abstract_params(config: TransformerConfig, reward_model: bool) -> PyTree:
    model = (TransformerRewardModel if reward_model else Transformer)(config)
    tokens = jnp.zeros((1, 1), jnp.int32)
    return jax.eval_shape(model.init, jax.random.key(0), tokens, tokens,
                          jnp.ones((1, 1), bool))


def load_pretrained(model_dir: str | Path, *, reward_model: bool = False
                    ) -> tuple[TransformerConfig, PyTree]:
    """Read a local Hugging Face model directory into rlkit's config and variables.

    Args:
        model_dir: a directory with `config.json` and `*.safetensors` (one file, or shards
            listed in `model.safetensors.index.json`), or an rlkit run directory holding one
            as `model/` (`rlkit.lm.tokenizer.model_directory`).
        reward_model: read a one-label `*ForSequenceClassification` ("score.weight") into
            `TransformerRewardModel`'s variables instead of a causal LM's.

    Returns:
        (config, variables): `Transformer(config).apply(variables, ...)` (or
        `TransformerRewardModel`'s) gives the checkpoint's logits (rewards); every leaf is a
        float32 jnp array.

    Raises:
        RlkitError: (one line) a missing directory, config or weights; an unsupported
            model_type or feature; a tensor of another architecture (missing or unexpected,
            named) or another shape (named, with both shapes).
    """
    directory = model_directory(model_dir)
    config = read_config(directory)
    tensors = _read_tensors(_weight_files(directory))
    family = family_of(config)
    # Some checkpoints (the original gpt2) have no "transformer." / "model." prefix.
    prefixes = {"gpt2": "transformer.", "gpt_neox": "gpt_neox.", "qwen2": "model.",
                "llama": "model."}
    prefix = prefixes[family]
    if not any(name.startswith(prefix) for name in tensors):
        tensors = {(name if name.startswith(("lm_head", "score", "embed_out")) else
                    prefix + name): value for name, value in tensors.items()}
    expected = _abstract_params(config, reward_model)
    params: dict = {}
    used: set[str] = set()
    for path, name, convert in _mapping(config, family, reward_model):
        if name not in tensors:
            kind = ("a one-label sequence-classification head" if name == "score.weight"
                    else f"a {family} model")
            raise RlkitError(f"{directory}: tensor {name!r} is missing (expected {kind}); the "
                             "weights do not belong to this config.json's architecture.")
        value = convert(tensors[name])
        target = expected["params"]
        for key in path:
            target = target[key]
        if tuple(value.shape) != tuple(target.shape):
            raise RlkitError(f"{directory}: tensor {name!r} of shape "
                             f"{tuple(tensors[name].shape)} gives {tuple(value.shape)} for "
                             f"{'/'.join(path)}, config.json implies "
                             f"{tuple(target.shape)}; the weights and config.json belong to "
                             "different models.")
        node = params
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = jnp.asarray(value, jnp.float32)
        used.add(name)
    tied_head = {"lm_head.weight", "embed_out.weight"} if config.tie_embeddings else set()
    ignored = {name for name in tensors if name.endswith(_BUFFERS) or name in tied_head
               or (reward_model and name in {"lm_head.weight"})}
    unexpected = sorted(set(tensors) - used - ignored)
    if unexpected:
        raise RlkitError(f"{directory}: unexpected tensor {unexpected[0]!r} "
                         f"({len(unexpected)} in all) for a {family} model; the weights do not "
                         "belong to this config.json's architecture.")
    return config, {"params": params}


def check_vocabulary(tokenizer, config: TransformerConfig, where: str | Path = "") -> None:
    """Refuse a tokenizer whose ids do not fit the model's embedding.

    The model's vocabulary may be larger than the tokenizer's (Qwen2 pads it to a multiple of
    128), never smaller, and the special ids must be inside it.

    Raises:
        RlkitError: naming both sizes (or the special id) and the fix.
    """
    prefix = f"{where}: " if where else ""
    if tokenizer.vocab_size > config.vocab_size:
        raise RlkitError(f"{prefix}the tokenizer has {tokenizer.vocab_size} tokens but the "
                         f"model's vocab_size is {config.vocab_size}; use the tokenizer that "
                         "belongs to this model.")
    for field in ("pad_id", "bos_id", "eos_id"):
        value = getattr(tokenizer, field)
        if not 0 <= value < config.vocab_size:
            raise RlkitError(f"{prefix}the tokenizer's {field} {value} is outside the model's "
                             f"vocabulary [0, {config.vocab_size}); use the tokenizer that "
                             "belongs to this model.")


def save_pretrained(model_dir: str | Path, config: TransformerConfig, params: PyTree, *,
                    reward_model: bool = False, tokenizer=None) -> Path:
    """Write `config.json` and `model.safetensors` in the Hugging Face layout of the config's
    family (`family_of`), so that `load_pretrained` and `transformers` read them back (checked
    for every family: identical logits).

    Args:
        model_dir: the directory (created if needed).
        config: the model's config.
        params: its variables ({"params": ...}).
        reward_model: the variables are `TransformerRewardModel`'s.
        tokenizer: optional; its special ids go into config.json, and an `HFTokenizer` is
            written too (tokenizer.json, tokenizer_config.json with its special tokens).

    Returns:
        The directory.
    """
    from safetensors.numpy import save_file

    directory = Path(model_dir)
    directory.mkdir(parents=True, exist_ok=True)
    family = family_of(config)
    tree = params["params"]
    pieces: dict[str, list[np.ndarray]] = {}
    transposed: dict[str, bool] = {}
    for path, name, convert in _mapping(config, family, reward_model):
        value = np.asarray(jax.device_get(_lookup(tree, path)), np.float32)
        pieces.setdefault(name, []).append(value)
        transposed[name] = convert.__name__ == "transpose"
    tensors = {name: np.ascontiguousarray(_to_hf(parts, transposed[name], config, family))
               for name, parts in pieces.items()}
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    hf = config_to_hf(config, family)
    if reward_model:
        hf["architectures"] = [hf["architectures"][0].replace("ForCausalLM", "")
                               .replace("LMHeadModel", "") + "ForSequenceClassification"]
        hf["num_labels"] = 1
    if tokenizer is not None:
        hf.update(bos_token_id=tokenizer.bos_id, eos_token_id=tokenizer.eos_id,
                  pad_token_id=tokenizer.pad_id)
        inner = getattr(tokenizer, "tokenizer", None)
        if inner is not None:
            inner.save(str(directory / "tokenizer.json"))
            specials = {f"{name}_token": inner.id_to_token(getattr(tokenizer, f"{name}_id"))
                        for name in ("bos", "eos", "pad")}
            with open(directory / "tokenizer_config.json", "w", encoding="utf-8") as file:
                json.dump(specials, file, indent=2)
                file.write("\n")
    with open(directory / "config.json", "w", encoding="utf-8") as file:
        json.dump(hf, file, indent=2)
        file.write("\n")
    return directory


def _lookup(tree: PyTree, path: tuple[str, ...]):
    for key in path:
        tree = tree[key]
    return tree


def _to_hf(parts: list[np.ndarray], transposed: bool, config: TransformerConfig,
           family: str) -> np.ndarray:
    """Inverse of `_mapping`'s conversions: our pieces of one HF tensor back into it."""
    if len(parts) == 3 and family == "gpt2":  # c_attn: q, k, v side by side ([in, 3W])
        return np.concatenate(parts, axis=-1)
    if len(parts) == 3:  # GPT-NeoX query_key_value: [heads, 3, dims] on the output axis
        heads, dims = config.num_heads, config.dims_per_head
        outputs = [part.T if part.ndim == 2 else part for part in parts]  # [H * D, ...]
        stacked = np.stack([out.reshape(heads, dims, *out.shape[1:]) for out in outputs],
                           axis=1)
        return stacked.reshape(heads * 3 * dims, *outputs[0].shape[1:])
    (value,) = parts
    return value.T if transposed else value
