"""rlkit: a JAX toolkit for online, offline and hybrid reinforcement learning."""

import os as _os


def _avoid_cpu_scheduler_deadlock() -> None:
    """Turn off XLA:CPU's concurrency-optimised scheduler on jaxlib 0.10, where it deadlocks.

    With it on, some compiled programs (a seed-vmapped IQL chunk of 100 updates reproduces it
    every time on 2 cores) hang forever with every thread idle. The flag must be in XLA_FLAGS
    before the CPU backend starts, hence here, at import. It is set only for the jaxlib line where
    the hang was seen and the flag is known to exist (XLA aborts on unknown flags), and never
    when the user already chose a value: `XLA_FLAGS=--xla_cpu_enable_concurrency_optimized_
    scheduler=true` keeps XLA's default, which runs some programs faster (rlkit's one-seed PPO on
    CartPole takes 4.6 s with it and 7.8 s without, on 2 cores; benchmarks/README.md) at the
    risk of the hang.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        jaxlib_version = version("jaxlib")
    except PackageNotFoundError:
        return
    flags = _os.environ.get("XLA_FLAGS", "")
    if jaxlib_version.startswith("0.10.") and "concurrency_optimized_scheduler" not in flags:
        _os.environ["XLA_FLAGS"] = (
            flags + " --xla_cpu_enable_concurrency_optimized_scheduler=false").strip()


_avoid_cpu_scheduler_deadlock()


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
