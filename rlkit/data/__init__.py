"""The shared replay and offline-dataset layer (ARCHITECTURE.md section 4).

Buffers are pure functions over a state pytree, usable inside `jit` and `lax.scan` and vmappable
over seeds: `make_uniform_buffer` today; prioritised and sequence buffers, offline datasets and
hybrid sampling join this package with the same `Buffer` shape.
"""

from rlkit.data.replay import Buffer, BufferState, make_uniform_buffer

__all__ = ["Buffer", "BufferState", "make_uniform_buffer"]
