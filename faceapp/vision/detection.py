"""Face detection with 5 landmarks: facenet-pytorch's MTCNN behind a typed interface.

The MTCNN weights ship inside the facenet-pytorch wheel; they are loaded when a
:class:`FaceDetector` is constructed (explicitly, never at import).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from faceapp.config import DetectorConfig
from faceapp.errors import FaceappError
from faceapp.types import Detection
from faceapp.vision.images import resize_max_side

log = logging.getLogger(__name__)


class FaceDetector:
    """MTCNN (P-, R-, O-Net cascade) returning :class:`Detection` lists.

    Args:
        config: minimum face size, stage thresholds, pyramid factor, device and the
            longest side images are downscaled to before detection.
    """

    def __init__(self, config: DetectorConfig = DetectorConfig()) -> None:
        try:
            from facenet_pytorch.models.mtcnn import ONet, PNet, RNet
            from facenet_pytorch.models.utils.detect_face import detect_face
        except ImportError as err:  # pragma: no cover - depends on the installation
            raise FaceappError(f"facenet-pytorch is not installed ({err}); run `make setup`") from err
        self.config = config
        self.device = torch.device(config.device)
        self._detect_face = detect_face
        self._pnet = PNet().to(self.device).eval()
        self._rnet = RNet().to(self.device).eval()
        self._onet = ONet().to(self.device).eval()

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Faces in one RGB image.

        Args:
            image: (H, W, 3) uint8 RGB (see :func:`faceapp.vision.images.load_image`).
        Returns:
            Detections sorted by score, highest first; ``[]`` when there is no face.
        """
        return self.detect_batch([image])[0]

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """Faces in several images; images of the same size are run as one batch.

        Args:
            images: each (H, W, 3) uint8 RGB.
        Returns:
            One list per input image, in input order (each sorted by score).
        """
        results: list[list[Detection]] = [[] for _ in images]
        groups: dict[tuple[int, int], list[tuple[int, np.ndarray, float]]] = {}
        for i, img in enumerate(images):
            _check_rgb(img)
            small, factor = resize_max_side(img, self.config.max_side)
            groups.setdefault(small.shape[:2], []).append((i, small, factor))
        for (h, w), members in groups.items():
            if min(h, w) < 12 or min(h, w) * (12.0 / self.config.min_face_size) < 12.0:
                # smaller than MTCNN's 12-px receptive field or than min_face_size: no face
                # possible (and facenet-pytorch's detect_face fails on an empty scale pyramid)
                continue
            batch = np.stack([m[1] for m in members])
            with torch.inference_mode():
                boxes, points = self._detect_face(
                    batch,
                    self.config.min_face_size,
                    self._pnet,
                    self._rnet,
                    self._onet,
                    list(self.config.thresholds),
                    self.config.factor,
                    self.device,
                )
            for (index, _, factor), b, p in zip(members, boxes, points, strict=True):
                results[index] = _to_detections(
                    np.asarray(b, dtype=np.float64), np.asarray(p, dtype=np.float64), factor
                )
        return results


def _check_rgb(img: np.ndarray) -> None:
    if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        desc = f"{getattr(img, 'dtype', type(img).__name__)} {getattr(img, 'shape', '')}"
        raise TypeError(f"detector expects (H, W, 3) uint8 RGB arrays, got {desc}")


def _to_detections(boxes: np.ndarray, points: np.ndarray, factor: float) -> list[Detection]:
    if boxes.size == 0:
        return []
    out: list[Detection] = []
    for box, pts in zip(boxes.reshape(-1, 5), points.reshape(-1, 5, 2), strict=True):
        x1, y1, x2, y2, score = (float(v) for v in box)
        if not np.all(np.isfinite(box)) or not np.all(np.isfinite(pts)):
            continue
        landmarks = tuple((float(x) * factor, float(y) * factor) for x, y in pts)
        out.append(
            Detection(
                box=(x1 * factor, y1 * factor, x2 * factor, y2 * factor),
                score=score,
                landmarks=landmarks,  # type: ignore[arg-type]
            )
        )
    out.sort(key=lambda d: d.score, reverse=True)
    return out
