"""Setting up a gallery's field encryption when it is opened: its key file (beside a SQLite
gallery, or this desktop's for a server gallery), loading or creating the field key."""

from __future__ import annotations

import contextlib
import logging
import uuid
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.engine import Connection, Engine

from faceapp.errors import GalleryError, KeyUnavailable
from faceapp.gallery.crypto import random_key, subkey
from faceapp.gallery.fieldcrypt.cipher import (
    ENV_KEY_DIR,
    FIELD_OPTION,
    ROOT_OPTION,
    FieldCipher,
    KeyStore,
    fields_wanted,
    server_key_base,
)
from faceapp.gallery.fieldcrypt.rows import cipher_of
from faceapp.gallery.orm import GalleryKey, Person, SchemaInfo

logger = logging.getLogger(__name__)


def _key_store(engine: Engine, conn: Connection, keys_config: Any, *, create: bool) -> KeyStore:
    """The key file of this gallery and the root key of its field entry."""
    from faceapp.gallery.keys import create_key_file, key_file_path, unlock

    root = engine.get_execution_options().get(ROOT_OPTION)
    if engine.dialect.name == "sqlite":
        from faceapp.gallery.database.files import sqlite_path

        path = sqlite_path(str(engine.url))
        if not root or path is None:
            raise KeyUnavailable("field encryption of a SQLite gallery needs its key file "
                                 "(an encrypted gallery)")
        return KeyStore(key_file_path(path), bytes(root))
    uid = conn.execute(select(SchemaInfo.gallery_uuid).where(SchemaInfo.id == 1)).scalar()
    base = server_key_base(str(uid or ""))
    if not key_file_path(base).exists() and not create:
        raise KeyUnavailable(
            f"this server gallery's fields are encrypted and its key file {key_file_path(base)} "
            "is not on this desktop: copy it from a desktop that uses the gallery (same path, "
            f"or set {ENV_KEY_DIR})")
    data_key = create_key_file(base, keys_config) if create else unlock(base, keys_config)
    return KeyStore(key_file_path(base), subkey(data_key, "fields-root"))


def load_cipher(engine: Engine, conn: Connection, row: Any, keys_config: Any) -> FieldCipher:
    store = _key_store(engine, conn, keys_config, create=False)
    entry = store.load()
    if entry is None or entry[0] != row.key_id:
        raise GalleryError(f"{store.path}: this key file holds no field key of this gallery "
                           f"(key {row.key_id})")
    key_id, file_epoch, w = entry
    if file_epoch > int(row.epoch):
        raise GalleryError(
            f"{store.path}: the key file is ahead of the database (epoch {file_epoch} > "
            f"{row.epoch}): the database was restored from a copy older than a deletion; its "
            "people cannot be decrypted with the current keys (restore the key file of the "
            "same time)")
    cipher = FieldCipher(key_id, file_epoch, w, store)
    cipher.verify(int(row.epoch), bytes(row.check_value))
    if file_epoch < int(row.epoch):  # another desktop deleted someone: advance our file
        with contextlib.suppress(GalleryError, OSError):
            store.save(key_id, int(row.epoch), cipher.field_key(int(row.epoch)))
        cipher.forget_before(int(row.epoch))
    return cipher


def initialise(engine: Engine, conn: Connection, keys_config: Any) -> FieldCipher:
    """Give the gallery on ``conn`` (inside the caller's write transaction, which holds the
    write lock) a new field key: key file entry first, then the ``gallery_key`` row."""
    store = _key_store(engine, conn, keys_config, create=True)
    key_id, w = str(uuid.uuid4()), random_key()
    store.save(key_id, 0, w, replace=True)
    cipher = FieldCipher(key_id, 0, w, store)
    conn.execute(insert(GalleryKey).values(id=1, key_id=key_id, epoch=0,
                                           check_value=cipher.check_value(0)))
    return cipher


def gallery_key_row(conn: Connection) -> Any:
    return conn.execute(select(GalleryKey.key_id, GalleryKey.epoch, GalleryKey.check_value)
                        .where(GalleryKey.id == 1)).first()


def is_field_encrypted(engine: Engine) -> bool:
    """Are this gallery's templates field-encrypted (its engine's cipher, else its
    ``gallery_key`` row)?"""
    if cipher_of(engine) is not None:
        return True
    from sqlalchemy import inspect

    with engine.connect() as conn:
        if "gallery_key" not in inspect(conn).get_table_names():
            return False
        return gallery_key_row(conn) is not None


def is_empty(conn: Connection) -> bool:
    return not conn.execute(select(func.count()).select_from(Person)).scalar()


def attach(engine: Engine, keys_config: Any, *, want: bool | None, read_only: bool) -> None:
    """Set the engine's field cipher after the schema is in place: load it when the gallery
    has a field key; make one for a new (empty) gallery when field encryption is wanted; else
    fields stay in clear (an older gallery: ``faceapp keys migrate`` encrypts them)."""
    with engine.connect() as conn:
        row = gallery_key_row(conn)
        if row is not None:
            engine.update_execution_options(**{FIELD_OPTION: load_cipher(engine, conn, row, keys_config)})
            return
        if read_only or not fields_wanted(want) or not is_empty(conn):
            if not is_empty(conn) and fields_wanted(want):
                logger.warning("the gallery's templates are not field-encrypted; run `faceapp keys "
                               "migrate` to encrypt them with per-person keys")
            return
        if engine.dialect.name == "sqlite" and not engine.get_execution_options().get(ROOT_OPTION):
            return  # a plaintext (legacy or in-memory) SQLite gallery: no key file to hold it
    from faceapp.gallery.database.engine import _WRITE_OPTION

    with engine.connect() as conn:
        conn = conn.execution_options(**{_WRITE_OPTION: True})
        with conn.begin():
            if engine.dialect.name == "postgresql":
                conn.exec_driver_sql("LOCK TABLE gallery_key IN EXCLUSIVE MODE")
            row = gallery_key_row(conn)
            if row is not None:
                cipher = load_cipher(engine, conn, row, keys_config)
            elif is_empty(conn):
                cipher = initialise(engine, conn, keys_config)
                logger.info("field-level encryption with per-person keys set up")
            else:
                return
    engine.update_execution_options(**{FIELD_OPTION: cipher})
