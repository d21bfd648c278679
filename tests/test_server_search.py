"""pgvector search inside PostgreSQL, checked against brute-force loops and the exact index."""

from __future__ import annotations

import math

import numpy as np
import pytest

from faceapp.errors import GalleryError
from faceapp.gallery import GalleryIndex, GalleryRepository, NewTemplate, open_database, write_session
from faceapp.gallery.server_search import (
    ServerSearch,
    ServerSearchConfig,
    server_search_available,
)

MODEL = "model-a"


@pytest.fixture(autouse=True)
def embeddings_in_clear(monkeypatch):
    """In-server search needs the vectors in clear: these galleries opt out of field-level
    encryption (the default refuses server search, see test_gallery_fieldcrypt.py)."""
    monkeypatch.setenv("FACEAPP_FIELD_ENCRYPTION", "off")


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def fill(engine, n_people: int, per: int, dim: int, seed: int = 0, model: str = MODEL):
    """People with ``per`` templates each around a random centre: ({tid: pid}, (N, D))."""
    rng = np.random.default_rng(seed)
    rows: dict[int, int] = {}
    embs = []
    with write_session(engine) as s:
        repo = GalleryRepository(s)
        for p in range(n_people):
            centre = rng.standard_normal(dim)
            person = repo.add_person(f"p{p:04d}")
            vecs = unit(centre + 0.6 * rng.standard_normal((per, dim)))
            ids = repo.add_templates(person, [NewTemplate(model, v, b"", "") for v in vecs])
            for tid, v in zip(ids, vecs, strict=True):
                rows[int(tid)] = int(person.id)
                embs.append(v)
    return rows, np.stack(embs)


def brute_force(probe, rows, embs, k):
    """[(person_id, best cosine)] best first, with plain loops."""
    best: dict[int, float] = {}
    for (_tid, pid), e in zip(rows.items(), embs, strict=True):
        s = sum(float(a) * float(b) for a, b in zip(probe, e, strict=True))
        best[pid] = max(best.get(pid, -math.inf), s)
    return sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))[:k]


def test_not_available_on_sqlite(tmp_path):
    engine = open_database(str(tmp_path / "g.sqlite"))
    try:
        avail = server_search_available(engine)
        assert not avail.available and "sqlite" in avail.reason
        with pytest.raises(GalleryError, match="not available"):
            ServerSearch.open(engine)
    finally:
        engine.dispose()


@pytest.mark.parametrize("dim", [8, 33, 128])
def test_identify_equals_brute_force_and_the_exact_index(pg_url, dim):
    engine = open_database(pg_url)
    try:
        rows, embs = fill(engine, n_people=40, per=3, dim=dim, seed=dim)
        search = ServerSearch.open(engine, ServerSearchConfig(shortlist=200, ef_search=200))
        assert search.sync() == len(rows)
        assert search.sync() == 0  # nothing new
        exact = GalleryIndex.from_arrays(MODEL, np.array(list(rows)), np.array(list(rows.values())),
                                         embs)
        rng = np.random.default_rng(1)
        probes = unit(embs[rng.choice(len(embs), 6)] + 0.3 * rng.standard_normal((6, dim)))
        with engine.connect() as conn:
            got = search.identify(conn, probes, model_id=MODEL, threshold=0.5, k=4)
        want = exact.identify(probes, model_id=MODEL, threshold=0.5, k=4)
        for probe, g, w in zip(probes, got, want, strict=True):
            loops = brute_force(probe, rows, embs, 4)
            assert [c.person_id for c in g.candidates] == [p for p, _ in loops]
            assert [c.person_id for c in g.candidates] == [c.person_id for c in w.candidates]
            np.testing.assert_allclose([c.score for c in g.candidates], [s for _, s in loops],
                                       atol=1e-5)
            assert g.person_id == w.person_id and g.ambiguous == w.ambiguous
    finally:
        engine.dispose()


def test_the_query_uses_the_hnsw_index(pg_url):
    engine = open_database(pg_url)
    try:
        fill(engine, n_people=300, per=2, dim=16)
        search = ServerSearch.open(engine)
        search.sync()
        with engine.connect() as conn:
            conn.exec_driver_sql("SET enable_seqscan = off")
            q = "[" + ",".join(["0.25"] * 16) + "]"
            plan = "\n".join(r[0] for r in conn.exec_driver_sql(
                "EXPLAIN SELECT template_id FROM template_vector "
                f"WHERE model_id = '{MODEL}' AND dim = 16 "
                f"ORDER BY (embedding::vector(16)) <#> '{q}'::vector(16) LIMIT 10").fetchall())
        assert "ix_template_vector_hnsw_" in plan, plan
    finally:
        engine.dispose()


def test_deleted_and_reembedded_templates_leave_the_server_index(pg_url):
    engine = open_database(pg_url)
    try:
        rows, embs = fill(engine, n_people=5, per=2, dim=16)
        search = ServerSearch.open(engine)
        search.sync()
        probe = embs[0]
        with engine.connect() as conn:
            first = search.identify(conn, probe[None], model_id=MODEL, threshold=0.5, k=1)[0]
        with write_session(engine) as s:
            GalleryRepository(s).delete_person("p0000")
        with engine.connect() as conn:  # cascade: gone without a sync
            after = search.identify(conn, probe[None], model_id=MODEL, threshold=0.5, k=5)[0]
        assert first.candidates[0].person_id not in [c.person_id for c in after.candidates]
        assert search.count(MODEL) == len(rows) - 2
        # a template recomputed by another model moves to that model's index on sync
        with write_session(engine) as s:
            from faceapp.gallery.orm import FaceTemplate

            t = s.get(FaceTemplate, sorted(rows)[2])
            t.replace_embedding("model-b", unit(np.ones(8)))
        search.sync()
        assert search.count(MODEL) == len(rows) - 3 and search.count("model-b") == 1
        with engine.connect() as conn:
            hit = search.identify(conn, unit(np.ones(8))[None], model_id="model-b",
                                  threshold=0.5, k=1)[0]
        assert hit.candidates[0].score == pytest.approx(1.0, abs=1e-6)
    finally:
        engine.dispose()


def test_a_bad_model_id_never_reaches_the_sql(pg_url):
    engine = open_database(pg_url)
    try:
        search = ServerSearch.open(engine)
        with engine.connect() as conn, pytest.raises(GalleryError, match="not valid"):
            search.identify(conn, np.ones((1, 4)), model_id="x'; DROP TABLE person; --",
                            threshold=0.5)
    finally:
        engine.dispose()


def test_service_recognizes_through_the_server_like_the_client(pg_url):
    """The same gallery answered by the in-memory index and by the server: same people,
    same scores; changes by another desktop reach the server-side search on the next call."""
    from fakes import FakePipeline, calibration_for, img

    from faceapp.services import FaceService, choose_server_search

    pipeline = FakePipeline()

    def service(search):
        engine = open_database(pg_url)
        return FaceService(engine, pipeline, calibration_for(pipeline), owns_engine=True,
                           server_search=choose_server_search(engine, search))

    server, client = service("server"), service("client")
    try:
        for p in range(1, 9):
            client.enroll(f"person{p}", [img((p, 0)), img((p, 1))])
        assert server.load_index() == 16
        for probe in (img((3, 4)), img((7, 2)), img((40, 0))):
            a = server.recognize(probe, top_k=3)[0]
            b = client.recognize(probe, top_k=3)[0]
            assert a.person == b.person
            assert [c for c, _ in a.candidates] == [c for c, _ in b.candidates]
            np.testing.assert_allclose([s for _, s in a.candidates],
                                       [s for _, s in b.candidates], atol=1e-5)
        for name, probe in (("person5", img((5, 3))), ("person2", img((7, 3)))):
            a, b = server.verify(name, probe), client.verify(name, probe)
            assert (a.match, a.score) == pytest.approx((b.match, b.score))
        assert server.core.cache.latest() is None  # nothing was pulled into memory by server mode
        client.delete_person("person3")
        assert server.recognize(img((3, 4)))[0].person != "person3"
        client.enroll("late", [img((50, 0))])
        assert server.recognize(img((50, 1)))[0].person == "late"
    finally:
        server.close()
        client.close()


def test_server_mode_is_refused_where_there_is_no_server(tmp_path):
    from faceapp.services import choose_server_search

    engine = open_database(str(tmp_path / "g.sqlite"))
    try:
        assert choose_server_search(engine, "auto") is None
        assert choose_server_search(engine, "client") is None
        with pytest.raises(GalleryError, match="not available"):
            choose_server_search(engine, "server")
    finally:
        engine.dispose()


def test_bench_gallery_on_the_server_reports_figures(pg_server, tmp_path):
    """`faceapp bench gallery --db URL`: the keys and value ranges (no timing claims)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "bench.json"
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, "-m", "faceapp", "bench", "gallery", "--db", pg_server.url(),
         "--sizes", "600,1200", "--probes", "20", "--out", str(out)],
        capture_output=True, text=True, cwd=repo, timeout=300,
        env={**__import__("os").environ, "PYTHONPATH": str(repo)},
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())["gallery_server"]
    assert [s["templates"] for s in result["sizes"]] == [600, 1200]
    for s in result["sizes"]:
        assert s["people"] == s["templates"] // 4
        assert 0.0 <= s["recall_top1"] <= 1.0 and s["recall_top1"] >= 0.9
        assert s["server_ms"]["p50"] > 0 and s["server_ms"]["p95"] >= s["server_ms"]["p50"]
        assert s["client_ms"]["p50"] > 0 and s["index_build_s"] >= 0
        assert s["client_index_mb"] > 0
    # the scratch databases are gone again
    names = pg_server.psql("SELECT datname FROM pg_database;")
    assert "faceapp_bench_" not in names


def test_without_pgvector_the_client_side_search_is_used(pg15_url):
    """Debian's PostgreSQL 15 has no pgvector: auto falls back, server mode says why."""
    from faceapp.services import choose_server_search

    engine = open_database(pg15_url)
    try:
        avail = server_search_available(engine)
        assert not avail.available and "no pgvector" in avail.reason
        assert choose_server_search(engine, "auto") is None
        with pytest.raises(GalleryError, match="no pgvector"):
            choose_server_search(engine, "server")
    finally:
        engine.dispose()


def test_server_recognize_counts_other_models_once_per_gallery_change(pg_url, monkeypatch):
    """Templates of another model refuse in-server search (ModelMismatch, as in memory);
    the full count behind that runs when the gallery changed, not on every search."""
    from fakes import FakePipeline, calibration_for, img

    from faceapp.errors import ModelMismatch
    from faceapp.gallery.repository import GalleryRepository as Repo
    from faceapp.services import FaceService, choose_server_search

    def service(pipeline):
        engine = open_database(pg_url)
        return FaceService(engine, pipeline, calibration_for(pipeline), owns_engine=True,
                           server_search=choose_server_search(engine, "server"))

    calls: list[str] = []
    original = Repo.count_other_model_templates
    monkeypatch.setattr(Repo, "count_other_model_templates",
                        lambda self, model_id: calls.append(model_id) or original(self, model_id))
    svc = service(FakePipeline())
    try:
        svc.enroll("Ann", [img((1, 0))])
        for _ in range(3):
            assert svc.recognize(img((1, 1)))[0].person == "Ann"
        assert len(calls) == 1
        svc.enroll("Bob", [img((2, 0))])  # a change: counted again on the next search
        assert svc.recognize(img((2, 1)))[0].person == "Bob"
        assert len(calls) == 2
    finally:
        svc.close()
    other = service(FakePipeline(seed=7))
    try:
        assert other.model_id != FakePipeline().model_id
        with pytest.raises(ModelMismatch, match="2 template"):
            other.recognize(img((1, 1)))
    finally:
        other.close()


def test_server_search_tau_follows_the_gallery_size_like_the_client(pg_url, monkeypatch):
    """In-server search: the 1:K τ is the calibration point for the number of people with a
    template (counted once per gallery change), the same as the in-memory index's, and the
    live matcher reports it; another desktop's enrolment moves it on the next call."""
    from fakes import FakePipeline, img

    from faceapp.gallery.repository import GalleryRepository as Repo
    from faceapp.nn.calibration import Calibration
    from faceapp.services import FaceService, choose_server_search
    from faceapp.services.live import CacheMatcher

    pipeline = FakePipeline()
    cal = Calibration(pipeline.model_id,
                      {"distance": {"far_0.01": 0.5, "far_0.001": 0.6, "far_0.0001": 0.7}})

    def service(search):
        engine = open_database(pg_url)
        return FaceService(engine, pipeline, cal, owns_engine=True,
                           server_search=choose_server_search(engine, search))

    counts: list[str] = []
    original = Repo.count_people_with_templates
    monkeypatch.setattr(Repo, "count_people_with_templates",
                        lambda self, model_id: counts.append(model_id) or original(self, model_id))
    server, client = service("server"), service("client")
    matcher = CacheMatcher(server)
    try:
        client.enroll("Ann", [img((1, 0))])
        for _ in range(3):
            face = server.recognize(img((1, 1)))[0]
            assert (face.person, face.threshold) == ("Ann", 0.5)
        assert counts == [pipeline.model_id]  # once for this generation
        assert server.identification_threshold() == 0.5 and server.threshold() == 0.5
        for p in (2, 3):
            client.enroll(f"P{p}", [img((p, 0))])
        for svc in (server, client):
            assert svc.recognize(img((1, 1)))[0].threshold == 0.6
        assert len(counts) == 2
        assert server.identification_threshold() == 0.6 and server.threshold() == 0.5
        assert server.verify("Ann", img((1, 2))).threshold == 0.5
        for p in range(4, 12):
            client.enroll(f"P{p}", [img((p, 0))])
        live = matcher.match(pipeline.analyze(img((1, 3))))[0]
        assert (live.person, live.threshold) == ("Ann", 0.7) and matcher.threshold() == 0.7
        assert client.recognize(img((1, 1)))[0].threshold == 0.7
    finally:
        matcher.close()
        server.close()
        client.close()


def test_identify_with_a_normaliser_equals_the_index(pg_url):
    """The server's short list re-scored by the normaliser answers as the in-memory index."""
    from tests.test_open_set_matching import hand_normaliser

    dim = 8
    engine = open_database(pg_url)
    try:
        rows, embs = fill(engine, n_people=30, per=2, dim=dim, seed=4)
        search = ServerSearch.open(engine, ServerSearchConfig(shortlist=200, ef_search=200))
        search.sync()
        norm = hand_normaliser(dim)
        exact = GalleryIndex.from_arrays(MODEL, np.array(list(rows)), np.array(list(rows.values())), embs)
        rng = np.random.default_rng(3)
        probes = unit(embs[rng.choice(len(embs), 5)] + 0.3 * rng.standard_normal((5, dim)))
        with engine.connect() as conn:
            got = search.identify(conn, probes, model_id=MODEL, threshold=0.6, k=3, normaliser=norm)
        want = exact.identify(probes, model_id=MODEL, threshold=0.6, k=3, normaliser=norm)
        raw = exact.identify(probes, model_id=MODEL, threshold=0.6, k=3)
        for g, w in zip(got, want, strict=True):
            assert [c.person_id for c in g.candidates] == [c.person_id for c in w.candidates]
            np.testing.assert_allclose([c.score for c in g.candidates], [c.score for c in w.candidates],
                                       rtol=1e-5)
            assert g.person_id == w.person_id
        assert [r.candidates for r in raw] != [r.candidates for r in want]
    finally:
        engine.dispose()
