"""Aggregating a person's enrolment embeddings into one identification template (pure NumPy).

``max`` (the gallery's rule today) keeps every template and scores a person by the best of
them; ``mean`` replaces them by their L2-normalised mean, which averages out pose, lighting and
detector noise of the individual samples.
"""

from __future__ import annotations

import numpy as np

AGGREGATES = ("max", "mean")


def mean_templates(embeddings: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One template per identity: the L2-normalised mean of its (unit) embeddings.

    Args:
        embeddings: (N, D) float, rows of unit L2 norm.
        labels: (N,) int identities.
    Returns:
        ``(ids, templates)``: (U,) sorted unique labels and (U, D) float32 unit rows.
    Raises:
        ValueError: shapes disagree, or an identity's embeddings sum to zero (opposite vectors).
    """
    emb = np.asarray(embeddings, dtype=np.float64)
    lab = np.asarray(labels)
    if emb.ndim != 2 or lab.shape != (emb.shape[0],):
        raise ValueError(f"embeddings {emb.shape} and labels {lab.shape} do not match")
    ids, inverse = np.unique(lab, return_inverse=True)
    sums = np.zeros((ids.size, emb.shape[1]))
    np.add.at(sums, inverse, emb)
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    if (norms <= 1e-12).any():
        raise ValueError("an identity's embeddings cancel out: no mean direction")
    return ids, (sums / norms).astype(np.float32)
