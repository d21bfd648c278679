"""The people of a gallery: list, rename, delete (verifiably), consent and retention, events.

A deletion removes the person's templates, crops and snapshot entries and makes the bytes
leave the disk (``secure_delete``, ``VACUUM``, WAL checkpoint ``TRUNCATE``), then returns a
:class:`~faceapp.services.results.DeletionReceipt` for an erasure request.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path

from faceapp.errors import GalleryError
from faceapp.gallery import privacy
from faceapp.gallery.database import current_generation, gallery_uuid, purge_deleted
from faceapp.gallery.repository import normalize_name
from faceapp.services.core import Core, drop_snapshots
from faceapp.services.files import write_private
from faceapp.services.results import DeletionReceipt, ExpiredPerson, PersonSummary, TemplateSummary

logger = logging.getLogger(__name__)


def list_people(core: Core) -> list[PersonSummary]:
    with core.uow.read("list people") as (s, repo):
        rows = repo.people()
        thumbs = repo.crops([r.first_template_id for r in rows if r.first_template_id is not None])
        expiry = privacy.expiries(s, privacy.load_policy(s))
    return [
        PersonSummary(r.id, r.name, r.n_templates, r.created,
                      thumbs.get(r.first_template_id, b"") if r.first_template_id else b"",
                      expiry.get(r.id))
        for r in rows
    ]


def people_names(core: Core) -> list[str]:
    with core.uow.read("list names") as (_, repo):
        return sorted(repo.person_names().values())


def person_templates(core: Core, name: str) -> list[TemplateSummary]:
    with core.uow.read("person templates") as (_, repo):
        person = repo.get_person(name)
        rows = repo.templates_of(person)
        crops = repo.crops([t.id for t in rows])
        return [TemplateSummary(int(t.id), crops.get(t.id, b""), t.source, t.quality, t.created,
                                t.model_id) for t in rows]


def rename_person(core: Core, old: str, new: str) -> str:
    with core.uow.write("rename") as (s, repo):
        was_current = core.cache_is_current(s)
        person = repo.rename_person(old, new)
        pid, stored = int(person.id), person.name
        # the pseudonym stays the person's: the history shows the new name, keeps no old one
        repo.log_event("rename", "renamed", person=stored)
        new_gen = current_generation(s)
    if core.cache_or_none is not None:
        core.cache_or_none.renamed(pid, stored, was_current=was_current, generation=new_gen)
    drop_snapshots(core)
    return stored


def erase_person(core: Core, name: str, receipt: str | os.PathLike[str] | None = None, *,
                 outcome: str = "deleted") -> DeletionReceipt:
    """See :meth:`FaceService.erase_person`."""
    if receipt is not None:
        folder = Path(receipt).expanduser().resolve().parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise GalleryError(f"{receipt}: cannot write the receipt there; nothing deleted")
    with core.uow.write("delete") as (s, repo):
        was_current = core.cache_is_current(s)
        key = normalize_name(name)
        person = repo.get_person(key)
        template_ids = repo.template_ids_of(person.id)
        crops = repo.count_crops(template_ids)
        uid = gallery_uuid(s)
        pid, n = repo.delete_person(key)
        repo.log_event("delete", outcome, person=key, detail=json.dumps({"templates": n}))
        new_gen = current_generation(s)
    if core.cache_or_none is not None:
        core.cache_or_none.removed_person(pid, was_current=was_current, generation=new_gen)
    storage = purge(core)
    ids = "\n".join([f"person:{pid}", *(f"template:{t}" for t in template_ids)])
    result = DeletionReceipt(
        person=key, deleted_at=datetime.now(UTC), gallery=core.uow.where, gallery_uuid=uid,
        templates=n, crops=crops, removed_ids_sha256=hashlib.sha256(ids.encode("utf-8")).hexdigest(),
        storage=storage, encrypted=core.uow.at_rest.encrypted)
    if receipt is not None:
        write_private(Path(receipt), json.dumps(result.to_dict(), indent=1).encode("utf-8"),
                      "the deletion receipt")
    return result


def delete_template(core: Core, template_id: int) -> None:
    with core.uow.write("delete template") as (s, repo):
        was_current = core.cache_is_current(s)
        pid = repo.delete_template(template_id)
        name = repo.get_person_by_id(pid).name
        repo.log_event("delete", "template deleted", person=name,
                       detail=json.dumps({"template": template_id}))
        new_gen = current_generation(s)
    if core.cache_or_none is not None:
        core.cache_or_none.removed_templates([template_id], was_current=was_current,
                                             generation=new_gen)
    purge(core)


def purge(core: Core) -> dict[str, object]:
    """After a committed deletion: snapshots removed, deleted bytes purged from the file."""
    removed = drop_snapshots(core)
    with core.uow.errors("purge"):
        report = purge_deleted(core.uow.engine)
    return report.to_dict() | {"snapshots_removed": removed}


def events(core: Core, limit: int = 100, kind: str | None = None) -> list[dict[str, object]]:
    with core.uow.read("events") as (_, repo):
        return [
            {"time": e.time.isoformat(), "kind": e.kind, "person": e.person, "outcome": e.outcome,
             "score": e.score, "threshold": e.threshold, "scorer": e.scorer,
             "model_id": e.model_id, "detail": e.detail}
            for e in repo.events(limit, kind)
        ]


# ---------------------------------------------------------------------- consent, retention
def consents(core: Core, name: str) -> list[dict[str, object]]:
    with core.uow.read("consent") as (s, repo):
        person = repo.get_person(name)
        return [{"time": c.time.isoformat(), "given_by": c.given_by, "recorded_by": c.recorded_by,
                 "purpose": c.purpose, "basis": c.basis} for c in privacy.consents(s, person.id)]


def expire_people(core: Core, *, dry_run: bool = False, now: datetime | None = None
                  ) -> list[ExpiredPerson]:
    with core.uow.read("expire") as (s, _):
        due = privacy.expired(s, privacy.load_policy(s), now)
    out: list[ExpiredPerson] = []
    for _, name, when in due:
        # logged as a deletion whose outcome says why: the retention policy, not a user
        n = 0 if dry_run else erase_person(core, name, outcome="expired").templates
        out.append(ExpiredPerson(name, when, n))
    if out and not dry_run:
        logger.info("retention: deleted %d expired people", len(out))
    return out
