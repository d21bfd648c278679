"""Opening a gallery: :func:`open_database` (engine, probe, schema check or migration, WAL)."""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from faceapp.config import resolve_paths
from faceapp.errors import GalleryError
from faceapp.gallery import fieldcrypt
from faceapp.gallery.database.engine import (
    DatabaseConfig,
    create_gallery_engine,
    is_encrypted,
    is_read_only,
)
from faceapp.gallery.database.files import _describe, _make_private, is_sqlite, sqlite_path
from faceapp.gallery.database.schema import _check_and_migrate, _check_read_only
from faceapp.gallery.database.sessions import translate_errors
from faceapp.gallery.keys import key_file_path

logger = logging.getLogger(__name__)


def _ensure_wal(engine: Engine) -> None:
    """Switch a SQLite file to WAL (outside any transaction: the mode cannot change in one)."""
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        try:
            cur.execute("PRAGMA journal_mode")
            mode = str(cur.fetchone()[0]).lower()
            if mode != "wal":
                cur.execute("PRAGMA journal_mode = WAL")
                logger.info("switched gallery to WAL journaling (was %s)", mode)
        finally:
            cur.close()
    finally:
        raw.close()


def open_database(url: str | None = None, config: DatabaseConfig = DatabaseConfig()) -> Engine:
    """Open (creating or migrating as needed) the gallery at ``url``; returns the engine.

    ``url``: a SQLAlchemy URL or a plain path (taken as SQLite); ``None`` uses
    :func:`faceapp.config.resolve_paths` (``FACEAPP_DB``, else ``db/faceapp.sqlite``).
    Raises :class:`GalleryError` for a non-SQLite/corrupt file, a foreign or newer schema,
    or a lock held too long; in those cases the file is not modified.
    """
    db_url = resolve_paths(db=url).db_url
    where = _describe(db_url)
    path = sqlite_path(db_url) if is_sqlite(db_url) else None
    fresh = path is not None and (not path.exists() or path.stat().st_size == 0)
    engine = create_gallery_engine(db_url, config)
    try:
        with translate_errors(where):
            if is_sqlite(engine) and path is not None:
                try:
                    with engine.connect() as conn:
                        # read-only probe first: a corrupt header/schema fails here, unwritten
                        conn.exec_driver_sql("SELECT count(*) FROM sqlite_master").scalar()
                except DBAPIError as err:
                    if is_encrypted(engine) and "not a database" in str(err.orig).lower():
                        raise GalleryError(
                            f"{where}: cannot be decrypted with the key in "
                            f"{key_file_path(Path(where)).name} (a key file of another "
                            "gallery, or a corrupt database); it was left untouched"
                        ) from None
                    raise
                if not is_encrypted(engine) and config.encrypt:
                    logger.warning("the gallery %s is not encrypted; run `faceapp keys migrate "
                                   "--db %s` to encrypt it", where, where)
            if is_read_only(engine):
                _check_read_only(engine, db_url)
                fieldcrypt.attach(engine, config.keys, want=config.field_encryption, read_only=True)
                return engine
            _check_and_migrate(engine, db_url)
            fieldcrypt.attach(engine, config.keys, want=config.field_encryption, read_only=False)
            if is_sqlite(engine) and path is not None:
                _ensure_wal(engine)
                if fresh:
                    _make_private(path)
    except BaseException:
        engine.dispose()
        raise
    return engine
