"""Passive presentation-attack cues: what a printed photo or a replaying screen shows that a
live face does not. Pure numpy, no model.

Per frame (:func:`frame_cues`, on the native-resolution face region and its surroundings):

* ``hf_ratio``: share of the face's spectral energy above 0.25 cycles/pixel (a screen's
  pixel grid and moiré add fine-scale energy; a print's paper and a re-filmed screen's blur
  remove it, so both directions matter to the combined score);
* ``hf_peak``: log of the strongest high-frequency spectral peak over the band's median
  (moiré is a few sharp peaks, camera noise is flat);
* ``dynamic_range``: 1st-99th percentile spread of the face's grey levels / 255 (prints and
  re-filmed screens compress it);
* ``chroma``: mean (max - min) of the face's RGB / 255 (screens and prints shift saturation);
* ``sharpness``: log ratio of the Laplacian variance of the face to that of the whole frame
  (a live face is in focus with its scene; a photo's face is as flat as the sheet);
* ``edge``: log of the strongest straight horizontal / vertical gradient line next to the
  face over the median line (a bezel or a sheet edge is one long straight edge).

Over time (:func:`planar_residual`): a photo, even tilted, moves as a plane, so the image
motion of its five landmarks is a homography. Fitted exactly on the four nearly coplanar
points (eyes, mouth corners), the homography predicts where a flat nose would be; a real
nose stands ~0.55 eye distances out of that plane and leaves a parallax residual as soon
as the head rotates.
"""

from __future__ import annotations

import math
from dataclasses import astuple, dataclass, fields

import numpy as np

_GREY = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_MAX_SIDE = 192  # face regions larger than this are block-averaged down (bounds the FFT cost)


@dataclass(frozen=True)
class FrameCues:
    """Per-frame passive cues of one face (see the module docstring); all finite floats."""

    hf_ratio: float
    hf_peak: float
    dynamic_range: float
    chroma: float
    sharpness: float
    edge: float

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def as_array(self) -> np.ndarray:
        """(6,) float64 in :meth:`names` order."""
        return np.asarray(astuple(self), dtype=np.float64)


def _clamp_box(box: tuple[float, float, float, float], w: int, h: int) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = box
    return max(0, math.floor(x1)), max(0, math.floor(y1)), min(w, math.ceil(x2)), min(h, math.ceil(y2))


def _laplacian_var(grey: np.ndarray) -> float:
    if grey.shape[0] < 3 or grey.shape[1] < 3:
        return 0.0
    lap = grey[1:-1, :-2] + grey[1:-1, 2:] + grey[:-2, 1:-1] + grey[2:, 1:-1] - 4.0 * grey[1:-1, 1:-1]
    return float(lap.var())


def _block_reduce(grey: np.ndarray, max_side: int) -> np.ndarray:
    k = max(1, math.ceil(max(grey.shape) / max_side))
    if k == 1:
        return grey
    h, w = (grey.shape[0] // k) * k, (grey.shape[1] // k) * k
    # sums over the last axis first: contiguous, several times faster than .mean(axis=(1, 3))
    return grey[:h, :w].reshape(h // k, k, w // k, k).sum(axis=3).sum(axis=1) / (k * k)


def spectrum_cues(grey: np.ndarray) -> tuple[float, float]:
    """(hf_ratio, hf_peak) of a grey patch.

    Args:
        grey: (H, W) float array, H, W >= 8.
    Returns:
        ``hf_ratio``: energy at radial frequency > 0.25 cycles/px over energy > 0.02
        (the DC neighbourhood excluded); ``hf_peak``: log(max / median) of the power over
        0.15-0.5 cycles/px.
    """
    g = np.asarray(grey, dtype=np.float64)
    h, w = g.shape
    win = np.outer(np.hanning(h), np.hanning(w))
    power = np.abs(np.fft.fft2((g - g.mean()) * win)) ** 2
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    r = np.sqrt(fx**2 + fy**2)
    total = power[r > 0.02].sum()
    hf = power[r > 0.25].sum()
    band = power[(r >= 0.15) & (r <= 0.5)]
    ratio = float(hf / total) if total > 0 else 0.0
    med = float(np.median(band)) if band.size else 0.0
    peak = float(np.log((band.max() + 1e-9) / (med + 1e-9))) if band.size else 0.0
    return ratio, peak


def _line_peak(grad: np.ndarray, axis: int, exclude: tuple[int, int]) -> float:
    """Strongest mean |gradient| line along ``axis`` outside ``exclude`` (index range)."""
    lines = np.abs(grad).mean(axis=axis)
    if lines.size == 0:
        return 0.0
    med = float(np.median(lines)) + 1e-6
    keep = np.ones(lines.size, dtype=bool)
    keep[max(0, exclude[0]) : max(0, exclude[1])] = False
    if not keep.any():
        return 0.0
    return float(lines[keep].max() / med)


def frame_cues(frame: np.ndarray, box: tuple[float, float, float, float]) -> FrameCues:
    """Passive cues of the face in ``box``.

    Args:
        frame: (H, W, 3) uint8 RGB.
        box: the face's (x1, y1, x2, y2) in ``frame`` pixels (MTCNN's box).
    Returns:
        :class:`FrameCues`.
    Raises:
        ValueError: the box covers fewer than 8×8 pixels of the frame.
    """
    h, w = frame.shape[:2]
    x1, y1, x2, y2 = _clamp_box(box, w, h)
    if x2 - x1 < 8 or y2 - y1 < 8:
        raise ValueError(f"face box {box} covers too little of the {w}x{h} frame")
    bw, bh = x2 - x1, y2 - y1
    # inner face (no hair, no background): the central 70 % of the box
    ix1, iy1 = x1 + int(0.15 * bw), y1 + int(0.15 * bh)
    ix2, iy2 = x2 - int(0.15 * bw), y2 - int(0.15 * bh)
    face_u8 = frame[iy1:iy2, ix1:ix2]
    face = face_u8.astype(np.float32) @ _GREY
    small = _block_reduce(face, _MAX_SIDE)
    hf_ratio, hf_peak = spectrum_cues(small)
    lo, hi = np.percentile(face, [1, 99])
    dyn = float(hi - lo) / 255.0
    # on the uint8 pixels (exact: max - min of integers), cheaper than on floats
    chroma = float((face_u8.max(axis=2) - face_u8.min(axis=2)).mean()) / 255.0
    # the whole scene at the same scale as the face patch, for the sharpness ratio
    k = max(1, math.ceil(max(face.shape) / _MAX_SIDE))
    scene = frame[::k, ::k].astype(np.float32) @ _GREY
    sharp = math.log((_laplacian_var(small) + 1.0) / (_laplacian_var(scene) + 1.0))
    # surroundings: the box grown 2.5x, for bezel / sheet edges
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    cx1, cy1, cx2, cy2 = _clamp_box((cx - 1.25 * bw, cy - 1.25 * bh, cx + 1.25 * bw, cy + 1.25 * bh), w, h)
    ctx = frame[cy1:cy2, cx1:cx2].astype(np.float32) @ _GREY
    kc = max(1, math.ceil(max(ctx.shape) / (2 * _MAX_SIDE)))
    ctx = _block_reduce(ctx, 2 * _MAX_SIDE)
    gy = np.diff(ctx, axis=0)
    gx = np.diff(ctx, axis=1)
    rows = _line_peak(gy, 1, ((y1 - cy1) // kc, (y2 - cy1) // kc))
    cols = _line_peak(gx, 0, ((x1 - cx1) // kc, (x2 - cx1) // kc))
    edge = math.log(max(rows, cols, 1e-6))
    return FrameCues(hf_ratio, hf_peak, dyn, chroma, sharp, edge)


# ---------------------------------------------------------------------------- planar motion


def fit_homography(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares homography (normalised DLT, Hartley & Zisserman alg. 4.2).

    Args:
        src: (N, 2) float points, N >= 4, not all collinear.
        dst: (N, 2) float points.
    Returns:
        (3, 3) float64 H with ``dst ~ H @ [src, 1]`` and ``H[2, 2] == 1`` (exact for N = 4
        points in general position).
    Raises:
        ValueError: fewer than 4 points or a degenerate configuration.
    """
    s = np.asarray(src, dtype=np.float64)
    d = np.asarray(dst, dtype=np.float64)
    if s.shape != d.shape or s.ndim != 2 or s.shape[1] != 2 or s.shape[0] < 4:
        raise ValueError(f"need two (N, 2) point sets with N >= 4, got {s.shape}, {d.shape}")

    def normaliser(p: np.ndarray) -> np.ndarray:
        mu = p.mean(axis=0)
        spread = np.sqrt(((p - mu) ** 2).sum(axis=1)).mean()
        if spread < 1e-12:
            raise ValueError("points are degenerate (all at one place)")
        k = math.sqrt(2.0) / spread
        return np.array([[k, 0, -k * mu[0]], [0, k, -k * mu[1]], [0, 0, 1]])

    ts, td = normaliser(s), normaliser(d)
    sh = np.c_[s, np.ones(len(s))] @ ts.T
    dh = np.c_[d, np.ones(len(d))] @ td.T
    rows = []
    for (x, y, _), (u, v, _) in zip(sh, dh, strict=True):
        rows.append([-x, -y, -1, 0, 0, 0, u * x, u * y, u])
        rows.append([0, 0, 0, -x, -y, -1, v * x, v * y, v])
    a = np.asarray(rows)
    _, sing, vt = np.linalg.svd(a)
    if sing.size >= 8 and sing[7] < 1e-10 * sing[0]:
        raise ValueError("points are degenerate (collinear)")
    hn = vt[-1].reshape(3, 3)
    hmat = np.linalg.inv(td) @ hn @ ts
    if abs(hmat[2, 2]) < 1e-12:
        raise ValueError("degenerate homography")
    return hmat / hmat[2, 2]


def apply_homography(hmat: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(N, 2) points through a (3, 3) homography -> (N, 2) float64."""
    p = np.c_[np.asarray(points, dtype=np.float64), np.ones(len(points))] @ np.asarray(hmat).T
    return p[:, :2] / p[:, 2:3]


_PLANE = [0, 1, 3, 4]  # eyes and mouth corners: nearly coplanar on a face
_NOSE = 2


def nose_parallax(ref: np.ndarray, cur: np.ndarray) -> float:
    """How far the nose moved off the plane of eyes and mouth between two frames.

    Args:
        ref, cur: (5, 2) landmarks of the same face in two frames.
    Returns:
        |nose(cur) - H(nose(ref))| / eye distance in ``cur``, where H is the homography
        that maps the four planar points of ``ref`` onto those of ``cur``; 0 for a flat
        (printed) face up to landmark noise; NaN when the points are degenerate.
    """
    r = np.asarray(ref, dtype=np.float64)
    c = np.asarray(cur, dtype=np.float64)
    try:
        hmat = fit_homography(r[_PLANE], c[_PLANE])
    except (ValueError, np.linalg.LinAlgError):
        return math.nan
    pred = apply_homography(hmat, r[[_NOSE]])[0]
    eye = float(np.hypot(*(c[1] - c[0])))
    if eye < 1e-6 or not np.all(np.isfinite(pred)):
        return math.nan
    return float(np.hypot(*(c[_NOSE] - pred)) / eye)


def planar_residual(landmarks: np.ndarray, quantile: float = 0.9) -> float:
    """Non-planarity of a face's motion over a sequence.

    Args:
        landmarks: (T, 5, 2) landmarks of one tracked face (T >= 2; rows with NaN skipped).
        quantile: of the pairwise parallaxes.
    Returns:
        The ``quantile`` of :func:`nose_parallax` over all frame pairs (eye distances);
        0.0 for fewer than two valid frames (no motion seen: nothing to measure).
    """
    lm = np.asarray(landmarks, dtype=np.float64).reshape(-1, 5, 2)
    lm = lm[np.all(np.isfinite(lm), axis=(1, 2))]
    vals = [nose_parallax(lm[i], lm[j]) for i in range(len(lm)) for j in range(i + 1, len(lm))]
    vals = [v for v in vals if math.isfinite(v)]
    return float(np.quantile(vals, quantile)) if vals else 0.0

