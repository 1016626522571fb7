"""Small language models in JAX: tokenizers, a decoder-only Transformer with GPT-2 / Llama /
Qwen2 / GPT-NeoX modes, local Hugging Face checkpoints and KV-cache sampling.

* `rlkit.lm.tokenizer`: `ByteTokenizer`, `HFTokenizer.from_dir`, `load_tokenizer`;
* `rlkit.lm.transformer`: `TransformerConfig`, `Transformer`, `TransformerRewardModel`,
  `positions_from_mask`, `init_cache` (the padding convention is in its docstring);
* `rlkit.lm.checkpoint`: `load_pretrained`, `save_pretrained`, `check_vocabulary`;
* `rlkit.lm.generate`: `generate`, `generate_without_cache`, `Generation`.
"""
