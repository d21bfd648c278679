"""The services' one calibration implementation (CLI and GUI): ROC and τ for a target FAR,
checked against brute-force loops on small hand-built score sets."""

from __future__ import annotations

import numpy as np
import pytest

from faceapp.errors import FaceappError
from faceapp.nn.scoring import accepts, accepts_all
from faceapp.services.calibration import roc, split_pairs, threshold_for_far


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_roc_points_match_brute_force(seed: int, dtype: type) -> None:
    rng = np.random.default_rng(seed)
    g = rng.normal(0.6, 0.2, size=7).astype(dtype)
    i = np.r_[rng.normal(0.1, 0.3, size=9), g[:2]].astype(dtype)  # ties across classes
    far, tar, thr = roc(g, i)
    assert thr[0] == np.inf and far[0] == 0 and tar[0] == 0
    for k in range(1, thr.size):
        t = thr[k]
        assert far[k] == pytest.approx(sum(1 for x in i if x >= t) / i.size)
        assert tar[k] == pytest.approx(sum(1 for x in g if x >= t) / g.size)
    assert far[-1] == 1.0 and tar[-1] == 1.0
    for target in (0.0, 0.1, 0.5):
        chosen = threshold_for_far(g, i, target)
        tau, f, t = chosen.threshold, chosen.far, chosen.tar
        ok = [x for x in sorted(set(np.r_[g, i].tolist())) if np.mean(i >= x) <= target]
        if ok:
            assert tau == pytest.approx(min(ok))
            assert f <= target and t == pytest.approx(np.mean(g >= tau))
        else:
            assert tau > max(np.r_[g, i]) and f == 0 and t == 0
    chosen = threshold_for_far(g, i, 0.1)
    assert chosen.genuine == g.size and chosen.impostor == i.size
    assert chosen.measurable == (1 / i.size <= 0.1)
    assert 0.0 <= chosen.auc <= 1.0


def test_threshold_for_far_needs_both_kinds_and_a_valid_target() -> None:
    with pytest.raises(FaceappError, match="both are needed"):
        threshold_for_far(np.array([0.5]), np.array([]), 0.1)
    with pytest.raises(FaceappError, match="between 0 and 1"):
        threshold_for_far(np.array([0.5]), np.array([0.1]), 1.5)


def test_split_pairs_and_the_decision_rule() -> None:
    scores = np.array([0.9, 0.2, 0.5, float("nan")])
    same = np.array([True, False, True, False])
    g, i = split_pairs(scores, same)
    assert g.tolist() == [0.9, 0.5] and i[0] == 0.2 and np.isnan(i[1])
    for s in (0.49, 0.5, 0.51, float("nan")):
        assert accepts(s, 0.5) == (s >= 0.5)  # ties accept, NaN never does
    assert not accepts(0.9, float("nan"))
    assert accepts_all(scores, 0.5).tolist() == [s >= 0.5 for s in scores.tolist()]
