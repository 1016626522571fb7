"""rlkit against minimal references on the CPU: PPO, DQN and the offline agents, one command.

Ratios of speed (rlkit / reference, above 1 means rlkit is faster), one seed each:

* `ppo`: rlkit's PPO against `reference_ppo.py` (PureJaxRL's `ppo.py`, 4 envs x 128 steps,
  `--ppo-steps` env steps), each in a `ppo_throughput.py --child` process.
* `dqn`: rlkit's DQN (`agents/dqn.py` defaults on the on-device driver) against
  `reference_dqn.py` (the whole run as one jitted `train(key)`), `--dqn-steps` env steps.
* `bc`, `cql`, `iql`: updates per second of rlkit's offline driver (`rlkit.loops.offline`, one
  chunk of `--updates` updates) against the same `agent.update` on batches drawn the same way,
  written as one jitted `lax.scan`; 320 synthetic chain transitions.

Every program runs in its own fresh process, and the two sides of a pair alternate (reference,
rlkit, reference, rlkit, ...) for `--rounds` rounds, so load on a shared machine hits both alike.
Each process compiles, runs once untimed, then `--repeats` timed runs; a pair's ratio is the
median of rlkit's timed runs against the median of the reference's, over all rounds. Final
returns are printed beside the PPO and DQN times, so neither side can be faster by learning
less. XLA flags are whatever the environment gives (rlkit sets none on the CPU).

    uv run python benchmarks/cpu_ratios.py --json OUT.json      # about 5 minutes on 2 cores
    uv run python benchmarks/cpu_ratios.py --pairs dqn --rounds 1 --dqn-steps 20000  # smoke
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from rlkit.errors import ArgumentParser

_HERE = Path(__file__).resolve().parent
PAIRS = ("ppo", "dqn", "bc", "cql", "iql")


def _timed_runs(run, repeats: int) -> tuple[object, list[float]]:
    import jax

    out = jax.block_until_ready(run())  # compile and warm up
    seconds = []
    for _ in range(repeats):
        out = None
        start = time.perf_counter()
        out = jax.block_until_ready(run())
        seconds.append(time.perf_counter() - start)
    return out, seconds


def child(pair: str, side: str, args) -> dict:
    """Build and time one side of one pair in this process."""
    sys.path[:0] = [str(_HERE), str(_HERE.parent)]
    import jax

    import envs

    if pair == "dqn":
        import reference_dqn

        from agents import dqn
        from rlkit.loops.on_device import make_on_device_trainer

        if side == "reference":
            config = reference_dqn.Config(total_timesteps=args.dqn_steps)
            train = jax.jit(reference_dqn.make_train(config))
            out, seconds = _timed_runs(lambda: train(jax.random.key(0)), args.repeats)
            return {"seconds": seconds, "final_return": reference_dqn.final_return(out),
                    "work": config.num_iterations * config.num_envs}
        env = envs.make_env("cartpole")
        config = dqn.Config(total_steps=args.dqn_steps)
        agent = dqn.make_agent(config, env.spec)
        iterations = args.dqn_steps // config.num_envs
        trainer = make_on_device_trainer(agent, env, env.default_params,
                                         iterations_per_chunk=iterations)
        keys = jax.random.split(jax.random.key(0), 1)
        out, seconds = _timed_runs(
            lambda: trainer.run(jax.block_until_ready(trainer.init(keys))), args.repeats)
        from ppo_throughput import _rlkit_final_return

        return {"seconds": seconds, "final_return": _rlkit_final_return(out[1]),
                "work": iterations * config.num_envs}

    import importlib

    import numpy as np

    from rlkit import registry
    from rlkit.data.hybrid import sample_dataset
    from rlkit.loops.offline import make_offline_trainer
    from rlkit.types import Transition

    module = importlib.import_module(f"agents.{pair}")
    env = registry.make_env("chain", None)
    agent = module.make_agent(module.Config(), env.spec)
    rng = np.random.default_rng(0)
    rows = 320
    obs = rng.random((rows, 8), dtype=np.float32)
    data = Transition(obs=obs, action=rng.integers(0, 2, rows).astype(np.int32),
                      reward=rng.random(rows, dtype=np.float32),
                      terminated=np.zeros(rows, bool), truncated=np.zeros(rows, bool),
                      next_obs=obs[::-1].copy())
    batch_size = agent.feed.batch_size
    if side == "reference":
        dataset = jax.device_put(data)

        @jax.jit
        def train(key, dataset):
            agent_key, key = jax.random.split(key)

            def body(carry, _):
                state, key = carry
                key, sample_key, update_key = jax.random.split(key, 3)
                state, metrics = agent.update(state, sample_dataset(dataset, sample_key,
                                                                    batch_size), update_key)
                return (state, key), metrics

            return jax.lax.scan(body, (agent.init(agent_key), key), None, length=args.updates)

        _, seconds = _timed_runs(lambda: train(jax.random.key(0), dataset), args.repeats)
    else:
        trainer = make_offline_trainer(agent, data, args.updates, evaluate=lambda carry: None)
        keys = jax.random.split(jax.random.key(0), 1)
        _, seconds = _timed_runs(lambda: trainer.run(jax.block_until_ready(trainer.init(keys))),
                                 args.repeats)
    return {"seconds": seconds, "final_return": None, "work": args.updates}


def _command(pair: str, side: str, args, out: Path) -> list[str]:
    if pair == "ppo":
        return [sys.executable, str(_HERE / "ppo_throughput.py"), "--child", side, "--seeds", "1",
                "--total-steps", str(args.ppo_steps), "--repeats", str(args.repeats),
                "--warmup", "1", "--child-out", str(out)]
    return [sys.executable, __file__, "--child", f"{pair}:{side}", "--child-out", str(out),
            "--repeats", str(args.repeats), "--dqn-steps", str(args.dqn_steps),
            "--updates", str(args.updates)]


def main() -> None:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", default=",".join(PAIRS), help="comma-separated: " +
                        ", ".join(PAIRS))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per process")
    parser.add_argument("--ppo-steps", type=int, default=500_000)
    parser.add_argument("--dqn-steps", type=int, default=50_000)
    parser.add_argument("--updates", type=int, default=2_000, help="offline updates per run")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per process")
    parser.add_output("--json", default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        pair, side = args.child.split(":")
        args.child_out.write_text(json.dumps(child(pair, side, args)))
        return
    pairs = args.pairs.split(",")
    unknown = [p for p in pairs if p not in PAIRS]
    if unknown:
        parser.error(f"--pairs: unknown {unknown}; choose from {', '.join(PAIRS)}")
    for flag, minimum in (("rounds", 1), ("repeats", 1), ("ppo_steps", 512), ("dqn_steps", 1),
                          ("updates", 1), ("timeout", 1)):
        if getattr(args, flag) < minimum:
            parser.error(f"--{flag.replace('_', '-')}: must be at least {minimum}, got "
                         f"{getattr(args, flag)}" + (" (one PPO rollout: 4 envs x 128 steps)"
                                                     if flag == "ppo_steps" else ""))
    import tempfile

    results = {p: {"reference": [], "rlkit": []} for p in pairs}
    scratch = Path(tempfile.mkdtemp(prefix="cpu-ratios-"))
    for round_index in range(args.rounds):
        for pair in pairs:
            for side in ("reference", "rlkit"):
                out = scratch / f"{pair}-{side}-{round_index}.json"
                start = time.perf_counter()
                try:
                    done = subprocess.run(_command(pair, side, args, out), capture_output=True,
                                          text=True, timeout=args.timeout)
                except subprocess.TimeoutExpired:
                    print(f"round {round_index + 1} {pair:4s} {side:9s} timed out "
                          f"({args.timeout:.0f} s)", flush=True)
                    continue
                if done.returncode != 0:
                    sys.exit(f"{pair} {side} failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}")
                result = json.loads(out.read_text())
                if pair == "ppo":
                    result = {"seconds": result["run_s"], "final_return": result["final_return"],
                              "work": args.ppo_steps}
                results[pair][side].append(result)
                if args.json:  # so far, in case the run is stopped; replaced by the summary
                    args.json.write_text(json.dumps({"partial": True, "results": results}))
                print(f"round {round_index + 1} {pair:4s} {side:9s} "
                      f"{statistics.median(result['seconds']):8.3f} s "
                      f"(process {time.perf_counter() - start:5.1f} s)", flush=True)
    import jax

    header = (f"{platform.processor() or platform.machine()}, {jax.device_count()} device(s) "
              f"{jax.devices()[0].device_kind}, jax {jax.__version__}")
    print(f"\n{header}; medians over {args.rounds} rounds x {args.repeats} timed runs")
    print(f"{'pair':5s} {'unit':>8s} {'reference /s':>14s} {'rlkit /s':>12s} "
          f"{'rlkit/ref':>9s}  final return ref / rlkit")
    summary = {}
    for pair in pairs:
        row = {}
        for side in ("reference", "rlkit"):
            runs = results[pair][side]
            seconds = [s for r in runs for s in r["seconds"]]
            if not seconds:
                row[side] = None
                continue
            median = statistics.median(seconds)
            returns = [r["final_return"] for r in runs if r["final_return"] is not None]
            row[side] = {"median_seconds": median, "per_second": runs[0]["work"] / median,
                         "seconds": seconds,
                         "final_return": statistics.median(returns) if returns else None}
        ratio = (row["rlkit"]["per_second"] / row["reference"]["per_second"]
                 if row["rlkit"] and row["reference"] else None)
        summary[pair] = {**row, "ratio": ratio}
        unit = "updates" if pair in ("bc", "cql", "iql") else "steps"

        def cell(side, key, spec, row=row):
            value = row[side][key] if row[side] else None
            return "-" if value is None else format(value, spec)

        print(f"{pair:5s} {unit:>8s} {cell('reference', 'per_second', ',.0f'):>14s} "
              f"{cell('rlkit', 'per_second', ',.0f'):>12s} "
              f"{format(ratio, '.2f') if ratio else '-':>9s}  "
              f"{cell('reference', 'final_return', '.1f')} / "
              f"{cell('rlkit', 'final_return', '.1f')}")
    if args.json:
        args.json.write_text(json.dumps({"header": header, "args": {
            k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
            if not k.startswith("child")}, "summary": summary, "results": results}, indent=2))


if __name__ == "__main__":
    main()
