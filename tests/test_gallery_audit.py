"""The audit log: every operation appends a hash-chained entry in its own transaction, the
table is append-only, and editing or removing an entry is detected by `audit verify`."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

import pytest
from fakes import enroll_three, img, make_service, raw_connect

from faceapp.cli import main
from faceapp.cli.audit_cmds import parse_since
from faceapp.errors import FaceappError
from faceapp.gallery import audit, open_database, pseudonyms, read_session, write_session


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "g.sqlite"
    svc = make_service(f"sqlite:///{path}")
    enroll_three(svc)
    svc.verify("Ann", img((1, 3)))
    svc.recognize(img((2, 3)))
    svc.rename_person("Cid", "Cyd")
    svc.export_gallery(path.with_suffix(".faceapp"), passphrase="pw")
    svc.delete_person("Bob")
    svc.close()
    return path


def read_all(path):
    engine = open_database(str(path))
    try:
        with read_session(engine) as s:
            return audit.entries(s), audit.verify_chain(s)
    finally:
        engine.dispose()


def test_operations_are_logged_in_a_valid_chain(db):
    rows, report = read_all(db)
    # entries store pseudonyms; they show the living by name, the deleted Bob by pseudonym
    actions = [(r.action, r.outcome, r.person) for r in rows]
    bob = rows[1].subject
    gone = f"deleted person ({bob[:10]}…)"
    assert actions[:3] == [("enroll", "accepted", "Ann"), ("enroll", "accepted", gone),
                           ("enroll", "accepted", "Cyd")]
    assert ("verify", "match", "Ann") in actions and ("rename", "renamed", "Cyd") in actions
    assert any(a == "recognize" and s == gone for a, _, s in actions)
    assert actions[-2:] == [("export", "exported", ""), ("delete", "deleted", gone)]
    assert rows[-1].subject == bob and rows[2].subject == next(
        r.subject for r in rows if r.action == "rename")  # a rename keeps the pseudonym
    assert all(r.subject == "" or pseudonyms.is_pseudonym(r.subject) for r in rows)
    assert report.ok and report.entries == len(rows) and report.head == rows[-1].hash
    # the chain recomputed by hand
    prev = "0" * 64
    for r in rows:
        body = json.dumps({"time": r.time, "actor": r.actor, "action": r.action,
                           "outcome": r.outcome, "subject": r.subject, "detail": r.detail},
                          sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert r.prev_hash == prev
        assert r.hash == hashlib.sha256(f"{prev}\n{body}".encode()).hexdigest()
        prev = r.hash
    verify = next(r for r in rows if r.action == "verify")
    facts = json.loads(verify.detail)
    assert set(facts) == {"model_id", "score", "scorer", "threshold"}  # no template in it
    assert "@" in verify.actor


def test_the_table_is_append_only(db):
    con = raw_connect(db)
    try:
        for sql in ("UPDATE audit_entry SET subject = 'x' WHERE id = 1",
                    "DELETE FROM audit_entry WHERE id = 2"):
            with pytest.raises(Exception, match="append-only"):
                con.execute(sql)
    finally:
        con.close()


@pytest.mark.parametrize("tamper", ["edit", "remove", "insert"])
def test_tampering_is_detected(db, tamper, capsys):
    rows, _ = read_all(db)
    victim = rows[3]
    con = raw_connect(db)
    try:  # someone with the key drops the triggers first
        con.execute("DROP TRIGGER audit_entry_no_update")
        con.execute("DROP TRIGGER audit_entry_no_delete")
        if tamper == "edit":
            con.execute("UPDATE audit_entry SET subject = 'Someone else' WHERE id = ?",
                        (victim.id,))
            first_bad = victim.id
        elif tamper == "remove":
            con.execute("DELETE FROM audit_entry WHERE id = ?", (victim.id,))
            first_bad = rows[4].id
        else:  # a forged entry between two others, with a self-consistent hash
            f = audit.chained_fields(rows[2].hash, "enroll", "accepted", subject="Mallory")
            con.execute("UPDATE audit_entry SET id = id + 1000 WHERE id >= ?", (victim.id,))
            con.execute(f"INSERT INTO audit_entry (id, {', '.join(f)}) VALUES "
                        f"(?, {', '.join('?' for _ in f)})", (victim.id, *f.values()))
            first_bad = victim.id + 1000
    finally:
        con.close()
    _, report = read_all(db)
    assert not report.ok and report.first_bad == first_bad
    assert main(["audit", "verify", "--db", str(db)]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"audit log BROKEN at entry {first_bad}") and out.count("\n") == 1


def test_cli_lists_since_and_verifies(db, capsys):
    engine = open_database(str(db))
    try:
        with write_session(engine) as s:  # an entry dated tomorrow, to cut at
            audit.append(s, "note", "later", time=datetime.now(UTC) + timedelta(days=1))
    finally:
        engine.dispose()
    assert main(["audit", "--db", str(db), "--json"]) == 0
    everything = json.loads(capsys.readouterr().out)
    tomorrow = (datetime.now(UTC) + timedelta(hours=12)).isoformat()
    assert main(["audit", "--since", tomorrow, "--db", str(db), "--json"]) == 0
    assert [r["action"] for r in json.loads(capsys.readouterr().out)] == ["note"]
    assert main(["audit", "--since", "1d", "--action", "enroll", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert out.count(" enroll ") == 3  # the living by name, the deleted Bob by pseudonym
    assert "  Ann  " in out and "  Cyd  " in out and "  deleted person (p:" in out and "Bob" not in out
    bob = next(r for r in everything if r["action"] == "delete")
    assert bob["person"].startswith("deleted person (") and bob["subject"].startswith("p:")
    assert main(["audit", "verify", "--db", str(db)]) == 0
    assert f"{len(everything)} entries" in capsys.readouterr().out


def test_key_operations_are_logged(tmp_path, monkeypatch, capsys):
    from faceapp.gallery import DatabaseConfig, GalleryRepository

    path = tmp_path / "plain.sqlite"
    engine = open_database(str(path), DatabaseConfig(encrypt=False))
    with write_session(engine) as s:
        GalleryRepository(s).add_person("Ann")
    engine.dispose()
    assert main(["keys", "migrate", "--db", str(path)]) == 0
    monkeypatch.setenv("FACEAPP_NEW_PASSPHRASE", "new one")
    assert main(["keys", "rotate", "--db", str(path)]) == 0
    monkeypatch.setenv("FACEAPP_PASSPHRASE", "new one")
    rows, report = read_all(path)
    assert [(r.action, r.outcome) for r in rows] == [("keys", "encrypted in place"),
                                                     ("keys", "fields encrypted"),
                                                     ("keys", "rotated")]
    assert report.ok


def test_parse_since():
    now = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
    assert parse_since("7d", now) == datetime(2026, 3, 3, 12, 0, tzinfo=UTC)
    assert parse_since("90m", now) == datetime(2026, 3, 10, 10, 30, tzinfo=UTC)
    assert parse_since("2026-03-01") == datetime(2026, 3, 1, tzinfo=UTC)
    with pytest.raises(FaceappError):
        parse_since("last tuesday")
