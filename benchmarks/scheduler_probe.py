"""Which part of one-seed PPO does XLA:CPU's concurrency-optimised scheduler speed up?

`import rlkit` used to turn `--xla_cpu_enable_concurrency_optimized_scheduler` off on jaxlib 0.10.x
(with it on, seed-vmapped programs deadlocked intermittently), and that cost rlkit's one-seed PPO
on CartPole about 70%. Since issue 18 it no longer does: the deadlock was jaxlib's batched LAPACK
kernels (benchmarks/README.md, "The XLA:CPU hang"). This probe times the pieces of that program
with the scheduler on and off, each setting in its own process (XLA reads its flags once):

* `rollout`: K iterations of the 128-step rollout of 4 envs (act, auto-reset step), in one scan;
* `update`: K PPO updates (GAE, 4 epochs x 4 minibatches) on one fixed rollout, in one scan;
* `iteration`: K whole iterations through `rlkit.loops.on_device` (rollout + update).

With `--profile`, each child also runs `iteration` once under `jax.profiler.trace` and sums the
profiler's events (XLA:CPU's thunks and runtime spans) per name and per thread, so the two
settings can be compared thunk by thunk.

    uv run python benchmarks/scheduler_probe.py [--iterations 200] [--repeats 5] [--profile]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rlkit.errors import ArgumentParser

FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler"


def thunk_profile(run, trace_dir: str) -> dict:
    """Run `run()` once under the profiler; total event time per name and per thread."""
    import glob

    import jax

    with jax.profiler.trace(trace_dir):
        start = time.perf_counter()
        jax.block_until_ready(run())
        wall = time.perf_counter() - start
    (path,) = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)
    data = jax.profiler.ProfileData.from_file(path)
    by_name: dict[str, list[float]] = {}
    by_thread: dict[str, float] = {}
    for plane in data.planes:
        for line in plane.lines:
            busy = 0.0
            for event in line.events:
                seconds = event.duration_ns * 1e-9
                entry = by_name.setdefault(event.name, [0.0, 0])
                entry[0] += seconds
                entry[1] += 1
                busy += seconds
            if busy:
                by_thread[f"{plane.name}/{line.name}"] = busy
    return {"wall_seconds": wall,
            "events": {n: {"seconds": t, "count": c} for n, (t, c) in by_name.items()},
            "threads": by_thread}


def child(iterations: int, repeats: int, profile_dir: str | None = None) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import jax
    import jax.numpy as jnp

    from agents import ppo
    from rlkit import registry
    from rlkit.loops.common import autoreset_step
    from rlkit.loops.on_device import make_on_device_trainer
    from rlkit.types import Transition

    env = registry.make_env("cartpole", None)
    config = ppo.Config()
    agent = ppo.make_agent(config, env.spec)
    params = env.default_params
    num_envs, length = agent.feed.num_envs, agent.feed.rollout_length
    step = jax.vmap(lambda k, s, a: autoreset_step(env, k, s, a, params))

    def rollout(carry, key):
        agent_state, env_state, obs = carry

        def one(carry, key):
            env_state, obs = carry
            act_key, step_key = jax.random.split(key)
            action, extras = agent.act(agent_state, obs, act_key, jnp.int32(0))  # PPO: unused
            next_obs, env_state, reward, terminated, truncated, final_obs = step(
                jax.random.split(step_key, num_envs), env_state, action)
            transition = Transition(obs=obs, action=action, reward=reward,
                                    terminated=terminated, truncated=truncated,
                                    next_obs=final_obs, extras=extras)
            return (env_state, next_obs), transition

        (env_state, obs), batch = jax.lax.scan(one, (env_state, obs),
                                               jax.random.split(key, length))
        return (agent_state, env_state, obs), batch

    key = jax.random.key(0)
    agent_state = agent.init(key)
    obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(key, num_envs),
                                                            params)
    _, batch = jax.jit(rollout)((agent_state, env_state, obs), key)

    @jax.jit
    def rollouts(agent_state, env_state, obs, key):
        carry, _ = jax.lax.scan(lambda c, k: (rollout(c, k)[0], None),
                                (agent_state, env_state, obs), jax.random.split(key, iterations))
        return carry[2].sum()

    @jax.jit
    def updates(agent_state, batch, key):
        def one(state, k):
            state, metrics = agent.update(state, batch, k)
            return state, metrics["loss"] if "loss" in metrics else jnp.zeros(())

        state, losses = jax.lax.scan(one, agent_state, jax.random.split(key, iterations))
        return losses.sum()

    trainer = make_on_device_trainer(agent, env, params, iterations)

    def whole():
        carry = trainer.init(jax.random.split(key, 1))
        carry, metrics = trainer.run(carry)
        return jax.tree.leaves(metrics)[0]

    programs = {
        "rollout": lambda: rollouts(agent_state, env_state, obs, key),
        "update": lambda: updates(agent_state, batch, key),
        "iteration": whole,
    }
    times = {}
    for name, fn in programs.items():
        jax.block_until_ready(fn())  # compile and warm up
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(fn())
            samples.append(time.perf_counter() - start)
        times[name] = statistics.median(samples)
    if profile_dir is not None:
        times["profile"] = thunk_profile(whole, profile_dir)
    return times


def compare_profiles(results: dict, top: int = 25) -> dict:
    """Per event name: median total seconds with the scheduler on and off; the largest changes."""
    names = set()
    for runs in results.values():
        for run in runs:
            names |= set(run["profile"]["events"])

    def median(setting: str, name: str, field: str) -> float:
        """Median over rounds of one event's total `seconds` or `count` (0 where absent)."""
        return statistics.median(run["profile"]["events"].get(name, {}).get(field, 0)
                                 for run in results[setting])

    rows = [{"name": n, "on_seconds": median("true", n, "seconds"),
             "off_seconds": median("false", n, "seconds"), "on_count": median("true", n, "count"),
             "off_count": median("false", n, "count")} for n in names]
    rows.sort(key=lambda r: -max(r["on_seconds"], r["off_seconds"]))
    walls = {s: statistics.median(r["profile"]["wall_seconds"] for r in results[s])
             for s in results}
    threads = {s: results[s][0]["profile"]["threads"] for s in results}
    print(f"\nprofiled run of `iteration`: wall {walls['true']:.3f} s on, "
          f"{walls['false']:.3f} s off; busiest events (total seconds, count):")
    print(f"{'event':48s} {'on':>9s} {'off':>9s} {'count on':>9s} {'off':>7s}")
    for r in rows[:top]:
        print(f"{r['name'][:48]:48s} {r['on_seconds']:9.3f} {r['off_seconds']:9.3f} "
              f"{r['on_count']:9.0f} {r['off_count']:7.0f}")
    print("busy seconds per thread (first round):")
    for setting in ("true", "false"):
        busiest = sorted(threads[setting].items(), key=lambda kv: -kv[1])[:8]
        print(f"  scheduler {'on' if setting == 'true' else 'off'}: "
              + ", ".join(f"{name.split('/')[-1]} {t:.2f}" for name, t in busiest))
    return {"wall_seconds": walls, "events": rows[:200], "threads": threads}


def main() -> None:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_output("--json", default=None)
    parser.add_argument("--profile", action="store_true",
                        help="also profile one run of `iteration` per child, thunk by thunk")
    parser.add_argument("--profile-dir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.iterations, args.repeats, args.profile_dir)))
        return
    results: dict[str, list[dict]] = {"true": [], "false": []}
    for _ in range(args.rounds):
        for setting in ("true", "false"):
            env = dict(os.environ, XLA_FLAGS=f"{FLAG}={setting}")
            command = [sys.executable, __file__, "--child", "--iterations",
                       str(args.iterations), "--repeats", str(args.repeats)]
            if args.profile:
                command += ["--profile-dir", tempfile.mkdtemp(prefix=f"probe-{setting}-")]
            out = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
            results[setting].append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{args.iterations} iterations of one-seed PPO on CartPole, median over rounds")
    print(f"{'part':10s} {'scheduler on':>13s} {'off':>9s} {'off / on':>9s}")
    summary = {}
    for part in ("rollout", "update", "iteration"):
        on = statistics.median(r[part] for r in results["true"])
        off = statistics.median(r[part] for r in results["false"])
        summary[part] = {"on_seconds": on, "off_seconds": off, "ratio": off / on}
        print(f"{part:10s} {on:12.3f}s {off:8.3f}s {off / on:9.2f}")
    if args.profile:
        summary["profile"] = compare_profiles(results)
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)},
                                         "rounds": results, "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
