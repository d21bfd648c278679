"""5-point similarity alignment: Umeyama against brute force, the warp's pixel geometry, real faces."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from faceapp.types import Detection
from faceapp.vision.alignment import (
    AlignmentTemplate,
    align_face,
    apply_transform,
    umeyama_similarity,
    warp,
)
from faceapp.vision.detection import FaceDetector
from faceapp.vision.images import load_image

ARCFACE_112 = [
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
]


def _similarity(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a = math.radians(angle_deg)
    c, s = scale * math.cos(a), scale * math.sin(a)
    return np.array([[c, -s, tx], [s, c, ty]], dtype=np.float64)


def _brute_force_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least squares over (a, b, tx, ty) with M = [[a, -b, tx], [b, a, ty]], one row per coordinate."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(src.tolist(), dst.tolist(), strict=True):
        rows.append([x, -y, 1.0, 0.0])
        rhs.append(u)
        rows.append([y, x, 0.0, 1.0])
        rhs.append(v)
    (a, b, tx, ty), *_ = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)
    return np.array([[a, -b, tx], [b, a, ty]])


# ---------------------------------------------------------------- Umeyama


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_umeyama_recovers_a_known_similarity(dtype: type, seed: int) -> None:
    rng = np.random.default_rng(seed)
    known = _similarity(rng.uniform(-180, 180), rng.uniform(0.2, 5.0), *rng.uniform(-300, 300, 2))
    src = rng.uniform(0, 250, size=(5, 2))
    dst = src @ known[:, :2].T + known[:, 2]
    got = umeyama_similarity(src.astype(dtype), dst.astype(dtype))
    assert got.shape == (2, 3) and got.dtype == np.float64
    tol = 1e-9 if dtype == np.float64 else 2e-3
    np.testing.assert_allclose(got, known, atol=tol * max(1.0, np.abs(known).max()))


@pytest.mark.parametrize("seed", [3, 4, 5, 6])
def test_umeyama_equals_brute_force_least_squares_on_noisy_points(seed: int) -> None:
    rng = np.random.default_rng(seed)
    known = _similarity(rng.uniform(-60, 60), rng.uniform(0.5, 2.0), *rng.uniform(-50, 50, 2))
    src = rng.uniform(0, 200, size=(5, 2))
    dst = src @ known[:, :2].T + known[:, 2] + rng.normal(0, 3.0, size=(5, 2))
    got = umeyama_similarity(src, dst)
    np.testing.assert_allclose(got, _brute_force_similarity(src, dst), atol=1e-9)
    # its residual is minimal: any perturbed similarity fits worse
    best = np.sum((apply_transform(got, src) - dst) ** 2)
    for _ in range(20):
        other = got + rng.normal(0, 1e-3, size=(2, 3)) * np.array([[1, 1, 100], [1, 1, 100]])
        other[1, 1], other[1, 0] = other[0, 0], -other[0, 1]  # keep it a similarity
        assert np.sum((apply_transform(other, src) - dst) ** 2) >= best


def test_umeyama_never_reflects() -> None:
    src = np.array(ARCFACE_112)
    mirrored = src * np.array([-1.0, 1.0])  # a reflection cannot be a similarity without flipping
    m = umeyama_similarity(src, mirrored)
    assert np.linalg.det(m[:, :2]) > 0


def test_umeyama_rejects_degenerate_and_mismatched_points() -> None:
    with pytest.raises(ValueError, match="degenerate"):
        umeyama_similarity(np.ones((5, 2)), np.zeros((5, 2)))
    with pytest.raises(ValueError):
        umeyama_similarity(np.zeros((5, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError):
        umeyama_similarity(np.zeros((1, 2)), np.zeros((1, 2)))


def test_apply_transform_matches_a_loop() -> None:
    m = _similarity(30, 1.5, 10, -4)
    pts = np.random.default_rng(7).uniform(-20, 20, size=(6, 2))
    expected = [[m[0, 0] * x + m[0, 1] * y + m[0, 2], m[1, 0] * x + m[1, 1] * y + m[1, 2]] for x, y in pts]
    np.testing.assert_allclose(apply_transform(m, pts), expected, atol=1e-12)


# ---------------------------------------------------------------- template


def test_template_is_the_arcface_template_scaled_in_pixel_centres() -> None:
    np.testing.assert_allclose(AlignmentTemplate.for_size(112).array(), ARCFACE_112)
    t160 = AlignmentTemplate.for_size(160).array()
    for (x, y), (x0, y0) in zip(t160, ARCFACE_112, strict=True):
        assert x == pytest.approx((x0 + 0.5) * 160 / 112 - 0.5)
        assert y == pytest.approx((y0 + 0.5) * 160 / 112 - 0.5)
    with pytest.raises(ValueError):
        AlignmentTemplate.for_size(8)
    d = AlignmentTemplate.for_size(96).to_dict()
    assert d["size"] == 96 and len(d["points"]) == 5  # type: ignore[arg-type]


# ---------------------------------------------------------------- warp geometry


def test_warp_identity_and_integer_shift_copy_pixels_exactly() -> None:
    img = np.random.default_rng(8).integers(0, 256, size=(60, 70, 3), dtype=np.uint8)
    ident = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    assert np.array_equal(warp(img, ident, 50), img[:50, :50])
    shift = np.array([[1.0, 0.0, -7.0], [0.0, 1.0, -4.0]])  # crop pixel (x, y) = source (x + 7, y + 4)
    assert np.array_equal(warp(img, shift, 40), img[4:44, 7:47])
    outside = warp(img, np.array([[1.0, 0.0, 100.0], [0.0, 1.0, 100.0]]), 20)
    assert outside.shape == (20, 20, 3) and not outside.any()  # black outside the source


def _render_dots(points: np.ndarray, h: int, w: int, sigma: float) -> np.ndarray:
    """Gaussian dots centred on sub-pixel ``points`` (pixel-index coords), as (H, W, 3) uint8."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    acc = np.zeros((h, w))
    for px, py in points:
        acc += np.exp(-((xx - px) ** 2 + (yy - py) ** 2) / (2.0 * sigma**2))
    grey = np.round(np.clip(acc, 0.0, 1.0) * 255.0).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


def _centroid(crop: np.ndarray, x: float, y: float, radius: int) -> tuple[float, float]:
    grey = crop[:, :, 0].astype(np.float64)
    x0, x1 = max(0, round(x) - radius), min(crop.shape[1], round(x) + radius + 1)
    y0, y1 = max(0, round(y) - radius), min(crop.shape[0], round(y) + radius + 1)
    win = grey[y0:y1, x0:x1]
    yy, xx = np.mgrid[y0:y1, x0:x1]
    total = win.sum()
    assert total > 0, f"no dot near ({x:.1f}, {y:.1f})"
    return float((win * xx).sum() / total), float((win * yy).sum() / total)


@pytest.mark.parametrize(
    ("angle", "scale", "size"),
    [(25.0, 2.0, 112), (-40.0, 0.8, 112), (170.0, 1.3, 112), (10.0, 1.6, 160), (-5.0, 3.1, 96)],
)
def test_synthetic_landmarks_land_on_the_template(angle: float, scale: float, size: int) -> None:
    """Dots drawn where a rotated/scaled/shifted face has its landmarks end up on the template."""
    template = AlignmentTemplate.for_size(size)
    tpl = template.array()
    # crop -> source similarity: the "face" in the source is the template rotated, scaled, moved
    to_source = _similarity(angle, scale, 0.0, 0.0)
    placed = apply_transform(to_source, tpl)
    offset = np.array([231.37, 187.61]) - placed.mean(axis=0)  # sub-pixel shift, face near the centre
    landmarks = placed + offset
    source = _render_dots(landmarks, 380, 460, sigma=1.6 * scale)
    det = Detection(box=(0.0, 0.0, 1.0, 1.0), score=1.0, landmarks=tuple(map(tuple, landmarks)))  # type: ignore[arg-type]
    aligned = align_face(source, det, template)
    assert aligned.crop.shape == (size, size, 3) and aligned.crop.dtype == np.uint8
    assert aligned.detection is det
    np.testing.assert_allclose(apply_transform(aligned.matrix, landmarks), tpl, atol=1e-9)
    for tx, ty in tpl:
        cx, cy = _centroid(aligned.crop, tx, ty, radius=5)
        assert math.hypot(cx - tx, cy - ty) < 0.25, (tx, ty, cx, cy)  # well within the 1 px asked


# ---------------------------------------------------------------- real faces

BUSH = [f"George_W_Bush_{i:04d}.jpg" for i in range(1, 9)]
PAD = 32  # context around the crop so that MTCNN sees a whole head when re-detecting


def test_aligned_crops_of_one_person_have_fixed_eyes(detector: FaceDetector, lfw_dir: Path) -> None:
    """Align 8 photos of George W. Bush, re-detect the landmarks in each aligned crop.

    - the re-detected eyes sit where the transform says they went (warp geometry on real photos);
    - they sit on the template eyes, up to the least-squares residual of a 5-point fit on a
      non-frontal face (Bush_0004 is turned: about 6 px);
    - averaged over the photos, they are on the template within 2 px and spread little.
    """
    template = AlignmentTemplate.for_size(112)
    tpl_eyes = template.array()[:2]
    eyes = []
    for name in BUSH:
        image = load_image(lfw_dir / "George_W_Bush" / name)
        dets = detector.detect(image)
        assert len(dets) == 1, name
        aligned = align_face(image, dets[0], template)
        # the same transform shifted by PAD: the padded canvas holds the crop at [PAD:PAD+112]
        padded_matrix = aligned.matrix.copy()
        padded_matrix[:, 2] += PAD
        canvas = warp(image, padded_matrix, 112 + 2 * PAD)
        assert np.array_equal(canvas[PAD : PAD + 112, PAD : PAD + 112], aligned.crop)
        again = detector.detect(canvas)
        assert len(again) >= 1, name
        central = min(again, key=lambda d: np.abs(d.landmarks_array()[:2] - PAD - tpl_eyes).sum())
        found = central.landmarks_array()[:2] - PAD
        mapped = apply_transform(aligned.matrix, dets[0].landmarks_array()[:2])
        assert np.hypot(*(found - mapped).T).max() < 3.0, (name, found, mapped)
        assert np.hypot(*(found - tpl_eyes).T).max() < 8.0, (name, found)
        eyes.append(found)
    eyes_arr = np.array(eyes)  # (8, 2 eyes, xy)
    assert np.abs(eyes_arr.mean(axis=0) - tpl_eyes).max() < 2.0
    assert eyes_arr.std(axis=0).max() < 3.0
