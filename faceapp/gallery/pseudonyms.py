"""Pseudonyms: how the history (``event``) and the audit log refer to a person.

Every person row holds a random ``pseudonym`` (``p:`` and 16 hex digits, 64 random bits,
drawn by :func:`new_pseudonym`; nothing derived from the name). Events and audit entries
store that pseudonym, never the name, so the hash chain of the audit log covers the
pseudonym and stays verifiable after a deletion. While the person exists the pseudonym
resolves to their current name for display (:func:`names_of`, :func:`shown`); deleting the
person row deletes the only link, and the pseudonym then shows as ``deleted person (p:…)``:
nothing left in the database maps it back to a name.

A name that was never enrolled (a refused enrolment) is not stored at all: its events have
no person (``event.person`` NULL, ``audit_entry.subject`` empty).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from faceapp.gallery.orm import Person, new_pseudonym

PREFIX = "p:"
_PATTERN = re.compile(r"p:[0-9a-f]{16}")

__all__ = ["deleted_label", "is_pseudonym", "names_of", "new_pseudonym", "pseudonym_of",
           "remember_deleted", "shown"]

DELETED_KEY = "faceapp.deleted_pseudonyms"
"""``session.info`` key: name -> pseudonym of the people deleted in this unit of work, so
that the deletion's own event still names them by their pseudonym."""


def is_pseudonym(text: str | None) -> bool:
    """Is ``text`` a pseudonym (not a name written before pseudonyms, not empty)?"""
    return bool(text) and _PATTERN.fullmatch(text or "") is not None


def remember_deleted(session: Session, name: str, pseudonym: str) -> None:
    """Note, for this unit of work only, the pseudonym of a person being deleted."""
    session.info.setdefault(DELETED_KEY, {})[name] = pseudonym


def pseudonym_of(session: Session, name: str) -> str | None:
    """The pseudonym of the person called ``name`` (normalised), of one deleted in this unit
    of work, or ``None`` for a name that is no person's."""
    found = session.execute(select(Person.pseudonym).where(Person.name == name)).scalar()
    if found is not None:
        return str(found)
    deleted = session.info.get(DELETED_KEY, {})
    return deleted.get(name)


def names_of(session: Session, pseudonyms: Iterable[str | None]) -> dict[str, str]:
    """pseudonym -> current name, of the pseudonyms among ``pseudonyms`` whose person exists."""
    wanted = sorted({p for p in pseudonyms if is_pseudonym(p)})
    out: dict[str, str] = {}
    for i in range(0, len(wanted), 500):  # bounded IN lists
        stmt = select(Person.pseudonym, Person.name).where(Person.pseudonym.in_(wanted[i:i + 500]))
        out.update({str(p): str(n) for p, n in session.execute(stmt)})
    return out


def deleted_label(pseudonym: str) -> str:
    """How a pseudonym whose person was deleted is shown."""
    return f"deleted person ({pseudonym[:10]}…)"


def shown(stored: str | None, names: dict[str, str]) -> str | None:
    """What to display for a stored person reference: the name of a living person, the
    deleted-person label, ``None`` for no person; a reference written before pseudonyms
    (a name, in an audit entry of an older faceapp) is shown as stored."""
    if not stored:
        return None
    if not is_pseudonym(stored):
        return stored
    return names.get(stored) or deleted_label(stored)
