"""Augmentation: a shift and rotation per image of a batch (a torchvision transform draws one per batch)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_affine(x: torch.Tensor, generator: torch.Generator, max_shift: float = 2.0,
                  max_degrees: float = 10.0) -> torch.Tensor:
    """``x`` (N x C x H x W, any device) with each image shifted and rotated by its own random amounts,
    drawn from the CPU ``generator`` (the same on every device): shifts uniform in [-max_shift, max_shift]
    pixels, rotation about the centre in [-max_degrees, max_degrees]. Outside pixels repeat the border."""
    if x.ndim != 4:
        raise ValueError(f"x must be N x C x H x W, got shape {tuple(x.shape)}.")
    if max_shift < 0 or max_degrees < 0:
        raise ValueError(f"max_shift={max_shift} and max_degrees={max_degrees} must be >= 0.")
    n, _, h, w = x.shape
    u = (2 * torch.rand(n, 3, generator=generator, dtype=torch.float64) - 1).to(x.device, x.dtype)
    angle = u[:, 2] * math.radians(max_degrees)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # grid_sample's coordinates run from -1 to 1 across the image: a pixel is 2/W wide, and a
    # rotation in pixel units reads [[cos, -sin H/W], [sin W/H, cos]] in these coordinates.
    theta = torch.stack([torch.stack([cos, -sin * h / w, u[:, 0] * 2 * max_shift / w], 1),
                         torch.stack([sin * w / h, cos, u[:, 1] * 2 * max_shift / h], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
