"""Gallery administration on the :class:`~faceapp.services.FaceService` facade: people,
deletion with receipts, events, consent and retention, export/import, re-embedding.

These calls need no face model (a gallery-only service serves them), except ``reembed``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime

from faceapp.gallery.privacy import PrivacyPolicy
from faceapp.gallery.validation import MAX_IMPORT_BYTES
from faceapp.services import enrollment, maintenance, people, transfer
from faceapp.services.base import ServiceBase
from faceapp.services.base import serialised as _serialised
from faceapp.services.governance import Governance
from faceapp.services.results import (
    DeletionReceipt,
    ExpiredPerson,
    GalleryTransfer,
    PersonSummary,
    ReembedReport,
    TemplateSummary,
)
from faceapp.services.transfer import ConflictPolicy

ProgressFn = Callable[[int, int], None]
StopFn = Callable[[], bool]


class GalleryAdmin(ServiceBase):
    """The administration half of the facade (see the module docstring)."""

    @_serialised
    def list_people(self) -> list[PersonSummary]:
        """Everyone in the gallery, by name."""
        return people.list_people(self._core)

    @_serialised
    def people_names(self) -> list[str]:
        """The names of everyone in the gallery, sorted (no thumbnails: cheap for 10⁵ people)."""
        return people.people_names(self._core)

    @_serialised
    def person_templates(self, name: str) -> list[TemplateSummary]:
        """The templates of ``name`` with their crops, oldest first."""
        return people.person_templates(self._core, name)

    @_serialised
    def rename_person(self, old: str, new: str) -> str:
        """Rename a person; returns the stored (normalised) new name."""
        return people.rename_person(self._core, old, new)

    @_serialised
    def delete_person(self, name: str) -> int:
        """Delete a person with all their templates and crops; returns the templates removed.
        See :meth:`erase_person` (the same, with its receipt)."""
        return people.erase_person(self._core, name).templates

    @_serialised
    def erase_person(self, name: str, receipt: str | os.PathLike[str] | None = None
                     ) -> DeletionReceipt:
        """Delete a person with their templates, crops and snapshot entries, and make the
        bytes leave the disk (``secure_delete``, ``VACUUM``, WAL checkpoint ``TRUNCATE``;
        snapshots deleted, rewritten later without them). Returns the receipt, also written
        as JSON (0600) to ``receipt`` when given (its folder is checked first)."""
        return people.erase_person(self._core, name, receipt)

    @_serialised
    def delete_template(self, template_id: int) -> None:
        """Delete one template (and its crop)."""
        people.delete_template(self._core, template_id)

    @_serialised
    def events(self, limit: int = 100, kind: str | None = None) -> list[dict[str, object]]:
        """The latest events, newest first, as dicts."""
        return people.events(self._core, limit, kind)

    @_serialised
    def consent_required(self, name: str) -> bool:
        """Would enrolling ``name`` now need consent (a new person, an organisation's gallery)?"""
        return enrollment.consent_required(self._core, name)

    @_serialised
    def consents(self, name: str) -> list[dict[str, object]]:
        """The consent records of ``name``, oldest first."""
        return people.consents(self._core, name)

    @_serialised
    def privacy_policy(self) -> PrivacyPolicy:
        """The gallery's use (personal / organisation) and retention."""
        return Governance(self._core.uow.engine).policy()

    @_serialised
    def set_privacy_policy(self, policy: PrivacyPolicy) -> None:
        """Store the gallery's use and retention (logged)."""
        Governance(self._core.uow.engine).set_policy(policy)

    @_serialised
    def expire_people(self, *, dry_run: bool = False, now: datetime | None = None
                      ) -> list[ExpiredPerson]:
        """Delete everyone whose retention period is over (verifiably, as
        :meth:`erase_person`; logged as ``delete`` with outcome ``expired``, so that retention
        and a user's deletion can be told apart); ``dry_run`` only lists them."""
        return people.expire_people(self._core, dry_run=dry_run, now=now)

    @_serialised
    def export_gallery(self, path: str | os.PathLike[str], *, passphrase: str) -> GalleryTransfer:
        """Write every person with their templates (embeddings, crops, sources, quality,
        model ids) to an encrypted bundle (a JSON document sealed with ``passphrase``, see
        :mod:`faceapp.gallery.bundle`), created 0600 and atomically."""
        return transfer.export_gallery(self._core, path, passphrase=passphrase)

    @_serialised
    def import_gallery(
        self, path: str | os.PathLike[str], *, passphrase: str,
        on_conflict: ConflictPolicy = "error", allow_plaintext: bool = False,
        max_bytes: int = MAX_IMPORT_BYTES,
    ) -> GalleryTransfer:
        """Add the people of an encrypted export bundle, in one transaction, after its
        integrity check and the validation of every template (nothing is written when any
        check fails); ``on_conflict`` for an existing name: ``error``, ``skip`` or ``merge``.
        See :func:`faceapp.services.transfer.import_gallery`."""
        return transfer.import_gallery(self._core, path, passphrase=passphrase,
                                       on_conflict=on_conflict, allow_plaintext=allow_plaintext,
                                       max_bytes=max_bytes)

    @_serialised
    def reembed(
        self,
        progress: ProgressFn | None = None,
        should_stop: StopFn | None = None,
        *,
        batch_size: int = 32,
    ) -> ReembedReport:
        """Recompute, from their stored face pictures, every template made by another model,
        in batches committed one by one (stoppable, resumable). See
        :func:`faceapp.services.maintenance.reembed`."""
        return maintenance.reembed(self._core, progress, should_stop, batch_size=batch_size)
