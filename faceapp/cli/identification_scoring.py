"""1:K scores as the app computes them, for ``faceapp evaluate-identification`` (its default).

The gallery becomes a :class:`~faceapp.gallery.matching.index.GalleryIndex` (one template per
row, a person per identity) and every probe goes through :meth:`GalleryIndex.identify` with the
model's open-set normaliser (``score_norm.npz`` beside the model, :func:`normaliser_for`; cosine
similarity without one): the cosine shortlist, the re-scoring and the order the app decides on.
The returned candidates' scores fill a (P, U) matrix; identities the search did not return get
a finite floor below every score (:func:`identification_report_from_scores` refuses infinities),
so they rank after every candidate and never decide.

It lives here, not in :mod:`faceapp.training.identification`, because training sits below the gallery
in the layers (``lint-imports``): evaluation takes it as an :class:`IdentificationScoring`.
"""

from __future__ import annotations

import logging

import numpy as np

from faceapp.nn.checkpoint import LoadedModel
from faceapp.nn.open_set import ScoreNormaliser
from faceapp.training.evaluation import app_normaliser

log = logging.getLogger(__name__)

IDENTIFY_K = 5
"""Candidates asked of :meth:`GalleryIndex.identify` per probe: the Recognize page's (the
services' ``recognize`` default ``top_k``), enough for rank-1, rank-5 and the open-set decision.
With a normaliser the search re-scores ``max(k, NORMALISED_SHORTLIST)`` people, the same short
list as every app path (all ask k <= 5)."""


class AppScoring:
    """:class:`~faceapp.training.identification.IdentificationScoring` through the app's 1:K search."""

    def __init__(self, model_id: str, normaliser: ScoreNormaliser, k: int = IDENTIFY_K) -> None:
        self.model_id = model_id
        self.normaliser = normaliser
        self.k = int(k)

    @classmethod
    def for_model(cls, model: LoadedModel) -> AppScoring:
        return cls(model.model_id, app_normaliser(model))

    @property
    def name(self) -> str:
        return self.normaliser.name

    @property
    def active(self) -> bool:
        return self.normaliser.active

    def scores(self, gallery: np.ndarray, gallery_labels: np.ndarray, probes: np.ndarray) -> np.ndarray:
        from faceapp.gallery.matching.index import GalleryIndex

        labels = np.asarray(gallery_labels, dtype=np.int64)
        ids = np.unique(labels)
        index = GalleryIndex.from_arrays(self.model_id, np.arange(labels.size), labels, gallery)
        results = index.identify(probes, model_id=self.model_id, threshold=0.0, k=self.k,
                                 normaliser=self.normaliser)
        out = np.full((len(results), ids.size), np.nan)
        for i, res in enumerate(results):
            cols = np.searchsorted(ids, [c.person_id for c in res.candidates])
            out[i, cols] = [c.score for c in res.candidates]
        found = np.isfinite(out)
        floor = float(out[found].min()) - 1.0 if found.any() else 0.0
        out[~found] = floor
        return out
