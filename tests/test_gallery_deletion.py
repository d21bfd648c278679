"""Deletion you can verify: after a person is deleted, their biometric bytes are in none of
the gallery's disk files (database, -wal, index snapshots), and a receipt says what went."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from fakes import CROP, DIM, enroll_three, img, make_service, raw_connect

from faceapp.cli import gallery_cmds, main
from faceapp.gallery import DatabaseConfig, GalleryRepository, NewTemplate, write_session
from faceapp.gallery.database import open_database
from faceapp.services import index_cache
from faceapp.vision.images import encode_png

CANARY = "Canary Person"
SOURCE = "/photos/canary-7f3a9c1e.jpg"


@pytest.fixture(autouse=True)
def small_snapshots(monkeypatch):
    monkeypatch.setattr(index_cache, "SNAPSHOT_MIN_TEMPLATES", 1)


def gallery_files(db: Path) -> list[Path]:
    """Every file beside the database that belongs to it (db, -wal, -shm, snapshots...)."""
    return sorted(p for p in db.parent.iterdir() if p.name.startswith(db.name) and p.is_file())


def count(files: list[Path], needle: bytes) -> int:
    return sum(p.read_bytes().count(needle) for p in files)


def canary_templates(model_id: str, n: int = 3) -> list[NewTemplate]:
    rng = np.random.default_rng(1234)
    return [NewTemplate(model_id, rng.standard_normal(DIM).astype(np.float32),
                        crop_png=encode_png(rng.integers(0, 256, (CROP, CROP, 3), np.uint8)),
                        source=SOURCE) for _ in range(n)]


def build(db: Path, encrypt: bool) -> tuple[list[NewTemplate], list[int], int]:
    """A gallery of three people plus the canary; an index snapshot holding them all."""
    url = f"sqlite:///{db}"
    open_database(url, DatabaseConfig(encrypt=encrypt)).dispose()
    svc = make_service(url)
    enroll_three(svc)
    templates = canary_templates(svc.model_id)
    with write_session(svc.engine) as s:
        repo = GalleryRepository(s)
        person = repo.add_person(CANARY)
        ids = repo.add_templates(person, templates)
        pid = int(person.id)
    assert svc.recognize(img((1, 1)))[0].person == "Ann"  # index loaded: snapshot on close
    svc.close()
    return templates, ids, pid


def needles(templates: list[NewTemplate]) -> list[bytes]:
    out = [t.embedding.astype("<f4").tobytes() for t in templates]
    out += [t.crop_png[-64:] for t in templates]  # the image data, not the common header
    return [*out, SOURCE.encode()]


@pytest.mark.parametrize("encrypt", [False, True])
def test_deleted_person_leaves_no_bytes_on_disk(tmp_path, encrypt):
    db = tmp_path / "g.sqlite"
    templates, _, _ = build(db, encrypt)
    files = gallery_files(db)
    assert any(".index-" in p.name for p in files)  # the snapshot holds the canary too
    found_before = [count(files, n) for n in needles(templates)]
    if not encrypt:  # the grep does find the canary while it is there
        assert all(c >= 1 for c in found_before)
    else:
        assert found_before == [0] * len(found_before)
    svc = make_service(f"sqlite:///{db}")
    try:
        svc.recognize(img((2, 1)))  # a live index and a -wal while the deletion runs
        receipt = svc.erase_person(CANARY)
        after = gallery_files(db)
        found_after = [count(after, n) for n in needles(templates)]
        assert receipt.templates == 3 and receipt.crops == 3
        assert receipt.storage["vacuumed"] is True and receipt.storage["freelist_pages"] == 0
        assert receipt.storage["wal_busy"] is False and receipt.storage["wal_bytes"] == 0
        assert receipt.encrypted is encrypt
        assert CANARY not in svc.people_names()
        assert svc.recognize(img((2, 1)))[0].person == "Bob"  # the others are intact
    finally:
        svc.close()
    assert found_after == [0] * len(found_after)
    final = gallery_files(db)  # the snapshot rewritten at close, without the canary
    assert any(".index-" in p.name for p in final)
    assert [count(final, n) for n in needles(templates)] == [0] * len(found_after)
    con = raw_connect(db)
    try:
        assert con.execute("SELECT count(*) FROM face_template").fetchone()[0] == 6
        assert con.execute("SELECT count(*) FROM face_crop").fetchone()[0] == 6
    finally:
        con.close()


def test_delete_with_receipt_from_the_cli(tmp_path, monkeypatch, capsys):
    db = tmp_path / "g.sqlite"
    _, ids, pid = build(db, encrypt=True)
    monkeypatch.setattr(gallery_cmds.FaceService, "open",
                        classmethod(lambda cls, *a, **k: make_service(f"sqlite:///{db}")))
    path = tmp_path / "receipt.json"
    assert main(["people", "delete", CANARY, "--yes", "--receipt", str(path), "--db", str(db)]) == 0
    assert "receipt written" in capsys.readouterr().out
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    doc = json.loads(path.read_text())
    assert doc["format"] == "faceapp-deletion-receipt" and doc["person"] == CANARY
    assert doc["removed"] == {"people": 1, "templates": 3, "crops": 3}
    expected = "\n".join([f"person:{pid}", *(f"template:{i}" for i in sorted(ids))])
    assert doc["removed_ids_sha256"] == hashlib.sha256(expected.encode()).hexdigest()
    assert doc["encrypted_at_rest"] is True and doc["storage"]["vacuumed"] is True
    assert doc["deleted_at"].endswith("+00:00")
    # a receipt that cannot be written: refused before anything is deleted
    assert main(["people", "delete", "Ann", "--yes", "--receipt",
                 str(tmp_path / "missing" / "r.json"), "--db", str(db)]) == 2
    assert "nothing deleted" in capsys.readouterr().err
    svc = make_service(f"sqlite:///{db}")
    try:
        assert svc.people_names() == ["Ann", "Bob", "Cid"]
    finally:
        svc.close()
