"""Triplet margin loss over mined triplets, and a collapse detector for embeddings.

Per triplet ``(a, p, n)`` with distances ``d_ap = d(a, p)`` and ``d_an = d(a, n)``:

* hinge (default): ``max(0, d_ap - d_an + margin)``;
* soft (``soft=True``, Hermans et al. 2017): ``softplus(d_ap - d_an)`` (no margin).

Reductions: ``"mean"`` averages over all mined triplets; ``"mean_active"`` averages over the
triplets whose loss is ``> 0`` (the batch-all convention, which keeps the gradient from being
diluted by the many easy triplets). With no triplet, or no active triplet under
``"mean_active"``, the loss is a zero that is still attached to the graph.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from faceapp.training.distances import Metric, check_metric, pairwise_distances
from faceapp.training.miners import Miner

__all__ = ["TripletLossOutput", "TripletMarginLoss", "embedding_spread", "is_collapsed"]

logger = logging.getLogger(__name__)

Reduction = Literal["mean", "mean_active"]


@dataclass(frozen=True)
class TripletLossOutput:
    """Result of :meth:`TripletMarginLoss.forward`.

    Attributes:
        loss: scalar tensor (dtype of the embeddings), differentiable.
        active_fraction: fraction of mined triplets whose loss is ``> 0`` (0.0 with no triplet).
        n_triplets: number of mined triplets.
        mean_pos_dist: mean ``d(a, p)`` over mined triplets (0.0 with no triplet).
        mean_neg_dist: mean ``d(a, n)`` over mined triplets (0.0 with no triplet).
    """

    loss: Tensor
    active_fraction: float
    n_triplets: int
    mean_pos_dist: float
    mean_neg_dist: float


class TripletMarginLoss(nn.Module):
    """Triplet loss on the triplets chosen by ``miner``.

    Args:
        miner: chooses index triplets (see :mod:`faceapp.training.miners`).
        margin: hinge margin (``> 0``; ignored when ``soft``), in units of ``metric``.
        metric: distance used by the loss (the miner has its own).
        soft: use ``softplus(d_ap - d_an)`` instead of the hinge.
        reduction: ``"mean"`` or ``"mean_active"`` (see module docstring).
    """

    def __init__(
        self,
        miner: Miner,
        margin: float = 0.2,
        metric: Metric = "squared_l2",
        soft: bool = False,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__()
        check_metric(metric)
        if reduction not in ("mean", "mean_active"):
            raise ValueError(f"unknown reduction {reduction!r}; expected 'mean' or 'mean_active'")
        if not soft and not margin > 0:
            raise ValueError(f"margin must be > 0, got {margin}")
        self.miner = miner
        self.margin = float(margin)
        self.metric: Metric = metric
        self.soft = bool(soft)
        self.reduction: Reduction = reduction

    def forward(self, emb: Tensor, labels: Tensor) -> TripletLossOutput:
        """Compute the loss.

        Args:
            emb: ``(N, D)`` float embeddings (requires grad during training).
            labels: ``(N,)`` integer identity labels.

        Returns:
            :class:`TripletLossOutput`.
        """
        triplets = self.miner(emb, labels)
        t = len(triplets)
        if t == 0:
            logger.debug("no valid triplet in a batch of %d", emb.shape[0])
            return TripletLossOutput(
                loss=emb.sum() * 0.0,
                active_fraction=0.0,
                n_triplets=0,
                mean_pos_dist=0.0,
                mean_neg_dist=0.0,
            )
        a, p, n = triplets.anchors, triplets.positives, triplets.negatives
        if 2 * t <= emb.shape[0] ** 2:
            # Few triplets (batch-hard, semi-hard): distances of the mined pairs only.
            d_ap = _pair_distances(emb, a, p, self.metric)
            d_an = _pair_distances(emb, a, n, self.metric)
        else:
            # Many triplets (batch-all): one (N, N) matrix, then gather.
            d = pairwise_distances(emb, self.metric)
            d_ap, d_an = d[a, p], d[a, n]
        diff = d_ap - d_an
        per_triplet = F.softplus(diff) if self.soft else F.relu(diff + self.margin)
        active = per_triplet > 0
        n_active = int(active.sum())
        if self.reduction == "mean":
            loss = per_triplet.mean()
        elif n_active > 0:
            loss = per_triplet[active].mean()
        else:
            loss = per_triplet.sum() * 0.0
        return TripletLossOutput(
            loss=loss,
            active_fraction=n_active / t,
            n_triplets=t,
            mean_pos_dist=float(d_ap.detach().mean()),
            mean_neg_dist=float(d_an.detach().mean()),
        )


def _pair_distances(emb: Tensor, i: Tensor, j: Tensor, metric: Metric) -> Tensor:
    """``(T,)`` distances between rows ``emb[i]`` and ``emb[j]`` (same definitions as
    :func:`~faceapp.training.distances.pairwise_distances`)."""
    if metric == "squared_l2":
        diff = emb[i] - emb[j]
        return (diff * diff).sum(dim=1)
    unit = F.normalize(emb, p=2.0, dim=1, eps=1e-12)
    return (1.0 - (unit[i] * unit[j]).sum(dim=1)).clamp(min=0.0)


def embedding_spread(emb: Tensor) -> float:
    """Mean Euclidean (not squared) distance between distinct rows of ``emb``.

    A collapse detector: ~0 when every embedding sits at one point, ~``sqrt(2)`` for random
    unit vectors in high dimension.

    Args:
        emb: ``(N, D)`` float tensor. With ``N < 2`` the spread is 0.0.

    Returns:
        The mean over the ``N (N - 1)`` ordered pairs ``i != j`` of ``||emb_i - emb_j||``.
    """
    if emb.ndim != 2:
        raise ValueError(f"emb must be (N, D), got shape {tuple(emb.shape)}")
    n = emb.shape[0]
    if n < 2:
        return 0.0
    with torch.no_grad():
        x = emb.detach().to(torch.float64)
        dist = torch.cdist(x, x, p=2.0, compute_mode="donot_use_mm_for_euclid_dist")
        return float(dist.sum() / (n * (n - 1)))


def is_collapsed(emb: Tensor, min_spread: float = 0.05) -> bool:
    """True when :func:`embedding_spread` is below ``min_spread`` (a tuning knob, not a
    calibrated threshold; the default suits L2-normalised embeddings)."""
    return embedding_spread(emb) < min_spread
