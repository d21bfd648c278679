"""Enrolment: faces in, templates out, in one transaction per call.

Both entry points — images (:func:`enroll`) and faces already analysed, e.g. camera captures
(:func:`enroll_faces`) — go through one accept loop (:func:`_accept`): a source is kept when
it holds one face (or, with ``largest``, its largest) that passes the quality gate; every
other source is reported with its reason. The kept faces are stored all or nothing
(:func:`_store`), with the consent an organisation's gallery asks for
(:mod:`faceapp.gallery.privacy`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from faceapp.errors import (
    CalibrationError,
    DuplicatePerson,
    FaceappError,
    GalleryError,
    InvalidImage,
    ModelMismatch,
    MultipleFaces,
    NoFaceFound,
    PersonNotFound,
    QualityRejected,
)
from faceapp.gallery import audit, privacy
from faceapp.gallery.database import current_generation
from faceapp.gallery.privacy import Consent, ConsentRequired
from faceapp.gallery.repository import NewTemplate, normalize_name
from faceapp.nn.scoring import DISTANCE
from faceapp.services.core import Core, analyze, face_area, quality_dict, quality_reasons
from faceapp.services.protocols import AnalysedFace
from faceapp.services.results import EnrollReport
from faceapp.vision.face_image import encode_face_image
from faceapp.vision.images import ImageInput, describe_source

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Candidate:
    """One source of an enrolment: its label and the faces found in it (or why none)."""

    source: str
    faces: Sequence[AnalysedFace]
    error: InvalidImage | None = None


def enroll(core: Core, name: str, images: Sequence[ImageInput], *, largest: bool = False,
           create: bool = True, consent: Consent | None = None) -> EnrollReport:
    """Enrol ``name`` from images (paths, bytes, PIL images or RGB frames).

    ``consent`` is recorded with the person; an organisation's gallery (see
    :mod:`faceapp.gallery.privacy`) refuses a new person without it
    (:class:`ConsentRequired`, checked before any image is analysed).

    Each image must hold exactly one face (or, with ``largest``, its largest face is
    used) that passes the quality gate; other images are reported in ``rejected``
    with the reason. The accepted faces are stored in one transaction (all or
    nothing). ``create=False`` requires the person to exist already. Raises
    :class:`QualityRejected` / :class:`NoFaceFound` / :class:`MultipleFaces` /
    :class:`InvalidImage` when no image is accepted.
    """
    key = normalize_name(name)
    if consent is None and consent_required(core, key):
        raise consent_refusal(key)
    candidates: list[_Candidate] = []
    for i, image in enumerate(images):
        src = describe_source(image) if isinstance(image, str | os.PathLike) else (
            f"image {i + 1} {describe_source(image)}")
        try:
            candidates.append(_Candidate(src, analyze(core, image)))
        except InvalidImage as err:
            candidates.append(_Candidate(src, (), err))
    return _accept(core, key, candidates, largest=largest, create=create, consent=consent)


def enroll_faces(core: Core, name: str, faces: Sequence[AnalysedFace],
                 sources: Sequence[str] | None = None, *, create: bool = True,
                 consent: Consent | None = None) -> EnrollReport:
    """See :meth:`FaceService.enroll_faces`."""
    key = normalize_name(name)
    labels = list(sources) if sources is not None else [f"capture {i + 1}" for i in range(len(faces))]
    if len(labels) != len(faces):
        raise ValueError("sources must match faces one to one")
    return _accept(core, key, [_Candidate(s, [f]) for f, s in zip(faces, labels, strict=True)],
                   largest=False, create=create, consent=consent)


def _accept(core: Core, key: str, candidates: Sequence[_Candidate], *, largest: bool,
            create: bool, consent: Consent | None) -> EnrollReport:
    """The accept loop: keep each source's one good face, report the others, store."""
    kept: list[AnalysedFace] = []
    sources: list[str] = []
    rejected: list[tuple[str, str]] = []
    kinds: list[type[FaceappError]] = []

    def reject(src: str, reason: str, kind: type[FaceappError]) -> None:
        rejected.append((src, reason))
        kinds.append(kind)

    for c in candidates:
        if c.error is not None:
            reject(c.source, c.error.reason, InvalidImage)
        elif not c.faces:
            reject(c.source, "no face found", NoFaceFound)
        elif len(c.faces) > 1 and not largest:
            reject(c.source, f"{len(c.faces)} faces found (use --largest to take the largest)",
                   MultipleFaces)
        else:
            face = max(c.faces, key=face_area)
            reasons = quality_reasons(face)
            if reasons:
                reject(c.source, "; ".join(reasons), QualityRejected)
            else:
                kept.append(face)
                sources.append(c.source)
    if not kept:
        _raise_nothing_accepted(core, key, rejected, kinds)
    return _store(core, key, kept, sources, rejected, create=create, consent=consent)


def _raise_nothing_accepted(core: Core, key: str, rejected: list[tuple[str, str]],
                            kinds: list[type[FaceappError]]) -> None:
    details = "; ".join(f"{s}: {r}" for s, r in rejected) or "no image given"
    msg = f"nothing enrolled for {key!r}: {details}"
    # the history keeps the reasons, not the files: a path often names the person
    logged = "; ".join(f"image {i}: {r.replace(s, f'image {i}') if s else r}"
                       for i, (s, r) in enumerate(rejected, 1)) or "no image given"
    with contextlib.suppress(GalleryError), core.uow.write("enroll") as (_, repo):
        repo.log_event("enroll", "rejected", person=key, detail=logged[:2000],
                       model_id=core.pipeline_or_none.model_id if core.pipeline_or_none else None)
    kind = kinds[0] if kinds and all(k is kinds[0] for k in kinds) else QualityRejected
    if kind is InvalidImage:
        raise InvalidImage(rejected[0][0] if len(rejected) == 1 else key, msg)
    raise kind(msg)


def _store(core: Core, key: str, faces: Sequence[AnalysedFace], sources: Sequence[str],
           rejected: list[tuple[str, str]], *, create: bool, consent: Consent | None
           ) -> EnrollReport:
    model_id = core.model_id
    embs = [core.embedding_of(f) for f in faces]
    dims = {e.shape[0] for e in embs}
    if len(dims) != 1:
        raise ModelMismatch(f"faces of several embedding sizes {sorted(dims)}")
    templates = [
        NewTemplate(model_id=model_id, embedding=e, crop_png=encode_face_image(f.face_image),
                    source=src, quality=quality_dict(f))
        for f, e, src in zip(faces, embs, sources, strict=True)
    ]
    for attempt in (1, 2):
        try:
            with core.uow.write("enroll") as (s, repo):
                was_current = core.cache_is_current(s)
                person = repo.find_person(key)
                if person is None:
                    if not create:
                        raise PersonNotFound(f"no person named {key!r} in the gallery "
                                             "(enrol without --no-create to add them)")
                    if consent is None and privacy.load_policy(s).use == "organisation":
                        raise consent_refusal(key)
                    person = repo.add_person(key)
                if consent is not None:
                    privacy.record_consent(s, person, consent, audit.current_actor())
                    # who gave it and on what basis stay in the consent record, deleted
                    # with the person; the history keeps no name
                    repo.log_event("consent", "recorded", person=key,
                                   detail=json.dumps({"purpose": consent.purpose,
                                                      "by_person": not consent.given_by
                                                      or consent.given_by == key}))
                ids = repo.add_templates(person, templates)
                pid = int(person.id)
                repo.log_event("enroll", "accepted", person=key, model_id=model_id,
                               detail=json.dumps({"accepted": len(ids), "rejected": len(rejected)}))
                new_gen = current_generation(s)
            break
        except DuplicatePerson:
            # another desktop created this person between our read and our insert (the
            # unique constraint caught it); the retry finds them and adds to them
            if attempt == 2:
                raise
    core.cache.added(ids, pid, key, np.stack(embs), was_current=was_current, generation=new_gen)
    core.cache.drop_snapshots()
    logger.info("enrolled %s: %d template(s), %d rejected", key, len(ids), len(rejected))
    return EnrollReport(key, list(sources), rejected, len(ids))


def consent_refusal(key: str) -> ConsentRequired:
    return ConsentRequired(
        f"{key!r} was not enrolled: this gallery is an organisation's and enrolling a new "
        "person needs their consent (who, purpose, basis: --consent-purpose and "
        "--consent-basis, or the Enroll page's consent dialog)")


def consent_required(core: Core, name: str) -> bool:
    """Would enrolling ``name`` now need consent (a new person, an organisation's gallery)?"""
    with core.uow.read("consent") as (s, repo):
        return privacy.load_policy(s).use == "organisation" and repo.find_person(name) is None


def check_enrollment(core: Core, name: str, faces: Sequence[AnalysedFace]) -> list[str]:
    """See :meth:`FaceService.check_enrollment`."""
    key = normalize_name(name)
    warnings: list[str] = []
    with core.uow.read("check enrollment") as (s, repo):
        existing = repo.find_person(key)
        if existing is not None:
            n = repo.count_templates(person_id=existing.id)
            warnings.append(f"a person named {key!r} already exists ({n} template(s)); "
                            "the new faces would be added to them")
        if not faces:
            return warnings
        view = core.cache.comparable(s, repo)
    try:
        tau = core.thresholds.identification(DISTANCE, view.n_people)  # a 1:K search
    except CalibrationError as err:
        warnings.append(f"faces not checked against the gallery: {err}")
        return warnings
    probes = np.stack([core.embedding_of(f) for f in faces])
    results = core.cache.identify(view, probes, threshold=tau, k=1, scorer=None, margin=core.margin)
    for i, res in enumerate(results):
        pid = res.person_id
        if pid is not None and view.names.get(pid) != key:  # person_id: accepted at τ
            warnings.append(f"face {i + 1} already matches {view.names.get(pid, pid)!r} "
                            f"(score {res.best_score:.3f} >= {tau:.3f})")
    return warnings
