"""Batch augmentation of aligned crops on the CPU (torch ops, no per-image Python loop).

Horizontal flip, a small random similarity (scale, rotation, translation), brightness /
contrast / saturation jitter, and occasional greyscale (grey photos, e.g. ORL and Yale,
are real inputs of the app).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random transforms (all symmetric around identity)."""

    flip: float = 0.5
    scale: float = 0.08
    rotate_deg: float = 8.0
    translate: float = 0.05
    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.25
    grey: float = 0.1


def augment_batch(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Randomly transform a batch.

    Args:
        x: (N, 3, S, S) float32 in [0, 1].
        cfg: transform ranges.
        generator: source of randomness (seeded by the trainer).
    Returns:
        (N, 3, S, S) float32 in [0, 1].
    """
    n = x.shape[0]

    def u(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=generator)

    flip = torch.rand(n, generator=generator) < cfg.flip
    x = torch.where(flip[:, None, None, None], torch.flip(x, dims=[3]), x)
    if cfg.scale or cfg.rotate_deg or cfg.translate:
        s = 1.0 + u(-cfg.scale, cfg.scale)
        a = u(-cfg.rotate_deg, cfg.rotate_deg) * (math.pi / 180.0)
        tx, ty = u(-cfg.translate, cfg.translate) * 2, u(-cfg.translate, cfg.translate) * 2
        cos, sin = torch.cos(a) / s, torch.sin(a) / s
        theta = torch.stack([torch.stack([cos, -sin, tx], dim=1), torch.stack([sin, cos, ty], dim=1)], dim=1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    grey_w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    if cfg.brightness:
        x = x * u(1 - cfg.brightness, 1 + cfg.brightness)[:, None, None, None]
    if cfg.contrast:
        mean = (x * grey_w).sum(1, keepdim=True).mean(dim=(2, 3), keepdim=True)
        x = (x - mean) * u(1 - cfg.contrast, 1 + cfg.contrast)[:, None, None, None] + mean
    grey = (x * grey_w).sum(1, keepdim=True)
    if cfg.saturation:
        x = (x - grey) * u(1 - cfg.saturation, 1 + cfg.saturation)[:, None, None, None] + grey
    if cfg.grey:
        to_grey = torch.rand(n, generator=generator) < cfg.grey
        x = torch.where(to_grey[:, None, None, None], grey.expand_as(x), x)
    return x.clamp_(0.0, 1.0)
