"""Optimiser pieces agents share."""

from __future__ import annotations

import optax


def clipped_adam(learning_rate: float | optax.Schedule,
                 max_grad_norm: float | None) -> optax.GradientTransformation:
    """Adam after clipping gradients to a global norm (`max_grad_norm` None: no clipping)."""
    clip = optax.clip_by_global_norm(max_grad_norm) if max_grad_norm else optax.identity()
    return optax.chain(clip, optax.adam(learning_rate))
