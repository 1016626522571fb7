"""PPO on procgen through the host driver against raw procgen stepping, side by side (issue 17.6).

Three measurements in one process, on the same machine, at the same number of environments N
(one seed), for each CNN torso asked (`--cnn`, default impala and impala-small):

* raw: procgen's batched C++ env (`envs.procgen_adapter`, via `rlkit.registry.make_host_env`)
  stepped with uniformly random actions. The ceiling: env steps/s with no agent.
* collection: the same stepping, each action drawn by the agent's compiled `act` (the IMPALA
  CNN's forward pass on the N observations), nothing learnt. Timed apart: `act` and env step.
* training: PPO through `rlkit.loops.host`, built by `rlkit.train.build` from the command line
  `ppo --env procgen:GAME --agent.cnn CNN --agent.num-envs N ...`, the same path
  `python -m rlkit.train ppo --env procgen:GAME` takes. Every chunk is one PPO iteration
  (N x T env steps, then one update); the first chunk is run untimed (it compiles `act` and
  `update`), the next `--iterations` chunks are timed.

The per-iteration breakdown of training comes from timestamps, without changing the driver: the
training env is wrapped (by patching `rlkit.registry.make_host_env` while the trainer is built)
in a proxy that records when each `env.step` starts and ends. Within a one-iteration chunk,

* env step time = the sum of the `env.step` calls;
* act time = from the chunk's start to the first step, plus the gaps between steps (the
  compiled `act`, fetching its action, and the driver's per-step bookkeeping);
* update time = from the last step's end to the chunk's end (stacking the rollout, the compiled
  PPO `update`: GAE, `--update-epochs` x `--num-minibatches` gradient steps, and fetching the
  metrics).

Ratios: training / raw and collection / raw, in env steps/s. The issue's goal is training >= 70%
of raw. The machine's load average (`os.getloadavg()`) is recorded before and after, because the
2-core CPU this was written on is shared with other jobs.

Runs in the procgen environment (`.venv-procgen`):

    .venv-procgen/bin/python benchmarks/procgen_throughput.py   # ~25 min on 2 shared cores
    .venv-procgen/bin/python benchmarks/procgen_throughput.py --iterations 10 --rollout-length 256
    .venv-procgen/bin/python benchmarks/procgen_throughput.py --cnn impala-small --num-envs 64
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
import time
from pathlib import Path
from unittest import mock

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE.parent))  # `agents` and `envs` of this checkout

import jax  # noqa: E402
import numpy as np  # noqa: E402

from rlkit import registry, train  # noqa: E402
from rlkit.errors import ArgumentParser, require_int_at_least  # noqa: E402

CNNS = ("impala-small", "impala")  # the cheaper first: its figures are written first
DEFAULT_OUT = _HERE / "results" / "procgen_throughput_cpu_2core.json"


class TimedEnv:
    """A `HostEnvironment` proxy that records the (start, end) `perf_counter` of every step."""

    def __init__(self, env):
        self._env = env
        self.steps: list[tuple[float, float]] = []

    def step(self, actions):
        start = time.perf_counter()
        result = self._env.step(actions)
        self.steps.append((start, time.perf_counter()))
        return result

    def __getattr__(self, name):  # spec, num_envs, reset, close, last_info, ...
        return getattr(self._env, name)


def _flags(game: str, cnn: str, num_envs: int, rollout_length: int, chunks: int, seed: int,
           agent_flags: list[str]) -> list[str]:
    """The `python -m rlkit.train` command line of the training measurement."""
    return ["ppo", "--env", f"procgen:{game}", "--agent.cnn", cnn,
            "--agent.num-envs", str(num_envs), "--agent.rollout-length", str(rollout_length),
            "--total-steps", str(chunks * num_envs * rollout_length), "--num-logs", str(chunks),
            "--seed", str(seed), *agent_flags]


def _rate(steps: int, seconds: float) -> float:
    return steps / seconds if seconds > 0 else float("nan")


def measure_raw(make_env, num_envs: int, num_steps: int, seed: int) -> dict:
    """Step `num_envs` envs `num_steps` times with uniformly random actions.

    Returns:
        dict: `env_steps` (num_envs x num_steps), `seconds`, `env_steps_per_s`.
    """
    env = make_env(num_envs, seed)
    rng = np.random.default_rng(seed)
    try:
        env.reset(seed)
        num_actions = env.spec.num_actions
        for _ in range(8):  # warm the C++ side (first frames, allocations)
            env.step(rng.integers(num_actions, size=num_envs))
        start = time.perf_counter()
        for _ in range(num_steps):
            env.step(rng.integers(num_actions, size=num_envs))
        seconds = time.perf_counter() - start
    finally:
        env.close()
    steps = num_envs * num_steps
    return {"env_steps": steps, "seconds": seconds, "env_steps_per_s": _rate(steps, seconds)}


def measure_collection(agent, make_env, num_envs: int, num_steps: int, seed: int) -> dict:
    """Step the envs with actions from the agent's compiled `act` (no learning).

    Returns:
        dict: `env_steps`, `seconds`, `env_steps_per_s`, and per step `act_ms` and `env_ms`;
        `compile_s` is the first (compiling) call of `act`, outside the timed region.
    """
    @jax.jit
    def act(state, obs, key, step):  # the key split inside, as the driver's `act` does
        key, act_key = jax.random.split(key)
        action, _ = agent.act(state, obs, act_key, step)
        return key, action

    key = jax.random.key(seed)
    state = jax.jit(agent.init)(key)
    env = make_env(num_envs, seed)
    try:
        obs = env.reset(seed)
        start = time.perf_counter()
        jax.block_until_ready(act(state, obs, key, np.int32(0)))
        compile_s = time.perf_counter() - start
        act_s = env_s = 0.0
        start = time.perf_counter()
        for t in range(num_steps):
            before = time.perf_counter()
            key, action = act(state, obs, key, np.int32(t * num_envs))
            action = np.asarray(action)
            between = time.perf_counter()
            obs = env.step(action.reshape(-1)).obs
            env_s += time.perf_counter() - between
            act_s += between - before
        seconds = time.perf_counter() - start
    finally:
        env.close()
    steps = num_envs * num_steps
    return {"env_steps": steps, "seconds": seconds, "env_steps_per_s": _rate(steps, seconds),
            "compile_s": compile_s, "act_ms": 1e3 * act_s / num_steps,
            "env_ms": 1e3 * env_s / num_steps}


def measure_training(flags: list[str], iterations: int) -> dict:
    """PPO through the host driver, built as `python -m rlkit.train FLAGS` builds it.

    `flags` must make every chunk one iteration and ask for `iterations + 1` chunks; the first
    is the untimed warm-up.

    Returns:
        dict: `env_steps` and `seconds` of the timed chunks, `env_steps_per_s`, `warmup_s` (the
        first chunk, compilation included), `chunk_s` (each timed chunk), and per iteration
        `env_s`, `act_s` (with the driver's per-step bookkeeping), `update_s` and `other_s`
        (the chunk time the other three do not cover: zero up to rounding, a check that the
        breakdown accounts for the whole chunk), plus their shares of the total.
    """
    experiment = train.parse_experiment(flags).experiment
    timed_envs: list[TimedEnv] = []
    make_host_env = registry.make_host_env

    def timed_make_host_env(*args, **kwargs):
        timed_envs.append(TimedEnv(make_host_env(*args, **kwargs)))
        return timed_envs[-1]

    with mock.patch.object(registry, "make_host_env", timed_make_host_env):
        built = train.build(experiment)
    trainer = built.trainer
    assert trainer.iterations_per_chunk == 1, trainer.iterations_per_chunk
    env = timed_envs[-1]  # the trainer's (make_agent's 1-env probe was built and closed first)
    steps_per_iteration = trainer.steps_per_iteration
    try:
        start = time.perf_counter()
        carry = trainer.init(jax.random.split(jax.random.key(experiment.run.seed), 1))
        carry, _ = trainer.run(carry)
        jax.block_until_ready(carry)
        warmup_s = time.perf_counter() - start
        print(f"  warm-up chunk (compiles act and update): {warmup_s:.1f} s", flush=True)
        parts = {"env_s": 0.0, "act_s": 0.0, "update_s": 0.0, "other_s": 0.0}
        chunk_s = []
        for _ in range(iterations):
            env.steps.clear()
            start = time.perf_counter()
            carry, _ = trainer.run(carry)
            jax.block_until_ready(carry)
            end = time.perf_counter()
            chunk_s.append(end - start)
            print(f"  timed chunk {len(chunk_s)}/{iterations}: {end - start:.1f} s", flush=True)
            starts = np.array([s for s, _ in env.steps])
            ends = np.array([e for _, e in env.steps])
            parts["env_s"] += float((ends - starts).sum())
            # Before each step: act (and, before the first, nothing else of the driver's).
            parts["act_s"] += float(starts[0] - start + (starts[1:] - ends[:-1]).sum())
            parts["update_s"] += float(end - ends[-1])
        seconds = sum(chunk_s)
        parts["other_s"] = seconds - parts["env_s"] - parts["act_s"] - parts["update_s"]
    finally:
        trainer.close()
    steps = iterations * steps_per_iteration
    per_iteration = {name: value / iterations for name, value in parts.items()}
    shares = {name.replace("_s", "_share"): value / seconds for name, value in parts.items()}
    return {"env_steps": steps, "seconds": seconds, "env_steps_per_s": _rate(steps, seconds),
            "warmup_s": warmup_s, "chunk_s": chunk_s, "steps_per_iteration": steps_per_iteration,
            "per_iteration": per_iteration, "shares": shares}


def measure(game: str = "coinrun", cnn: str = "impala", num_envs: int = 16,
            rollout_length: int = 16, iterations: int = 2, seed: int = 0,
            agent_flags: list[str] | None = None) -> dict:
    """Raw stepping, collection and PPO training at `num_envs` envs, for one CNN torso.

    Raw and collection step `iterations * rollout_length` times, as many env steps as the timed
    training chunks take.

    Args:
        game: procgen game (e.g. coinrun).
        cnn: PPO's torso, "impala" or "impala-small" (or "nature").
        num_envs: environments N, stepped together (one seed).
        rollout_length: steps per env per PPO iteration T.
        iterations: timed PPO iterations (after one untimed warm-up iteration).
        seed: the run seed.
        agent_flags: further `--agent.*` flags for PPO (e.g. fewer epochs in a test).

    Returns:
        dict with `raw`, `collection` and `training` (each with `env_steps_per_s`), and
        `ratios`: `training/raw`, `collection/raw`.

    Raises:
        RlkitError: an unknown game or CNN, impossible sizes, procgen not installed.
    """
    require_int_at_least(iterations, "iterations", 1)
    require_int_at_least(rollout_length, "rollout_length", 1)
    flags = _flags(game, cnn, num_envs, rollout_length, iterations + 1, seed, agent_flags or [])
    experiment = train.parse_experiment(flags).experiment

    def make_env(n, env_seed):
        return registry.make_host_env(experiment.env, experiment.env_config, n, env_seed)

    num_steps = iterations * rollout_length
    print(f"[{cnn}] raw stepping ...", flush=True)
    raw = measure_raw(make_env, num_envs, num_steps, seed)
    print(f"[{cnn}] collection (act + step) ...", flush=True)
    agent, _, _ = train.make_agent(experiment)
    collection = measure_collection(agent, make_env, num_envs, num_steps, seed)
    print(f"[{cnn}] PPO training through the host driver ...", flush=True)
    training = measure_training(flags, iterations)
    return {
        "cnn": cnn, "game": game, "num_envs": num_envs, "rollout_length": rollout_length,
        "iterations": iterations, "command": "python -m rlkit.train " + " ".join(flags),
        "raw": raw, "collection": collection, "training": training,
        "ratios": {"training/raw": training["env_steps_per_s"] / raw["env_steps_per_s"],
                   "collection/raw": collection["env_steps_per_s"] / raw["env_steps_per_s"]},
    }


def _print_result(result: dict) -> None:
    raw, collection, training = result["raw"], result["collection"], result["training"]
    parts, shares = training["per_iteration"], training["shares"]
    print(f"\n{result['cnn']}: {result['num_envs']} envs x {result['rollout_length']} steps per "
          f"iteration, {result['iterations']} timed iteration(s)")
    print(f"  raw          {raw['env_steps_per_s']:>9,.0f} env steps/s")
    print(f"  collection   {collection['env_steps_per_s']:>9,.0f} env steps/s "
          f"(act {collection['act_ms']:.1f} ms + env {collection['env_ms']:.1f} ms per step) "
          f"= {result['ratios']['collection/raw']:.1%} of raw")
    print(f"  training     {training['env_steps_per_s']:>9,.0f} env steps/s "
          f"= {result['ratios']['training/raw']:.1%} of raw "
          f"(warm-up chunk {training['warmup_s']:.1f} s, not counted)")
    print("  per iteration: " + ", ".join(
        f"{name[:-2]} {parts[name]:.2f} s ({shares[name.replace('_s', '_share')]:.0%})"
        for name in ("env_s", "act_s", "update_s", "other_s")))


def main(argv: list[str] | None = None) -> dict:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--game", default="coinrun", help="procgen game")
    parser.add_argument("--cnn", default=",".join(CNNS),
                        help="comma-separated PPO torsos to measure (impala, impala-small, nature)")
    parser.add_argument("--num-envs", type=int, default=16, help="environments N (one seed)")
    parser.add_argument("--rollout-length", type=int, default=16,
                        help="steps per env per PPO iteration T (PPO's default is 128; the "
                        "ratios hardly depend on it, the update's cost grows with N x T)")
    parser.add_argument("--iterations", type=int, default=2,
                        help="timed PPO iterations per CNN after one untimed warm-up; raw and "
                        "collection step as many env steps")
    parser.add_argument("--seed", type=int, default=0, help="run seed")
    parser.add_output("--out", default=DEFAULT_OUT, help="write the results here")
    args = parser.parse_args(argv)
    cnns = [c.strip() for c in args.cnn.split(",") if c.strip()]

    load_before = os.getloadavg()
    print(f"procgen:{args.game} throughput | jax {jax.__version__} | "
          f"{jax.devices()[0].device_kind} | load average {load_before[0]:.2f} "
          f"{load_before[1]:.2f} {load_before[2]:.2f} on {os.cpu_count()} CPUs", flush=True)
    output = {
        "device_kind": jax.devices()[0].device_kind, "platform": jax.devices()[0].platform,
        "jax_version": jax.__version__, "cpu_count": os.cpu_count(),
        "machine": platform.machine(), "python": platform.python_version(),
        "load_average_before": list(load_before), "results": [],
    }
    for cnn in cnns:
        output["results"].append(measure(args.game, cnn, args.num_envs, args.rollout_length,
                                         args.iterations, args.seed))
        _print_result(output["results"][-1])
        # After every CNN, so that the figures of a run cut short are kept.
        output["load_average_after"] = list(os.getloadavg())
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(output, indent=2))
            print(f"wrote {args.out}")
    load_after = output["load_average_after"]
    print(f"\nload average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    return output


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
