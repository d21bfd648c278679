"""Decisions: 1:1 verification of a claimed identity and 1:K recognition against the gallery.

A person's score is the best score over their templates (:mod:`faceapp.gallery.matching`);
τ comes from the service's :class:`~faceapp.services.thresholds.ThresholdPolicy` (1:1: its
``current`` τ; 1:K: its ``identification`` τ for the number of people searched) and the
decision is :func:`faceapp.nn.scoring.accepts`. Templates of another model are never
compared (:class:`~faceapp.errors.ModelMismatch` until ``reembed``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
from sqlalchemy.orm import Session

from faceapp.errors import GalleryError, MultipleFaces, NoFaceFound
from faceapp.gallery.matching import GalleryIndex, Identification
from faceapp.gallery.orm import Person
from faceapp.gallery.repository import GalleryRepository, normalize_name
from faceapp.nn.scoring import DISTANCE
from faceapp.services.core import Core, analyze, face_area
from faceapp.services.index_cache import refuse_stale
from faceapp.services.protocols import AnalysedFace
from faceapp.services.results import RecognizedFace, VerifyResult
from faceapp.vision.images import ImageInput, describe_source

logger = logging.getLogger(__name__)

Probe = ImageInput | AnalysedFace


def probe_face(core: Core, probe: Probe, *, face: int | None = None, largest: bool = False
               ) -> tuple[AnalysedFace, int, int]:
    """The face to verify, the number of faces found and its 1-based number: a given
    face; the only face of an image; else the ``face``-th (``recognize``'s order) or,
    with ``largest``, the largest. Several faces and no choice: :class:`MultipleFaces`."""
    if isinstance(probe, AnalysedFace):
        return probe, 1, 1
    faces = analyze(core, probe)
    where = describe_source(probe)
    if not faces:
        raise NoFaceFound(f"{where}: no face found")
    if face is not None:
        if not 1 <= face <= len(faces):
            raise MultipleFaces(f"{where}: face {face} asked for, {len(faces)} found")
        return faces[face - 1], len(faces), face
    if len(faces) == 1:
        return faces[0], 1, 1
    if not largest:
        raise MultipleFaces(
            f"{where}: {len(faces)} faces found; choose one with --largest or --face N "
            f"(1..{len(faces)}, numbered as `faceapp recognize` lists them)")
    number = max(range(len(faces)), key=lambda i: face_area(faces[i])) + 1
    logger.info("%s: %d faces, verifying the largest (face %d)", where, len(faces), number)
    return faces[number - 1], len(faces), number


def verify(core: Core, name: str, probe: Probe, *, scorer: str = DISTANCE,
           threshold: float | None = None, log_event: bool = True, face: int | None = None,
           largest: bool = False) -> VerifyResult:
    """See :meth:`FaceService.verify`."""
    key = normalize_name(name)
    scorer_obj = core.thresholds.index_scorer(scorer)
    tau = core.thresholds.resolve(scorer, threshold)
    chosen, n_faces, number = probe_face(core, probe, face=face, largest=largest)
    emb = core.embedding_of(chosen)
    with core.uow.read("verify") as (s, repo):
        person = repo.get_person(key)
        pid = int(person.id)
        index = _verify_index(core, s, repo, person)
    if pid not in set(index.people().tolist()):
        raise GalleryError(f"{key!r} has no templates to compare with; enrol them first")
    v = index.verify(pid, emb, model_id=core.model_id, threshold=tau, scorer=scorer_obj,
                     normaliser=core.normaliser_for(scorer))
    if log_event and not core.uow.read_only:
        with core.uow.write("verify") as (_, repo):
            repo.log_event("verify", "match" if v.match else "no match", person=key,
                           score=v.score, threshold=tau, scorer=scorer, model_id=core.model_id)
    return VerifyResult(key, v.match, v.score, tau, scorer, tuple(chosen.detection.box),
                        n_faces, number)


def _verify_index(core: Core, session: Session, repo: GalleryRepository, person: Person
                  ) -> GalleryIndex:
    """The index a 1:1 comparison reads: the cached gallery index, or with in-server
    search (nothing cached) an index of this one person's templates."""
    if core.server is None:
        return core.cache.comparable(session, repo).index
    model_id = core.model_id
    refuse_stale(repo.count_other_model_templates(model_id), model_id)
    mine = [t for t in person.templates if t.model_id == model_id]
    if not mine:
        return GalleryIndex(model_id, core.pipeline.embedding_dim)
    return GalleryIndex.from_arrays(
        model_id, np.array([t.id for t in mine], dtype=np.int64),
        np.full(len(mine), int(person.id), dtype=np.int64),
        np.stack([np.asarray(t.embedding, dtype=np.float32) for t in mine]))


def faces_of(core: Core, image_or_faces: Probe | Sequence[AnalysedFace]) -> list[AnalysedFace]:
    """The faces to recognise: the given face(s), else every face of the image."""
    if isinstance(image_or_faces, AnalysedFace):
        return [image_or_faces]
    if isinstance(image_or_faces, list | tuple) and all(isinstance(f, AnalysedFace)
                                                        for f in image_or_faces):
        return list(image_or_faces)
    return analyze(core, image_or_faces)  # type: ignore[arg-type]


def recognize(core: Core, image_or_faces: Probe | Sequence[AnalysedFace], *, top_k: int = 5,
              scorer: str = DISTANCE, threshold: float | None = None, log_event: bool = True
              ) -> list[RecognizedFace]:
    """See :meth:`FaceService.recognize`."""
    if top_k < 1:
        raise ValueError("top_k must be at least 1")
    scorer_obj = core.thresholds.index_scorer(scorer)
    faces = faces_of(core, image_or_faces)
    if not faces:
        return []
    probes = np.stack([core.embedding_of(f) for f in faces])
    if core.server is not None and scorer_obj is None:
        results, names, tau = core.server.identify(
            probes, threshold_for=lambda n: core.thresholds.identification(scorer, n, threshold),
            k=top_k, margin=core.margin)
    else:
        with core.uow.read("recognize") as (s, repo):
            view = core.cache.comparable(s, repo)
        tau = core.thresholds.identification(scorer, view.n_people, threshold)
        results = core.cache.identify(view, probes, threshold=tau, k=top_k, scorer=scorer_obj,
                                      margin=core.margin)
        names = dict(view.names)
    out = [recognized(tuple(f.detection.box), r, names, tau, scorer)  # type: ignore[arg-type]
           for f, r in zip(faces, results, strict=True)]
    if log_event and not core.uow.read_only:
        with core.uow.write("recognize") as (_, repo):
            for r in out:
                outcome = "unknown" if r.person is None else ("ambiguous" if r.ambiguous else "known")
                repo.log_event("recognize", outcome, person=r.person, score=r.score,
                               threshold=tau, scorer=scorer, model_id=core.model_id)
    return out


def known_people(core: Core, scorer: str = DISTANCE) -> int | None:
    """The number of people a 1:K search with ``scorer`` would search now, as known in
    memory (the index view's, or in-server search's count at its last sync; no database
    access); ``None`` before either was loaded."""
    if core.server is not None and core.thresholds.index_scorer(scorer) is None:
        return core.server.n_people if core.server.synced else None
    view = core.cache.latest()
    return None if view is None else view.n_people


def identification_threshold(core: Core, scorer: str = DISTANCE,
                             threshold: float | None = None) -> float:
    """The τ a 1:K search with ``scorer`` uses now (see :meth:`FaceService.identification_threshold`);
    before the gallery index is loaded, the 1:1 τ (:meth:`ThresholdPolicy.resolve`)."""
    n = known_people(core, scorer)
    if n is None:
        return core.thresholds.resolve(scorer, threshold)
    return core.thresholds.identification(scorer, n, threshold)


def recognized(box: tuple[float, float, float, float], res: Identification,
               names: Mapping[int, str], tau: float, scorer: str) -> RecognizedFace:
    """The result of one face from its identification (``names``: person id -> name)."""
    lookup = names.get
    person = None if res.person_id is None else lookup(res.person_id)
    return RecognizedFace(
        box=box, person=person, score=res.best_score,
        candidates=[(lookup(c.person_id, str(c.person_id)), c.score) for c in res.candidates],
        ambiguous=res.ambiguous, threshold=tau, scorer=scorer)
