"""The one API the CLI and the GUI share: enrol, verify, recognise, manage the gallery.

Qt-free. Every method raises :class:`~faceapp.errors.FaceappError` subclasses for expected
failures and returns frozen dataclasses.

Decisions
---------
* Scores are similarities (higher = more alike); a comparison matches when
  ``score >= threshold`` (see :mod:`faceapp.nn.scoring`).
* A person's score is the **best** score over their templates (see
  :mod:`faceapp.gallery.matching`).
* τ comes, in this order, from: the ``threshold=`` argument (``--threshold``); a τ the
  user stored with :meth:`FaceService.set_threshold`, kept **in the gallery database**
  (``setting`` table, key ``threshold/<model_id>/<scorer>``, so it follows the gallery it was
  chosen for and never edits the shipped model folder); the model's ``calibration.json``
  (its ``overrides``, else the operating point, default ``far_0.01``). Never a constant.
* Templates made by another model are never compared: while the gallery holds any, every
  comparison raises :class:`~faceapp.errors.ModelMismatch` until :meth:`FaceService.reembed`
  has recomputed them from the stored crops.
* Each unit of work is one transaction (``write_session``/``read_session``): an enrolment
  of several images is all-or-nothing. Every operation appends an ``event`` row.

Threads
-------
A service may be used from **one worker thread at a time** (the GUI's task runner; the CLI's
main thread). Public methods are serialised by an internal lock, so an accidental second
caller waits instead of corrupting the cached index, but long calls (``reembed``) then block
it. SQLite connections are pooled per engine and never shared by two threads at once.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import json
import logging
import math
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from faceapp.config import resolve_paths
from faceapp.errors import (
    CalibrationError,
    DuplicatePerson,
    FaceappError,
    GalleryError,
    InvalidImage,
    ModelError,
    ModelMismatch,
    MultipleFaces,
    NoFaceFound,
    PersonNotFound,
    QualityRejected,
)
from faceapp.gallery import audit, privacy
from faceapp.gallery.bundle import is_bundle, open_bundle, seal_bundle
from faceapp.gallery.crypto import KdfParams
from faceapp.gallery.database import (
    DatabaseConfig,
    at_rest,
    bump_generation,
    current_generation,
    gallery_uuid,
    is_read_only,
    open_database,
    purge_deleted,
    read_session,
    retry_when_locked,
    sqlite_path,
    translate_errors,
    write_session,
)
from faceapp.gallery.keys import KeyConfig, PromptFn, passphrase_needed
from faceapp.gallery.matching import (
    DEFAULT_AMBIGUITY_MARGIN,
    GalleryIndex,
    Identification,
    PairScorer,
)
from faceapp.gallery.privacy import Consent, ConsentRequired, PrivacyPolicy
from faceapp.gallery.repository import GalleryRepository, NewTemplate, normalize_name
from faceapp.gallery.server_search import ServerSearch, server_search_available
from faceapp.gallery.snapshot import (
    SNAPSHOT_MIN_TEMPLATES,
    load_snapshot,
    remove_snapshots,
    save_snapshot,
    snapshot_path,
)
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
from faceapp.types import Box
from faceapp.vision.face_image import (
    FaceImage,
    chip_from_face_image,
    decode_face_image,
    encode_face_image,
    is_old_crop,
)
from faceapp.vision.images import ImageInput, describe_source, load_image

if TYPE_CHECKING:
    from faceapp.nn.calibration import Calibration
    from faceapp.nn.pipeline import FaceEmbedding, FacePipeline

logger = logging.getLogger(__name__)

DISTANCE = "distance"
DEFAULT_POINT = "far_0.01"
EXPORT_FORMAT = "faceapp-gallery"
EXPORT_VERSION = 1
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SETTING_THRESHOLD = "threshold/{model_id}/{scorer}"

ConflictPolicy = Literal["error", "skip", "merge"]
ProgressFn = Callable[[int, int], None]
StopFn = Callable[[], bool]


# ---------------------------------------------------------------------- results
@dataclass(frozen=True)
class EnrollReport:
    """``accepted``: sources stored as templates; ``rejected``: (source, reason)."""

    person: str
    accepted: list[str]
    rejected: list[tuple[str, str]]
    templates_added: int

    def to_dict(self) -> dict[str, object]:
        return {
            "person": self.person,
            "accepted": list(self.accepted),
            "rejected": [{"source": s, "reason": r} for s, r in self.rejected],
            "templates_added": self.templates_added,
        }


@dataclass(frozen=True)
class VerifyResult:
    """1:1 decision: ``match`` is ``score >= threshold`` (best template of ``person``).
    ``faces_found``: faces in the probe image; ``face``: the one compared (1-based, in the
    order ``recognize`` lists them)."""

    person: str
    match: bool
    score: float
    threshold: float
    scorer: str
    box: Box | None = None
    faces_found: int = 1
    face: int = 1

    def to_dict(self) -> dict[str, object]:
        return {
            "person": self.person,
            "match": self.match,
            "score": _finite_or_none(self.score),
            "threshold": self.threshold,
            "faces_found": self.faces_found,
            "face": self.face,
            "scorer": self.scorer,
            "box": None if self.box is None else [round(v, 2) for v in self.box],
        }


@dataclass(frozen=True)
class RecognizedFace:
    """1:K result for one face.

    ``person``: the best candidate when its score passes τ, else ``None`` (Unknown);
    ``score``: best candidate's score (``-inf`` when the gallery is empty);
    ``candidates``: up to top-k (name, score), best first; ``ambiguous``: the runner-up is
    within the ambiguity margin of a passing best.
    """

    box: Box
    person: str | None
    score: float
    candidates: list[tuple[str, float]]
    ambiguous: bool
    threshold: float = math.nan
    scorer: str = ""

    def to_dict(self) -> dict[str, object]:
        return {
            "box": [round(v, 2) for v in self.box],
            "person": self.person,
            "score": _finite_or_none(self.score),
            "candidates": [{"person": n, "score": _finite_or_none(s)} for n, s in self.candidates],
            "ambiguous": self.ambiguous,
            "threshold": _finite_or_none(self.threshold),
            "scorer": self.scorer,
        }


@dataclass(frozen=True)
class PairScores:
    """Scores of a labelled pairs file: ``scores`` (M,) float64 and ``same`` (M,) bool for
    the M pairs whose two images both gave a face; ``skipped``: pairs left out;
    ``images``: distinct images read; ``problems``: (path, reason) of each image left out."""

    scores: np.ndarray
    same: np.ndarray
    skipped: int
    images: int
    problems: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class PersonSummary:
    """``thumbnail_png``: PNG of the person's first stored crop (``b""`` if none)."""

    id: int
    name: str
    n_templates: int
    created: datetime
    thumbnail_png: bytes = field(repr=False)
    expires: datetime | None = None
    """When the gallery's retention policy deletes them (``None``: no retention policy)."""

    def to_dict(self) -> dict[str, object]:
        return {"id": self.id, "name": self.name, "n_templates": self.n_templates,
                "created": self.created.isoformat(),
                "expires": None if self.expires is None else self.expires.isoformat()}


@dataclass(frozen=True)
class TemplateSummary:
    """One stored template: its crop (PNG), source label, quality measures and model."""

    id: int
    crop_png: bytes = field(repr=False)
    source: str = ""
    quality: dict[str, object] = field(default_factory=dict)
    created: datetime | None = None
    model_id: str = ""

    def to_dict(self) -> dict[str, object]:
        return {"id": self.id, "source": self.source, "quality": self.quality,
                "created": None if self.created is None else self.created.isoformat(),
                "model_id": self.model_id, "has_crop": bool(self.crop_png)}


@dataclass(frozen=True)
class ReembedReport:
    """What ``reembed`` did: templates recomputed for ``model_id``, and how many of them came
    from the small aligned crops older versions stored (their crop for the new model is
    re-derived from that crop: upsampled, and black where the new framing is wider) rather
    than from a stored face picture."""

    recomputed: int
    from_old_crops: int
    model_id: str

    def __str__(self) -> str:
        old = f", {self.from_old_crops} re-derived from old small crops" if self.from_old_crops else ""
        return f"{self.recomputed} template(s) recomputed for model {self.model_id}{old}"

    def to_dict(self) -> dict[str, object]:
        return {"recomputed": self.recomputed, "from_old_crops": self.from_old_crops,
                "model_id": self.model_id}


@dataclass(frozen=True)
class GalleryTransfer:
    """Counts of an export or import."""

    people: int
    templates: int
    skipped: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {"people": self.people, "templates": self.templates, "skipped": self.skipped}


@dataclass(frozen=True)
class ExpiredPerson:
    """Someone deleted (or, in a dry run, to be deleted) by the retention policy."""

    name: str
    expired: datetime
    templates_deleted: int

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "expired": self.expired.isoformat(),
                "templates_deleted": self.templates_deleted}


@dataclass(frozen=True)
class DeletionReceipt:
    """What a deletion removed, to answer an erasure request (no biometric data in it).

    ``removed_ids_sha256``: SHA-256 of the removed record ids
    (``person:<id>`` then ``template:<id>`` lines, ascending), so that the gallery's owner
    can later show which records went without keeping them. ``storage``: how the bytes
    left the disk (:class:`~faceapp.gallery.database.PurgeReport`, snapshots removed).
    """

    person: str
    deleted_at: datetime
    gallery: str
    gallery_uuid: str
    templates: int
    crops: int
    removed_ids_sha256: str
    storage: dict[str, object]
    encrypted: bool

    def to_dict(self) -> dict[str, object]:
        return {"format": "faceapp-deletion-receipt", "version": 1, "person": self.person,
                "deleted_at": self.deleted_at.isoformat(), "gallery": self.gallery,
                "gallery_uuid": self.gallery_uuid,
                "removed": {"people": 1, "templates": self.templates, "crops": self.crops},
                "removed_ids_sha256": self.removed_ids_sha256,
                "encrypted_at_rest": self.encrypted, "storage": dict(self.storage)}


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _is_face(obj: object) -> bool:
    """A ``FaceEmbedding`` (duck-typed, so that tests can pass stand-ins)."""
    return hasattr(obj, "embedding") and hasattr(obj, "detection") and hasattr(obj, "aligned")


def _face_area(face: FaceEmbedding) -> float:
    return float(face.detection.area)


def _quality_dict(face: FaceEmbedding) -> dict[str, object]:
    q = getattr(face, "quality", None)
    if q is None:
        return {}
    if hasattr(q, "to_dict"):
        return dict(q.to_dict())
    return {"ok": bool(getattr(q, "ok", True))}


def _quality_reasons(face: FaceEmbedding) -> tuple[str, ...]:
    q = getattr(face, "quality", None)
    if q is None or getattr(q, "ok", True):
        return ()
    return tuple(getattr(q, "reasons", ())) or ("quality gate",)


_F = TypeVar("_F", bound=Callable[..., Any])


def _serialised(method: _F) -> _F:
    """Run a public method under the service lock, after checking the service is open."""

    @functools.wraps(method)
    def wrapper(self: FaceService, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            if self._closed:
                raise GalleryError("the face service is closed")
            return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


# ---------------------------------------------------------------------- service
SEARCH_MODES = ("auto", "client", "server")

SERVER_SEARCH_MIN_TEMPLATES = 200_000
"""With ``search=auto``, a PostgreSQL gallery with pgvector is searched inside the server
from this many templates on (a desktop then no longer pulls every template into memory)."""


def choose_server_search(engine: Engine, mode: str | None = None) -> ServerSearch | None:
    """Where 1:K search runs (see :meth:`FaceService.open`); ``None`` means in memory."""
    mode = (mode or os.environ.get("FACEAPP_SEARCH") or "auto").strip().lower()
    if mode not in SEARCH_MODES:
        raise FaceappError(f"unknown search mode {mode!r} (choose {', '.join(SEARCH_MODES)})")
    if mode == "client":
        return None
    with translate_errors("server search"):
        avail = server_search_available(engine)
        if not avail.available:
            if mode == "server":
                raise GalleryError(f"server-side search is not available: {avail.reason}")
            return None
        if mode == "auto":
            with read_session(engine) as s:
                n = GalleryRepository(s).count_templates()
            if n < SERVER_SEARCH_MIN_TEMPLATES:
                return None
        try:
            search = ServerSearch.open(engine)
        except GalleryError as err:
            if mode == "server":
                raise
            logger.warning("searching on this desktop: %s", err)
            return None
    logger.info("1:K search runs inside the database server (%s)", avail.reason)
    return search


class FaceService:
    """Enrolment, verification, recognition and gallery management.

    Args:
        engine: a gallery engine from :func:`faceapp.gallery.open_database`.
        pipeline: a ``FacePipeline`` (detector + model); ``None`` for gallery-only use
            (listing, renaming, export...), in which case face operations raise
            :class:`ModelError`.
        calibration: the model's ``Calibration`` (τ per scorer); ``None`` when there is none
            (τ must then come from ``threshold=`` or :meth:`set_threshold`).
        scorers: name -> scorer; default ``faceapp.nn.scoring.scorers_for(pipeline.model)``.
        margin: ambiguity margin of recognition (a tie tolerance, not a threshold).
        operating_point: calibration point used for τ (``far_0.01``, ``far_0.001``, ``eer``).
        owns_engine: dispose of the engine in :meth:`close`.
        server_search: search 1:K inside the PostgreSQL server (pgvector; see
            :mod:`faceapp.gallery.server_search`) instead of holding the gallery in memory.
    """

    def __init__(
        self,
        engine: Engine,
        pipeline: FacePipeline | None = None,
        calibration: Calibration | None = None,
        *,
        scorers: dict[str, PairScorer] | None = None,
        margin: float = DEFAULT_AMBIGUITY_MARGIN,
        operating_point: str = DEFAULT_POINT,
        owns_engine: bool = False,
        calibration_problem: str | None = None,
        server_search: ServerSearch | None = None,
    ) -> None:
        self._engine = engine
        # 1:K search inside PostgreSQL (pgvector) instead of the in-memory index
        self._server = server_search
        self._server_gen = -1
        self._server_stale = 0
        self._pipeline = pipeline
        self._calibration = calibration
        self._calibration_problem = calibration_problem
        self._scorers = scorers
        self.margin = float(margin)
        self.operating_point = operating_point
        self._owns_engine = owns_engine
        self._lock = threading.RLock()
        self._closed = False
        self._where = engine.url.render_as_string(hide_password=True)
        self._url = engine.url.render_as_string(hide_password=False)
        self._snapshot_gen = -1
        self._at_rest = at_rest(engine)  # snapshot sealing of an encrypted gallery
        self.read_only = is_read_only(engine)
        """Opened read-only: searches log no events and save no snapshots; writes fail."""
        # cached search index of the current model, valid for generation self._gen
        self._index: GalleryIndex | None = None
        self._gen = -1
        self._names: dict[int, str] = {}
        self._stale = 0
        if calibration is not None and pipeline is not None and \
                calibration.model_id != pipeline.model_id:
            self._calibration_problem = (
                f"the calibration file is for model {calibration.model_id}, the loaded model is "
                f"{pipeline.model_id} (run `faceapp evaluate`, or pass --threshold)"
            )
            self._calibration = None

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def open(
        cls,
        db_url: str | None = None,
        model_path: str | os.PathLike[str] | None = None,
        *,
        device: str = "cpu",
        load_model: bool = True,
        key_prompt: PromptFn | None = None,
        search: str | None = None,
    ) -> FaceService:
        """Open the gallery (``--db``/``FACEAPP_DB``/default) and load the model
        (``--model``/``FACEAPP_MODEL``/``models/default.pt``) with its ``calibration.json``.

        ``load_model=False`` opens the gallery only (fast; enough for ``people`` commands).
        ``key_prompt(message, confirm)``: gives the gallery passphrase when it is needed and
        ``$FACEAPP_PASSPHRASE`` is unset (the GUI's dialog); default: a terminal prompt.
        ``search``: where 1:K search runs — ``client`` (the in-memory index), ``server``
        (inside PostgreSQL with pgvector; an error elsewhere) or ``auto`` (the server when it
        offers pgvector and the gallery holds at least ``SERVER_SEARCH_MIN_TEMPLATES``);
        ``None`` reads ``FACEAPP_SEARCH`` (default ``auto``).
        """
        paths = resolve_paths(db=db_url, model=model_path)
        # first: a bad gallery (or passphrase) fails before the slow model load
        engine = open_database(paths.db_url, DatabaseConfig(keys=KeyConfig(prompt=key_prompt)))
        try:
            server = choose_server_search(engine, search)
        except BaseException:
            engine.dispose()
            raise
        pipeline = None
        calibration = None
        problem = None
        if load_model:
            from faceapp.config import DetectorConfig
            from faceapp.nn.calibration import Calibration, calibration_path_for
            from faceapp.nn.pipeline import FacePipeline

            try:
                pipeline = FacePipeline.from_paths(
                    paths.model_path, device=device,
                    detector_config=DetectorConfig(device=device),
                )
            except BaseException:
                engine.dispose()
                raise
            try:
                calibration = Calibration.load(calibration_path_for(paths.model_path))
            except CalibrationError as err:
                problem = str(err)
                logger.warning("no usable calibration: %s", err)
        service = cls(engine, pipeline, calibration, owns_engine=True,
                      calibration_problem=problem, server_search=server)
        try:  # the retention policy is applied at start-up
            service.expire_people()
        except FaceappError as err:
            logger.warning("could not apply the retention policy: %s", err)
        return service

    def close(self) -> None:
        """Release the database (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            with contextlib.suppress(FaceappError):
                self._save_snapshot_if_useful()
            self._index = None
            if self._owns_engine:
                self._engine.dispose()

    def _save_snapshot_if_useful(self) -> None:
        """Persist the in-memory index of a large gallery that changed since its snapshot."""
        index = self._index
        if index is None or len(index) < SNAPSHOT_MIN_TEMPLATES or self._gen == self._snapshot_gen \
                or self.read_only:
            return
        path = snapshot_path(self._url, index.model_id)
        if path is None:
            return
        with self._read("snapshot") as (s, _):
            if current_generation(s) != self._gen:
                return  # someone else changed the gallery meanwhile
            uid = gallery_uuid(s)
        save_snapshot(path, index, self._names, self._stale, gallery_uuid=uid,
                      generation=self._gen, cipher=self._at_rest)
        self._snapshot_gen = self._gen

    def __enter__(self) -> FaceService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def model_id(self) -> str:
        return self._require_pipeline().model_id

    @property
    def has_model(self) -> bool:
        return self._pipeline is not None

    @property
    def pipeline(self) -> FacePipeline:
        """The loaded ``FacePipeline`` (detector + model), e.g. for ``faceapp.services.live``
        (raises :class:`ModelError` when the service has no model)."""
        return self._require_pipeline()

    # ------------------------------------------------------------------ internals
    def _require_pipeline(self) -> FacePipeline:
        if self._pipeline is None:
            raise ModelError("no face model loaded (open the service with a model)")
        return self._pipeline

    @contextlib.contextmanager
    def _read(self, what: str) -> Iterator[tuple[Session, GalleryRepository]]:
        with translate_errors(f"{self._where} ({what})"), read_session(self._engine) as s:
            yield s, GalleryRepository(s)

    @contextlib.contextmanager
    def _write(self, what: str) -> Iterator[tuple[Session, GalleryRepository]]:
        with translate_errors(f"{self._where} ({what})"), write_session(self._engine) as s:
            yield s, GalleryRepository(s)

    def _scorer_map(self) -> dict[str, PairScorer]:
        if self._scorers is None:
            pipeline = self._require_pipeline()
            from faceapp.nn.scoring import scorers_for

            self._scorers = dict(scorers_for(pipeline.model))  # type: ignore[arg-type]
        return self._scorers

    def _scorer(self, name: str) -> PairScorer | None:
        """The scorer object for the index (``None`` = built-in cosine fast path)."""
        scorers = self._scorer_map()
        if name not in scorers:
            raise CalibrationError(
                f"unknown scorer {name!r}; this model offers {', '.join(sorted(scorers))}"
            )
        return None if name == DISTANCE else scorers[name]

    def _sync(self, session: Session, repo: GalleryRepository) -> GalleryIndex:
        """Bring the cached index up to date with the database (reload if it changed):
        from a valid snapshot when there is one, else from the rows (and then save a
        snapshot for a large gallery)."""
        model_id = self._require_pipeline().model_id
        gen = current_generation(session)
        if self._index is not None and gen == self._gen:
            return self._index
        uid = gallery_uuid(session)
        snap_path = snapshot_path(self._url, model_id)
        snap = None
        if snap_path is not None:
            snap = load_snapshot(snap_path, model_id=model_id, gallery_uuid=uid, generation=gen,
                                 cipher=self._at_rest)
        if snap is not None:
            self._index, self._names, self._stale = snap.index, dict(snap.names), snap.stale
            self._snapshot_gen = gen
        else:
            rows = repo.index_rows(model_id)
            self._stale = repo.count_templates() - rows.template_ids.shape[0]
            self._names = repo.person_names()
            if rows.template_ids.shape[0]:
                self._index = GalleryIndex.from_arrays(
                    model_id, rows.template_ids, rows.person_ids, rows.embeddings
                )
            else:
                self._index = GalleryIndex(model_id, self._require_pipeline_dim())
            if snap_path is not None and len(self._index) >= SNAPSHOT_MIN_TEMPLATES \
                    and not self.read_only:
                save_snapshot(snap_path, self._index, self._names, self._stale,
                              gallery_uuid=uid, generation=gen, cipher=self._at_rest)
                self._snapshot_gen = gen
        self._gen = gen
        logger.debug("gallery index loaded: %d templates (generation %d)", len(self._index), gen)
        return self._index

    def _templates_changed(self) -> None:
        """After a committed change of templates: drop on-disk snapshots (they hold faces
        that may have been deleted; the next load or :meth:`close` writes a fresh one)."""
        self._snapshot_gen = -1
        remove_snapshots(self._url)

    def _require_pipeline_dim(self) -> int:
        pipeline = self._require_pipeline()
        model = getattr(pipeline, "model", None)
        dim = getattr(model, "embedding_dim", None) or getattr(pipeline, "embedding_dim", None)
        return int(dim) if dim else 1

    def _comparable_index(self, session: Session, repo: GalleryRepository) -> GalleryIndex:
        index = self._sync(session, repo)
        self._refuse_stale(self._stale)
        return index

    def _refuse_stale(self, stale: int) -> None:
        """ModelMismatch when ``stale`` templates were made by another model."""
        if stale:
            raise ModelMismatch(
                f"{stale} template(s) in the gallery were made by another model than "
                f"{self.model_id}; run `faceapp reembed` to recompute them from their crops"
            )

    def _invalidate(self) -> None:
        self._index = None
        self._gen = -1

    def _verify_index(self, session: Session, repo: GalleryRepository, person: Any
                      ) -> GalleryIndex:
        """The index a 1:1 comparison reads: the cached gallery index, or with in-server
        search (nothing cached) an index of this one person's templates."""
        if self._server is None:
            return self._comparable_index(session, repo)
        self._refuse_stale(repo.count_other_model_templates(self.model_id))
        mine = [t for t in person.templates if t.model_id == self.model_id]
        if not mine:
            return GalleryIndex(self.model_id, self._require_pipeline_dim())
        return GalleryIndex.from_arrays(
            self.model_id, np.array([t.id for t in mine], dtype=np.int64),
            np.full(len(mine), int(person.id), dtype=np.int64),
            np.stack([np.asarray(t.embedding, dtype=np.float32) for t in mine]))

    def _sync_server(self) -> None:
        """When the gallery changed since the last look: copy new templates into the
        server's vector table and recount the templates of other models (a full count,
        so once per generation, not once per search)."""
        assert self._server is not None
        with self._read("server search") as (s, repo):
            gen = current_generation(s)
            if gen == self._server_gen:
                return
            stale = repo.count_other_model_templates(self.model_id)
        with translate_errors(f"{self._where} (server search sync)"):
            self._server.sync()
        self._server_gen, self._server_stale = gen, stale

    def _server_identify(self, probes: np.ndarray, tau: float, top_k: int
                         ) -> tuple[list[Identification], dict[int, str]]:
        """1:K inside PostgreSQL: HNSW short list, exact re-score (cosine scorer only)."""
        assert self._server is not None
        self._sync_server()
        self._refuse_stale(self._server_stale)
        with self._read("recognize") as (s, repo):
            with translate_errors(f"{self._where} (server search)"):
                results = self._server.identify(s, probes, model_id=self.model_id,
                                                threshold=tau, k=top_k, margin=self.margin)
            names = repo.person_names(c.person_id for r in results for c in r.candidates)
        return results, names

    def _resolve_threshold(self, scorer: str, threshold: float | None) -> float:
        if threshold is not None:
            value = float(threshold)
            if not math.isfinite(value):
                raise CalibrationError(f"threshold must be a finite number, got {threshold}")
            return value
        return self._threshold_unlocked(scorer, None)

    def _threshold_unlocked(self, scorer: str, point: str | None) -> float:
        self._scorer(scorer)
        model_id = self.model_id
        if point is None:
            with self._read("threshold") as (_, repo):
                stored = repo.get_setting(_SETTING_THRESHOLD.format(model_id=model_id,
                                                                    scorer=scorer))
            if stored is not None:
                return float(stored)
        if self._calibration is None:
            reason = self._calibration_problem or f"no calibration for model {model_id}"
            raise CalibrationError(
                f"{reason}; pass a threshold (--threshold) or calibrate the gallery"
            )
        if point is None:
            return self._calibration.threshold(scorer, self.operating_point)
        return self._calibration.calibrated_threshold(scorer, point)

    def _load(self, image: ImageInput) -> np.ndarray:
        return load_image(image)

    def _analyze(self, image: ImageInput) -> list[FaceEmbedding]:
        pipeline = self._require_pipeline()
        return list(pipeline.analyze(self._load(image)))

    def _probe_face(self, probe: ImageInput | FaceEmbedding, *, face: int | None = None,
                    largest: bool = False) -> tuple[FaceEmbedding, int, int]:
        """The face to verify, the number of faces found and its 1-based number: a given
        face; the only face of an image; else the ``face``-th (``recognize``'s order) or,
        with ``largest``, the largest. Several faces and no choice: :class:`MultipleFaces`."""
        if _is_face(probe):
            return probe, 1, 1  # type: ignore[return-value]
        faces = self._analyze(probe)  # type: ignore[arg-type]
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
        number = max(range(len(faces)), key=lambda i: _face_area(faces[i])) + 1
        logger.info("%s: %d faces, verifying the largest (face %d)", where, len(faces), number)
        return faces[number - 1], len(faces), number

    def _check_embedding(self, face: FaceEmbedding) -> np.ndarray:
        """The (D,) float32 embedding of a face made by the current model."""
        made_by = getattr(face, "model_id", None)
        if made_by is not None and made_by != self.model_id:
            raise ModelMismatch(
                f"this face was analysed by model {made_by}, the service uses {self.model_id}; "
                "analyse it again"
            )
        return np.asarray(face.embedding, dtype=np.float32).reshape(-1)

    # ------------------------------------------------------------------ analysis
    @_serialised
    def analyze(self, image: ImageInput) -> list[FaceEmbedding]:
        """Every face of an image or an RGB (H, W, 3) uint8 frame, best detection first
        (``[]`` when there is none)."""
        return self._analyze(image)

    @_serialised
    def load_index(self) -> int:
        """Load the search index of the current model now (from its snapshot when valid)
        rather than at the first search; returns its number of templates. For start-up."""
        if self._server is not None:
            self._sync_server()
            return self._server.count(self.model_id)
        with self._read("load index") as (s, repo):
            return len(self._sync(s, repo))

    @_serialised
    def available_scorers(self) -> list[str]:
        """Scorer names of the loaded model (``distance`` first)."""
        names = sorted(self._scorer_map())
        return sorted(names, key=lambda n: (n != DISTANCE, n))

    @_serialised
    def threshold(self, scorer: str = DISTANCE, point: str | None = None) -> float:
        """τ for ``scorer``. ``point=None``: the user's stored τ if any, else the calibration
        (its override, else :attr:`operating_point`); an explicit ``point`` (``far_0.01``,
        ``far_0.001``, ``eer``) reads that calibrated value. Raises CalibrationError."""
        return self._threshold_unlocked(scorer, point)

    @_serialised
    def set_threshold(self, scorer: str, value: float | None) -> None:
        """Store a user-chosen τ for ``scorer`` and the current model in the gallery
        database (``None`` removes it, returning to the calibration file)."""
        self._scorer(scorer)
        if value is not None and not math.isfinite(float(value)):
            raise CalibrationError(f"threshold must be a finite number, got {value}")
        key = _SETTING_THRESHOLD.format(model_id=self.model_id, scorer=scorer)
        with self._write("set threshold") as (_, repo):
            repo.set_setting(key, None if value is None else repr(float(value)))
            repo.log_event("calibrate", "set" if value is not None else "cleared",
                           threshold=value, scorer=scorer, model_id=self.model_id)

    # ------------------------------------------------------------------ enrolment
    @_serialised
    def enroll(
        self,
        name: str,
        images: Sequence[ImageInput],
        *,
        largest: bool = False,
        create: bool = True,
        consent: Consent | None = None,
    ) -> EnrollReport:
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
        if consent is None and self.consent_required(key):
            raise self._consent_refusal(key)
        faces: list[FaceEmbedding] = []
        sources: list[str] = []
        rejected: list[tuple[str, str]] = []
        kinds: list[type[FaceappError]] = []
        for i, image in enumerate(images):
            src = describe_source(image) if isinstance(image, str | os.PathLike) else (
                f"image {i + 1} {describe_source(image)}"
            )
            try:
                found = self._analyze(image)
            except InvalidImage as err:
                rejected.append((src, err.reason))
                kinds.append(InvalidImage)
                continue
            if not found:
                rejected.append((src, "no face found"))
                kinds.append(NoFaceFound)
                continue
            if len(found) > 1 and not largest:
                rejected.append((src, f"{len(found)} faces found (use --largest to take the "
                                      "largest)"))
                kinds.append(MultipleFaces)
                continue
            face = max(found, key=_face_area)
            reasons = _quality_reasons(face)
            if reasons:
                rejected.append((src, "; ".join(reasons)))
                kinds.append(QualityRejected)
                continue
            faces.append(face)
            sources.append(src)
        if not faces:
            self._raise_nothing_accepted(key, rejected, kinds)
        return self._store(key, faces, sources, rejected, create=create, consent=consent)

    @_serialised
    def enroll_faces(
        self,
        name: str,
        faces: Sequence[FaceEmbedding],
        sources: Sequence[str] | None = None,
        *,
        create: bool = True,
        consent: Consent | None = None,
    ) -> EnrollReport:
        """Enrol already analysed faces (e.g. the GUI's camera captures); faces failing the
        quality gate are rejected with their reason; the rest are stored atomically.
        ``consent`` as for :meth:`enroll`."""
        key = normalize_name(name)
        labels = list(sources) if sources is not None else [
            f"capture {i + 1}" for i in range(len(faces))
        ]
        if len(labels) != len(faces):
            raise ValueError("sources must match faces one to one")
        keep: list[FaceEmbedding] = []
        keep_src: list[str] = []
        rejected: list[tuple[str, str]] = []
        kinds: list[type[FaceappError]] = []
        for face, src in zip(faces, labels, strict=True):
            reasons = _quality_reasons(face)
            if reasons:
                rejected.append((src, "; ".join(reasons)))
                kinds.append(QualityRejected)
            else:
                keep.append(face)
                keep_src.append(src)
        if not keep:
            self._raise_nothing_accepted(key, rejected, kinds)
        return self._store(key, keep, keep_src, rejected, create=create, consent=consent)

    def _raise_nothing_accepted(
        self, key: str, rejected: list[tuple[str, str]], kinds: list[type[FaceappError]]
    ) -> None:
        details = "; ".join(f"{s}: {r}" for s, r in rejected) or "no image given"
        msg = f"nothing enrolled for {key!r}: {details}"
        with contextlib.suppress(GalleryError), self._write("enroll") as (_, repo):
            repo.log_event("enroll", "rejected", person=key, detail=details[:2000],
                           model_id=self._pipeline.model_id if self._pipeline else None)
        kind = kinds[0] if kinds and all(k is kinds[0] for k in kinds) else QualityRejected
        if kind is InvalidImage:
            raise InvalidImage(rejected[0][0] if len(rejected) == 1 else key, msg)
        raise kind(msg)

    def _store(
        self,
        key: str,
        faces: Sequence[FaceEmbedding],
        sources: Sequence[str],
        rejected: list[tuple[str, str]],
        *,
        create: bool,
        consent: Consent | None = None,
    ) -> EnrollReport:
        pipeline = self._require_pipeline()
        model_id = pipeline.model_id
        embs = [self._check_embedding(f) for f in faces]
        dims = {e.shape[0] for e in embs}
        if len(dims) != 1:
            raise ModelMismatch(f"faces of several embedding sizes {sorted(dims)}")
        templates = [
            NewTemplate(
                model_id=model_id,
                embedding=e,
                crop_png=encode_face_image(f.face_image),
                source=src,
                quality=_quality_dict(f),
            )
            for f, e, src in zip(faces, embs, sources, strict=True)
        ]
        for attempt in (1, 2):
            try:
                with self._write("enroll") as (s, repo):
                    synced = self._index is not None and current_generation(s) == self._gen
                    person = repo.find_person(key)
                    if person is None:
                        if not create:
                            raise PersonNotFound(f"no person named {key!r} in the gallery "
                                                 "(enrol without --no-create to add them)")
                        if consent is None and privacy.load_policy(s).use == "organisation":
                            raise self._consent_refusal(key)
                        person = repo.add_person(key)
                    if consent is not None:
                        privacy.record_consent(s, person, consent, audit.current_actor())
                        repo.log_event("consent", "recorded", person=key,
                                       detail=json.dumps({"purpose": consent.purpose,
                                                          "basis": consent.basis,
                                                          "given_by": consent.given_by or key}))
                    ids = repo.add_templates(person, templates)
                    pid = int(person.id)
                    repo.log_event("enroll", "accepted", person=key, model_id=model_id,
                                   detail=json.dumps({"accepted": len(ids),
                                                      "rejected": len(rejected)}))
                    new_gen = current_generation(s)
                break
            except DuplicatePerson:
                # another desktop created this person between our read and our insert (the
                # unique constraint caught it); the retry finds them and adds to them
                if attempt == 2:
                    raise
        if synced and self._index is not None:
            self._index.add(ids, [pid] * len(ids), np.stack(embs), model_id=model_id)
            self._names[pid] = key
            self._gen = new_gen
        else:
            self._invalidate()
        self._templates_changed()
        logger.info("enrolled %s: %d template(s), %d rejected", key, len(ids), len(rejected))
        return EnrollReport(key, list(sources), rejected, len(ids))

    # ------------------------------------------------------------------ consent, retention
    def _consent_refusal(self, key: str) -> ConsentRequired:
        return ConsentRequired(
            f"{key!r} was not enrolled: this gallery is an organisation's and enrolling a new "
            "person needs their consent (who, purpose, basis: --consent-purpose and "
            "--consent-basis, or the Enroll page's consent dialog)")

    @_serialised
    def consent_required(self, name: str) -> bool:
        """Would enrolling ``name`` now need consent (a new person, an organisation's gallery)?"""
        with self._read("consent") as (s, repo):
            return privacy.load_policy(s).use == "organisation" and repo.find_person(name) is None

    @_serialised
    def consents(self, name: str) -> list[dict[str, object]]:
        """The consent records of ``name``, oldest first."""
        with self._read("consent") as (s, repo):
            person = repo.get_person(name)
            return [{"time": c.time.isoformat(), "given_by": c.given_by,
                     "recorded_by": c.recorded_by, "purpose": c.purpose, "basis": c.basis}
                    for c in privacy.consents(s, person.id)]

    @_serialised
    def privacy_policy(self) -> PrivacyPolicy:
        with self._read("policy") as (s, _):
            return privacy.load_policy(s)

    @_serialised
    def set_privacy_policy(self, policy: PrivacyPolicy) -> None:
        """Store the gallery's use and retention (logged)."""
        with self._write("policy") as (s, repo):
            privacy.save_policy(s, policy)
            repo.log_event("policy", "set", detail=json.dumps(policy.to_dict(), sort_keys=True))

    @_serialised
    def expire_people(self, *, dry_run: bool = False, now: datetime | None = None
                      ) -> list[ExpiredPerson]:
        """Delete everyone whose retention period is over (verifiably, as
        :meth:`erase_person`); ``dry_run`` only lists them."""
        with self._read("expire") as (s, _):
            due = privacy.expired(s, privacy.load_policy(s), now)
        out: list[ExpiredPerson] = []
        for _, name, when in due:
            n = 0 if dry_run else self.erase_person(name).templates
            out.append(ExpiredPerson(name, when, n))
        if out and not dry_run:
            logger.info("retention: deleted %d expired people", len(out))
        return out

    @_serialised
    def check_enrollment(self, name: str, faces: Sequence[FaceEmbedding]) -> list[str]:
        """Warnings before enrolling ``faces`` as ``name``: the name exists already, or a face
        already matches someone else (with their name and score). Empty when all is clear."""
        key = normalize_name(name)
        warnings: list[str] = []
        with self._read("check enrollment") as (s, repo):
            existing = repo.find_person(key)
            if existing is not None:
                n = repo.count_templates(person_id=existing.id)
                warnings.append(f"a person named {key!r} already exists ({n} template(s)); "
                                "the new faces would be added to them")
            if not faces:
                return warnings
            index = self._comparable_index(s, repo)
            names = dict(self._names)
        try:
            tau = self._resolve_threshold(DISTANCE, None)
        except CalibrationError as err:
            warnings.append(f"faces not checked against the gallery: {err}")
            return warnings
        probes = np.stack([self._check_embedding(f) for f in faces])
        results = index.identify(probes, model_id=self.model_id, threshold=tau, k=1,
                                 margin=self.margin)
        for i, res in enumerate(results):
            pid = res.person_id
            if pid is not None and names.get(pid) != key:
                warnings.append(f"face {i + 1} already matches {names.get(pid, pid)!r} "
                                f"(score {res.best_score:.3f} >= {tau:.3f})")
        return warnings

    # ------------------------------------------------------------------ decisions
    @_serialised
    def verify(
        self,
        name: str,
        probe: ImageInput | FaceEmbedding,
        *,
        scorer: str = DISTANCE,
        threshold: float | None = None,
        log_event: bool = True,
        face: int | None = None,
        largest: bool = False,
    ) -> VerifyResult:
        """Is the face in ``probe`` the person ``name``? Best-template score against τ
        (``match`` when ``score >= threshold``). An image with several faces needs
        ``face=N`` (1-based, ``recognize``'s order) or ``largest=True``, else
        :class:`MultipleFaces`. ``log_event=False`` skips the event row (live camera loops
        that decide over several frames)."""
        key = normalize_name(name)
        scorer_obj = self._scorer(scorer)
        tau = self._resolve_threshold(scorer, threshold)
        face, n_faces, number = self._probe_face(probe, face=face, largest=largest)
        emb = self._check_embedding(face)
        with self._read("verify") as (s, repo):
            person = repo.get_person(key)
            pid = int(person.id)
            index = self._verify_index(s, repo, person)
        if pid not in set(index.people().tolist()):
            raise GalleryError(f"{key!r} has no templates to compare with; enrol them first")
        v = index.verify(pid, emb, model_id=self.model_id, threshold=tau, scorer=scorer_obj)
        if log_event and not self.read_only:
            with self._write("verify") as (_, repo):
                repo.log_event("verify", "match" if v.match else "no match", person=key,
                               score=v.score, threshold=tau, scorer=scorer,
                               model_id=self.model_id)
        return VerifyResult(key, v.match, v.score, tau, scorer, tuple(face.detection.box),
                            n_faces, number)

    @_serialised
    def recognize(
        self,
        image_or_faces: ImageInput | FaceEmbedding | Sequence[FaceEmbedding],
        *,
        top_k: int = 5,
        scorer: str = DISTANCE,
        threshold: float | None = None,
        log_event: bool = True,
    ) -> list[RecognizedFace]:
        """Identify every face of an image/frame (or of given faces) against the gallery.

        One result per face, in the pipeline's order. ``log_event=False`` skips the event
        rows (live camera loops).
        """
        if top_k < 1:
            raise ValueError("top_k must be at least 1")
        scorer_obj = self._scorer(scorer)
        tau = self._resolve_threshold(scorer, threshold)
        faces: list[FaceEmbedding]
        if _is_face(image_or_faces):
            faces = [image_or_faces]  # type: ignore[list-item]
        elif isinstance(image_or_faces, list | tuple) and all(_is_face(f) for f in image_or_faces):
            faces = list(image_or_faces)
        else:
            faces = self._analyze(image_or_faces)  # type: ignore[arg-type]
        if not faces:
            return []
        probes = np.stack([self._check_embedding(f) for f in faces])
        if self._server is not None and scorer_obj is None:
            results, names = self._server_identify(probes, tau, top_k)
        else:
            with self._read("recognize") as (s, repo):
                index = self._comparable_index(s, repo)
                names = dict(self._names)
            results = index.identify(probes, model_id=self.model_id, threshold=tau, k=top_k,
                                     scorer=scorer_obj, margin=self.margin)
        out: list[RecognizedFace] = []
        for face, res in zip(faces, results, strict=True):
            person = None if res.person_id is None else names.get(res.person_id)
            out.append(RecognizedFace(
                box=tuple(face.detection.box),  # type: ignore[arg-type]
                person=person,
                score=res.best_score,
                candidates=[(names.get(c.person_id, str(c.person_id)), c.score)
                            for c in res.candidates],
                ambiguous=res.ambiguous,
                threshold=tau,
                scorer=scorer,
            ))
        if log_event and not self.read_only:
            with self._write("recognize") as (_, repo):
                for r in out:
                    outcome = "unknown" if r.person is None else (
                        "ambiguous" if r.ambiguous else "known")
                    repo.log_event("recognize", outcome, person=r.person, score=r.score,
                                   threshold=tau, scorer=scorer, model_id=self.model_id)
        return out

    @_serialised
    def gallery_scores(self, scorer: str = DISTANCE,
                       max_templates: int = 4000) -> tuple[np.ndarray, np.ndarray]:
        """Similarity of every pair of stored templates (current model) and whether both are
        of the same person: (scores (M,) float32, same (M,) bool), M = n(n-1)/2 over at most
        ``max_templates`` templates (a seeded subset beyond that). For calibrating τ."""
        scorer_obj = self._scorer(scorer)
        with self._read("gallery scores") as (s, repo):
            index = self._comparable_index(s, repo)
        return index.pair_scores(scorer_obj, max_templates=max_templates)

    def pair_scores(
        self,
        pairs_file: str | Path,
        image_root: str | Path,
        scorer: str = DISTANCE,
        *,
        progress: ProgressFn | None = None,
        should_stop: StopFn | None = None,
        batch_size: int = 32,
    ) -> PairScores:
        """Scores of a verification protocol file (LFW ``pairs*.txt`` format, image paths
        under ``image_root``) with the current model, for calibrating τ on labelled pairs.

        Each distinct image is read once, its central face (the labelled person; see
        :func:`~faceapp.training.datasets.pick_central_face`) aligned and embedded in
        batches. A pair with an image that cannot be read or shows no usable face is
        left out and counted. ``should_stop()`` is polled between batches (then
        :class:`~faceapp.errors.FaceappError` "stopped"); ``progress(done, total)`` counts
        images. No database access: safe beside the live pages.

        Raises:
            FaceappError: unreadable or malformed pairs file; fewer than one genuine and one
                impostor pair left; stopped.
            CalibrationError: unknown scorer.
        """
        from faceapp.training.datasets import pick_central_face, read_pairs

        pipeline = self._require_pipeline()
        self._scorer(scorer)  # an unknown scorer fails before any image is read
        score_pairs = self._scorer_map()[scorer].score_pairs  # type: ignore[attr-defined]
        pairs = read_pairs(pairs_file, image_root)
        paths = sorted({p.a for p in pairs} | {p.b for p in pairs})
        row: dict[Path, int] = {}
        crops: list[np.ndarray] = []
        problems: list[tuple[str, str]] = []
        embeddings: list[np.ndarray] = []
        if progress is not None:
            progress(0, len(paths))
        for start in range(0, len(paths), max(1, batch_size)):
            if should_stop is not None and should_stop():
                raise FaceappError(f"{pairs_file}: scoring stopped")
            for path in paths[start : start + batch_size]:
                try:
                    image = load_image(path)
                except InvalidImage as err:
                    problems.append((str(path), err.reason))
                    continue
                face = pick_central_face(pipeline.detect(image), image.shape)
                if face is None:
                    problems.append((str(path), "no face"))
                    continue
                row[path] = len(row)
                crops.append(pipeline.align(image, [face])[0].crop)
            if crops:
                embeddings.append(np.asarray(pipeline.embed_crops(np.stack(crops)), dtype=np.float32))
                crops = []
            if progress is not None:
                progress(min(start + batch_size, len(paths)), len(paths))
        kept = [p for p in pairs if p.a in row and p.b in row]
        same = np.asarray([p.same for p in kept], dtype=bool)
        if not same.any() or same.all():
            raise FaceappError(
                f"{pairs_file}: {int(same.sum())} genuine and {int((~same).sum())} impostor pairs "
                f"with a face in both images: both kinds are needed"
            )
        emb = np.concatenate(embeddings)
        ia = np.asarray([row[p.a] for p in kept])
        ib = np.asarray([row[p.b] for p in kept])
        scores = np.asarray(score_pairs(emb[ia], emb[ib]), dtype=np.float64)
        return PairScores(scores, same, len(pairs) - len(kept), len(paths), tuple(problems))

    # ------------------------------------------------------------------ people
    @_serialised
    def list_people(self) -> list[PersonSummary]:
        """Everyone in the gallery, by name."""
        with self._read("list people") as (s, repo):
            rows = repo.people()
            thumbs = repo.crops([r.first_template_id for r in rows
                                 if r.first_template_id is not None])
            expiry = privacy.expiries(s, privacy.load_policy(s))
        return [
            PersonSummary(r.id, r.name, r.n_templates, r.created,
                          thumbs.get(r.first_template_id, b"") if r.first_template_id else b"",
                          expiry.get(r.id))
            for r in rows
        ]

    @_serialised
    def people_names(self) -> list[str]:
        """The names of everyone in the gallery, sorted (no thumbnails: cheap for 10⁵ people)."""
        with self._read("list names") as (_, repo):
            return sorted(repo.person_names().values())

    @_serialised
    def person_templates(self, name: str) -> list[TemplateSummary]:
        """The templates of ``name`` with their crops, oldest first."""
        with self._read("person templates") as (_, repo):
            person = repo.get_person(name)
            rows = repo.templates_of(person)
            crops = repo.crops([t.id for t in rows])
            return [
                TemplateSummary(int(t.id), crops.get(t.id, b""), t.source, t.quality, t.created,
                                t.model_id)
                for t in rows
            ]

    @_serialised
    def rename_person(self, old: str, new: str) -> str:
        """Rename a person; returns the stored (normalised) new name."""
        with self._write("rename") as (s, repo):
            synced = self._index is not None and current_generation(s) == self._gen
            person = repo.rename_person(old, new)
            pid, stored = int(person.id), person.name
            repo.log_event("rename", "renamed", person=stored,
                           detail=json.dumps({"from": normalize_name(old), "to": stored}))
            new_gen = current_generation(s)
        if synced:
            self._names[pid] = stored
            self._gen = new_gen
        else:
            self._invalidate()
        self._templates_changed()
        return stored

    @_serialised
    def delete_person(self, name: str) -> int:
        """Delete a person with all their templates and crops; returns the templates removed.
        See :meth:`erase_person` (the same, with its receipt)."""
        return self.erase_person(name).templates

    @_serialised
    def erase_person(self, name: str, receipt: str | os.PathLike[str] | None = None
                     ) -> DeletionReceipt:
        """Delete a person with their templates, crops and snapshot entries, and make the
        bytes leave the disk (``secure_delete``, ``VACUUM``, WAL checkpoint ``TRUNCATE``;
        snapshots deleted, rewritten later without them). Returns the receipt, also written
        as JSON (0600) to ``receipt`` when given (its folder is checked first)."""
        if receipt is not None:
            folder = Path(receipt).expanduser().resolve().parent
            if not folder.is_dir() or not os.access(folder, os.W_OK):
                raise GalleryError(f"{receipt}: cannot write the receipt there; nothing deleted")
        with self._write("delete") as (s, repo):
            synced = self._index is not None and current_generation(s) == self._gen
            key = normalize_name(name)
            person = repo.get_person(key)
            template_ids = repo.template_ids_of(person.id)
            crops = repo.count_crops(template_ids)
            uid = gallery_uuid(s)
            pid, n = repo.delete_person(key)
            repo.log_event("delete", "deleted", person=key, detail=json.dumps({"templates": n}))
            new_gen = current_generation(s)
        if synced and self._index is not None:
            self._index.remove_person(pid)
            self._names.pop(pid, None)
            self._gen = new_gen
        else:
            self._invalidate()
        storage = self._purge()
        ids = "\n".join([f"person:{pid}", *(f"template:{t}" for t in template_ids)])
        result = DeletionReceipt(
            person=key, deleted_at=datetime.now(UTC), gallery=self._where, gallery_uuid=uid,
            templates=n, crops=crops,
            removed_ids_sha256=hashlib.sha256(ids.encode("utf-8")).hexdigest(),
            storage=storage, encrypted=self._at_rest.encrypted,
        )
        if receipt is not None:
            _write_private(Path(receipt), json.dumps(result.to_dict(), indent=1).encode("utf-8"),
                           "the deletion receipt")
        return result

    def _purge(self) -> dict[str, object]:
        """After a committed deletion: snapshots removed, deleted bytes purged from the file."""
        removed = remove_snapshots(self._url)
        self._snapshot_gen = -1
        with translate_errors(f"{self._where} (purge)"):
            report = purge_deleted(self._engine)
        return report.to_dict() | {"snapshots_removed": removed}

    @_serialised
    def delete_template(self, template_id: int) -> None:
        """Delete one template (and its crop)."""
        with self._write("delete template") as (s, repo):
            synced = self._index is not None and current_generation(s) == self._gen
            pid = repo.delete_template(template_id)
            name = repo.get_person_by_id(pid).name
            repo.log_event("delete", "template deleted", person=name,
                           detail=json.dumps({"template": template_id}))
            new_gen = current_generation(s)
        if synced and self._index is not None:
            self._index.remove_templates([template_id])
            self._gen = new_gen
        else:
            self._invalidate()
        self._purge()

    @_serialised
    def events(self, limit: int = 100, kind: str | None = None) -> list[dict[str, object]]:
        """The latest events, newest first, as dicts."""
        with self._read("events") as (_, repo):
            return [
                {"time": e.time.isoformat(), "kind": e.kind, "person": e.person,
                 "outcome": e.outcome, "score": e.score, "threshold": e.threshold,
                 "scorer": e.scorer, "model_id": e.model_id, "detail": e.detail}
                for e in repo.events(limit, kind)
            ]

    # ------------------------------------------------------------------ export / import
    @_serialised
    def export_gallery(self, path: str | os.PathLike[str], *, passphrase: str) -> GalleryTransfer:
        """Write every person with their templates (embeddings, crops, sources, quality,
        model ids) to an encrypted bundle (a JSON document sealed with ``passphrase``, see
        :mod:`faceapp.gallery.bundle`), created 0600 and atomically."""
        people_out: list[dict[str, object]] = []
        n_templates = 0
        with self._read("export") as (_, repo):
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
        _write_private(Path(path), seal_bundle(json.dumps(doc).encode("utf-8"), passphrase,
                                               KdfParams.from_env()))
        with self._write("export") as (_, repo):
            repo.log_event("export", "exported",
                           detail=json.dumps({"path": str(path), "people": len(people_out),
                                              "templates": n_templates}))
        return GalleryTransfer(len(people_out), n_templates)

    @_serialised
    def import_gallery(
        self, path: str | os.PathLike[str], *, passphrase: str,
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
        return retry_when_locked(lambda: self._import_people(path, people, on_conflict),
                                 f"import of {path}")

    def _import_people(self, path: str | os.PathLike[str],
                       people: list[tuple[str, list[NewTemplate]]],
                       on_conflict: ConflictPolicy) -> GalleryTransfer:
        """One write transaction: everything or nothing."""
        skipped: list[str] = []
        n_people = n_templates = 0
        with self._write("import") as (s, repo):
            known: dict[str, set[int] | int] = dict(gallery_dims(s))
            if self._pipeline is not None:
                known[self._pipeline.model_id] = self._require_pipeline_dim()
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
                                              "templates": n_templates, "skipped": skipped}))
        self._invalidate()
        self._templates_changed()
        return GalleryTransfer(n_people, n_templates, skipped)

    # ------------------------------------------------------------------ re-embedding
    @_serialised
    def reembed(
        self,
        progress: ProgressFn | None = None,
        should_stop: StopFn | None = None,
        *,
        batch_size: int = 32,
    ) -> ReembedReport:
        """Recompute, from their stored face pictures, every template made by another model.

        A template's crop for the current model is derived from its stored picture (a
        256-px face image with its landmarks, :mod:`faceapp.vision.face_image`); templates
        stored by older versions only have the previous model's small aligned crop, from
        which the crop is re-derived as well and counted in ``from_old_crops``.
        Works in batches, each committed on its own (a template is always consistent: its
        embedding and ``model_id`` change together), so it can be stopped
        (``should_stop()`` is polled between batches) and resumed. ``progress(done, total)``
        is called after each batch. Templates without a crop, or whose stored picture cannot
        be decoded (each logged with its id and person), are skipped, the others recomputed,
        and the skipped ones reported by a :class:`GalleryError` at the end.
        """
        pipeline = self._require_pipeline()
        model_id = pipeline.model_id
        with self._read("reembed") as (_, repo):
            todo = repo.stale_templates(model_id)
        total = len(todo)
        done = old = 0
        missing: list[int] = []
        unusable: list[str] = []
        if progress is not None:
            progress(0, total)
        for start in range(0, total, max(1, batch_size)):
            if should_stop is not None and should_stop():
                logger.info("reembed stopped after %d of %d templates", done, total)
                break
            ids = [tid for tid, _ in todo[start : start + batch_size]]
            with self._write("reembed") as (s, repo):
                crops = repo.crops(ids)
                ready = [t for t in ids if t in crops]
                missing.extend(t for t in ids if t not in crops)
                decoded: dict[int, FaceImage] = {}
                for tid in ready:
                    try:
                        decoded[tid] = decode_face_image(crops[tid])
                    except InvalidImage as err:  # this one is skipped, the others go on
                        who = _template_owner(s, tid)
                        unusable.append(f"template {tid} of {who!r} ({err.reason})")
                        logger.warning("reembed: skipping template %d of %r: its crop %s",
                                       tid, who, err.reason)
                ready = [t for t in ready if t in decoded]
                if ready:
                    chips, n_old = self._chips_for_model([decoded[t] for t in ready])
                    embs = np.asarray(pipeline.embed_crops(chips), dtype=np.float32)
                    for tid, emb in zip(ready, embs, strict=True):
                        repo.set_template_embedding(tid, model_id, emb)
                    repo.session.flush()
                    bump_generation(repo.session)
                    repo.log_event("reembed", "recomputed", model_id=model_id,
                                   detail=json.dumps({"templates": len(ready), "from_old_crops": n_old}))
                    old += n_old
            done += len(ready)
            if progress is not None:
                progress(min(start + batch_size, total), total)
        self._invalidate()
        if done:
            self._templates_changed()
        problems = []
        if missing:
            problems.append(f"{len(missing)} template(s) have no stored crop and cannot be "
                            f"recomputed (ids {missing[:10]}); delete and re-enrol them")
        if unusable:
            problems.append(f"{len(unusable)} template(s) were skipped: "
                            + "; ".join(unusable[:10]) + (" ..." if len(unusable) > 10 else "")
                            + "; delete and re-enrol them")
        if problems:
            raise GalleryError(f"recomputed {done} of {total} template(s); " + "; ".join(problems))
        return ReembedReport(recomputed=done, from_old_crops=old, model_id=model_id)

    def _chips_for_model(self, faces: Sequence[FaceImage]) -> tuple[np.ndarray, int]:
        """(N, S, S, 3) uint8 crops for the loaded model from decoded stored pictures, and how
        many came from old aligned crops. A pipeline without an alignment template (a
        stand-in) gets the stored pixels, resized to its input size."""
        template = getattr(self._pipeline, "template", None)
        n_old = sum(is_old_crop(f) for f in faces)
        if template is None:
            size = self._model_input_size()
            return np.stack([_resized(f.image, size) for f in faces]), n_old
        return np.stack([chip_from_face_image(f, template) for f in faces]), n_old

    def _model_input_size(self) -> int | None:
        model = getattr(self._pipeline, "model", None)
        encoder = getattr(model, "encoder", None)
        size = getattr(encoder, "input_size", None)
        return int(size) if size else None


def gallery_passphrase_needed(db_url: str | None = None) -> Literal["none", "unlock", "new"]:
    """Would :meth:`FaceService.open` need a typed passphrase for this gallery? ``unlock``
    (it is protected by one), ``new`` (it will be created and no OS keyring exists) or
    ``none`` (keyring, ``$FACEAPP_PASSPHRASE``, plaintext or not a SQLite file)."""
    path = sqlite_path(resolve_paths(db=db_url).db_url)
    return "none" if path is None else passphrase_needed(path)


# ---------------------------------------------------------------------- file helpers
def _template_owner(session: Session, template_id: int) -> str:
    """Name of the person a template belongs to (for messages)."""
    from faceapp.gallery.orm import FaceTemplate

    row = session.get(FaceTemplate, template_id)
    return row.person.name if row is not None and row.person is not None else "?"


def _resized(crop: np.ndarray, size: int | None) -> np.ndarray:
    """(H, W, 3) uint8 -> (S, S, 3), resized to the model's input size when it differs."""
    if size is not None and crop.shape[:2] != (size, size):
        from PIL import Image

        crop = np.asarray(Image.fromarray(crop).resize((size, size), Image.BILINEAR))
    return crop


def _write_private(path: Path, data: bytes, what: str = "the export") -> None:
    """Write ``data`` to ``path`` atomically with mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    try:
        fd = os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise GalleryError(f"{path}: cannot write {what} ({err})") from err


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


__all__ = [
    "Consent",
    "ConsentRequired",
    "DeletionReceipt",
    "EnrollReport",
    "ExpiredPerson",
    "FaceService",
    "GalleryTransfer",
    "PersonSummary",
    "PrivacyPolicy",
    "RecognizedFace",
    "TemplateSummary",
    "VerifyResult",
    "gallery_passphrase_needed",
]
