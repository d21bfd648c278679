"""Real-time recognition of a frame stream (camera, video), Qt-free.

:class:`LiveRecognizer` turns one RGB frame at a time into a :class:`FrameResult`: every
face with its box, its identity (name or Unknown), score and candidates, plus per-stage
timings. It is fast on a CPU because it does as little as possible per frame:

1. **detect on a downscaled frame** (``LiveConfig.detect_max_side``), and only every
   ``detect_every`` frames, or at once when a track was lost;
2. **track** faces in between: each track's box is moved by its velocity and refreshed by
   MTCNN's last stage (O-Net on one 48×48 crop per face: new box, 5 landmarks, face
   probability; see :class:`LandmarkRefiner`); tracks are continued across detections by
   optimal box-IoU assignment (:mod:`faceapp.vision.tracking`);
3. **embed only faces that are new or changed** (the box moved away from where the face was
   last embedded, the landmark shape changed, i.e. the head turned, or the decision is
   older than ``refresh_every`` frames), all of them **in one batch**, under
   ``torch.inference_mode`` (inside the encoder);
4. **match** the new embeddings 1:K through a :class:`Matcher`: the service's in-memory
   index and τ, with no database round trip per frame (:class:`CacheMatcher`), or a given
   :class:`~faceapp.gallery.matching.GalleryIndex` (:class:`IndexMatcher`). A tracked face
   keeps its decision between embeddings; the decision against τ is re-derived from the
   stored scores every frame, so a new τ (:meth:`LiveRecognizer.set_threshold`, or the
   service's τ changed anywhere) applies at once.

Every tracked face also carries the :class:`~faceapp.nn.pipeline.FaceEmbedding` it was last
embedded with (``LiveFace.face``: aligned crop, embedding, quality, face image, as
``FacePipeline.faces_from_detections`` makes them), so that the other live pages decide on
it themselves: Enroll keeps fresh, good ones as samples, Verify scores the largest one
against the claimed person. Without a matcher (``matcher=None``) the loop only tracks and
embeds (no 1:K decision, no candidates).

``LiveConfig.naive()`` switches every speed-up off (full-resolution detection and embedding
of every face on every frame): the baseline of ``faceapp bench frame``.

Threads: a recognizer is used from one worker thread at a time (e.g. the GUI's camera
worker, which drops frames while :meth:`LiveRecognizer.process` runs); it holds per-stream
state, so use one recognizer per stream and :meth:`LiveRecognizer.reset` on a new source.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from faceapp.errors import FaceappError, InvalidImage, ModelError, ModelMismatch
from faceapp.gallery.matching import (
    DEFAULT_AMBIGUITY_MARGIN,
    Candidate,
    GalleryIndex,
    Identification,
    PairScorer,
)
from faceapp.nn.pipeline import FaceEmbedding, FacePipeline
from faceapp.nn.scoring import DISTANCE
from faceapp.services.decisions import recognized
from faceapp.services.index_cache import IndexView
from faceapp.services.results import RecognizedFace
from faceapp.services.thresholds import finite_threshold
from faceapp.types import Box, Detection, Point
from faceapp.vision.alignment import align_face
from faceapp.vision.images import resize_max_side
from faceapp.vision.tracking import (
    IouTracker,
    Track,
    TrackerConfig,
    TrackUpdate,
    box_iou,
    iou_matrix,
    shape_change,
)

if TYPE_CHECKING:
    from faceapp.services import FaceService

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------- config


@dataclass(frozen=True)
class LiveConfig:
    """Settings of the live loop (geometry and scheduling; no match threshold in here
    except an optional explicit τ override).

    ``detect_max_side``: frames are downscaled so that their longer side is at most this
    before detection (0 = detect at full resolution; MTCNN's ``min_face_size`` then applies
    to the downscaled frame). ``detect_every``: run the detector every N frames (1 = every
    frame, no tracking in between). ``async_detect``: run the detector on a background
    thread, beside the tracking loop, so that no frame waits for it; its detections (of a
    frame a few frames old) only add faces that no track covers yet, after an O-Net check on
    the current frame (off: the detector runs inside :meth:`LiveRecognizer.process`).
    ``track_min_score``: O-Net face probability below which
    a tracked face is lost (``None`` = the detector's last-stage threshold).
    ``reembed_iou``: re-embed a face when the IoU of its box with the box it had when last
    embedded falls below this; ``reembed_shape``: ... or when its landmark shape changed
    more than this (:func:`~faceapp.vision.tracking.shape_change`, in eye distances);
    ``refresh_every`` / ``unknown_refresh_every``: re-embed a known / Unknown face at least
    this often (frames). ``always_embed``: embed every face on every frame.
    ``max_faces``: the largest faces kept per detection. ``top_k``, ``scorer``: as in
    ``FaceService.recognize``; ``threshold``: τ override (``None`` = the matcher's τ, i.e.
    the model's calibration or the gallery's stored τ).
    """

    detect_max_side: int = 480
    detect_every: int = 5
    async_detect: bool = True
    track_min_score: float | None = None
    reembed_iou: float = 0.6
    reembed_shape: float = 0.08
    refresh_every: int = 30
    unknown_refresh_every: int = 10
    always_embed: bool = False
    max_faces: int = 10
    top_k: int = 3
    scorer: str = DISTANCE
    threshold: float | None = None
    tracker: TrackerConfig = field(default_factory=TrackerConfig)

    def __post_init__(self) -> None:
        if self.detect_every < 1:
            raise ValueError(f"detect_every must be >= 1, got {self.detect_every}")
        if self.detect_max_side < 0 or 0 < self.detect_max_side < 48:
            raise ValueError(f"detect_max_side must be 0 (off) or >= 48, got {self.detect_max_side}")
        if self.max_faces < 1 or self.top_k < 1:
            raise ValueError("max_faces and top_k must be >= 1")

    @classmethod
    def naive(cls, **overrides: object) -> LiveConfig:
        """The per-frame pipeline without any speed-up: full-resolution detection and
        embedding of every face on every frame (the benchmark's baseline)."""
        base = cls(detect_max_side=0, detect_every=1, always_embed=True, async_detect=False)
        return replace(base, **overrides)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- results


@dataclass(frozen=True)
class StageTimes:
    """Milliseconds spent per stage on one frame (0 for a stage that did not run)."""

    detect_ms: float = 0.0
    track_ms: float = 0.0
    align_ms: float = 0.0
    embed_ms: float = 0.0
    match_ms: float = 0.0
    total_ms: float = 0.0

    def to_dict(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class LiveFace:
    """One face of a frame and the current decision about it.

    ``box`` / ``landmarks``: in pixels of the processed frame; ``detection_score``: the
    detector's (or O-Net's) face probability. ``person``: name when the best candidate's
    ``score >= threshold``, else ``None`` (Unknown); ``candidates``: up to top-k (name,
    score), best first; ``score``: the best candidate's score (``-inf`` for an empty
    gallery). ``embedded_frame``: index of the frame whose embedding gave this decision;
    ``fresh``: that frame is this one. ``face``: that embedding (``FaceEmbedding``: aligned
    crop, embedding, quality and face image measured on frame ``embedded_frame``).
    """

    track_id: int
    box: Box
    landmarks: tuple[Point, Point, Point, Point, Point]
    detection_score: float
    person: str | None
    score: float
    threshold: float
    candidates: tuple[tuple[str, float], ...]
    ambiguous: bool
    embedded_frame: int
    fresh: bool
    face: FaceEmbedding | None = field(default=None, compare=False, repr=False)

    @property
    def is_known(self) -> bool:
        return self.person is not None

    @property
    def label(self) -> str:
        """``person`` or ``"Unknown"`` (for drawing)."""
        return self.person if self.person is not None else "Unknown"

    def to_dict(self) -> dict[str, object]:
        def num(x: float) -> float | None:
            return round(float(x), 5) if math.isfinite(x) else None

        return {
            "track_id": self.track_id,
            "box": [round(v, 2) for v in self.box],
            "person": self.person,
            "score": num(self.score),
            "threshold": num(self.threshold),
            "candidates": [{"person": n, "score": num(s)} for n, s in self.candidates],
            "ambiguous": self.ambiguous,
            "embedded_frame": self.embedded_frame,
            "fresh": self.fresh,
        }


@dataclass(frozen=True)
class FrameResult:
    """Everything decided about one frame.

    ``index``: 1-based frame number since the last reset; ``faces``: tracked faces observed
    in this frame (``()`` when there is none), largest first; ``detected``: detections were
    used on this frame (synchronous mode: the detector ran on it; asynchronous mode: the
    results of a detection started on an earlier frame arrived); ``n_embedded``: faces
    embedded on this frame; ``timings``: per stage.
    """

    index: int
    faces: tuple[LiveFace, ...]
    detected: bool
    n_embedded: int
    timings: StageTimes

    def to_dict(self) -> dict[str, object]:
        return {
            "index": self.index,
            "faces": [f.to_dict() for f in self.faces],
            "detected": self.detected,
            "n_embedded": self.n_embedded,
            "timings": self.timings.to_dict(),
        }


# ---------------------------------------------------------------------------- matchers


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
      any page, the Calibrate page, the CLI: one value), unless ``threshold`` is given (an
      argument, ``--threshold``).

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
        self._changes = self._core.cache.subscribe()
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
        return self._core.thresholds.current(self.scorer)

    def set_threshold(self, value: float | None) -> None:
        if self._fixed is not None:
            if value is not None:
                self._fixed = finite_threshold(value)
            return
        self._core.thresholds.use(self.scorer, value)

    def take_changes(self) -> bool:
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
            self._changes.clear()  # this batch is decided on the new view already
        else:
            self._check_later()
        probes = np.stack([core.embedding_of(f) for f in faces])
        tau = self.threshold()
        results = core.cache.identify(view, probes, threshold=tau, k=self.top_k,
                                      scorer=self._scorer_obj, margin=core.margin)
        return [recognized(tuple(f.detection.box), r, view.names, tau, self.scorer)  # type: ignore[arg-type]
                for f, r in zip(faces, results, strict=True)]

    def close(self) -> None:
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
    ) -> None:
        self.index = index
        self.names = dict(names)
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
                                      k=self.top_k, scorer=self.scorer, margin=self._margin)
        name = self.scorer.name if self.scorer is not None else DISTANCE
        return [recognized(tuple(f.detection.box), r, self.names, tau, name)  # type: ignore[arg-type]
                for f, r in zip(faces, results, strict=True)]


# ---------------------------------------------------------------------------- O-Net tracking step


class LandmarkRefiner:
    """MTCNN's output network (O-Net) run on given boxes: a refreshed box, 5 landmarks and
    a face probability per box, with MTCNN's own crop and regression rules.

    Costs one 48×48 forward pass per face instead of the whole P/R/O-Net cascade: this is
    the tracking step between detections.

    Args:
        onet: facenet-pytorch's ``ONet`` (weights loaded), in eval mode.
    """

    INPUT = 48

    def __init__(self, onet: torch.nn.Module) -> None:
        self.onet = onet.eval()
        self.device = next(onet.parameters()).device

    @classmethod
    def create(cls, device: str = "cpu") -> LandmarkRefiner:
        """Load O-Net's weights from the facenet-pytorch wheel (no download)."""
        try:
            from facenet_pytorch.models.mtcnn import ONet
        except ImportError as err:  # pragma: no cover - depends on the installation
            raise ModelError(f"facenet-pytorch is not installed ({err}); run `make setup`") from err
        return cls(ONet().to(torch.device(device)))

    def refine(self, frame: np.ndarray, boxes: Sequence[Box]) -> list[Detection]:
        """One detection per input box, in order.

        Args:
            frame: (H, W, 3) uint8 RGB.
            boxes: (x1, y1, x2, y2) in pixels of ``frame``, roughly around a face.
        Returns:
            Detections in frame pixels; ``score`` is O-Net's face probability in [0, 1]
            (0 for a box entirely outside the frame). Callers apply their threshold.
        """
        if not boxes:
            return []
        h, w = frame.shape[:2]
        squares: list[tuple[float, float, float, float]] = []
        crops: list[torch.Tensor] = []
        valid: list[bool] = []
        for x1, y1, x2, y2 in boxes:
            bw, bh = x2 - x1, y2 - y1
            side = max(bw, bh)
            ok = bool(np.isfinite(side)) and side >= 2
            if ok:
                # the square crop around the box, in whole pixels; parts outside the frame are
                # zero-padded (not squeezed), so a face cut by the frame edge keeps its shape
                s_px = round(side)
                x0 = math.floor(x1 + bw * 0.5 - s_px * 0.5)
                y0 = math.floor(y1 + bh * 0.5 - s_px * 0.5)
                fx0, fx1 = max(0, x0), min(w, x0 + s_px)
                fy0, fy1 = max(0, y0), min(h, y0 + s_px)
                ok = fx1 > fx0 and fy1 > fy0
            valid.append(ok)
            if not ok:
                squares.append((0.0, 0.0, 0.0, 0.0))
                continue
            squares.append((float(x0), float(y0), float(s_px), 0.0))
            part = frame[fy0:fy1, fx0:fx1]
            if part.shape[:2] != (s_px, s_px):
                canvas = np.zeros((s_px, s_px, 3), dtype=np.uint8)
                canvas[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0] = part
                part = canvas
            crop = torch.from_numpy(np.ascontiguousarray(part)).to(self.device)
            crop = crop.permute(2, 0, 1).unsqueeze(0).float()
            crops.append(F.interpolate(crop, size=(self.INPUT, self.INPUT), mode="area"))
        if not crops:
            return [_empty_detection(b) for b in boxes]
        with torch.inference_mode():
            batch = (torch.cat(crops) - 127.5) * 0.0078125
            reg, pts, prob = self.onet(batch)
        reg_np = reg.float().cpu().numpy().astype(np.float64)
        pts_np = pts.float().cpu().numpy().astype(np.float64)
        prob_np = prob[:, 1].float().cpu().numpy().astype(np.float64)
        out: list[Detection] = []
        k = 0
        for box, sq, ok in zip(boxes, squares, valid, strict=True):
            if not ok:
                out.append(_empty_detection(box))
                continue
            # O-Net's outputs are relative to the crop (MTCNN's conventions: landmarks as
            # fractions of the side from the crop's first pixel, box offsets from the
            # 1-based corners of the crop)
            x0, y0, side_px = sq[0], sq[1], sq[2]
            px = side_px * pts_np[k, :5] + x0
            py = side_px * pts_np[k, 5:] + y0
            r = reg_np[k]
            new_box = (
                x0 + 1.0 + r[0] * side_px,
                y0 + 1.0 + r[1] * side_px,
                x0 + side_px + r[2] * side_px,
                y0 + side_px + r[3] * side_px,
            )
            landmarks = tuple((float(x), float(y)) for x, y in zip(px, py, strict=True))
            if not (np.all(np.isfinite(new_box)) and np.all(np.isfinite(px)) and np.all(np.isfinite(py))):
                out.append(_empty_detection(box))
            else:
                out.append(
                    Detection(
                        box=tuple(float(v) for v in new_box),  # type: ignore[arg-type]
                        score=float(prob_np[k]),
                        landmarks=landmarks,  # type: ignore[arg-type]
                    )
                )
            k += 1
        return out

    def refine_until(
        self, frame: np.ndarray, boxes: Sequence[Box], min_score: float, max_passes: int = 2
    ) -> list[Detection]:
        """:meth:`refine`, then again from the refined box for the faces still below
        ``min_score``, up to ``max_passes`` passes (O-Net's box regression converges over a
        few passes when the start box is off, e.g. a fast face or a detection some frames
        old). One detection per input box; callers still check ``score >= min_score``."""
        out = self.refine(frame, boxes)
        for _ in range(max_passes - 1):
            retry = [i for i, d in enumerate(out) if d.score < min_score and d.area > 0]
            if not retry:
                break
            again = self.refine(frame, [out[i].box for i in retry])
            for i, d in zip(retry, again, strict=True):
                if d.score > out[i].score:
                    out[i] = d
        return out


def _empty_detection(box: Box) -> Detection:
    x1, y1, x2, y2 = (float(v) for v in box)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return Detection(box=(x1, y1, x2, y2), score=0.0, landmarks=((cx, cy),) * 5)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- the loop


@dataclass(frozen=True)
class _Decision:
    """What the last embedding of a track gave (scores kept so τ can change live)."""

    result: RecognizedFace
    frame: int
    box: Box
    landmarks: tuple[Point, ...]
    face: FaceEmbedding


@dataclass
class LiveStats:
    """Counters since the last reset."""

    frames: int = 0
    detections: int = 0
    embedded_faces: int = 0
    embed_batches: int = 0
    tracks_created: int = 0
    new_face_latency_ms: list[float] = field(default_factory=list)
    """Per new track: time from the start of ``process`` on the frame its detector ran on
    to its first decision (includes the wait for an asynchronous detection)."""


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
        pipeline: FacePipeline,
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
            refiner = LandmarkRefiner.create(str(getattr(pipeline.detector, "device", "cpu")))
        self.refiner = refiner
        thresholds = getattr(getattr(pipeline.detector, "config", None), "thresholds", (0.6, 0.7, 0.7))
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


def _no_match(face: FaceEmbedding) -> RecognizedFace:
    """The decision of a loop without a matcher: no candidate, Unknown."""
    return RecognizedFace(
        box=tuple(face.detection.box),  # type: ignore[arg-type]
        person=None,
        score=-math.inf,
        candidates=[],
        ambiguous=False,
    )


def _ms_since(t: float) -> float:
    return (time.perf_counter() - t) * 1000.0
