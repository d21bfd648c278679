"""Verification / identification metrics against brute-force loops, with ties and exact cases."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from faceapp.training.metrics import (
    best_threshold,
    equal_error_rate,
    identification_report,
    kfold_accuracy,
    lfw_folds,
    roc_auc,
    roc_curve,
    tar_at_far,
    verification_report,
)

# ----------------------------------------------------------------------------- brute force


def rates(scores: list[float], same: list[bool], t: float) -> tuple[float, float]:
    """(far, tar) of accepting score >= t, by counting."""
    gen = [s for s, g in zip(scores, same, strict=True) if g]
    imp = [s for s, g in zip(scores, same, strict=True) if not g]
    return sum(s >= t for s in imp) / len(imp), sum(s >= t for s in gen) / len(gen)


def accuracy(scores: list[float], same: list[bool], t: float) -> float:
    return sum((s >= t) == g for s, g in zip(scores, same, strict=True)) / len(scores)


def brute_auc(scores: list[float], same: list[bool]) -> float:
    gen = [s for s, g in zip(scores, same, strict=True) if g]
    imp = [s for s, g in zip(scores, same, strict=True) if not g]
    total = 0.0
    for a in gen:
        for b in imp:
            total += 1.0 if a > b else 0.5 if a == b else 0.0
    return total / (len(gen) * len(imp))


def brute_eer(scores: list[float], same: list[bool]) -> tuple[float, float]:
    best = None
    for t in sorted(set(scores), reverse=True):
        far, tar = rates(scores, same, t)
        gap = abs(far - (1 - tar))
        if best is None or gap < best[0]:
            best = (gap, (far + 1 - tar) / 2, t)
    assert best is not None
    return best[1], best[2]


def brute_tar_at_far(scores: list[float], same: list[bool], target: float) -> tuple[float, float] | None:
    best = None
    for t in sorted(set(scores)):  # ascending: first qualifying = smallest threshold
        far, tar = rates(scores, same, t)
        if far <= target and (best is None or tar > best[0]):
            best = (tar, t)
    return best


def brute_best_accuracy(scores: list[float], same: list[bool]) -> float:
    # Every achievable accept set is {s >= t} for t a score, or the empty set.
    return max(accuracy(scores, same, t) for t in [*set(scores), math.inf])


def brute_best_threshold(scores: list[float], same: list[bool]) -> tuple[float, float]:
    vals = sorted(set(scores))
    cands = [vals[0]] + [(a + b) / 2 for a, b in itertools.pairwise(vals)]
    cands.append(float(np.nextafter(vals[-1], np.inf)))
    best = None
    for t in cands:  # ascending, strict improvement: lowest threshold on ties
        acc = accuracy(scores, same, t)
        if best is None or acc > best[1]:
            best = (t, acc)
    assert best is not None
    return best


def random_pairs(seed: int, n: int, *, quantize: bool) -> tuple[list[float], list[bool]]:
    rng = np.random.default_rng(seed)
    same = rng.random(n) < 0.4
    same[0], same[1] = True, False
    scores = rng.normal(0.0, 1.0, n) + 1.2 * same
    if quantize:  # heavy ties
        scores = np.round(scores * 2) / 2
    return scores.tolist(), same.tolist()


CASES = [(seed, n, q) for seed, n in [(0, 7), (1, 20), (2, 41), (3, 60)] for q in (False, True)]
CASE_IDS = [f"s{s}-n{n}-{'ties' if q else 'cont'}" for s, n, q in CASES]

# ----------------------------------------------------------------------------- exact tiny cases

TINY_S = [0.9, 0.8, 0.7, 0.6]
TINY_G = [True, False, True, False]


def test_tiny_roc() -> None:
    roc = roc_curve(TINY_S, TINY_G)
    assert roc.thresholds.tolist() == [math.inf, 0.9, 0.8, 0.7, 0.6]
    assert roc.far.tolist() == [0.0, 0.0, 0.5, 0.5, 1.0]
    assert roc.tar.tolist() == [0.0, 0.5, 0.5, 1.0, 1.0]


def test_tiny_scalars() -> None:
    assert roc_auc(TINY_S, TINY_G) == pytest.approx(0.75)
    assert equal_error_rate(TINY_S, TINY_G) == (0.5, 0.8)
    assert tar_at_far(TINY_S, TINY_G, 0.0) == (0.5, 0.9)
    assert tar_at_far(TINY_S, TINY_G, 0.5) == (1.0, 0.7)
    t, acc = best_threshold(TINY_S, TINY_G)
    assert acc == 0.75
    assert t == pytest.approx(0.65)  # midway between 0.6 and 0.7; lowest of the two best


def test_ties_in_auc_count_half() -> None:
    assert roc_auc([0.5, 0.5, 0.5, 0.2], [True, False, True, False]) == pytest.approx(0.75)
    assert roc_auc([1.0, 1.0], [True, False]) == 0.5


def test_perfect_and_inverted_separation() -> None:
    s = [0.9, 0.8, 0.1, 0.2]
    g = [True, True, False, False]
    assert roc_auc(s, g) == 1.0
    assert equal_error_rate(s, g) == (0.0, 0.8)
    assert best_threshold(s, g) == (pytest.approx(0.5), 1.0)
    assert roc_auc(s, [not x for x in g]) == 0.0


def test_tar_at_far_when_impostors_share_the_top_score() -> None:
    s = [0.9, 0.9, 0.1, 0.3]
    g = [True, False, False, True]
    tar, t = tar_at_far(s, g, 0.01)
    assert tar == 0.0
    assert t > 0.9
    assert t == np.nextafter(0.9, np.inf)
    assert rates(s, g, t) == (0.0, 0.0)


def test_accept_means_greater_or_equal() -> None:
    s = [0.5, 0.5, 0.4]
    g = [True, True, False]
    _, t = tar_at_far(s, g, 0.0)
    assert t == 0.5
    assert rates(s, g, t) == (0.0, 1.0)


# ----------------------------------------------------------------------------- vs brute force


@pytest.mark.parametrize(("seed", "n", "quantize"), CASES, ids=CASE_IDS)
def test_roc_matches_counting(seed: int, n: int, quantize: bool) -> None:
    s, g = random_pairs(seed, n, quantize=quantize)
    roc = roc_curve(np.asarray(s, dtype=np.float32), g)
    assert roc.thresholds[0] == math.inf
    assert (roc.far[0], roc.tar[0], roc.far[-1], roc.tar[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(roc.thresholds) < 0)
    s32 = np.asarray(s, dtype=np.float32).astype(float).tolist()
    assert sorted(roc.thresholds[1:].tolist()) == sorted(set(s32))
    for far, tar, t in zip(roc.far[1:], roc.tar[1:], roc.thresholds[1:], strict=True):
        assert (far, tar) == pytest.approx(rates(s32, g, t))


@pytest.mark.parametrize(("seed", "n", "quantize"), CASES, ids=CASE_IDS)
def test_scalar_metrics_match_brute_force(seed: int, n: int, quantize: bool) -> None:
    s, g = random_pairs(seed, n, quantize=quantize)
    assert roc_auc(s, g) == pytest.approx(brute_auc(s, g), abs=1e-12)
    assert equal_error_rate(s, g) == pytest.approx(brute_eer(s, g))
    for target in (0.0, 0.01, 0.1, 0.25, 0.5, 1.0):
        expected = brute_tar_at_far(s, g, target)
        if expected is None:  # impostors share the top score: only "accept nothing" complies
            expected = (0.0, float(np.nextafter(max(s), np.inf)))
        assert tar_at_far(s, g, target) == pytest.approx(expected)
    t, acc = best_threshold(s, g)
    assert acc == pytest.approx(brute_best_accuracy(s, g))
    assert accuracy(s, g, t) == pytest.approx(acc)
    assert (t, acc) == pytest.approx(brute_best_threshold(s, g))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_integer_same_and_float32_scores_accepted(seed: int) -> None:
    s, g = random_pairs(seed, 30, quantize=False)
    s32 = np.asarray(s, dtype=np.float32)
    assert roc_auc(s32, np.asarray(g, dtype=np.int64)) == pytest.approx(brute_auc(s32.tolist(), g))


def test_invalid_inputs() -> None:
    with pytest.raises(ValueError, match="genuine and impostor"):
        roc_auc([0.1, 0.2], [True, True])
    with pytest.raises(ValueError, match="NaN"):
        roc_curve([0.1, float("nan")], [True, False])
    with pytest.raises(ValueError, match="shape"):
        roc_curve([0.1, 0.2], [True])
    with pytest.raises(ValueError, match="booleans"):
        roc_curve([0.1, 0.2], [2, 0])
    with pytest.raises(ValueError, match="far"):
        tar_at_far([0.1, 0.2], [True, False], 1.5)
    with pytest.raises(ValueError, match="no pairs"):
        best_threshold([], [])


# ----------------------------------------------------------------------------- folds


def test_lfw_view2_folds_are_the_file_blocks() -> None:
    same = np.tile(np.r_[np.ones(300, bool), np.zeros(300, bool)], 10)
    folds = lfw_folds(same)
    assert folds.dtype == np.int64
    assert folds.tolist() == np.repeat(np.arange(10), 600).tolist()


def test_lfw_devtest_folds_split_each_class_contiguously() -> None:
    same = np.r_[np.ones(500, bool), np.zeros(500, bool)]
    folds = lfw_folds(same)
    for j in range(10):
        idx = np.flatnonzero(folds == j).tolist()
        assert idx == list(range(50 * j, 50 * j + 50)) + list(range(500 + 50 * j, 550 + 50 * j))


def test_lfw_folds_uneven_and_by_count() -> None:
    same = [True] * 7 + [False] * 5
    folds = lfw_folds(same, n_folds=3)
    assert folds.tolist() == [0, 0, 0, 1, 1, 2, 2, 0, 0, 1, 1, 2]
    assert lfw_folds(10, n_folds=3).tolist() == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    with pytest.raises(ValueError, match="matched"):
        lfw_folds([True] * 2 + [False] * 20, n_folds=10)


@pytest.mark.parametrize("quantize", [False, True])
def test_kfold_matches_brute_force(quantize: bool) -> None:
    s, g = random_pairs(7, 80, quantize=quantize)
    folds = lfw_folds(np.asarray(g), n_folds=4)
    res = kfold_accuracy(s, g, folds)
    accs = []
    for j in range(4):
        train = [i for i in range(len(s)) if folds[i] != j]
        test = [i for i in range(len(s)) if folds[i] == j]
        t, _ = brute_best_threshold([s[i] for i in train], [g[i] for i in train])
        assert res.fold_thresholds[j] == pytest.approx(t)
        accs.append(accuracy([s[i] for i in test], [g[i] for i in test], t))
    assert res.fold_accuracies.tolist() == pytest.approx(accs)
    assert res.accuracy == pytest.approx(sum(accs) / 4)
    mean = sum(accs) / 4
    assert res.accuracy_std == pytest.approx(math.sqrt(sum((a - mean) ** 2 for a in accs) / 4))
    assert res.threshold == pytest.approx(brute_best_threshold(s, g)[0])


def test_verification_report() -> None:
    s, g = random_pairs(11, 120, quantize=False)
    folds = lfw_folds(np.asarray(g))
    rep = verification_report(s, g, folds)
    assert set(rep) == {
        "accuracy",
        "accuracy_std",
        "auc",
        "eer",
        "tar_at_far_0.01",
        "tar_at_far_0.001",
        "threshold",
        "pairs",
        "threshold_far_0.01",
        "threshold_far_0.001",
        "threshold_eer",
    }
    assert rep["pairs"] == 120 and isinstance(rep["pairs"], int)
    assert all(isinstance(v, float) for k, v in rep.items() if k != "pairs")
    assert rep["auc"] == pytest.approx(brute_auc(s, g))
    assert (rep["eer"], rep["threshold_eer"]) == pytest.approx(brute_eer(s, g))
    assert (rep["tar_at_far_0.01"], rep["threshold_far_0.01"]) == pytest.approx(brute_tar_at_far(s, g, 0.01))
    assert rep["accuracy"] == pytest.approx(kfold_accuracy(s, g, folds).accuracy)
    assert 0.5 < rep["accuracy"] <= 1.0


# ----------------------------------------------------------------------------- identification


def brute_identification(
    gallery: np.ndarray, g_lab: list[int], probes: np.ndarray, p_lab: list[int]
) -> dict[str, float]:
    ids = sorted(set(g_lab))
    best_per_probe = []
    for p in probes.tolist():
        best: dict[int, float] = {}
        for row, lab in zip(gallery.tolist(), g_lab, strict=True):
            sc = sum(a * b for a, b in zip(p, row, strict=True))
            best[lab] = max(best.get(lab, -math.inf), sc)
        best_per_probe.append(best)
    known = [i for i, lab in enumerate(p_lab) if lab in ids]
    distractors = [i for i, lab in enumerate(p_lab) if lab not in ids]
    ranks = {}
    for i in known:
        true = p_lab[i]
        # pessimistic ties: among equal scores, the true identity sorts last
        ranking = sorted(ids, key=lambda lab, i=i, true=true: (-best_per_probe[i][lab], lab == true))
        ranks[i] = ranking.index(true)
    out = {
        "rank1": sum(ranks[i] < 1 for i in known) / len(known),
        "rank5": sum(ranks[i] < 5 for i in known) / len(known),
    }
    d_top = [max(best_per_probe[i].values()) for i in distractors]
    allowed = math.floor(0.01 * len(d_top) + 1e-9)
    cands = sorted({*d_top, *(float(np.nextafter(v, np.inf)) for v in d_top)})
    t = next(c for c in cands if sum(v >= c for v in d_top) <= allowed)
    out["threshold_fpir_0.01"] = t
    out["dir_at_fpir_0.01"] = sum(
        ranks[i] == 0 and max(best_per_probe[i].values()) >= t for i in known
    ) / len(known)
    return out


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_identification_matches_brute_force(seed: int, dtype: type) -> None:
    rng = np.random.default_rng(seed)
    n_ids, dim = 12, 8
    protos = unit(rng.normal(size=(n_ids, dim)))
    g_lab = [i for i in range(n_ids) for _ in range(1 + i % 3)]
    gallery = unit(protos[g_lab] + 0.2 * rng.normal(size=(len(g_lab), dim))).astype(dtype)
    known_lab = rng.integers(0, n_ids, 60).tolist()
    known = unit(protos[known_lab] + 0.3 * rng.normal(size=(60, dim)))
    distract = unit(rng.normal(size=(250, dim)))  # 1% of 250 -> 2 may pass
    probes = np.concatenate([known, distract]).astype(dtype)
    p_lab = known_lab + list(range(100, 350))
    # Interleave so that known and distractor probes are mixed.
    perm = rng.permutation(len(p_lab))
    probes, p_lab = probes[perm], [p_lab[i] for i in perm]

    rep = identification_report(gallery, np.asarray(g_lab), probes, np.asarray(p_lab))
    exp = brute_identification(gallery.astype(np.float64), g_lab, probes.astype(np.float64), p_lab)
    assert rep["n_gallery"] == n_ids
    assert rep["n_known_probes"] == 60
    assert rep["n_distractor_probes"] == 250
    for key in ("rank1", "rank5", "dir_at_fpir_0.01", "threshold_fpir_0.01"):
        assert rep[key] == pytest.approx(exp[key], abs=1e-12), key
    # The case must be non-trivial for the test to mean anything.
    assert 0.0 < rep["rank1"] < rep["rank5"] <= 1.0
    assert 0.0 < rep["dir_at_fpir_0.01"] < rep["rank1"]


def test_identification_ties_count_against_the_probe() -> None:
    e1, e2 = [1.0, 0.0], [0.0, 1.0]
    gallery = np.array([e1, e1, e2, e2])
    g_lab = np.array([0, 1, 2, 2])
    probes = np.array([e1, e2, [0.6, 0.8]])
    p_lab = np.array([1, 2, 7])  # probe 0 ties ids 0 and 1; probe 2 is a distractor
    rep = identification_report(gallery, g_lab, probes, p_lab)
    assert rep["rank1"] == 0.5
    assert rep["rank5"] == 1.0
    assert rep["n_gallery"] == 3
    assert (rep["n_known_probes"], rep["n_distractor_probes"]) == (2, 1)
    # One distractor, 1% of 1 -> none may pass: threshold just above its score 0.8.
    assert rep["threshold_fpir_0.01"] == np.nextafter(0.8, np.inf)
    assert rep["dir_at_fpir_0.01"] == 0.5  # probe 1: correct and score 1.0 >= threshold


def test_identification_without_distractors_or_known() -> None:
    gallery = np.eye(3)
    rep = identification_report(gallery, np.arange(3), np.eye(3), np.arange(3))
    assert rep["rank1"] == 1.0
    assert math.isnan(rep["dir_at_fpir_0.01"]) and math.isnan(rep["threshold_fpir_0.01"])
    rep = identification_report(gallery, np.arange(3), np.eye(3), np.arange(3) + 10)
    assert math.isnan(rep["rank1"])
    assert rep["n_distractor_probes"] == 3
    with pytest.raises(ValueError, match="dimension"):
        identification_report(gallery, np.arange(3), np.ones((1, 2)), np.array([0]))
    with pytest.raises(ValueError, match="empty gallery"):
        identification_report(np.zeros((0, 3)), np.zeros(0, int), np.eye(3), np.arange(3))
