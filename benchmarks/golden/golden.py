"""Golden `metrics.csv` files: one fixed-seed run of every agent, to prove a refactor changes
nothing.

    python benchmarks/golden/golden.py record   # write benchmarks/golden/<case>.csv
    python benchmarks/golden/golden.py check    # re-run every case, compare byte for byte

Each case is a `python -m rlkit.train` command line at a tiny budget (run in this process, one
after the other). The files are byte-identical only on the same machine kind and jax version:
XLA:CPU's code depends on both, so `check` is a tool for a refactor, not a test of the default
suite. A difference is printed as the first differing row.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent

DATASETS = {
    "chain": ["--env", "chain", "--policy", "mixture", "--checkpoint", "optimal", "--epsilon",
              "0.5", "--episodes", "40"],
    "lock": ["--env", "combination-lock", "--env-config.horizon", "5", "--policy", "mixture",
             "--checkpoint", "optimal", "--epsilon", "0.4", "--episodes", "10"],
    "deepsea": ["--env", "deepsea", "--env-config.size", "6", "--policy", "mixture",
                "--checkpoint", "optimal", "--epsilon", "0.4", "--episodes", "40"],
}

RUN = ["--no-progress", "--num-logs", "4", "--seeds", "2", "--seed", "3"]

CASES = {
    "ppo-cartpole": ["ppo", "--env", "cartpole", "--total-steps", "20480"],
    "ppo-chain": ["ppo", "--env", "chain", "--total-steps", "8192"],
    "dqn-chain": ["dqn", "--env", "chain", "--total-steps", "4000",
                  "--agent.learning-starts", "256", "--agent.epsilon-decay-steps", "2000"],
    "dqn-cartpole": ["dqn", "--env", "cartpole", "--total-steps", "4000",
                     "--agent.learning-starts", "500", "--agent.train-every", "2"],
    "hyq-chain": ["hyq", "--dataset", "{chain}", "--total-steps", "3000"],
    "bc-chain": ["bc", "--dataset", "{chain}", "--total-steps", "400"],
    "cql-chain": ["cql", "--dataset", "{chain}", "--total-steps", "400"],
    "iql-chain": ["iql", "--dataset", "{chain}", "--total-steps", "400"],
    # Target updates every 100 (the default 1000 would never fire in 400 updates).
    "bcq-chain": ["bcq", "--dataset", "{chain}", "--total-steps", "400",
                  "--agent.target-update-every", "100"],
    "cql-h2o-lock": ["cql", "--dataset", "{lock}", "--h2o", "--total-steps", "400",
                     "--h2o-updates-per-round", "20"],
    "glow-lock": ["glow", "--env", "combination-lock", "--env-config.horizon", "5",
                  "--total-steps", "100"],
    "hyglow-lock": ["hyglow", "--dataset", "{lock}", "--total-steps", "100"],
    "hyglow-neural-deepsea": ["hyglow", "--dataset", "{deepsea}", "--agent.version", "neural",
                              "--total-steps", "480"],
    "ppo-gym-cartpole": ["ppo", "--env", "gym:CartPole-v1", "--total-steps", "2048",
                         "--agent.num-envs", "2"],
}


def run_cases(out: Path, names: list[str]) -> dict[str, Path]:
    from rlkit import collect, train

    data = {}
    for name, argv in DATASETS.items():
        data[name] = str(out / f"data-{name}")
        with contextlib.redirect_stdout(io.StringIO()):
            code = collect.main([*argv, "--out", data[name], "--seed", "0", "--no-progress"])
        assert code == 0, f"collect {name} failed"
    results = {}
    for name in names:
        argv = [arg.format(**data) for arg in CASES[name]]
        run_dir = out / name
        with contextlib.redirect_stdout(io.StringIO()):
            code = train.main([*argv, *RUN, "--run-dir", str(run_dir)])
        assert code == 0, f"{name} failed with exit {code}"
        results[name] = run_dir / "metrics.csv"
    return results


def main() -> int:
    mode = sys.argv[1] if len(sys.argv) > 1 else "check"
    names = sys.argv[2:] or list(CASES)
    with tempfile.TemporaryDirectory() as tmp:
        results = run_cases(Path(tmp), names)
        failed = 0
        for name, path in results.items():
            golden = HERE / f"{name}.csv"
            if mode == "record":
                shutil.copy(path, golden)
                print(f"recorded {golden}")
                continue
            new, old = path.read_bytes(), golden.read_bytes()
            if new == old:
                print(f"{name}: identical")
                continue
            failed += 1
            for i, (a, b) in enumerate(zip(old.splitlines(), new.splitlines(), strict=False)):
                if a != b:
                    print(f"{name}: DIFFERS at line {i}\n  golden: {a.decode()}\n  now:    "
                          f"{b.decode()}")
                    break
            else:
                print(f"{name}: DIFFERS in length ({len(old)} vs {len(new)} bytes)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
