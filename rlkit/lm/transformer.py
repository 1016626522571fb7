"""A decoder-only Transformer language model (Flax Linen), with faithful GPT-2, Llama, Qwen2 and
GPT-NeoX (Pythia) modes.

One module covers the families: a `TransformerConfig` switches positions (learned or rotary),
the norm (LayerNorm or RMSNorm), the MLP (GELU or SwiGLU), biases, grouped-query attention
(`num_kv_heads` < `num_heads`), parallel residuals (GPT-NeoX) and tied embeddings. With a
family's preset and its checkpoint (`rlkit.lm.checkpoint.load_pretrained`) the logits match
Hugging Face `transformers` to 1e-4 in float32 (tests/test_lm_model.py).

Sources: GPT-2 (Radford et al. 2019; `transformers` GPT2Model: pre-LN blocks, learned
positions, tanh-GELU), Llama (Touvron et al. 2023: RMSNorm, SwiGLU (Shazeer 2020), rotary
positions (Su et al. 2021, eq. 34, in the "rotate half" layout of `transformers`)), grouped-query
attention (Ainslie et al. 2023), Qwen2 (Llama with q/k/v biases), GPT-NeoX (Black et al. 2022:
parallel attention and MLP, partial rotary dimensions).

Padding convention:

* `attention_mask` [B, T] is True for real tokens. A query attends to the keys at or before it
  that are real; padding keys get exactly zero attention weight, so neither the ids nor the
  number of pad tokens change a real token's logits. Logits at padded places are finite but
  meaningless.
* Prompts for generation are LEFT-padded, so every row's last prompt token sits in the last
  column and decoding writes all rows at the same cache slot.
* Positions count real tokens only: `positions_from_mask(mask)` = cumsum(mask) - 1, clipped at
  0. A left-padded row therefore has the positions it would have unpadded.
* Training sequences may be right-padded (or left-padded: both work with these positions).

KV cache: `init_cache(config, batch_size, length)` makes an empty `KVCache` of `length` slots.
Called with a cache, the model writes the keys and values of its T tokens at slots
[index, index + T), records which are real, and attends over the cache: a query at slot s sees
the real slots <= s. Prefill calls it with the whole prompt, decoding with one token per row.

Compute dtype: `config.dtype` ("float32" or "bfloat16") is the dtype of matmuls; parameters stay
float32, norms and the attention softmax run in float32, and logits are float32.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from rlkit.errors import require, require_int_at_least, require_number, require_one_of
from rlkit.types import Array, PRNGKey, PyTree

# A score no real logit reaches: masked keys get exp(MASKED - max) == 0 exactly, and a query
# with no visible key (a padding query) gets a uniform, finite average instead of NaN.
MASKED = -1e30


@dataclass(frozen=True)
class TransformerConfig:
    """The shape of a decoder-only Transformer; the defaults are a small Llama-style model that
    trains on a CPU.

    Use the family presets (`TransformerConfig.gpt2(...)`, `.llama(...)`, `.qwen2(...)`,
    `.gpt_neox(...)`) to get a family's switches, and `rlkit.lm.checkpoint.load_pretrained` to
    read one from a Hugging Face directory. Every field is checked when the config is built;
    a bad one raises `RlkitError` naming it.
    """

    vocab_size: int = 259
    """Number of token ids (ByteTokenizer's 259 by default)."""
    num_layers: int = 2
    """Transformer blocks."""
    width: int = 64
    """Model (residual stream) width."""
    num_heads: int = 4
    """Query heads."""
    num_kv_heads: int | None = None
    """Key/value heads (grouped-query attention); None means num_heads (multi-head)."""
    mlp_width: int = 256
    """Hidden width of the MLP (of each SwiGLU branch)."""
    max_length: int = 256
    """Longest sequence (positions 0 .. max_length - 1); the size of learned position tables."""
    positions: str = "rope"
    """"learned" (GPT-2) or "rope" (rotary: Llama, Qwen2, GPT-NeoX)."""
    rope_theta: float = 10000.0
    """Rotary base (10000 for Llama 2, 1e6 for Qwen2.5)."""
    norm: str = "rmsnorm"
    """"layernorm" (GPT-2, GPT-NeoX; with bias) or "rmsnorm" (Llama, Qwen2)."""
    norm_eps: float = 1e-6
    """Epsilon inside the norm's square root."""
    mlp: str = "swiglu"
    """"gelu" (GPT-2, GPT-NeoX) or "swiglu" (Llama, Qwen2)."""
    attention_bias: bool = False
    """Biases on the query, key and value projections."""
    mlp_bias: bool = False
    """Biases on the MLP's projections."""
    tie_embeddings: bool = True
    """The output layer reuses the token embedding (GPT-2, small Qwen2) instead of its own."""
    dtype: str = "float32"
    """Compute dtype, "float32" or "bfloat16"; parameters stay float32."""
    head_dim: int | None = None
    """Width of one head; None means width // num_heads."""
    attention_output_bias: bool | None = None
    """Bias on the attention's output projection; None means the same as attention_bias
    (Qwen2 has q/k/v biases but none here)."""
    gelu_approximate: bool = True
    """GELU's tanh approximation (GPT-2's "gelu_new") or the exact erf form (GPT-NeoX)."""
    parallel_residual: bool = False
    """x + attention(norm1(x)) + mlp(norm2(x)) in one step (GPT-NeoX) instead of two."""
    rotary_fraction: float = 1.0
    """Fraction of each head's dimensions that rotate (GPT-NeoX's rotary_pct)."""
    rope_scaling: str = "none"
    """Rotary frequency scaling of long-context checkpoints: "none", "linear" (frequencies /
    rope_factor) or "llama3" (Llama 3.1's band-wise scaling)."""
    rope_factor: float = 1.0
    """The scaling factor of "linear" and "llama3" (8 in Llama 3.1 / 3.2)."""
    rope_low_freq_factor: float = 1.0
    """Llama 3's low_freq_factor."""
    rope_high_freq_factor: float = 4.0
    """Llama 3's high_freq_factor."""
    rope_original_max_length: int = 8192
    """Llama 3's original_max_position_embeddings."""
    remat: bool = False
    """Recompute each block's activations in the backward pass (less memory, ~1/3 more
    compute), for long sequences on a large model."""

    def __post_init__(self) -> None:
        require_int_at_least(self.vocab_size, "vocab_size", 1)
        require_int_at_least(self.num_layers, "num_layers", 1)
        require_int_at_least(self.width, "width", 1)
        require_int_at_least(self.num_heads, "num_heads", 1)
        if self.num_kv_heads is not None:
            require_int_at_least(self.num_kv_heads, "num_kv_heads", 1)
            require(self.num_heads % self.num_kv_heads == 0, "num_kv_heads",
                    f"must divide num_heads ({self.num_heads}), got {self.num_kv_heads}; each "
                    "key/value head serves a whole group of query heads.")
        if self.head_dim is None:
            require(self.width % self.num_heads == 0, "num_heads",
                    f"must divide width ({self.width}), got {self.num_heads}; or set head_dim.")
        else:
            require_int_at_least(self.head_dim, "head_dim", 1)
        require_int_at_least(self.mlp_width, "mlp_width", 1)
        require_int_at_least(self.max_length, "max_length", 1)
        require_one_of(self.positions, "positions", ("learned", "rope"))
        require_number(self.rope_theta, "rope_theta", low=0, low_open=True)
        require_one_of(self.norm, "norm", ("layernorm", "rmsnorm"))
        require_number(self.norm_eps, "norm_eps", low=0, low_open=True)
        require_one_of(self.mlp, "mlp", ("gelu", "swiglu"))
        require_one_of(self.dtype, "dtype", ("float32", "bfloat16"))
        require_number(self.rotary_fraction, "rotary_fraction", low=0, high=1, low_open=True)
        require_one_of(self.rope_scaling, "rope_scaling", ("none", "linear", "llama3"))
        require_number(self.rope_factor, "rope_factor", low=0, low_open=True)
        require(self.rope_high_freq_factor > self.rope_low_freq_factor > 0,
                "rope_high_freq_factor", "must exceed rope_low_freq_factor, both > 0, got "
                f"{self.rope_high_freq_factor!r} and {self.rope_low_freq_factor!r}.")
        require_int_at_least(self.rope_original_max_length, "rope_original_max_length", 1)
        if self.positions == "rope":
            rotary = self.rotary_dim
            require(rotary % 2 == 0 and rotary > 0, "rotary_fraction",
                    f"gives {rotary} rotary dimensions of a {self.dims_per_head}-wide head; "
                    "they must be a positive even number.")

    @property
    def kv_heads(self) -> int:
        """Key/value heads (num_kv_heads, or num_heads when None)."""
        return self.num_heads if self.num_kv_heads is None else self.num_kv_heads

    @property
    def dims_per_head(self) -> int:
        """Width of one attention head."""
        return self.width // self.num_heads if self.head_dim is None else self.head_dim

    @property
    def rotary_dim(self) -> int:
        """Dimensions of each head that rotary positions rotate."""
        return int(self.dims_per_head * self.rotary_fraction)

    @property
    def output_bias(self) -> bool:
        """Whether the attention output projection has a bias."""
        return (self.attention_bias if self.attention_output_bias is None
                else self.attention_output_bias)

    @property
    def compute_dtype(self) -> jnp.dtype:
        """`dtype` as a jnp dtype."""
        return jnp.bfloat16 if self.dtype == "bfloat16" else jnp.float32

    def replace(self, **changes) -> TransformerConfig:
        """A copy with `changes` (validated again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def gpt2(cls, **overrides) -> TransformerConfig:
        """GPT-2's switches: learned positions, LayerNorm (eps 1e-5), tanh-GELU MLP, biases
        everywhere, tied embeddings, mlp_width 4 * width."""
        width = overrides.get("width", cls.width)
        return cls(**{"positions": "learned", "norm": "layernorm", "norm_eps": 1e-5,
                      "mlp": "gelu", "gelu_approximate": True, "attention_bias": True,
                      "mlp_bias": True, "tie_embeddings": True, "mlp_width": 4 * width,
                      **overrides})

    @classmethod
    def llama(cls, **overrides) -> TransformerConfig:
        """Llama's switches: rotary positions, RMSNorm, SwiGLU, no biases, untied output."""
        return cls(**{"positions": "rope", "norm": "rmsnorm", "norm_eps": 1e-6,
                      "mlp": "swiglu", "attention_bias": False, "mlp_bias": False,
                      "tie_embeddings": False, **overrides})

    @classmethod
    def qwen2(cls, **overrides) -> TransformerConfig:
        """Qwen2's switches: Llama's, plus q/k/v biases (none on the output projection), tied
        embeddings (the small models), rope_theta 1e6."""
        return cls(**{"positions": "rope", "norm": "rmsnorm", "norm_eps": 1e-6,
                      "mlp": "swiglu", "attention_bias": True, "attention_output_bias": False,
                      "mlp_bias": False, "tie_embeddings": True, "rope_theta": 1e6,
                      **overrides})

    @classmethod
    def gpt_neox(cls, **overrides) -> TransformerConfig:
        """GPT-NeoX's (Pythia's) switches: parallel residual, LayerNorm, exact GELU, biases,
        rotary on a quarter of each head, untied output, mlp_width 4 * width."""
        width = overrides.get("width", cls.width)
        return cls(**{"positions": "rope", "norm": "layernorm", "norm_eps": 1e-5,
                      "mlp": "gelu", "gelu_approximate": False, "attention_bias": True,
                      "mlp_bias": True, "tie_embeddings": False, "parallel_residual": True,
                      "rotary_fraction": 0.25, "mlp_width": 4 * width, **overrides})


def positions_from_mask(attention_mask: Array) -> Array:
    """Positions that count real tokens only: cumsum(mask) - 1, clipped at 0.

    Args:
        attention_mask: [B, T] bool, True for real tokens.

    Returns:
        [B, T] int32; a left-padded row gets 0, 0, ..., 0, 1, 2, ... (pads share position 0).
    """
    return jnp.maximum(jnp.cumsum(attention_mask.astype(jnp.int32), axis=-1) - 1, 0)


@struct.dataclass
class KVCache:
    """Keys and values of every layer for `length` slots (`init_cache`).

    Attributes:
        keys: tuple over layers of [B, S, K, D] (S slots, K key/value heads, D head width), in
            the compute dtype.
        values: like keys.
        mask: [B, S] bool, True where a slot holds a real token.
        index: int32 scalar, the next slot to write.
    """

    keys: tuple
    values: tuple
    mask: Array
    index: Array


def init_cache(config: TransformerConfig, batch_size: int, length: int) -> KVCache:
    """An empty KV cache of `length` slots (prompt length + new tokens, for generation).

    Returns:
        `KVCache` with zero keys/values [B, length, K, D], an all-False mask, index 0.
    """
    shape = (batch_size, length, config.kv_heads, config.dims_per_head)
    zeros = tuple(jnp.zeros(shape, config.compute_dtype) for _ in range(config.num_layers))
    return KVCache(keys=zeros, values=zeros, mask=jnp.zeros((batch_size, length), bool),
                   index=jnp.zeros((), jnp.int32))


def inverse_frequency(config: TransformerConfig) -> np.ndarray:
    """Rotary inverse frequencies theta^(-2i / R), i < R / 2, with the config's scaling.

    "llama3" follows `transformers`' `_compute_llama3_parameters` (Llama 3.1): wavelengths
    shorter than original_max_length / high_freq_factor keep their frequency, those longer than
    original_max_length / low_freq_factor are divided by the factor, and the band between is
    interpolated. Computed in float32 numpy, as `transformers` does in float32 torch.

    Returns:
        [R / 2] float32, R = `config.rotary_dim`.
    """
    rotary = config.rotary_dim
    frequency = (1.0 / (np.float32(config.rope_theta) ** (
        np.arange(0, rotary, 2).astype(np.float32) / np.float32(rotary)))).astype(np.float32)
    if config.rope_scaling == "linear":
        return (frequency / np.float32(config.rope_factor)).astype(np.float32)
    if config.rope_scaling == "llama3":
        factor = np.float32(config.rope_factor)
        low, high = config.rope_low_freq_factor, config.rope_high_freq_factor
        context = config.rope_original_max_length
        wavelength = (np.float32(2 * np.pi) / frequency).astype(np.float32)
        scaled = np.where(wavelength > context / low, frequency / factor, frequency)
        smooth = ((context / wavelength - low) / (high - low)).astype(np.float32)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelength < context / high) & ~(wavelength > context / low)
        frequency = np.where(medium, smoothed, scaled).astype(np.float32)
    return frequency


def _rotate(x: Array, positions: Array, config: TransformerConfig) -> Array:
    """Rotary position embedding in `transformers`' "rotate half" layout (Su et al. 2021).

    Args:
        x: [B, T, H, D] queries or keys.
        positions: [B, T] int32.

    Returns:
        [B, T, H, D], the first `rotary_dim` dimensions rotated, the rest unchanged.
    """
    rotary = config.rotary_dim
    angles = positions.astype(jnp.float32)[..., None] * inverse_frequency(config)  # [B, T, R/2]
    angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]  # [B, T, 1, R]
    cos, sin = jnp.cos(angles), jnp.sin(angles)
    x_rot, x_pass = x[..., :rotary].astype(jnp.float32), x[..., rotary:]
    first, second = jnp.split(x_rot, 2, axis=-1)
    rotated = x_rot * cos + jnp.concatenate([-second, first], axis=-1) * sin
    return jnp.concatenate([rotated.astype(x.dtype), x_pass], axis=-1)


class Norm(nn.Module):
    """LayerNorm (with bias) or RMSNorm, computed in float32 (params "scale", "bias")."""

    config: TransformerConfig

    @nn.compact
    def __call__(self, x: Array) -> Array:
        config = self.config
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],), jnp.float32)
        x32 = x.astype(jnp.float32)
        if config.norm == "rmsnorm":
            # Llama: x / sqrt(mean(x^2) + eps) * scale (Zhang & Sennrich 2019, eq. 4).
            normed = x32 * jax.lax.rsqrt(jnp.mean(x32**2, axis=-1, keepdims=True)
                                         + config.norm_eps)
            return (normed * scale).astype(config.compute_dtype)
        bias = self.param("bias", nn.initializers.zeros, (x.shape[-1],), jnp.float32)
        mean = jnp.mean(x32, axis=-1, keepdims=True)
        variance = jnp.mean((x32 - mean) ** 2, axis=-1, keepdims=True)
        normed = (x32 - mean) * jax.lax.rsqrt(variance + config.norm_eps)
        return (normed * scale + bias).astype(config.compute_dtype)


def _dense(features: int, bias: bool, config: TransformerConfig, name: str) -> nn.Dense:
    return nn.Dense(features, use_bias=bias, dtype=config.compute_dtype,
                    param_dtype=jnp.float32, kernel_init=nn.initializers.normal(0.02),
                    name=name)


class Attention(nn.Module):
    """Causal multi-head attention with grouped key/value heads, padding masks and a KV cache
    (params "query", "key", "value", "output")."""

    config: TransformerConfig

    @nn.compact
    def __call__(self, x: Array, positions: Array, query_slots: Array, key_mask: Array,
                 cached: tuple[Array, Array] | None, index: Array
                 ) -> tuple[Array, tuple[Array, Array] | None]:
        """
        Args:
            x: [B, T, W] normed inputs.
            positions: [B, T] int32 token positions (for rotary).
            query_slots: [T] int32 slot of each query (its column, or cache index + column).
            key_mask: [B, S] bool, keys that are real tokens (S = T without a cache).
            cached: this layer's (keys, values) [B, S, K, D] or None.
            index: int32 scalar, the first slot written (0 without a cache).

        Returns:
            ([B, T, W] outputs, the updated (keys, values) or None).
        """
        config = self.config
        heads, kv_heads, dims = config.num_heads, config.kv_heads, config.dims_per_head
        batch, length, _ = x.shape
        query = _dense(heads * dims, config.attention_bias, config, "query")(x)
        key = _dense(kv_heads * dims, config.attention_bias, config, "key")(x)
        value = _dense(kv_heads * dims, config.attention_bias, config, "value")(x)
        query = query.reshape(batch, length, heads, dims)
        key = key.reshape(batch, length, kv_heads, dims)
        value = value.reshape(batch, length, kv_heads, dims)
        if config.positions == "rope":
            query = _rotate(query, positions, config)
            key = _rotate(key, positions, config)
        new_cache = None
        if cached is not None:
            key = jax.lax.dynamic_update_slice(cached[0], key.astype(cached[0].dtype),
                                               (0, index, 0, 0))  # [B, S, K, D]
            value = jax.lax.dynamic_update_slice(cached[1], value.astype(cached[1].dtype),
                                                 (0, index, 0, 0))
            new_cache = (key, value)
        slots = key.shape[1]
        groups = heads // kv_heads
        query = query.reshape(batch, length, kv_heads, groups, dims)  # [B, T, K, G, D]
        scores = jnp.einsum("btkgd,bskd->bkgts", query, key,
                            preferred_element_type=jnp.float32) / jnp.sqrt(dims).astype(
                                jnp.float32)  # [B, K, G, T, S]
        causal = jnp.arange(slots)[None, :] <= query_slots[:, None]  # [T, S]
        visible = causal[None] & key_mask[:, None, :]  # [B, T, S]
        scores = jnp.where(visible[:, None, None], scores, MASKED)
        weights = jax.nn.softmax(scores, axis=-1).astype(config.compute_dtype)
        out = jnp.einsum("bkgts,bskd->btkgd", weights, value)  # [B, T, K, G, D]
        out = out.reshape(batch, length, heads * dims)
        return _dense(config.width, config.output_bias, config, "output")(out), new_cache


class MLP(nn.Module):
    """GELU (params "up", "down") or SwiGLU (params "gate", "up", "down") MLP."""

    config: TransformerConfig

    @nn.compact
    def __call__(self, x: Array) -> Array:
        config = self.config
        up = _dense(config.mlp_width, config.mlp_bias, config, "up")(x)
        if config.mlp == "swiglu":
            # Shazeer (2020), eq. 6: (silu(x W_gate) * x W_up) W_down.
            gate = _dense(config.mlp_width, config.mlp_bias, config, "gate")(x)
            hidden = jax.nn.silu(gate) * up
        else:
            hidden = jax.nn.gelu(up, approximate=config.gelu_approximate)
        return _dense(config.width, config.mlp_bias, config, "down")(hidden)


class Block(nn.Module):
    """A pre-norm block: x + attn(norm1(x)), then + mlp(norm2(.)); or both from x in parallel
    (GPT-NeoX). Params "attention_norm", "attention", "mlp_norm", "mlp"."""

    config: TransformerConfig

    @nn.compact
    def __call__(self, x, positions, query_slots, key_mask, cached, index):
        attention, new_cache = Attention(self.config, name="attention")(
            Norm(self.config, name="attention_norm")(x), positions, query_slots, key_mask,
            cached, index)
        mlp = MLP(self.config, name="mlp")
        mlp_norm = Norm(self.config, name="mlp_norm")
        if self.config.parallel_residual:
            return x + attention + mlp(mlp_norm(x)), new_cache
        x = x + attention
        return x + mlp(mlp_norm(x)), new_cache


class Decoder(nn.Module):
    """Embeddings, blocks and the final norm: the body that `Transformer` and
    `TransformerRewardModel` share (params "embed", "position_embed" when learned,
    "layers_0" ..., "final_norm")."""

    config: TransformerConfig

    def setup(self) -> None:
        config = self.config
        self.embed = nn.Embed(config.vocab_size, config.width, dtype=config.compute_dtype,
                              param_dtype=jnp.float32,
                              embedding_init=nn.initializers.normal(0.02))
        if config.positions == "learned":
            self.position_embed = nn.Embed(config.max_length, config.width,
                                           dtype=config.compute_dtype, param_dtype=jnp.float32,
                                           embedding_init=nn.initializers.normal(0.01))
        block = nn.remat(Block) if config.remat else Block
        self.layers = [block(config) for _ in range(config.num_layers)]
        self.final_norm = Norm(config)

    def __call__(self, tokens: Array, positions: Array, attention_mask: Array,
                 cache: KVCache | None = None) -> tuple[Array, KVCache | None]:
        """
        Args:
            tokens: [B, T] int32 ids.
            positions: [B, T] int32 positions (`positions_from_mask`).
            attention_mask: [B, T] bool, True for real tokens.
            cache: a `KVCache`, or None to attend within `tokens` only.

        Returns:
            ([B, T, W] final hidden states in the compute dtype, the updated cache or None).
        """
        length = tokens.shape[1]
        x = self.embed(tokens)
        if self.config.positions == "learned":
            x = x + self.position_embed(positions)
        if cache is None:
            index = jnp.zeros((), jnp.int32)
            key_mask = attention_mask
        else:
            index = cache.index
            key_mask = jax.lax.dynamic_update_slice(cache.mask, attention_mask, (0, index))
        query_slots = index + jnp.arange(length, dtype=jnp.int32)
        keys, values = [], []
        for number, layer in enumerate(self.layers):
            cached = None if cache is None else (cache.keys[number], cache.values[number])
            x, new_layer_cache = layer(x, positions, query_slots, key_mask, cached, index)
            if cache is not None:
                keys.append(new_layer_cache[0])
                values.append(new_layer_cache[1])
        new_cache = None if cache is None else KVCache(
            keys=tuple(keys), values=tuple(values), mask=key_mask, index=index + length)
        return self.final_norm(x), new_cache

    def logits(self, hidden: Array) -> Array:
        """[B, T, V] float32 logits of tied embeddings (float32 accumulation)."""
        table = self.embed.embedding.astype(self.config.compute_dtype)  # [V, W]
        return jnp.einsum("btw,vw->btv", hidden, table, preferred_element_type=jnp.float32)


class Transformer(nn.Module):
    """A decoder-only language model (params "decoder" and, untied, "lm_head" [W, V]).

    `__call__(tokens, positions, attention_mask, cache=None)`:

    Args:
        tokens: [B, T] int32 ids.
        positions: [B, T] int32 positions, `positions_from_mask(attention_mask)` (or, when
            decoding with a cache, the row's next position).
        attention_mask: [B, T] bool, True for real tokens (see the module docstring).
        cache: a `KVCache` from `init_cache` (or a previous call), or None.
        last_only: compute the logits of the last column only ([B, 1, V]): a left-padded
            prompt's next-token distribution, without materialising [B, T, V] (20 GB for 64
            prompts of 512 tokens at Qwen2's vocabulary of 151,936).

    Returns:
        logits [B, T, V] float32 without a cache; (logits, new_cache) with one.
    """

    config: TransformerConfig

    def setup(self) -> None:
        self.decoder = Decoder(self.config)
        if not self.config.tie_embeddings:
            self.lm_head = self.param("lm_head", nn.initializers.normal(0.02),
                                      (self.config.width, self.config.vocab_size), jnp.float32)

    def __call__(self, tokens: Array, positions: Array, attention_mask: Array,
                 cache: KVCache | None = None, *, last_only: bool = False
                 ) -> Array | tuple[Array, KVCache]:
        hidden, new_cache = self.decoder(tokens, positions, attention_mask, cache)
        if last_only:
            hidden = hidden[:, -1:]
        if self.config.tie_embeddings:
            logits = self.decoder.logits(hidden)
        else:
            logits = jnp.einsum("btw,wv->btv", hidden,
                                self.lm_head.astype(self.config.compute_dtype),
                                preferred_element_type=jnp.float32)
        return logits if cache is None else (logits, new_cache)


def last_real_index(attention_mask: Array) -> Array:
    """Index of each row's last real token (left or right padding).

    Args:
        attention_mask: [B, T] bool.

    Returns:
        [B] int32 (0 for a row without real tokens).
    """
    columns = jnp.arange(attention_mask.shape[1], dtype=jnp.int32)
    return jnp.max(jnp.where(attention_mask, columns, 0), axis=-1)


class TransformerRewardModel(nn.Module):
    """The Transformer body with a scalar head read at the last real token, as in `transformers`'
    `*ForSequenceClassification` with one label (params "decoder", "score" [W, 1] without
    bias).

    `__call__(tokens, positions, attention_mask) -> rewards [B] float32` (arguments as
    `Transformer`'s). A Bradley-Terry model compares rewards(chosen) and rewards(rejected).
    """

    config: TransformerConfig

    @nn.compact
    def __call__(self, tokens: Array, positions: Array, attention_mask: Array) -> Array:
        hidden, _ = Decoder(self.config, name="decoder")(tokens, positions, attention_mask)
        last = last_real_index(attention_mask)  # [B]
        features = jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]  # [B, W]
        score = self.param("score", nn.initializers.normal(0.02), (self.config.width, 1),
                           jnp.float32)
        return jnp.einsum("bw,wo->bo", features, score.astype(self.config.compute_dtype),
                          preferred_element_type=jnp.float32)[:, 0]


def reward_model_params(language_model_params: PyTree, key: PRNGKey,
                        init_scale: float = 0.02) -> PyTree:
    """`TransformerRewardModel` variables that start from a language model's body (its
    "decoder"; an untied output layer is dropped) with a fresh score head ~ N(0, init_scale^2),
    as TRL's reward trainer starts from an SFT model (`AutoModelForSequenceClassification`
    initialises the new `score` layer from N(0, initializer_range^2), 0.02).

    Args:
        language_model_params: `Transformer` variables ({"params": {"decoder": ..., ...}}).
        key: PRNG key of the head.
        init_scale: standard deviation of the head's weights.

    Returns:
        {"params": {"decoder": the same arrays, "score": [W, 1] float32}}.
    """
    decoder = language_model_params["params"]["decoder"]
    width = decoder["embed"]["embedding"].shape[-1]
    score = init_scale * jax.random.normal(key, (width, 1), jnp.float32)
    return {"params": {"decoder": decoder, "score": score}}
