"""Engine factory, SQLite pragmas, schema version and migrations.

Nothing here runs at import: :func:`open_database` builds an engine when called.

SQLite specifics (the default back end, one file under ``db/``):

* a new file is created with mode 0600 (a face gallery is biometric data), its directory
  with 0700 when it has to be made;
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
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

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
    """

    busy_timeout_s: float = 10.0
    create: bool = True


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
        if path is not None:
            _precheck_sqlite_file(path, config.create)
            engine = create_engine(url)
        else:
            engine = create_engine(
                url, poolclass=StaticPool, connect_args={"check_same_thread": False}
            )
        _install_sqlite_hooks(engine, config.busy_timeout_s)
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


def _check_and_migrate(engine: Engine, url: str) -> None:
    where = _describe(url)
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
    engine = create_gallery_engine(db_url, config)
    try:
        with translate_errors(where):
            if is_sqlite(engine) and sqlite_path(db_url) is not None:
                with engine.connect() as conn:
                    # read-only probe first: a corrupt header/schema fails here, unwritten
                    conn.exec_driver_sql("SELECT count(*) FROM sqlite_master").scalar()
            _check_and_migrate(engine, db_url)
            if is_sqlite(engine) and sqlite_path(db_url) is not None:
                _ensure_wal(engine)
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
