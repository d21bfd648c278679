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

Any other SQLAlchemy URL (e.g. ``postgresql+psycopg://...`` for a gallery shared by several
desktops) goes through the same schema check; pragmas only apply to SQLite.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import sqlite3
import time
import urllib.parse
import uuid
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from sqlalchemy import create_engine, event, inspect, select, update
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from faceapp import __version__
from faceapp.config import resolve_paths
from faceapp.errors import GalleryError
from faceapp.gallery.orm import Base, SchemaInfo

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

SCHEMA_VERSION = 1
"""Version of the schema this code writes. Bump it and add a step to :data:`MIGRATIONS`."""

SQLITE_MAGIC = b"SQLite format 3\x00"

Migration = Callable[[Connection], None]
MIGRATIONS: dict[int, Migration] = {}
"""``MIGRATIONS[v]`` upgrades a database at version ``v`` to ``v + 1`` (run in a transaction)."""

_WRITE_OPTION = "faceapp_write"


@dataclass(frozen=True)
class DatabaseConfig:
    """How to open the gallery.

    ``busy_timeout_s``: how long a SQLite connection waits for another process's lock
    before :class:`~faceapp.errors.GalleryError` ("locked") is raised.
    ``create``: make a new, empty gallery when the SQLite file does not exist.
    ``read_only``: see below.
    """

    busy_timeout_s: float = 10.0
    create: bool = True
    read_only: bool = False
    """Open without writing anything (also chosen by itself for a SQLite file, or a folder,
    this process cannot write): reads work, writes raise "the database is read-only"."""


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


def _precheck_sqlite_file(path: Path, create: bool) -> None:
    """Refuse a file that is not SQLite without opening it; create a new file 0600."""
    if path.exists():
        if path.is_dir():
            raise GalleryError(f"{path}: is a directory, not a gallery database")
        try:
            with path.open("rb") as fh:
                head = fh.read(len(SQLITE_MAGIC))
        except OSError as err:
            raise GalleryError(f"{path}: cannot read the gallery database ({err})") from err
        if head and head != SQLITE_MAGIC:
            raise GalleryError(
                f"{path}: not a SQLite database (corrupt, or another kind of file); "
                "it was left untouched"
            )
        if not head:  # an empty file becomes a gallery: make it private first
            _make_private(path)
        return
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


def _read_only_uri(path: Path) -> str:
    """A ``file:`` URI that opens ``path`` read-only. In a folder this process cannot
    write, SQLite cannot make the -shm file of a WAL gallery: then it is opened as
    immutable, which is right only when no -wal file holds changes."""
    base = "file:" + urllib.parse.quote(str(path.resolve())) + "?mode=ro"
    for uri in (base, base + "&immutable=1"):
        if uri.endswith("immutable=1"):
            wal = Path(f"{path}-wal")
            if wal.exists() and wal.stat().st_size > 0:
                raise GalleryError(
                    f"{path}: read-only gallery whose journal ({wal.name}) holds changes "
                    "not yet in the file; open it once where it can be written")
        try:
            conn = sqlite3.connect(uri, uri=True)
            try:
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            finally:
                conn.close()
            return uri
        except sqlite3.DatabaseError as err:
            last = err
    raise GalleryError(f"{path}: cannot open the gallery read-only ({last})")


def _install_sqlite_hooks(engine: Engine, busy_timeout_s: float) -> None:
    busy_ms = max(0, round(busy_timeout_s * 1000))

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout = {busy_ms}")
            cur.execute("PRAGMA foreign_keys = ON")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get(_WRITE_OPTION):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")


def create_gallery_engine(url: str, config: DatabaseConfig = DatabaseConfig()) -> Engine:
    """A SQLAlchemy engine for ``url`` with faceapp's connection settings; no schema check.

    Use :func:`open_database` unless you know the schema is already in place.
    """
    if is_sqlite(url):
        path = sqlite_path(url)
        if path is not None and (config.read_only or (path.exists() and not _writable(path))):
            _precheck_sqlite_file(path, create=False)
            uri = _read_only_uri(path)
            engine = create_engine(
                url, creator=lambda: sqlite3.connect(uri, uri=True, check_same_thread=False))
            _READ_ONLY.add(engine)
            logger.info("opened gallery %s read-only", path)
        elif path is not None:
            _precheck_sqlite_file(path, config.create)
            engine = create_engine(url)
        else:
            engine = create_engine(
                url, poolclass=StaticPool, connect_args={"check_same_thread": False}
            )
        _install_sqlite_hooks(engine, config.busy_timeout_s)
        return engine
    return create_engine(url, pool_pre_ping=True)


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
    """``with read_session(engine) as s:`` one read-only unit (a consistent snapshot)."""
    with Session(engine) as session, session.begin():
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
        if version != SCHEMA_VERSION:
            raise GalleryError(
                f"{where}: gallery schema v{version}, this faceapp reads v{SCHEMA_VERSION}, and "
                "the file is read-only (it cannot be migrated)")


def _schema_is_current(engine: Engine) -> bool:
    """A read (no write lock): the gallery schema is there at this code's version."""
    with engine.connect() as conn:
        if SchemaInfo.__tablename__ not in set(inspect(conn).get_table_names()):
            return False
        row = conn.execute(select(SchemaInfo.version).where(SchemaInfo.id == 1)).first()
        return row is not None and int(row[0]) == SCHEMA_VERSION


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
                conn.execute(
                    SchemaInfo.__table__.insert().values(
                        id=1, version=SCHEMA_VERSION, generation=0, app_version=__version__,
                        gallery_uuid=str(uuid.uuid4()),
                    )
                )
                logger.info("initialised gallery schema v%d in %s", SCHEMA_VERSION, where)
                return
            row = conn.execute(select(SchemaInfo.version).where(SchemaInfo.id == 1)).first()
            if row is None:
                raise GalleryError(f"{where}: gallery has no schema version row (corrupt?)")
            version = int(row[0])
            if version > SCHEMA_VERSION:
                raise GalleryError(
                    f"{where}: gallery schema v{version} was written by a newer faceapp "
                    f"(this one reads v{SCHEMA_VERSION}); upgrade faceapp. "
                    "The file was left untouched"
                )
            while version < SCHEMA_VERSION:
                step = MIGRATIONS.get(version)
                if step is None:
                    raise GalleryError(f"{where}: no migration from schema v{version}")
                logger.info("migrating gallery %s from schema v%d", where, version)
                step(conn)
                version += 1
                conn.execute(
                    update(SchemaInfo)
                    .where(SchemaInfo.id == 1)
                    .values(version=version, app_version=__version__)
                )


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
                with engine.connect() as conn:
                    # read-only probe first: a corrupt header/schema fails here, unwritten
                    conn.exec_driver_sql("SELECT count(*) FROM sqlite_master").scalar()
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
