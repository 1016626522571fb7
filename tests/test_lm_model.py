"""rlkit.lm's tokenizers, Transformer and checkpoints against Hugging Face `transformers`.

The fixtures under tests/fixtures/lm/ were written by `transformers` (PyTorch) with
tests/fixtures/lm/record_reference.py: tiny random models of each family with every parameter
perturbed, and their float32 logits. These tests read them with rlkit only (no torch).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from rlkit.errors import RlkitError
from rlkit.lm.checkpoint import check_vocabulary, load_pretrained, save_pretrained
from rlkit.lm.tokenizer import ByteTokenizer, HFTokenizer, load_tokenizer
from rlkit.lm.transformer import (
    Transformer,
    TransformerConfig,
    TransformerRewardModel,
    init_cache,
    positions_from_mask,
)

FIXTURES = Path(__file__).parent / "fixtures" / "lm"
FAMILIES = ["gpt2", "llama", "qwen2", "llama3", "gpt_neox"]


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_match_transformers(family):
    config, params = load_pretrained(FIXTURES / family)
    reference = load_file(str(FIXTURES / family / "reference.safetensors"))
    apply = jax.jit(Transformer(config).apply)
    for case in ("plain", "padded"):
        mask = reference[f"{case}_mask"]
        logits = apply(params, jnp.asarray(reference[f"{case}_tokens"]),
                             jnp.asarray(reference[f"{case}_positions"]), jnp.asarray(mask))
        expected = reference[f"{case}_logits"]
        assert logits.dtype == jnp.float32 and logits.shape == expected.shape
        # Only real tokens: padded places are meaningless by contract.
        np.testing.assert_allclose(np.asarray(logits)[mask], expected[mask], atol=1e-4,
                                   rtol=0, err_msg=f"{family} {case}")
        assert np.abs(expected[mask]).max() > 0.5  # the reference is not trivially small


def test_family_switches_are_read_from_config():
    gpt2 = load_pretrained(FIXTURES / "gpt2")[0]
    assert (gpt2.positions, gpt2.norm, gpt2.mlp, gpt2.tie_embeddings) == (
        "learned", "layernorm", "gelu", True)
    llama = load_pretrained(FIXTURES / "llama")[0]
    assert (llama.kv_heads, llama.num_heads, llama.mlp, llama.norm, llama.tie_embeddings) == (
        2, 4, "swiglu", "rmsnorm", False)
    qwen2 = load_pretrained(FIXTURES / "qwen2")[0]
    assert (qwen2.attention_bias, qwen2.output_bias, qwen2.rope_theta) == (True, False, 1e6)
    llama3 = load_pretrained(FIXTURES / "llama3")[0]
    assert (llama3.rope_scaling, llama3.rope_factor, llama3.rope_original_max_length,
            llama3.tie_embeddings) == ("llama3", 8.0, 16, True)
    neox = load_pretrained(FIXTURES / "gpt_neox")[0]
    assert (neox.parallel_residual, neox.rotary_dim, neox.gelu_approximate) == (True, 4, False)


def test_reward_model_matches_transformers_sequence_classification():
    config, params = load_pretrained(FIXTURES / "llama_reward", reward_model=True)
    reference = load_file(str(FIXTURES / "llama_reward" / "reference.safetensors"))
    rewards = TransformerRewardModel(config).apply(
        params, jnp.asarray(reference["tokens"]), jnp.asarray(reference["positions"]),
        jnp.asarray(reference["mask"]))
    assert rewards.shape == (3,)
    np.testing.assert_allclose(np.asarray(rewards), reference["rewards"], atol=1e-4, rtol=0)


def test_reward_model_starts_from_a_language_models_body():
    from rlkit.lm.transformer import reward_model_params

    config, params = load_pretrained(FIXTURES / "llama")  # untied: its lm_head is dropped
    reward_params = reward_model_params(params, jax.random.key(0))
    reference = load_pretrained(FIXTURES / "llama_reward", reward_model=True)[1]
    assert jax.tree.structure(reward_params) == jax.tree.structure(reference)
    assert reward_params["params"]["decoder"] is params["params"]["decoder"]
    tokens = jnp.array([[5, 6, 7, 0]], jnp.int32)
    mask = jnp.array([[1, 1, 1, 0]], bool)
    positions = positions_from_mask(mask)
    # The reward is the score head applied to the body's hidden state at the last real token.
    model = TransformerRewardModel(config)
    rewards = jax.jit(model.apply)(reward_params, tokens, positions, mask)
    hidden, _ = jax.jit(lambda p: Transformer(config).apply(
        p, tokens, positions, mask, method=lambda m, *a: m.decoder(*a)))(params)
    np.testing.assert_allclose(rewards, hidden[:, 2] @ reward_params["params"]["score"][:, 0],
                               atol=1e-5)


def test_padding_never_changes_real_logits():
    config = TransformerConfig(vocab_size=50, num_kv_heads=2, max_length=32)
    model = Transformer(config)
    apply = jax.jit(model.apply)
    tokens = jnp.array([[7, 8, 9, 10, 11, 12]], jnp.int32)
    mask = jnp.ones_like(tokens, bool)
    params = jax.jit(model.init)(jax.random.key(0), tokens, positions_from_mask(mask), mask)
    alone = apply(params, tokens, positions_from_mask(mask), mask)[0]  # [6, V]
    # Rows of length 9: 3 left pads (ids 0, then 49), 3 right pads, 1 left + 2 right pads, and
    # the left-padded row with its first real token changed.
    padded = jnp.array([[0, 0, 0, 7, 8, 9, 10, 11, 12],
                        [49, 49, 49, 7, 8, 9, 10, 11, 12],
                        [7, 8, 9, 10, 11, 12, 7, 7, 7],
                        [3, 7, 8, 9, 10, 11, 12, 30, 31],
                        [0, 0, 0, 3, 8, 9, 10, 11, 12]], jnp.int32)
    padded_mask = jnp.array([[0, 0, 0, 1, 1, 1, 1, 1, 1]] * 2 + [[1] * 6 + [0] * 3]
                            + [[0] + [1] * 6 + [0] * 2] + [[0, 0, 0, 1, 1, 1, 1, 1, 1]], bool)
    logits = np.asarray(apply(params, padded, positions_from_mask(padded_mask), padded_mask))
    for row in range(4):
        np.testing.assert_allclose(logits[row][np.asarray(padded_mask[row])], alone,
                                   atol=1e-5, err_msg=f"row {row}")
    # Changing a real token does change the later logits (the checks above can fail).
    assert np.abs(logits[4, 4:] - np.asarray(alone[1:])).max() > 1e-3


def test_cache_prefill_and_step_equal_full_encoding():
    config = TransformerConfig.gpt2(vocab_size=40, max_length=16)
    model = Transformer(config)
    tokens = jnp.array([[0, 0, 5, 6, 7], [1, 2, 3, 4, 5]], jnp.int32)
    mask = jnp.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]], bool)
    positions = positions_from_mask(mask)
    params = jax.jit(model.init)(jax.random.key(1), tokens, positions, mask)
    apply = jax.jit(model.apply)
    full = apply(params, tokens, positions, mask)
    cache = init_cache(config, 2, 8)
    first, cache = apply(params, tokens[:, :3], positions[:, :3], mask[:, :3], cache=cache)
    second, cache = apply(params, tokens[:, 3:], positions[:, 3:], mask[:, 3:], cache=cache)
    assert int(cache.index) == 5
    last = jax.jit(model.apply, static_argnames="last_only")(params, tokens, positions, mask,
                                                             last_only=True)
    np.testing.assert_allclose(last, full[:, -1:], atol=1e-6)
    np.testing.assert_allclose(np.concatenate([first, second], 1)[np.asarray(mask)],
                               np.asarray(full)[np.asarray(mask)], atol=1e-5)


def test_positions_from_mask_counts_real_tokens():
    mask = jnp.array([[0, 0, 1, 1, 1], [1, 1, 1, 0, 0]], bool)
    np.testing.assert_array_equal(positions_from_mask(mask),
                                  [[0, 0, 0, 1, 2], [0, 1, 2, 2, 2]])


def test_bfloat16_compute_keeps_float32_params_and_logits():
    config = TransformerConfig(vocab_size=30, dtype="bfloat16")
    model = Transformer(config)
    tokens = jnp.array([[1, 2, 3]], jnp.int32)
    mask = jnp.ones_like(tokens, bool)
    params = jax.jit(model.init)(jax.random.key(0), tokens, positions_from_mask(mask), mask)
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
    logits = jax.jit(model.apply)(params, tokens, positions_from_mask(mask), mask)
    reference = jax.jit(Transformer(config.replace(dtype="float32")).apply)(
        params, tokens, positions_from_mask(mask), mask)
    assert logits.dtype == jnp.float32
    np.testing.assert_allclose(logits, reference, atol=0.1)


def test_remat_keeps_parameter_names_and_gradients():
    config = TransformerConfig(vocab_size=30, num_layers=2)
    tokens = jnp.array([[1, 2, 3, 4]], jnp.int32)
    mask = jnp.ones_like(tokens, bool)
    positions = positions_from_mask(mask)
    params = jax.jit(Transformer(config).init)(jax.random.key(0), tokens, positions, mask)

    def loss(params, config):
        return jnp.sum(Transformer(config).apply(params, tokens, positions, mask) ** 2)

    plain = jax.jit(jax.grad(loss), static_argnums=1)(params, config)
    remat = jax.jit(jax.grad(loss), static_argnums=1)(params, config.replace(remat=True))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), plain, remat)


@pytest.mark.parametrize("family", FAMILIES)
def test_save_pretrained_round_trips(family, tmp_path):
    config, params = load_pretrained(FIXTURES / family)
    save_pretrained(tmp_path / family, config, params)
    again_config, again = load_pretrained(tmp_path / family)
    assert again_config == config
    jax.tree.map(np.testing.assert_array_equal, again, params)
    # The written tensors are exactly the ones transformers wrote.
    original = load_file(str(FIXTURES / family / "model.safetensors"))
    written = load_file(str(tmp_path / family / "model.safetensors"))
    assert set(written) == set(original)
    for name in original:
        np.testing.assert_array_equal(written[name], original[name], err_msg=name)


def test_save_pretrained_writes_the_tokenizer(tmp_path):
    config, params = load_pretrained(FIXTURES / "llama")
    tokenizer = load_tokenizer(FIXTURES / "llama")
    save_pretrained(tmp_path, config, params, tokenizer=tokenizer)
    again = load_tokenizer(tmp_path)
    assert (again.pad_id, again.bos_id, again.eos_id, again.vocab_size) == (0, 1, 2, 100)
    assert again.encode("sort 3 1 2") == tokenizer.encode("sort 3 1 2")
    written = json.loads((tmp_path / "config.json").read_text())
    assert (written["bos_token_id"], written["eos_token_id"], written["pad_token_id"]) == (1, 2, 0)


# --- Tokenizers ------------------------------------------------------------------------------


def test_byte_tokenizer_round_trips_and_drops_specials():
    tokenizer = ByteTokenizer()
    ids = tokenizer.encode("héllo 42")
    assert ids == list("héllo 42".encode())
    assert tokenizer.decode([tokenizer.bos_id, *ids, tokenizer.eos_id, tokenizer.pad_id]) == (
        "héllo 42")
    assert (tokenizer.vocab_size, tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id) == (
        259, 256, 257, 258)


def test_hf_tokenizer_gives_transformers_ids():
    reference = json.loads((FIXTURES / "tokenizer_reference.json").read_text("utf-8"))
    tokenizer = load_tokenizer(FIXTURES / "llama")
    assert isinstance(tokenizer, HFTokenizer)
    special = reference["special"]
    assert (tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id, tokenizer.vocab_size) == (
        special["pad_id"], special["bos_id"], special["eos_id"], special["vocab_size"])
    for text, ids in reference["ids"].items():
        assert tokenizer.encode(text) == ids, text
        assert tokenizer.decode([tokenizer.bos_id, *ids, tokenizer.eos_id]) == (
            reference["decoded"][text])
    check_vocabulary(tokenizer, load_pretrained(FIXTURES / "llama")[0])  # fits: no error


def test_hf_tokenizer_falls_back_to_config_ids_and_eos_padding(tmp_path):
    shutil.copy(FIXTURES / "llama" / "tokenizer.json", tmp_path / "tokenizer.json")
    (tmp_path / "config.json").write_text(json.dumps({"eos_token_id": [2, 1],
                                                      "bos_token_id": 1}))
    tokenizer = HFTokenizer.from_dir(tmp_path)
    assert (tokenizer.eos_id, tokenizer.bos_id, tokenizer.pad_id) == (2, 1, 2)
    assert isinstance(load_tokenizer("byte"), ByteTokenizer)
    assert isinstance(load_tokenizer(None), ByteTokenizer)


# --- One line per bad input ------------------------------------------------------------------


def _copy(family: str, tmp_path: Path) -> Path:
    target = tmp_path / family
    shutil.copytree(FIXTURES / family, target)
    return target


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_directory_without_config_or_weights(tmp_path):
    with pytest.raises(RlkitError, match="not a directory") as error:
        load_pretrained(tmp_path / "nowhere")
    _one_line(error)
    directory = _copy("llama", tmp_path)
    (directory / "model.safetensors").unlink()
    with pytest.raises(RlkitError, match="no model.safetensors or model") as error:
        load_pretrained(directory)
    _one_line(error)
    (directory / "config.json").unlink()
    with pytest.raises(RlkitError, match="no config.json") as error:
        load_pretrained(directory)
    _one_line(error)


def test_sharded_index_with_missing_shard(tmp_path):
    directory = _copy("llama", tmp_path)
    tensors = load_file(str(directory / "model.safetensors"))
    names = sorted(tensors)
    (directory / "model.safetensors").unlink()
    save_file({name: tensors[name] for name in names[:5]},
              str(directory / "model-00001-of-00002.safetensors"))
    save_file({name: tensors[name] for name in names[5:]},
              str(directory / "model-00002-of-00002.safetensors"))
    weight_map = {name: ("model-00001-of-00002.safetensors" if i < 5 else
                         "model-00002-of-00002.safetensors") for i, name in enumerate(names)}
    (directory / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map}))
    config, params = load_pretrained(directory)  # the shards load
    reference = load_pretrained(FIXTURES / "llama")[1]
    jax.tree.map(np.testing.assert_array_equal, params, reference)
    (directory / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(RlkitError, match="shard model-00002-of-00002.safetensors is missing"):
        load_pretrained(directory)


def test_unsupported_model_type(tmp_path):
    directory = _copy("llama", tmp_path)
    data = json.loads((directory / "config.json").read_text())
    data["model_type"] = "mistral"
    (directory / "config.json").write_text(json.dumps(data))
    with pytest.raises(RlkitError, match=r"model_type 'mistral' is not supported.*gpt2") as err:
        load_pretrained(directory)
    assert "config.json" in _one_line(err)


def test_weights_of_another_architecture(tmp_path):
    directory = _copy("llama", tmp_path)
    shutil.copy(FIXTURES / "gpt2" / "model.safetensors", directory / "model.safetensors")
    with pytest.raises(RlkitError, match="tensor 'model.embed_tokens.weight' is missing") as err:
        load_pretrained(directory)
    _one_line(err)


def test_weights_of_another_shape_name_tensor_and_both_shapes(tmp_path):
    directory = _copy("qwen2", tmp_path)
    data = json.loads((directory / "config.json").read_text())
    data["intermediate_size"] = 48
    (directory / "config.json").write_text(json.dumps(data))
    with pytest.raises(RlkitError) as error:
        load_pretrained(directory)
    message = _one_line(error)
    # gate_proj is the first MLP tensor read; [out, in] in the file, [in, out] in rlkit.
    assert "tensor 'model.layers.0.mlp.gate_proj.weight' of shape (64, 32)" in message
    assert "gives (32, 64)" in message and "implies (32, 48)" in message


def test_unexpected_tensor_is_named(tmp_path):
    directory = _copy("llama", tmp_path)
    tensors = load_file(str(directory / "model.safetensors"))
    tensors["model.layers.0.self_attn.q_norm.weight"] = np.ones(8, np.float32)
    save_file(tensors, str(directory / "model.safetensors"))
    with pytest.raises(RlkitError, match="unexpected tensor 'model.layers.0.self_attn.q_norm"):
        load_pretrained(directory)


def test_reward_model_needs_a_score_head():
    with pytest.raises(RlkitError, match="tensor 'score.weight' is missing"):
        load_pretrained(FIXTURES / "llama", reward_model=True)


def test_tokenizer_vocabulary_must_fit_the_model(tmp_path):
    tokenizer = load_tokenizer(FIXTURES / "llama")
    config = load_pretrained(FIXTURES / "llama")[0].replace(vocab_size=64)
    with pytest.raises(RlkitError, match="the tokenizer has 100 tokens but the model's "
                                         "vocab_size is 64") as error:
        check_vocabulary(tokenizer, config, FIXTURES / "llama")
    _one_line(error)
    with pytest.raises(RlkitError, match="no tokenizer.json"):
        load_tokenizer(tmp_path)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("num_heads", 5, "num_heads: must divide width"),
    ("num_kv_heads", 3, "num_kv_heads: must divide num_heads"),
    ("positions", "alibi", "positions: must be 'learned' or 'rope'"),
    ("norm", "batchnorm", "norm: must be"),
    ("mlp", "relu", "mlp: must be"),
    ("dtype", "float16", "dtype: must be"),
    ("width", 0, "width: must be an int >= 1"),
    ("rotary_fraction", 0.1, "rotary_fraction: gives 1 rotary dimensions"),
])
def test_config_refuses_bad_fields(field, value, message):
    with pytest.raises(RlkitError, match=message):
        TransformerConfig(**{field: value})


def test_bfloat16_checkpoints_load_as_float32(tmp_path):
    # Real snapshots (Qwen2.5, Llama 3.2) store bfloat16, which numpy cannot hold natively.
    from safetensors.flax import save_file as save_flax

    directory = _copy("llama", tmp_path)
    tensors = load_file(str(directory / "model.safetensors"))
    save_flax({name: jnp.asarray(value, jnp.bfloat16) for name, value in tensors.items()},
              str(directory / "model.safetensors"))
    _, params = load_pretrained(directory)
    _, reference = load_pretrained(FIXTURES / "llama")
    leaves = jax.tree.leaves(params)
    assert {leaf.dtype for leaf in leaves} == {jnp.dtype(jnp.float32)}
    rounded = jax.tree.map(lambda x: x.astype(jnp.bfloat16).astype(jnp.float32), reference)
    jax.tree.map(np.testing.assert_array_equal, params, rounded)


def test_last_real_index_reads_left_and_right_padding():
    from rlkit.lm.transformer import last_real_index

    mask = jnp.array([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [0, 1, 1, 0, 0], [0, 0, 0, 0, 0]], bool)
    np.testing.assert_array_equal(last_real_index(mask), [2, 4, 2, 0])


def test_tokenizer_without_eos_is_one_line(tmp_path):
    shutil.copy(FIXTURES / "llama" / "tokenizer.json", tmp_path / "tokenizer.json")
    with pytest.raises(RlkitError, match="no EOS token") as error:
        HFTokenizer.from_dir(tmp_path)
    _one_line(error)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(RlkitError, match="not a tokenizers file") as error:
        HFTokenizer.from_dir(tmp_path)
    _one_line(error)


def test_original_gpt2_layout_without_prefix_and_with_mask_buffers(tmp_path):
    # openai-community/gpt2's model.safetensors: "h.0.attn.c_attn.weight" (no "transformer."),
    # plus the causal-mask buffers "h.N.attn.bias".
    directory = _copy("gpt2", tmp_path)
    tensors = load_file(str(directory / "model.safetensors"))
    renamed = {name.removeprefix("transformer."): value for name, value in tensors.items()}
    renamed["h.0.attn.bias"] = np.tril(np.ones((1, 1, 64, 64), np.float32))
    save_file(renamed, str(directory / "model.safetensors"))
    _, params = load_pretrained(directory)
    jax.tree.map(np.testing.assert_array_equal, params, load_pretrained(FIXTURES / "gpt2")[1])
