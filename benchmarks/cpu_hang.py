"""Hang rate of XLA:CPU programs under different XLA_FLAGS settings (jaxlib 0.10.2 deadlock).

The deadlock (benchmarks/README.md, "The XLA:CPU hang"): jaxlib's LAPACK kernels split a batched
factorisation (`jnp.linalg.qr` under `vmap`: every orthogonal initialiser of a seed-vmapped
network) into tasks on XLA:CPU's intra-op Eigen thread pool and block until those tasks finish
(`jax::ParallelBatchMap` -> `BlockingCounter::Wait`). When every pool thread runs such a kernel at
once, the tasks they wait for are queued behind them and never run. With 2 cores the pool has 2
threads, so two batched QRs scheduled side by side are enough.

Programs (each child runs one, in its own process, since XLA reads its flags once):

* `qr`: the minimal reproducer, six independent batched QRs ([2, 128, 128]) in one jitted
  function, called 20 times. Only jax.
* `iql`: the program where the hang was first seen: IQL's seed-vmapped init (2 seeds) and one
  chunk of 100 updates through `rlkit.loops.offline`, on 320 synthetic chain transitions.
* `iql-init`: only that init (where the stacks show the wedge: its orthogonal initialisers'
  QRs, batched over the seeds); a fraction of `iql`'s compile time.

A child that does not finish within `--timeout` seconds is a hang: it is killed (with `--gdb`,
after its threads' native stacks are written next to the JSON). Trials are interleaved (setting A,
B, C, A, B, C, ...) so load on a shared machine hits every setting alike.

    uv run python benchmarks/cpu_hang.py --program qr --trials 50 --json OUT.json
    uv run python benchmarks/cpu_hang.py --program iql --trials 10 --settings default,eigen-off
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from rlkit.errors import ArgumentParser

SCHEDULER = "--xla_cpu_enable_concurrency_optimized_scheduler"
EIGEN = "--xla_cpu_multi_thread_eigen"
# name -> XLA_FLAGS given to the child (None: unset, so `import rlkit` picks its default).
SETTINGS: dict[str, str | None] = {
    "xla-default": f"{SCHEDULER}=true {EIGEN}=true",
    "scheduler-off": f"{SCHEDULER}=false {EIGEN}=true",
    "eigen-off": f"{SCHEDULER}=true {EIGEN}=false",
    "both-off": f"{SCHEDULER}=false {EIGEN}=false",
    "rlkit": None,
}


def child(program: str) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import jax
    import jax.numpy as jnp

    import rlkit  # noqa: F401  (applies rlkit's flag defaults before JAX starts)

    print("XLA_FLAGS=" + os.environ.get("XLA_FLAGS", ""), flush=True)
    if program == "qr":
        @jax.jit
        def six_qrs(key):
            keys = jax.random.split(key, 6)
            return sum(jnp.linalg.qr(jax.random.normal(k, (2, 128, 128)))[0].sum()
                       for k in keys)

        for i in range(20):
            jax.block_until_ready(six_qrs(jax.random.key(i)))
        return
    import numpy as np

    from agents import iql
    from rlkit import registry
    from rlkit.loops.offline import make_offline_trainer
    from rlkit.types import Transition

    env = registry.make_env("chain", None)
    agent = iql.make_agent(iql.Config(), env.spec)
    rng = np.random.default_rng(0)
    rows = 320
    obs = rng.random((rows, 8), dtype=np.float32)
    data = Transition(obs=obs, action=rng.integers(0, 2, rows).astype(np.int32),
                      reward=rng.random(rows, dtype=np.float32),
                      terminated=np.zeros(rows, bool), truncated=np.zeros(rows, bool),
                      next_obs=obs[::-1].copy())
    trainer = make_offline_trainer(agent, data, 100, evaluate=lambda carry: None)
    carry = trainer.init(jax.random.split(jax.random.key(0), 2))
    if program == "iql":
        carry, _ = trainer.run(carry)
    jax.block_until_ready(carry)


def native_stacks(pid: int) -> str:
    """Every thread's native stack of process `pid` (gdb), or why not."""
    try:
        out = subprocess.run(["gdb", "-p", str(pid), "-batch", "-ex", "thread apply all bt"],
                             capture_output=True, text=True, timeout=120)
        return out.stdout
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"gdb failed: {error}"


def trial(program: str, flags: str | None, timeout: float, stacks_to: Path | None) -> dict:
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    if flags is not None:
        env["XLA_FLAGS"] = flags
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, __file__, "--child", program], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    try:
        out, _ = process.communicate(timeout=timeout)
        seconds = time.perf_counter() - start
        if process.returncode != 0:
            return {"outcome": "error", "seconds": seconds, "output": out[-2000:]}
        return {"outcome": "ok", "seconds": seconds}
    except subprocess.TimeoutExpired:
        if stacks_to is not None:
            stacks_to.write_text(native_stacks(process.pid))
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        return {"outcome": "hang", "seconds": timeout}


def main() -> None:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--program", choices=("qr", "iql", "iql-init"), default="qr")
    parser.add_argument("--settings", default="xla-default,scheduler-off,eigen-off,rlkit",
                        help="comma-separated names from: " + ", ".join(SETTINGS))
    parser.add_argument("--trials", type=int, default=10, help="runs per setting")
    parser.add_argument("--max-hangs", type=int, default=3,
                        help="stop trying a setting after this many hangs (each costs --timeout)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds before a hang")
    parser.add_argument("--gdb", action="store_true", help="save the first hang's native stacks")
    parser.add_output("--json", default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    names = args.settings.split(",")
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        parser.error(f"--settings: unknown {unknown}; choose from {', '.join(SETTINGS)}")
    results: dict[str, list[dict]] = {n: [] for n in names}
    for i in range(args.trials):
        for name in names:
            hangs = sum(r["outcome"] == "hang" for r in results[name])
            if hangs >= args.max_hangs:
                continue
            stacks = None
            if args.gdb and hangs == 0 and args.json is not None:
                stacks = args.json.with_name(f"{args.json.stem}_{name}_stacks.txt")
            result = trial(args.program, SETTINGS[name], args.timeout, stacks)
            results[name].append(result)
            print(f"trial {i + 1:3d} {name:14s} {result['outcome']:5s} "
                  f"{result['seconds']:6.1f} s", flush=True)
    import jaxlib

    print(f"\nprogram {args.program}, jaxlib {jaxlib.__version__}, {os.cpu_count()} CPUs, "
          f"timeout {args.timeout:.0f} s")
    print(f"{'setting':14s} {'runs':>5s} {'hangs':>6s} {'errors':>7s} {'median ok s':>12s}  flags")
    summary = {}
    for name in names:
        runs = results[name]
        ok = sorted(r["seconds"] for r in runs if r["outcome"] == "ok")
        summary[name] = {"flags": SETTINGS[name], "runs": len(runs),
                         "hangs": sum(r["outcome"] == "hang" for r in runs),
                         "errors": sum(r["outcome"] == "error" for r in runs),
                         "median_ok_seconds": ok[len(ok) // 2] if ok else None}
        s = summary[name]
        median = f"{s['median_ok_seconds']:.1f}" if ok else "-"
        print(f"{name:14s} {s['runs']:5d} {s['hangs']:6d} {s['errors']:7d} {median:>12s}  "
              f"{SETTINGS[name] or '(unset: import rlkit decides)'}")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "jaxlib": jaxlib.__version__, "cpus": os.cpu_count(),
                                         "summary": summary, "trials": results}, indent=2))


if __name__ == "__main__":
    main()
