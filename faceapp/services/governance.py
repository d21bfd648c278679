"""Governance of a gallery, Qt-free: its privacy policy, its encryption keys, its audit log.

One implementation for the CLI (``faceapp policy``, ``faceapp keys status|rotate``,
``faceapp audit [verify]``, the choices of ``people events --kind``) and the GUI's Privacy
page. A :class:`Governance` works on an open gallery engine (``Governance.of(service)`` for
the one a ``FaceService`` holds); each method is one short transaction, so it may run in a
worker thread beside the service's own calls (connections are pooled per engine). Results
are frozen dataclasses with ``to_dict``: :class:`PrivacyPolicy`, :class:`KeyReport`,
:class:`AuditRecord`, :class:`ChainReport`.

Every change is logged (event history and audit log): ``policy``/``set`` and
``keys``/``rotated`` (:data:`EVENT_KINDS` lists every kind the app logs).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from faceapp.errors import GalleryError, KeyUnavailable
from faceapp.gallery import audit, privacy
from faceapp.gallery.audit import EVENT_KINDS, AuditRecord, ChainReport
from faceapp.gallery.database import (
    classify_gallery_file,
    read_session,
    sqlite_path,
    translate_errors,
    write_session,
)
from faceapp.gallery.keys import ENV_PASSPHRASE, KeyConfig, PromptFn, key_status, rotate_key
from faceapp.gallery.privacy import GalleryUse, PrivacyPolicy, RetentionFrom
from faceapp.gallery.repository import GalleryRepository

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

KEY_SOURCES = ("keyring", "passphrase")


@dataclass(frozen=True)
class KeyReport:
    """How the gallery is protected at rest (no secret in it).

    ``managed``: a SQLite gallery file, whose keys faceapp manages (``False``: a database
    server, whose own protection applies); ``source``: where the key-encryption key comes
    from (``keyring`` or ``passphrase``); ``passphrase_from_env``: the current passphrase
    is taken from ``$FACEAPP_PASSPHRASE`` (a typed one would be ignored).
    """

    path: str
    managed: bool
    encrypted: bool
    source: str = ""
    key_file: str = ""
    key_id: str = ""
    kdf: dict[str, object] = field(default_factory=dict)
    created: str = ""
    rotated: str = ""
    passphrase_from_env: bool = False

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"path": self.path, "encrypted": self.encrypted}
        if self.encrypted:
            out |= {"key_file": self.key_file, "key_id": self.key_id, "source": self.source,
                    "kdf": self.kdf, "created": self.created, "rotated": self.rotated}
        return out

    def text(self) -> str:
        """One line for people (the CLI's ``keys status``, the Privacy page)."""
        if not self.managed:
            return (f"{self.path}: a database server; faceapp does not encrypt it (see "
                    "SECURITY.md: the server's own encryption and access control apply)")
        if not self.encrypted:
            return f"{self.path}: NOT encrypted (run `faceapp keys migrate --db {self.path}`)"
        kdf = ", ".join(f"{k}={v}" for k, v in self.kdf.items())
        return (f"{self.path}: encrypted (SQLCipher 4, AES-256); key wrapped by the {self.source}"
                + (f" ({kdf})" if kdf else "") + f"; key file {self.key_file}"
                + (f"; last rotated {self.rotated}" if self.rotated else ""))


def key_report(path: Path) -> KeyReport:
    """The :class:`KeyReport` of the SQLite gallery file at ``path``, read from its header
    and key file (the database is not opened: no passphrase needed)."""
    if not path.is_file():
        raise GalleryError(f"{path}: no gallery database at this path")
    if classify_gallery_file(path, create=False) != "encrypted":
        return KeyReport(str(path), True, False)
    st = key_status(path)
    return KeyReport(str(path), True, True, st.source, st.key_file, st.key_id, dict(st.kdf),
                     st.created, st.rotated,
                     passphrase_from_env=st.source == "passphrase"
                     and os.environ.get(ENV_PASSPHRASE) is not None)


def describe_policy(policy: PrivacyPolicy) -> str:
    """One line: the gallery's use and retention."""
    keep = (f"people are deleted {policy.retention_days} day(s) after their "
            f"{'enrolment' if policy.retention_from == 'enrolment' else 'last match'}"
            if policy.retention_days else "no retention limit")
    consent = ("consent required for new people" if policy.use == "organisation"
               else "consent recorded when given")
    purpose = f"; purpose: {policy.purpose}" if policy.purpose.strip() else ""
    return f"use: {policy.use} ({consent}); {keep}{purpose}"


def describe_chain(report: ChainReport) -> str:
    """One line: the audit log's chain intact, or where it breaks."""
    if report.ok:
        return f"audit log intact: {report.entries} entries, head {report.head}"
    return (f"audit log BROKEN at entry {report.first_bad}: {report.reason} "
            f"({report.entries} entries checked)")


class Governance:
    """Policy, keys and audit log of the gallery behind ``engine`` (see the module)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._url = engine.url.render_as_string(hide_password=False)
        self._where = engine.url.render_as_string(hide_password=True)

    @classmethod
    def of(cls, service: object) -> Governance:
        """The governance of the gallery a ``FaceService`` has open."""
        return cls(service.engine)  # type: ignore[attr-defined]

    @property
    def gallery_file(self) -> Path | None:
        """The SQLite file of the gallery; ``None`` for a database server."""
        return sqlite_path(self._url)

    def _log(self, kind: str, outcome: str, detail: dict[str, object]) -> None:
        with translate_errors(f"{self._where} ({kind})"), write_session(self._engine) as s:
            GalleryRepository(s).log_event(kind, outcome, detail=json.dumps(detail, sort_keys=True))

    # ------------------------------------------------------------------ privacy policy
    def policy(self) -> PrivacyPolicy:
        with translate_errors(f"{self._where} (policy)"), read_session(self._engine) as s:
            return privacy.load_policy(s)

    def set_policy(self, policy: PrivacyPolicy) -> PrivacyPolicy:
        """Store the gallery's use and retention (logged); returns it."""
        with translate_errors(f"{self._where} (policy)"), write_session(self._engine) as s:
            privacy.save_policy(s, policy)
            GalleryRepository(s).log_event("policy", "set",
                                           detail=json.dumps(policy.to_dict(), sort_keys=True))
        return policy

    def update_policy(self, *, use: GalleryUse | None = None, retention_days: int | None = None,
                      retention_from: RetentionFrom | None = None, purpose: str | None = None
                      ) -> PrivacyPolicy:
        """Change the given parts of the policy (nothing given: only read it)."""
        changes = {k: v for k, v in (("use", use), ("retention_days", retention_days),
                                     ("retention_from", retention_from),
                                     ("purpose", None if purpose is None else purpose.strip()))
                   if v is not None}
        policy = self.policy()
        return self.set_policy(replace(policy, **changes)) if changes else policy  # type: ignore[arg-type]

    # ------------------------------------------------------------------ keys
    def _file(self) -> Path:
        path = self.gallery_file
        if path is None:
            raise GalleryError(f"{self._where}: key management applies to SQLite gallery files only")
        return path

    def key_status(self) -> KeyReport:
        path = self.gallery_file
        if path is None:
            return KeyReport(self._where, False, False)
        return key_report(path)

    def rotate_keys(self, *, current: str | None = None, new: str | None = None,
                    to: str | None = None, prompt: PromptFn | None = None) -> KeyReport:
        """Re-wrap the gallery's data key: with the passphrase ``new`` (or a new keyring
        secret); ``to`` switches between ``keyring`` and ``passphrase`` (default: the same).

        The current passphrase is ``$FACEAPP_PASSPHRASE``, else ``current``; the new one
        ``$FACEAPP_NEW_PASSPHRASE``, else ``new``; either missing is asked from ``prompt``
        (``prompt(message, confirm)``: ``confirm`` for the new one). A wrong current
        passphrase raises ``WrongPassphrase`` and changes nothing. Logged as ``keys``."""
        if to is not None and to not in KEY_SOURCES:
            raise GalleryError(f"keys come from the keyring or a passphrase, not {to!r}")
        path = self._file()
        if key_report(path).encrypted is False:
            raise GalleryError(f"{path}: the gallery is not encrypted (run `faceapp keys migrate`)")

        def ask(message: str, confirm: bool) -> str:
            value = new if confirm else current
            if value is None and prompt is not None:
                value = prompt(message, confirm)
            if value is None:
                raise KeyUnavailable(f"{message}: no passphrase was given; nothing was changed")
            return value

        st = rotate_key(path, KeyConfig(prompt=ask), to=to)  # type: ignore[arg-type]
        self._log("keys", "rotated", {"source": st.source, "kdf": st.kdf})
        return key_report(path)

    # ------------------------------------------------------------------ audit log
    def audit_entries(self, *, since: datetime | None = None, action: str | None = None,
                      limit: int | None = None) -> list[AuditRecord]:
        """Audit entries, oldest first (see :func:`faceapp.gallery.audit.entries`)."""
        with translate_errors(f"{self._where} (audit log)"), read_session(self._engine) as s:
            return audit.entries(s, since=since, action=action, limit=limit)

    def verify_audit(self) -> ChainReport:
        """Check the hash chain of the whole audit log."""
        with translate_errors(f"{self._where} (audit log)"), read_session(self._engine) as s:
            return audit.verify_chain(s)


__all__ = [
    "EVENT_KINDS",
    "KEY_SOURCES",
    "AuditRecord",
    "ChainReport",
    "Governance",
    "KeyReport",
    "PrivacyPolicy",
    "describe_chain",
    "describe_policy",
    "key_report",
]
