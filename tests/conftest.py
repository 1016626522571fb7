"""Test-wide settings: a persistent compilation cache, so identical programs compile once.

The CLI tests build the same training program several times (determinism, resume, re-run);
with the cache only the first build pays XLA's compile time.
"""

import os
import tempfile

import jax

import rlkit  # noqa: F401  (sets XLA's CPU flags before the first backend starts)

_CACHE = os.environ.get("RLKIT_TEST_JAX_CACHE",
                        os.path.join(tempfile.gettempdir(), "rlkit-test-jax-cache"))
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
