"""What the services need of a face pipeline and of an analysed face, as typed Protocols.

:class:`~faceapp.nn.pipeline.FacePipeline` and :class:`~faceapp.nn.pipeline.FaceEmbedding`
satisfy them; so do the stand-ins of the tests (no ``getattr`` probing in the services).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from faceapp.types import AlignedFace, Detection, FaceImage

if TYPE_CHECKING:
    from faceapp.config import DetectorConfig
    from faceapp.vision.alignment import AlignmentTemplate
    from faceapp.vision.images import ImageInput
    from faceapp.vision.quality import FaceQuality


@runtime_checkable
class AnalysedFace(Protocol):
    """One analysed face: ``embedding`` (D,) float32 unit-norm, made by ``model_id``;
    ``face_image`` the model-independent picture a template keeps; ``quality`` its gate."""

    detection: Detection
    embedding: np.ndarray
    quality: FaceQuality
    model_id: str
    face_image: FaceImage


class Pipeline(Protocol):
    """Detector + aligner + encoder as the services use it.

    ``template``: the alignment template of the model's crops (``None``: the pipeline takes
    stored face pictures as they are, resized to ``input_size``).
    """

    model: Any
    """What :func:`faceapp.nn.scoring.scorers_for` reads (the loaded model with its heads)."""

    @property
    def model_id(self) -> str: ...

    @property
    def embedding_dim(self) -> int: ...

    @property
    def input_size(self) -> int: ...

    @property
    def template(self) -> AlignmentTemplate | None: ...

    def analyze(self, image: ImageInput) -> list[Any]:
        """Every face (:class:`AnalysedFace`) of an image, best detection first."""
        ...

    def detect(self, image: np.ndarray) -> list[Detection]: ...

    def align(self, image: np.ndarray, detections: list[Detection]) -> list[AlignedFace]: ...

    def embed_crops(self, crops: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 crops -> (N, D) float32 unit-norm embeddings."""
        ...


class LivePipeline(Pipeline, Protocol):
    """What the live loop needs on top: the detector's settings (device, stage thresholds)
    and the embedding of given detections (:meth:`FacePipeline.faces_from_detections`)."""

    @property
    def detector_config(self) -> DetectorConfig: ...

    def faces_from_detections(self, image: np.ndarray, detections: list[Detection]) -> list[Any]:
        """Align, embed (one batch) and assess the given detections (:class:`AnalysedFace`)."""
        ...
