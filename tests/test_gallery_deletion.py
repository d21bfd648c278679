"""Deletion you can verify: after a person is deleted, their biometric bytes are in none of
the gallery's disk files (database, -wal, index snapshots), nor is their name (the history and
the audit log name people by a pseudonym, which the deletion unlinks), and a receipt says what
went."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from fakes import CROP, enroll_three, identity_vector, img, make_service, raw_connect
from sqlalchemy import column, inspect, select, table

from faceapp.cli import gallery_cmds, main
from faceapp.errors import QualityRejected
from faceapp.gallery import (
    DatabaseConfig,
    GalleryRepository,
    NewTemplate,
    audit,
    pseudonyms,
    read_session,
    write_session,
)
from faceapp.gallery.database import open_database
from faceapp.services import index_cache
from faceapp.vision.images import encode_png

CANARY = "Canary Person"
SOURCE = "/photos/canary-7f3a9c1e.jpg"
REFUSED = "Refused Canary"
"""A name whose enrolment is refused (blurred face): it is never stored at all."""
NAMES = (CANARY.encode(), CANARY.lower().encode(), REFUSED.encode(), REFUSED.lower().encode())


@pytest.fixture(autouse=True)
def small_snapshots(monkeypatch):
    monkeypatch.setattr(index_cache, "SNAPSHOT_MIN_TEMPLATES", 1)


def gallery_files(db: Path) -> list[Path]:
    """Every file beside the database that belongs to it (db, -wal, -shm, snapshots...)."""
    return sorted(p for p in db.parent.iterdir() if p.name.startswith(db.name) and p.is_file())


def count(files: list[Path], needle: bytes) -> int:
    return sum(p.read_bytes().count(needle) for p in files)


def canary_templates(model_id: str, n: int = 3) -> list[NewTemplate]:
    """Templates of the fake pipeline's face 4 (so that ``img((4, v))`` is recognised as the
    canary), with random crops."""
    rng = np.random.default_rng(1234)
    return [NewTemplate(model_id, identity_vector(4, 10 + i, seed=1),
                        crop_png=encode_png(rng.integers(0, 256, (CROP, CROP, 3), np.uint8)),
                        source=SOURCE) for i in range(n)]


def canary_history(svc, folder: Path) -> None:  # type: ignore[no-untyped-def]
    """Events naming the canary (a verification, a recognition) and a refused enrolment of
    another name, from an image whose path holds that name."""
    assert svc.verify(CANARY, img((4, 1))).match
    assert svc.recognize(img((4, 2)))[0].person == CANARY
    refused = folder / REFUSED / "face.png"
    refused.parent.mkdir()
    refused.write_bytes(encode_png(img((5, 0, 1))))  # a blurred face: rejected
    with pytest.raises(QualityRejected):
        svc.enroll(REFUSED, [str(refused)])


def database_text(engine) -> bytes:  # type: ignore[no-untyped-def]
    """Every value of every row of every table, as bytes (text UTF-8 encoded), read by SQL."""
    out = []
    with engine.connect() as conn:
        for name in inspect(conn).get_table_names():
            cols = [c["name"] for c in inspect(conn).get_columns(name)]
            for row in conn.execute(select(table(name, *(column(c) for c in cols)))):
                out += [v if isinstance(v, bytes) else str(v).encode() for v in row]
    return b"\n".join(out)


def raw_rows(con) -> bytes:  # type: ignore[no-untyped-def]
    """Every value of every table (and the schema's SQL) of a DB-API SQLite connection."""
    out = []
    for name, sql in con.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'"):
        out.append(str(sql).encode())
        for row in con.execute(f'SELECT * FROM "{name}"'):
            out += [v if isinstance(v, bytes) else str(v).encode() for v in row]
    return b"\n".join(out)


def found_names(data: bytes) -> list[bytes]:
    return [n for n in NAMES if n in data or n in data.lower()]


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
    canary_history(svc, db.parent)
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
        assert count(files, CANARY.encode()) >= 1  # in the person row, only
    else:
        assert found_before == [0] * len(found_before)
    assert [count(files, n) for n in NAMES[2:]] == [0, 0]  # a refused name: stored nowhere
    svc = make_service(f"sqlite:///{db}")
    try:
        svc.recognize(img((2, 1)))  # a live index and a -wal while the deletion runs
        receipt = svc.erase_person(CANARY)
        after = gallery_files(db)
        found_after = [count(after, n) for n in needles(templates)]
        names_after = found_names(b"".join(p.read_bytes() for p in after))
        assert receipt.templates == 3 and receipt.crops == 3
        assert receipt.storage["vacuumed"] is True and receipt.storage["freelist_pages"] == 0
        assert receipt.storage["wal_busy"] is False and receipt.storage["wal_bytes"] == 0
        assert receipt.encrypted is encrypt
        assert CANARY not in svc.people_names()
        assert svc.recognize(img((2, 1)))[0].person == "Bob"  # the others are intact
        events = svc.events(1000)
    finally:
        svc.close()
    assert found_after == [0] * len(found_after)
    assert names_after == []
    check_history(events, db)
    final = gallery_files(db)  # the snapshot rewritten at close, without the canary
    assert any(".index-" in p.name for p in final)
    assert [count(final, n) for n in needles(templates)] == [0] * len(found_after)
    assert found_names(b"".join(p.read_bytes() for p in final)) == []
    con = raw_connect(db)  # the rows, as another program holding the key reads them
    try:
        assert con.execute("SELECT count(*) FROM face_template").fetchone()[0] == 6
        assert con.execute("SELECT count(*) FROM face_crop").fetchone()[0] == 6
        assert found_names(raw_rows(con)) == []
    finally:
        con.close()


def check_history(events: list[dict[str, object]], db: Path | str) -> None:
    """The canary's events show a deleted-person pseudonym, a living person's their name, the
    refused enrolment no one; the audit log names the same pseudonym and its chain verifies."""
    gone = {e["person"] for e in events if e["kind"] in ("verify", "recognize", "delete")
            and e["person"] not in ("Ann", "Bob", "Cid")}
    assert len(gone) == 1
    label = str(gone.pop())
    assert label.startswith("deleted person (p:") and label.endswith("…)")
    kinds = [e["kind"] for e in events if e["person"] == label]  # newest first
    assert kinds[:3] == ["delete", "recognize", "verify"] and set(kinds[3:]) <= {"enroll"}
    assert any(e["kind"] == "recognize" and e["person"] == "Ann" for e in events)
    assert any(e["kind"] == "enroll" and e["person"] == "Bob" for e in events)
    refused = [e for e in events if e["kind"] == "enroll" and e["outcome"] == "rejected"]
    assert len(refused) == 1 and refused[0]["person"] is None
    assert "too blurred" in str(refused[0]["detail"])
    url = db if isinstance(db, str) and "://" in db else f"sqlite:///{db}"
    engine = open_database(str(url))
    try:
        with read_session(engine) as s:
            report, rows = audit.verify_chain(s), audit.entries(s)
    finally:
        engine.dispose()
    assert report.ok and report.entries == len(rows)
    subjects = {r.subject for r in rows if r.person == label}
    assert len(subjects) == 1 and pseudonyms.is_pseudonym(subjects.pop())
    assert {r.person for r in rows if r.action == "enroll"} >= {"Ann", "Bob", "Cid"}


def test_deleted_person_leaves_no_name_in_any_row(gallery_url, tmp_path):
    """SQLite and PostgreSQL: after the deletion, no row of any table holds the canary's name
    (read by SQL, every column), nor the refused name; the history still reads."""
    svc = make_service(gallery_url)
    try:
        enroll_three(svc)
        svc.enroll(CANARY, [img((4, 0))])
        canary_history(svc, tmp_path)
        assert svc.recognize(img((1, 1)))[0].person == "Ann"
        assert found_names(database_text(svc.engine)) == [CANARY.encode(), CANARY.lower().encode()]
        svc.erase_person(CANARY)
        assert found_names(database_text(svc.engine)) == []
        events = svc.events(1000)
    finally:
        svc.close()
    check_history(events, gallery_url)


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
    assert doc["deleted_at"].endswith("+00:00")  # the receipt keeps the name; the history not:
    assert main(["people", "events", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "deleted person (p:" in out and " Ann" in out and CANARY not in out
    # a receipt that cannot be written: refused before anything is deleted
    assert main(["people", "delete", "Ann", "--yes", "--receipt",
                 str(tmp_path / "missing" / "r.json"), "--db", str(db)]) == 2
    assert "nothing deleted" in capsys.readouterr().err
    svc = make_service(f"sqlite:///{db}")
    try:
        assert svc.people_names() == ["Ann", "Bob", "Cid"]
    finally:
        svc.close()
