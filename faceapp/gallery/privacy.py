"""Consent and retention: the gallery's privacy policy.

* **Use** of the gallery (setting ``privacy/policy``): ``personal`` (a person's own
  desktop, the household exemption of GDPR art. 2(2)(c): consent is recorded when given,
  not demanded) or ``organisation`` (enrolling a *new* person is refused unless consent is
  given: who gave it, for what purpose, on what basis; recorded with who recorded it and
  when). A new gallery is ``personal``; ``faceapp gallery policy --use organisation``
  switches.
* **Retention**: ``retention_days`` = N > 0 deletes a person N days after their enrolment
  (``retention_from = "enrolment"``) or N days after they were last matched (``last_match``:
  a verify ``match`` or a recognition ``known``; their enrolment counts as a match).
  :func:`expiries` gives each person's expiry date; ``faceapp people expire`` and the app's
  start-up delete the expired (through the services' verifiable deletion).

Nothing here runs at import.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from faceapp.errors import GalleryError
from faceapp.gallery.orm import ConsentRecord, Event, Person, Setting

POLICY_KEY = "privacy/policy"
MATCH_OUTCOMES = (("verify", "match"), ("recognize", "known"))

GalleryUse = Literal["personal", "organisation"]
RetentionFrom = Literal["enrolment", "last_match"]


class ConsentRequired(GalleryError):
    """An organisation's gallery refuses to enrol a new person without recorded consent."""


@dataclass(frozen=True)
class Consent:
    """Consent to enrol one person: ``purpose`` (what the gallery is for), ``basis`` (free
    text: how it was obtained, e.g. "signed form 2024-031"), ``given_by`` (who consented:
    default the person themself)."""

    purpose: str
    basis: str
    given_by: str = ""

    def __post_init__(self) -> None:
        if not self.purpose.strip() or not self.basis.strip():
            raise GalleryError("consent needs a purpose and a basis (free text)")
        if len(self.purpose) > 500 or len(self.basis) > 5000:
            raise GalleryError("consent purpose is limited to 500 characters, basis to 5000")


@dataclass(frozen=True)
class PrivacyPolicy:
    """The gallery's use and retention (see the module docstring); ``retention_days = 0``
    keeps people until they are deleted; ``purpose``: what the gallery is for (free text,
    e.g. "door access of the lab"; shown with the policy, empty when not stated)."""

    use: GalleryUse = "personal"
    retention_days: int = 0
    retention_from: RetentionFrom = "enrolment"
    purpose: str = ""

    def __post_init__(self) -> None:
        if self.use not in ("personal", "organisation"):
            raise GalleryError(f"gallery use must be personal or organisation, not {self.use!r}")
        if self.retention_from not in ("enrolment", "last_match"):
            raise GalleryError("retention is counted from enrolment or last_match")
        if not isinstance(self.retention_days, int) or self.retention_days < 0:
            raise GalleryError("retention_days must be a whole number of days >= 0")
        if not isinstance(self.purpose, str) or len(self.purpose) > 500:
            raise GalleryError("the gallery's purpose is free text of at most 500 characters")

    def to_dict(self) -> dict[str, object]:
        return {"use": self.use, "retention_days": self.retention_days,
                "retention_from": self.retention_from, "purpose": self.purpose}


def load_policy(session: Session) -> PrivacyPolicy:
    row = session.get(Setting, POLICY_KEY)
    if row is None:
        return PrivacyPolicy()
    try:
        data = json.loads(row.value)
        return PrivacyPolicy(str(data["use"]), int(data["retention_days"]),  # type: ignore[arg-type]
                             str(data["retention_from"]),  # type: ignore[arg-type]
                             str(data.get("purpose", "")))  # stored since the Privacy page
    except (ValueError, KeyError, TypeError) as err:
        raise GalleryError(f"the gallery's privacy policy is malformed ({err})") from None


def save_policy(session: Session, policy: PrivacyPolicy) -> None:
    row = session.get(Setting, POLICY_KEY)
    value = json.dumps(policy.to_dict(), sort_keys=True)
    if row is None:
        session.add(Setting(key=POLICY_KEY, value=value))
    else:
        row.value = value


def record_consent(session: Session, person: Person, consent: Consent, recorded_by: str) -> None:
    session.add(ConsentRecord(person_id=person.id, given_by=consent.given_by or person.name,
                              recorded_by=recorded_by, purpose=consent.purpose,
                              basis=consent.basis))


def consents(session: Session, person_id: int) -> list[ConsentRecord]:
    stmt = select(ConsentRecord).where(ConsentRecord.person_id == person_id).order_by(
        ConsentRecord.id)
    return list(session.execute(stmt).scalars())


def _aware(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t


def expiries(session: Session, policy: PrivacyPolicy) -> dict[int, datetime]:
    """person id -> when they expire under ``policy`` (empty when nothing expires)."""
    if policy.retention_days <= 0:
        return {}
    keep = timedelta(days=policy.retention_days)
    people = {int(i): (p, _aware(c)) for i, p, c in  # events name people by pseudonym
              session.execute(select(Person.id, Person.pseudonym, Person.created))}
    if policy.retention_from == "enrolment":
        return {pid: created + keep for pid, (_, created) in people.items()}
    last: dict[str, datetime] = {}
    for kind, outcome in MATCH_OUTCOMES:
        stmt = (select(Event.person, func.max(Event.time))
                .where(Event.kind == kind, Event.outcome == outcome, Event.person.is_not(None))
                .group_by(Event.person))
        for ref, when in session.execute(stmt):
            if when is not None:
                last[ref] = max(last.get(ref, _aware(when)), _aware(when))
    return {pid: max(created, last.get(ref, created)) + keep
            for pid, (ref, created) in people.items()}


def expired(session: Session, policy: PrivacyPolicy, now: datetime | None = None
            ) -> list[tuple[int, str, datetime]]:
    """(person id, name, expiry) of everyone whose expiry is at or before ``now``."""
    now = now or datetime.now(UTC)
    names = {int(i): n for i, n in session.execute(select(Person.id, Person.name))}
    return sorted(((pid, names[pid], t) for pid, t in expiries(session, policy).items()
                   if t <= now and pid in names), key=lambda x: x[2])
