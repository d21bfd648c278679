"""The one API the CLI and the GUI share: enrol, verify, recognise, manage the gallery.

Qt-free. Every method raises :class:`~faceapp.errors.FaceappError` subclasses for expected
failures and returns frozen dataclasses (:mod:`faceapp.services.results`).

Layout: :class:`FaceService` is a facade; each use case is one module of this package, a
function of the service's :class:`~faceapp.services.core.Core` (gallery, model, τ, index):

* :mod:`~faceapp.services.unit_of_work` — engine, read/write sessions;
* :mod:`~faceapp.services.index_cache` — the in-memory 1:K index, kept in step with the
  gallery's generation (:mod:`~faceapp.services.server_index`: search inside PostgreSQL);
* :mod:`~faceapp.services.thresholds` — the τ policy, one place for every decision;
* :mod:`~faceapp.services.enrollment`, :mod:`~faceapp.services.decisions` (verify,
  recognize), :mod:`~faceapp.services.calibration`, :mod:`~faceapp.services.people`,
  :mod:`~faceapp.services.transfer` (export/import), :mod:`~faceapp.services.maintenance`
  (reembed);
* :mod:`~faceapp.services.live` — the live loop of every camera page.

Decisions: scores are similarities and a comparison matches when ``score >= τ``
(:func:`faceapp.nn.scoring.accepts`); a person's score is their best template's; τ is the
service's :class:`~faceapp.services.thresholds.ThresholdPolicy` (argument > user > model
calibration, never a constant; without a user τ, 1:K uses a stricter calibration point as
the gallery grows); templates of another model are never compared
(:class:`~faceapp.errors.ModelMismatch` until :meth:`FaceService.reembed`). Each unit of work
is one transaction and appends an ``event`` row.

Threads
-------
A service may be used from **one worker thread at a time** (the GUI's task runner; the CLI's
main thread). Public methods are serialised by an internal lock, so an accidental second
caller waits instead of corrupting state, but long calls (``reembed``) then block it. The
live loop does not take that lock: it reads the index and τ from memory
(:class:`~faceapp.services.live.CacheMatcher`).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy.engine import Engine

from faceapp.errors import FaceappError
from faceapp.gallery.keys import PromptFn
from faceapp.gallery.matching import DEFAULT_AMBIGUITY_MARGIN, PairScorer
from faceapp.gallery.privacy import Consent, ConsentRequired, PrivacyPolicy
from faceapp.gallery.server_search import ServerSearch
from faceapp.gallery.validation import MAX_IMPORT_BYTES
from faceapp.nn.open_set import RAW_SCORES, ScoreNormaliser
from faceapp.nn.scoring import DISTANCE, accepts
from faceapp.services import calibration, decisions, enrollment
from faceapp.services.admin import GalleryAdmin
from faceapp.services.base import serialised as _serialised
from faceapp.services.core import Core
from faceapp.services.core import analyze as analyze_image
from faceapp.services.index_cache import IndexCache
from faceapp.services.opening import gallery_passphrase_needed
from faceapp.services.protocols import AnalysedFace, Pipeline
from faceapp.services.results import (
    DeletionReceipt,
    EnrollReport,
    ExpiredPerson,
    GalleryTransfer,
    PairScores,
    PersonSummary,
    RecognizedFace,
    ReembedReport,
    TemplateSummary,
    VerifyResult,
)
from faceapp.services.server_index import (
    SEARCH_MODES,
    SERVER_SEARCH_MIN_TEMPLATES,
    ServerIndex,
    choose_server_search,
)
from faceapp.services.thresholds import DEFAULT_POINT, ThresholdPolicy
from faceapp.services.transfer import EXPORT_FORMAT, EXPORT_VERSION, ConflictPolicy
from faceapp.services.unit_of_work import UnitOfWork
from faceapp.vision.images import ImageInput

if TYPE_CHECKING:
    from faceapp.nn.calibration import Calibration

logger = logging.getLogger(__name__)

FaceEmbedding = AnalysedFace
"""What the services accept as an analysed face (``faceapp.nn.pipeline.FaceEmbedding``)."""
ProgressFn = Callable[[int, int], None]
StopFn = Callable[[], bool]

class FaceService(GalleryAdmin):
    """Enrolment, verification, recognition and gallery management.

    Args:
        engine: a gallery engine from :func:`faceapp.gallery.open_database`.
        pipeline: a ``FacePipeline`` (detector + model; any :class:`Pipeline`); ``None`` for
            gallery-only use (listing, renaming, export...), in which case face operations
            raise :class:`ModelError`.
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
        pipeline: Pipeline | None = None,
        calibration: Calibration | None = None,
        *,
        scorers: dict[str, PairScorer] | None = None,
        margin: float = DEFAULT_AMBIGUITY_MARGIN,
        operating_point: str = DEFAULT_POINT,
        owns_engine: bool = False,
        calibration_problem: str | None = None,
        server_search: ServerSearch | None = None,
        normaliser: ScoreNormaliser = RAW_SCORES,
    ) -> None:
        uow = UnitOfWork(engine, owns_engine=owns_engine)
        policy = cache = server = None
        if pipeline is not None:
            model_id = pipeline.model_id
            if calibration is not None and calibration.model_id != model_id:
                calibration_problem = (
                    f"the calibration file is for model {calibration.model_id}, the loaded model "
                    f"is {model_id} (run `faceapp calibrate`, or pass --threshold)")
                calibration = None
            if scorers is None:
                from faceapp.nn.scoring import scorers_for

                scorers = dict(scorers_for(pipeline.model))  # type: ignore[arg-type]
            policy = ThresholdPolicy(uow, model_id, scorers, calibration,
                                     problem=calibration_problem, operating_point=operating_point)
            cache = IndexCache(uow, model_id, pipeline.embedding_dim, normaliser)
            if server_search is not None:
                server = ServerIndex(uow, server_search, model_id, normaliser)
        super().__init__(Core(uow, pipeline, policy, cache, server, float(margin)))

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
        ``None`` reads ``FACEAPP_SEARCH`` (default ``auto``). The detector runs with the
        model's own settings (:func:`faceapp.nn.pipeline.detector_config_for`), the same as
        evaluation and calibration.
        """
        from faceapp.services.opening import open_service

        return open_service(cls, db_url, model_path, device=device, load_model=load_model,
                            key_prompt=key_prompt, search=search)

    def close(self) -> None:
        """Release the database (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._core.cache_or_none is not None:
                with contextlib.suppress(FaceappError):
                    self._core.cache_or_none.save_snapshot_if_useful()
                self._core.cache_or_none.invalidate()
            self._core.uow.close()

    def __enter__(self) -> FaceService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def engine(self) -> Engine:
        return self._core.uow.engine

    @property
    def read_only(self) -> bool:
        """Opened read-only: searches log no events and save no snapshots; writes fail."""
        return self._core.uow.read_only

    @property
    def margin(self) -> float:
        """Ambiguity margin of recognition (a tie tolerance, not a threshold)."""
        return self._core.margin

    @property
    def model_id(self) -> str:
        return self._core.model_id

    @property
    def has_model(self) -> bool:
        return self._core.pipeline_or_none is not None

    @property
    def pipeline(self) -> Pipeline:
        """The loaded pipeline (detector + model), e.g. for :mod:`faceapp.services.live`
        (raises :class:`ModelError` when the service has no model)."""
        return self._core.pipeline

    @property
    def thresholds(self) -> ThresholdPolicy:
        """The τ policy (in memory once read; safe to read from any thread, never blocked by
        a long service call). Raises :class:`ModelError` without a model."""
        return self._core.thresholds

    # ------------------------------------------------------------------ analysis, τ
    @_serialised
    def load_index(self) -> int:
        """Load the search index of the current model now (from its snapshot when valid)
        rather than at the first search; returns its number of templates. For start-up."""
        core = self._core
        if core.server is not None:
            return core.server.count()
        with core.uow.read("load index") as (s, repo):
            return len(core.cache.sync(s, repo).index)

    @_serialised
    def threshold(self, scorer: str = DISTANCE, point: str | None = None) -> float:
        """τ for ``scorer``. ``point=None``: the user's τ if any, else the calibration
        (its override, else the operating point); an explicit ``point`` (``far_0.01``,
        ``far_0.001``, ``eer``) reads that calibrated value. Raises CalibrationError."""
        policy = self._core.thresholds
        return policy.current(scorer) if point is None else policy.calibrated(scorer, point)

    @_serialised
    def set_threshold(self, scorer: str, value: float | None) -> None:
        """Store a user-chosen τ for ``scorer`` and the current model in the gallery
        database (``None`` removes it, returning to the calibration file); every decision
        (calls and live loops) uses it at once."""
        self._core.thresholds.store(scorer, value)

    def use_threshold(self, scorer: str, value: float | None) -> float | None:
        """Use ``value`` as τ of ``scorer`` for the rest of this session without storing it
        (a slider; ``None``: back to the stored or calibrated τ); every decision (calls and
        live loops) uses it at once. Not serialised: it never waits for a long call."""
        self._check_open()
        return self._core.thresholds.use(scorer, value)

    def identification_threshold(self, scorer: str = DISTANCE) -> float:
        """The τ a 1:K search (:meth:`recognize`, the live loops) uses now: the user's τ if
        any, else the calibration's point for the number of people in the gallery index
        (:func:`faceapp.services.thresholds.identification_point`; the 1:1 :meth:`threshold`
        until the index is loaded). In memory, not serialised: for the GUI thread and a
        relabel after the gallery changed. Raises CalibrationError."""
        self._check_open()
        return decisions.identification_threshold(self._core, scorer)

    def accepts(self, score: float, scorer: str = DISTANCE) -> bool:
        """Does ``score`` accept under the τ in effect for ``scorer``? (see :meth:`use_threshold`)."""
        return accepts(score, self._core.thresholds.current(scorer))

    # ------------------------------------------------------------------ use cases
    @_serialised
    def analyze(self, image: ImageInput) -> list[FaceEmbedding]:
        """Every face of an image or an RGB (H, W, 3) uint8 frame, best detection first
        (``[]`` when there is none)."""
        return analyze_image(self._core, image)

    @_serialised
    def available_scorers(self) -> list[str]:
        """Scorer names of the loaded model (``distance`` first)."""
        return self._core.thresholds.names()

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
        """Enrol ``name`` from images (paths, bytes, PIL images or RGB frames): each image's
        one face (or, with ``largest``, its largest) that passes the quality gate is stored,
        all in one transaction; the others are reported in ``rejected``. An organisation's
        gallery needs ``consent`` for a new person. See :func:`faceapp.services.enrollment.enroll`."""
        return enrollment.enroll(self._core, name, images, largest=largest, create=create,
                                 consent=consent)

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
        return enrollment.enroll_faces(self._core, name, faces, sources, create=create,
                                       consent=consent)

    @_serialised
    def check_enrollment(self, name: str, faces: Sequence[FaceEmbedding]) -> list[str]:
        """Warnings before enrolling ``faces`` as ``name``: the name exists already, or a face
        already matches someone else (with their name and score). Empty when all is clear."""
        return enrollment.check_enrollment(self._core, name, faces)

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
        """Is the face in ``probe`` the person ``name``? Best-template score (cosine
        similarity through the model's score normaliser, when it has one) against τ
        (``match`` when ``score >= threshold``). An image with several faces needs
        ``face=N`` (1-based, ``recognize``'s order) or ``largest=True``, else
        :class:`MultipleFaces`. ``log_event=False`` skips the event row (live camera loops
        that decide over several frames)."""
        return decisions.verify(self._core, name, probe, scorer=scorer, threshold=threshold,
                                log_event=log_event, face=face, largest=largest)

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
        return decisions.recognize(self._core, image_or_faces, top_k=top_k, scorer=scorer,
                                   threshold=threshold, log_event=log_event)

    @_serialised
    def gallery_scores(self, scorer: str = DISTANCE,
                       max_templates: int = 4000) -> tuple[np.ndarray, np.ndarray]:
        """Similarity of every pair of stored templates (current model; scored as verify
        scores) and whether both are of the same person: (scores (M,) float32, same (M,)
        bool), M = n(n-1)/2 over at most ``max_templates`` templates (a seeded subset beyond
        that). For calibrating τ."""
        return calibration.gallery_scores(self._core, scorer, max_templates)

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
        """Scores of a labelled pairs file (LFW ``pairs*.txt`` format) with the current model,
        for calibrating τ; no database access. See :func:`faceapp.services.calibration.pair_scores`."""
        self._check_open()
        return calibration.pair_scores(self._core, pairs_file, image_root, scorer, progress=progress,
                                       should_stop=should_stop, batch_size=batch_size)

__all__ = [
    "DEFAULT_POINT",
    "DISTANCE",
    "EXPORT_FORMAT",
    "EXPORT_VERSION",
    "MAX_IMPORT_BYTES",
    "SEARCH_MODES",
    "SERVER_SEARCH_MIN_TEMPLATES",
    "AnalysedFace",
    "ConflictPolicy",
    "Consent",
    "ConsentRequired",
    "DeletionReceipt",
    "EnrollReport",
    "ExpiredPerson",
    "FaceService",
    "GalleryTransfer",
    "PairScores",
    "PersonSummary",
    "Pipeline",
    "PrivacyPolicy",
    "RecognizedFace",
    "ReembedReport",
    "TemplateSummary",
    "ThresholdPolicy",
    "VerifyResult",
    "choose_server_search",
    "gallery_passphrase_needed",
]
