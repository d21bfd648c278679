"""Gallery storage on a real SQLite file: round trips, cascade, rename, schema checks."""

from __future__ import annotations

import hashlib
import os
import stat

import numpy as np
import pytest
from fakes import raw_connect
from sqlalchemy import select

from faceapp.errors import DuplicatePerson, GalleryError, PersonNotFound
from faceapp.gallery import (
    SCHEMA_VERSION,
    DatabaseConfig,
    GalleryIndex,
    GalleryRepository,
    NewTemplate,
    integrity_check,
    open_database,
    read_session,
    write_session,
)
from faceapp.gallery.orm import Event, FaceTemplate
from faceapp.gallery.types import embedding_from_bytes, embedding_to_bytes

MODEL = "model-a"


def file_digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def raw_count(path, table: str) -> int:
    con = raw_connect(path)
    try:
        return con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    finally:
        con.close()


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "sub" / "gallery.sqlite"


@pytest.fixture
def engine(db_path):
    eng = open_database(str(db_path))
    yield eng
    eng.dispose()


def add_person(engine, name, embs, model_id=MODEL, crop=b"\x89PNG fake"):
    with write_session(engine) as s:
        repo = GalleryRepository(s)
        person = repo.add_person(name)
        ids = repo.add_templates(
            person,
            [NewTemplate(model_id, e, crop, f"{name}_{i}.jpg", {"ok": True, "sharpness": 12.5})
             for i, e in enumerate(embs)],
        )
        return person.id, ids


def test_new_file_is_private_wal_and_versioned(db_path, engine):
    mode = stat.S_IMODE(os.stat(db_path).st_mode)
    assert mode == 0o600
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar().lower() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() > 0
        assert conn.exec_driver_sql("SELECT version FROM schema_info").scalar() == SCHEMA_VERSION


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_embedding_round_trip_is_byte_exact(engine, dtype):
    rng = np.random.default_rng(0)
    embs = rng.standard_normal((3, 128)).astype(dtype)
    _, ids = add_person(engine, "Ann", embs)
    with read_session(engine) as s:
        rows = s.execute(select(FaceTemplate).order_by(FaceTemplate.id)).scalars().all()
        assert [r.id for r in rows] == ids
        for row, e in zip(rows, embs, strict=True):
            assert row.embedding.dtype == np.float32
            assert row.dim == 128
            assert row.embedding.tobytes() == e.astype(np.float32).tobytes()
        index_rows = GalleryRepository(s).index_rows(MODEL)
    assert index_rows.embeddings.tobytes() == embs.astype(np.float32).tobytes()


def test_embedding_type_rejects_bad_vectors():
    with pytest.raises(ValueError):
        embedding_to_bytes(np.zeros((2, 3)))
    with pytest.raises(ValueError):
        embedding_to_bytes(np.array([1.0, np.nan]))
    with pytest.raises(ValueError):
        embedding_to_bytes(np.ones(4), dim=5)
    with pytest.raises(ValueError):
        embedding_from_bytes(b"\x00" * 7)
    v = np.array([1.5, -2.25, 3e-8], dtype=np.float32)
    assert embedding_from_bytes(embedding_to_bytes(v)).tobytes() == v.tobytes()


def test_template_dimension_is_checked(engine):
    with pytest.raises(ValueError), write_session(engine) as s:
        s.add(FaceTemplate(person_id=1, model_id=MODEL, dim=4, embedding=np.ones(5)))


def test_cascade_delete_removes_templates_and_crops(db_path, engine):
    add_person(engine, "Ann", np.ones((3, 8)))
    add_person(engine, "Bob", np.ones((2, 8)))
    assert raw_count(db_path, "face_crop") == 5
    with write_session(engine) as s:
        _, n = GalleryRepository(s).delete_person("Ann")
    assert n == 3
    assert raw_count(db_path, "face_template") == 2
    assert raw_count(db_path, "face_crop") == 2
    assert raw_count(db_path, "person") == 1
    with read_session(engine) as s, pytest.raises(PersonNotFound):
        GalleryRepository(s).get_person("Ann")


def test_rename_and_duplicates(engine):
    add_person(engine, "Ann", np.ones((1, 4)))
    add_person(engine, "Bob", np.ones((1, 4)))
    with write_session(engine) as s:
        GalleryRepository(s).rename_person("Ann", "  Ann   Smith ")
    with read_session(engine) as s:
        repo = GalleryRepository(s)
        assert [p.name for p in repo.people()] == ["Ann Smith", "Bob"]
        assert repo.people()[0].n_templates == 1
    with pytest.raises(DuplicatePerson), write_session(engine) as s:
        GalleryRepository(s).rename_person("Ann Smith", "Bob")
    with pytest.raises(DuplicatePerson), write_session(engine) as s:
        GalleryRepository(s).add_person("Bob")
    with pytest.raises(GalleryError), write_session(engine) as s:
        GalleryRepository(s).add_person("   ")
    with pytest.raises(GalleryError), write_session(engine) as s:
        GalleryRepository(s).add_person("bad\x00name")


def test_failed_unit_of_work_rolls_back(db_path, engine):
    with pytest.raises(RuntimeError), write_session(engine) as s:
        repo = GalleryRepository(s)
        p = repo.add_person("Ann")
        repo.add_templates(p, [NewTemplate(MODEL, np.ones(4))])
        raise RuntimeError("boom in the middle of an enrolment")
    assert raw_count(db_path, "person") == 0
    assert raw_count(db_path, "face_template") == 0


def test_index_from_database_matches_contents(engine):
    rng = np.random.default_rng(1)
    ids = {}
    for name in ["Ann", "Bob", "Cid"]:
        embs = rng.standard_normal((2, 16)).astype(np.float32)
        ids[name] = add_person(engine, name, embs)[0]
    add_person(engine, "Other", rng.standard_normal((2, 16)), model_id="model-b")
    with read_session(engine) as s:
        repo = GalleryRepository(s)
        rows = repo.index_rows(MODEL)
        assert repo.model_counts() == {MODEL: 6, "model-b": 2}
        assert [t for t, _ in repo.stale_templates(MODEL)] == [7, 8]
    index = GalleryIndex.from_arrays(MODEL, rows.template_ids, rows.person_ids, rows.embeddings)
    assert sorted(index.people().tolist()) == sorted(ids.values())
    probe = rows.embeddings[3]
    (res,) = index.identify(probe, model_id=MODEL, threshold=0.99)
    assert res.person_id == rows.person_ids[3]


def test_events_and_settings(engine):
    with write_session(engine) as s:
        repo = GalleryRepository(s)
        ann = repo.add_person("Ann").pseudonym
        repo.log_event("verify", "match", person="Ann", score=0.8, threshold=0.5,
                       scorer="distance", model_id=MODEL, detail="ann's probe")
        repo.log_event("enroll", "rejected", person="Nobody", detail="nobody: no face")
        repo.set_setting("k", "1")
    with write_session(engine) as s:
        repo = GalleryRepository(s)
        repo.set_setting("k", "2")
    with read_session(engine) as s:
        repo = GalleryRepository(s)
        assert repo.get_setting("k") == "2"
        ev, refused = s.execute(select(Event).order_by(Event.id)).scalars().all()
        # stored: Ann's pseudonym, and no name in the detail; a name of no one: nothing
        assert (ev.kind, ev.person, ev.outcome, ev.score, ev.threshold, ev.scorer) == (
            "verify", ann, "match", 0.8, 0.5, "distance")
        assert ev.detail == f"{ann}'s probe" and ann.startswith("p:")
        assert refused.person is None and refused.detail == "(a name not enrolled): no face"
        shown = repo.events()
        assert [(e.kind, e.person, e.pseudonym) for e in shown] == [
            ("enroll", None, None), ("verify", "Ann", ann)]


def test_newer_schema_is_refused_untouched(db_path, engine):
    add_person(engine, "Ann", np.ones((1, 4)))
    engine.dispose()
    con = raw_connect(db_path)
    con.execute("UPDATE schema_info SET version = ?", (SCHEMA_VERSION + 1,))
    con.commit()
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    before = file_digest(db_path)
    with pytest.raises(GalleryError, match="newer"):
        open_database(str(db_path))
    assert file_digest(db_path) == before


@pytest.mark.parametrize("content", [
    b"this is not a database at all" * 100,
    b"SQLite format 3\x00" + b"\xff" * 4000,
])
def test_corrupt_file_is_refused_untouched(tmp_path, content):
    path = tmp_path / "broken.sqlite"
    path.write_bytes(content)
    with pytest.raises(GalleryError):
        open_database(str(path))
    assert path.read_bytes() == content


def test_foreign_sqlite_database_is_refused_untouched(tmp_path):
    path = tmp_path / "other.sqlite"
    con = raw_connect(path)
    con.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
    con.commit()
    con.close()
    before = file_digest(path)
    with pytest.raises(GalleryError, match="not a faceapp gallery"):
        open_database(str(path))
    assert file_digest(path) == before


def test_missing_file_without_create(tmp_path):
    with pytest.raises(GalleryError, match="no gallery"):
        open_database(str(tmp_path / "nope.sqlite"), DatabaseConfig(create=False))


def test_locked_database_gives_gallery_error(db_path):
    engine = open_database(str(db_path), DatabaseConfig(busy_timeout_s=0.2))
    holder = raw_connect(db_path)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        from faceapp.gallery import translate_errors

        with pytest.raises(GalleryError, match="locked"), translate_errors(str(db_path)), \
                write_session(engine) as s:
            GalleryRepository(s).add_person("Ann")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        engine.dispose()
    assert raw_count(db_path, "person") == 0


def test_reopen_existing_gallery(db_path, engine):
    add_person(engine, "Ann", np.ones((2, 4)))
    engine.dispose()
    again = open_database(str(db_path))
    try:
        with read_session(again) as s:
            assert [p.name for p in GalleryRepository(s).people()] == ["Ann"]
        assert integrity_check(again) == "ok"
    finally:
        again.dispose()


def test_bulk_insert_large_gallery_opens_and_searches(tmp_path):
    """≥100,000 synthetic templates: bulk insert, cold open into an index, correct search."""
    path = tmp_path / "large.sqlite"
    engine = open_database(str(path))
    rng = np.random.default_rng(3)
    n_people, per, d = 25_000, 4, 64
    with write_session(engine) as s:
        conn = s.connection()
        conn.exec_driver_sql(
            "INSERT INTO person (id, name, created, updated, pseudonym) VALUES (?, ?, ?, ?, ?)",
            [(i + 1, f"p{i:06d}", "2024-01-01 00:00:00", "2024-01-01 00:00:00", f"p:{i:016x}")
             for i in range(n_people)],
        )
        emb = rng.standard_normal((n_people * per, d)).astype(np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        pids = np.repeat(np.arange(1, n_people + 1), per)
        GalleryRepository(s).bulk_add_templates(pids, emb, MODEL)
    engine.dispose()

    engine = open_database(str(path))
    try:
        with read_session(engine) as s:
            rows = GalleryRepository(s).index_rows(MODEL)
        assert rows.embeddings.shape == (n_people * per, d)
        assert rows.embeddings.tobytes() == emb.tobytes()
        index = GalleryIndex.from_arrays(MODEL, rows.template_ids, rows.person_ids,
                                         rows.embeddings)
        picks = rng.choice(n_people * per, 4, replace=False)
        probes = emb[picks] + 0.05 * rng.standard_normal((4, d)).astype(np.float32)
        results = index.identify(probes, model_id=MODEL, threshold=0.5, k=5)
        naive = (probes / np.linalg.norm(probes, axis=1, keepdims=True)) @ emb.T
        for res, pick, full in zip(results, picks, naive, strict=True):
            assert res.person_id == pids[pick]
            assert res.best_score == pytest.approx(float(full.max()), abs=1e-5)
    finally:
        engine.dispose()
