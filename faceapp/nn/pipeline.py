"""The face pipeline: image -> detections -> aligned crops -> embeddings (+ quality)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np

from faceapp.config import DetectorConfig, QualityConfig
from faceapp.nn.checkpoint import LoadedModel, load_checkpoint
from faceapp.types import AlignedFace, Detection, FaceImage
from faceapp.vision.alignment import AlignmentTemplate, align_face
from faceapp.vision.detection import FaceDetector
from faceapp.vision.face_image import extract_face_image
from faceapp.vision.images import ImageInput, load_image
from faceapp.vision.quality import QUALITY_CROP_SIZE, FaceQuality, assess_quality, quality_crop

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class FaceEmbedding:
    """One analysed face: where it is, its aligned crop, its embedding and its quality.

    ``embedding`` is (D,) float32 with unit L2 norm, made by model ``model_id``;
    ``face_image`` the model-independent picture a gallery template keeps (any later model's
    crop is derived from it, see :mod:`faceapp.vision.face_image`).
    """

    detection: Detection
    aligned: AlignedFace
    embedding: np.ndarray
    quality: FaceQuality
    model_id: str
    face_image: FaceImage


class FacePipeline:
    """Detector + aligner + encoder, built from explicit parts (nothing global).

    Args:
        detector: MTCNN wrapper.
        model: encoder checkpoint (its input size fixes the alignment template).
        quality: enrolment quality gate settings (measured for every face).
    """

    def __init__(
        self, detector: FaceDetector, model: LoadedModel, quality: QualityConfig = QualityConfig()
    ) -> None:
        self.detector = detector
        self.model = model
        self.quality = quality
        self.template = model.template

    @classmethod
    def from_paths(
        cls,
        model_path: str | os.PathLike[str],
        device: str = "cpu",
        detector_config: DetectorConfig = DetectorConfig(),
        quality: QualityConfig = QualityConfig(),
    ) -> FacePipeline:
        """Load the checkpoint and MTCNN explicitly (raises ModelError on a bad file)."""
        model = load_checkpoint(model_path, device=device)
        det_cfg = (
            detector_config if detector_config.device == device else _with_device(detector_config, device)
        )
        return cls(FaceDetector(det_cfg), model, quality)

    @property
    def model_id(self) -> str:
        return self.model.model_id

    @property
    def embedding_dim(self) -> int:
        return self.model.embedding_dim

    @property
    def detector_config(self) -> DetectorConfig:
        """The detector's settings (device, stage thresholds, minimum face)."""
        return self.detector.config

    @property
    def input_size(self) -> int:
        """Side S of the model's (S, S, 3) input crops."""
        return self.model.encoder.input_size

    def detect(self, image: np.ndarray) -> list[Detection]:
        """(H, W, 3) uint8 RGB -> detections sorted by score ([] when none)."""
        return self.detector.detect(image)

    def align(self, image: np.ndarray, detections: list[Detection]) -> list[AlignedFace]:
        return [align_face(image, d, self.template) for d in detections]

    def embed_crops(self, crops: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 aligned crops -> (N, D) float32 unit-norm embeddings."""
        return self.model.encoder.embed(crops)

    def faces_from_detections(self, image: np.ndarray, detections: list[Detection]) -> list[FaceEmbedding]:
        """Align, embed (one batch) and assess the given detections of ``image``."""
        if not detections:
            return []
        aligned = self.align(image, detections)
        emb = self.embed_crops(np.stack([a.crop for a in aligned]))
        return [
            FaceEmbedding(
                detection=d,
                aligned=a,
                embedding=e,
                quality=assess_quality(d, _quality_crop(image, d, a, self.template), self.quality),
                model_id=self.model_id,
                face_image=extract_face_image(image, d),
            )
            for d, a, e in zip(detections, aligned, emb, strict=True)
        ]

    def analyze(self, image: ImageInput) -> list[FaceEmbedding]:
        """Every face in an image, sorted by detection score ([] when there is none).

        Args:
            image: a path / bytes / PIL image, or an (H, W, 3) uint8 RGB frame.
        Raises:
            InvalidImage: the input cannot be decoded.
        """
        rgb = image if _is_rgb_frame(image) else load_image(image)
        return self.faces_from_detections(rgb, self.detect(rgb))  # type: ignore[arg-type]


def _quality_crop(
    image: np.ndarray, d: Detection, aligned: AlignedFace, template: AlignmentTemplate
) -> np.ndarray:
    """The crop the quality gate measures: the model's own when it is the 96-px ArcFace one."""
    if template == AlignmentTemplate.for_size(QUALITY_CROP_SIZE):
        return aligned.crop
    return quality_crop(image, d)


def _is_rgb_frame(x: object) -> bool:
    return isinstance(x, np.ndarray) and x.ndim == 3 and x.shape[2] == 3 and x.dtype == np.uint8


def _with_device(cfg: DetectorConfig, device: str) -> DetectorConfig:
    from dataclasses import replace

    return replace(cfg, device=device)
