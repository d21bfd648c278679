"""Tracker geometry against brute-force loops on hand-built boxes and landmark sets."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from faceapp.types import Detection
from faceapp.vision.tracking import (
    IouTracker,
    TrackerConfig,
    box_iou,
    iou_matrix,
    max_weight_assignment,
    shape_change,
)

LANDMARKS = ((30.0, 40.0), (60.0, 40.0), (45.0, 55.0), (35.0, 70.0), (55.0, 70.0))


def brute_iou(a, b) -> float:
    """IoU with plain Python arithmetic."""
    ax1, ay1, ax2, ay2 = (float(v) for v in a)
    bx1, by1, bx2, by2 = (float(v) for v in b)
    area_a = max(0.0, ax2 - ax1) * max(0.0, ay2 - ay1)
    area_b = max(0.0, bx2 - bx1) * max(0.0, by2 - by1)
    iw = max(0.0, min(ax2, bx2) - max(ax1, bx1))
    ih = max(0.0, min(ay2, by2) - max(ay1, by1))
    inter = iw * ih
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0


def brute_assignment(w: np.ndarray, min_weight: float) -> tuple[float, set[tuple[int, int]]]:
    """Best total over every partial one-to-one assignment, by enumeration."""
    n, m = w.shape
    best, best_pairs = 0.0, set()
    options = [*range(m), *([None] * n)]
    for choice in set(itertools.permutations(options, n)):
        total, pairs = 0.0, set()
        for i, j in enumerate(choice):
            if j is not None and w[i, j] >= min_weight and w[i, j] > 0:
                total += float(w[i, j])
                pairs.add((i, j))
        if total > best + 1e-12:
            best, best_pairs = total, pairs
    return best, best_pairs


def random_boxes(rng: np.random.Generator, n: int, size: float = 60.0) -> np.ndarray:
    xy = rng.uniform(0, 100, size=(n, 2))
    wh = rng.uniform(5, size, size=(n, 2))
    return np.concatenate([xy, xy + wh], axis=1)


def det(box, score: float = 0.99, landmarks=None) -> Detection:
    x1, y1, _, _ = box
    lm = landmarks or tuple((x1 + x * 0.5, y1 + y * 0.5) for x, y in LANDMARKS)
    return Detection(box=tuple(float(v) for v in box), score=score, landmarks=lm)


# ---------------------------------------------------------------------------- IoU


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int64])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_iou_matrix_matches_loops(dtype, seed):
    rng = np.random.default_rng(seed)
    a = random_boxes(rng, 5).astype(dtype)
    b = random_boxes(rng, 7).astype(dtype)
    b[0] = b[0, [2, 3, 0, 1]]  # an inverted (empty) box
    b[1] = a[2]  # an identical box
    got = iou_matrix(a, b)
    assert got.shape == (5, 7) and got.dtype == np.float64
    for i, j in itertools.product(range(5), range(7)):
        assert got[i, j] == pytest.approx(brute_iou(a[i], b[j]), abs=1e-12)
    assert np.all(got[:, 0] == 0.0)
    assert got[2, 1] == pytest.approx(1.0)


def test_box_iou_hand_values():
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0
    assert box_iou((0, 0, 10, 10), (2, 2, 8, 8)) == pytest.approx(36 / 100)
    assert box_iou((0, 0, 0, 10), (0, 0, 0, 10)) == 0.0
    assert iou_matrix(np.zeros((0, 4)), np.zeros((3, 4))).shape == (0, 3)


# ---------------------------------------------------------------------------- assignment


@pytest.mark.parametrize("seed", range(40))
def test_assignment_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n, m = int(rng.integers(0, 5)), int(rng.integers(0, 5))
    dtype = (np.float64, np.float32)[seed % 2]
    w = rng.uniform(0, 1, size=(n, m)).astype(dtype)
    w[rng.uniform(size=(n, m)) < 0.3] = 0.0
    min_weight = float(rng.choice([0.0, 0.3, 0.5]))
    pairs = max_weight_assignment(w, min_weight)
    best, best_pairs = brute_assignment(w.astype(np.float64), min_weight)
    assert sum(float(w[i, j]) for i, j in pairs) == pytest.approx(best, abs=1e-6)
    assert set(pairs) == best_pairs  # continuous random weights: the optimum is unique
    assert len({i for i, _ in pairs}) == len(pairs) == len({j for _, j in pairs})
    assert all(w[i, j] >= min_weight for i, j in pairs)


def test_assignment_beats_greedy_on_a_crafted_case():
    # greedy takes (0, 0) = 0.9 and leaves row 1 with nothing; optimal is 0.8 + 0.85
    w = np.array([[0.9, 0.8], [0.85, 0.0]])
    assert max_weight_assignment(w, 0.3) == [(0, 1), (1, 0)]
    # a pair below the threshold is never used, even if it would add weight
    assert max_weight_assignment(np.array([[0.25, 0.9]]), 0.3) == [(0, 1)]
    assert max_weight_assignment(np.array([[0.25]]), 0.3) == []


def test_assignment_from_box_sequences_matches_brute_force():
    rng = np.random.default_rng(7)
    for _ in range(20):
        tracks = random_boxes(rng, 4, size=40)
        dets = tracks[rng.permutation(4)[:3]] + rng.normal(0, 6, size=(3, 4))
        w = iou_matrix(tracks, dets)
        _, pairs = brute_assignment(w, 0.3)
        assert set(max_weight_assignment(w, 0.3)) == pairs


# ---------------------------------------------------------------------------- tracker


def test_tracker_keeps_identities_of_moving_faces_in_any_order():
    rng = np.random.default_rng(3)
    tracker = IouTracker(TrackerConfig(min_iou=0.3))
    a0, b0 = np.array([0.0, 0.0, 40.0, 40.0]), np.array([200.0, 100.0, 260.0, 160.0])
    ids_a, ids_b = set(), set()
    for f in range(1, 21):
        a = a0 + np.array([4 * f, 1 * f, 4 * f, 1 * f])  # moves right
        b = b0 + np.array([-5 * f, 0, -5 * f, 0])  # moves left
        dets = [det(a), det(b)]
        if rng.uniform() < 0.5:
            dets.reverse()
        update = tracker.associate(f, dets)
        if f > 1:
            assert update.created == () and update.removed == ()
        by_box = {t.box: t.track_id for t in tracker.tracks}
        ids_a.add(by_box[tuple(a)])
        ids_b.add(by_box[tuple(b)])
    assert len(ids_a) == 1 and len(ids_b) == 1 and ids_a != ids_b
    vel = {t.track_id: t.velocity for t in tracker.tracks}
    assert vel[ids_a.pop()] == pytest.approx((4.0, 1.0), abs=0.01)
    assert vel[ids_b.pop()] == pytest.approx((-5.0, 0.0), abs=0.01)


def test_new_face_gets_a_new_track_and_a_vanished_one_is_dropped_after_max_misses():
    tracker = IouTracker(TrackerConfig(max_misses=2))
    a, b = (0, 0, 40, 40), (100, 0, 140, 40)
    u1 = tracker.associate(1, [det(a)])
    (ta,) = u1.created
    u2 = tracker.associate(2, [det(a), det(b)])
    assert u2.updated == (ta,) and len(u2.created) == 1
    tb = u2.created[0]
    assert tb != ta
    u3 = tracker.associate(3, [det(b)])
    assert u3.missed == (ta,) and tracker.get(ta).misses == 1
    assert [t.track_id for t in tracker.observed()] == [tb]
    u4 = tracker.associate(4, [det(b)])
    assert u4.missed == (ta,)
    u5 = tracker.associate(5, [det(b)])
    assert u5.removed == (ta,) and len(tracker) == 1
    # coming back after removal: a new identity
    u6 = tracker.associate(6, [det(a), det(b)])
    assert len(u6.created) == 1 and u6.created[0] not in (ta, tb)


def test_velocity_prediction_keeps_a_fast_face():
    """A face accelerating to 30 px/frame (40-px box): consecutive boxes overlap with IoU
    0.14 < min_iou, so only the constant-velocity prediction keeps its identity."""
    steps = [0, 15, 30, 45, 60, 75, 100, 125, 150, 175, 205, 235, 265]

    def run(smoothing: float) -> int:
        tracker = IouTracker(TrackerConfig(min_iou=0.3, velocity_smoothing=smoothing))
        created = 0
        for f, x in enumerate(steps, start=1):
            created += len(tracker.associate(f, [det((x, 0, x + 40, 40))]).created)
        return created

    assert run(0.5) == 1
    assert run(0.0) > 1  # no velocity: the same face becomes several tracks


def test_observe_updates_misses_and_merges_duplicates():
    tracker = IouTracker(TrackerConfig(max_misses=1, merge_iou=0.7))
    u = tracker.associate(1, [det((0, 0, 40, 40)), det((100, 0, 140, 40))])
    ta, tb = u.created
    tracker.associate(2, [det((1, 0, 41, 40)), det((101, 0, 141, 40))])
    # tb converges onto ta's face: the younger-or-equal-hits track with the larger id is dropped
    up = tracker.observe(3, {ta: det((2, 0, 42, 40)), tb: det((3, 0, 43, 40))})
    assert up.removed == (tb,) and [t.track_id for t in tracker.tracks] == [ta]
    assert tracker.get(ta).hits == 3 and tracker.get(ta).last_frame == 3
    up = tracker.observe(4, {}, lost=[ta])
    assert up.missed == (ta,)
    up = tracker.observe(5, {}, lost=[ta])
    assert up.removed == (ta,) and len(tracker) == 0
    with pytest.raises(KeyError):
        tracker.observe(6, {ta: det((0, 0, 40, 40))})


def test_predicted_detection_moves_box_and_landmarks():
    tracker = IouTracker()
    (t,) = tracker.associate(1, [det((0, 0, 40, 40))]).created
    tracker.associate(3, [det((10, 4, 50, 44))])
    track = tracker.get(t)
    assert track.velocity == pytest.approx((2.5, 1.0))  # half of the observed (5, 2) px/frame
    p = track.predicted(5)
    assert p.box == pytest.approx((15.0, 6.0, 55.0, 46.0))
    for (x0, y0), (x1, y1) in zip(track.detection.landmarks, p.landmarks, strict=True):
        assert (x1 - x0, y1 - y0) == pytest.approx((5.0, 2.0))


# ---------------------------------------------------------------------------- landmark shape


def similarity_lstsq_residual(a: np.ndarray, b: np.ndarray) -> float:
    """RMS residual of b mapped onto a by the least-squares similarity, solved as a plain
    linear least-squares problem in (s·cosθ, s·sinθ, tx, ty), divided by a's eye distance."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(b, a, strict=True):
        rows.append([x, -y, 1.0, 0.0])
        rhs.append(u)
        rows.append([y, x, 0.0, 1.0])
        rhs.append(v)
    sol, *_ = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)
    p, q, tx, ty = sol
    sq = 0.0
    for (x, y), (u, v) in zip(b, a, strict=True):
        sq += (p * x - q * y + tx - u) ** 2 + (q * x + p * y + ty - v) ** 2
    eye = math.hypot(a[1][0] - a[0][0], a[1][1] - a[0][1])
    return math.sqrt(sq / len(a)) / eye


@pytest.mark.parametrize("seed", range(6))
def test_shape_change_is_similarity_invariant_and_matches_lstsq(seed):
    rng = np.random.default_rng(seed)
    a = np.array(LANDMARKS) + rng.normal(0, 1.0, size=(5, 2))
    theta, scale, shift = rng.uniform(-0.5, 0.5), rng.uniform(0.5, 2.0), rng.uniform(-50, 50, 2)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    moved = scale * a @ rot.T + shift
    assert shape_change(a, moved) == pytest.approx(0.0, abs=1e-9)
    turned = moved + rng.normal(0, 3.0, size=(5, 2))
    got = shape_change(a, turned)
    assert got > 0.01
    assert got == pytest.approx(similarity_lstsq_residual(a, turned), rel=1e-6)


def test_shape_change_degenerate_inputs():
    a = np.array(LANDMARKS)
    assert shape_change(np.zeros((5, 2)), a) == math.inf
    assert shape_change(a, np.zeros((5, 2))) == math.inf
    with pytest.raises(ValueError):
        shape_change(a, a[:4])


def test_spawn_adds_only_faces_no_track_covers():
    tracker = IouTracker(TrackerConfig(min_iou=0.3))
    (ta,) = tracker.associate(1, [det((0, 0, 40, 40))]).created
    before = tracker.get(ta)
    up = tracker.spawn(5, [det((2, 0, 42, 40)), det((100, 0, 140, 40)), det((101, 1, 141, 41))])
    assert len(up.created) == 1 and up.missed == () and up.removed == ()
    assert tracker.get(ta) == before  # existing tracks are neither moved nor missed
    (tb,) = up.created
    assert tracker.get(tb).box == (100.0, 0.0, 140.0, 40.0) and tracker.get(tb).first_frame == 5
    assert tracker.spawn(6, []).created == ()


def test_spawn_revives_a_missed_track_at_its_predicted_place():
    tracker = IouTracker(TrackerConfig(min_iou=0.3, max_misses=3))
    (t,) = tracker.associate(1, [det((0, 0, 40, 40))]).created
    tracker.associate(2, [det((10, 0, 50, 40))])  # moving right ~5 px/frame (smoothed)
    tracker.observe(3, {}, lost=[t])
    assert tracker.observed() == ()
    up = tracker.spawn(4, [det((21, 0, 61, 40))])
    assert up.updated == (t,) and up.created == ()
    assert tracker.get(t).misses == 0 and tracker.get(t).box == (21.0, 0.0, 61.0, 40.0)
