"""The gallery database of a service: its engine, how it is stored, one session per unit of work.

``read(what)`` / ``write(what)`` open one transaction each (the caller owns it, see
:func:`faceapp.gallery.database.write_session`) and translate database failures into
:class:`~faceapp.errors.GalleryError` naming the gallery and the operation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from faceapp.gallery.database import (
    at_rest,
    is_read_only,
    read_session,
    translate_errors,
    write_session,
)
from faceapp.gallery.repository import GalleryRepository


class UnitOfWork:
    """Sessions on one gallery engine.

    Attributes:
        where: the gallery's URL without password (for messages).
        url: the full URL (snapshot file names are derived from it).
        at_rest: how the gallery is protected on disk (snapshots are sealed alike).
        read_only: opened read-only (searches log no events, writes fail).
    """

    def __init__(self, engine: Engine, *, owns_engine: bool = False) -> None:
        self.engine = engine
        self.owns_engine = owns_engine
        self.where = engine.url.render_as_string(hide_password=True)
        self.url = engine.url.render_as_string(hide_password=False)
        self.at_rest = at_rest(engine)
        self.read_only = is_read_only(engine)

    @contextlib.contextmanager
    def read(self, what: str) -> Iterator[tuple[Session, GalleryRepository]]:
        with translate_errors(f"{self.where} ({what})"), read_session(self.engine) as s:
            yield s, GalleryRepository(s)

    @contextlib.contextmanager
    def write(self, what: str) -> Iterator[tuple[Session, GalleryRepository]]:
        with translate_errors(f"{self.where} ({what})"), write_session(self.engine) as s:
            yield s, GalleryRepository(s)

    def errors(self, what: str) -> contextlib.AbstractContextManager[None]:
        """Translate database failures of ``what`` outside a session (e.g. a purge)."""
        return translate_errors(f"{self.where} ({what})")

    def close(self) -> None:
        if self.owns_engine:
            self.engine.dispose()
