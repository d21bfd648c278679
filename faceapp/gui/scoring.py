"""Score handling of the GUI: accept / reject, fusing a window, ROC of a score set.

The services report every score as a *similarity* (higher = more alike); whether a score
passes τ is decided by the services' one rule (:func:`faceapp.services.thresholds.accepts`,
re-exported here), and τ itself is the open service's (``AppContext.threshold``). The ROC
and the τ for a target FAR are the services' too (:mod:`faceapp.services.calibration`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

import numpy as np

from faceapp.services.thresholds import DISTANCE, accepts

__all__ = ["DISTANCE", "ScoreWindow", "accepts", "candidate_pairs", "score_range"]


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
