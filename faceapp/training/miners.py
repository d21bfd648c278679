"""Triplet miners: choose ``(anchor, positive, negative)`` index triplets inside a batch.

A miner only returns *indices*; distances are computed under ``torch.no_grad()`` and the loss
recomputes the (differentiable) distances of the chosen triplets. All miners are vectorised
(no Python loop over anchors); they are meant for batches of up to a few hundred embeddings.

Definitions used throughout (``d`` = :func:`~faceapp.training.distances.pairwise_distances`):

* positive of anchor ``a``: any ``p != a`` with ``labels[p] == labels[a]``;
* negative of anchor ``a``: any ``n`` with ``labels[n] != labels[a]``;
* an anchor is *usable* when it has at least one positive and at least one negative.

Ties are always broken towards the lowest index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from faceapp.training.distances import Metric, check_metric, pairwise_distances

__all__ = [
    "BatchAllMiner",
    "BatchHardMiner",
    "MinedTriplets",
    "Miner",
    "SemiHardMiner",
]


@dataclass(frozen=True)
class MinedTriplets:
    """Index triplets into a batch.

    Attributes:
        anchors: ``(T,)`` int64 indices.
        positives: ``(T,)`` int64 indices, ``labels[positives] == labels[anchors]``.
        negatives: ``(T,)`` int64 indices, ``labels[negatives] != labels[anchors]``.
    """

    anchors: Tensor
    positives: Tensor
    negatives: Tensor

    def __len__(self) -> int:
        return int(self.anchors.shape[0])

    @staticmethod
    def empty(device: torch.device | str = "cpu") -> MinedTriplets:
        """No triplet at all (``T == 0``)."""
        z = torch.zeros(0, dtype=torch.int64, device=device)
        return MinedTriplets(z, z.clone(), z.clone())


class Miner(Protocol):
    """Anything that maps a batch to index triplets."""

    def __call__(self, emb: Tensor, labels: Tensor) -> MinedTriplets:
        """``emb``: ``(N, D)`` float; ``labels``: ``(N,)`` int64 -> :class:`MinedTriplets`."""
        ...


def _check_batch(emb: Tensor, labels: Tensor) -> None:
    if emb.ndim != 2:
        raise ValueError(f"emb must be (N, D), got shape {tuple(emb.shape)}")
    if labels.ndim != 1 or labels.shape[0] != emb.shape[0]:
        raise ValueError(f"labels must be (N,) with N={emb.shape[0]}, got shape {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"labels must be an integer tensor, got {labels.dtype}")


def _masks(labels: Tensor) -> tuple[Tensor, Tensor]:
    """``(N, N)`` bool masks: ``pos[a, p]`` (same label, ``a != p``) and ``neg[a, n]``."""
    labels = labels.to(torch.int64)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(labels.shape[0], dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same


def _distances(emb: Tensor, metric: Metric) -> Tensor:
    with torch.no_grad():
        return pairwise_distances(emb.detach(), metric)


class BatchAllMiner:
    """Every valid triplet ``(a, p, n)`` of the batch, in lexicographic ``(a, p, n)`` order.

    ``T = sum_a |pos(a)| * |neg(a)|``, which grows as ``N^3``: fine for ``N <= ~256``.
    ``metric`` is unused for the choice (kept for a uniform interface).
    """

    def __init__(self, metric: Metric = "squared_l2") -> None:
        check_metric(metric)
        self.metric: Metric = metric

    def __call__(self, emb: Tensor, labels: Tensor) -> MinedTriplets:
        _check_batch(emb, labels)
        labels = labels.to(emb.device)
        pos, neg = _masks(labels)
        valid = pos[:, :, None] & neg[:, None, :]
        a, p, n = valid.nonzero(as_tuple=True)
        return MinedTriplets(a, p, n)

    def __repr__(self) -> str:
        return f"BatchAllMiner(metric={self.metric!r})"


class BatchHardMiner:
    """Batch-hard mining (Hermans et al. 2017): one triplet per usable anchor.

    For each anchor with at least one positive and one negative: the *hardest positive*
    (largest ``d(a, p)``) and the *hardest negative* (smallest ``d(a, n)``), ties to the
    lowest index. Anchors are returned in increasing order.
    """

    def __init__(self, metric: Metric = "squared_l2") -> None:
        check_metric(metric)
        self.metric: Metric = metric

    def __call__(self, emb: Tensor, labels: Tensor) -> MinedTriplets:
        _check_batch(emb, labels)
        labels = labels.to(emb.device)
        pos, neg = _masks(labels)
        usable = pos.any(dim=1) & neg.any(dim=1)
        if not bool(usable.any()):
            return MinedTriplets.empty(emb.device)
        d = _distances(emb, self.metric)
        # torch.argmax / argmin return the first extreme index on ties.
        hardest_pos = torch.where(pos, d, -torch.inf).argmax(dim=1)
        hardest_neg = torch.where(neg, d, torch.inf).argmin(dim=1)
        anchors = usable.nonzero(as_tuple=True)[0]
        return MinedTriplets(anchors, hardest_pos[anchors], hardest_neg[anchors])

    def __repr__(self) -> str:
        return f"BatchHardMiner(metric={self.metric!r})"


class SemiHardMiner:
    """FaceNet semi-hard mining (Schroff et al. 2015): one triplet per ``(a, p)`` pair.

    For every positive pair ``(a, p)`` whose anchor has at least one negative, the negative is
    chosen in this order of preference:

    1. *semi-hard*: among negatives with ``d(a,p) < d(a,n) < d(a,p) + margin``, the one
       closest to ``a`` (hardest semi-hard);
    2. otherwise the easiest negative farther than the positive: smallest ``d(a,n)`` with
       ``d(a,n) > d(a,p)`` (such a triplet has zero hinge loss but keeps its place);
    3. otherwise (every negative is at most as far as the positive) the *least hard* of them,
       largest ``d(a,n)`` (as TensorFlow-Addons' ``triplet_semihard_loss`` does): choosing the
       hardest here would turn semi-hard mining into batch-hard in exactly the early phase
       where batch-hard collapses the embedding.

    Note that 1 and 2 pick the same negative whenever 1 is non-empty (the closest negative
    beyond ``d(a,p)`` is inside the band if any negative is), so the selection reduces to
    "closest negative strictly farther than the positive, else the farthest negative"; the
    margin only decides whether the result is counted as semi-hard (see
    :meth:`semi_hard_mask`). Ties go to the lowest index. Pairs are in ``(a, p)`` order.
    """

    def __init__(self, margin: float, metric: Metric = "squared_l2") -> None:
        check_metric(metric)
        if not margin > 0:
            raise ValueError(f"margin must be > 0, got {margin}")
        self.margin = float(margin)
        self.metric: Metric = metric

    def _select(self, emb: Tensor, labels: Tensor) -> tuple[MinedTriplets, Tensor]:
        _check_batch(emb, labels)
        labels = labels.to(emb.device)
        pos, neg = _masks(labels)
        pos = pos & neg.any(dim=1, keepdim=True)  # anchors without negatives are dropped
        a, p = pos.nonzero(as_tuple=True)
        if a.numel() == 0:
            return MinedTriplets.empty(emb.device), torch.zeros(0, dtype=torch.bool)
        d = _distances(emb, self.metric)
        d_ap = d[a, p][:, None]  # (P, 1)
        d_an = d[a]  # (P, N)
        neg_rows = neg[a]  # (P, N)
        beyond = neg_rows & (d_an > d_ap)
        semi = beyond & (d_an < d_ap + self.margin)

        def closest(mask: Tensor) -> tuple[Tensor, Tensor]:
            return torch.where(mask, d_an, torch.inf).argmin(dim=1), mask.any(dim=1)

        n_semi, has_semi = closest(semi)
        n_beyond, has_beyond = closest(beyond)
        n_easiest = torch.where(neg_rows, d_an, -torch.inf).argmax(dim=1)
        n = torch.where(has_semi, n_semi, torch.where(has_beyond, n_beyond, n_easiest))
        return MinedTriplets(a, p, n), has_semi

    def __call__(self, emb: Tensor, labels: Tensor) -> MinedTriplets:
        return self._select(emb, labels)[0]

    def semi_hard_mask(self, emb: Tensor, labels: Tensor) -> Tensor:
        """``(T,)`` bool, aligned with ``self(emb, labels)``: True where step 1 applied."""
        return self._select(emb, labels)[1]

    def __repr__(self) -> str:
        return f"SemiHardMiner(margin={self.margin}, metric={self.metric!r})"
