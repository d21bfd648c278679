"""GalleryIndex against brute-force Python loops on small random galleries."""

from __future__ import annotations

import math

import numpy as np
import pytest

from faceapp.errors import ModelMismatch, PersonNotFound
from faceapp.gallery.matching import GalleryIndex, l2_normalize

MODEL = "model-a"


def unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def random_gallery(seed: int, n_people: int, d: int, max_per: int = 4):
    """Templates in a shuffled order (not grouped by person) with non-contiguous ids."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, max_per + 1, size=n_people)
    person_ids = np.repeat(rng.choice(10_000, n_people, replace=False), counts)
    emb = unit_rows(rng, person_ids.shape[0], d)
    perm = rng.permutation(person_ids.shape[0])
    template_ids = np.arange(100, 100 + person_ids.shape[0])
    return template_ids[perm], person_ids[perm], emb[perm], rng


def brute_person_scores(probe, person_ids, emb, score=None):
    """{person: best cosine over their templates}, with plain Python loops."""
    best: dict[int, float] = {}
    p = [float(v) for v in probe]
    pn = math.sqrt(sum(v * v for v in p))
    for pid, row in zip(person_ids.tolist(), emb.tolist(), strict=True):
        rn = math.sqrt(sum(v * v for v in row))
        if score is None:
            s = sum(a * b for a, b in zip(p, row, strict=True)) / (pn * rn)
        else:
            s = score([a / pn for a in p], [b / rn for b in row])
        if pid not in best or s > best[pid]:
            best[pid] = s
    return best


class L1Scorer:
    """A non-cosine similarity: minus the L1 distance of unit vectors (higher = closer)."""

    name = "neg_l1"

    def score_matrix(self, probes: np.ndarray, gallery: np.ndarray) -> np.ndarray:
        return -np.abs(probes[:, None, :] - gallery[None, :, :]).sum(-1).astype(np.float32)


def neg_l1(a, b):
    return -sum(abs(x - y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("seed,n_people,d,dtype", [
    (0, 1, 8, np.float32), (1, 7, 16, np.float64), (2, 40, 32, np.float32),
    (3, 25, 5, np.float16),
])
def test_identify_matches_brute_force(seed, n_people, d, dtype):
    tids, pids, emb, rng = random_gallery(seed, n_people, d)
    index = GalleryIndex.from_arrays(MODEL, tids, pids, emb.astype(dtype))
    stored = index.embeddings().astype(np.float64)  # what the index compares against
    probes = unit_rows(rng, 6, d).astype(dtype)
    k = 5
    tau = 0.1
    results = index.identify(probes, model_id=MODEL, threshold=tau, k=k)
    assert len(results) == probes.shape[0]
    for probe, res in zip(probes, results, strict=True):
        best = brute_person_scores(probe.astype(np.float32), index.row_person_ids(), stored)
        expected = sorted(best.items(), key=lambda kv: -kv[1])[: min(k, n_people)]
        assert [c.person_id for c in res.candidates] == [p for p, _ in expected]
        np.testing.assert_allclose([c.score for c in res.candidates],
                                   [s for _, s in expected], atol=1e-5)
        top = expected[0]
        assert res.person_id == (top[0] if top[1] >= tau else None)


def test_identify_custom_scorer_matches_brute_force():
    tids, pids, emb, rng = random_gallery(5, 12, 6)
    index = GalleryIndex.from_arrays(MODEL, tids, pids, emb)
    probes = unit_rows(rng, 3, 6)
    results = index.identify(probes, model_id=MODEL, threshold=-1.0, k=3, scorer=L1Scorer())
    for probe, res in zip(probes, results, strict=True):
        best = brute_person_scores(probe, index.row_person_ids(),
                                   index.embeddings().astype(np.float64), neg_l1)
        expected = sorted(best.items(), key=lambda kv: -kv[1])[:3]
        assert [c.person_id for c in res.candidates] == [p for p, _ in expected]
        np.testing.assert_allclose([c.score for c in res.candidates],
                                   [s for _, s in expected], atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_verify_is_best_template(seed):
    tids, pids, emb, rng = random_gallery(seed, 10, 12)
    index = GalleryIndex.from_arrays(MODEL, tids, pids, emb)
    probe = unit_rows(rng, 1, 12)[0]
    best = brute_person_scores(probe, pids, emb)
    for person, expected in best.items():
        tau = expected - 1e-3
        v = index.verify(person, probe, model_id=MODEL, threshold=tau)
        assert v.score == pytest.approx(expected, abs=1e-5)
        assert v.match is True
        assert v.n_templates == int((pids == person).sum())
        v2 = index.verify(person, probe, model_id=MODEL, threshold=expected + 1e-3)
        assert v2.match is False


def test_unknown_below_threshold_and_exact_boundary():
    index = GalleryIndex(MODEL, 2)
    index.add([1, 2], [10, 20], np.array([[1.0, 0.0], [0.0, 1.0]]), model_id=MODEL)
    probe = np.array([0.8, 0.6])  # cos with person 10 = 0.8, with 20 = 0.6
    (res,) = index.identify(probe, model_id=MODEL, threshold=0.9)
    assert res.person_id is None and not res.is_known
    assert res.candidates[0].person_id == 10
    assert res.best_score == pytest.approx(0.8)
    (res,) = index.identify(probe, model_id=MODEL, threshold=0.79)
    assert res.person_id == 10
    # a score equal to tau passes (score >= tau)
    score = index.verify(10, probe, model_id=MODEL, threshold=0.0).score
    assert index.verify(10, probe, model_id=MODEL, threshold=score).match


def test_ambiguity_flag_uses_margin():
    index = GalleryIndex(MODEL, 2)
    a = np.array([1.0, 0.0])
    b = l2_normalize(np.array([[1.0, 0.2]]))[0]
    index.add([1, 2], [1, 2], np.stack([a, b]), model_id=MODEL)
    probe = l2_normalize(np.array([[1.0, 0.1]]))[0]
    gap = float(probe @ a - probe @ b)
    assert abs(gap) < 0.01
    (res,) = index.identify(probe, model_id=MODEL, threshold=0.5, margin=0.05)
    assert res.ambiguous
    (res,) = index.identify(probe, model_id=MODEL, threshold=0.5, margin=abs(gap) / 2)
    assert not res.ambiguous
    # unknown results are never flagged ambiguous
    (res,) = index.identify(probe, model_id=MODEL, threshold=0.9999, margin=0.05)
    assert res.person_id is None and not res.ambiguous


def test_model_mismatch():
    index = GalleryIndex(MODEL, 4)
    index.add([1], [1], np.ones((1, 4)), model_id=MODEL)
    with pytest.raises(ModelMismatch):
        index.add([2], [2], np.ones((1, 4)), model_id="model-b")
    with pytest.raises(ModelMismatch):
        index.identify(np.ones(4), model_id="model-b", threshold=0.5)
    with pytest.raises(ModelMismatch):
        index.verify(1, np.ones(4), model_id="model-b", threshold=0.5)
    with pytest.raises(ModelMismatch):
        index.identify(np.ones(5), model_id=MODEL, threshold=0.5)


def test_add_and_remove_without_reload_match_rebuild():
    tids, pids, emb, rng = random_gallery(7, 30, 16)
    index = GalleryIndex(MODEL, 16, capacity=4)
    # incremental adds in several out-of-order batches
    for chunk in np.array_split(np.arange(tids.shape[0]), 5):
        index.add(tids[chunk], pids[chunk], emb[chunk], model_id=MODEL)
    victim = int(pids[0])
    removed = index.remove_person(victim)
    assert removed == int((pids == victim).sum())
    drop_tpl = int(tids[-1]) if pids[-1] != victim else int(tids[-2])
    assert index.remove_templates([drop_tpl]) == 1
    keep = (pids != victim) & (tids != drop_tpl)
    rebuilt = GalleryIndex.from_arrays(MODEL, tids[keep], pids[keep], emb[keep])
    probes = unit_rows(rng, 4, 16)
    got = index.identify(probes, model_id=MODEL, threshold=0.0, k=40)
    want = rebuilt.identify(probes, model_id=MODEL, threshold=0.0, k=40)
    assert got == want
    assert victim not in index.people()
    with pytest.raises(PersonNotFound):
        index.verify(victim, probes[0], model_id=MODEL, threshold=0.0)


def test_empty_index():
    index = GalleryIndex(MODEL, 3)
    (res,) = index.identify(np.ones(3), model_id=MODEL, threshold=0.5)
    assert res.candidates == () and res.person_id is None
    assert res.best_score == float("-inf")


def test_pair_scores_brute_force():
    tids, pids, emb, _ = random_gallery(3, 6, 5, max_per=3)
    index = GalleryIndex.from_arrays(MODEL, tids, pids, emb)
    scores, same = index.pair_scores()
    rows = index.embeddings().astype(np.float64)
    rp = index.row_person_ids()
    exp_scores, exp_same = [], []
    for i in range(len(rows)):
        for j in range(i + 1, len(rows)):
            exp_scores.append(sum(a * b for a, b in zip(rows[i], rows[j], strict=True)))
            exp_same.append(rp[i] == rp[j])
    np.testing.assert_allclose(scores, exp_scores, atol=1e-5)
    assert same.tolist() == exp_same


def test_large_index_searches_correctly():
    """100,000 templates: top-1 of a perturbed template is its person; agrees with NumPy."""
    rng = np.random.default_rng(11)
    n, d = 100_000, 64
    pids = np.repeat(np.arange(25_000), 4)
    emb = unit_rows(rng, n, d).astype(np.float32)
    index = GalleryIndex.from_arrays(MODEL, np.arange(n), pids, emb)
    rows = rng.choice(n, 5, replace=False)
    probes = emb[rows] + 0.05 * rng.standard_normal((5, d)).astype(np.float32)
    res = index.identify(probes, model_id=MODEL, threshold=0.5, k=3)
    naive = l2_normalize(probes) @ emb.T
    for r, row, full in zip(res, rows, naive, strict=True):
        assert r.person_id == pids[row]
        assert r.best_score == pytest.approx(float(full.max()), abs=1e-5)
