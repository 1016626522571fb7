"""`over_seeds(map_on_cpu=True)`: seed-batched LAPACK calls (orthogonal init's QR) run one seed at a
time on the CPU, with the same numbers as `vmap` (the jaxlib 0.10.2 hang, benchmarks/README.md)."""

import re

import flax.linen as nn
import jax
import numpy as np

from rlkit.loops.common import over_seeds


def _init(key):
    return nn.initializers.orthogonal()(key, (64, 64))


def _qr_operand_batches(fn, keys) -> list[str]:
    """The leading dims of every QR (geqrf) custom call's operand in `fn`'s lowered program."""
    text = jax.jit(fn).lower(keys).as_text()
    calls = [line for line in text.splitlines() if "geqrf" in line and "custom_call" in line]
    assert calls, "no QR in the program: the test no longer tests what it claims"
    return [re.search(r"\(tensor<([0-9x]+)xf32>", line).group(1) for line in calls]


def test_map_on_cpu_runs_each_seed_unbatched_with_vmaps_numbers():
    keys = jax.random.split(jax.random.key(0), 3)
    mapped, vmapped = over_seeds(_init, map_on_cpu=True), over_seeds(_init)
    assert jax.default_backend() == "cpu"
    assert _qr_operand_batches(vmapped, keys) == ["3x64x64"]
    assert _qr_operand_batches(mapped, keys) == ["64x64"]
    np.testing.assert_array_equal(jax.jit(mapped)(keys), jax.jit(vmapped)(keys))
    # Each seed's matrix is orthogonal (the QR really ran) and the seeds differ.
    out = np.asarray(jax.jit(mapped)(keys))
    np.testing.assert_allclose(out[1] @ out[1].T, np.eye(64), atol=1e-5)  # flax scale 1.0
    assert not np.array_equal(out[0], out[1])


def test_one_seed_is_unbatched_and_shared_arguments_are_not_mapped():
    def fn(key, shared):
        return jax.random.normal(key, (2,)) + shared

    keys = jax.random.split(jax.random.key(1), 2)
    shared = np.float32(10.0)
    mapped = jax.jit(over_seeds(fn, num_shared=1, map_on_cpu=True))(keys, shared)
    expected = np.stack([np.asarray(jax.random.normal(k, (2,))) + 10.0 for k in keys])
    np.testing.assert_array_equal(mapped, expected)
    one = jax.jit(over_seeds(fn, num_shared=1, map_on_cpu=True))(keys[:1], shared)
    np.testing.assert_array_equal(one, expected[:1])
