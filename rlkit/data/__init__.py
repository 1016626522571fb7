"""The shared replay and offline-dataset layer (ARCHITECTURE.md section 4).

Buffers are pure functions over a state pytree, usable inside `jit` and `lax.scan` and vmappable
over seeds: uniform (`make_uniform_buffer`), prioritised (`make_prioritised_buffer`) and sequence
(`make_trajectory_buffer`) replay; offline datasets and hybrid sampling join this package with the
same shape of pure functions.
"""

from rlkit.data.replay import (
    Buffer,
    BufferState,
    PrioritisedBuffer,
    PrioritisedBufferState,
    PrioritisedSample,
    TrajectoryBuffer,
    TrajectoryBufferState,
    make_prioritised_buffer,
    make_trajectory_buffer,
    make_uniform_buffer,
    terminated_or_truncated,
)

__all__ = [
    "Buffer",
    "BufferState",
    "PrioritisedBuffer",
    "PrioritisedBufferState",
    "PrioritisedSample",
    "TrajectoryBuffer",
    "TrajectoryBufferState",
    "make_prioritised_buffer",
    "make_trajectory_buffer",
    "make_uniform_buffer",
    "terminated_or_truncated",
]

# Offline datasets (rlkit.data.dataset), Minari interchange (minari itself is imported only when
# from_minari / to_minari run) and preference JSONL.
from rlkit.data.dataset import (  # noqa: E402
    FORMAT_NAME,
    FORMAT_VERSION,
    Dataset,
    DatasetError,
    DatasetInfo,
    batch_stream,
    load_dataset,
    save_dataset,
    to_device,
)
from rlkit.data.minari_io import from_minari, to_minari  # noqa: E402
from rlkit.data.preferences import (  # noqa: E402
    PreferenceRecord,
    load_preferences,
    save_preferences,
)

__all__ += [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "Dataset",
    "DatasetError",
    "DatasetInfo",
    "PreferenceRecord",
    "batch_stream",
    "from_minari",
    "load_dataset",
    "load_preferences",
    "save_dataset",
    "save_preferences",
    "to_device",
    "to_minari",
]
