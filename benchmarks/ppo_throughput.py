"""PPO throughput on gymnax CartPole-v1: rlkit against a PureJaxRL-style reference, side by side.

Three compiled programs run in one process, on the same device, with the same number of env
steps per seed (4 envs x 128 steps per iteration, `--total-steps` per seed):

* raw: gymnax CartPole stepped with random actions in one jitted `lax.scan` (auto-resetting
  `env.step`, vmapped over 4 envs and the seeds). The ceiling: what stepping alone costs.
* reference: `reference_ppo.py`, PPO written the way PureJaxRL's ppo.py is (`jit(train)(key)`,
  `jit(vmap(train))(keys)` for several seeds).
* rlkit: `agents.ppo` driven by `rlkit.loops.on_device` (`trainer.init` then `trainer.run` over
  the whole run in one chunk).

Each program is compiled once ahead of time (compile seconds reported apart), run once untimed,
then timed `--repeats` times with `block_until_ready`; the repeats of the three programs are
interleaved so a change in machine load hits all of them alike. Timed regions are matched: the
reference's `train(keys)` includes its own initialisation, so rlkit's timed region is `init` +
`run`; key generation is outside both. The final mean episode return of both PPOs is reported so
that neither can be faster by learning less.

With one seed, raw and reference run unvmapped, as PureJaxRL's ppo.py does for one seed; rlkit's
driver compiles a seed axis of one as an unbatched program too. `--vmap-one-seed` vmaps raw and
reference over a seed axis of 1 instead.

Usage:
    python benchmarks/ppo_throughput.py                              # 5e5 steps, 1 and 16 seeds
    python benchmarks/ppo_throughput.py --seeds 1,16,2048 --out results.json   # on a GPU
    python benchmarks/ppo_throughput.py --total-steps 20000 --seeds 1,4 --repeats 2   # smoke
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
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


def _print_table(rows: list[dict], ratios: list[dict], header: str) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # plain text if rich is missing
        print(header)
        print(
            f"{'seeds':>6} {'program':<10} {'compile s':>10} {'median s':>10} "
            f"{'env steps/s':>14} {'final return':>13}"
        )
        for row in rows:
            ret = "" if row["final_return"] is None else f"{row['final_return']:.1f}"
            print(
                f"{row['seeds']:>6} {row['program']:<10} {row['compile_s']:>10.2f} "
                f"{row['median_s']:>10.3f} {row['env_steps_per_s']:>14,.0f} {ret:>13}"
            )
        for ratio in ratios:
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
            f"{row['compile_s']:.2f}",
            f"{row['median_s']:.3f} ({min(row['run_s']):.3f}-{max(row['run_s']):.3f})",
            f"{row['env_steps_per_s']:,.0f}",
            "" if row["final_return"] is None else f"{row['final_return']:.1f}",
        )
    # Outside a terminal rich falls back to 80 columns, which would wrap the table.
    console = Console() if Console().is_terminal else Console(width=120)
    console.print(table)
    for ratio in ratios:
        parts = [f"{k} = {v:.3f}" for k, v in ratio.items() if k != "seeds" and v is not None]
        console.print(f"seeds={ratio['seeds']}: " + ", ".join(parts))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)

    seed_counts = [int(s) for s in args.seeds.split(",") if s.strip()]
    names = [p.strip() for p in args.programs.split(",") if p.strip()]
    unknown = sorted(set(names) - set(PROGRAMS))
    if unknown:
        parser.error(f"--programs: unknown {unknown}; choose from {','.join(PROGRAMS)}")
    if any(s < 1 for s in seed_counts):
        parser.error(f"--seeds: counts must be positive, got {args.seeds}")
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    num_iterations = args.total_steps // (NUM_ENVS * ROLLOUT_LENGTH)
    if num_iterations < 1:
        parser.error(f"--total-steps must be at least {NUM_ENVS * ROLLOUT_LENGTH}")
    steps_per_seed = num_iterations * NUM_ENVS * ROLLOUT_LENGTH

    device = jax.devices()[0]
    header = (
        f"PPO CartPole-v1 throughput | {device.device_kind} ({device.platform}) | "
        f"jax {jax.__version__} | {steps_per_seed:,} env steps per seed "
        f"({NUM_ENVS} envs x {ROLLOUT_LENGTH} steps x {num_iterations} iterations)"
    )
    print(header, flush=True)

    rows, ratios = [], []
    for num_seeds in seed_counts:
        vmapped = num_seeds > 1 or args.vmap_one_seed
        programs = []
        for name in names:
            print(f"seeds={num_seeds}: compiling {name} ...", flush=True)
            if name == "raw":
                programs.append(make_raw(num_seeds, num_iterations, vmapped))
            elif name == "reference":
                programs.append(make_reference(num_seeds, args.total_steps, vmapped))
            else:
                programs.append(make_rlkit(num_seeds, args.total_steps, num_iterations))
        print(f"seeds={num_seeds}: timing {args.repeats} repeats ...", flush=True)
        returns = measure(programs, args.repeats, args.warmup)
        by_name = {}
        for program in programs:
            median_s = statistics.median(program.run_s)
            row = {
                "seeds": num_seeds,
                "program": program.name,
                "compile_s": program.compile_s,
                "run_s": program.run_s,
                "median_s": median_s,
                "env_steps": steps_per_seed * num_seeds,
                "env_steps_per_s": steps_per_seed * num_seeds / median_s,
                "final_return": returns[program.name],
            }
            rows.append(row)
            by_name[program.name] = row["env_steps_per_s"]
        ratio = {"seeds": num_seeds}
        if "rlkit" in by_name:
            for base in ("reference", "raw"):
                if base in by_name:
                    ratio[f"rlkit/{base}"] = by_name["rlkit"] / by_name[base]
        if "reference" in by_name and "raw" in by_name:
            ratio["reference/raw"] = by_name["reference"] / by_name["raw"]
        ratios.append(ratio)

    _print_table(rows, ratios, header)
    result = {
        "device_kind": device.device_kind,
        "platform": device.platform,
        "jax_version": jax.__version__,
        "total_steps_arg": args.total_steps,
        "env_steps_per_seed": steps_per_seed,
        "num_envs": NUM_ENVS,
        "rollout_length": ROLLOUT_LENGTH,
        "num_iterations": num_iterations,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "vmap_one_seed": args.vmap_one_seed,
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
