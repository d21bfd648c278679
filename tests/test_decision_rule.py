"""The one decision rule (:func:`faceapp.nn.scoring.accepts`), against a brute-force loop on
hand-built scores: ties accept, NaN never accepts, and the vectorised form agrees element-wise.
Also: the places in the gallery that decide go through it."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from faceapp.nn.scoring import DISTANCE, CosineScorer, accepts, accepts_all

NAN = float("nan")
INF = float("inf")
# hand-built: ties with τ, just below / above in float32 and float64, ±inf, NaN, negatives
SCORES = [0.5, 0.4999999, 0.5000001, -1.0, 1.0, 0.0, -0.0, INF, -INF, NAN,
          float(np.float32(0.5)), float(np.nextafter(0.5, 0.0)), float(np.nextafter(0.5, 1.0))]
TAUS = [0.5, 0.0, -0.0, -1.0, 1.0, INF, -INF, NAN]


def _loop_accepts(score: float, tau: float) -> bool:
    """The rule written out case by case, without ``>=``."""
    if math.isnan(score) or math.isnan(tau):
        return False
    if score == tau:
        return True
    return not score < tau


@pytest.mark.parametrize("tau", TAUS)
def test_accepts_matches_the_loop(tau):
    for s in SCORES:
        assert accepts(s, tau) is _loop_accepts(s, tau), (s, tau)
        assert accepts(np.float32(s), tau) is _loop_accepts(float(np.float32(s)), tau), (s, tau)


def test_a_tie_accepts_and_nan_never_does():
    assert accepts(0.5, 0.5)
    assert not accepts(np.nextafter(0.5, 0.0), 0.5)
    assert not accepts(NAN, 0.5) and not accepts(0.5, NAN) and not accepts(NAN, NAN)
    assert not accepts(NAN, -INF)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("tau", TAUS)
def test_accepts_all_matches_the_loop(dtype, tau):
    s = np.array(SCORES, dtype=dtype)
    got = accepts_all(s, tau)
    assert got.dtype == bool and got.shape == s.shape
    assert got.tolist() == [_loop_accepts(float(v), tau) for v in s]


def test_accepts_all_broadcasts_thresholds_and_keeps_shape():
    s = np.array([[0.2, 0.5, NAN], [0.9, -0.1, 0.5]], dtype=np.float32)
    taus = np.array([0.5, 0.0, NAN])
    got = accepts_all(s, taus)
    assert got.shape == (2, 3)
    want = [[_loop_accepts(float(s[i, j]), float(taus[j])) for j in range(3)] for i in range(2)]
    assert got.tolist() == want
    assert accepts_all(np.zeros(0), 0.5).shape == (0,)


def test_accepts_all_on_nan_raises_no_warning():
    with np.errstate(all="raise"):
        assert accepts_all(np.array([NAN, 1.0]), 0.5).tolist() == [False, True]


def test_distance_is_the_cosine_scorers_name():
    assert CosineScorer.name == DISTANCE == "distance"


def test_scoring_does_not_import_torch():
    code = "import sys, faceapp.nn.scoring, faceapp.gallery; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_gallery_decisions_follow_the_rule_at_a_tie_and_for_nan():
    from faceapp.gallery.matching import Candidate, GalleryIndex, Identification

    index = GalleryIndex("m", 2)
    index.add([1, 2], [10, 20], np.array([[1.0, 0.0], [0.0, 1.0]], np.float32), model_id="m")
    probe = np.array([1.0, 0.0], np.float32)
    exact = float(index.person_scores(probe, model_id="m")[1][0, 0])
    assert index.verify(10, probe, model_id="m", threshold=exact).match
    assert not index.verify(10, probe, model_id="m", threshold=NAN).match
    assert index.identify(probe, model_id="m", threshold=exact)[0].person_id == 10
    assert index.identify(probe, model_id="m", threshold=NAN)[0].person_id is None
    assert Identification((Candidate(1, NAN),), 0.0, False, 0.03).person_id is None
