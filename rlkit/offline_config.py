"""The config fields every offline policy learner shares (BC, IQL): optimiser, budget, network
and which policy is reported. Agents extend `OfflinePolicyConfig` with their own fields."""

from __future__ import annotations

from dataclasses import dataclass

from rlkit.errors import require
from rlkit.qlearning import check_network_fields, require_int_at_least


@dataclass(frozen=True)
class OfflinePolicyConfig:
    """Fields of an offline learner with a categorical policy network."""

    learning_rate: float = 3e-4
    """Adam step size."""
    batch_size: int = 256
    """Dataset rows per update."""
    total_steps: int = 20_000
    """Gradient updates in a run (offline: no environment steps)."""
    max_grad_norm: float | None = 10.0
    """Clip gradients to this global norm; None disables clipping."""
    eval_policy: str = "greedy"
    """Policy reported and evaluated: "greedy" (argmax of pi) or "sample" (pi itself)."""
    hidden_sizes: tuple[int, ...] = (128, 128)
    """MLP widths for vector observations (of every network of the agent)."""
    activation: str = "relu"
    """MLP activation: "relu" or "tanh"."""
    cnn: str = "nature"
    """Torso for image observations: "nature" or "impala"."""

    def __post_init__(self):
        require(self.learning_rate > 0, "learning_rate",
                f"must be > 0, got {self.learning_rate}; try 3e-4.")
        require_int_at_least(self.batch_size, "batch_size", 1)
        require_int_at_least(self.total_steps, "total_steps", 1)
        require(self.max_grad_norm is None or self.max_grad_norm > 0, "max_grad_norm",
                f"must be > 0 or None (no clipping), got {self.max_grad_norm}.")
        require(self.eval_policy in ("greedy", "sample"), "eval_policy",
                f"must be 'greedy' or 'sample', got {self.eval_policy!r}.")
        check_network_fields(self)
