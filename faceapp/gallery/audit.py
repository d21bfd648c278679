"""The gallery's audit log: append-only, hash-chained, with no biometric data in it.

Every operation that the services log (enrol, verify, recognize hits, rename, delete,
export, import, re-embed, calibrate) and every key operation appends one
:class:`~faceapp.gallery.orm.AuditEntry` *in the same transaction* as the operation: who
(OS user @ host), what (action, outcome, the person's pseudonym as ``subject``, never their
name: :mod:`faceapp.gallery.pseudonyms`; a small JSON detail: counts, scores, paths), when
(UTC). Each entry stores the SHA-256 of the previous entry's hash and its own canonical JSON
(:func:`entry_hash`), so editing, inserting or removing an entry in the middle breaks the
chain from there on (:func:`verify_chain`, ``faceapp audit verify``). The chain covers the
pseudonym, so it still verifies after the person's deletion, when nothing maps the pseudonym
back to a name any more.
On SQLite, triggers also refuse ``UPDATE`` and ``DELETE`` on the table. Removing entries at
the *end* is not detectable from the chain alone: compare the head hash with one kept
elsewhere (``faceapp audit verify --json`` prints it; see SECURITY.md).
"""

from __future__ import annotations

import getpass
import hashlib
import json
import platform
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import DDL, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from faceapp.gallery import pseudonyms
from faceapp.gallery.orm import AuditEntry

GENESIS = "0" * 64
"""``prev_hash`` of the first entry."""

EVENT_KINDS: tuple[str, ...] = (
    "enroll", "verify", "recognize", "rename", "delete", "import", "export", "reembed",
    "calibrate", "consent", "policy", "keys",
)
"""Every kind of operation the app logs: the ``event.kind`` of the history and the ``action``
of the audit log (``delete`` covers erasures, outcome ``deleted``, and retention expiry,
outcome ``expired``; ``keys`` encryption and key rotations). The CLI's ``people events
--kind`` and ``audit --action`` choices come from here; a test checks that every
``log_event`` / ``audit.append`` call in faceapp uses one."""

_TRIGGERS = (
    "CREATE TRIGGER IF NOT EXISTS audit_entry_no_update BEFORE UPDATE ON audit_entry "
    "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS audit_entry_no_delete BEFORE DELETE ON audit_entry "
    "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
)


def install_append_only(conn: Connection) -> None:
    """Create the audit table if missing and, on SQLite, its append-only triggers."""
    AuditEntry.__table__.create(conn, checkfirst=True)
    if conn.dialect.name == "sqlite":
        for sql in _TRIGGERS:
            conn.execute(DDL(sql))


@dataclass(frozen=True)
class AuditRecord:
    """One audit entry as read back. ``subject`` is as stored (and hashed): a person's
    pseudonym; ``person`` its display (:func:`~faceapp.gallery.pseudonyms.shown`: the current
    name, ``deleted person (p:…)``, empty for no person)."""

    id: int
    time: str
    actor: str
    action: str
    outcome: str
    subject: str
    detail: str
    prev_hash: str
    hash: str
    person: str = ""

    def to_dict(self) -> dict[str, object]:
        return {"id": self.id, "time": self.time, "actor": self.actor, "action": self.action,
                "outcome": self.outcome, "subject": self.subject, "person": self.person,
                "detail": self.detail, "prev_hash": self.prev_hash, "hash": self.hash}


@dataclass(frozen=True)
class ChainReport:
    """``ok`` when every entry's hash and link check; else ``first_bad`` (entry id) and
    ``reason``. ``head``: the last entry's hash (keep it elsewhere to detect truncation)."""

    ok: bool
    entries: int
    head: str
    first_bad: int = 0
    reason: str = ""

    def to_dict(self) -> dict[str, object]:
        return {"ok": self.ok, "entries": self.entries, "head": self.head,
                "first_bad": self.first_bad, "reason": self.reason}


def current_actor() -> str:
    """``user@host`` of this process (who did it, for the log)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry / no login name
        user = "unknown"
    return f"{user}@{platform.node() or 'localhost'}"


def entry_hash(prev_hash: str, *, time: str, actor: str, action: str, outcome: str,
               subject: str, detail: str) -> str:
    """SHA-256 (hex) of ``prev_hash`` and the canonical JSON of the entry's fields (the
    row id is not needed: the link to the previous hash fixes the order)."""
    body = json.dumps({"time": time, "actor": actor, "action": action,
                       "outcome": outcome, "subject": subject, "detail": detail},
                      sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


def append(session: Session, action: str, outcome: str, *, subject: str = "",
           detail: str = "", actor: str | None = None, time: datetime | None = None) -> AuditRecord:
    """Append one entry in the caller's (write) transaction; returns it."""
    last = session.execute(
        select(AuditEntry.id, AuditEntry.hash).order_by(AuditEntry.id.desc()).limit(1)
    ).first()
    row = AuditEntry(**chained_fields(GENESIS if last is None else str(last[1]), action,
                                      outcome, subject=subject, detail=detail, actor=actor,
                                      time=time))
    session.add(row)
    session.flush()
    return _record(row)


def chained_fields(prev_hash: str, action: str, outcome: str, *, subject: str = "",
                   detail: str = "", actor: str | None = None,
                   time: datetime | None = None) -> dict[str, str]:
    """The column values of a new entry following ``prev_hash`` (its ``hash`` included)."""
    fields = {"time": (time or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="microseconds"),
              "actor": actor or current_actor(), "action": action[:40], "outcome": outcome[:40],
              "subject": subject or "", "detail": detail or ""}
    return fields | {"prev_hash": prev_hash, "hash": entry_hash(prev_hash, **fields)}


def _record(row: AuditEntry, names: dict[str, str] | None = None) -> AuditRecord:
    return AuditRecord(int(row.id), row.time, row.actor, row.action, row.outcome, row.subject,
                       row.detail, row.prev_hash, row.hash,
                       pseudonyms.shown(row.subject, names or {}) or "")


def entries(session: Session, *, since: datetime | None = None, action: str | None = None,
            limit: int | None = None, resolve: bool = True) -> list[AuditRecord]:
    """Entries, oldest first, from ``since`` (UTC) on, of one ``action`` if given; with
    ``resolve``, each ``person`` is the display of its pseudonym."""
    stmt = select(AuditEntry).order_by(AuditEntry.id)
    if since is not None:
        stmt = stmt.where(AuditEntry.time >= since.astimezone(UTC).isoformat(timespec="microseconds"))
    if action is not None:
        stmt = stmt.where(AuditEntry.action == action)
    found = list(session.execute(stmt).scalars())
    if limit is not None and limit >= 0:
        found = found[-limit:]
    names = pseudonyms.names_of(session, (r.subject for r in found)) if resolve else {}
    return [_record(r, names) for r in found]


def verify_records(records: Iterable[AuditRecord]) -> ChainReport:
    """Check hashes and links of ``records`` (the whole log, oldest first)."""
    prev = GENESIS
    n = 0
    for r in records:
        n += 1
        if r.prev_hash != prev:
            return ChainReport(False, n, prev, r.id, "its link to the previous entry is broken "
                               "(an entry before it was removed, inserted or changed)")
        expected = entry_hash(prev, time=r.time, actor=r.actor, action=r.action,
                              outcome=r.outcome, subject=r.subject, detail=r.detail)
        if r.hash != expected:
            return ChainReport(False, n, prev, r.id, "its content does not match its hash "
                               "(the entry was modified)")
        prev = r.hash
    return ChainReport(True, n, prev)


def verify_chain(session: Session) -> ChainReport:
    """Check the whole audit log of the gallery."""
    return verify_records(entries(session, resolve=False))
