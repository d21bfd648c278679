"""Where the live loop's 1:K decisions come from (:class:`Matcher`): the service's in-memory
index and τ (:class:`CacheMatcher`, no database round trip per frame), a given index
(:class:`IndexMatcher`), or none (:class:`NoMatcher`: Enroll and Verify decide themselves).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Protocol

import numpy as np

from faceapp.errors import FaceappError, ModelMismatch
from faceapp.gallery.matching import (
    DEFAULT_AMBIGUITY_MARGIN,
    GalleryIndex,
    PairScorer,
)
from faceapp.nn.open_set import RAW_SCORES, ScoreNormaliser
from faceapp.nn.pipeline import FaceEmbedding
from faceapp.nn.scoring import DISTANCE
from faceapp.services.decisions import identification_threshold, recognized
from faceapp.services.index_cache import IndexView
from faceapp.services.results import RecognizedFace
from faceapp.services.thresholds import finite_threshold

if TYPE_CHECKING:
    from faceapp.services import FaceService

log = logging.getLogger(__name__)


class Matcher(Protocol):
    """1:K decisions for a batch of analysed faces, and the τ they are judged against."""

    @property
    def margin(self) -> float:
        """Ambiguity margin (a tie tolerance on the score scale, not a threshold)."""
        ...

    def threshold(self) -> float:
        """The τ in effect now (read on every frame: no database access)."""
        ...

    def set_threshold(self, value: float | None) -> None:
        """Use ``value`` as τ from now on (``None``: back to the default τ)."""
        ...

    def take_changes(self) -> bool:
        """Did the gallery change since the last call (stored decisions are then stale)?"""
        ...

    def match(self, faces: Sequence[FaceEmbedding]) -> list[RecognizedFace]:
        """One result per face, in order (candidates best first, τ of the decision)."""
        ...

    def close(self) -> None:
        """Stop background work (idempotent)."""
        ...


class CacheMatcher:
    """Matches against a service's in-memory index with the service's τ: **no database
    round trip per frame**, and never waits for the service lock (a running ``reembed``).

    * the index is the service's :class:`~faceapp.services.index_cache.IndexCache`: this
      service's own changes (enrol, rename, delete) reach it at once; changes made by
      another process are picked up by a background check of the gallery's generation at
      most every ``refresh_s`` seconds (a failed check is logged once and leaves the last
      index answering);
    * τ is the service's :class:`~faceapp.services.thresholds.ThresholdPolicy` (a slider on
      any page, the Calibrate page, the CLI: one value; without one, its 1:K τ for the
      number of people of the cache's latest view, so it follows enrolments and deletions),
      unless ``threshold`` is given (an argument, ``--threshold``).

    With in-server search (PostgreSQL + pgvector) the database *is* the index: each batch is
    then one search in the server (``FaceService.recognize``).
    """

    def __init__(self, service: FaceService, *, top_k: int = 3, scorer: str = DISTANCE,
                 threshold: float | None = None, refresh_s: float = 1.0) -> None:
        self._service = service
        self._core = service.core
        self.top_k = top_k
        self.scorer = scorer
        self._scorer_obj = self._core.thresholds.index_scorer(scorer)
        self._fixed = None if threshold is None else finite_threshold(threshold)
        self.refresh_s = float(refresh_s)
        self._changes: threading.Event | None = self._core.cache.subscribe()
        self._checked = time.monotonic()
        self._check: Future[None] | None = None
        self._pool: ThreadPoolExecutor | None = None
        self.problem = ""
        """The last background check's failure ("" when it succeeded)."""

    @property
    def margin(self) -> float:
        return self._core.margin

    def threshold(self) -> float:
        if self._fixed is not None:
            return self._fixed
        return identification_threshold(self._core, self.scorer)  # in memory: no SQL

    def set_threshold(self, value: float | None) -> None:
        if self._fixed is not None:
            if value is not None:
                self._fixed = finite_threshold(value)
            return
        self._core.thresholds.use(self.scorer, value)

    def take_changes(self) -> bool:
        if self._changes is None:  # used again after close: follow the cache again
            self._changes = self._core.cache.subscribe()
            return True
        changed = self._changes.is_set()
        self._changes.clear()
        return changed

    def match(self, faces: Sequence[FaceEmbedding]) -> list[RecognizedFace]:
        if not faces:
            return []
        core = self._core
        if core.server is not None:
            return self._service.recognize(list(faces), top_k=self.top_k, scorer=self.scorer,
                                           threshold=self._fixed, log_event=False)
        view = core.cache.latest()
        if view is None:  # first batch, or after a change the cache could not apply in place
            view = self._sync()
            if self._changes is not None:
                self._changes.clear()  # this batch is decided on the new view already
        else:
            self._check_later()
        probes = np.stack([core.embedding_of(f) for f in faces])
        tau = self._fixed if self._fixed is not None else core.thresholds.identification(
            self.scorer, view.n_people)
        results = core.cache.identify(view, probes, threshold=tau, k=self.top_k,
                                      scorer=self._scorer_obj, margin=core.margin)
        return [recognized(tuple(f.detection.box), r, view.names, tau, self.scorer)  # type: ignore[arg-type]
                for f, r in zip(faces, results, strict=True)]

    def close(self) -> None:
        if self._changes is not None:  # one recognizer per stream: no listener left behind
            self._core.cache.unsubscribe(self._changes)
            self._changes = None
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _sync(self) -> IndexView:
        core = self._core
        with core.uow.read("live recognition") as (s, repo):
            view = core.cache.sync(s, repo)
        self._checked = time.monotonic()
        return view

    def _check_later(self) -> None:
        """Start a background generation check when the last one is ``refresh_s`` old."""
        if time.monotonic() - self._checked < self.refresh_s or (
                self._check is not None and not self._check.done()):
            return
        self._checked = time.monotonic()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="faceapp-live-sync")
        self._check = self._pool.submit(self._background_sync)

    def _background_sync(self) -> None:
        try:
            self._sync()
        except FaceappError as err:
            if str(err) != self.problem:
                log.warning("live recognition keeps its last gallery index: %s", err)
            self.problem = str(err)
        else:
            self.problem = ""


class NoMatcher:
    """No 1:K matching: faces are tracked and embedded only (Enroll and Verify decide on
    ``LiveFace.face`` themselves). Every face gets an empty result; τ is NaN (accepts none)."""

    margin = 0.0

    def threshold(self) -> float:
        return math.nan

    def set_threshold(self, value: float | None) -> None:
        pass

    def take_changes(self) -> bool:
        return False

    def match(self, faces: Sequence[FaceEmbedding]) -> list[RecognizedFace]:
        return [_no_match(f) for f in faces]

    def close(self) -> None:
        pass


class IndexMatcher:
    """Matches against an in-memory :class:`GalleryIndex` (no database).

    Args:
        index: templates of one model.
        names: person id -> display name.
        threshold: τ (from calibration; accept when ``score >= threshold``).
        scorer: ``None`` for the cosine fast path, else a pair scorer (e.g. the binary head).
    """

    def __init__(
        self,
        index: GalleryIndex,
        names: Mapping[int, str],
        *,
        threshold: float,
        top_k: int = 3,
        margin: float = DEFAULT_AMBIGUITY_MARGIN,
        scorer: PairScorer | None = None,
        normaliser: ScoreNormaliser = RAW_SCORES,
    ) -> None:
        self.index = index
        self.names = dict(names)
        self.normaliser = normaliser
        self._default_tau = finite_threshold(threshold)
        self._tau = self._default_tau
        self.top_k = top_k
        self._margin = float(margin)
        self.scorer = scorer

    @property
    def margin(self) -> float:
        return self._margin

    def threshold(self) -> float:
        return self._tau

    def set_threshold(self, value: float | None) -> None:
        self._tau = self._default_tau if value is None else finite_threshold(value)

    def take_changes(self) -> bool:
        return False  # the index is the caller's; it tells the recognizer itself

    def close(self) -> None:
        pass

    def match(self, faces: Sequence[FaceEmbedding]) -> list[RecognizedFace]:
        if not faces:
            return []
        for f in faces:
            if f.model_id != self.index.model_id:
                raise ModelMismatch(
                    f"face analysed by model {f.model_id}, gallery index holds model {self.index.model_id}"
                )
        probes = np.stack([np.asarray(f.embedding, dtype=np.float32) for f in faces])
        tau = self._tau
        results = self.index.identify(probes, model_id=self.index.model_id, threshold=tau,
                                      k=self.top_k, scorer=self.scorer, margin=self._margin,
                                      normaliser=self.normaliser if self.scorer is None else RAW_SCORES)
        name = self.scorer.name if self.scorer is not None else DISTANCE
        return [recognized(tuple(f.detection.box), r, self.names, tau, name)  # type: ignore[arg-type]
                for f, r in zip(faces, results, strict=True)]


def _no_match(face: FaceEmbedding) -> RecognizedFace:
    """The decision of a loop without a matcher: no candidate, Unknown."""
    return RecognizedFace(
        box=tuple(face.detection.box),  # type: ignore[arg-type]
        person=None,
        score=-math.inf,
        candidates=[],
        ambiguous=False,
    )
