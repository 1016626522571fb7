"""Replay-buffer throughput: rlkit's uniform and prioritised buffers against flashbax's.

Both libraries get the same job, on the same device, inside one jitted `lax.scan` each:

* add: `--adds` calls, each adding a batch of `--add-batch` items (default 8, what 8 envs give
  per driver iteration), into a buffer of `--capacity` items;
* sample: `--samples` calls, each drawing a batch of `--batch-size` items (default 256) from a
  full buffer;
* sample+set (prioritised only): sample a batch, then set its priorities, the work of one
  prioritised-replay update. This is the row to read for prioritised sampling: in the
  sample-only program the buffer never changes, so XLA may hoist work that depends only on the
  state (rlkit's block totals and minimum, for instance) out of the loop.

The item is a CartPole-sized `Transition`: obs and next_obs float32[4], int32 action, float32
reward, bool terminated and truncated. The flashbax buffers are `fbx.make_item_buffer` and
`fbx.make_prioritised_item_buffer` with `add_batches=True` (flashbax stores items as one long
trajectory of a single "env"; its prioritised buffer keeps a sum tree, and is told the backend
through its `device` argument).

What is timed matches on both sides: rlkit's prioritised `sample` returns importance weights,
normalised by the largest weight over the whole buffer as in the paper; flashbax returns
probabilities, from which the benchmark computes `(N * P)^-beta` normalised by the batch's largest
weight (what flashbax users do: a sum tree does not keep the minimum). Every sampled batch is
folded into a checksum carried by the scan, so XLA cannot drop the sampling as dead code.

Each program is compiled ahead of time (compile seconds printed apart), run once untimed, then
timed `--repeats` times with `block_until_ready`; the table gives the median time and items per
second (items added, or items sampled), and the ratio rlkit / flashbax (> 1: rlkit is faster).
Adding programs donate the buffer state, as the drivers do. On a shared machine the ratios move
by tens of percent between runs (both add programs are one scatter per call, for example): run it
twice, or raise `--repeats`, before reading much into a ratio near one.

A third section times offline datasets (`rlkit.data.dataset`, see `bench_dataset_load`): loading
with checksum verification plus the move to the device, for a CartPole-sized and an image
dataset, and streamed batches from a memory-mapped image dataset.

Usage:
    python benchmarks/replay.py                              # defaults, about a minute on 2 CPUs
    python benchmarks/replay.py --capacity 1000000 --adds 10000 --samples 2000 --json out.json
"""

from __future__ import annotations

import importlib.metadata
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flashbax as fbx
import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from rlkit.data import make_prioritised_buffer, make_uniform_buffer  # noqa: E402
from rlkit.errors import ArgumentParser  # noqa: E402
from rlkit.loops.common import example_transition  # noqa: E402
from rlkit.types import Transition  # noqa: E402

ALPHA, BETA = 0.6, 0.4


def _example() -> Transition:
    return example_transition(jnp.zeros((4,), jnp.float32))


def _item_batches(num_batches: int, batch: int) -> Transition:
    """`[num_batches, batch, ...]` distinct items, made before timing."""
    ids = jnp.arange(num_batches * batch, dtype=jnp.int32).reshape(num_batches, batch)
    obs = jnp.broadcast_to(ids[..., None].astype(jnp.float32), (num_batches, batch, 4))
    return Transition(
        obs=obs,
        action=ids % 2,
        reward=(ids % 7).astype(jnp.float32),
        terminated=ids % 50 == 49,
        truncated=ids % 500 == 499,
        next_obs=obs + 1.0,
    )


def _checksum(items: Transition, weights: jax.Array | None = None) -> jax.Array:
    total = items.reward.sum() + items.obs[..., 0].sum() + items.terminated.sum()
    return total if weights is None else total + weights.sum()


class Library:
    """One library's buffer, wrapped in the calls the programs need."""

    def __init__(self, name: str, init, add, sample, set_priorities=None):
        self.name, self.init, self.add = name, init, add
        self.sample, self.set_priorities = sample, set_priorities


def _libraries(args) -> dict[str, Library]:
    capacity, batch = args.capacity, args.batch_size
    uniform = make_uniform_buffer(capacity)
    prioritised = make_prioritised_buffer(capacity, alpha=ALPHA, beta=BETA)
    fbx_uniform = fbx.make_item_buffer(
        max_length=capacity, min_length=1, sample_batch_size=batch, add_batches=True
    )
    device = jax.default_backend() if jax.default_backend() in ("cpu", "gpu", "tpu") else "cpu"
    fbx_prioritised = fbx.make_prioritised_item_buffer(
        max_length=capacity,
        min_length=1,
        sample_batch_size=batch,
        add_batches=True,
        priority_exponent=ALPHA,
        device=device,
    )

    def fbx_prioritised_sample(state, key):
        sample = fbx_prioritised.sample(state, key)
        # flashbax gives P(i); importance weights as its users compute them (batch max).
        num_items = jnp.where(state.is_full, capacity, state.current_index)
        weights = (num_items * sample.probabilities) ** -BETA
        return sample.experience, sample.indices, weights / weights.max()

    def rlkit_prioritised_sample(state, key):
        sample = prioritised.sample(state, key, batch)
        return sample.items, sample.indices, sample.weights

    return {
        "rlkit uniform": Library(
            "rlkit uniform",
            uniform.init,
            uniform.add,
            lambda state, key: (uniform.sample(state, key, batch), None, None),
        ),
        "flashbax uniform": Library(
            "flashbax uniform",
            fbx_uniform.init,
            fbx_uniform.add,
            lambda state, key: (fbx_uniform.sample(state, key).experience, None, None),
        ),
        "rlkit prioritised": Library(
            "rlkit prioritised",
            prioritised.init,
            prioritised.add,
            rlkit_prioritised_sample,
            prioritised.set_priorities,
        ),
        "flashbax prioritised": Library(
            "flashbax prioritised",
            fbx_prioritised.init,
            fbx_prioritised.add,
            fbx_prioritised_sample,
            fbx_prioritised.set_priorities,
        ),
    }


def _programs(library: Library) -> dict[str, Callable]:
    """The jitted programs of one library: add, sample and (prioritised) sample + set."""

    def add_all(state, item_batches):
        return jax.lax.scan(lambda s, items: (library.add(s, items), None), state, item_batches)[0]

    def sample_all(state, keys):
        def step(total, key):
            items, _, weights = library.sample(state, key)
            return total + _checksum(items, weights), None

        return jax.lax.scan(step, jnp.zeros((), jnp.float32), keys)[0]

    def sample_and_set_all(state, keys):
        def step(carry, key):
            state, total = carry
            items, indices, weights = library.sample(state, key)
            # A stand-in for |TD error|: depends on the batch, as a learner's would.
            state = library.set_priorities(state, indices, items.reward * weights + 0.1)
            return (state, total + _checksum(items, weights)), None

        return jax.lax.scan(step, (state, jnp.zeros((), jnp.float32)), keys)[0]

    programs = {
        "add": jax.jit(add_all, donate_argnums=0),
        "sample": jax.jit(sample_all),
    }
    if library.set_priorities is not None:
        programs["sample+set"] = jax.jit(sample_and_set_all, donate_argnums=0)
    return programs


def _compile(jitted, *args) -> tuple[Any, float]:
    start = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    return compiled, time.perf_counter() - start


def _time(compiled, make_args: Callable[[], tuple], repeats: int) -> list[float]:
    """Run once untimed, then `repeats` timed runs; fresh arguments each run (donation)."""
    jax.block_until_ready(compiled(*make_args()))
    times = []
    for _ in range(repeats):
        args = jax.block_until_ready(make_args())
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - start)
    return times


def bench_buffers(args) -> list[dict[str, Any]]:
    """Time add, sample and (prioritised) sample + set for every library; one row per pair."""
    rows = []
    add_items = _item_batches(args.adds, args.add_batch)
    added_per_call = args.adds * args.add_batch
    sample_keys = jax.random.split(jax.random.key(0), args.samples)
    for library in _libraries(args).values():
        programs = _programs(library)
        add, add_compile_s = _compile(programs["add"], library.init(_example()), add_items)
        # A full buffer to sample from, filled by the library's own (donating) add program.
        full = library.init(_example())
        for _ in range(-(-args.capacity // added_per_call)):
            full = add(full, add_items)
        full = jax.block_until_ready(full)
        jobs = {
            "add": (
                add,
                add_compile_s,
                lambda init=library.init: (init(_example()), add_items),
                added_per_call,
            )
        }
        for op in ("sample", "sample+set"):
            if op not in programs:
                continue
            compiled, compile_s = _compile(programs[op], full, sample_keys)
            # sample+set donates its state: give each run its own copy of the full buffer.
            if op == "sample":
                make = lambda full=full: (full, sample_keys)
            else:
                make = lambda full=full: (jax.tree.map(jnp.copy, full), sample_keys)
            jobs[op] = (compiled, compile_s, make, args.samples * args.batch_size)
        for op, (compiled, compile_s, make, items) in jobs.items():
            times = _time(compiled, make, args.repeats)
            median = statistics.median(times)
            rows.append(
                {
                    "buffer": library.name,
                    "op": op,
                    "items": items,
                    "median_s": median,
                    "items_per_s": items / median,
                    "times_s": times,
                    "compile_s": compile_s,
                }
            )
            print(
                f"  {library.name:22s} {op:10s} {items / median:14,.0f} items/s "
                f"(median {median * 1e3:8.2f} ms of {args.repeats}; compile {compile_s:.1f} s)",
                flush=True,
            )
    return rows


DATASET_ROWS = 200_000  # CartPole-sized transitions (obs float32[4]): about 8 MB on disk
IMAGE_ROWS = 5_000  # 64x64x3 uint8 observations: about 123 MB on disk
STREAM_BATCH, STREAM_BLOCK, STREAM_BLOCKS = 256, 16, 24  # batch_stream: 24 blocks of 16 x 256


def _dataset_arrays(rows: int, obs_shape: tuple[int, ...], dtype: str, seed: int) -> Transition:
    """Random transitions with episodes of 200 steps (contents do not matter to I/O)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    if dtype == "uint8":
        obs = rng.integers(0, 256, (rows, *obs_shape), dtype=np.uint8)
        next_obs = rng.integers(0, 256, (rows, *obs_shape), dtype=np.uint8)
    else:
        obs = rng.standard_normal((rows, *obs_shape), dtype=np.float32)
        next_obs = rng.standard_normal((rows, *obs_shape), dtype=np.float32)
    step = np.arange(rows)
    return Transition(
        obs=obs,
        action=rng.integers(0, 2, rows, dtype=np.int32),
        reward=np.ones(rows, np.float32),
        terminated=step % 200 == 199,
        truncated=np.zeros(rows, bool),
        next_obs=next_obs,
    )


def _evict(path: Path) -> bool:
    """Ask the kernel to drop `path`'s files from the page cache (no root needed; advisory)."""
    import os

    if not hasattr(os, "posix_fadvise"):
        return False
    for file in path.iterdir():
        fd = os.open(file, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return True


def bench_dataset_load(args) -> dict[str, Any] | None:
    """Offline-dataset throughput: disk to device, and streamed batches from a memmap.

    Two datasets are written with `save_dataset` into a temporary directory: `DATASET_ROWS`
    CartPole-sized transitions and `IMAGE_ROWS` transitions with 64x64x3 uint8 observations.
    For each, the time of `load_dataset(verify=True)` (sha256 of every file included) followed
    by `to_device` (blocked until ready) is the median of a few runs, as MB/s of files on disk
    and transitions/s; the loads without the checksum pass and the `to_device` share are shown
    apart. The files were just written, so the page cache is warm: these are memory-to-device
    figures. A "cold" run first asks the kernel to evict the files (`posix_fadvise` DONTNEED,
    advisory), which approximates a read from disk. Last, `batch_stream` draws batches of 256
    from the memory-mapped image dataset (the `--stream-dataset` path of offline agents).
    """
    import tempfile

    import numpy as np

    from rlkit.data.dataset import (
        DatasetInfo,
        batch_stream,
        load_dataset,
        save_dataset,
        to_device,
    )

    repeats = max(1, min(args.repeats, 5))
    specs = [
        ("cartpole-like", DATASET_ROWS, (4,), "float32"),
        ("image 64x64x3", IMAGE_ROWS, (64, 64, 3), "uint8"),
    ]
    rows_out: list[dict[str, Any]] = []
    stream: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="rlkit-bench-") as tmp:
        for index, (name, rows, obs_shape, dtype) in enumerate(specs):
            transitions = _dataset_arrays(rows, obs_shape, dtype, seed=index)
            info = DatasetInfo(
                env_id="benchmark",
                env_params={},
                obs_shape=obs_shape,
                obs_dtype=dtype,
                num_actions=2,
                behaviour_policy="random",
            )
            path = Path(tmp) / name.split()[0]
            start = time.perf_counter()
            save_dataset(path, transitions, info)
            save_s = time.perf_counter() - start
            del transitions
            size = sum(file.stat().st_size for file in path.iterdir())

            def load(verify: bool, device: bool, path=path) -> tuple[float, float]:
                start = time.perf_counter()
                dataset = load_dataset(path, verify=verify)
                loaded = time.perf_counter()
                if device:
                    jax.block_until_ready(to_device(dataset))
                return loaded - start, time.perf_counter() - loaded

            load(True, True)  # untimed: warms the page cache, allocator and jnp.asarray
            warm = [load(True, True) for _ in range(repeats)]
            unverified = [load(False, False)[0] for _ in range(repeats)]
            cold = []
            for _ in range(repeats):
                if not _evict(path):
                    break
                cold.append(sum(load(True, True)))
            total = statistics.median(sum(t) for t in warm)
            row = {
                "dataset": name,
                "transitions": rows,
                "obs_shape": list(obs_shape),
                "obs_dtype": dtype,
                "bytes": size,
                "save_s": save_s,
                "load_verify_to_device_s": total,
                "load_verify_s": statistics.median(t[0] for t in warm),
                "to_device_s": statistics.median(t[1] for t in warm),
                "load_no_verify_s": statistics.median(unverified),
                "mb_per_s": size / 1e6 / total,
                "transitions_per_s": rows / total,
                "cold_load_verify_to_device_s": statistics.median(cold) if cold else None,
                "cold_mb_per_s": size / 1e6 / statistics.median(cold) if cold else None,
                "repeats": repeats,
            }
            rows_out.append(row)
            cold_text = f"; evicted from the page cache first {row['cold_mb_per_s']:,.0f} MB/s"
            print(
                f"  {name:14s} {rows:>8,} rows {size / 1e6:6.1f} MB  load(verify) + to_device "
                f"{total * 1e3:7.1f} ms = {row['mb_per_s']:6,.0f} MB/s, "
                f"{row['transitions_per_s']:,.0f} transitions/s\n"
                f"  {'':14s} load without verify {row['load_no_verify_s'] * 1e3:.1f} ms; "
                f"to_device {row['to_device_s'] * 1e3:.1f} ms{cold_text if cold else ''}",
                flush=True,
            )

        dataset = load_dataset(Path(tmp) / "image", mmap=True, verify=False)
        blocks = batch_stream(dataset, STREAM_BATCH, STREAM_BLOCK, seed=0)
        next(blocks)  # untimed: starts the producer thread
        start = time.perf_counter()
        for _ in range(STREAM_BLOCKS):
            block = next(blocks)
        elapsed = time.perf_counter() - start
        blocks.close()
        batches = STREAM_BLOCKS * STREAM_BLOCK
        row_bytes = sum(np.asarray(leaf[0, 0]).nbytes for leaf in jax.tree.leaves(block))
        stream = {
            "dataset": "image 64x64x3 (memmap)",
            "batch_size": STREAM_BATCH,
            "batches_per_block": STREAM_BLOCK,
            "batches": batches,
            "seconds": elapsed,
            "batches_per_s": batches / elapsed,
            "transitions_per_s": batches * STREAM_BATCH / elapsed,
            "mb_per_s": batches * STREAM_BATCH * row_bytes / 1e6 / elapsed,
        }
        print(
            f"  batch_stream   batches of {STREAM_BATCH} from the memmapped image dataset: "
            f"{stream['batches_per_s']:,.0f} batches/s = {stream['transitions_per_s']:,.0f} "
            f"transitions/s ({stream['mb_per_s']:,.0f} MB/s)",
            flush=True,
        )
    print(
        f"  median of {repeats}; page cache warm (files just written), except the 'evicted' "
        "figures (posix_fadvise DONTNEED first, advisory)."
    )
    return {
        "page_cache": "warm; cold_* after posix_fadvise(DONTNEED)",
        "load": rows_out,
        "batch_stream": stream,
    }


def _ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_key = {(row["buffer"], row["op"]): row for row in rows}
    ratios = []
    for kind in ("uniform", "prioritised"):
        for op in ("add", "sample", "sample+set"):
            ours, theirs = by_key.get((f"rlkit {kind}", op)), by_key.get((f"flashbax {kind}", op))
            if ours and theirs:
                ratios.append(
                    {
                        "kind": kind,
                        "op": op,
                        "rlkit_over_flashbax": ours["items_per_s"] / theirs["items_per_s"],
                    }
                )
    return ratios


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--capacity", type=int, default=100_000, help="items each buffer keeps")
    parser.add_argument("--adds", type=int, default=10_000, help="add calls timed")
    parser.add_argument("--add-batch", type=int, default=8, help="items per add call")
    parser.add_argument("--samples", type=int, default=1_000, help="sample calls timed")
    parser.add_argument("--batch-size", type=int, default=256, help="items per sample call")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs; the median is shown")
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        metavar="OUT",
        help="write every timing, the configuration and the ratios here",
    )
    args = parser.parse_args(argv)

    device = jax.devices()[0]
    print(
        f"device: {device.device_kind} ({jax.default_backend()}), jax {jax.__version__}, "
        f"flashbax {importlib.metadata.version('flashbax')}"
    )
    print(
        f"capacity {args.capacity:,}, {args.adds:,} adds of {args.add_batch}, "
        f"{args.samples:,} samples of {args.batch_size}, median of {args.repeats}"
    )
    print("\n[1-2] buffer add / sample throughput")
    rows = bench_buffers(args)
    ratios = _ratios(rows)
    print("\nrlkit / flashbax (items per second; > 1: rlkit is faster)")
    for ratio in ratios:
        print(f"  {ratio['kind']:12s} {ratio['op']:10s} {ratio['rlkit_over_flashbax']:6.2f}")
    print("\n[3] dataset load throughput from disk to device")
    dataset = bench_dataset_load(args)
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "device": device.device_kind,
                    "backend": jax.default_backend(),
                    "jax": jax.__version__,
                    "config": {k: v for k, v in vars(args).items() if k != "json"},
                    "rows": rows,
                    "ratios": ratios,
                    "dataset_load": dataset,
                },
                indent=2,
            )
        )
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
