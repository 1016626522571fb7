"""Context windows of an offline dataset, for sequence models (the decision transformer).

A window is the `K` steps of one episode that end at a row `i` of the dataset: rows
`i - K + 1 .. i`, each with its (undiscounted) return-to-go and its step within the episode.
Windows never cross an episode end: where fewer than `K` steps of the episode lie at or before
`i` (the first `K - 1` steps of every episode), the window is LEFT-padded and its `mask` is False
at the padding, the side the decision transformer's own loader pads (Chen et al. 2021, official
code `gym/experiment.py`). Padding holds zeros. Reading chosen: that loader draws a window's
START uniformly and cuts it short at the episode's end; here the END row is drawn, so short
windows are an episode's first steps, exactly the histories the policy has at evaluation.

Episodes are the runs of rows between `terminated | truncated` flags: the dataset's rows of one
episode must be contiguous and in order (`episode_index` checks `next_obs[i] == obs[i + 1]`
inside every episode when given the observations, as the Minari export does). Rows after the
last flag form one more episode, cut by the end of the dataset (its returns-to-go count only the
rewards recorded).

Two halves:

* `episode_index` (numpy, on the host, once per dataset): per row the return-to-go
  `R_hat_t = sum_{t' >= t} r_t'` within its episode (Chen et al. 2021, section 3), the step `t`
  within the episode and the row of the episode's first step; and the dataset's best episode
  return.
* `window_rows` / `gather_windows` / `sample_windows` (numpy or JAX, inside `jit`): the rows and
  mask of the windows ending at given rows, their data, and `batch_size` windows ending at
  uniformly drawn rows (every row is the last step of exactly one window, so every step is a
  prediction target equally often).

A window batch is a `Transition` with leaves [B, K, ...] and extras:

* `return_to_go`: [B, K] float32, R_hat at each step (0 at padding);
* `timestep`: [B, K] int32, the step within the episode (0 at padding);
* `mask`: [B, K] bool, True at real steps (the last step of a window is always real);
* `max_return`: [B] float32, the dataset's best episode return (the same in every row; the
  decision transformer's evaluation target is a multiple of it).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rlkit.data.dataset import DatasetError, first_break, read_rows
from rlkit.types import Array, PRNGKey, Transition


class EpisodeIndex(NamedTuple):
    """Where each row of a dataset sits in its episode (numpy on the host, or moved to the device).

    Attributes:
        return_to_go: [M] float32, the sum of the episode's rewards from this row on.
        timestep: [M] int32, the row's step within its episode (0 at the first step).
        episode_start: [M] int32, the dataset row of the episode's first step.
        max_return: float32 scalar, the best episode return in the dataset.
    """

    return_to_go: Array
    timestep: Array
    episode_start: Array
    max_return: Array


def episode_index(reward, terminated, truncated, obs=None, next_obs=None) -> EpisodeIndex:
    """The `EpisodeIndex` of a dataset's rows (host-side numpy; one pass, O(M)).

    Args:
        reward: [M] rewards.
        terminated, truncated: [M] bool flags; an episode ends at a row where either is set.
        obs, next_obs: [M, ...] observations (arrays or memmaps), optional: given, the rows of
            each episode are checked to be contiguous (`next_obs[i] == obs[i + 1]` wherever row
            `i` ends no episode), read in bounded chunks.

    Returns:
        The `EpisodeIndex` (numpy arrays).

    Raises:
        DatasetError: no rows, or (with the observations) an episode whose rows are not
            contiguous, e.g. several environments' steps interleaved.
    """
    reward = np.asarray(reward, np.float64)
    ended = np.asarray(terminated, bool) | np.asarray(truncated, bool)
    size = len(reward)
    if size == 0:
        raise DatasetError("dataset: holds no transitions; context windows need at least one")
    if obs is not None and next_obs is not None:
        broken = first_break(obs, next_obs, ended)
        if broken is not None:
            raise DatasetError(
                f"dataset: next_obs of row {broken} differs from obs of row {broken + 1} although "
                "no episode ends there; context windows need each episode's rows contiguous. "
                "Store the steps episode by episode (one environment after another).")
    # episode_id[i] = episodes ended before row i; rows of one id form one episode.
    episode_id = np.concatenate([[0], np.cumsum(ended[:-1])])
    first_rows = np.flatnonzero(np.diff(episode_id, prepend=-1))  # [E] each episode's first row
    episode_start = first_rows[episode_id]
    # R_hat_t = (sum of the episode's rewards) - (rewards before t), with float64 sums.
    cumulative = np.cumsum(reward)
    before = cumulative - reward  # rewards of rows 0 .. i - 1
    totals = np.add.reduceat(reward, first_rows)  # [E] episode returns
    return_to_go = totals[episode_id] - (before - before[episode_start])
    return EpisodeIndex(return_to_go=return_to_go.astype(np.float32),
                        timestep=(np.arange(size) - episode_start).astype(np.int32),
                        episode_start=episode_start.astype(np.int32),
                        max_return=np.float32(totals.max()))


def window_rows(episode_start: Array, end_rows: Array, context_length: int
                ) -> tuple[Array, Array]:
    """Rows and mask of the windows of `context_length` steps ending at `end_rows`.

    Args:
        episode_start: [M] int, `EpisodeIndex.episode_start`.
        end_rows: [...] int rows, each the last step of its window.
        context_length: K >= 1.

    Returns:
        (rows [..., K] int32, mask [..., K] bool): window position k reads row `end - K + 1 + k`
        where that row is in the end row's episode (mask True), else the episode's first row
        (mask False: left padding). numpy in, numpy out; JAX arrays in, JAX arrays out.
    """
    xp = np if isinstance(end_rows, np.ndarray) else jnp
    offsets = xp.arange(context_length) - (context_length - 1)  # [K]: -(K-1) .. 0
    start = episode_start[end_rows][..., None]
    rows = end_rows[..., None] + offsets
    mask = rows >= start
    return xp.where(mask, rows, start).astype(xp.int32), mask


def gather_windows(transitions: Transition, index: EpisodeIndex, end_rows: Array,
                   context_length: int) -> Transition:
    """The windows ending at `end_rows`: JAX inside `jit`, or numpy on the host (the streamed
    feed, `rlkit.data.dataset.batch_stream`, which reads memmaps in sorted row order).

    Args:
        transitions: the dataset, leaves [M, ...] (device arrays, or numpy arrays / memmaps).
        index: its `EpisodeIndex` (same kind of arrays).
        end_rows: [...] int rows (a JAX or numpy array).
        context_length: K.

    Returns:
        A `Transition` with leaves [..., K, ...] (zeros at padding) and the extras listed in the
        module docstring.
    """
    xp = np if isinstance(end_rows, np.ndarray) else jnp
    rows, mask = window_rows(index.episode_start, end_rows, context_length)  # [..., K]

    def take(leaf: Array) -> Array:
        values = _read(leaf, rows)  # [..., K, *item]
        keep = mask.reshape(mask.shape + (1,) * (values.ndim - mask.ndim))
        return xp.where(keep, values, xp.zeros((), values.dtype))

    windows = jax.tree.map(take, Transition(
        obs=transitions.obs, action=transitions.action, reward=transitions.reward,
        terminated=transitions.terminated, truncated=transitions.truncated,
        next_obs=transitions.next_obs))
    return windows.replace(extras={
        "return_to_go": take(index.return_to_go),
        "timestep": take(index.timestep),
        "mask": mask,
        "max_return": xp.broadcast_to(xp.asarray(index.max_return, xp.float32),
                                      end_rows.shape),
    })


def _read(leaf: Array, rows: Array) -> Array:
    """`leaf[rows]`; numpy arrays and memmaps in sorted row order (`read_rows`)."""
    return read_rows(leaf, rows) if isinstance(leaf, np.ndarray) else leaf[rows]


def sample_windows(transitions: Transition, index: EpisodeIndex, key: PRNGKey, batch_size: int,
                   context_length: int) -> Transition:
    """`batch_size` windows ending at rows drawn uniformly with replacement (inside `jit`).

    Returns:
        As `gather_windows`, leaves [batch_size, K, ...].
    """
    size = index.episode_start.shape[0]
    end_rows = jax.random.randint(key, (batch_size,), 0, size)
    return gather_windows(transitions, index, end_rows, context_length)


__all__ = ["EpisodeIndex", "episode_index", "gather_windows",
           "sample_windows", "window_rows"]
