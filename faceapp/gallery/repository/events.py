"""The event history (with its audit-log entry) and the settings table."""

from __future__ import annotations

import json

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from faceapp.gallery import audit
from faceapp.gallery.orm import Event, Setting
from faceapp.gallery.repository.rows import _json_default


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
        transaction; no biometric data in either)."""
        finite = None if score is None or not np.isfinite(score) else float(score)
        facts = {"score": finite, "threshold": threshold, "scorer": scorer,
                 "model_id": model_id, "detail": detail or None}
        audit.append(self.session, kind, outcome, subject=person or "",
                     detail=json.dumps({k: v for k, v in facts.items() if v is not None},
                                       sort_keys=True, default=_json_default))
        self.session.add(
            Event(
                kind=kind,
                person=person,
                outcome=outcome,
                score=finite,
                threshold=None if threshold is None else float(threshold),
                scorer=scorer,
                model_id=model_id,
                detail=detail,
            )
        )

    def events(self, limit: int = 100, kind: str | None = None) -> list[Event]:
        stmt = select(Event).order_by(Event.id.desc()).limit(limit)
        if kind is not None:
            stmt = stmt.where(Event.kind == kind)
        return list(self.session.execute(stmt).scalars())

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
