"""Engines and raw connections: SQLCipher keying, per-connection pragmas, read-only opening.

Every SQLite connection sets the key first (``PRAGMA key`` with the raw key: no
per-connection KDF), then a ``busy_timeout``, ``foreign_keys=ON`` and ``secure_delete``;
transactions begin with ``BEGIN`` (deferred) for reads and ``BEGIN IMMEDIATE`` for writes (an
execution option set by :func:`~faceapp.gallery.database.write_session`). A file (or folder)
this process cannot write is opened read-only (``mode=ro``; as ``immutable`` when SQLite
cannot make the -shm file and no -wal holds changes).
"""

from __future__ import annotations

import contextlib
import logging
import os
import urllib.parse
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import StaticPool

from faceapp.errors import GalleryError
from faceapp.gallery.crypto import AtRest, subkey
from faceapp.gallery.database.files import _writable, classify_gallery_file, is_sqlite, sqlite_path
from faceapp.gallery.keys import KeyConfig, create_key_file, key_file_path, unlock

logger = logging.getLogger(__name__)

_WRITE_OPTION = "faceapp_write"


@dataclass(frozen=True)
class DatabaseConfig:
    """How to open the gallery.

    ``busy_timeout_s``: how long a SQLite connection waits for another process's lock
    before :class:`~faceapp.errors.GalleryError` ("locked") is raised.
    ``create``: make a new, empty gallery when the SQLite file does not exist.
    ``encrypt``: a new SQLite file is created encrypted (the default; ``False`` only for
    tests of the legacy format). ``keys``: where key-encryption keys come from.
    ``read_only``: see below.
    """

    busy_timeout_s: float = 10.0
    create: bool = True
    encrypt: bool = True
    keys: KeyConfig = field(default_factory=KeyConfig)
    field_encryption: bool | None = None
    """A new (empty) gallery gets field-level encryption with per-person keys
    (:mod:`faceapp.gallery.fieldcrypt`); ``None`` reads ``$FACEAPP_FIELD_ENCRYPTION`` (default
    on). ``False`` keeps embeddings in clear, e.g. for in-server (pgvector) search."""
    read_only: bool = False
    """Open without writing anything (also chosen by itself for a SQLite file, or a folder,
    this process cannot write): reads work, writes raise "the database is read-only"."""


_AT_REST_OPTION = "faceapp_at_rest"


def at_rest(engine: Engine) -> AtRest:
    """How files written beside this gallery (index snapshots) are sealed: with a key
    derived from the gallery's data key when it is encrypted, else in clear (an engine
    option set by :func:`create_gallery_engine`)."""
    value = engine.get_execution_options().get(_AT_REST_OPTION)
    return value if isinstance(value, AtRest) else AtRest()


def is_encrypted(engine: Engine) -> bool:
    """Is this gallery's database encrypted at rest?"""
    return at_rest(engine).encrypted


def key_literal(key: bytes) -> str:
    """SQLCipher's literal of a raw 256-bit key (``"x'<64 hex digits>'"``: no KDF run)."""
    return f"\"x'{key.hex()}'\""


def _set_key(execute: Callable[[str], object], key: bytes) -> None:
    """The first statements of a SQLCipher connection (``execute``: its or its cursor's):
    SQLCipher's own logging off (a failure becomes a GalleryError instead), then the raw key."""
    execute("PRAGMA cipher_log_level = NONE")
    execute(f"PRAGMA key = {key_literal(key)}")


_READ_ONLY: weakref.WeakSet[Engine] = weakref.WeakSet()


def is_read_only(engine: Engine) -> bool:
    """The engine was opened read-only (:attr:`DatabaseConfig.read_only`)."""
    return engine in _READ_ONLY


def _read_only_uri(path: Path, key: bytes = b"") -> str:
    """A ``file:`` URI that opens ``path`` read-only (through SQLCipher's SQLite, keyed with
    ``key`` for an encrypted gallery). In a folder this process cannot write, SQLite cannot
    make the -shm file of a WAL gallery: then it is opened as immutable, which is right
    only when no -wal file holds changes."""
    module = sqlcipher_dbapi()
    base = "file:" + urllib.parse.quote(str(path.resolve())) + "?mode=ro"
    last: Exception | None = None
    for uri in (base, base + "&immutable=1"):
        if uri.endswith("immutable=1"):
            wal = Path(f"{path}-wal")
            if wal.exists() and wal.stat().st_size > 0:
                raise GalleryError(
                    f"{path}: read-only gallery whose journal ({wal.name}) holds changes "
                    "not yet in the file; open it once where it can be written")
        try:
            conn = module.connect(uri, uri=True)
            try:
                if key:
                    _set_key(conn.execute, key)
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            finally:
                conn.close()
            return uri
        except module.DatabaseError as err:
            last = err
    raise GalleryError(f"{path}: cannot open the gallery read-only ({last})")


def _install_sqlite_hooks(engine: Engine, busy_timeout_s: float, key: bytes = b"") -> None:
    busy_ms = max(0, round(busy_timeout_s * 1000))

    # insert=True: the key must be the very first statement of a SQLCipher connection
    @event.listens_for(engine, "connect", insert=True)
    def _on_connect(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        try:
            if key:
                _set_key(cur.execute, key)
            cur.execute(f"PRAGMA busy_timeout = {busy_ms}")
            cur.execute("PRAGMA foreign_keys = ON")
            cur.execute("PRAGMA secure_delete = ON")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get(_WRITE_OPTION):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")


def _key_options(key: bytes) -> dict[str, Any]:
    """Engine options of an encrypted SQLite gallery: the snapshot sealing and the root key of
    its field keys (both derived from the data key, never the data key itself)."""
    from faceapp.gallery.fieldcrypt import ROOT_OPTION

    return {_AT_REST_OPTION: AtRest(subkey(key, "snapshot")), ROOT_OPTION: subkey(key, "fields-root")}


def sqlcipher_dbapi() -> Any:
    """The DB-API module of SQLCipher (``sqlcipher3``: SQLite with SQLCipher 4 built in)."""
    try:
        from sqlcipher3 import dbapi2
    except ImportError as err:  # pragma: no cover - a dependency of faceapp
        raise GalleryError(f"encrypted galleries need the sqlcipher3 package ({err})") from None
    return dbapi2


def gallery_key(path: Path, config: DatabaseConfig = DatabaseConfig()) -> bytes:
    """The data key of the encrypted gallery file at ``path`` (unlocking its key file)."""
    return unlock(path, config.keys)


def connect_raw(path: str | os.PathLike[str], key: bytes = b"") -> Any:
    """A plain DB-API connection to a gallery file (maintenance, tests): SQLCipher keyed
    with ``key`` when given (see :func:`gallery_key`), else the file read in clear."""
    module = sqlcipher_dbapi()
    con = module.connect(os.fspath(path), isolation_level=None)
    if key:
        _set_key(con.execute, key)
    return con


def create_gallery_engine(url: str, config: DatabaseConfig = DatabaseConfig()) -> Engine:
    """A SQLAlchemy engine for ``url`` with faceapp's connection settings; no schema check.

    A new SQLite file is created encrypted (``config.encrypt``), an encrypted one is
    unlocked (its passphrase asked for when needed). Use :func:`open_database` unless you
    know the schema is already in place.
    """
    if is_sqlite(url):
        path = sqlite_path(url)
        key = b""
        options: dict[str, Any] = {}
        if path is not None and (config.read_only or (path.exists() and not _writable(path))):
            state = classify_gallery_file(path, create=False)
            if state == "encrypted":
                key = unlock(path, config.keys)
                options = _key_options(key)
            uri = _read_only_uri(path, key)
            module = sqlcipher_dbapi()
            engine = create_engine(
                url, module=module, execution_options=options,
                creator=lambda: module.connect(uri, uri=True, check_same_thread=False))
            _READ_ONLY.add(engine)
            logger.info("opened gallery %s read-only", path)
        elif path is not None:
            existed = path.exists()
            state = classify_gallery_file(path, config.create)
            try:
                if state == "encrypted" or (state == "new" and key_file_path(path).exists()):
                    key = unlock(path, config.keys)
                elif state == "new" and config.encrypt:
                    key = create_key_file(path, config.keys)
            except BaseException:
                if not existed:  # leave no empty file behind a failed creation
                    with contextlib.suppress(OSError):
                        path.unlink()
                raise
            # SQLCipher's SQLite for plaintext files too: two SQLite libraries in one
            # process do not see each other's POSIX locks on the same file
            options = _key_options(key) if key else {}
            engine = create_engine(url, module=sqlcipher_dbapi(), execution_options=options)
        else:
            engine = create_engine(
                url, poolclass=StaticPool, connect_args={"check_same_thread": False}
            )
        _install_sqlite_hooks(engine, config.busy_timeout_s, key)
        return engine
    return create_engine(url, pool_pre_ping=True)
