"""Moving a gallery between machines: encrypted export bundles and their validated import.

An export is a JSON document (every person with their templates: embeddings, crops,
sources, quality, model ids) sealed with a passphrase (:mod:`faceapp.gallery.bundle`),
written 0600 and atomically. An import checks the bundle's integrity, then validates every
template (:mod:`faceapp.gallery.validation`) before writing anything, in one transaction.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Literal

import numpy as np

from faceapp.errors import DuplicatePerson, GalleryError
from faceapp.gallery.bundle import is_bundle, open_bundle, seal_bundle
from faceapp.gallery.crypto import KdfParams
from faceapp.gallery.database import retry_when_locked
from faceapp.gallery.repository import NewTemplate, normalize_name
from faceapp.gallery.types import EMBEDDING_DTYPE
from faceapp.gallery.validation import (
    MAX_IMPORT_BYTES,
    check_dimensions,
    check_people_list,
    check_templates_list,
    gallery_dims,
    read_bounded,
    validate_template,
)
from faceapp.services.core import Core, drop_snapshots
from faceapp.services.files import write_private
from faceapp.services.results import GalleryTransfer

EXPORT_FORMAT = "faceapp-gallery"
EXPORT_VERSION = 1

ConflictPolicy = Literal["error", "skip", "merge"]


def export_gallery(core: Core, path: str | os.PathLike[str], *, passphrase: str) -> GalleryTransfer:
    """Write every person with their templates (embeddings, crops, sources, quality,
    model ids) to an encrypted bundle (a JSON document sealed with ``passphrase``, see
    :mod:`faceapp.gallery.bundle`), created 0600 and atomically."""
    people_out: list[dict[str, object]] = []
    n_templates = 0
    with core.uow.read("export") as (_, repo):
        for row in repo.people():
            person = repo.get_person_by_id(row.id)
            templates = repo.templates_of(person)
            crops = repo.crops([t.id for t in templates])
            people_out.append({
                "name": person.name,
                "created": person.created.isoformat(),
                "templates": [
                    {
                        "model_id": t.model_id,
                        "dim": t.dim,
                        "embedding": base64.b64encode(
                            np.asarray(t.embedding, EMBEDDING_DTYPE).tobytes()
                        ).decode("ascii"),
                        "crop_png": (base64.b64encode(crops[t.id]).decode("ascii")
                                     if t.id in crops else None),
                        "source": t.source,
                        "quality": t.quality,
                        "created": t.created.isoformat(),
                    }
                    for t in templates
                ],
            })
            n_templates += len(templates)
    doc = {"format": EXPORT_FORMAT, "version": EXPORT_VERSION, "people": people_out}
    write_private(Path(path), seal_bundle(json.dumps(doc).encode("utf-8"), passphrase,
                                           KdfParams.from_env()))
    with core.uow.write("export") as (_, repo):
        repo.log_event("export", "exported",
                       detail=json.dumps({"path": str(path), "people": len(people_out),
                                          "templates": n_templates}))
    return GalleryTransfer(len(people_out), n_templates)

def import_gallery(
    core: Core, path: str | os.PathLike[str], *, passphrase: str,
    on_conflict: ConflictPolicy = "error", allow_plaintext: bool = False,
    max_bytes: int = MAX_IMPORT_BYTES,
) -> GalleryTransfer:
    """Add the people of an export bundle, in one transaction, after its integrity check
    (a wrong ``passphrase`` or a modified bundle: :class:`WrongPassphrase`, nothing
    imported). ``allow_plaintext`` also accepts the unencrypted JSON exports of older
    versions (they cannot be verified).

    Every template is validated first (:mod:`faceapp.gallery.validation`: dimension
    equal to its model's, finite unit embedding, model id, crop decodable within the
    image caps, bounded fields; a file above ``max_bytes`` is refused): one bad
    template refuses the whole file, naming the person and template, nothing written.
    When another process holds the gallery's write lock beyond the busy timeout, the
    transaction is retried with back-off (:func:`retry_when_locked`).

    ``on_conflict`` for a name that exists already: ``error`` (nothing imported,
    :class:`DuplicatePerson`), ``skip`` that person, or ``merge`` their templates into
    the existing person. Templates keep their ``model_id``: those of another model need
    ``reembed`` before they can be compared.
    """
    if on_conflict not in ("error", "skip", "merge"):
        raise ValueError(f"on_conflict must be error, skip or merge, not {on_conflict!r}")
    people = _read_export(Path(path), passphrase, allow_plaintext=allow_plaintext,
                          max_bytes=max_bytes)
    return retry_when_locked(lambda: _import_people(core, path, people, on_conflict),
                             f"import of {path}")

def _import_people(core: Core, path: str | os.PathLike[str],
                   people: list[tuple[str, list[NewTemplate]]],
                   on_conflict: ConflictPolicy) -> GalleryTransfer:
    """One write transaction: everything or nothing."""
    skipped: list[str] = []
    n_people = n_templates = 0
    with core.uow.write("import") as (s, repo):
        known: dict[str, set[int] | int] = dict(gallery_dims(s))
        if core.pipeline_or_none is not None:
            known[core.pipeline_or_none.model_id] = core.pipeline_or_none.embedding_dim
        check_dimensions(Path(path), people, known)
        clashes = [name for name, _ in people if repo.find_person(name) is not None]
        if clashes and on_conflict == "error":
            raise DuplicatePerson(
                f"{path}: already in the gallery: {', '.join(clashes[:10])}"
                + (" ..." if len(clashes) > 10 else "")
                + " (use --on-conflict skip or merge)"
            )
        for name, templates in people:
            person = repo.find_person(name)
            if person is not None:
                if on_conflict == "skip":
                    skipped.append(name)
                    continue
            else:
                person = repo.add_person(name)
                n_people += 1
            repo.add_templates(person, templates)
            n_templates += len(templates)
        repo.log_event("import", "imported",
                       detail=json.dumps({"path": str(path), "people": n_people,
                                          "templates": n_templates, "skipped": len(skipped)}))
    if core.cache_or_none is not None:
        core.cache_or_none.invalidate()
    drop_snapshots(core)
    return GalleryTransfer(n_people, n_templates, skipped)


def _open_export(path: Path, passphrase: str, allow_plaintext: bool,
                 max_bytes: int = MAX_IMPORT_BYTES) -> bytes:
    """The export document inside the bundle at ``path`` (its size bounded, its envelope
    checked)."""
    data = read_bounded(path, max_bytes)
    if is_bundle(data):
        return open_bundle(data, passphrase, str(path))
    if not allow_plaintext:
        raise GalleryError(f"{path}: not an encrypted faceapp export bundle (an unencrypted "
                           "export of an older faceapp is accepted only with --allow-plaintext)")
    return data


def _read_export(path: Path, passphrase: str, *, allow_plaintext: bool = False,
                 max_bytes: int = MAX_IMPORT_BYTES) -> list[tuple[str, list[NewTemplate]]]:
    """Open, parse and validate an export bundle into (name, templates) pairs (every field
    of every template: :mod:`faceapp.gallery.validation`)."""
    data = _open_export(path, passphrase, allow_plaintext, max_bytes)
    try:
        doc = json.loads(data)
    except ValueError as err:
        raise GalleryError(f"{path}: not a readable gallery export ({err})") from None
    del data
    if not isinstance(doc, dict) or doc.get("format") != EXPORT_FORMAT:
        raise GalleryError(f"{path}: not a faceapp gallery export")
    if doc.get("version") != EXPORT_VERSION:
        raise GalleryError(f"{path}: export version {doc.get('version')} is not supported "
                           f"(this faceapp reads {EXPORT_VERSION})")
    out: list[tuple[str, list[NewTemplate]]] = []
    seen: set[str] = set()
    for i, p in enumerate(check_people_list(path, doc.get("people")), 1):
        if not isinstance(p, dict) or not isinstance(p.get("name"), str):
            raise GalleryError(f"{path}: person {i} has no name; nothing was imported")
        name = normalize_name(p["name"])
        if name in seen:
            raise GalleryError(f"{path}: person {name!r} appears twice")
        seen.add(name)
        templates = check_templates_list(path, name, p.get("templates"))
        out.append((name, [validate_template(path, name, j, t)
                           for j, t in enumerate(templates, 1)]))
    return out
