"""The int8 first pass + exact float32 re-rank of GalleryIndex.identify gives the exact
search's candidates and scores (checked against plain loops and the float32 path)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from faceapp.gallery.matching import GalleryIndex

MODEL = "m"
EXACT = 10**12  # quantize_min_rows that keeps the exact path


def build(emb, pids, quantize_min_rows):
    index = GalleryIndex(MODEL, emb.shape[1], quantize_min_rows=quantize_min_rows)
    index.add(np.arange(len(pids)), pids, emb, model_id=MODEL)
    return index


def loop_top_k(emb, pids, probe, k):
    """Best cosine per person with Python loops, sorted best first."""
    pn = math.sqrt(sum(float(v) ** 2 for v in probe))
    best: dict[int, float] = {}
    for row, pid in zip(emb.tolist(), pids.tolist(), strict=True):
        rn = math.sqrt(sum(v * v for v in row)) or 1.0
        s = sum(a * float(b) for a, b in zip(row, probe, strict=True)) / (rn * pn)
        best[pid] = max(best.get(pid, -math.inf), s)
    return sorted(best.items(), key=lambda kv: -kv[1])[:k]


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_quantized_identify_equals_loops_and_exact(seed, dtype):
    rng = np.random.default_rng(seed)
    n_people, d = int(rng.integers(5, 60)), int(rng.choice([8, 16, 33]))
    pids = np.repeat(rng.choice(1000, n_people, replace=False), rng.integers(1, 4, n_people))
    emb = rng.standard_normal((pids.shape[0], d)).astype(dtype)
    rng.shuffle(pids)
    probes = np.concatenate([emb[:2] + 0.05 * rng.standard_normal((2, d)), rng.standard_normal((1, d))])
    k = int(rng.integers(1, 7))
    fast = build(emb, pids, quantize_min_rows=1)
    exact = build(emb, pids, quantize_min_rows=EXACT)
    for probe in probes:
        (a,) = fast.identify(probe, model_id=MODEL, threshold=0.5, k=k)
        (b,) = exact.identify(probe, model_id=MODEL, threshold=0.5, k=k)
        expected = loop_top_k(emb, pids, probe, k)
        assert [c.person_id for c in a.candidates] == [p for p, _ in expected]
        np.testing.assert_allclose([c.score for c in a.candidates], [s for _, s in expected], atol=1e-5)
        assert [c.person_id for c in a.candidates] == [c.person_id for c in b.candidates]
        assert (a.person_id, a.ambiguous) == (b.person_id, b.ambiguous)


def test_near_ties_widen_the_short_list(monkeypatch):
    """800 people within the int8 error of each other: only a short list widened by the
    rounding-error certificate finds the exact order."""
    rng = np.random.default_rng(5)
    d = 16
    base = rng.standard_normal(d)
    base /= np.linalg.norm(base)
    emb = base + 0.01 * rng.standard_normal((800, d))
    pids = np.arange(800)
    fast = build(emb, pids, quantize_min_rows=1)
    sizes: list[int] = []
    original = GalleryIndex._exact_people

    def spy(self, probe, groups):
        sizes.append(len(groups))
        return original(self, probe, groups)

    monkeypatch.setattr(GalleryIndex, "_exact_people", spy)
    (res,) = fast.identify(base, model_id=MODEL, threshold=0.0, k=5)
    (ref,) = build(emb, pids, quantize_min_rows=EXACT).identify(base, model_id=MODEL, threshold=0.0, k=5)
    assert [c.person_id for c in res.candidates] == [c.person_id for c in ref.candidates]
    expected = loop_top_k(emb, pids, base, 5)
    np.testing.assert_allclose([c.score for c in res.candidates], [s for _, s in expected], atol=1e-6)
    assert max(sizes) >= 100  # the error bound widened the short list far beyond k


def test_quantized_copy_follows_changes_and_many_probes_use_exact():
    rng = np.random.default_rng(1)
    emb = rng.standard_normal((40, 8)).astype(np.float32)
    pids = np.arange(40) // 2
    index = build(emb, pids, quantize_min_rows=1)
    probe = emb[7]
    assert index.identify(probe, model_id=MODEL, threshold=0.0, k=1)[0].person_id == 3
    index.remove_person(3)
    assert index.identify(probe, model_id=MODEL, threshold=0.0, k=1)[0].person_id != 3
    index.add([100], [77], probe[None] * 2.0, model_id=MODEL)
    (res,) = index.identify(probe, model_id=MODEL, threshold=0.0, k=2)
    assert res.person_id == 77 and res.best_score == pytest.approx(1.0, abs=1e-6)
    many = index.identify(emb[:6], model_id=MODEL, threshold=0.0, k=3)  # exact path (P > 4)
    exact = build(*_arrays(index), quantize_min_rows=EXACT).identify(
        emb[:6], model_id=MODEL, threshold=0.0, k=3
    )
    assert [[c.person_id for c in r.candidates] for r in many] == [
        [c.person_id for c in r.candidates] for r in exact
    ]
    assert index.identify(np.zeros((0, 8), np.float32), model_id=MODEL, threshold=0.0, k=1) == []


def _arrays(index: GalleryIndex):
    return index.embeddings().copy(), index.row_person_ids()
