"""Field-level encryption with per-person keys: what a server (or a copied file) holds, rows
that cannot be swapped, crypto-shredding of old copies, search on the client, migration."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from sqlalchemy import create_engine, text

from faceapp.cli import main
from faceapp.errors import GalleryError, KeyUnavailable
from faceapp.gallery import (
    DatabaseConfig,
    GalleryRepository,
    NewTemplate,
    open_database,
    read_session,
    write_session,
)
from faceapp.gallery.crypto import IntegrityError, unseal
from faceapp.gallery.database import connect_raw, gallery_key, sqlite_path
from faceapp.gallery.fieldcrypt import ShreddedKey, cipher_of
from faceapp.gallery.keys import key_file_path
from faceapp.vision.images import encode_png

DIM = 32
MODEL = "model-a"
CANARY = "Canary Person"


def templates(seed: int, n: int = 2) -> list[NewTemplate]:
    rng = np.random.default_rng(seed)
    return [NewTemplate(MODEL, rng.standard_normal(DIM).astype(np.float32),
                        crop_png=encode_png(rng.integers(0, 256, (24, 24, 3), np.uint8)),
                        source=f"s{seed}-{i}.jpg") for i in range(n)]


def enrol(engine, name: str, seed: int) -> tuple[int, list[int], list[NewTemplate]]:
    ts = templates(seed)
    with write_session(engine) as s:
        repo = GalleryRepository(s)
        person = repo.add_person(name)
        ids = repo.add_templates(person, ts)
        return int(person.id), ids, ts


def needles(ts: list[NewTemplate]) -> list[bytes]:
    return [t.embedding.astype("<f4").tobytes() for t in ts] + [t.crop_png[-48:] for t in ts]


class Raw:
    """The gallery's tables as stored (what a server operator, a dump or a copied file
    holds), read without faceapp's field keys."""

    def __init__(self, url: str) -> None:
        self.url = url
        path = sqlite_path(url)
        if path is not None:
            self._con = connect_raw(path, gallery_key(path))
            self._engine = None
        else:
            self._engine = create_engine(url)

    def rows(self, sql: str, params: dict | None = None) -> list[tuple]:
        if self._engine is None:
            return [tuple(r) for r in self._con.execute(sql, params or {}).fetchall()]
        with self._engine.begin() as conn:
            return [tuple(r) for r in conn.execute(text(sql), params or {}).all()]

    def run(self, sql: str, params: dict | None = None) -> None:
        if self._engine is None:
            self._con.execute(sql, params or {})
            return
        with self._engine.begin() as conn:
            conn.execute(text(sql), params or {})

    def dump(self) -> dict[str, list[tuple]]:
        """Every row of the biometric tables and their keys: a backup."""
        return {t: self.rows(f"SELECT * FROM {t} ORDER BY 1")
                for t in ("person", "face_template", "face_crop", "gallery_key")}

    def close(self) -> None:
        if self._engine is None:
            self._con.close()
        else:
            self._engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'g.sqlite'}"
    return request.getfixturevalue("pg_url")


def test_the_stored_rows_hold_ciphertext_only(url):
    engine = open_database(url)
    try:
        assert cipher_of(engine) is not None  # on by default for a new gallery
        _, ids, ts = enrol(engine, "Ann", 1)
        with read_session(engine) as s:
            repo = GalleryRepository(s)
            got = [t.embedding for t in repo.get_person("Ann").templates]
            got_sources = [t.source for t in repo.get_person("Ann").templates]
            crops = repo.crops(ids)
            rows = repo.index_rows(MODEL)
    finally:
        engine.dispose()
    for t, e in zip(ts, got, strict=True):
        assert t.embedding.tobytes() == np.asarray(e, np.float32).tobytes()
    assert [crops[i] for i in ids] == [t.crop_png for t in ts]
    assert rows.embeddings.tobytes() == b"".join(t.embedding.tobytes() for t in ts)
    raw = Raw(url)
    try:
        stored = b"".join(bytes(v) for row in raw.dump().values() for v in row
                          if isinstance(v, bytes | memoryview))
        (wrapped,) = raw.rows("SELECT key_wrapped FROM person")[0]
        sources = [r[0] for r in raw.rows("SELECT source FROM face_template")]
    finally:
        raw.close()
    assert wrapped is not None
    assert len(sources) == 2 and all(src.startswith("faceapp-sealed:") for src in sources)
    assert sorted(got_sources) == sorted(t.source for t in ts)
    for needle in needles(ts):
        assert stored.count(needle) == 0
    assert stored.count(b"\x89PNG") == 0


def test_a_ciphertext_moved_to_another_row_does_not_open(url):
    engine = open_database(url)
    try:
        _, ann, _ = enrol(engine, "Ann", 1)
        _, bob, _ = enrol(engine, "Bob", 2)
        raw = Raw(url)
        try:
            blobs = dict(raw.rows("SELECT id, embedding FROM face_template"))
            # Bob's template (another person) and Ann's other template (same person)
            raw.run("UPDATE face_template SET embedding = :b WHERE id = :i",
                    {"b": bytes(blobs[bob[0]]), "i": ann[0]})
            raw.run("UPDATE face_template SET embedding = :b WHERE id = :i",
                    {"b": bytes(blobs[ann[0]]), "i": ann[1]})
            crops = dict(raw.rows("SELECT template_id, png FROM face_crop"))
            raw.run("UPDATE face_crop SET png = :b WHERE template_id = :i",
                    {"b": bytes(crops[bob[1]]), "i": bob[0]})
        finally:
            raw.close()
        with read_session(engine) as s, pytest.raises(IntegrityError):
            GalleryRepository(s).index_rows(MODEL)
        with read_session(engine) as s, pytest.raises(IntegrityError):
            GalleryRepository(s).get_person("Ann").templates[1].embedding  # noqa: B018
        with read_session(engine) as s, pytest.raises(IntegrityError):
            GalleryRepository(s).crops([bob[0]])
        with read_session(engine) as s:
            assert len(GalleryRepository(s).crops([bob[1]])) == 1  # the untouched one opens
    finally:
        engine.dispose()


def test_deleting_a_person_shreds_their_ciphertext_in_old_copies(url, tmp_path):
    """Crypto-shredding: a copy of the database taken before the deletion (a backup) holds
    the canary's ciphertext and wrapped key, but the current keys cannot open them any
    more; the other people of that copy still open with the current keys."""
    engine = open_database(url)
    try:
        canary_pid, canary_ids, canary_ts = enrol(engine, CANARY, 7)
        ann_pid, ann_ids, ann_ts = enrol(engine, "Ann", 1)
    finally:
        engine.dispose()
    raw = Raw(url)
    try:
        backup = raw.dump()
    finally:
        raw.close()
    path = sqlite_path(url)
    if path is not None:  # the file itself too, as a file backup would copy it
        shutil.copy(path, tmp_path / "backup.sqlite")
    engine = open_database(url)
    try:
        with write_session(engine) as s:
            GalleryRepository(s).delete_person(CANARY)
    finally:
        engine.dispose()

    engine = open_database(url)  # the current keys: key file and live database
    try:
        cipher = cipher_of(engine)
        assert cipher is not None
        people = {r[0]: r for r in backup["person"]}
        cols = ["id", "name", "created", "updated", "key_wrapped", "key_epoch", "pseudonym"]
        old = dict(zip(cols, people[canary_pid], strict=True))
        with engine.connect() as conn:
            live_epoch = conn.execute(text("SELECT epoch FROM gallery_key")).scalar()
            assert conn.execute(text("SELECT count(*) FROM person WHERE id = :p"),
                                {"p": canary_pid}).scalar() == 0
        assert live_epoch == old["key_epoch"] + 1
        with pytest.raises(ShreddedKey):  # its wrapping key was destroyed
            cipher.person_key(canary_pid, bytes(old["key_wrapped"]), old["key_epoch"])
        for epoch in range(live_epoch, live_epoch + 3):  # no current or later key opens it
            w = cipher.field_key(epoch)
            with pytest.raises(IntegrityError):
                unseal(w, bytes(old["key_wrapped"]),
                       f"faceapp-field/v1/{cipher.key_id}/person.key/p{canary_pid}/"
                       f"e{old['key_epoch']}".encode())
        with read_session(engine) as s:  # Ann's templates in the backup open with current keys
            from faceapp.gallery.fieldcrypt import EMBEDDING, person_keys

            ann_key = person_keys(s, cipher, [ann_pid])[ann_pid]
        blobs = {r[0]: r for r in backup["face_template"]}
        emb_col = 4  # id, person_id, model_id, dim, embedding, ...
        opened = cipher.open(ann_key, EMBEDDING, ann_ids[0], ann_pid, bytes(blobs[ann_ids[0]][emb_col]))
        assert opened == ann_ts[0].embedding.astype("<f4").tobytes()
        with pytest.raises(IntegrityError):  # the canary's with Ann's key: no
            cipher.open(ann_key, EMBEDDING, canary_ids[0], canary_pid,
                        bytes(blobs[canary_ids[0]][emb_col]))
    finally:
        engine.dispose()
    assert canary_ts
    if path is not None:
        # the backup file, opened with the current key file, is refused: its people are
        # wrapped by a destroyed key
        copy = tmp_path / "backup.sqlite"
        shutil.copy(key_file_path(path), key_file_path(copy))
        with pytest.raises(GalleryError, match="restored from a copy older than a deletion"):
            open_database(str(copy))


def test_another_desktop_follows_the_ratchet(url):
    first = open_database(url)
    second = open_database(url)  # opened before the deletion, same key file
    try:
        enrol(first, "Ann", 1)
        enrol(first, "Bob", 2)
        with read_session(second) as s:
            assert GalleryRepository(s).index_rows(MODEL).embeddings.shape == (4, DIM)
        with write_session(first) as s:
            GalleryRepository(s).delete_person("Ann")
        with read_session(second) as s:
            rows = GalleryRepository(s).index_rows(MODEL)
        assert rows.embeddings.shape == (2, DIM)
        _, _, ts = enrol(second, "Cy", 3)  # wrapped by the current key
        with read_session(first) as s:
            got = GalleryRepository(s).get_person("Cy").templates[0].embedding
        assert got.tobytes() == ts[0].embedding.tobytes()
    finally:
        first.dispose()
        second.dispose()


def test_server_search_is_refused_on_an_encrypted_gallery(pg_url, monkeypatch):
    from faceapp.gallery.server_search import server_search_available
    from faceapp.services.server_index import choose_server_search

    engine = open_database(pg_url)
    try:
        enrol(engine, "Ann", 1)
        avail = server_search_available(engine)
        assert not avail.available and "encrypted on the client" in avail.reason
        with pytest.raises(GalleryError, match="search=client"):
            choose_server_search(engine, "server")
        assert choose_server_search(engine, "auto") is None
    finally:
        engine.dispose()


def test_a_server_desktop_without_the_key_file_is_told_what_to_do(pg_url, monkeypatch, tmp_path):
    open_database(pg_url).dispose()
    monkeypatch.setenv("FACEAPP_KEY_DIR", str(tmp_path / "elsewhere"))
    with pytest.raises(KeyUnavailable, match="copy it from a desktop"):
        open_database(pg_url)


def test_migrate_encrypts_the_fields_of_an_existing_server_gallery(pg_url, capsys, monkeypatch):
    from faceapp.gallery.server_search import ServerSearch

    engine = open_database(pg_url, DatabaseConfig(field_encryption=False))
    try:
        assert cipher_of(engine) is None
        _, ids, ts = enrol(engine, "Ann", 1)
        ServerSearch.open(engine).sync()  # plaintext vectors on the server
    finally:
        engine.dispose()
    raw = Raw(pg_url)
    try:
        stored = b"".join(bytes(r[0]) for r in raw.rows("SELECT embedding FROM face_template"))
        assert stored.count(needles(ts)[0]) == 1  # the control: in clear before
    finally:
        raw.close()
    assert main(["keys", "migrate", "--db", pg_url, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)["fields"]
    assert report["people"] == 1 and report["templates"] == 2 and report["crops"] == 2
    assert report["vectors_dropped"] is True
    raw = Raw(pg_url)
    try:
        stored = b"".join(bytes(v) for row in raw.dump().values() for v in row
                          if isinstance(v, bytes | memoryview))
        tables = {r[0] for r in raw.rows("SELECT tablename FROM pg_tables")}
    finally:
        raw.close()
    assert "template_vector" not in tables
    assert all(stored.count(n) == 0 for n in needles(ts))
    engine = open_database(pg_url)
    try:
        assert cipher_of(engine) is not None
        with read_session(engine) as s:
            repo = GalleryRepository(s)
            assert repo.index_rows(MODEL).embeddings.tobytes() == b"".join(
                t.embedding.tobytes() for t in ts)
            assert repo.crops(ids) == {i: t.crop_png for i, t in zip(ids, ts, strict=True)}
    finally:
        engine.dispose()
    assert main(["keys", "migrate", "--db", pg_url]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert main(["keys", "status", "--db", pg_url, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["field_encryption"] is True and status["source"] == "passphrase"
    assert status["key_file"].endswith(".keys")
    monkeypatch.setenv("FACEAPP_NEW_PASSPHRASE", "a new one")
    assert main(["keys", "rotate", "--db", pg_url]) == 0
    assert "re-wrapped by the passphrase" in capsys.readouterr().out
    monkeypatch.setenv("FACEAPP_PASSPHRASE", "a new one")
    engine = open_database(pg_url)
    try:
        with read_session(engine) as s:
            assert GalleryRepository(s).crops(ids)[ids[0]] == ts[0].crop_png
    finally:
        engine.dispose()


def test_migrate_encrypts_the_fields_of_an_older_sqlite_gallery(tmp_path, capsys):
    db = tmp_path / "old.sqlite"
    engine = open_database(str(db), DatabaseConfig(field_encryption=False))
    try:
        _, ids, ts = enrol(engine, "Ann", 1)
    finally:
        engine.dispose()
    assert main(["keys", "migrate", "--db", str(db), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["fields"]["templates"] == 2
    engine = open_database(str(db))
    try:
        with read_session(engine) as s:
            assert GalleryRepository(s).crops(ids)[ids[0]] == ts[0].crop_png
    finally:
        engine.dispose()
    raw = Raw(f"sqlite:///{db}")
    try:
        stored = b"".join(bytes(r[0]) for r in raw.rows("SELECT embedding FROM face_template"))
    finally:
        raw.close()
    assert stored.count(needles(ts)[0]) == 0


def test_a_failed_field_migration_changes_nothing(pg_url, monkeypatch):
    from faceapp.gallery import fieldcrypt, migrate

    engine = open_database(pg_url, DatabaseConfig(field_encryption=False))
    try:
        enrol(engine, "Ann", 1)
    finally:
        engine.dispose()
    raw = Raw(pg_url)
    before = raw.dump()

    def broken(*a, **k):
        raise RuntimeError("crash half way")

    monkeypatch.setattr(fieldcrypt.FieldCipher, "seal", broken)
    with pytest.raises(RuntimeError):
        migrate.encrypt_fields(pg_url)
    try:
        assert raw.dump() == before
    finally:
        raw.close()
    monkeypatch.undo()
    engine = open_database(pg_url)
    try:
        assert cipher_of(engine) is None
    finally:
        engine.dispose()


def test_opting_out_keeps_fields_in_clear_for_server_search(pg_url, monkeypatch):
    from faceapp.gallery.server_search import server_search_available

    monkeypatch.setenv("FACEAPP_FIELD_ENCRYPTION", "off")
    engine = open_database(pg_url)
    try:
        assert cipher_of(engine) is None
        assert server_search_available(engine).available
    finally:
        engine.dispose()


def test_an_enrolment_and_a_deletion_at_once_lose_no_key(pg_url):
    """A new person wrapped by the field key while another desktop ratchets it: the deletion
    waits for the enrolment (or the other way round), so every key is wrapped by the
    current epoch and everyone stays readable."""
    import threading

    first = open_database(pg_url)
    second = open_database(pg_url)
    try:
        enrol(first, "Ann", 1)
        enrol(first, "Bob", 2)
        done = threading.Event()
        errors: list[BaseException] = []

        def delete_bob() -> None:
            try:
                with write_session(second) as s:
                    GalleryRepository(s).delete_person("Bob")
            except BaseException as err:  # reported below
                errors.append(err)
            finally:
                done.set()

        ts = templates(3)
        with write_session(first) as s:  # the new person's key is wrapped, not yet committed
            repo = GalleryRepository(s)
            cy = repo.add_person("Cy")
            repo.add_templates(cy, ts)
            thread = threading.Thread(target=delete_bob)
            thread.start()
            assert not done.wait(1.0)  # the ratchet waits for this enrolment
        thread.join(30)
        assert done.is_set() and not errors
        with first.connect() as conn:
            epochs = dict(conn.execute(text("SELECT name, key_epoch FROM person")).all())
            live = conn.execute(text("SELECT epoch FROM gallery_key")).scalar()
        assert epochs == {"Ann": live, "Cy": live} and live == 1
        for engine in (first, second, open_database(pg_url)):
            with read_session(engine) as s:
                rows = GalleryRepository(s).index_rows(MODEL)
            assert rows.embeddings.shape == (4, DIM)
    finally:
        first.dispose()
        second.dispose()
