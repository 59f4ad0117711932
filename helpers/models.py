"""The networks of the series.

Shared file: each model is a self-contained section. Shapes: images come in as
N x C x H x W float32, outputs are N x n_classes logits (no softmax).
"""

from __future__ import annotations

import torch
from torch import nn


class CIFAR2MLP(nn.Sequential):
    """Flatten, then 3072-512-128-32-2 with ReLU between layers; logits out.

    Input N x 3 x 32 x 32, output N x 2. 1,643,234 parameters.
    """

    def __init__(self, sizes: tuple[int, ...] = (3072, 512, 128, 32, 2)):
        layers: list[nn.Module] = [nn.Flatten()]
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(n_in, n_out))
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
        super().__init__(*layers)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable scalars in ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def parameter_table(model: nn.Module) -> list[tuple[str, tuple[int, ...], int]]:
    """``(name, shape, count)`` for each trainable parameter, in order."""
    return [(n, tuple(p.shape), p.numel()) for n, p in model.named_parameters() if p.requires_grad]


@torch.no_grad()
def clone_model(model: nn.Module) -> nn.Module:
    """A deep copy with identical weights (for runs that must start from the same point)."""
    import copy

    return copy.deepcopy(model)
