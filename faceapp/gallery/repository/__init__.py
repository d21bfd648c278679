"""Gallery repository: queries and writes on a caller-owned :class:`Session`.

The repository never commits, rolls back or opens sessions: the caller owns the unit of
work (``with write_session(engine) as s: GalleryRepository(s).add_person(...)``), so that
an enrolment of several images is all-or-nothing.

Modules: :mod:`~faceapp.gallery.repository.rows` (names, NewTemplate, IndexRows, PersonRow),
:mod:`~faceapp.gallery.repository.people`, :mod:`~faceapp.gallery.repository.templates`
(with crops), :mod:`~faceapp.gallery.repository.events` (events by pseudonym, settings);
:class:`GalleryRepository` is the three on one session. Every name is importable from here,
as from the former single module.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from faceapp.gallery.repository.events import EventLog, EventRecord
from faceapp.gallery.repository.people import PeopleQueries
from faceapp.gallery.repository.rows import IndexRows, NewTemplate, PersonRow, normalize_name
from faceapp.gallery.repository.templates import TemplateQueries
from faceapp.gallery.types import embedding_to_bytes


class GalleryRepository(PeopleQueries, TemplateQueries, EventLog):
    """People, templates, crops, events and settings, on the caller's session."""

    def __init__(self, session: Session) -> None:
        self.session = session


__all__ = [
    "EventRecord",
    "GalleryRepository",
    "IndexRows",
    "NewTemplate",
    "PersonRow",
    "embedding_to_bytes",
    "normalize_name",
]
