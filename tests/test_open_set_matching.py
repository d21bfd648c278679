"""1:K with a score normaliser: the index (exact and two-pass) and the server's short list,
checked against brute-force loops on small hand-built galleries."""

from __future__ import annotations

import math

import numpy as np
import pytest

from faceapp.gallery.matching import GalleryIndex
from faceapp.gallery.matching.normalised import NORMALISED_SHORTLIST
from faceapp.nn.open_set import RAW_SCORES, LearnedNormaliser

MODEL = "model-a"
EXACT = 10**12


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def hand_normaliser(dim: int, seed: int = 0, alpha: float = 0.05, beta: float = 0.6) -> LearnedNormaliser:
    """A small network with random (but fixed) weights: μ, σ vary strongly between faces."""
    rng = np.random.default_rng(seed)
    h = 5
    layers = {"w1": rng.standard_normal((dim, h)) * 2, "b1": rng.standard_normal(h) * 0.1,
              "w2": rng.standard_normal((h, h)), "b2": rng.standard_normal(h) * 0.1,
              "w3": rng.standard_normal((h, 2)), "b3": np.zeros(2)}
    meta = {"model_id": MODEL, "alpha": alpha, "beta": beta, "mu_mean": 0.3, "mu_scale": 0.1,
            "logstd_mean": -2.5, "logstd_scale": 0.3}
    return LearnedNormaliser(layers, meta)


def loop_stats(norm: LearnedNormaliser, x: np.ndarray) -> tuple[float, float]:
    """μ, σ of one face by plain loops over the network (no matrix products)."""
    w = {k: np.asarray(v, dtype=np.float64) for k, v in norm._w.items()}

    def layer(v, wk, bk, act):
        out = []
        for j in range(wk.shape[1]):
            t = sum(float(v[i]) * float(wk[i, j]) for i in range(wk.shape[0])) + float(bk[j])
            out.append(math.tanh(t) if act else t)
        return out

    h1 = layer(x, w["w1"], w["b1"], True)
    h2 = layer(h1, w["w2"], w["b2"], True)
    o = layer(h2, w["w3"], w["b3"], False)
    m0, ms, l0, ls = norm._scale
    return o[0] * ms + m0, math.exp(o[1] * ls + l0)


def brute_force(norm, probe, pids, embs, k, shortlist=NORMALISED_SHORTLIST):
    """[(person, normalised best score)] best first: cosine short list of ``shortlist``
    people, then every template of them re-scored, by loops."""
    cos_best: dict[int, float] = {}
    for pid, e in zip(pids.tolist(), embs, strict=True):
        s = sum(float(a) * float(b) for a, b in zip(probe, e, strict=True))
        cos_best[pid] = max(cos_best.get(pid, -math.inf), s)
    short = [p for p, _ in sorted(cos_best.items(), key=lambda kv: (-kv[1], kv[0]))[:max(k, shortlist)]]
    mp, sp = loop_stats(norm, probe)
    best: dict[int, float] = {}
    for pid, e in zip(pids.tolist(), embs, strict=True):
        if pid not in short:
            continue
        s = sum(float(a) * float(b) for a, b in zip(probe, e, strict=True))
        mg, sg = loop_stats(norm, e)
        z = 0.5 * ((s - mg) / sg + (s - mp) / sp)
        best[pid] = max(best.get(pid, -math.inf), norm.alpha * z + norm.beta)
    return sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))[:k]


class DotScorer:
    name = "head_l1"

    def score_matrix(self, probes: np.ndarray, gallery: np.ndarray) -> np.ndarray:
        return probes @ gallery.T


def gallery(n_people: int, per: int, dim: int, seed: int):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_people, dim))
    embs = unit(np.repeat(centres, per, axis=0) + 0.7 * rng.standard_normal((n_people * per, dim)))
    pids = np.repeat(np.arange(100, 100 + n_people), per).astype(np.int64)
    tids = np.arange(len(pids), dtype=np.int64) + 1
    perm = rng.permutation(len(pids))  # arrival order differs from person order
    return tids[perm], pids[perm], embs[perm]


@pytest.mark.parametrize("quantize_min_rows", [EXACT, 1])
def test_identify_with_normaliser_equals_brute_force(quantize_min_rows):
    dim = 8
    tids, pids, embs = gallery(n_people=25, per=3, dim=dim, seed=3)
    norm = hand_normaliser(dim)
    index = GalleryIndex(MODEL, dim, quantize_min_rows=quantize_min_rows)
    index.add(tids, pids, embs, model_id=MODEL)
    rng = np.random.default_rng(7)
    probes = unit(embs[rng.choice(len(embs), 8)] + 0.4 * rng.standard_normal((8, dim)))
    tau = 0.6
    results = index.identify(probes, model_id=MODEL, threshold=tau, k=4, normaliser=norm)
    for probe, res in zip(probes, results, strict=True):
        want = brute_force(norm, probe, pids, embs, 4)
        assert [c.person_id for c in res.candidates] == [p for p, _ in want]
        np.testing.assert_allclose([c.score for c in res.candidates], [s for _, s in want], rtol=1e-6)
        assert res.person_id == (want[0][0] if want[0][1] >= tau else None)


def test_the_normalised_order_and_decision_differ_from_cosine():
    """The test above could pass with a normaliser that changes nothing: this one shows the
    hand-built normaliser re-orders candidates and flips decisions on the same gallery."""
    dim = 8
    tids, pids, embs = gallery(n_people=25, per=3, dim=dim, seed=3)
    norm = hand_normaliser(dim)
    index = GalleryIndex.from_arrays(MODEL, tids, pids, embs)
    rng = np.random.default_rng(11)
    probes = unit(rng.standard_normal((40, dim)))
    raw = index.identify(probes, model_id=MODEL, threshold=0.6, k=4)
    got = index.identify(probes, model_id=MODEL, threshold=0.6, k=4, normaliser=norm)
    orders = sum([c.person_id for c in a.candidates] != [c.person_id for c in b.candidates]
                 for a, b in zip(raw, got, strict=True))
    flips = sum(a.is_known != b.is_known for a, b in zip(raw, got, strict=True))
    assert orders > 0 and flips > 0


def test_raw_scores_change_nothing_and_heads_are_refused():
    dim = 8
    tids, pids, embs = gallery(n_people=12, per=2, dim=dim, seed=5)
    index = GalleryIndex.from_arrays(MODEL, tids, pids, embs)
    probes = unit(np.random.default_rng(2).standard_normal((5, dim)))
    a = index.identify(probes, model_id=MODEL, threshold=0.5, k=3)
    b = index.identify(probes, model_id=MODEL, threshold=0.5, k=3, normaliser=RAW_SCORES)
    assert a == b
    head = DotScorer()  # any scorer object (a head) is not normalised
    with pytest.raises(ValueError, match="cosine"):
        index.identify(probes, model_id=MODEL, threshold=0.5, k=3, scorer=head,
                       normaliser=hand_normaliser(dim))


def test_a_small_gallery_is_rescored_whole():
    """Fewer people than the short list: everyone is re-scored (the short list is the gallery)."""
    dim = 8
    tids, pids, embs = gallery(n_people=4, per=3, dim=dim, seed=9)
    norm = hand_normaliser(dim, seed=1)
    index = GalleryIndex.from_arrays(MODEL, tids, pids, embs)
    probe = unit(np.random.default_rng(4).standard_normal(dim))
    (res,) = index.identify(probe, model_id=MODEL, threshold=0.0, k=10, normaliser=norm)
    want = brute_force(norm, probe, pids, embs, 10, shortlist=10**6)
    assert [c.person_id for c in res.candidates] == [p for p, _ in want]
    np.testing.assert_allclose([c.score for c in res.candidates], [s for _, s in want], rtol=1e-6)


def loop_normalised(norm: LearnedNormaliser, a: np.ndarray, b: np.ndarray) -> float:
    """α s' + β of one pair by loops (cosine, the two faces' μ, σ, the s-norm formula)."""
    s = sum(float(x) * float(y) for x, y in zip(a, b, strict=True))
    ma, sa = loop_stats(norm, a)
    mb, sb = loop_stats(norm, b)
    return norm.alpha * 0.5 * ((s - ma) / sa + (s - mb) / sb) + norm.beta


def test_verify_with_normaliser_equals_brute_force():
    """1:1: the person's best normalised template score, judged against τ; not the cosine one."""
    dim = 8
    tids, pids, embs = gallery(n_people=6, per=3, dim=dim, seed=13)
    norm = hand_normaliser(dim, seed=2)
    index = GalleryIndex.from_arrays(MODEL, tids, pids, embs)
    rng = np.random.default_rng(5)
    probes = unit(embs[rng.choice(len(embs), 6)] + 0.5 * rng.standard_normal((6, dim)))
    tau, differs, flips = 0.6, 0, 0
    for probe in probes:
        for pid in np.unique(pids).tolist():
            got = index.verify(pid, probe, model_id=MODEL, threshold=tau, normaliser=norm)
            want = max(loop_normalised(norm, probe, e) for e in embs[pids == pid])
            assert got.score == pytest.approx(want, rel=1e-6, abs=1e-9)
            assert got.match == (want >= tau) and got.n_templates == 3
            raw = index.verify(pid, probe, model_id=MODEL, threshold=tau)
            differs += abs(raw.score - got.score) > 1e-3
            flips += raw.match != got.match
    assert differs > 0 and flips > 0  # the normaliser took part
    with pytest.raises(ValueError, match="cosine"):
        index.verify(int(pids[0]), probes[0], model_id=MODEL, threshold=tau, scorer=DotScorer(),
                     normaliser=norm)


def test_pair_scores_with_normaliser_equal_loops():
    """The Calibrate page's gallery pairs are scored as verify scores them."""
    dim = 8
    tids, pids, embs = gallery(n_people=4, per=2, dim=dim, seed=17)
    norm = hand_normaliser(dim, seed=3)
    index = GalleryIndex.from_arrays(MODEL, tids, pids, embs)
    scores, same = index.pair_scores(normaliser=norm)
    raw, raw_same = index.pair_scores()
    np.testing.assert_array_equal(same, raw_same)
    # the index orders rows by person; rebuild that order to enumerate the pairs i < j
    order = np.lexsort((tids, pids))
    e, p = embs[order], pids[order]
    want = [loop_normalised(norm, e[i], e[j]) for i in range(len(e)) for j in range(i + 1, len(e))]
    np.testing.assert_allclose(scores, want, rtol=1e-5)
    np.testing.assert_array_equal(same, [p[i] == p[j] for i in range(len(p)) for j in range(i + 1, len(p))])
    assert np.max(np.abs(scores - raw)) > 1e-3
    with pytest.raises(ValueError, match="cosine"):
        index.pair_scores(DotScorer(), normaliser=norm)
