"""Target networks whose weights come from outside (a hypernetwork, or their own parameters).

A target network is an ordinary ``nn.Module`` (so its own parameters can be
trained directly, as the fine-tuning / EWC / SI baselines do) that can also run
with a list of externally supplied tensors, one per parameter in
:meth:`param_shapes` order, through :func:`torch.func.functional_call`. The
hypernetworks of :mod:`tsuite.vision_video.hypernetworks` produce exactly that
list, and :func:`unflatten` cuts a flat weight vector into it.

- :class:`TargetMLP`: fully connected ReLU network on flattened images (von
  Oswald et al. 2020 use 2 hidden layers of 100 or 1000 units for MNIST tasks).
- :class:`TargetCNN`: a small convolutional network (conv 3×3 → ReLU → 2×2 max
  pool, twice, then a linear read-out), for CIFAR-sized images.
"""

from __future__ import annotations

import abc

import math

import torch
from torch import nn
from torch.func import functional_call


class TargetNet(nn.Module, abc.ABC):
    """Common interface: ``forward(x, weights=None)`` and the ordered parameter names and shapes."""

    def param_names(self) -> list[str]:
        return [name for name, _ in self.named_parameters()]

    def param_shapes(self) -> list[list[int]]:
        """Shapes of the parameters, in the order hypernetworks generate them (layer by layer, weight then bias)."""
        return [list(p.shape) for p in self.parameters()]

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, x: torch.Tensor, weights: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Logits (B, n_out) of images ``x`` (B, C, H, W) or (B, C·H·W), with ``weights`` or the module's own."""
        if weights is None:
            return self.body(x)
        names = self.param_names()
        if len(weights) != len(names):
            raise ValueError(f"expected {len(names)} weight tensors ({', '.join(names)}), got {len(weights)}")
        return functional_call(self, dict(zip(names, weights)), (x,), kwargs={"weights": None})

    @abc.abstractmethod
    def body(self, x: torch.Tensor) -> torch.Tensor:
        """Implemented by each subclass."""


class TargetMLP(TargetNet):
    """ReLU MLP: in_features → hidden… → n_out, on flattened inputs.

    Args:
        in_features: number of input features (C·H·W).
        hidden: widths of the hidden layers.
        n_out: number of outputs (classes of one task for a task-conditioned net, or of all heads).
    """

    def __init__(self, in_features: int, hidden: list[int], n_out: int):
        super().__init__()
        sizes = [in_features, *hidden, n_out]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))

    def body(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)  # (B, D)
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = torch.relu(h)
        return h  # (B, n_out)


class TargetCNN(TargetNet):
    """Small CNN: [conv 3×3 (same) → ReLU → max-pool 2×2] per channel width, then a linear read-out.

    Args:
        in_shape: (C, H, W) of the images.
        channels: output channels of the convolution blocks.
        n_out: number of outputs.
    """

    def __init__(self, in_shape: list[int], channels: list[int], n_out: int):
        super().__init__()
        c, h, w = in_shape
        convs = []
        for out in channels:
            convs.append(nn.Conv2d(c, out, kernel_size=3, padding=1))
            c, h, w = out, h // 2, w // 2
        if h < 1 or w < 1:
            raise ValueError(f"{len(channels)} pooling blocks are too many for images of size {in_shape[1:]}")
        self.convs = nn.ModuleList(convs)
        self.in_shape = list(in_shape)
        self.readout = nn.Linear(c * h * w, n_out)

    def body(self, x: torch.Tensor) -> torch.Tensor:
        h = x.reshape(x.shape[0], *self.in_shape)  # (B, C, H, W)
        for conv in self.convs:
            h = nn.functional.max_pool2d(torch.relu(conv(h)), 2)  # (B, C', H/2, W/2)
        return self.readout(h.flatten(1))  # (B, n_out)


def build_target(kind: str, in_shape: list[int], n_out: int, hidden: list[int]) -> TargetNet:
    """``mlp``: :class:`TargetMLP` (hidden widths ``hidden``); ``cnn``: :class:`TargetCNN` (channels ``hidden``)."""
    if kind == "mlp":
        return TargetMLP(math.prod(in_shape), hidden, n_out)
    if kind == "cnn":
        return TargetCNN(in_shape, hidden, n_out)
    raise ValueError(f"unknown target network {kind!r}; expected 'mlp' or 'cnn'")


def unflatten(flat: torch.Tensor, shapes: list[list[int]]) -> list[torch.Tensor]:
    """Cut a flat weight vector (P,) into tensors of ``shapes`` (P = total size)."""
    sizes = [math.prod(s) for s in shapes]
    if flat.shape[-1] != sum(sizes):
        raise ValueError(f"expected {sum(sizes)} weights, got {flat.shape[-1]}")
    return [part.reshape(s) for part, s in zip(flat.split(sizes, dim=-1), shapes)]
