"""Language-model throughput: KV-cache generation against re-encoding, and training steps.

Three measurements, each on one device, each compiled ahead of time (compile seconds printed
apart), run once untimed, then timed `--repeats` times with `block_until_ready` (the median is
reported):

* generate: `rlkit.lm.generate.generate` (prefill + `while_loop` decode with a KV cache) and
  `generate_without_cache` (re-encodes the whole [B, P + N] sequence at every step), greedy,
  no EOS, so every row makes exactly `--new-tokens` tokens. Tokens per second counts generated
  tokens (B * N). Both must give the same tokens; the benchmark checks it. The bar (issue 12):
  the cache is at least 10x faster at 128 new tokens.
* train: one SFT-style step, next-token cross-entropy on [B, T] tokens + AdamW (optax), params
  and optimiser state donated. Tokens per second counts B * T.
* dpo (`--device gpu` only by default): one direct-preference-optimisation step (Rafailov et al.
  2023, eq. 7, sigmoid loss, beta 0.1): sequence log-probs of chosen and rejected under the
  policy (with gradient) and the reference policy (without), + AdamW. Its model FLOPs
  utilisation (MFU) counts the policy's forward and backward (6 N per token) and the
  reference's forward (2 N per token), plus attention (PaLM, Chowdhery et al. 2022, app. B:
  12 L W T per token for training, 4 L W T for a forward), against the device's peak
  (`--peak-tflops`, 989 for an H200's dense bf16).

Sizes:
* `--device cpu` (default): a Llama-style model of 2 layers, width 64, 4 heads (2 key/value
  heads), byte vocabulary, float32; generation of 4 prompts x 16 tokens + 128 new tokens;
  training on 8 x 128 tokens. About a minute on 2 CPU cores.
* `--device gpu`: a ~124M-parameter Llama-style model (12 layers, width 768, 12 heads, SwiGLU
  2048, vocab 50304 -- GPT-2 small's shape) in bfloat16 compute (float32 params); generation of
  32 prompts x 64 + 128 new tokens; train and DPO on `--batch` x `--length` tokens (default
  16 pairs x 512). Not run on a CPU.

Usage:
    python benchmarks/lm.py                        # CPU, writes results/lm_cpu.json
    python benchmarks/lm.py --device gpu           # GPU, writes results/lm_gpu.json
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from rlkit.errors import ArgumentParser  # noqa: E402
from rlkit.lm.generate import generate, generate_without_cache  # noqa: E402
from rlkit.lm.transformer import (  # noqa: E402
    Transformer,
    TransformerConfig,
    positions_from_mask,
)

RESULTS = Path(__file__).resolve().parent / "results"
STATIC = ("model", "max_new_tokens", "temperature", "top_k", "top_p", "eos_id", "pad_id")


def _timed(compiled, args, repeats: int) -> tuple[list[float], object]:
    out = jax.block_until_ready(compiled(*args))  # untimed warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - start)
    return times, out


def _compile(function, args, **jit_kwargs):
    start = time.perf_counter()
    compiled = jax.jit(function, **jit_kwargs).lower(*args).compile()
    return compiled, time.perf_counter() - start


def count_params(params) -> int:
    return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(params)))


def matmul_params(config: TransformerConfig, params) -> int:
    """N of the 6N rule: every parameter except the embedding lookup tables, plus the output
    layer's matmul when it is tied to the embedding."""
    tree = params["params"]["decoder"]
    lookup = tree["embed"]["embedding"].size + (
        tree["position_embed"]["embedding"].size if "position_embed" in tree else 0)
    head = config.vocab_size * config.width if config.tie_embeddings else 0
    return count_params(params) - lookup + head


def bench_generation(config: TransformerConfig, params, batch: int, prompt_length: int,
                     new_tokens: int, repeats: int) -> list[dict]:
    model = Transformer(config)
    rng = np.random.default_rng(0)
    prompts = jnp.asarray(rng.integers(3, config.vocab_size, (batch, prompt_length)), jnp.int32)
    lengths = rng.integers(prompt_length // 2, prompt_length + 1, batch)
    mask = jnp.asarray(np.arange(prompt_length)[None] >= prompt_length - lengths[:, None])
    settings = {"max_new_tokens": new_tokens, "temperature": 0.0, "eos_id": None, "pad_id": 0}
    rows, tokens = [], {}
    for name, function in (("generate (KV cache)", generate),
                           ("generate_without_cache", generate_without_cache)):
        def run(params, prompts, mask, key, function=function):
            return function(model, params, prompts, mask, key, **settings)

        args = (params, prompts, mask, jax.random.key(0))
        compiled, compile_s = _compile(run, args)
        times, out = _timed(compiled, args, repeats)
        tokens[name] = np.asarray(out.tokens)
        median = statistics.median(times)
        rows.append({"program": name, "batch": batch, "prompt_length": prompt_length,
                     "new_tokens": new_tokens, "median_s": median, "times_s": times,
                     "tokens_per_s": batch * new_tokens / median, "compile_s": compile_s})
        print(f"{name:<24} {batch * new_tokens / median:>12.0f} tokens/s   "
              f"median {median * 1e3:9.1f} ms   compile {compile_s:5.1f} s", flush=True)
    same = bool((tokens["generate (KV cache)"] == tokens["generate_without_cache"]).all())
    speedup = rows[1]["median_s"] / rows[0]["median_s"]
    print(f"KV cache speed-up {speedup:.1f}x; greedy tokens identical: {same}", flush=True)
    rows[0]["speedup_over_reencoding"] = speedup
    rows[0]["tokens_identical"] = same
    return rows


def _sequence_log_probs(model, params, tokens, mask):
    """[B] sum of log p(token_t | tokens_<t) over the real tokens after the first."""
    logits = model.apply(params, tokens, positions_from_mask(mask), mask)  # [B, T, V]
    log_probs = jax.nn.log_softmax(logits[:, :-1], axis=-1)
    picked = jnp.take_along_axis(log_probs, tokens[:, 1:, None], axis=-1)[..., 0]  # [B, T-1]
    return jnp.sum(jnp.where(mask[:, 1:], picked, 0.0), axis=-1)


def bench_training(config: TransformerConfig, params, batch: int, length: int, repeats: int,
                   peak_tflops: float | None, dpo: bool) -> dict:
    model = Transformer(config)
    params = jax.tree.map(jnp.copy, params)  # the step donates its params
    optimizer = optax.adamw(3e-4, weight_decay=0.1)
    rng = np.random.default_rng(1)
    rows = 2 * batch if dpo else batch
    tokens = jnp.asarray(rng.integers(3, config.vocab_size, (rows, length)), jnp.int32)
    mask = jnp.ones((rows, length), bool)

    def sft_loss(params, tokens, mask):
        logits = model.apply(params, tokens, positions_from_mask(mask), mask)
        log_probs = jax.nn.log_softmax(logits[:, :-1], axis=-1)
        picked = jnp.take_along_axis(log_probs, tokens[:, 1:, None], axis=-1)[..., 0]
        weights = mask[:, 1:].astype(jnp.float32)
        return -jnp.sum(picked * weights) / jnp.maximum(weights.sum(), 1.0)

    def dpo_loss(params, reference_params, tokens, mask, beta=0.1):
        policy = _sequence_log_probs(model, params, tokens, mask).reshape(2, batch)
        reference = jax.lax.stop_gradient(
            _sequence_log_probs(model, reference_params, tokens, mask)).reshape(2, batch)
        margin = (policy[0] - reference[0]) - (policy[1] - reference[1])  # chosen - rejected
        return -jnp.mean(jax.nn.log_sigmoid(beta * margin))

    def step(params, opt_state, reference_params, tokens, mask):
        if dpo:
            loss, grads = jax.value_and_grad(dpo_loss)(params, reference_params, tokens, mask)
        else:
            loss, grads = jax.value_and_grad(sft_loss)(params, tokens, mask)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    reference_params = jax.tree.map(jnp.copy, params)
    args = (params, optimizer.init(params), reference_params, tokens, mask)
    compiled, compile_s = _compile(step, args, donate_argnums=(0, 1))
    # Donated buffers: feed each call the previous call's outputs.
    state = jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        state = jax.block_until_ready(compiled(state[0], state[1], reference_params, tokens,
                                               mask))
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    count = rows * length
    n = matmul_params(config, params)
    attention = config.num_layers * config.width * length  # per token: x12 train, x4 forward
    flops = count * (6 * n + 12 * attention) + (count * (2 * n + 4 * attention) if dpo else 0)
    name = "dpo step" if dpo else "train step"
    row = {"program": name, "batch": rows, "length": length, "median_s": median,
           "times_s": times, "tokens_per_s": count / median, "compile_s": compile_s,
           "model_flops": flops, "achieved_tflops": flops / median / 1e12,
           "loss": float(state[2])}
    text = (f"{name:<24} {count / median:>12.0f} tokens/s   median {median * 1e3:9.1f} ms   "
            f"compile {compile_s:5.1f} s   {flops / median / 1e12:.2f} TFLOP/s")
    if peak_tflops:
        row["mfu"] = flops / median / 1e12 / peak_tflops
        text += f"   MFU {row['mfu']:.1%}"
    print(text, flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                        help="cpu: the small model; gpu: the ~124M bf16 model and the DPO step")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--batch", type=int, default=None,
                        help="training rows (DPO: pairs); default 8 on cpu, 16 on gpu")
    parser.add_argument("--length", type=int, default=None,
                        help="training sequence length; default 128 on cpu, 512 on gpu")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="device peak for MFU; default 989 (H200 dense bf16) on gpu")
    parser.add_argument("--dpo", action="store_true", help="also time the DPO step on cpu")
    parser.add_argument("--skip", default="", help="comma list of generate,train,dpo")
    parser.add_output("--json", default=None,
                        help="output file; default benchmarks/results/lm_<device>.json")
    args = parser.parse_args(argv)
    gpu = args.device == "gpu"
    if gpu and jax.default_backend() == "cpu":
        print("--device gpu: JAX sees no accelerator; run it where one is.", file=sys.stderr)
        return 2
    if gpu:
        config = TransformerConfig.llama(vocab_size=50304, num_layers=12, width=768,
                                         num_heads=12, mlp_width=2048, max_length=2048,
                                         dtype="bfloat16")
        gen_batch, prompt_length = 32, 64
        batch, length = args.batch or 16, args.length or 512
        peak = args.peak_tflops or 989.0
    else:
        config = TransformerConfig(num_layers=2, width=64, num_heads=4, num_kv_heads=2,
                                   mlp_width=256, max_length=512)
        gen_batch, prompt_length = 4, 16
        batch, length = args.batch or 8, args.length or 128
        peak = args.peak_tflops
    skip = set(filter(None, args.skip.split(",")))
    model = Transformer(config)
    init_tokens = jnp.zeros((1, 4), jnp.int32)
    init_mask = jnp.ones((1, 4), bool)
    params = jax.jit(model.init)(jax.random.key(0), init_tokens, positions_from_mask(init_mask),
                                 init_mask)
    device = jax.devices()[0]
    print(f"device {device.device_kind} ({jax.default_backend()}), jax {jax.__version__}, "
          f"{count_params(params) / 1e6:.1f}M params, compute {config.dtype}", flush=True)
    results = {"device": device.device_kind, "backend": jax.default_backend(),
               "jax": jax.__version__, "config": {k: v for k, v in vars(config).items()},
               "params": count_params(params), "rows": []}
    if "generate" not in skip:
        results["rows"] += bench_generation(config, params, gen_batch, prompt_length,
                                            args.new_tokens, args.repeats)
    if "train" not in skip:
        results["rows"].append(bench_training(config, params, batch, length, args.repeats,
                                              peak, dpo=False))
    if "dpo" not in skip and (gpu or args.dpo):
        results["rows"].append(bench_training(config, params, batch, length, args.repeats,
                                              peak, dpo=True))
    out = args.json or RESULTS / f"lm_{args.device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
