"""The live loop itself: :class:`LiveRecognizer` (scheduling, tracking, embedding reuse).
"""

from __future__ import annotations

import logging
import math
import time
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from faceapp.errors import InvalidImage
from faceapp.gallery.matching import (
    Candidate,
    Identification,
)
from faceapp.nn.pipeline import FaceEmbedding
from faceapp.services.results import RecognizedFace
from faceapp.types import Box, Detection, Point
from faceapp.vision.alignment import align_face
from faceapp.vision.images import resize_max_side
from faceapp.vision.tracking import (
    IouTracker,
    Track,
    TrackUpdate,
    box_iou,
    iou_matrix,
    shape_change,
)

if TYPE_CHECKING:
    from faceapp.services import FaceService
from faceapp.services.live.config import FrameResult, LiveConfig, LiveFace, LiveStats, StageTimes
from faceapp.services.live.matchers import CacheMatcher, Matcher, NoMatcher
from faceapp.services.protocols import LivePipeline
from faceapp.vision.refine import LandmarkRefiner

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Decision:
    """What the last embedding of a track gave (scores kept so τ can change live)."""

    result: RecognizedFace
    frame: int
    box: Box
    landmarks: tuple[Point, ...]
    face: FaceEmbedding




class LiveRecognizer:
    """Frame-by-frame recognizer with detection scheduling, tracking and embedding reuse.

    Args:
        pipeline: detector + encoder (``FacePipeline``); its detector and model are used as
            they are (not copied), so they may be shared with a ``FaceService``.
        matcher: where 1:K decisions come from (:class:`CacheMatcher`,
            :class:`IndexMatcher`); ``None``: none (the faces are tracked and embedded,
            with no candidates: the Enroll and Verify pages decide on ``LiveFace.face``).
        config: scheduling and geometry (:class:`LiveConfig`).
        refiner: the tracking step; default: :meth:`LandmarkRefiner.create` on the
            detector's device (built only when tracking is on).
        executor: where background detections run (default: a one-thread pool of its own,
            created on first use and shut down by :meth:`close`); a caller's executor is
            used as given and not shut down (tests pass one that runs jobs when told).
    """

    def __init__(
        self,
        pipeline: LivePipeline,
        matcher: Matcher | None,
        config: LiveConfig = LiveConfig(),
        *,
        refiner: LandmarkRefiner | None = None,
        executor: Executor | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.matcher: Matcher = matcher if matcher is not None else NoMatcher()
        self.config = config
        if refiner is None and config.detect_every > 1:
            refiner = LandmarkRefiner.create(pipeline.detector_config.device)
        self.refiner = refiner
        thresholds = pipeline.detector_config.thresholds
        self._track_min_score = (
            float(config.track_min_score) if config.track_min_score is not None else float(thresholds[-1])
        )
        self.tracker = IouTracker(config.tracker)
        self._decisions: dict[int, _Decision] = {}
        self._frame = 0
        self._last_detect = -(10**9)
        self._detect_next = True
        self.stats = LiveStats()
        self._executor: Executor | None = executor
        self._owns_executor = executor is None
        self._pending: Future[list[Detection]] | None = None
        self._pending_start = 0.0  # perf_counter at the start of the frame being detected
        self._born: dict[int, float] = {}  # new track -> start time of its detection frame

    @classmethod
    def from_service(
        cls,
        service: FaceService,
        config: LiveConfig = LiveConfig(),
        *,
        refiner: LandmarkRefiner | None = None,
    ) -> LiveRecognizer:
        """A recognizer on the service's model, in-memory gallery index and τ
        (:class:`CacheMatcher`); ``config.threshold``, when set, is an argument τ that
        overrides the service's."""
        matcher = CacheMatcher(service, top_k=config.top_k, scorer=config.scorer,
                               threshold=config.threshold)
        return cls(service.pipeline, matcher, config, refiner=refiner)

    # ------------------------------------------------------------------ control
    @property
    def threshold(self) -> float:
        """The τ every decision is judged against now (the matcher's: for a service, the
        service's τ policy, shared with every page and call)."""
        return self.matcher.threshold()

    def set_threshold(self, value: float | None) -> None:
        """Change τ (``None``: back to the default); it applies from the next frame on, to
        stored decisions as well, and — for a service's matcher — everywhere else too."""
        if value is not None and not math.isfinite(float(value)):
            raise ValueError(f"threshold must be finite, got {value}")
        self.matcher.set_threshold(value)

    def reset(self) -> None:
        """Forget every track and decision (new camera, new video, gallery changed)."""
        self.tracker.reset()
        self._decisions.clear()
        self._frame = 0
        self._last_detect = -(10**9)
        self._detect_next = True
        self.stats = LiveStats()
        self._pending = None  # a detection still running belongs to the old stream
        self._born.clear()

    def close(self) -> None:
        """Stop the background threads (idempotent; ``process`` restarts them)."""
        self._pending = None
        self.matcher.close()
        if self._executor is not None and self._owns_executor:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def __enter__(self) -> LiveRecognizer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def forget_decisions(self) -> None:
        """Keep the tracks but embed every face again on the next frame (e.g. after the
        gallery changed: a person was enrolled, renamed or deleted)."""
        self._decisions.clear()

    # ------------------------------------------------------------------ one frame
    def process(self, frame: np.ndarray) -> FrameResult:
        """Detect / track, embed what is new or changed, match, and report one frame.

        Args:
            frame: (H, W, 3) uint8 RGB (e.g. 640x480), one frame of a stream, in order.
        Raises:
            InvalidImage: not an (H, W, 3) uint8 array.
            faceapp errors from the matcher (``ModelMismatch``, ``CalibrationError``...).
        """
        if not (
            isinstance(frame, np.ndarray)
            and frame.ndim == 3
            and frame.shape[2] == 3
            and frame.dtype == np.uint8
        ):
            desc = f"{getattr(frame, 'dtype', type(frame).__name__)} {getattr(frame, 'shape', '')}"
            raise InvalidImage("frame", f"expected an (H, W, 3) uint8 RGB array, got {desc}")
        t_start = time.perf_counter()
        if self.matcher.take_changes():  # enrolled, renamed, deleted: decide again
            self._decisions.clear()
        self._frame += 1
        index = self._frame
        self.stats.frames += 1
        cfg = self.config
        detect_ms = 0.0
        if self.refiner is None or cfg.detect_every == 1:
            detected, detect_ms, update = True, *self._detect_sync(frame, index, t_start)
            t = time.perf_counter()
        elif cfg.async_detect:
            t = time.perf_counter()
            update = self._track(frame, index)
            detected = self._collect_async(frame, index)
            self._submit_async(frame, index, t_start)
        elif self._detect_next or index - self._last_detect >= cfg.detect_every:
            detected, detect_ms, update = True, *self._detect_sync(frame, index, t_start)
            t = time.perf_counter()
        else:
            detected = False
            t = time.perf_counter()
            update = self._track(frame, index)
        for track_id in update.removed:
            self._decisions.pop(track_id, None)
            self._born.pop(track_id, None)
        track_ms = _ms_since(t)

        observed = sorted(self.tracker.observed(), key=lambda tr: -tr.detection.area)
        todo = [tr for tr in observed if self._needs_embedding(tr, index)]
        align_ms = embed_ms = match_ms = 0.0
        if todo:
            align_ms, embed_ms, match_ms = self._embed_and_match(frame, index, todo)
        decided = [tr for tr in observed if tr.track_id in self._decisions]
        tau = self.matcher.threshold() if decided else math.nan
        faces = tuple(self._face(tr, index, tau) for tr in decided)
        timings = StageTimes(detect_ms, track_ms, align_ms, embed_ms, match_ms, _ms_since(t_start))
        return FrameResult(index, faces, detected, len(todo), timings)

    # ------------------------------------------------------------------ stages
    def _detect_sync(self, frame: np.ndarray, index: int, t_start: float) -> tuple[float, TrackUpdate]:
        """Detect on this frame and associate (synchronous mode). Returns (ms, update)."""
        t = time.perf_counter()
        detections = self._detect(frame)
        detect_ms = _ms_since(t)
        update = self.tracker.associate(index, detections)
        self._last_detect = index
        self._detect_next = False
        self.stats.detections += 1
        self.stats.tracks_created += len(update.created)
        for track_id in update.created:
            self._born[track_id] = t_start
        return detect_ms, update

    def _track(self, frame: np.ndarray, index: int) -> TrackUpdate:
        """Refresh every observed track with O-Net on its predicted box; lost ones miss."""
        live = self.tracker.observed()
        waiting = [tr.track_id for tr in self.tracker.tracks if tr.misses > 0]  # age them out
        if not live:
            return self.tracker.observe(index, {}, waiting)
        assert self.refiner is not None
        refined = self.refiner.refine_until(
            frame, [tr.predicted(index).box for tr in live], self._track_min_score, max_passes=2
        )
        observations = {
            tr.track_id: d for tr, d in zip(live, refined, strict=True) if d.score >= self._track_min_score
        }
        lost = [tr.track_id for tr in live if tr.track_id not in observations]
        if lost:
            self._detect_next = True  # a face was lost: look for it again at once
        return self.tracker.observe(index, observations, lost + waiting)

    def _submit_async(self, frame: np.ndarray, index: int, t_start: float) -> None:
        """Start a background detection on a copy of this frame when one is due: every
        ``detect_every`` frames, at once after a track was lost, and continuously while no face
        is tracked."""
        if self._pending is not None:
            return
        due = (
            self._detect_next
            or index - self._last_detect >= self.config.detect_every
            or not self.tracker.observed()  # nobody tracked: keep looking, the loop is idle
        )
        if not due:
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="faceapp-live-detect")
        self._pending = self._executor.submit(self._detect, np.array(frame, copy=True))
        self._pending_start = t_start
        self._last_detect = index
        self._detect_next = False

    def _collect_async(self, frame: np.ndarray, index: int) -> bool:
        """Take finished background detections: faces no track covers are checked with
        O-Net on the current frame (their box is a few frames old) and become tracks."""
        pending = self._pending
        if pending is None or not pending.done():
            return False
        self._pending = None
        detections = pending.result()  # re-raises a detector failure here
        self.stats.detections += 1
        covered = [t.box for t in self.tracker.observed()]
        fresh = [
            d
            for d in detections
            if not covered or float(iou_matrix(covered, [d.box]).max()) < self.config.tracker.min_iou
        ]
        if fresh:
            assert self.refiner is not None
            checked = self.refiner.refine_until(
                frame, [d.box for d in fresh], self._track_min_score, max_passes=3
            )
            update = self.tracker.spawn(index, [d for d in checked if d.score >= self._track_min_score])
            self.stats.tracks_created += len(update.created)
            for track_id in update.created:
                self._born[track_id] = self._pending_start
        return True

    def _detect(self, frame: np.ndarray) -> list[Detection]:
        side = self.config.detect_max_side
        if side and max(frame.shape[:2]) > side:
            small, factor = resize_max_side(frame, side)
            dets = [d.scaled(factor) for d in self.pipeline.detect(small)]
        else:
            dets = self.pipeline.detect(frame)
        dets.sort(key=lambda d: -d.area)
        return dets[: self.config.max_faces]

    def _needs_embedding(self, track: Track, index: int) -> bool:
        cfg = self.config
        prev = self._decisions.get(track.track_id)
        if prev is None or cfg.always_embed:
            return True
        refresh = cfg.refresh_every if prev.result.person is not None else cfg.unknown_refresh_every
        if index - prev.frame >= refresh:
            return True
        if box_iou(track.box, prev.box) < cfg.reembed_iou:
            return True
        return shape_change(prev.landmarks, track.detection.landmarks) > cfg.reembed_shape

    def _embed_and_match(
        self, frame: np.ndarray, index: int, todo: list[Track]
    ) -> tuple[float, float, float]:
        """Embed the tracks' current detections in one pipeline call (align, embed,
        quality: ``FacePipeline.faces_from_detections``) and match them. Returns (align_ms,
        embed_ms, match_ms); alignment is timed inside ``embed_ms`` (one call does both),
        ``align_ms`` is the fallback's, when a face's landmarks cannot be aligned."""
        t = time.perf_counter()
        align_ms = 0.0
        kept: list[Track] = list(todo)
        try:
            faces = list(self.pipeline.faces_from_detections(frame, [tr.detection for tr in kept]))
        except (ValueError, np.linalg.LinAlgError):
            # a face with degenerate landmarks: find it, embed the others
            kept = []
            for tr in todo:
                try:
                    align_face(frame, tr.detection, self.pipeline.template)
                    kept.append(tr)
                except (ValueError, np.linalg.LinAlgError):
                    log.debug("track %d: degenerate landmarks, not embedded", tr.track_id)
            align_ms = _ms_since(t)
            t = time.perf_counter()
            faces = list(self.pipeline.faces_from_detections(frame, [tr.detection for tr in kept]))
        embed_ms = _ms_since(t)
        if not kept:
            return align_ms, embed_ms, 0.0
        self.stats.embedded_faces += len(kept)
        self.stats.embed_batches += 1
        t = time.perf_counter()
        results = self.matcher.match(faces)
        now = time.perf_counter()
        for tr, res, face in zip(kept, results, faces, strict=True):
            self._decisions[tr.track_id] = _Decision(res, index, tr.box, tr.detection.landmarks, face)
            born = self._born.pop(tr.track_id, None)
            if born is not None:
                self.stats.new_face_latency_ms.append((now - born) * 1000.0)
        return align_ms, embed_ms, _ms_since(t)

    def _face(self, track: Track, index: int, tau: float) -> LiveFace:
        """The face of a decided track, judged against ``tau`` now (from the stored scores)."""
        dec = self._decisions[track.track_id]
        res = dec.result
        cands = tuple((str(n), float(s)) for n, s in res.candidates)
        # the gallery's own rule for "known" and "ambiguous", on the stored scores and τ now
        ident = Identification.of([Candidate(i, sc) for i, (_, sc) in enumerate(cands)], tau,
                                  self.matcher.margin)
        person = None if ident.person_id is None else cands[ident.person_id][0]
        ambiguous = ident.ambiguous
        return LiveFace(
            track_id=track.track_id,
            box=track.box,
            landmarks=track.detection.landmarks,
            detection_score=track.detection.score,
            person=person,
            score=float(res.score),
            threshold=tau,
            candidates=cands,
            ambiguous=bool(ambiguous),
            embedded_frame=dec.frame,
            fresh=dec.frame == index,
            face=dec.face,
        )


def _ms_since(t: float) -> float:
    return (time.perf_counter() - t) * 1000.0
