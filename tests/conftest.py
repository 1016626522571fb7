"""Test-wide settings: a persistent compilation cache, so identical programs compile once, and
XLA:CPU's LLVM back end at optimisation level 0.

The CLI tests build the same training program several times (determinism, resume, re-run);
with the cache only the first build pays XLA's compile time.

Most of the suite's time on a CPU is XLA compilation, not execution: the learning tests run small
programs for a few seconds after compiling them for tens of seconds. LLVM at level 0 cuts that
compilation by more than half (PPO on the chain: 38 s -> 14 s on 2 cores) and slows the compiled
code by about 1.5x. The arithmetic is the same code, but the emitted kernels differ, so figures
can differ from a default build in the last bits: every test asserts exact answers within a
tolerance or compares runs made under the same flags, and the byte-identical golden files
(`benchmarks/golden/golden.py`) are checked outside pytest with XLA's default flags. A value of
`xla_backend_optimization_level` already in XLA_FLAGS wins (e.g. to run the suite as users compile).
Subprocesses that the tests start inherit the flag through the environment.

XLA:CPU's legacy (elemental) emitters instead of its fusion emitters
(`--xla_cpu_use_fusion_emitters=false`) cut the CPU time of compiling and running a test by
about a quarter on jaxlib 0.10.2 (DQN on the chain plus HyPO's lambda = 0 run, fresh cache:
user 65-71 s -> 50 s, measured twice each; the whole default suite, fresh cache, 2 workers:
user 1762 s -> user + sys 1514 s, a shared machine at load 3-4 for most of the second run).
Same caveat as level 0: the same arithmetic, possibly different last bits; and
two different programs that agree bit for bit with the default emitters need not with these
(tests/test_run_safety.py's progress-callback test, which therefore compiles its programs
with the default emitters through `jax.jit`'s `compiler_options`). A value already in XLA_FLAGS
wins. Measured and not kept (no change in CPU time): `--xla_cpu_parallel_codegen_split_count=1`,
`--xla_llvm_disable_expensive_passes=true`.
"""

import os
import tempfile

for _flag, _value in (("xla_backend_optimization_level", "0"),
                      ("xla_cpu_use_fusion_emitters", "false")):
    if _flag not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + f" --{_flag}={_value}").strip()

import jax  # noqa: E402  (after XLA_FLAGS: the backend reads them when it starts)

import rlkit  # noqa: F401, E402  (sets XLA's CPU flags before the first backend starts)

_CACHE = os.environ.get("RLKIT_TEST_JAX_CACHE",
                        os.path.join(tempfile.gettempdir(), "rlkit-test-jax-cache"))
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
