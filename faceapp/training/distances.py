"""Pairwise distances between embeddings, shared by the miners and the triplet loss.

Two metrics:

* ``"squared_l2"``: ``||a - b||^2`` (>= 0, diagonal exactly 0; see ``DIRECT_MAX_ELEMENTS``);
* ``"cosine"``: ``1 - <a, b> / (|a| |b|)`` (in ``[0, 2]``, diagonal exactly 0).

Both are *distances* (lower = more alike). Scores used for verification elsewhere in the
project are similarities (higher = more alike); do not mix the two up.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

Metric = Literal["squared_l2", "cosine"]

METRICS: tuple[str, ...] = get_args(Metric)

# Squared L2 is computed from explicit differences (exact, (N, N, D) intermediate) while
# N * N * D stays below this; beyond it, from |a|^2 + |b|^2 - 2<a, b> (one matmul, but with
# cancellation error of order eps * |a|^2, hence the clamp at 0).
DIRECT_MAX_ELEMENTS = 1 << 24

# Guard against division by zero when normalising all-zero rows (cosine metric).
_NORM_EPS = 1e-12


def check_metric(metric: str) -> None:
    """Raise ``ValueError`` unless ``metric`` is one of :data:`METRICS`."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {METRICS}")


def pairwise_distances(emb: Tensor, metric: Metric) -> Tensor:
    """All pairwise distances between the rows of ``emb``.

    Args:
        emb: ``(N, D)`` floating tensor.
        metric: ``"squared_l2"`` or ``"cosine"``.

    Returns:
        ``(N, N)`` tensor of the same dtype and device as ``emb``; symmetric, ``>= 0``, exactly
        ``0`` on the diagonal. Differentiable with respect to ``emb`` (the clamp at 0 has zero
        gradient where it bites, so the diagonal never produces NaN gradients).
    """
    check_metric(metric)
    if emb.ndim != 2:
        raise ValueError(f"emb must be (N, D), got shape {tuple(emb.shape)}")
    if not emb.is_floating_point():
        raise ValueError(f"emb must be a floating tensor, got {emb.dtype}")
    n = emb.shape[0]
    if metric == "squared_l2":
        if n * n * emb.shape[1] <= DIRECT_MAX_ELEMENTS:
            # Exact differences: no cancellation, identical rows give exactly 0.
            diff = emb[:, None, :] - emb[None, :, :]
            dist = (diff * diff).sum(dim=2)
        else:
            sq = (emb * emb).sum(dim=1)
            dist = sq[:, None] + sq[None, :] - 2.0 * (emb @ emb.T)
    else:
        unit = F.normalize(emb, p=2.0, dim=1, eps=_NORM_EPS)
        dist = 1.0 - unit @ unit.T
    # The matmul is not guaranteed to be bitwise symmetric; symmetrise so ties are consistent.
    dist = (0.5 * (dist + dist.T)).clamp(min=0.0)
    off_diag = 1.0 - torch.eye(n, dtype=emb.dtype, device=emb.device)
    return dist * off_diag
