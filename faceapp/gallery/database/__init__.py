"""Engine factory, SQLite pragmas, schema version and migrations (a package of one concept a
module; every name is importable from here, as from the former single module).

Nothing here runs at import: :func:`open_database` builds an engine when called.

SQLite specifics (the default back end, one file under ``db/``):

* a new file is created with mode 0600 (a face gallery is biometric data), its directory
  with 0700 when it has to be made; an existing empty file that becomes a gallery is set
  to 0600 too (and so are the -wal/-shm files SQLite makes beside it);
* a file (or folder) this process cannot write is opened read-only (``mode=ro``; as
  ``immutable`` when SQLite cannot make the -shm file and no -wal holds changes): listing
  and searching work, writes raise "the database is read-only";
* every connection runs ``PRAGMA foreign_keys=ON`` and a ``busy_timeout``;
* the file is switched to WAL journaling (readers never block the writer) once the schema
  is known to be ours;
* transactions begin with ``BEGIN`` (deferred) for reads and ``BEGIN IMMEDIATE`` for writes
  (see :func:`write_session`): a writer takes the lock up front and waits up to the busy
  timeout for it, instead of failing half-way when another process wrote meanwhile.

Opening a file that is not a SQLite database, is corrupt, belongs to another application
or was written by a newer faceapp raises :class:`~faceapp.errors.GalleryError` *before*
anything is written to it. A database locked beyond the busy timeout raises
``GalleryError`` too (see :func:`translate_errors`).

Encryption at rest (see :mod:`faceapp.gallery.keys`): a **new** SQLite file is an encrypted
SQLCipher 4 database (AES-256 pages with an HMAC each, through ``sqlcipher3``) keyed with the
gallery's random data key, which the key file ``<database>.keys`` holds wrapped. Every
connection sets the key first (``PRAGMA key`` with the raw key: no per-connection KDF), then
``secure_delete`` (deleted rows are zeroed in the file). A legacy plaintext file still opens
(with a warning) until :func:`encrypt_in_place` (``faceapp keys migrate``) converts it.

Any other SQLAlchemy URL (e.g. ``postgresql+psycopg://...`` for a gallery shared by several
desktops) goes through the same schema check; pragmas only apply to SQLite.

Modules: :mod:`~faceapp.gallery.database.files` (the file on disk),
:mod:`~faceapp.gallery.database.engine` (engines, keys, pragmas, read-only),
:mod:`~faceapp.gallery.database.sessions` (units of work, errors, retry when locked),
:mod:`~faceapp.gallery.database.schema` (version checks, migrations, the ``schema_info`` row),
:mod:`~faceapp.gallery.database.opening` (:func:`open_database`),
:mod:`~faceapp.gallery.database.maintenance` (purge, integrity check).
"""

from faceapp.gallery.database.engine import (
    DatabaseConfig,
    at_rest,
    connect_raw,
    create_gallery_engine,
    gallery_key,
    is_encrypted,
    is_read_only,
    key_literal,
    sqlcipher_dbapi,
)
from faceapp.gallery.database.files import (
    SQLITE_MAGIC,
    FileState,
    classify_gallery_file,
    is_sqlite,
    sqlite_path,
)
from faceapp.gallery.database.maintenance import (
    PurgeReport,
    integrity_check,
    purge_deleted,
)
from faceapp.gallery.database.opening import (
    open_database,
)
from faceapp.gallery.database.schema import (
    SCHEMA_VERSION,
    bump_generation,
    current_generation,
    gallery_uuid,
)
from faceapp.gallery.database.sessions import (
    LOCK_PATIENCE_S,
    is_locked_error,
    read_session,
    retry_when_locked,
    translate_errors,
    write_session,
)

__all__ = [
    "LOCK_PATIENCE_S",
    "SCHEMA_VERSION",
    "SQLITE_MAGIC",
    "DatabaseConfig",
    "FileState",
    "PurgeReport",
    "at_rest",
    "bump_generation",
    "classify_gallery_file",
    "connect_raw",
    "create_gallery_engine",
    "current_generation",
    "gallery_key",
    "gallery_uuid",
    "integrity_check",
    "is_encrypted",
    "is_locked_error",
    "is_read_only",
    "is_sqlite",
    "key_literal",
    "open_database",
    "purge_deleted",
    "read_session",
    "retry_when_locked",
    "sqlcipher_dbapi",
    "sqlite_path",
    "translate_errors",
    "write_session",
]
