"""The decision rule, in one place: a comparison accepts when ``score >= threshold``.

Every score in faceapp is a similarity (higher = more alike, see :mod:`faceapp.nn.scoring`).
NumPy only, so that gallery-only commands decide without importing torch.
"""

from __future__ import annotations

import numpy as np

DISTANCE = "distance"
"""The cosine-similarity scorer's name (scores in [-1, 1]); the heads give probabilities."""


def accepts(score: float, threshold: float) -> bool:
    """Does similarity ``score`` accept at ``threshold``? ``score >= threshold``; a NaN score
    or threshold never accepts."""
    return bool(score >= threshold)


def accepts_many(scores: np.ndarray, threshold: float) -> np.ndarray:
    """(N,) float scores -> (N,) bool, element-wise :func:`accepts`."""
    return np.asarray(scores) >= threshold
