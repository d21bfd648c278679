"""The event history (with its audit-log entry) and the settings table."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from faceapp.errors import GalleryError
from faceapp.gallery import audit, pseudonyms
from faceapp.gallery.orm import Event, Setting
from faceapp.gallery.repository.rows import _json_default, normalize_name

NOT_ENROLLED = "(a name not enrolled)"
"""What replaces, in an event's detail, the name of a refused enrolment (no pseudonym)."""


@dataclass(frozen=True)
class EventRecord:
    """One row of the history as read back: ``person`` is the display of its pseudonym (the
    person's current name, ``deleted person (p:…)`` after their deletion, ``None``: no
    person); ``pseudonym`` is what the row stores."""

    id: int
    time: datetime
    kind: str
    person: str | None
    pseudonym: str | None
    outcome: str
    score: float | None
    threshold: float | None
    scorer: str | None
    model_id: str | None
    detail: str


def scrub_name(detail: str, name: str, replacement: str) -> str:
    """``detail`` with every occurrence of ``name`` (case-insensitive, as written or as JSON
    escapes it, not inside a longer word: "Ann" is not scrubbed from "Annabel") replaced."""
    if not detail or not name:
        return detail
    for form in dict.fromkeys((name, json.dumps(name)[1:-1])):
        pattern = rf"(?<![^\W_]){re.escape(form)}(?![^\W_])"
        detail = re.sub(pattern, lambda _m: replacement, detail, flags=re.IGNORECASE)
    return detail


class EventLog:
    """The events and settings part of :class:`~faceapp.gallery.repository.GalleryRepository`."""

    session: Session

    def log_event(
        self,
        kind: str,
        outcome: str,
        *,
        person: str | None = None,
        score: float | None = None,
        threshold: float | None = None,
        scorer: str | None = None,
        model_id: str | None = None,
        detail: str = "",
    ) -> None:
        """One row of the ``event`` history, and its entry in the audit log (same
        transaction; no biometric data in either).

        ``person`` is a name; both rows store that person's pseudonym instead
        (:mod:`faceapp.gallery.pseudonyms`), and the name is scrubbed from ``detail``. A name
        that is no person's (a refused enrolment) is stored nowhere: no person, and
        :data:`NOT_ENROLLED` in its place in the detail."""
        ref: str | None = None
        if person:
            try:
                key = normalize_name(person)
            except GalleryError:  # not a valid name: no one's
                key = person
            ref = pseudonyms.pseudonym_of(self.session, key)
            for said in {person, key}:
                detail = scrub_name(detail, said, ref or NOT_ENROLLED)
        finite = None if score is None or not np.isfinite(score) else float(score)
        facts = {"score": finite, "threshold": threshold, "scorer": scorer,
                 "model_id": model_id, "detail": detail or None}
        audit.append(self.session, kind, outcome, subject=ref or "",
                     detail=json.dumps({k: v for k, v in facts.items() if v is not None},
                                       sort_keys=True, default=_json_default))
        self.session.add(
            Event(
                kind=kind,
                person=ref,
                outcome=outcome,
                score=finite,
                threshold=None if threshold is None else float(threshold),
                scorer=scorer,
                model_id=model_id,
                detail=detail,
            )
        )

    def events(self, limit: int = 100, kind: str | None = None) -> list[EventRecord]:
        """The latest events, newest first, each person shown by name while they exist."""
        stmt = select(Event).order_by(Event.id.desc()).limit(limit)
        if kind is not None:
            stmt = stmt.where(Event.kind == kind)
        rows = list(self.session.execute(stmt).scalars())
        names = pseudonyms.names_of(self.session, (r.person for r in rows))
        return [EventRecord(int(r.id), r.time, r.kind, pseudonyms.shown(r.person, names), r.person,
                            r.outcome, r.score, r.threshold, r.scorer, r.model_id, r.detail)
                for r in rows]

    def get_setting(self, key: str) -> str | None:
        row = self.session.get(Setting, key)
        return None if row is None else row.value

    def set_setting(self, key: str, value: str | None) -> None:
        row = self.session.get(Setting, key)
        if value is None:
            if row is not None:
                self.session.delete(row)
            return
        if row is None:
            self.session.add(Setting(key=key, value=value))
        else:
            row.value = value
