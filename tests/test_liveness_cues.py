"""Passive liveness cues, the homography / parallax geometry, the logistic fit and the
threshold rule, each against brute force or hand-made inputs; the blink cue on a real clip
with annotated blinks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from faceapp.errors import CalibrationError
from faceapp.liveness import attacks
from faceapp.liveness.calibrate import error_rates, threshold_at_apcer, threshold_min_acer
from faceapp.liveness.model import (
    FEATURES,
    PassiveModel,
    balanced_weights,
    fit_logistic,
    n_expanded,
    quadratic_expand,
    window_features,
)
from faceapp.vision.liveness.passive import (
    FrameCues,
    apply_homography,
    fit_homography,
    frame_cues,
    nose_parallax,
    planar_residual,
    spectrum_cues,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "liveness"


# ---------------------------------------------------------------------- geometry
def _random_h(rng: np.random.Generator) -> np.ndarray:
    h = np.eye(3) + rng.normal(0, 0.05, size=(3, 3))
    h[2, :2] = rng.normal(0, 1e-3, size=2)
    h[:2, 2] = rng.normal(0, 20, size=2)
    return h / h[2, 2]


@pytest.mark.parametrize("n", [4, 6, 10])
def test_fit_homography_recovers_a_known_homography(n: int) -> None:
    rng = np.random.default_rng(n)
    h = _random_h(rng)
    src = rng.uniform(0, 300, size=(n, 2))
    dst = apply_homography(h, src)
    est = fit_homography(src, dst)
    np.testing.assert_allclose(est, h, rtol=1e-6, atol=1e-8)
    # apply_homography against a plain loop
    for (x, y), (u, v) in zip(src, dst, strict=True):
        q = h @ np.array([x, y, 1.0])
        assert (u, v) == pytest.approx((q[0] / q[2], q[1] / q[2]))


def test_fit_homography_rejects_degenerate_points() -> None:
    line = np.array([[0, 0], [1, 1], [2, 2], [3, 3]], dtype=np.float64)
    with pytest.raises(ValueError):
        fit_homography(line, line)
    with pytest.raises(ValueError):
        fit_homography(np.zeros((3, 2)), np.zeros((3, 2)))


def _face3d() -> np.ndarray:
    # eyes, nose tip (0.55 eye distances in front), mouth corners; x right, y down, z to camera
    return np.array([[-0.5, 0, 0], [0.5, 0, 0], [0, 0.55, 0.55], [-0.4, 1.1, 0], [0.4, 1.1, 0]])


def _view(points3d: np.ndarray, yaw_deg: float, f: float = 8.0, scale: float = 100.0) -> np.ndarray:
    y = math.radians(yaw_deg)
    r = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    p = points3d @ r.T
    z = f - p[:, 2]  # perspective camera at distance f
    return np.c_[p[:, 0] * f / z, p[:, 1] * f / z] * scale + 200


def test_nose_parallax_is_zero_for_a_plane_and_large_for_a_turning_head() -> None:
    flat = _face3d().copy()
    flat[:, 2] = 0.0  # a photo of the face: the nose on the sheet
    for yaw in (10.0, 25.0):
        assert nose_parallax(_view(flat, 0), _view(flat, yaw)) == pytest.approx(0.0, abs=1e-9)
    real = [nose_parallax(_view(_face3d(), 0), _view(_face3d(), yaw)) for yaw in (10.0, 25.0)]
    assert real[0] > 0.05 and real[1] > real[0]
    assert math.isnan(nose_parallax(np.zeros((5, 2)), np.zeros((5, 2))))


def test_planar_residual_matches_a_loop_over_pairs() -> None:
    seq = np.stack([_view(_face3d(), y) for y in (0, 5, 12, 20, 30)])
    seq = seq + np.random.default_rng(0).normal(0, 0.3, size=seq.shape)
    vals = [nose_parallax(seq[i], seq[j]) for i in range(5) for j in range(5) if i < j]
    assert planar_residual(seq, 0.9) == pytest.approx(float(np.quantile(vals, 0.9)))
    with_nan = np.concatenate([seq, np.full((1, 5, 2), np.nan)])
    assert planar_residual(with_nan, 0.5) == pytest.approx(float(np.quantile(vals, 0.5)))
    assert planar_residual(seq[:1]) == 0.0


# ---------------------------------------------------------------------- image cues
def test_spectrum_cues_on_a_fine_grating_and_a_smooth_ramp() -> None:
    yy, xx = np.mgrid[0:64, 0:64].astype(np.float64)
    grating = 128 + 60 * np.cos(2 * np.pi * 0.33 * xx)
    ramp = xx * 2.0 + yy
    hf_g, peak_g = spectrum_cues(grating)
    hf_r, peak_r = spectrum_cues(ramp)
    assert hf_g > 0.9 and hf_r < 0.05
    assert peak_g > peak_r + 5


def test_edge_cue_sees_a_straight_line_next_to_the_face() -> None:
    rng = np.random.default_rng(0)
    frame = rng.normal(120, 10, size=(300, 300, 3)).clip(0, 255).astype(np.uint8)
    box = (110.0, 110.0, 190.0, 190.0)
    plain = frame_cues(frame, box)
    lined = frame.copy()
    lined[70:, :] = 20  # a dark bezel edge 40 px above the face box, across the view
    assert frame_cues(lined, box).edge > plain.edge + 1.0
    assert isinstance(plain, FrameCues) and np.all(np.isfinite(plain.as_array()))
    with pytest.raises(ValueError):
        frame_cues(frame, (295.0, 295.0, 400.0, 400.0))


def test_window_features_of_a_still_and_of_a_clip() -> None:
    cues = np.arange(12, dtype=np.float64).reshape(2, 6)
    lm = np.stack([_view(_face3d(), 0), _view(_face3d(), 20)])
    f = window_features(cues, lm, np.array([[0.0, 0.0], [20.0, 5.0]]))
    assert f.shape == (len(FEATURES),)
    np.testing.assert_allclose(f[:6], np.median(cues, axis=0))
    assert f[FEATURES.index("planar_residual")] == pytest.approx(planar_residual(lm))
    assert f[FEATURES.index("still")] == 0.0
    s = window_features(cues[:1], lm[:1], np.zeros((1, 2)))
    assert s[FEATURES.index("still")] == 1.0 and s[FEATURES.index("planar_residual")] == 0.0


# ---------------------------------------------------------------------- fit + threshold
def test_fit_logistic_zeroes_the_gradient_computed_with_loops() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 3))
    y = (x[:, 0] - 0.5 * x[:, 1] + rng.normal(0, 0.7, size=40) > 0).astype(int)
    w = rng.uniform(0.5, 2.0, size=40)
    coef, b = fit_logistic(x, y, l2=0.7, weights=w)
    grad = [0.0] * 4
    for i in range(40):
        z = sum(coef[j] * x[i, j] for j in range(3)) + b
        p = 1 / (1 + math.exp(-z))
        for j in range(3):
            grad[j] += w[i] * (p - y[i]) * x[i, j]
        grad[3] += w[i] * (p - y[i])
    for j in range(3):
        grad[j] += 0.7 * coef[j]
    assert max(abs(g) for g in grad) < 1e-8
    assert coef[0] > 0 > coef[1]


def test_balanced_weights_give_each_class_and_attack_type_its_share() -> None:
    labels = [1] * 6 + [0] * 3 + [0] * 1
    kinds = ["genuine"] * 6 + ["print"] * 3 + ["screen"]
    w = balanced_weights(labels, kinds)
    assert w[:6].sum() == pytest.approx(w[6:].sum())
    assert w[6:9].sum() == pytest.approx(w[9:].sum())


def _brute_threshold(scores: dict[str, np.ndarray], target: float) -> float:
    cands = sorted({float(np.nextafter(v, np.inf)) for s in scores.values() for v in s})
    for t in [-np.inf, *cands]:
        if all(float((s >= t).mean()) <= target + 1e-12 for s in scores.values() if len(s)):
            return t if math.isfinite(t) else 0.0
    raise AssertionError("no threshold")


@pytest.mark.parametrize("target", [0.0, 0.05, 0.2, 0.5])
def test_threshold_at_apcer_matches_brute_force(target: float) -> None:
    rng = np.random.default_rng(int(target * 100))
    scores = {"print": rng.uniform(size=23), "screen": rng.uniform(0.2, 0.9, size=7), "replay": np.array([])}
    tau = threshold_at_apcer(scores, target)
    assert tau == _brute_threshold(scores, target)
    rates = error_rates(np.concatenate([scores["print"], scores["screen"]]),
                        ["print"] * 23 + ["screen"] * 7, [0] * 30, tau)
    assert rates["print"]["rate"] <= target and rates["screen"]["rate"] <= target
    assert rates["print"]["n"] == 23 and "bpcer" not in rates


def test_threshold_min_acer_matches_a_sweep() -> None:
    rng = np.random.default_rng(9)
    scores = np.concatenate([rng.normal(0.7, 0.15, 30), rng.normal(0.4, 0.2, 20), rng.normal(0.3, 0.1, 10)])
    kinds = ["genuine"] * 30 + ["print"] * 20 + ["replay"] * 10
    labels = [1] * 30 + [0] * 30
    tau = threshold_min_acer(scores, kinds, labels)

    def acer(t: float) -> float:
        ap = max(float(np.mean(scores[30:50] >= t)), float(np.mean(scores[50:] >= t)))
        return (ap + float(np.mean(scores[:30] < t))) / 2

    sweep = min(acer(t) for t in np.linspace(-1, 2, 3001))
    assert acer(tau) <= sweep + 1e-12
    assert tau in set(scores.tolist())


def test_error_rates_count_by_hand() -> None:
    r = error_rates(np.array([0.9, 0.2, 0.6, 0.4, 0.7]), ["genuine", "genuine", "print", "print", "replay"],
                    [1, 1, 0, 0, 0], 0.5)
    assert r["bpcer"] == {"errors": 1, "n": 2, "rate": 0.5}
    assert r["print"] == {"errors": 1, "n": 2, "rate": 0.5}
    assert r["replay"] == {"errors": 1, "n": 1, "rate": 1.0}


# ---------------------------------------------------------------------- model file
def test_quadratic_expand_matches_loops() -> None:
    z = np.random.default_rng(1).normal(size=(3, 4))
    q = quadratic_expand(z)
    assert q.shape == (3, n_expanded(4)) == (3, 14)
    for r in range(3):
        want = list(z[r]) + [z[r, i] * z[r, j] for i in range(4) for j in range(i, 4)]
        np.testing.assert_allclose(q[r], want)
    np.testing.assert_allclose(quadratic_expand(z[0]), q[0])


def _model(**over: object) -> PassiveModel:
    d = len(FEATURES)
    q = n_expanded(d)
    base = dict(features=FEATURES, mean=(0.0,) * d, std=(1.0,) * d, mean2=(0.0,) * q, std2=(1.0,) * q,
                coef=(0.5,) + (0.0,) * (q - 1),
                intercept=-0.1, threshold=0.4, window=30, cue_every=3, provenance={"data": "test"})
    base.update(over)
    return PassiveModel(**base)  # type: ignore[arg-type]


def test_model_round_trip_and_score(tmp_path: Path) -> None:
    m = _model()
    path = m.save(tmp_path / "m" / "liveness.json")
    back = PassiveModel.load(path)
    assert back == m
    f = np.zeros(len(FEATURES))
    f[0] = 2.0
    assert float(back.score(f)) == pytest.approx(1 / (1 + math.exp(-(1.0 - 0.1))))


@pytest.mark.parametrize("content", ["", "{}", '{"format": "other"}', "[1, 2]"])
def test_model_load_rejects_bad_files(tmp_path: Path, content: str) -> None:
    p = tmp_path / "bad.json"
    p.write_text(content)
    with pytest.raises(CalibrationError):
        PassiveModel.load(p)
    with pytest.raises(CalibrationError, match="liveness-calibrate"):
        PassiveModel.load(tmp_path / "missing.json")


def test_model_load_rejects_another_feature_set(tmp_path: Path) -> None:
    data = _model().to_dict()
    data["features"] = ["a"] * len(FEATURES)
    p = tmp_path / "m.json"
    p.write_text(json.dumps(data))
    with pytest.raises(CalibrationError, match="features"):
        PassiveModel.load(p)


def test_committed_model_loads_and_records_its_provenance() -> None:
    m = PassiveModel.load()
    assert 0.0 < m.threshold < 1.0
    prov = m.provenance
    assert "media_sha256" in prov and "threshold_rule" in prov and "metrics" in prov


# ---------------------------------------------------------------------- generated attacks
def test_generated_attacks_are_deterministic_frames_of_the_right_size() -> None:
    photo = np.random.default_rng(0).integers(0, 255, size=(120, 100, 3), dtype=np.uint8)
    a = attacks.print_attack(photo, np.random.default_rng(5), 4)
    b = attacks.print_attack(photo, np.random.default_rng(5), 4)
    assert len(a) == 4 and all(f.shape == (480, 640, 3) and f.dtype == np.uint8 for f in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], a[3])  # the hand moves
    s = attacks.screen_attack(photo, np.random.default_rng(5), 2)
    assert s[0].shape == (480, 640, 3)
    r = attacks.replay_attack([photo, photo], np.random.default_rng(1))
    assert len(r) == 2
    # the sheet's corners follow the homography: its centre lands inside the frame
    hs = attacks.hand_motion(np.random.default_rng(2), 10, (100, 120))
    centre = apply_homography(hs[0], np.array([[50.0, 60.0]]))[0]
    assert 0 < centre[0] < 640 and 0 < centre[1] < 480


# ---------------------------------------------------------------------- blink cue, real clip
@pytest.mark.slow
def test_blink_cue_dips_exactly_at_the_annotated_blinks_of_d13() -> None:
    """d13.mp4 (30 fps) has blinks at ~1.4, 2.6, 3.4 and 10.5 s (its SOURCE.md)."""
    from faceapp.liveness.session import FaceFollower
    from faceapp.vision.liveness.blink import eye_openness
    from faceapp.vision.video import iter_video_frames

    path = DATA / "liveportrait_blinks" / "d13.mp4"
    if not path.exists():
        pytest.skip("liveness data not present")
    follower = FaceFollower.create()
    values = []
    for frame in iter_video_frames(path):
        faces = follower.step(frame)
        values.append(eye_openness(frame, faces[0][1].landmarks_array()) if faces else math.nan)
    v = np.asarray(values)
    ratio = v / np.nanmedian(v)
    closed = np.flatnonzero(ratio < 0.7)  # ChallengeConfig.blink_closed_ratio
    events = [t for i, t in enumerate(closed) if i == 0 or t - closed[i - 1] > 3]
    assert [round(t / 30.0, 1) for t in events] == pytest.approx([1.4, 2.6, 3.4, 10.5], abs=0.2)


# ---------------------------------------------------------------------- windows
def test_cue_collector_cuts_windows_within_one_track() -> None:
    from faceapp.liveness.session import CueCollector
    from faceapp.types import Detection

    frame = np.random.default_rng(0).integers(0, 255, size=(200, 200, 3), dtype=np.uint8)
    lm = _view(_face3d(), 0, scale=40.0) - 100  # around (100, 100) in this frame
    det = Detection((60.0, 60.0, 140.0, 150.0), 0.99, tuple(map(tuple, lm)))  # type: ignore[arg-type]
    col = CueCollector(window=6, cue_every=2)  # 3 samples per window
    tracks = [1] * 7 + [2] * 4  # frames 1..22, sampled on odd frames -> 11 samples
    for i in range(1, 23):
        col.add(i, frame, tracks[(i - 1) // 2], det, 0.0, 0.0)
    assert len(col) == 11
    assert col.spans() == [(0, 3), (3, 6), (7, 10)]  # the 7th sample of track 1 and the last of 2 left out
    assert all(len(set(col.tracks[a:b])) == 1 for a, b in col.spans())
    assert len(col.features()) == 3
    lone = CueCollector(window=30, cue_every=3)
    lone.add(1, frame, 5, det, 0.0, 0.0)
    assert lone.spans() == [(0, 1)]  # a still
    assert lone.features()[0][FEATURES.index("still")] == 1.0
