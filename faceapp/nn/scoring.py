"""Scorers: the one place that decides the direction of comparison.

Every score in faceapp is a *similarity*: higher means "more likely the same person".
Thresholds, ROC curves and decisions all use ``score >= threshold`` as "accept".

- ``distance`` scorer: cosine similarity of L2-normalised embeddings, in [−1, 1]
  (equivalently 1 − ½‖a − b‖²: the squared Euclidean distance mapped to a similarity).
- ``head_l1`` / ``head_chi2`` scorers: the binary verification head's probability, in (0, 1).

The rule itself is :func:`accepts` (one score) and :func:`accepts_all` (an array of scores):
every decision against τ in faceapp goes through them. A NaN score (or τ) never accepts.

Importing this module does not import torch (only :class:`HeadScorer` needs it, when it
scores), so the gallery and the services can use :data:`DISTANCE` and :func:`accepts`
without paying for torch at start-up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from faceapp.nn.checkpoint import LoadedModel
    from faceapp.nn.heads import BinaryVerificationHead

DISTANCE = "distance"
"""The cosine-similarity scorer (scores in [-1, 1]); the head scorers give probabilities."""


def accepts(score: float, threshold: float) -> bool:
    """The decision rule: a similarity ``score`` is accepted at τ = ``threshold`` when
    ``score >= threshold`` (a tie accepts). A NaN score or threshold never accepts."""
    return bool(score >= threshold)


def accepts_all(scores: np.ndarray, threshold: float | np.ndarray) -> np.ndarray:
    """:func:`accepts` element-wise: a bool array of ``scores >= threshold`` (broadcast);
    NaN never accepts (and raises no warning)."""
    with np.errstate(invalid="ignore"):
        return np.greater_equal(np.asarray(scores), threshold)


class Scorer(Protocol):
    """Scores probe/template pairs; higher = more alike."""

    name: str

    def score_matrix(self, probes: np.ndarray, gallery: np.ndarray) -> np.ndarray:
        """(P, D), (M, D) float32 -> (P, M) float32 scores."""
        ...

    def score_pairs(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """(N, D), (N, D) float32 -> (N,) float32 scores of row-wise pairs."""
        ...


class CosineScorer:
    """Cosine similarity of (already L2-normalised) embeddings."""

    name = DISTANCE

    def score_matrix(self, probes: np.ndarray, gallery: np.ndarray) -> np.ndarray:
        p = np.asarray(probes, dtype=np.float32)
        g = np.asarray(gallery, dtype=np.float32)
        return p @ g.T

    def score_pairs(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a = np.asarray(a, dtype=np.float32)
        b = np.asarray(b, dtype=np.float32)
        return np.einsum("nd,nd->n", a, b)


class HeadScorer:
    """Probability from a :class:`BinaryVerificationHead` (chunked over the gallery)."""

    def __init__(self, head: BinaryVerificationHead, chunk: int = 4096) -> None:
        self.head = head.eval()
        self.name = head.name
        self.chunk = chunk

    def score_pairs(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        import torch  # here, not at import: see the module docstring

        with torch.inference_mode():
            ta = torch.as_tensor(np.asarray(a, dtype=np.float32))
            tb = torch.as_tensor(np.asarray(b, dtype=np.float32))
            return self.head.probability(ta, tb).numpy().astype(np.float32)

    def score_matrix(self, probes: np.ndarray, gallery: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            p = torch.as_tensor(np.asarray(probes, dtype=np.float32))
            g = torch.as_tensor(np.asarray(gallery, dtype=np.float32))
            out = torch.empty((p.shape[0], g.shape[0]), dtype=torch.float32)
            for s in range(0, g.shape[0], self.chunk):
                gc = g[s : s + self.chunk]
                out[:, s : s + self.chunk] = self.head.probability(p[:, None, :], gc[None, :, :])
            return out.numpy()


def scorers_for(model: LoadedModel) -> dict[str, Scorer]:
    """Every scorer a model offers: ``distance`` plus one per trained head."""
    out: dict[str, Scorer] = {DISTANCE: CosineScorer()}
    for name, head in sorted(model.heads.items()):
        out[name] = HeadScorer(head)
    return out
