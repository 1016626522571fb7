"""rlkit: a JAX toolkit for online, offline and hybrid reinforcement learning."""

import os as _os

# XLA:CPU's flags are left at XLA's defaults. rlkit up to issue 18 turned the
# concurrency-optimised scheduler off on jaxlib 0.10 to avoid a hang; the hang's cause is
# jaxlib's batched LAPACK kernels blocking XLA's intra-op thread pool (they hang with the
# scheduler off too), so seed-batched init and evaluation programs now run their seeds one after
# another on the CPU (`rlkit.loops.common.over_seeds(map_on_cpu=True)`) and the scheduler stays
# on: one-seed PPO is about 1.7x faster with it (benchmarks/README.md, "The XLA:CPU hang").


def request_gpu_determinism(enabled: bool = True) -> bool:
    """Ask XLA:GPU for deterministic kernels; call before the first JAX computation.

    On an H200, two PPO runs with the same config and seed differed in the 9th digit of one
    metric (a float32 mean whose summation order varied between runs); with
    `--xla_gpu_deterministic_ops=true` their metrics.csv files were identical. It costs speed:
    PPO on CartPole took 1.40x as long with one seed and 1.49x with 2048 (benchmarks/README.md).
    CPUs are deterministic either way (the flag is parsed and ignored there).

    `python -m rlkit.train` calls this unless given `--no-deterministic`. Library code that wants
    the same guarantee calls it at start-up. A value the user already put in XLA_FLAGS wins.

    Returns:
        Whether the flag is now requested in XLA_FLAGS (it takes effect only if the backend has
        not started yet).
    """
    flags = _os.environ.get("XLA_FLAGS", "")
    if "xla_gpu_deterministic_ops" in flags:
        return "xla_gpu_deterministic_ops=true" in flags.replace(" ", "")
    if enabled:
        _os.environ["XLA_FLAGS"] = (flags + " --xla_gpu_deterministic_ops=true").strip()
    return enabled


def __getattr__(name: str):
    # `rlkit.load_policy` without importing JAX when `rlkit` itself is imported.
    if name == "load_policy":
        from rlkit.policy import load_policy

        return load_policy
    raise AttributeError(f"module 'rlkit' has no attribute {name!r}")
