"""Cohort score normalisation: adaptive symmetric s-norm ("AS-norm") of cosine similarities.

A raw cosine similarity means more for a face that resembles nobody than for one that resembles
many people. S-norm measures, for each side of a comparison, how that face scores against a
*cohort* (embeddings of people who are neither enrolled nor probed) and standardises the score
from both sides::

    s'(p, g) = ½ [ (s(p, g) − μ_g) / σ_g  +  (s(p, g) − μ_p) / σ_p ]

where ``μ_x``, ``σ_x`` are the mean and standard deviation of the ``top_k`` highest cosine
similarities between ``x`` and the cohort ("adaptive": only the cohort members nearest ``x``
count; ``top_k=None`` takes the whole cohort). The normalised score is symmetric in ``p`` and
``g``, has no fixed range (it is a sum of z-scores), and is still a similarity: higher = more
alike, decided with :func:`faceapp.nn.scoring.accepts` against a τ calibrated in the same space.

Pure NumPy (no torch): a gallery can keep each template's ``(μ_g, σ_g)`` from enrolment and
only a probe's statistics are computed per query (one ``(D,) @ (D, C)`` product).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from faceapp.errors import ModelError

COHORT_FORMAT = 1

DEFAULT_TOP_K = 50
"""Cohort members per side (chosen on LFW DevTrain identities, see models/MODEL_CARD.md)."""

MIN_STD = 1e-6
"""Floor of σ: a face whose top-k cohort scores are all equal gets this instead of 0."""


@dataclass(frozen=True)
class CohortStats:
    """Per-row cohort statistics: ``mean`` and ``std`` are (N,) float64."""

    mean: np.ndarray
    std: np.ndarray

    def __len__(self) -> int:
        return int(self.mean.shape[0])

    def take(self, rows: np.ndarray) -> CohortStats:
        """Statistics of the given rows (index array or boolean mask)."""
        return CohortStats(self.mean[rows], self.std[rows])


class Cohort:
    """A fixed set of cohort embeddings and the top-k statistics taken against it.

    Args:
        embeddings: (C, D) float, L2-normalised rows of cohort faces (no enrolled person's).
        top_k: cohort members per face whose scores give μ and σ (>= 2, <= C); ``None``: all.
    Raises:
        ValueError: an empty or non-finite cohort, or ``top_k`` out of range.
    """

    def __init__(self, embeddings: np.ndarray, top_k: int | None = DEFAULT_TOP_K) -> None:
        emb = np.asarray(embeddings, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[0] < 2:
            raise ValueError(f"a cohort needs (C, D) embeddings with C >= 2, got shape {emb.shape}")
        if not np.isfinite(emb).all():
            raise ValueError("cohort embeddings contain NaN or inf")
        k = emb.shape[0] if top_k is None else int(top_k)
        if not 2 <= k <= emb.shape[0]:
            raise ValueError(f"top_k must be in [2, {emb.shape[0]}] (the cohort size), got {top_k}")
        self.embeddings = np.ascontiguousarray(emb)
        self.top_k = k

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def save(self, path: str | os.PathLike[str], model_id: str, source: dict[str, Any]) -> Path:
        """Write the cohort (float32 embeddings, top-k, the model that made them, ``source``:
        JSON-able provenance) as an ``.npz``, atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"format": COHORT_FORMAT, "model_id": model_id, "top_k": self.top_k, "source": source}
        tmp = path.with_name(path.name + ".partial.npz")
        np.savez(tmp, embeddings=self.embeddings, meta=np.asarray(json.dumps(meta, sort_keys=True)))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str], model_id: str) -> tuple[Cohort, dict[str, Any]]:
        """Read :meth:`save`'s file; returns the cohort and its metadata.

        Raises:
            ModelError: unreadable or malformed file, or made by another model than ``model_id``
                (its embeddings would not be comparable).
        """
        try:
            with np.load(path, allow_pickle=False) as z:
                emb = np.asarray(z["embeddings"])
                meta = json.loads(str(z["meta"]))
            if meta.get("format") != COHORT_FORMAT:
                raise ValueError(f"unknown cohort format {meta.get('format')!r}")
            cohort = cls(emb, top_k=int(meta["top_k"]))
        except (OSError, KeyError, TypeError, ValueError) as err:
            raise ModelError(f"{path}: not a faceapp cohort file ({err})") from None
        if meta.get("model_id") != model_id:
            raise ModelError(
                f"{path}: cohort made by model {meta.get('model_id')!r}, not {model_id!r}; "
                "make it again for this model"
            )
        return cohort, meta

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    def stats(self, x: np.ndarray, chunk: int = 1024) -> CohortStats:
        """μ and σ of the ``top_k`` highest cosine similarities of each row of ``x``.

        Args:
            x: (N, D) or (D,) float, L2-normalised.
            chunk: rows scored at once (bounds memory to ``chunk * C`` floats).
        Returns:
            :class:`CohortStats` of N rows (σ floored at :data:`MIN_STD`).
        """
        xs = np.atleast_2d(np.asarray(x, dtype=np.float32))
        if xs.ndim != 2 or xs.shape[1] != self.dim:
            raise ValueError(f"expected (N, {self.dim}) embeddings, got shape {np.shape(x)}")
        means = np.empty(xs.shape[0], dtype=np.float64)
        stds = np.empty(xs.shape[0], dtype=np.float64)
        k, c = self.top_k, len(self)
        for start in range(0, xs.shape[0], chunk):
            s = (xs[start : start + chunk] @ self.embeddings.T).astype(np.float64)
            if k < c:
                s = np.partition(s, c - k, axis=1)[:, c - k :]  # the k highest, any order
            means[start : start + s.shape[0]] = s.mean(axis=1)
            stds[start : start + s.shape[0]] = s.std(axis=1)
        return CohortStats(means, np.maximum(stds, MIN_STD))


def s_norm_matrix(scores: np.ndarray, probes: CohortStats, gallery: CohortStats) -> np.ndarray:
    """Normalise a (P, G) score matrix: entry (i, j) with probe i's and template j's statistics.

    Returns (P, G) float64.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape != (len(probes), len(gallery)):
        raise ValueError(f"scores of shape {s.shape} for {len(probes)} probes and {len(gallery)} templates")
    zg = (s - gallery.mean[None, :]) / gallery.std[None, :]
    zp = (s - probes.mean[:, None]) / probes.std[:, None]
    return 0.5 * (zg + zp)


def s_norm_pairs(scores: np.ndarray, a: CohortStats, b: CohortStats) -> np.ndarray:
    """Normalise (N,) scores of row-wise pairs (a[i], b[i]). Returns (N,) float64."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or not s.shape[0] == len(a) == len(b):
        raise ValueError(f"{s.shape} scores for {len(a)} and {len(b)} statistics")
    return 0.5 * ((s - a.mean) / a.std + (s - b.mean) / b.std)
