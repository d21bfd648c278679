"""5-point similarity alignment (Umeyama least squares) onto a canonical landmark template.

Coordinates are continuous image coordinates in which pixel (i, j) covers
[j, j+1) x [i, i+1) and its centre is (j + 0.5, i + 0.5). MTCNN landmarks and the
template are given in pixel-index coordinates (centre of pixel j is x = j); the
conversion happens here, once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from faceapp.types import AlignedFace, Detection

# The widely used 112x112 five-point template (eyes, nose tip, mouth corners) of the
# ArcFace/InsightFace recognition models, in pixel-index coordinates.
_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)

# Where MTCNN's 5 points land in dlib's 150x150 face chip (``get_face_chip(img, shape, 150,
# padding=0.25)``), pixel-index coordinates; a least-squares similarity onto these points
# reproduces dlib's framing (mean over LFW DevTrain images, measured for issue 11).
_TEMPLATE_DLIB_150 = np.array(
    [
        [47.73, 46.24],
        [102.18, 45.82],
        [73.55, 78.10],
        [51.65, 106.09],
        [99.11, 105.70],
    ],
    dtype=np.float64,
)


@dataclass(frozen=True)
class AlignmentTemplate:
    """Where the 5 landmarks land in an aligned crop of ``size`` x ``size`` pixels.

    ``points`` is (5, 2) float64 in pixel-index coordinates of the crop.
    """

    size: int
    points: tuple[tuple[float, float], ...]
    name: str = "arcface112"

    @classmethod
    def for_size(cls, size: int) -> AlignmentTemplate:
        """The ArcFace template scaled to a ``size``-pixel square crop."""
        if size < 16:
            raise ValueError(f"crop size {size} is too small (>= 16)")
        pts = (_TEMPLATE_112 + 0.5) * (size / 112.0) - 0.5
        return cls(size=size, points=tuple((float(x), float(y)) for x, y in pts))

    @classmethod
    def dlib150(cls) -> AlignmentTemplate:
        """dlib's 150x150 face-chip framing (padding 0.25), for the imported dlib ResNet."""
        points = tuple((float(x), float(y)) for x, y in _TEMPLATE_DLIB_150)
        return cls(size=150, points=points, name="dlib150")

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> AlignmentTemplate:
        """Inverse of :meth:`to_dict` (raises ValueError on a malformed template)."""
        try:
            size = int(d["size"])  # type: ignore[call-overload]
            pts = np.asarray(d["points"], dtype=np.float64)
            name = str(d.get("name", "custom"))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"malformed alignment template ({err})") from None
        if pts.shape != (5, 2) or size < 16 or not np.isfinite(pts).all():
            raise ValueError(f"malformed alignment template: size {size}, points of shape {pts.shape}")
        return cls(size=size, points=tuple((float(x), float(y)) for x, y in pts), name=name)

    def array(self) -> np.ndarray:
        """(5, 2) float64 template points."""
        return np.asarray(self.points, dtype=np.float64)

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "size": self.size, "points": [list(p) for p in self.points]}


def umeyama_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (rotation, uniform scale, translation), no reflection.

    Args:
        src: (N, 2) float points, N >= 2.
        dst: (N, 2) float points.
    Returns:
        (2, 3) float64 matrix M with dst ≈ M[:, :2] @ src + M[:, 2].
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or src.shape[0] < 2:
        raise ValueError(f"need two (N, 2) point sets with N >= 2, got {src.shape}, {dst.shape}")
    n = src.shape[0]
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    s_c, d_c = src - mu_s, dst - mu_d
    var_s = (s_c**2).sum() / n
    if var_s <= 1e-12:
        raise ValueError("source points are degenerate (all at one place)")
    cov = d_c.T @ s_c / n
    u, sing, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1.0
    rot = u @ np.diag(sign) @ vt
    scale = float((sing * sign).sum() / var_s)
    trans = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, trans[:, None]])


def apply_transform(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map (N, 2) points through a (2, 3) affine matrix -> (N, 2) float64."""
    pts = np.asarray(points, dtype=np.float64)
    return pts @ matrix[:, :2].T + matrix[:, 2]


def estimate_alignment(landmarks: np.ndarray, template: AlignmentTemplate) -> np.ndarray:
    """(2, 3) float64 transform from source pixel-index coords to crop pixel-index coords."""
    return umeyama_similarity(np.asarray(landmarks, dtype=np.float64), template.array())


def warp(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Warp (H, W, 3) uint8 with a (2, 3) source->crop matrix into a (size, size, 3) uint8 crop.

    Bilinear sampling; pixels outside the source are black.
    """
    # Pixel-index -> continuous coordinates on both sides: x_c = x_i + 0.5.
    a = matrix[:, :2]
    t = matrix[:, 2] + 0.5 - a @ np.array([0.5, 0.5])
    inv_a = np.linalg.inv(a)
    inv_t = -inv_a @ t
    coeffs = (inv_a[0, 0], inv_a[0, 1], inv_t[0], inv_a[1, 0], inv_a[1, 1], inv_t[1])
    pil = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8), "RGB")
    out = pil.transform((size, size), Image.AFFINE, coeffs, resample=Image.BILINEAR, fillcolor=0)
    return np.asarray(out, dtype=np.uint8)


def align_face(image: np.ndarray, detection: Detection, template: AlignmentTemplate) -> AlignedFace:
    """Aligned crop of one detected face.

    Args:
        image: (H, W, 3) uint8 RGB, the image the detection was made on.
        detection: its 5 landmarks drive the transform.
        template: target landmark positions and crop size.
    Returns:
        :class:`AlignedFace` with a (S, S, 3) uint8 crop, S = ``template.size``.
    """
    matrix = estimate_alignment(detection.landmarks_array(), template)
    crop = warp(image, matrix, template.size)
    return AlignedFace(crop=crop, detection=detection, matrix=matrix)
