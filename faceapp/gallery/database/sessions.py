"""Units of work on an engine, and database failures as :class:`~faceapp.errors.GalleryError`.

A database locked beyond the busy timeout raises ``GalleryError`` ("locked", see
:func:`translate_errors`); :func:`retry_when_locked` queues a whole write transaction behind
another process's lock.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session

from faceapp.errors import GalleryError
from faceapp.gallery.database.engine import _WRITE_OPTION
from faceapp.gallery.database.files import is_sqlite

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


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
