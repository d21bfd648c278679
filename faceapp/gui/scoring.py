"""Score handling of the GUI: accept / reject, fusing a window, ROC of a score set.

The services report every score as a *similarity* (higher = more alike) and a comparison
matches when ``score >= τ`` (:mod:`faceapp.nn.scoring` decides this for the whole project);
every comparison with τ in the GUI goes through :func:`passes`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

import numpy as np

DISTANCE = "distance"
"""The cosine-similarity scorer (scores in [-1, 1]); the head scorers give probabilities."""


def passes(score: float, tau: float) -> bool:
    """Does similarity ``score`` accept at threshold ``tau`` (``score >= tau``)?"""
    return bool(score >= tau)


class ScoreWindow:
    """The last ``size`` scores of a verification; the decision is their median vs τ."""

    def __init__(self, size: int = 7, min_count: int = 3) -> None:
        self._scores: deque[float] = deque(maxlen=max(1, size))
        self.min_count = max(1, min(min_count, size))

    @property
    def size(self) -> int:
        return self._scores.maxlen or 1

    def resize(self, size: int) -> None:
        self._scores = deque(self._scores, maxlen=max(1, size))
        self.min_count = max(1, min(self.min_count, size))

    def add(self, score: float) -> None:
        self._scores.append(float(score))

    def extend(self, scores: Iterable[float]) -> None:
        for s in scores:
            self.add(s)

    def clear(self) -> None:
        self._scores.clear()

    def __len__(self) -> int:
        return len(self._scores)

    def scores(self) -> list[float]:
        return list(self._scores)

    def ready(self) -> bool:
        return len(self._scores) >= self.min_count

    def fused(self) -> float:
        """Median of the window (``nan`` when empty)."""
        return float(np.median(np.asarray(self._scores))) if self._scores else float("nan")


def score_range(scorer: str, tau: float | None = None) -> tuple[float, float]:
    """The interval a τ slider covers for ``scorer``: [-1, 1] for the cosine ``distance``
    scorer, [0, 1] for the heads' probabilities; widened to include ``tau``."""
    lo, hi = (-1.0, 1.0) if scorer == DISTANCE else (0.0, 1.0)
    if tau is not None:
        lo, hi = min(lo, tau), max(hi, tau)
    return lo, hi


def candidate_pairs(candidates: Iterable[Any]) -> list[tuple[str, float]]:
    """``(name, score)`` for candidates given as pairs or as objects with a name / person
    attribute and a score, best first as the service ordered them."""
    out: list[tuple[str, float]] = []
    for c in candidates:
        if isinstance(c, tuple | list):
            name, score = c[0], c[1]
        else:
            name = getattr(c, "name", None) or getattr(c, "person", None)
            score = c.score
        out.append((str(getattr(name, "name", name)), float(score)))
    return out


def roc_points(genuine: np.ndarray, impostor: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC of similarity scores, accepting when ``score >= t``.

    ``genuine``: ``(G,)`` scores of same-person pairs; ``impostor``: ``(I,)`` of
    different-person pairs (both non-empty). Returns ``(far, tar, thresholds)``, each
    ``(M + 1,)`` float64: point 0 is ``t = +inf`` (accept nothing), then one point per
    distinct score in decreasing order (the last accepts everything).
    """
    g = np.asarray(genuine, dtype=np.float64).ravel()
    i = np.asarray(impostor, dtype=np.float64).ravel()
    if g.size == 0 or i.size == 0:
        raise ValueError("need at least one genuine and one impostor score")
    t = np.unique(np.concatenate([g, i]))[::-1]
    gs, is_ = np.sort(g), np.sort(i)
    tar = (g.size - np.searchsorted(gs, t, side="left")) / g.size
    far = (i.size - np.searchsorted(is_, t, side="left")) / i.size
    return np.r_[0.0, far], np.r_[0.0, tar], np.r_[np.inf, t]


def threshold_for_far(
    genuine: np.ndarray, impostor: np.ndarray, target_far: float
) -> tuple[float, float, float]:
    """The lowest score threshold whose FAR is ``<= target_far``: ``(tau, far, tar)``.

    When no score reaches the target (the top impostor is too high), τ is the next float
    above the largest score (accept nothing: FAR 0, TAR 0).
    """
    far, tar, thr = roc_points(genuine, impostor)
    ok = np.flatnonzero(far[1:] <= target_far)
    if ok.size == 0:
        return float(np.nextafter(thr[1], np.inf)), 0.0, 0.0
    k = int(ok[-1]) + 1
    return float(thr[k]), float(far[k]), float(tar[k])
