"""Index snapshots beside a SQLite gallery: used only when current, removed on changes."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
from fakes import FakePipeline, enroll_three, img, make_service

import faceapp.services as services
from faceapp.gallery import GalleryRepository, NewTemplate, open_database, write_session
from faceapp.gallery.repository import GalleryRepository as Repo
from faceapp.gallery.snapshot import snapshot_path


@pytest.fixture(autouse=True)
def small_snapshots(monkeypatch):
    monkeypatch.setattr(services, "SNAPSHOT_MIN_TEMPLATES", 1)


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
