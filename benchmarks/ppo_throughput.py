"""PPO throughput on gymnax CartPole-v1: rlkit against a PureJaxRL-style reference, side by side.

Three compiled programs, on the same device, with the same number of env steps per seed
(4 envs x 128 steps per iteration, `--total-steps` per seed):

* raw: gymnax CartPole stepped with random actions in one jitted `lax.scan` (auto-resetting
  `env.step`, vmapped over 4 envs and the seeds). The ceiling: what stepping alone costs.
* reference: `reference_ppo.py`, PPO written the way PureJaxRL's ppo.py is (`jit(train)(key)`,
  `jit(vmap(train))(keys)` for several seeds).
* rlkit: `agents.ppo` driven by `rlkit.loops.on_device` (`trainer.init` then `trainer.run` over
  the whole run in one chunk).

By default every (program, seed count) pair is measured in its own fresh Python process: the
script re-invokes itself with the hidden `--child PROGRAM` flag, the child compiles, warms up,
times and writes its timings as JSON, and the parent gathers them (no JAX backend is started in
the parent). The children run back to back per seed count (raw, reference, rlkit) so that a
change in machine load hits the three programs of one seed count alike; `--rounds K` repeats the
whole sequence K times and reports per program the median over the rounds' medians. A child that
runs past `--child-timeout` seconds is killed and shown as "timed out" in the table. Isolation
exists because running several of these programs in one process deadlocked on jaxlib 0.10.2's
CPU backend with 8 seeds (`block_until_ready` never returned, all threads idle), while each
program alone finished; `--no-isolate` keeps the old in-process mode, in which the repeats of the
programs are interleaved, and is exposed to that deadlock.

Within a process each program is compiled once ahead of time (compile seconds reported apart),
run `--warmup` times untimed, then timed `--repeats` times with `block_until_ready`. Timed
regions are matched: the reference's `train(keys)` includes its own initialisation, so rlkit's
timed region is `init` + `run` (with a wait for `init`'s output before `run`); key generation is
outside both. The final mean episode return of both PPOs is reported so that neither can be
faster by learning less.

With one seed, raw and reference run unvmapped, as PureJaxRL's ppo.py does for one seed; rlkit's
driver compiles a seed axis of one as an unbatched program too. `--vmap-one-seed` vmaps raw and
reference over a seed axis of 1 instead.

Usage:
    python benchmarks/ppo_throughput.py                              # 5e5 steps, 1 and 16 seeds
    python benchmarks/ppo_throughput.py --seeds 1,16,2048 --out results.json   # on a GPU
    python benchmarks/ppo_throughput.py --total-steps 20000 --seeds 1,4 --repeats 2   # smoke
    python benchmarks/ppo_throughput.py --rounds 3         # three rounds, median over rounds
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnax
import jax
import jax.numpy as jnp
import numpy as np

_HERE = Path(__file__).resolve().parent
# reference_ppo.py sits beside this script; the repository root goes first too so that `agents`
# and `envs` resolve to this checkout even where an editable install is stale.
sys.path[:0] = [str(_HERE), str(_HERE.parent)]
import reference_ppo  # noqa: E402

import rlkit  # noqa: E402  (its XLA:CPU flags apply to all three programs alike)
from rlkit.errors import ArgumentParser  # noqa: E402

NUM_ENVS = 4
ROLLOUT_LENGTH = 128
PROGRAMS = ("raw", "reference", "rlkit")

# PureJaxRL's CartPole hyperparameters, given to both PPOs explicitly so that a change of either
# side's defaults cannot make the comparison unequal.
HYPERPARAMETERS = dict(
    learning_rate=2.5e-4,
    anneal_lr=True,
    update_epochs=4,
    num_minibatches=4,
    gamma=0.99,
    gae_lambda=0.95,
    clip_eps=0.2,
    ent_coef=0.01,
    vf_coef=0.5,
    max_grad_norm=0.5,
)


@dataclass
class Program:
    """A compiled benchmark program.

    Attributes:
        name: "raw", "reference" or "rlkit".
        compile_s: seconds spent lowering and compiling (all of the program's executables).
        run: `() -> outputs`, one whole run on pre-made keys; outputs are device arrays.
        final_return: `(outputs) -> float`, the final mean episode return (None for raw).
        run_s: wall seconds of each timed run.
    """

    name: str
    compile_s: float
    run: Callable[[], Any]
    final_return: Callable[[Any], float] | None
    run_s: list[float] = field(default_factory=list)


def _aot(fn, *args):
    """Lower and compile `fn` for `args`; returns (compiled, seconds)."""
    start = time.perf_counter()
    compiled = fn.lower(*args).compile()
    return compiled, time.perf_counter() - start


def _keys(num_seeds: int, vmapped: bool):
    """[num_seeds] keys, or one unbatched key (PureJaxRL's single-seed form)."""
    key = jax.random.key(0)
    return jax.random.split(key, num_seeds) if vmapped else key


# ---------------------------------------------------------------------------------------------
# The three programs
# ---------------------------------------------------------------------------------------------


def make_raw(num_seeds: int, num_iterations: int, vmapped: bool) -> Program:
    """Random-action CartPole stepping, the same env steps per seed as one PPO run."""
    env, params = gymnax.make("CartPole-v1")
    num_actions = env.action_space(params).n
    step = jax.vmap(env.step, in_axes=(0, 0, 0, None))

    def run_one(key):
        key, reset_key = jax.random.split(key)
        obs, state = jax.vmap(env.reset, in_axes=(0, None))(
            jax.random.split(reset_key, NUM_ENVS), params
        )

        def body(carry, _):
            obs, state, key, total = carry
            # Split keys per step as both PPOs do, so the raw rate carries the same RNG cost.
            key, action_key, step_key = jax.random.split(key, 3)
            action = jax.random.randint(action_key, (NUM_ENVS,), 0, num_actions)
            obs, state, reward, _, _, _ = step(
                jax.random.split(step_key, NUM_ENVS), state, action, params
            )
            # Summing rewards gives the program an output, so XLA cannot drop the stepping.
            return (obs, state, key, total + reward.sum()), None

        init = (obs, state, key, jnp.float32(0.0))
        (_, _, _, total), _ = jax.lax.scan(body, init, None, length=num_iterations * ROLLOUT_LENGTH)
        return total

    fn = jax.jit(jax.vmap(run_one) if vmapped else run_one)
    keys = _keys(num_seeds, vmapped)
    compiled, compile_s = _aot(fn, keys)
    return Program("raw", compile_s, lambda: compiled(keys), None)


def make_reference(num_seeds: int, total_steps: int, vmapped: bool) -> Program:
    config = reference_ppo.Config(
        num_envs=NUM_ENVS,
        num_steps=ROLLOUT_LENGTH,
        total_timesteps=total_steps,
        **HYPERPARAMETERS,
    )
    train = reference_ppo.make_train(config)
    fn = jax.jit(jax.vmap(train) if vmapped else train)
    keys = _keys(num_seeds, vmapped)
    compiled, compile_s = _aot(fn, keys)

    def final_return(out):
        return float(np.nanmean(reference_ppo.mean_episode_return(out["metrics"])))

    return Program("reference", compile_s, lambda: compiled(keys), final_return)


def _rlkit_final_return(metrics: dict, last_fraction: float = 0.1) -> float:
    """Final mean episode return from the driver's metrics ([S, I] arrays).

    Same definition as `reference_ppo.mean_episode_return`: per iteration the mean return of the
    episodes that ended in it, averaged over the last `last_fraction` of iterations and the seeds.
    """
    if "episode_return" in metrics:
        per_iteration = np.asarray(metrics["episode_return"], np.float64)
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            per_iteration = np.asarray(metrics["episode_return_sum"], np.float64) / np.asarray(
                metrics["episodes"], np.float64
            )
    num_last = max(1, int(round(per_iteration.shape[-1] * last_fraction)))
    return float(np.nanmean(per_iteration[..., -num_last:]))


def make_rlkit(num_seeds: int, total_steps: int, expected_iterations: int) -> Program:
    import envs
    from agents import ppo
    from rlkit.loops.on_device import make_on_device_trainer

    env = envs.make_env("cartpole")
    config = ppo.Config(
        num_envs=NUM_ENVS,
        rollout_length=ROLLOUT_LENGTH,
        total_steps=total_steps,
        hidden_sizes=(64, 64),
        activation="tanh",
        clip_value_loss=True,
        **HYPERPARAMETERS,
    )
    if config.num_iterations != expected_iterations:
        raise RuntimeError(
            f"rlkit runs {config.num_iterations} iterations, the reference {expected_iterations}"
        )
    agent = ppo.make_agent(config, env.spec)
    trainer = make_on_device_trainer(
        agent, env, env.default_params, iterations_per_chunk=config.num_iterations
    )
    keys = jax.random.split(jax.random.key(0), num_seeds)
    init, init_s = _aot(trainer.init, keys)
    run, run_s = _aot(trainer.run, init(keys))

    def run_whole():
        # `run` donates its carry, so every run starts from a fresh `init`, which is timed
        # because the reference's `train` also initialises inside its timed call. The carry is
        # waited for before `run` takes it: on jaxlib 0.10.2's CPU backend, donating a buffer
        # whose computation is still in flight into a program that already ran once deadlocked
        # (reproduced with 8 seeds). The wait costs one host synchronisation per run.
        return run(jax.block_until_ready(init(keys)))

    def final_return(out):
        _, metrics = out
        return _rlkit_final_return(metrics)

    return Program("rlkit", init_s + run_s, run_whole, final_return)


# ---------------------------------------------------------------------------------------------
# Measurement and report
# ---------------------------------------------------------------------------------------------


def _timed(run: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = jax.block_until_ready(run())
    return out, time.perf_counter() - start


def measure(programs: list[Program], repeats: int, warmup: int) -> dict[str, float | None]:
    """Times every program; returns each one's final mean episode return (last timed run)."""
    for program in programs:
        for _ in range(warmup):
            _timed(program.run)  # first execution: allocation, autotuning, caches
    last_out: dict[str, Any] = {}
    for _ in range(repeats):
        for program in programs:
            last_out.pop(program.name, None)  # free the previous outputs before running again
            out, seconds = _timed(program.run)
            program.run_s.append(seconds)
            last_out[program.name] = out
    return {
        p.name: (p.final_return(last_out[p.name]) if p.final_return else None) for p in programs
    }


def _build(name: str, num_seeds: int, total_steps: int, num_iterations: int, vmapped: bool):
    if name == "raw":
        return make_raw(num_seeds, num_iterations, vmapped)
    if name == "reference":
        return make_reference(num_seeds, total_steps, vmapped)
    return make_rlkit(num_seeds, total_steps, num_iterations)


def _device_info() -> dict:
    device = jax.devices()[0]
    return {
        "device_kind": device.device_kind,
        "platform": device.platform,
        "jax_version": jax.__version__,
    }


def _row(
    num_seeds: int,
    name: str,
    steps_per_seed: int,
    *,
    compile_s: float | None,
    run_s: list[float],
    final_return: float | None,
    status: str = "ok",
    round_medians: list[float] | None = None,
) -> dict:
    """One table row; `median_s` is the median of `round_medians` where given, else of `run_s`."""
    medians = round_medians if round_medians else run_s
    median_s = statistics.median(medians) if medians else None
    return {
        "seeds": num_seeds,
        "program": name,
        "status": status,
        "compile_s": compile_s,
        "run_s": run_s,
        "round_median_s": round_medians,
        "median_s": median_s,
        "env_steps": steps_per_seed * num_seeds,
        "env_steps_per_s": None if median_s is None else steps_per_seed * num_seeds / median_s,
        "final_return": final_return,
    }


def _ratios(rows: list[dict], seed_counts: list[int]) -> list[dict]:
    ratios = []
    for num_seeds in seed_counts:
        by_name = {
            r["program"]: r["env_steps_per_s"]
            for r in rows
            if r["seeds"] == num_seeds and r["env_steps_per_s"] is not None
        }
        ratio: dict[str, Any] = {"seeds": num_seeds}
        if "rlkit" in by_name:
            for base in ("reference", "raw"):
                if base in by_name:
                    ratio[f"rlkit/{base}"] = by_name["rlkit"] / by_name[base]
        if "reference" in by_name and "raw" in by_name:
            ratio["reference/raw"] = by_name["reference"] / by_name["raw"]
        ratios.append(ratio)
    return ratios


def _fmt(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def _print_table(rows: list[dict], ratios: list[dict], header: str) -> None:
    def median_cell(row: dict) -> str:
        if row["status"] != "ok":
            return row["status"]
        return f"{row['median_s']:.3f} ({min(row['run_s']):.3f}-{max(row['run_s']):.3f})"

    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # plain text if rich is missing
        print(header)
        print(
            f"{'seeds':>6} {'program':<10} {'compile s':>10} {'median s (min-max)':>24} "
            f"{'env steps/s':>14} {'final return':>13}"
        )
        for row in rows:
            print(
                f"{row['seeds']:>6} {row['program']:<10} {_fmt(row['compile_s'], '.2f'):>10} "
                f"{median_cell(row):>24} {_fmt(row['env_steps_per_s'], ',.0f'):>14} "
                f"{_fmt(row['final_return'], '.1f'):>13}"
            )
        for ratio in ratios:
            if len(ratio) == 1:  # nothing to compare for this seed count
                continue
            print(
                f"seeds={ratio['seeds']}: "
                + ", ".join(
                    f"{k}={v:.3f}" for k, v in ratio.items() if k != "seeds" and v is not None
                )
            )
        return
    table = Table(title=header)
    for column in (
        "seeds",
        "program",
        "compile s",
        "median s (min-max)",
        "env steps/s",
        "final return",
    ):
        table.add_column(column, justify="left" if column == "program" else "right")
    for row in rows:
        table.add_row(
            str(row["seeds"]),
            row["program"],
            _fmt(row["compile_s"], ".2f"),
            median_cell(row),
            _fmt(row["env_steps_per_s"], ",.0f"),
            _fmt(row["final_return"], ".1f"),
        )
    # Outside a terminal rich falls back to 80 columns, which would wrap the table.
    console = Console() if Console().is_terminal else Console(width=120)
    console.print(table)
    for ratio in ratios:
        if len(ratio) == 1:  # nothing to compare for this seed count
            continue
        parts = [f"{k} = {v:.3f}" for k, v in ratio.items() if k != "seeds" and v is not None]
        console.print(f"seeds={ratio['seeds']}: " + ", ".join(parts))


# ---------------------------------------------------------------------------------------------
# Modes: one child, isolated (a child per program and seed count), in-process
# ---------------------------------------------------------------------------------------------


def _run_child(args, num_iterations: int) -> None:
    """`--child PROGRAM`: measure one program at one seed count; write the result as JSON."""
    num_seeds = int(args.seeds)
    vmapped = num_seeds > 1 or args.vmap_one_seed
    print(f"seeds={num_seeds}: compiling {args.child} ...", flush=True)
    program = _build(args.child, num_seeds, args.total_steps, num_iterations, vmapped)
    print(f"seeds={num_seeds}: timing {args.child}, {args.repeats} repeats ...", flush=True)
    returns = measure([program], args.repeats, args.warmup)
    result = {
        **_device_info(),
        "program": program.name,
        "seeds": num_seeds,
        "compile_s": program.compile_s,
        "run_s": program.run_s,
        "final_return": returns[program.name],
    }
    text = json.dumps(result)
    if args.child_out is not None:
        Path(args.child_out).write_text(text)
    else:
        print(text, flush=True)


def _child_command(args, name: str, num_seeds: int, out_path: Path) -> list[str]:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        name,
        "--seeds",
        str(num_seeds),
        "--total-steps",
        str(args.total_steps),
        "--repeats",
        str(args.repeats),
        "--warmup",
        str(args.warmup),
        "--child-out",
        str(out_path),
    ]
    if args.vmap_one_seed:
        command.append("--vmap-one-seed")
    return command


def _measure_isolated(
    args, names: list[str], seed_counts: list[int], steps_per_seed: int
) -> tuple[list[dict], dict]:
    """Runs every (seed count, program) in a fresh subprocess, `--rounds` times over.

    Order per round: for each seed count the programs back to back. Returns the rows (median over
    rounds of each round's median) and the device info the children reported.
    """
    results: dict[tuple[int, str], list[dict]] = {(n, p): [] for n in seed_counts for p in names}
    device: dict = {}
    with tempfile.TemporaryDirectory(prefix="ppo_throughput_") as tmp:
        for round_index in range(args.rounds):
            for num_seeds in seed_counts:
                for name in names:
                    tag = f"round {round_index + 1}/{args.rounds}, seeds={num_seeds}, {name}"
                    print(f"[{tag}] starting child ...", flush=True)
                    out_path = Path(tmp) / f"{round_index}_{num_seeds}_{name}.json"
                    start = time.perf_counter()
                    try:
                        proc = subprocess.run(
                            _child_command(args, name, num_seeds, out_path),
                            timeout=args.child_timeout,
                            env=os.environ.copy(),
                        )
                    except subprocess.TimeoutExpired:
                        # subprocess.run has killed the child (SIGKILL) and waited for it.
                        print(f"[{tag}] timed out after {args.child_timeout:g} s", flush=True)
                        results[(num_seeds, name)].append({"status": "timed out"})
                        continue
                    wall = time.perf_counter() - start
                    if proc.returncode != 0 or not out_path.exists():
                        print(f"[{tag}] failed with exit code {proc.returncode}", flush=True)
                        results[(num_seeds, name)].append(
                            {"status": f"failed (rc={proc.returncode})"}
                        )
                        continue
                    child = json.loads(out_path.read_text())
                    child["status"] = "ok"
                    device = {k: child[k] for k in ("device_kind", "platform", "jax_version")}
                    print(f"[{tag}] done in {wall:.1f} s (process wall time)", flush=True)
                    results[(num_seeds, name)].append(child)

    rows = []
    for num_seeds in seed_counts:
        for name in names:
            rounds = results[(num_seeds, name)]
            ok = [r for r in rounds if r["status"] == "ok"]
            if not ok:
                status = rounds[-1]["status"] if rounds else "not run"
                rows.append(
                    _row(
                        num_seeds,
                        name,
                        steps_per_seed,
                        compile_s=None,
                        run_s=[],
                        final_return=None,
                        status=status,
                    )
                )
                continue
            row = _row(
                num_seeds,
                name,
                steps_per_seed,
                compile_s=statistics.median(r["compile_s"] for r in ok),
                run_s=[s for r in ok for s in r["run_s"]],
                final_return=ok[-1]["final_return"],
                round_medians=[statistics.median(r["run_s"]) for r in ok],
            )
            failed = [r["status"] for r in rounds if r["status"] != "ok"]
            if failed:  # keep the partial result but say that some rounds did not finish
                row["failed_rounds"] = failed
            rows.append(row)
    return rows, device


def _measure_in_process(
    args, names: list[str], seed_counts: list[int], num_iterations: int, steps_per_seed: int
) -> list[dict]:
    """The old mode: all programs of a seed count in this process, repeats interleaved."""
    rows = []
    for num_seeds in seed_counts:
        vmapped = num_seeds > 1 or args.vmap_one_seed
        programs = []
        for name in names:
            print(f"seeds={num_seeds}: compiling {name} ...", flush=True)
            programs.append(_build(name, num_seeds, args.total_steps, num_iterations, vmapped))
        print(f"seeds={num_seeds}: timing {args.repeats} repeats ...", flush=True)
        returns = measure(programs, args.repeats, args.warmup)
        for program in programs:
            rows.append(
                _row(
                    num_seeds,
                    program.name,
                    steps_per_seed,
                    compile_s=program.compile_s,
                    run_s=program.run_s,
                    final_return=returns[program.name],
                )
            )
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--total-steps",
        type=int,
        default=500_000,
        help="env steps per seed (rounded down to whole 4x128-step iterations)",
    )
    parser.add_argument(
        "--seeds", default="1,16", help="comma-separated seed counts to measure; add 2048 on a GPU"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per program")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs after compiling")
    parser.add_argument(
        "--programs", default=",".join(PROGRAMS), help="subset of raw,reference,rlkit to measure"
    )
    parser.add_argument(
        "--vmap-one-seed",
        action="store_true",
        help="vmap raw and reference over a seed axis of 1 too (as rlkit's driver does), "
        "instead of PureJaxRL's unvmapped single-seed form",
    )
    parser.add_argument(
        "--no-isolate",
        dest="isolate",
        action="store_false",
        help="measure all programs in this process with interleaved repeats (the old mode; "
        "deadlocked on jaxlib 0.10.2's CPU backend with 8 seeds)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="isolated mode: run the whole sequence of children this many times and report the "
        "median over rounds per program",
    )
    parser.add_argument(
        "--child-timeout",
        type=float,
        default=1800.0,
        help="isolated mode: seconds after which a child is killed and reported as timed out",
    )
    parser.add_argument("--child", choices=PROGRAMS, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--deterministic",
        action="store_true",
        help="request XLA:GPU's deterministic kernels for all programs (as python -m "
        "rlkit.train does by default; see rlkit.request_gpu_determinism)",
    )
    parser.add_output("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.deterministic:  # before any JAX backend starts; the children inherit XLA_FLAGS
        rlkit.request_gpu_determinism(True)

    num_iterations = args.total_steps // (NUM_ENVS * ROLLOUT_LENGTH)
    if num_iterations < 1:
        parser.error(f"--total-steps must be at least {NUM_ENVS * ROLLOUT_LENGTH}")
    if args.child is not None:
        _run_child(args, num_iterations)
        return {}

    seed_counts = [int(s) for s in args.seeds.split(",") if s.strip()]
    names = [p.strip() for p in args.programs.split(",") if p.strip()]
    unknown = sorted(set(names) - set(PROGRAMS))
    if unknown:
        parser.error(f"--programs: unknown {unknown}; choose from {','.join(PROGRAMS)}")
    names = [p for p in PROGRAMS if p in names]  # fixed order: raw, reference, rlkit
    if any(s < 1 for s in seed_counts):
        parser.error(f"--seeds: counts must be positive, got {args.seeds}")
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    if args.rounds > 1 and not args.isolate:
        parser.error("--rounds applies to the isolated mode only (drop --no-isolate)")
    steps_per_seed = num_iterations * NUM_ENVS * ROLLOUT_LENGTH
    steps_text = (
        f"{steps_per_seed:,} env steps per seed "
        f"({NUM_ENVS} envs x {ROLLOUT_LENGTH} steps x {num_iterations} iterations)"
    )

    if args.isolate:
        # The parent starts no JAX backend (on a GPU it would hold memory the children need);
        # the device is the one the children report.
        print(
            f"PPO CartPole-v1 throughput | jax {jax.__version__} | {steps_text} | one process "
            f"per program and seed count, {args.rounds} round(s)",
            flush=True,
        )
        rows, device = _measure_isolated(args, names, seed_counts, steps_per_seed)
        if not device:
            device = {
                "device_kind": "unknown (no child finished)",
                "platform": "?",
                "jax_version": jax.__version__,
            }
    else:
        device = _device_info()
    header = (
        f"PPO CartPole-v1 throughput | {device['device_kind']} ({device['platform']}) | "
        f"jax {device['jax_version']} | {steps_text} | "
        + (f"isolated, {args.rounds} round(s)" if args.isolate else "in-process, interleaved")
    )
    if not args.isolate:
        print(header, flush=True)
        rows = _measure_in_process(args, names, seed_counts, num_iterations, steps_per_seed)

    ratios = _ratios(rows, seed_counts)
    _print_table(rows, ratios, header)
    result = {
        **device,
        "total_steps_arg": args.total_steps,
        "env_steps_per_seed": steps_per_seed,
        "num_envs": NUM_ENVS,
        "rollout_length": ROLLOUT_LENGTH,
        "num_iterations": num_iterations,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "vmap_one_seed": args.vmap_one_seed,
        "deterministic": args.deterministic,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "isolate": args.isolate,
        "rounds": args.rounds,
        "child_timeout_s": args.child_timeout if args.isolate else None,
        "hyperparameters": HYPERPARAMETERS,
        "results": rows,
        "ratios": ratios,
    }
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
