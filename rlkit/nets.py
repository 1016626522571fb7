"""Flax Linen networks shared by the agents: MLP, Nature CNN, IMPALA CNN, and torso selection.

The torsos are the one shared piece an agent file leans on beyond `rlkit.ops` and its driver:
each agent builds its own heads (e.g. `agents.dqn.QNetwork`) on top of `make_torso`.

Image observations ([H, W, C], uint8) are scaled to [0, 1] inside the torsos, so agents and buffers
keep the compact uint8 form.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from rlkit.types import Array, EnvSpec


def _orthogonal(scale: float = np.sqrt(2)):
    return nn.initializers.orthogonal(scale)


class MLP(nn.Module):
    """A multilayer perceptron on flattened observations.

    Attributes:
        hidden_sizes: widths of the hidden layers.
        activation: "tanh" or "relu".
    """

    hidden_sizes: Sequence[int] = (64, 64)
    activation: str = "tanh"

    @nn.compact
    def __call__(self, x: Array) -> Array:  # [B, ...] -> [B, hidden_sizes[-1]]
        act = nn.tanh if self.activation == "tanh" else nn.relu
        x = x.reshape((x.shape[0], -1)).astype(jnp.float32)
        for size in self.hidden_sizes:
            x = act(nn.Dense(size, kernel_init=_orthogonal(), bias_init=nn.initializers.zeros)(x))
        return x


class NatureCNN(nn.Module):
    """The DQN Nature torso (Mnih et al. 2015), ending in a 512-unit dense layer."""

    @nn.compact
    def __call__(self, x: Array) -> Array:  # [B, H, W, C] -> [B, 512]
        x = x.astype(jnp.float32) / 255.0
        for features, kernel, stride in ((32, 8, 4), (64, 4, 2), (64, 3, 1)):
            x = nn.relu(nn.Conv(features, (kernel, kernel), (stride, stride),
                                kernel_init=_orthogonal())(x))
        x = x.reshape((x.shape[0], -1))
        return nn.relu(nn.Dense(512, kernel_init=_orthogonal())(x))


class _ResidualBlock(nn.Module):
    channels: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        y = nn.Conv(self.channels, (3, 3))(nn.relu(x))
        y = nn.Conv(self.channels, (3, 3))(nn.relu(y))
        return x + y


class ImpalaCNN(nn.Module):
    """The IMPALA torso (Espeholt et al. 2018) as used for procgen (Cobbe et al. 2020).

    Attributes:
        channels: channels of the three stacks (16, 32, 32 in the procgen paper).
    """

    channels: Sequence[int] = (16, 32, 32)

    @nn.compact
    def __call__(self, x: Array) -> Array:  # [B, H, W, C] -> [B, 256]
        x = x.astype(jnp.float32) / 255.0
        for channels in self.channels:
            x = nn.Conv(channels, (3, 3))(x)
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
            x = _ResidualBlock(channels)(x)
            x = _ResidualBlock(channels)(x)
        x = nn.relu(x).reshape((x.shape[0], -1))
        return nn.relu(nn.Dense(256, kernel_init=_orthogonal())(x))


def make_torso(spec: EnvSpec, cnn: str, hidden_sizes: Sequence[int], activation: str) -> nn.Module:
    """Pick the torso for an environment: a CNN for images, an MLP otherwise.

    Args:
        spec: the environment's spec.
        cnn: used when observations are images: "impala" (channels 16, 32, 32, the procgen
            paper's), "impala-small" (8, 16, 16: about a quarter of the convolution FLOPs, for
            CPU smoke runs such as the tiny procgen study; not a paper's network) or "nature".
        hidden_sizes: MLP widths, used otherwise.
        activation: MLP activation.
    """
    if spec.is_image:
        if cnn == "impala-small":
            return ImpalaCNN(channels=(8, 16, 16))
        return ImpalaCNN() if cnn == "impala" else NatureCNN()
    return MLP(tuple(hidden_sizes), activation)


class TorsoHead(nn.Module):
    """A torso and a linear head: obs [B, ...] -> [B, num_outputs] (Q-values, logits, values)."""

    torso: nn.Module
    num_outputs: int

    @nn.compact
    def __call__(self, obs: Array) -> Array:
        return nn.Dense(self.num_outputs)(self.torso(obs))
