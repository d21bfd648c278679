"""Binary verification head: is a pair of embeddings the same person?

l1 mode:    ŷ = σ(Σₖ wₖ·|aₖ − bₖ| + b)
chi2 mode:  ŷ = σ(Σₖ wₖ·(uₖ − vₖ)² / (uₖ + vₖ + ε) + b),  u = (a + 1)/2, v = (b + 1)/2

Embeddings are L2-normalised, so every component lies in [−1, 1] and can be negative;
the chi-square variant therefore works on the shifted embeddings u, v ∈ [0, 1]ᴰ, whose
sum is ≥ 0, and adds ε = 1e-6: the denominator is always positive. (The numerator is
(aₖ − bₖ)²/4, so the form of the chi-square distance is kept.)
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

HeadMode = Literal["l1", "chi2"]
HEAD_MODES: tuple[HeadMode, ...] = ("l1", "chi2")
CHI2_EPS = 1e-6


def pair_features(a: torch.Tensor, b: torch.Tensor, mode: HeadMode) -> torch.Tensor:
    """Per-dimension pair features (..., D) from two (..., D) embedding tensors (broadcasting)."""
    if mode == "l1":
        return (a - b).abs()
    if mode == "chi2":
        u, v = (a + 1.0) * 0.5, (b + 1.0) * 0.5
        return (u - v) ** 2 / (u + v + CHI2_EPS)
    raise ValueError(f"unknown head mode {mode!r} (l1 or chi2)")


class BinaryVerificationHead(nn.Module):
    """Logistic regression over per-dimension pair features.

    ``forward(a, b)``: (N, D), (N, D) float32 -> (N,) logits; ``probability`` applies σ.
    """

    def __init__(self, dim: int, mode: HeadMode = "l1") -> None:
        super().__init__()
        if mode not in HEAD_MODES:
            raise ValueError(f"unknown head mode {mode!r} (l1 or chi2)")
        self.dim = dim
        self.mode: HeadMode = mode
        # Start as "closer is more alike": negative weights on the difference features.
        self.weight = nn.Parameter(torch.full((dim,), -1.0))
        self.bias = nn.Parameter(torch.tensor(1.0))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return pair_features(a, b, self.mode) @ self.weight + self.bias

    def probability(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(N,) float32 in (0, 1): probability that each pair is the same person."""
        return torch.sigmoid(self(a, b))

    @property
    def name(self) -> str:
        return f"head_{self.mode}"
