"""Encrypting a plaintext (legacy) SQLite gallery in place, atomically.

:func:`encrypt_in_place` (``faceapp keys migrate``):

1. checks the file is a current faceapp gallery in clear (:func:`open_database`, which also
   upgrades its schema), then takes it over: WAL checkpointed and the journal switched to
   ``DELETE`` (this fails while another process has the gallery open: close the app first);
2. makes the gallery's data key and its key file (``<database>.keys``);
3. holding the write lock, copies every table into a new encrypted file beside it
   (SQLCipher's ``sqlcipher_export``), checks the copy (``integrity_check``, same row count in
   every table, same ``user_version``), fsyncs it and renames it over the old file.

A crash before the rename leaves the old file as it was (a leftover ``.encrypting`` file is
replaced by the next attempt); after it, the gallery is encrypted. Index snapshots (which
held embeddings in clear) are deleted. The old file's bytes stay in the file system's free
blocks until overwritten, and in any backup: see ``SECURITY.md``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from faceapp.errors import GalleryError
from faceapp.gallery import audit
from faceapp.gallery.database import (
    DatabaseConfig,
    classify_gallery_file,
    connect_raw,
    key_literal,
    open_database,
    sqlcipher_dbapi,
)
from faceapp.gallery.keys import create_key_file, key_status
from faceapp.gallery.snapshot import remove_snapshots

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MigrationReport:
    """What :func:`encrypt_in_place` did: rows copied per table, snapshots removed."""

    path: str
    rows: dict[str, int]
    snapshots_removed: int
    key_source: str

    def to_dict(self) -> dict[str, object]:
        return {"path": self.path, "rows": dict(self.rows),
                "snapshots_removed": self.snapshots_removed, "key_source": self.key_source}


def _tables(con: object, schema: str = "main") -> list[str]:
    rows = con.execute(  # type: ignore[attr-defined]
        f"SELECT name FROM {schema}.sqlite_master WHERE type = 'table' "
        "AND name NOT LIKE 'sqlite_%' ORDER BY name").fetchall()
    return [str(r[0]) for r in rows]


def _count(con: object, table: str, schema: str = "main") -> int:
    return int(con.execute(f'SELECT count(*) FROM {schema}."{table}"').fetchone()[0])  # type: ignore[attr-defined]


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def encrypt_in_place(path: str | os.PathLike[str],
                     config: DatabaseConfig = DatabaseConfig()) -> MigrationReport:
    """Encrypt the plaintext gallery file at ``path`` (see the module docstring).

    Raises :class:`GalleryError` when the file is missing, already encrypted, not a faceapp
    gallery, or in use by another process; the file is then unchanged.
    """
    db = Path(path).expanduser().resolve()
    state = classify_gallery_file(db, create=False)
    if state == "encrypted":
        raise GalleryError(f"{db}: the gallery is already encrypted")
    if state == "new":
        raise GalleryError(f"{db}: the file is empty; a new gallery is encrypted when created")
    open_database(str(db), DatabaseConfig(busy_timeout_s=config.busy_timeout_s,
                                          create=False, encrypt=False)).dispose()
    tmp = db.with_name(db.name + ".encrypting")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    busy_ms = max(0, round(config.busy_timeout_s * 1000))
    dbapi = sqlcipher_dbapi()
    lock = con = None
    swapped = False
    mode = ""
    try:
        lock = connect_raw(db)
        lock.execute(f"PRAGMA busy_timeout = {busy_ms}")
        lock.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        try:
            mode = str(lock.execute("PRAGMA journal_mode = DELETE").fetchone()[0]).lower()
        except dbapi.OperationalError:
            mode = "busy"
        if mode != "delete":
            raise GalleryError(f"{db}: the gallery is in use by another process; close faceapp "
                               "everywhere and run the migration again (nothing was changed)")
        lock.execute("BEGIN IMMEDIATE")  # no writer until the encrypted copy has replaced it
        key = create_key_file(db, config.keys)
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        os.close(fd)
        con = connect_raw(db)
        con.execute(f"PRAGMA busy_timeout = {busy_ms}")
        quoted = str(tmp).replace("'", "''")
        con.execute(f"ATTACH DATABASE '{quoted}' AS enc KEY {key_literal(key)}")
        con.execute("SELECT sqlcipher_export('enc')")
        version = int(con.execute("PRAGMA main.user_version").fetchone()[0])
        con.execute(f"PRAGMA enc.user_version = {version}")
        rows = {t: _count(con, t) for t in _tables(con)}
        copied = {t: _count(con, t, "enc") for t in _tables(con, "enc")}
        if copied != rows:
            raise GalleryError(f"{db}: the encrypted copy differs from the gallery "
                               f"({copied} vs {rows}); nothing was changed")
        last = con.execute("SELECT hash FROM enc.audit_entry ORDER BY id DESC LIMIT 1").fetchone()
        entry = audit.chained_fields(audit.GENESIS if last is None else str(last[0]), "keys",
                                     "encrypted in place",
                                     detail=json.dumps({"rows": rows}, sort_keys=True))
        con.execute(f"INSERT INTO enc.audit_entry ({', '.join(entry)}) "
                    f"VALUES ({', '.join('?' for _ in entry)})", tuple(entry.values()))
        con.execute("DETACH DATABASE enc")
        con.close()
        con = None
        check = connect_raw(tmp, key)
        try:
            result = str(check.execute("PRAGMA integrity_check").fetchone()[0])
            same_version = int(check.execute("PRAGMA user_version").fetchone()[0]) == version
        finally:
            check.close()
        if result != "ok" or not same_version:
            raise GalleryError(f"{db}: the encrypted copy fails its check ({result}); "
                               "nothing was changed")
        _fsync(tmp)
        os.replace(tmp, db)
        swapped = True
        with contextlib.suppress(OSError):
            _fsync(db.parent)
    except (dbapi.Error, OSError) as err:
        raise GalleryError(f"{db}: cannot encrypt the gallery ({err}); nothing was changed") \
            from None
    finally:
        if con is not None:
            with contextlib.suppress(dbapi.Error):
                con.close()
        if lock is not None:
            with contextlib.suppress(dbapi.Error):
                lock.execute("ROLLBACK")  # the lock's transaction made no change
            if not swapped and mode == "delete":
                with contextlib.suppress(dbapi.Error):
                    lock.execute("PRAGMA journal_mode = WAL")  # as it was
            with contextlib.suppress(dbapi.Error):
                lock.close()
        with contextlib.suppress(OSError):
            tmp.unlink()
    for suffix in ("-wal", "-shm", "-journal"):  # of the old file; none should be left
        with contextlib.suppress(FileNotFoundError):
            db.with_name(db.name + suffix).unlink()
    removed = remove_snapshots(f"sqlite:///{db}")
    logger.info("encrypted the gallery %s (%s)", db, rows)
    return MigrationReport(str(db), rows, removed, key_status(db).source)


@dataclass(frozen=True)
class FieldMigrationReport:
    """What :func:`encrypt_fields` did: people keyed, templates and crops sealed, whether the
    server's plaintext vectors (``template_vector``) were dropped."""

    where: str
    people: int
    templates: int
    crops: int
    vectors_dropped: bool

    def to_dict(self) -> dict[str, object]:
        return {"where": self.where, "people": self.people, "templates": self.templates,
                "crops": self.crops, "vectors_dropped": self.vectors_dropped}


def encrypt_fields(url: str, config: DatabaseConfig = DatabaseConfig(),
                   chunk: int = 5_000) -> FieldMigrationReport:
    """Give an existing gallery field-level encryption with per-person keys, in one
    transaction (a failure leaves every row as it was): a key per person, every embedding
    and crop sealed with it, the server's plaintext search vectors dropped; then the old
    plaintext row versions are vacuumed out of the tables (``VACUUM FULL`` on PostgreSQL,
    ``VACUUM`` + WAL truncation on SQLite; the server's WAL archive and backups keep them).

    A SQLite gallery must be encrypted (SQLCipher, :func:`encrypt_in_place`) first: its key
    file holds the field key. Raises :class:`GalleryError` when already done.
    """
    from dataclasses import replace

    from sqlalchemy import LargeBinary as Blob
    from sqlalchemy import bindparam, inspect, select, text, type_coerce, update
    from sqlalchemy.orm import Session

    from faceapp.gallery import fieldcrypt
    from faceapp.gallery.crypto import random_key
    from faceapp.gallery.database import purge_deleted
    from faceapp.gallery.database.engine import _WRITE_OPTION
    from faceapp.gallery.database.files import _describe
    from faceapp.gallery.orm import FaceCrop, FaceTemplate, Person, SchemaInfo

    where = _describe(url)
    engine = open_database(url, replace(config, create=False, field_encryption=False))
    try:
        if fieldcrypt.cipher_of(engine) is not None:
            raise GalleryError(f"{where}: the gallery's templates are already field-encrypted")
        if engine.dialect.name == "sqlite" and not engine.get_execution_options().get(
                fieldcrypt.ROOT_OPTION):
            raise GalleryError(f"{where}: encrypt the database file first (faceapp keys migrate "
                               "does both)")
        counts = {"people": 0, "templates": 0, "crops": 0}
        dropped = False
        with engine.connect() as conn:
            conn = conn.execution_options(**{_WRITE_OPTION: True})
            with conn.begin():
                if engine.dialect.name == "postgresql":
                    # readers carry on; no other desktop writes until this is committed
                    conn.exec_driver_sql("LOCK TABLE gallery_key, person, face_template, face_crop "
                                         "IN EXCLUSIVE MODE")
                if fieldcrypt.gallery_key_row(conn) is not None:
                    raise GalleryError(f"{where}: the gallery's templates are already field-encrypted")
                cipher = fieldcrypt.initialise(engine, conn, config.keys)
                keys: dict[int, bytes] = {}
                for (pid,) in conn.execute(select(Person.id).order_by(Person.id)).all():
                    keys[int(pid)] = key = random_key()
                    conn.execute(update(Person).where(Person.id == pid).values(
                        key_wrapped=cipher.wrap_person_key(int(pid), key, 0), key_epoch=0))
                counts["people"] = len(keys)
                last = 0
                while True:
                    rows = conn.execute(
                        select(FaceTemplate.id, FaceTemplate.person_id,
                               type_coerce(FaceTemplate.embedding, Blob), FaceTemplate.source)
                        .where(FaceTemplate.id > last).order_by(FaceTemplate.id).limit(chunk)).all()
                    if not rows:
                        break
                    conn.execute(
                        update(FaceTemplate.__table__).where(FaceTemplate.id == bindparam("tid"))
                        .values(embedding=type_coerce(bindparam("blob"), Blob),
                                source=bindparam("src")),
                        [{"tid": int(t),
                          "blob": bytes(cipher.seal(keys[int(p)], fieldcrypt.EMBEDDING, int(t), int(p),
                                                    bytes(b))),
                          "src": cipher.seal_text(keys[int(p)], fieldcrypt.SOURCE, int(t), int(p),
                                                  str(src or ""))}
                         for t, p, b, src in rows])
                    counts["templates"] += len(rows)
                    last = int(rows[-1][0])
                last = 0
                while True:
                    rows = conn.execute(
                        select(FaceCrop.template_id, FaceTemplate.person_id, FaceCrop.png)
                        .join(FaceTemplate, FaceTemplate.id == FaceCrop.template_id)
                        .where(FaceCrop.template_id > last).order_by(FaceCrop.template_id)
                        .limit(chunk)).all()
                    if not rows:
                        break
                    conn.execute(
                        update(FaceCrop.__table__).where(FaceCrop.template_id == bindparam("tid"))
                        .values(png=bindparam("blob")),
                        [{"tid": int(t), "blob": bytes(cipher.seal(keys[int(p)], fieldcrypt.CROP,
                                                                   int(t), int(p), bytes(b)))}
                         for t, p, b in rows])
                    counts["crops"] += len(rows)
                    last = int(rows[-1][0])
                if "template_vector" in inspect(conn).get_table_names():
                    conn.execute(text("DROP TABLE template_vector"))  # vectors in clear
                    dropped = True
                conn.execute(update(SchemaInfo).where(SchemaInfo.id == 1)
                             .values(generation=SchemaInfo.generation + 1))
                with Session(bind=conn) as s:
                    audit.append(s, "keys", "fields encrypted",
                                 detail=json.dumps(counts, sort_keys=True))
                    s.flush()
        if engine.dialect.name == "postgresql":
            with engine.connect() as conn:
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
                conn.exec_driver_sql("VACUUM FULL person, face_template, face_crop")
        else:
            purge_deleted(engine)
    finally:
        engine.dispose()
    if engine.dialect.name == "sqlite":
        remove_snapshots(url)  # rebuilt (sealed) on the next open
    logger.info("field-encrypted the gallery %s (%s)", where, counts)
    return FieldMigrationReport(where, counts["people"], counts["templates"], counts["crops"], dropped)
