"""Small language models in JAX: tokenizers, a decoder-only Transformer with GPT-2 / Llama /
Qwen2 / GPT-NeoX modes, local Hugging Face checkpoints and KV-cache sampling.

* `rlkit.lm.tokenizer`: `ByteTokenizer`, `HFTokenizer.from_dir`, `load_tokenizer`;
* `rlkit.lm.transformer`: `TransformerConfig`, `Transformer`, `TransformerRewardModel`,
  `positions_from_mask`, `init_cache`, `reward_model_params` (the padding convention is in
  its docstring);
* `rlkit.lm.checkpoint`: `load_pretrained`, `save_pretrained`, `check_vocabulary`;
* `rlkit.lm.generate`: `generate`, `generate_without_cache`, `Generation`.
"""

from rlkit.lm.checkpoint import check_vocabulary, load_pretrained, save_pretrained
from rlkit.lm.generate import Generation, generate, generate_without_cache
from rlkit.lm.tokenizer import ByteTokenizer, HFTokenizer, load_tokenizer
from rlkit.lm.transformer import (
    KVCache,
    Transformer,
    TransformerConfig,
    TransformerRewardModel,
    init_cache,
    positions_from_mask,
    reward_model_params,
)

__all__ = [
    "ByteTokenizer", "Generation", "HFTokenizer", "KVCache", "Transformer", "TransformerConfig",
    "TransformerRewardModel", "check_vocabulary", "generate", "generate_without_cache",
    "init_cache", "load_pretrained", "load_tokenizer", "positions_from_mask", "reward_model_params",
    "save_pretrained",
]
