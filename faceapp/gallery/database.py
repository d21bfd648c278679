"""Engine factory, SQLite pragmas, schema version and migrations.

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
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import time
import urllib.parse
import uuid
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from sqlalchemy import create_engine, event, inspect, select, update
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from faceapp import __version__
from faceapp.config import resolve_paths
from faceapp.errors import GalleryError
from faceapp.gallery import migrations
from faceapp.gallery.audit import install_append_only
from faceapp.gallery.crypto import AtRest, subkey
from faceapp.gallery.keys import KeyConfig, create_key_file, key_file_path, unlock
from faceapp.gallery.orm import Base, SchemaInfo

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

SCHEMA_VERSION = 1
"""Coarse schema version in ``schema_info`` (a gallery above it is refused). Schema changes
themselves are Alembic revisions in :mod:`faceapp.gallery.migrations`."""

SQLITE_MAGIC = b"SQLite format 3\x00"


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
    read_only: bool = False
    """Open without writing anything (also chosen by itself for a SQLite file, or a folder,
    this process cannot write): reads work, writes raise "the database is read-only"."""


_AT_REST_OPTION = "faceapp_at_rest"
FileState = Literal["new", "plain", "encrypted"]


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


def _key_pragma(key: bytes) -> str:
    return f"PRAGMA key = {key_literal(key)}"


def is_sqlite(engine_or_url: Engine | str) -> bool:
    url = engine_or_url.url if isinstance(engine_or_url, Engine) else make_url(engine_or_url)
    return url.get_backend_name() == "sqlite"


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL; ``None`` for an in-memory database or another back end."""
    u = make_url(url)
    if u.get_backend_name() != "sqlite" or u.database in (None, "", ":memory:"):
        return None
    if u.database.startswith("file:"):
        return None
    return Path(u.database)


def _describe(url: str) -> str:
    path = sqlite_path(url)
    return str(path) if path is not None else make_url(url).render_as_string(hide_password=True)


def classify_gallery_file(path: Path, create: bool) -> FileState:
    """Classify the file without opening it as a database; create a new file 0600.

    ``plain``: a SQLite file in clear (its header says so); ``encrypted``: a file with a
    key file beside it whose header is not plaintext SQLite (SQLCipher starts with a random
    salt); ``new``: missing (then created empty) or empty. Anything else is refused.
    """
    if path.exists():
        if path.is_dir():
            raise GalleryError(f"{path}: is a directory, not a gallery database")
        try:
            with path.open("rb") as fh:
                head = fh.read(len(SQLITE_MAGIC))
        except OSError as err:
            raise GalleryError(f"{path}: cannot read the gallery database ({err})") from err
        if not head:  # an empty file becomes a gallery: make it private first
            _make_private(path)
            return "new"
        if head == SQLITE_MAGIC:
            return "plain"
        if key_file_path(path).is_file():
            return "encrypted"
        raise GalleryError(
            f"{path}: not a SQLite database (corrupt, another kind of file, or an encrypted "
            f"gallery whose key file {key_file_path(path).name} is missing); it was left untouched"
        )
    if not create:
        raise GalleryError(f"{path}: no gallery database at this path")
    parent = path.parent
    try:
        if not parent.exists():
            parent.mkdir(parents=True, mode=0o700)
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        os.close(fd)
        logger.info("created gallery database %s", path)
    except FileExistsError:
        pass  # another process created it at the same moment
    except OSError as err:
        raise GalleryError(f"{path}: cannot create the gallery database ({err})") from err
    return "new"


def _make_private(path: Path) -> None:
    """Mode 0600 for a gallery file this process made or adopted, and for its -wal/-shm."""
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            if p.exists() and (p.stat().st_mode & 0o077):
                os.chmod(p, 0o600)
        except OSError as err:
            logger.warning("%s: could not make the gallery file private (%s)", p, err)


def _writable(path: Path) -> bool:
    """This process can write the SQLite file and create its -wal/-shm beside it."""
    folder = path.parent if str(path.parent) else Path(".")
    return os.access(path, os.W_OK) and os.access(folder, os.W_OK | os.X_OK)


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
                    conn.execute("PRAGMA cipher_log_level = NONE")
                    conn.execute(_key_pragma(key))
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            finally:
                conn.close()
            return uri
        except module.DatabaseError as err:
            last = err
    raise GalleryError(f"{path}: cannot open the gallery read-only ({last})")


def _install_sqlite_hooks(engine: Engine, busy_timeout_s: float, key: bytes = b"") -> None:
    busy_ms = max(0, round(busy_timeout_s * 1000))
    key_sql = _key_pragma(key) if key else ""

    # insert=True: the key must be the very first statement of a SQLCipher connection
    @event.listens_for(engine, "connect", insert=True)
    def _on_connect(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        try:
            if key_sql:
                cur.execute("PRAGMA cipher_log_level = NONE")  # failures become GalleryError
                cur.execute(key_sql)
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
        con.execute("PRAGMA cipher_log_level = NONE")
        con.execute(_key_pragma(key))
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
                options = {_AT_REST_OPTION: AtRest(subkey(key, "snapshot"))}
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
            options = {_AT_REST_OPTION: AtRest(subkey(key, "snapshot"))} if key else {}
            engine = create_engine(url, module=sqlcipher_dbapi(), execution_options=options)
        else:
            engine = create_engine(
                url, poolclass=StaticPool, connect_args={"check_same_thread": False}
            )
        _install_sqlite_hooks(engine, config.busy_timeout_s, key)
        return engine
    return create_engine(url, pool_pre_ping=True)


_CONNECTION_FAILURES = (
    "connection failed",
    "connection is bad",
    "could not connect",
    "connection refused",
    "server closed the connection",
    "terminating connection",
    "connection timeout",
    "the connection is closed",
    "consuming input failed",
)


def _is_connection_failure(lowered_message: str) -> bool:
    """Whether a driver message says the server could not be reached or went away."""
    return any(marker in lowered_message for marker in _CONNECTION_FAILURES)


@contextlib.contextmanager
def translate_errors(what: str) -> Iterator[None]:
    """Turn database failures into :class:`GalleryError` naming ``what`` and the reason."""
    try:
        yield
    except GalleryError:
        raise
    except DBAPIError as err:
        text = str(err.orig) if err.orig is not None else str(err)
        low = text.lower()
        if "locked" in low or "busy" in low:
            raise GalleryError(
                f"{what}: the database is locked by another process; try again"
            ) from err
        if "not a database" in low or "malformed" in low or "corrupt" in low:
            raise GalleryError(f"{what}: the database file is corrupt ({text})") from err
        if "readonly" in low or "read-only" in low:
            raise GalleryError(f"{what}: the database is read-only ({text})") from err
        if getattr(err, "connection_invalidated", False) or _is_connection_failure(low):
            first = text.strip().splitlines()[0] if text.strip() else text
            raise GalleryError(
                f"{what}: cannot reach the database server ({first}); check that it is "
                "running and reachable, then try again"
            ) from err
        raise GalleryError(f"{what}: database error ({text})") from err
    except SQLAlchemyError as err:
        raise GalleryError(f"{what}: database error ({err})") from err


LOCK_PATIENCE_S = 300.0
"""How long :func:`retry_when_locked` keeps retrying a write that found the gallery locked."""


def is_locked_error(err: BaseException) -> bool:
    """A :class:`GalleryError` from :func:`translate_errors` for a lock held beyond the busy
    timeout (another process is writing)."""
    cause = err.__cause__
    if not isinstance(err, GalleryError) or not isinstance(cause, DBAPIError):
        return False
    text = (str(cause.orig) if cause.orig is not None else str(cause)).lower()
    return "locked" in text or "busy" in text


def retry_when_locked(fn: Callable[[], _T], what: str, *, patience_s: float = LOCK_PATIENCE_S,
                      sleep: Callable[[float], None] = time.sleep,
                      clock: Callable[[], float] = time.monotonic) -> _T:
    """``fn()`` (one write transaction), run again with exponential back-off (0.1 s doubling
    to 5 s, with jitter) while it fails because another process holds the write lock, for
    up to ``patience_s``: concurrent big writers queue instead of failing. The transaction
    must be all-or-nothing (a failed try wrote nothing)."""
    start = clock()
    delay = 0.1
    tries = 0
    while True:
        try:
            return fn()
        except GalleryError as err:
            tries += 1
            if not is_locked_error(err) or clock() - start + delay > patience_s:
                raise
            logger.info("%s: the gallery is locked by another writer; retry %d in %.1f s",
                        what, tries, delay)
            sleep(delay * random.uniform(0.75, 1.25))
            delay = min(5.0, delay * 2)


@contextlib.contextmanager
def write_session(engine: Engine) -> Iterator[Session]:
    """``with write_session(engine) as s:`` one write transaction, committed on success.

    On SQLite it starts with ``BEGIN IMMEDIATE``: the write lock is taken first (waiting up
    to the busy timeout), so concurrent writers queue instead of failing. Equivalent to
    ``with Session(engine) as s, s.begin():`` elsewhere.
    """
    with Session(engine) as session, session.begin():
        session.connection(execution_options={_WRITE_OPTION: True})
        yield session


@contextlib.contextmanager
def read_session(engine: Engine) -> Iterator[Session]:
    """``with read_session(engine) as s:`` one read-only unit (a consistent snapshot).

    SQLite gives a snapshot per transaction by itself; PostgreSQL's default (READ
    COMMITTED) would let each statement see other desktops' newer commits, so that e.g. a
    count and a row fetch of one unit disagree: reads there run as REPEATABLE READ.
    """
    with Session(engine) as session, session.begin():
        if not is_sqlite(engine):
            session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        yield session


def _check_read_only(engine: Engine, url: str) -> None:
    """The schema checks of :func:`_check_and_migrate`, without writing."""
    where = _describe(url)
    with engine.connect() as conn:
        tables = set(inspect(conn).get_table_names())
        if SchemaInfo.__tablename__ not in tables:
            raise GalleryError(f"{where}: read-only, and not a faceapp gallery (or an empty file)")
        row = conn.execute(select(SchemaInfo.version).where(SchemaInfo.id == 1)).first()
        if row is None:
            raise GalleryError(f"{where}: gallery has no schema version row (corrupt?)")
        version = int(row[0])
        revision = migrations.current_revision(conn)
        if version != SCHEMA_VERSION or revision != migrations.head_revision():
            raise GalleryError(
                f"{where}: gallery schema v{version} (revision {revision}), this faceapp reads "
                f"v{SCHEMA_VERSION} (revision {migrations.head_revision()}), and the file is "
                "read-only (it cannot be migrated)")


def _schema_is_current(engine: Engine) -> bool:
    """A read (no write lock): the gallery schema is there at this code's version."""
    with engine.connect() as conn:
        if SchemaInfo.__tablename__ not in set(inspect(conn).get_table_names()):
            return False
        row = conn.execute(select(SchemaInfo.version).where(SchemaInfo.id == 1)).first()
        return (row is not None and int(row[0]) == SCHEMA_VERSION
                and migrations.current_revision(conn) == migrations.head_revision())


def _check_and_migrate(engine: Engine, url: str) -> None:
    where = _describe(url)
    if _schema_is_current(engine):
        return  # nothing to write: no need to wait for another writer's lock
    with engine.connect() as conn:
        conn = conn.execution_options(**{_WRITE_OPTION: True})
        with conn.begin():
            tables = set(inspect(conn).get_table_names())
            if SchemaInfo.__tablename__ not in tables:
                if tables:
                    raise GalleryError(
                        f"{where}: not a faceapp gallery (it holds other tables: "
                        f"{', '.join(sorted(tables)[:5])}); it was left untouched"
                    )
                Base.metadata.create_all(conn)
                install_append_only(conn)
                conn.execute(
                    SchemaInfo.__table__.insert().values(
                        id=1, version=SCHEMA_VERSION, generation=0, app_version=__version__,
                        gallery_uuid=str(uuid.uuid4()),
                    )
                )
                migrations.stamp(conn, migrations.head_revision())
                logger.info("initialised gallery schema v%d in %s", SCHEMA_VERSION, where)
                return
            row = conn.execute(select(SchemaInfo.version).where(SchemaInfo.id == 1)).first()
            if row is None:
                raise GalleryError(f"{where}: gallery has no schema version row (corrupt?)")
            version = int(row[0])
            revision = migrations.current_revision(conn)
            if version > SCHEMA_VERSION or (
                    revision is not None and revision not in migrations.known_revisions()):
                raise GalleryError(
                    f"{where}: gallery schema v{version} (revision {revision}) was written by "
                    f"a newer faceapp (this one reads up to revision "
                    f"{migrations.head_revision()}); upgrade faceapp. The file was left untouched"
                )
            if revision is None:
                # a gallery from before migrations existed: its schema is the baseline
                migrations.stamp(conn, migrations.BASELINE)
                revision = migrations.BASELINE
            if revision != migrations.head_revision():
                logger.info("migrating gallery %s from revision %s", where, revision)
                migrations.upgrade(conn)
                conn.execute(update(SchemaInfo).where(SchemaInfo.id == 1)
                             .values(app_version=__version__))


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
                return engine
            _check_and_migrate(engine, db_url)
            if is_sqlite(engine) and path is not None:
                _ensure_wal(engine)
                if fresh:
                    _make_private(path)
    except BaseException:
        engine.dispose()
        raise
    return engine


@dataclass(frozen=True)
class PurgeReport:
    """What :func:`purge_deleted` did to a SQLite file.

    ``vacuumed``: the file was rebuilt without free pages; ``wal_busy``: another connection
    kept the write-ahead log from being emptied (it is emptied at the next checkpoint);
    ``freelist_pages``: free pages left (0 after a VACUUM).
    """

    vacuumed: bool
    wal_busy: bool
    freelist_pages: int
    wal_bytes: int

    def to_dict(self) -> dict[str, object]:
        return {"secure_delete": True, "vacuumed": self.vacuumed, "wal_busy": self.wal_busy,
                "freelist_pages": self.freelist_pages, "wal_bytes": self.wal_bytes}


def purge_deleted(engine: Engine) -> PurgeReport:
    """Make deleted rows leave the disk files, after their deletion was committed.

    Every connection runs with ``secure_delete`` (deleted cells are zeroed); this then
    ``VACUUM``s (no free page keeps old bytes) and checkpoints the write-ahead log with
    ``TRUNCATE`` (its frames held the pages from before the deletion). Nothing to do for
    in-memory SQLite or another back end (a report with ``vacuumed=False``).
    """
    url = engine.url.render_as_string(hide_password=False)
    path = sqlite_path(url)
    if not is_sqlite(engine) or path is None:
        return PurgeReport(False, False, 0, 0)
    with translate_errors(f"{_describe(url)} (purge)"):
        raw = engine.raw_connection()
        try:
            cur = raw.cursor()
            try:
                cur.execute("VACUUM")
                busy = int(cur.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0])
                free = int(cur.execute("PRAGMA freelist_count").fetchone()[0])
            finally:
                cur.close()
        finally:
            raw.close()
    wal = Path(f"{path}-wal")
    return PurgeReport(True, bool(busy), free, wal.stat().st_size if wal.exists() else 0)


def bump_generation(session: Session) -> int:
    """Increment the gallery's change counter inside the caller's transaction; returns it."""
    session.execute(update(SchemaInfo).where(SchemaInfo.id == 1).values(
        generation=SchemaInfo.generation + 1
    ))
    return current_generation(session)


def current_generation(session: Session) -> int:
    """The change counter (people/templates) as seen by the caller's transaction."""
    value = session.execute(select(SchemaInfo.generation).where(SchemaInfo.id == 1)).scalar()
    if value is None:
        raise GalleryError("gallery has no schema version row (corrupt?)")
    return int(value)


def integrity_check(engine: Engine) -> str:
    """SQLite ``PRAGMA integrity_check`` result (``"ok"`` when sound); ``"ok"`` elsewhere."""
    if not is_sqlite(engine):
        return "ok"
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("PRAGMA integrity_check").fetchall()
    return "; ".join(str(r[0]) for r in rows)


def gallery_uuid(session: Session) -> str:
    """The random identifier of this gallery (set when it was created)."""
    value = session.execute(select(SchemaInfo.gallery_uuid).where(SchemaInfo.id == 1)).scalar()
    return str(value or "")
