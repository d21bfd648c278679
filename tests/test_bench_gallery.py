"""The gallery benchmark hook runs on tiny sizes and reports consistent results."""

from __future__ import annotations

import numpy as np

from faceapp.bench import bench_gallery, naive_top_k


def test_naive_baseline_matches_loops():
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((12, 4)).astype(np.float32)
    pids = np.array([0, 0, 1, 2, 2, 2, 3, 1, 4, 4, 0, 3])
    probe = rng.standard_normal(4).astype(np.float32)
    best: dict[int, float] = {}
    for row, p in zip(emb, pids, strict=True):
        s = sum(float(a) * float(b) for a, b in zip(row, probe, strict=True))
        best[int(p)] = max(best.get(int(p), -np.inf), s)
    expected = sorted(best.items(), key=lambda kv: -kv[1])[:3]
    people, scores = naive_top_k(emb, pids, 5, probe, 3)
    assert people.tolist() == [p for p, _ in expected]
    np.testing.assert_allclose(scores, [s for _, s in expected], atol=1e-5)


def test_bench_gallery_small(tmp_path):
    out = bench_gallery(sizes=(3000,), dim=32, open_sizes=(3000,), probes=5, workdir=tmp_path)
    (search,) = out["search"]
    assert search["templates"] == 3000 and search["people"] == 750
    assert search["agree"] is True
    assert search["index_ms"]["median"] > 0 and search["naive_ms"]["median"] > 0
    assert search["normalised"]["ms"]["median"] > 0 and search["normalised"]["over_cosine_median"] > 0
    (opened,) = out["open"]
    assert opened["snapshot_ok"] is True
    assert opened["open_from_rows_s"] > 0 and opened["open_from_snapshot_s"] > 0
    assert list(tmp_path.iterdir()) == []  # temporary files removed
