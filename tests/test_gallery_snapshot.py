"""Index snapshots beside a SQLite gallery: used only when current, removed on changes."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
from fakes import FakePipeline, enroll_three, img, make_service

from faceapp.gallery import GalleryRepository, NewTemplate, open_database, write_session
from faceapp.gallery.repository import GalleryRepository as Repo
from faceapp.gallery.snapshot import snapshot_path
from faceapp.services import index_cache


@pytest.fixture(autouse=True)
def small_snapshots(monkeypatch):
    monkeypatch.setattr(index_cache, "SNAPSHOT_MIN_TEMPLATES", 1)


@pytest.fixture
def db_url(tmp_path):
    return f"sqlite:///{tmp_path / 'g.sqlite'}"


def snap_file(db_url):
    return snapshot_path(db_url, FakePipeline().model_id)


def test_snapshot_written_private_and_used(db_url, monkeypatch):
    svc = make_service(db_url)
    enroll_three(svc)
    probes = img((1, 4), (2, 4), (9, 9))
    before = svc.recognize(probes, top_k=3)
    svc.close()
    path = snap_file(db_url)
    assert path.is_file()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600

    def no_rows(self, model_id, chunk=0):
        raise AssertionError("the snapshot should have been used")

    monkeypatch.setattr(Repo, "index_rows", no_rows)
    again = make_service(db_url)
    try:
        assert again.recognize(probes, top_k=3) == before
        assert again.verify("Bob", img((2, 4))).match
    finally:
        again.close()


def test_changes_remove_or_outdate_the_snapshot(db_url):
    svc = make_service(db_url)
    enroll_three(svc)
    svc.recognize(img((1, 1)))
    svc.close()
    path = snap_file(db_url)
    assert path.is_file()

    # a change through the service removes it (deleted faces must not linger)
    svc = make_service(db_url)
    svc.recognize(img((1, 1)))  # index loaded (from the snapshot), then kept up to date
    svc.delete_person("Ann")
    assert not path.is_file()
    svc.close()  # writes a fresh one for the new state
    assert path.is_file()

    # a change behind the service's back outdates it: ignored, not used
    engine = open_database(db_url)
    with write_session(engine) as s:
        repo = GalleryRepository(s)
        repo.delete_person("Cid")
    engine.dispose()
    svc = make_service(db_url)
    try:
        (face,) = svc.recognize(img((3, 5)), top_k=5)
        assert face.person is None
        assert "Cid" not in [n for n, _ in face.candidates]
    finally:
        svc.close()


def test_corrupt_or_foreign_snapshot_is_ignored(db_url, tmp_path):
    svc = make_service(db_url)
    enroll_three(svc)
    svc.recognize(img((1, 1)))
    svc.close()
    path = snap_file(db_url)
    path.write_bytes(b"garbage")
    svc = make_service(db_url)
    try:
        assert svc.recognize(img((2, 3)))[0].person == "Bob"
    finally:
        svc.close()
    # a snapshot copied from another gallery (other uuid) is not used
    other_url = f"sqlite:///{tmp_path / 'other.sqlite'}"
    engine = open_database(other_url)
    with write_session(engine) as s:
        repo = GalleryRepository(s)
        p = repo.add_person("Zed")
        repo.add_templates(p, [NewTemplate(FakePipeline().model_id, np.ones(16), None)])
    engine.dispose()
    snap_file(other_url).write_bytes(path.read_bytes())
    other = make_service(other_url)
    try:
        assert [p.name for p in other.list_people()] == ["Zed"]
        (face,) = other.recognize(img((1, 1)), top_k=5)
        assert [n for n, _ in face.candidates] == ["Zed"]
    finally:
        other.close()


@pytest.mark.parametrize("compressed", [False, True])
def test_snapshot_arrays_read_in_place_equal_np_load(compressed):
    import io
    import zipfile

    from faceapp.gallery.snapshot import npz_arrays

    rng = np.random.default_rng(0)
    arrays = {"meta": np.frombuffer(b'{"a": 1}', dtype=np.uint8),
              "template_ids": np.arange(7, dtype=np.int64),
              "person_ids": np.zeros(0, dtype=np.int64),
              "embeddings": rng.standard_normal((7, 5)).astype(np.float32)}
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    raw = buf.getvalue()
    got = npz_arrays(raw, tuple(arrays))
    for name, want in arrays.items():
        assert got[name].dtype == want.dtype and np.array_equal(got[name], want)
    # a truncated buffer is an error (the caller then reads the database rows)
    with pytest.raises((ValueError, OSError, zipfile.BadZipFile)):
        npz_arrays(raw[:-40], tuple(arrays))
