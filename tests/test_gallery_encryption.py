"""Encryption at rest of a real SQLite gallery: nothing biometric in clear on disk, keys
(passphrase, wrong passphrase, rotation), migration of a plaintext gallery, sealed snapshots."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from conftest import TEST_PASSPHRASE
from fakes import FakePipeline, enroll_three, img, make_service, raw_connect

import faceapp.gallery.migrate as migrate
from faceapp.cli import main
from faceapp.errors import GalleryError, KeyUnavailable, WrongPassphrase
from faceapp.gallery import (
    DatabaseConfig,
    GalleryRepository,
    NewTemplate,
    open_database,
    read_session,
    write_session,
)
from faceapp.gallery.crypto import AtRest, IntegrityError, KdfParams, seal, unseal
from faceapp.gallery.database import is_encrypted
from faceapp.gallery.keys import KeyConfig, key_file_path, key_status, rotate_key
from faceapp.gallery.migrate import encrypt_in_place
from faceapp.gallery.snapshot import snapshot_path
from faceapp.services import index_cache
from faceapp.vision.images import encode_png

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NAME = "Zelda Canaryname"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def disk_files(db: Path) -> list[Path]:
    """The database, its -wal and every snapshot beside it."""
    return [p for p in [db, Path(f"{db}-wal"), *db.parent.glob(f"{db.name}.index-*")]
            if p.exists()]


def occurrences(files: list[Path], needle: bytes) -> int:
    return sum(p.read_bytes().count(needle) for p in files)


def sample_templates(rng: np.random.Generator, n: int = 3) -> list[NewTemplate]:
    return [NewTemplate("model-a", rng.standard_normal(64).astype(np.float32),
                        crop_png=encode_png(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)),
                        source=f"/photos/{NAME}_{i}.jpg")
            for i in range(n)]


def fill(engine, templates: list[NewTemplate]) -> None:
    with write_session(engine) as s:
        repo = GalleryRepository(s)
        repo.add_templates(repo.add_person(NAME), templates)


@pytest.mark.parametrize("encrypt", [True, False])
def test_no_template_crop_or_name_in_clear_on_disk(tmp_path, encrypt):
    """Encrypted (default): the raw float32 bytes of a template, the PNG signature and the
    name are in none of the files, checked while the -wal is still full. The plaintext
    (legacy) variant shows that the same grep does find them."""
    db = tmp_path / "g.sqlite"
    templates = sample_templates(np.random.default_rng(0))
    engine = open_database(str(db), DatabaseConfig(encrypt=encrypt))
    try:
        fill(engine, templates)
        files = disk_files(db)
        assert Path(f"{db}-wal") in files
        needles = [t.embedding.astype("<f4").tobytes() for t in templates]
        needles += [PNG_SIGNATURE, NAME.encode()]
        found = [occurrences(files, n) for n in needles]
        assert is_encrypted(engine) is encrypt
    finally:
        engine.dispose()
    if encrypt:
        assert found == [0] * len(needles)
        assert db.read_bytes()[:16] != b"SQLite format 3\x00"
        assert stat.S_IMODE(os.stat(key_file_path(db)).st_mode) == 0o600
        assert TEST_PASSPHRASE.encode() not in key_file_path(db).read_bytes()
    else:
        assert all(n >= 1 for n in found)
        assert not key_file_path(db).exists()
    again = open_database(str(db))
    try:
        with read_session(again) as s:
            repo = GalleryRepository(s)
            (row,) = repo.people()
            stored = repo.templates_of(repo.get_person(NAME))
            crops = repo.crops([t.id for t in stored])
            assert row.n_templates == 3
            for t, new in zip(stored, templates, strict=True):
                np.testing.assert_array_equal(t.embedding, new.embedding)
                assert crops[t.id] == new.crop_png
    finally:
        again.dispose()


def test_snapshot_is_sealed_and_bound_to_its_gallery(tmp_path, monkeypatch):
    monkeypatch.setattr(index_cache, "SNAPSHOT_MIN_TEMPLATES", 1)
    url_a = f"sqlite:///{tmp_path / 'a.sqlite'}"
    url_b = f"sqlite:///{tmp_path / 'b.sqlite'}"
    for url in (url_a, url_b):
        svc = make_service(url)
        enroll_three(svc)
        svc.recognize(img((1, 1)))
        svc.close()
    snap_a = snapshot_path(url_a, FakePipeline().model_id)
    snap_b = snapshot_path(url_b, FakePipeline().model_id)
    assert snap_a.is_file() and snap_b.is_file()
    raw = snap_a.read_bytes()
    assert b"PK\x03\x04" not in raw and b"embeddings" not in raw  # no zip/npz in clear
    # b's snapshot copied over a's: it does not open with a's key, is ignored and rebuilt
    snap_a.write_bytes(snap_b.read_bytes())
    svc = make_service(url_a)
    try:
        assert svc.recognize(img((2, 1)))[0].person == "Bob"
    finally:
        svc.close()
    with pytest.raises(IntegrityError):
        AtRest(b"k" * 32).unseal(b"PK\x03\x04 plain npz", b"aad")


def test_seal_detects_any_change_and_binds_associated_data():
    key = os.urandom(32)
    blob = seal(key, b"template bytes", b"where")
    assert unseal(key, blob, b"where") == b"template bytes"
    assert seal(key, b"template bytes", b"where") != blob  # fresh nonce
    for i in range(len(blob)):
        bad = bytearray(blob)
        bad[i] ^= 0x01
        with pytest.raises(IntegrityError):
            unseal(key, bytes(bad), b"where")
    with pytest.raises(IntegrityError):
        unseal(key, blob, b"elsewhere")
    with pytest.raises(IntegrityError):
        unseal(os.urandom(32), blob, b"where")


def test_kdf_parameters_parse_and_both_kdfs_unlock(tmp_path, monkeypatch):
    assert KdfParams.parse("argon2id:m=1024,t=2,p=2") == KdfParams("argon2id", 1024, 2, 2)
    assert KdfParams.parse("scrypt:n=1024,r=4,p=1").to_dict() == {
        "name": "scrypt", "n": 1024, "r": 4, "p": 1}
    defaults = KdfParams()
    assert (defaults.name, defaults.memory_kib, defaults.iterations) == ("argon2id", 65536, 3)
    for bad in ("md5", "scrypt:n=1000", "argon2id:m=x", "argon2id:q=1"):
        with pytest.raises(GalleryError):
            KdfParams.parse(bad)
    monkeypatch.setenv("FACEAPP_KDF", "scrypt:n=1024,r=8,p=1")
    db = tmp_path / "s.sqlite"
    open_database(str(db)).dispose()
    assert key_status(db).kdf == {"name": "scrypt", "n": 1024, "r": 8, "p": 1}
    open_database(str(db)).dispose()


def test_wrong_passphrase_is_one_clear_error_and_changes_nothing(tmp_path, monkeypatch, capsys):
    db = tmp_path / "g.sqlite"
    engine = open_database(str(db))
    fill(engine, sample_templates(np.random.default_rng(1), 1))
    engine.dispose()
    before = [digest(db), digest(key_file_path(db))]
    monkeypatch.setenv("FACEAPP_PASSPHRASE", "not the passphrase")
    with pytest.raises(WrongPassphrase, match="wrong passphrase"):
        open_database(str(db))
    assert main(["people", "list", "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: wrong passphrase") and err.count("\n") == 1
    with pytest.raises(WrongPassphrase):
        rotate_key(db)
    assert [digest(db), digest(key_file_path(db))] == before


def test_no_passphrase_and_no_keyring_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.delenv("FACEAPP_PASSPHRASE")
    db = tmp_path / "new.sqlite"
    with pytest.raises(KeyUnavailable, match="FACEAPP_PASSPHRASE"):
        open_database(str(db))
    assert not db.exists() and not key_file_path(db).exists()
    answers = []

    def prompt(message: str, confirm: bool) -> str:
        answers.append((message, confirm))
        return "typed in a dialog"

    open_database(str(db), DatabaseConfig(keys=KeyConfig(prompt=prompt))).dispose()
    assert answers and answers[0][1] is True  # a new passphrase is confirmed
    open_database(str(db), DatabaseConfig(keys=KeyConfig(prompt=prompt))).dispose()
    assert answers[-1][1] is False
    monkeypatch.setenv("FACEAPP_KEYRING", "on")
    with pytest.raises(KeyUnavailable, match="keyring"):
        open_database(str(tmp_path / "other.sqlite"))


def test_key_rotation_rewraps_without_touching_the_database(tmp_path, monkeypatch):
    db = tmp_path / "g.sqlite"
    engine = open_database(str(db))
    fill(engine, sample_templates(np.random.default_rng(2), 2))
    engine.dispose()
    db_before, key_before = digest(db), json.loads(key_file_path(db).read_text())
    monkeypatch.setenv("FACEAPP_NEW_PASSPHRASE", "a new passphrase")
    status = rotate_key(db)
    assert status.rotated and status.source == "passphrase"
    key_after = json.loads(key_file_path(db).read_text())
    assert key_after["kek"]["salt"] != key_before["kek"]["salt"]
    assert key_after["key_id"] == key_before["key_id"]
    assert digest(db) == db_before
    with pytest.raises(WrongPassphrase):
        open_database(str(db))  # the old passphrase no longer opens it
    monkeypatch.setenv("FACEAPP_PASSPHRASE", "a new passphrase")
    engine = open_database(str(db))
    try:
        with read_session(engine) as s:
            assert [p.name for p in GalleryRepository(s).people()] == [NAME]
    finally:
        engine.dispose()


def test_key_file_of_another_gallery_is_refused_untouched(tmp_path):
    a, b = tmp_path / "a.sqlite", tmp_path / "b.sqlite"
    for db in (a, b):
        engine = open_database(str(db))
        fill(engine, sample_templates(np.random.default_rng(3), 1))
        engine.dispose()
    key_file_path(a).write_bytes(key_file_path(b).read_bytes())
    before = digest(a)
    with pytest.raises(GalleryError, match="cannot be decrypted"):
        open_database(str(a))
    assert digest(a) == before
    key_file_path(a).unlink()
    with pytest.raises(GalleryError, match="key file"):
        open_database(str(a))


def make_plaintext_gallery(db: Path) -> list[NewTemplate]:
    templates = sample_templates(np.random.default_rng(4))
    engine = open_database(str(db), DatabaseConfig(encrypt=False))
    fill(engine, templates)
    with write_session(engine) as s:
        GalleryRepository(s).log_event("enroll", "enrolled", person=NAME)
    engine.dispose()
    return templates


def test_migration_encrypts_in_place(tmp_path, capsys):
    db = tmp_path / "old.sqlite"
    templates = make_plaintext_gallery(db)
    snap = db.with_name(db.name + ".index-model-a.npz")
    snap.write_bytes(b"plaintext snapshot with embeddings")
    assert main(["keys", "status", "--db", str(db)]) == 0
    assert "NOT encrypted" in capsys.readouterr().out
    assert main(["keys", "migrate", "--db", str(db), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rows"]["face_template"] == 3 and report["rows"]["face_crop"] == 3
    assert report["rows"]["event"] == 1 and report["snapshots_removed"] == 1
    files = disk_files(db)
    assert files == [db]
    for needle in [PNG_SIGNATURE, NAME.encode(),
                   *(t.embedding.astype("<f4").tobytes() for t in templates)]:
        assert occurrences(files, needle) == 0
    assert stat.S_IMODE(os.stat(db).st_mode) == 0o600
    engine = open_database(str(db))
    try:
        assert is_encrypted(engine)
        with read_session(engine) as s:
            repo = GalleryRepository(s)
            stored = repo.templates_of(repo.get_person(NAME))
            assert [e.kind for e in repo.events()] == ["enroll"]
            for t, new in zip(stored, templates, strict=True):
                np.testing.assert_array_equal(t.embedding, new.embedding)
    finally:
        engine.dispose()
    assert main(["keys", "status", "--db", str(db)]) == 0
    assert "encrypted (SQLCipher 4" in capsys.readouterr().out
    with pytest.raises(GalleryError, match="already encrypted"):
        encrypt_in_place(db)


def test_migration_interrupted_before_the_swap_leaves_the_old_file(tmp_path, monkeypatch):
    db = tmp_path / "old.sqlite"
    make_plaintext_gallery(db)
    def dump() -> list[tuple[str, list[tuple]]]:
        con = raw_connect(db)
        try:
            tables = [r[0] for r in con.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
            return [(t, con.execute(f'SELECT * FROM "{t}" ORDER BY rowid').fetchall())
                    for t in tables]
        finally:
            con.close()

    before = dump()

    def crash(*_args):
        raise OSError("simulated crash")

    monkeypatch.setattr(migrate.os, "replace", crash)
    with pytest.raises(GalleryError, match="nothing was changed"):
        encrypt_in_place(db)
    assert dump() == before
    assert db.read_bytes()[:16] == b"SQLite format 3\x00"
    assert not db.with_name(db.name + ".encrypting").exists()
    monkeypatch.undo()
    engine = open_database(str(db))  # still the plaintext gallery, intact
    try:
        assert not is_encrypted(engine)
        with read_session(engine) as s:
            assert GalleryRepository(s).count_templates() == 3
    finally:
        engine.dispose()
    encrypt_in_place(db)  # a second attempt succeeds (reusing the key file left behind)
    engine = open_database(str(db))
    try:
        assert is_encrypted(engine)
    finally:
        engine.dispose()


def test_migration_refuses_a_gallery_in_use(tmp_path):
    db = tmp_path / "old.sqlite"
    make_plaintext_gallery(db)
    engine = open_database(str(db))
    try:
        with read_session(engine) as s:
            GalleryRepository(s).people()
            before = digest(db)
            with pytest.raises(GalleryError, match="in use"):
                encrypt_in_place(db, DatabaseConfig(busy_timeout_s=0.1))
        assert digest(db) == before
    finally:
        engine.dispose()
