"""Enrolment quality gate: is a detected face big, sharp and frontal enough to be a template?"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from faceapp.config import QualityConfig
from faceapp.types import Detection
from faceapp.vision.alignment import AlignmentTemplate, align_face

QUALITY_CROP_SIZE = 96
"""Sharpness is measured on a crop of this size in the ArcFace framing, whatever the model's
own crop: the gate's ``min_sharpness`` was tuned on such crops, and the Laplacian's variance
depends on the crop's scale (dlib's tighter 150-px chip of the same face is smoother)."""


@dataclass(frozen=True)
class FaceQuality:
    """Measured quality of one face and the verdict against a :class:`QualityConfig`.

    ``face_px``: face size in source pixels (larger side of the detector box);
    ``sharpness``: variance of the 4-neighbour Laplacian of the grey aligned crop;
    ``yaw``: signed horizontal offset of nose and mouth centre from the eye midline,
    relative to the eye distance (0 frontal, about ±0.5 near profile);
    ``reasons``: user-facing reasons for rejection (empty when ``ok``).
    """

    ok: bool
    reasons: tuple[str, ...]
    face_px: float
    sharpness: float
    yaw: float
    score: float

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "reasons": list(self.reasons),
            "face_px": round(self.face_px, 1),
            "sharpness": round(self.sharpness, 1),
            "yaw": round(self.yaw, 3),
            "score": round(self.score, 4),
        }


def laplacian_variance(crop: np.ndarray) -> float:
    """Variance of the discrete Laplacian of an (S, S, 3) uint8 RGB crop (grey-level)."""
    grey = crop.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    lap = grey[1:-1, :-2] + grey[1:-1, 2:] + grey[:-2, 1:-1] + grey[2:, 1:-1] - 4.0 * grey[1:-1, 1:-1]
    return float(lap.var())


def estimate_yaw(detection: Detection) -> float:
    """Signed yaw proxy from the 5 landmarks (see :class:`FaceQuality`), roll-invariant."""
    pts = detection.landmarks_array()
    left_eye, right_eye, nose, mouth_l, mouth_r = pts
    eye_vec = right_eye - left_eye
    eye_dist = float(np.hypot(*eye_vec))
    if eye_dist < 1e-6:
        return 1.0
    axis = eye_vec / eye_dist
    mid_eye = (left_eye + right_eye) / 2.0
    mid_mouth = (mouth_l + mouth_r) / 2.0
    nose_off = float((nose - mid_eye) @ axis)
    mouth_off = float((mid_mouth - mid_eye) @ axis)
    return (0.7 * nose_off + 0.3 * mouth_off) / eye_dist


def quality_crop(image: np.ndarray, detection: Detection) -> np.ndarray:
    """(96, 96, 3) uint8 ArcFace-framed crop of a detected face, on which sharpness is measured."""
    return align_face(image, detection, AlignmentTemplate.for_size(QUALITY_CROP_SIZE)).crop


def assess_quality(detection: Detection, crop: np.ndarray, config: QualityConfig) -> FaceQuality:
    """Measure a face and decide whether it passes the enrolment gate.

    Args:
        detection: the face in source-image coordinates.
        crop: (S, S, 3) uint8 aligned crop of that face; the thresholds hold for the crop of
            :func:`quality_crop` (96 px, ArcFace framing).
        config: minimum size / sharpness / detector score and maximum yaw.
    """
    face_px = max(detection.width, detection.height)
    sharp = laplacian_variance(crop)
    yaw = estimate_yaw(detection)
    reasons: list[str] = []
    if face_px < config.min_face_px:
        reasons.append(f"face too small ({face_px:.0f} px < {config.min_face_px:.0f} px): move closer")
    if sharp < config.min_sharpness:
        reasons.append(f"too blurred (sharpness {sharp:.0f} < {config.min_sharpness:.0f}): hold still")
    if abs(yaw) > config.max_yaw:
        reasons.append(f"not frontal (yaw {yaw:+.2f}, limit ±{config.max_yaw:.2f}): turn towards the camera")
    if detection.score < config.min_score:
        reasons.append(f"uncertain face (detector score {detection.score:.2f} < {config.min_score:.2f})")
    return FaceQuality(
        ok=not reasons,
        reasons=tuple(reasons),
        face_px=face_px,
        sharpness=sharp,
        yaw=yaw,
        score=detection.score,
    )
