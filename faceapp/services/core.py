"""The parts every use case of a service works with, bundled: gallery, model, τ, index.

A :class:`Core` is built once by :class:`~faceapp.services.FaceService` and handed to the
use-case modules (:mod:`~faceapp.services.enrollment`, :mod:`~faceapp.services.decisions`,
...), which are functions of it. Nothing here takes the service lock: the facade does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sqlalchemy.orm import Session

from faceapp.errors import ModelError, ModelMismatch
from faceapp.nn.open_set import RAW_SCORES, ScoreNormaliser
from faceapp.nn.scoring import DISTANCE
from faceapp.services.index_cache import IndexCache
from faceapp.services.protocols import AnalysedFace, Pipeline
from faceapp.services.server_index import ServerIndex
from faceapp.services.thresholds import ThresholdPolicy
from faceapp.services.unit_of_work import UnitOfWork
from faceapp.vision.images import ImageInput, load_image


@dataclass
class Core:
    """``pipeline``/``thresholds``/``cache`` exist together (a service with a model) or not at
    all (gallery-only use: listing, renaming, export...); ``server``: 1:K runs inside
    PostgreSQL instead of ``cache``; ``margin``: recognition's ambiguity margin."""

    uow: UnitOfWork
    pipeline_or_none: Pipeline | None
    thresholds_or_none: ThresholdPolicy | None
    cache_or_none: IndexCache | None
    server: ServerIndex | None
    margin: float

    @property
    def pipeline(self) -> Pipeline:
        if self.pipeline_or_none is None:
            raise ModelError("no face model loaded (open the service with a model)")
        return self.pipeline_or_none

    @property
    def model_id(self) -> str:
        return self.pipeline.model_id

    @property
    def thresholds(self) -> ThresholdPolicy:
        if self.thresholds_or_none is None:
            raise ModelError("no face model loaded (open the service with a model)")
        return self.thresholds_or_none

    @property
    def cache(self) -> IndexCache:
        if self.cache_or_none is None:
            raise ModelError("no face model loaded (open the service with a model)")
        return self.cache_or_none

    @property
    def normaliser(self) -> ScoreNormaliser:
        """The model's score normaliser (1:1, 1:K and calibration of the cosine scorer all
        decide on it; :data:`~faceapp.nn.open_set.RAW_SCORES` for a model without one)."""
        return self.cache.normaliser

    def normaliser_for(self, scorer: str) -> ScoreNormaliser:
        """:attr:`normaliser` for the cosine scorer; raw scores for a trained head."""
        return self.normaliser if scorer == DISTANCE else RAW_SCORES

    def cache_is_current(self, session: Session) -> bool:
        """Is the index (if any) in step with the gallery just before a change?"""
        return self.cache_or_none is not None and self.cache_or_none.is_current(session)

    def embedding_of(self, face: AnalysedFace) -> np.ndarray:
        """The (D,) float32 embedding of a face made by the current model."""
        if face.model_id != self.model_id:
            raise ModelMismatch(
                f"this face was analysed by model {face.model_id}, the service uses "
                f"{self.model_id}; analyse it again")
        return np.asarray(face.embedding, dtype=np.float32).reshape(-1)


def drop_snapshots(core: Core) -> int:
    """After committed template changes, with or without a model loaded: the gallery's
    on-disk index snapshots deleted; returns how many."""
    if core.cache_or_none is not None:
        return core.cache_or_none.drop_snapshots()
    from faceapp.gallery.snapshot import remove_snapshots

    return remove_snapshots(core.uow.url)


def analyze(core: Core, image: ImageInput) -> list[AnalysedFace]:
    """Every face of an image (path, bytes, PIL image or RGB (H, W, 3) uint8 frame)."""
    return list(core.pipeline.analyze(load_image(image)))


def face_area(face: AnalysedFace) -> float:
    return float(face.detection.area)


def quality_dict(face: AnalysedFace) -> dict[str, object]:
    return dict(face.quality.to_dict())


def quality_reasons(face: AnalysedFace) -> tuple[str, ...]:
    """Why ``face`` fails the enrolment quality gate (``()``: it passes)."""
    q = face.quality
    return () if q.ok else (tuple(q.reasons) or ("quality gate",))
