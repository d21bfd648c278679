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
4. **match** the new embeddings 1:K through a :class:`Matcher`: the services' gallery
   (:class:`ServiceMatcher`) or an in-memory :class:`~faceapp.gallery.matching.GalleryIndex`
   (:class:`IndexMatcher`). A tracked face keeps its decision between embeddings; the
   decision against τ is re-derived from the stored scores every frame, so a new τ
   (:meth:`LiveRecognizer.set_threshold`) applies at once.

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
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from faceapp.errors import InvalidImage, ModelError, ModelMismatch
from faceapp.gallery.matching import DEFAULT_AMBIGUITY_MARGIN, GalleryIndex, PairScorer
from faceapp.nn.pipeline import FaceEmbedding, FacePipeline
from faceapp.services import DISTANCE, RecognizedFace
from faceapp.types import Box, Detection, Point
from faceapp.vision.alignment import align_face
from faceapp.vision.images import resize_max_side
from faceapp.vision.quality import assess_quality
from faceapp.vision.tracking import IouTracker, Track, TrackerConfig, box_iou, shape_change

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
    frame, no tracking in between). ``track_min_score``: O-Net face probability below which
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

    detect_max_side: int = 320
    detect_every: int = 5
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
        base = cls(detect_max_side=0, detect_every=1, always_embed=True)
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
    ``fresh``: that frame is this one.
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
    in this frame (``()`` when there is none), largest first; ``detected``: the detector ran
    on this frame; ``n_embedded``: faces embedded on this frame; ``timings``: per stage.
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
    """1:K decision for a batch of analysed faces."""

    @property
    def margin(self) -> float:
        """Ambiguity margin (a tie tolerance on the score scale, not a threshold)."""
        ...

    def match(self, faces: Sequence[FaceEmbedding]) -> list[RecognizedFace]:
        """One result per face, in order (candidates best first, τ of the decision)."""
        ...


class ServiceMatcher:
    """Matches through ``FaceService.recognize`` (the gallery database, its cached index,
    τ from calibration or the gallery's stored τ), without writing event rows."""

    def __init__(
        self, service: FaceService, *, top_k: int = 3, scorer: str = DISTANCE, threshold: float | None = None
    ) -> None:
        self.service = service
        self.top_k = top_k
        self.scorer = scorer
        self.threshold = threshold

    @property
    def margin(self) -> float:
        return float(self.service.margin)

    def match(self, faces: Sequence[FaceEmbedding]) -> list[RecognizedFace]:
        if not faces:
            return []
        return self.service.recognize(
            list(faces), top_k=self.top_k, scorer=self.scorer, threshold=self.threshold, log_event=False
        )


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
        self.threshold = float(threshold)
        self.top_k = top_k
        self._margin = float(margin)
        self.scorer = scorer

    @property
    def margin(self) -> float:
        return self._margin

    def match(self, faces: Sequence[FaceEmbedding]) -> list[RecognizedFace]:
        if not faces:
            return []
        for f in faces:
            if f.model_id != self.index.model_id:
                raise ModelMismatch(
                    f"face analysed by model {f.model_id}, gallery index holds model {self.index.model_id}"
                )
        probes = np.stack([np.asarray(f.embedding, dtype=np.float32) for f in faces])
        results = self.index.identify(
            probes,
            model_id=self.index.model_id,
            threshold=self.threshold,
            k=self.top_k,
            scorer=self.scorer,
            margin=self._margin,
        )
        name = self.scorer.name if self.scorer is not None else DISTANCE
        out = []
        for f, res in zip(faces, results, strict=True):
            out.append(
                RecognizedFace(
                    box=tuple(f.detection.box),  # type: ignore[arg-type]
                    person=None
                    if res.person_id is None
                    else self.names.get(res.person_id, str(res.person_id)),
                    score=res.best_score,
                    candidates=[
                        (self.names.get(c.person_id, str(c.person_id)), c.score) for c in res.candidates
                    ],
                    ambiguous=res.ambiguous,
                    threshold=self.threshold,
                    scorer=name,
                )
            )
        return out


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
            sx1, sy1 = x1 + bw * 0.5 - side * 0.5, y1 + bh * 0.5 - side * 0.5
            squares.append((sx1, sy1, sx1 + side, sy1 + side))
            # MTCNN's pad(): truncated integer corners clipped to [1, w] x [1, h], crop [x-1:ex]
            xi, yi = max(1, int(sx1)), max(1, int(sy1))
            exi, eyi = min(w, int(sx1 + side)), min(h, int(sy1 + side))
            ok = side > 1 and exi > xi - 1 and eyi > yi - 1
            valid.append(ok)
            if ok:
                crop = torch.from_numpy(np.ascontiguousarray(frame[yi - 1 : eyi, xi - 1 : exi]))
                crop = crop.to(self.device).permute(2, 0, 1).unsqueeze(0).float()
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
            sx1, sy1, sx2, sy2 = sq
            bw, bh = sx2 - sx1 + 1.0, sy2 - sy1 + 1.0  # MTCNN's "+1" box size convention
            px = bw * pts_np[k, :5] + sx1 - 1.0
            py = bh * pts_np[k, 5:] + sy1 - 1.0
            r = reg_np[k]
            new_box = (sx1 + r[0] * bw, sy1 + r[1] * bh, sx2 + r[2] * bw, sy2 + r[3] * bh)
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


@dataclass
class LiveStats:
    """Counters since the last reset."""

    frames: int = 0
    detections: int = 0
    embedded_faces: int = 0
    embed_batches: int = 0
    tracks_created: int = 0


class LiveRecognizer:
    """Frame-by-frame recognizer with detection scheduling, tracking and embedding reuse.

    Args:
        pipeline: detector + encoder (``FacePipeline``); its detector and model are used as
            they are (not copied), so they may be shared with a ``FaceService``.
        matcher: where 1:K decisions come from (:class:`ServiceMatcher`,
            :class:`IndexMatcher`).
        config: scheduling and geometry (:class:`LiveConfig`).
        refiner: the tracking step; default: :meth:`LandmarkRefiner.create` on the
            detector's device (built only when tracking is on).
    """

    def __init__(
        self,
        pipeline: FacePipeline,
        matcher: Matcher,
        config: LiveConfig = LiveConfig(),
        *,
        refiner: LandmarkRefiner | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.matcher = matcher
        self.config = config
        if refiner is None and config.detect_every > 1:
            refiner = LandmarkRefiner.create(str(getattr(pipeline.detector, "device", "cpu")))
        self.refiner = refiner
        thresholds = getattr(getattr(pipeline.detector, "config", None), "thresholds", (0.6, 0.7, 0.7))
        self._track_min_score = (
            float(config.track_min_score) if config.track_min_score is not None else float(thresholds[-1])
        )
        self._threshold: float | None = config.threshold
        self.tracker = IouTracker(config.tracker)
        self._decisions: dict[int, _Decision] = {}
        self._frame = 0
        self._last_detect = -(10**9)
        self._detect_next = True
        self.stats = LiveStats()

    @classmethod
    def from_service(
        cls,
        service: FaceService,
        config: LiveConfig = LiveConfig(),
        *,
        refiner: LandmarkRefiner | None = None,
    ) -> LiveRecognizer:
        """A recognizer that uses the service's model and gallery (``service.pipeline``,
        ``service.recognize``); τ from ``config.threshold`` or the service's calibration."""
        matcher = ServiceMatcher(
            service, top_k=config.top_k, scorer=config.scorer, threshold=config.threshold
        )
        return cls(service.pipeline, matcher, config, refiner=refiner)

    # ------------------------------------------------------------------ control
    @property
    def threshold(self) -> float | None:
        """τ override applied to every decision (``None`` = the matcher's τ)."""
        return self._threshold

    def set_threshold(self, value: float | None) -> None:
        """Change τ; it applies from the next frame on, to stored decisions as well."""
        if value is not None and not math.isfinite(float(value)):
            raise ValueError(f"threshold must be finite, got {value}")
        self._threshold = None if value is None else float(value)

    def reset(self) -> None:
        """Forget every track and decision (new camera, new video, gallery changed)."""
        self.tracker.reset()
        self._decisions.clear()
        self._frame = 0
        self._last_detect = -(10**9)
        self._detect_next = True
        self.stats = LiveStats()

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
        self._frame += 1
        index = self._frame
        self.stats.frames += 1
        cfg = self.config
        detect_ms = track_ms = 0.0

        detected = (
            cfg.detect_every == 1
            or self._detect_next
            or index - self._last_detect >= cfg.detect_every
            or self.refiner is None
        )
        if detected:
            t = time.perf_counter()
            detections = self._detect(frame)
            detect_ms = _ms_since(t)
            t = time.perf_counter()
            update = self.tracker.associate(index, detections)
            self._last_detect = index
            self._detect_next = False
            self.stats.detections += 1
            self.stats.tracks_created += len(update.created)
        else:
            t = time.perf_counter()
            live = self.tracker.observed()
            assert self.refiner is not None
            refined = self.refiner.refine(frame, [tr.predicted(index).box for tr in live])
            observations = {
                tr.track_id: d
                for tr, d in zip(live, refined, strict=True)
                if d.score >= self._track_min_score
            }
            lost = [tr.track_id for tr in live if tr.track_id not in observations]
            update = self.tracker.observe(index, observations, lost)
            if lost:
                self._detect_next = True  # a face was lost: look for it again at once
        for track_id in update.removed:
            self._decisions.pop(track_id, None)
        track_ms = _ms_since(t)

        observed = sorted(self.tracker.observed(), key=lambda tr: -tr.detection.area)
        todo = [tr for tr in observed if self._needs_embedding(tr, index)]
        align_ms = embed_ms = match_ms = 0.0
        if todo:
            align_ms, embed_ms, match_ms = self._embed_and_match(frame, index, todo)
        faces = tuple(self._face(tr, index) for tr in observed if tr.track_id in self._decisions)
        timings = StageTimes(detect_ms, track_ms, align_ms, embed_ms, match_ms, _ms_since(t_start))
        return FrameResult(index, faces, detected, len(todo), timings)

    # ------------------------------------------------------------------ stages
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
        t = time.perf_counter()
        aligned = []
        kept: list[Track] = []
        for tr in todo:
            try:
                aligned.append(align_face(frame, tr.detection, self.pipeline.template))
                kept.append(tr)
            except (ValueError, np.linalg.LinAlgError):
                log.debug("track %d: degenerate landmarks, not embedded", tr.track_id)
        align_ms = _ms_since(t)
        if not kept:
            return align_ms, 0.0, 0.0
        t = time.perf_counter()
        emb = self.pipeline.embed_crops(np.stack([a.crop for a in aligned]))
        embed_ms = _ms_since(t)
        self.stats.embedded_faces += len(kept)
        self.stats.embed_batches += 1
        t = time.perf_counter()
        quality = self.pipeline.quality
        faces = [
            FaceEmbedding(
                detection=tr.detection,
                aligned=a,
                embedding=e,
                quality=assess_quality(tr.detection, a.crop, quality),
                model_id=self.pipeline.model_id,
            )
            for tr, a, e in zip(kept, aligned, emb, strict=True)
        ]
        results = self.matcher.match(faces)
        for tr, res in zip(kept, results, strict=True):
            self._decisions[tr.track_id] = _Decision(res, index, tr.box, tr.detection.landmarks)
        return align_ms, embed_ms, _ms_since(t)

    def _face(self, track: Track, index: int) -> LiveFace:
        dec = self._decisions[track.track_id]
        res = dec.result
        tau = self._threshold if self._threshold is not None else float(res.threshold)
        cands = tuple((str(n), float(s)) for n, s in res.candidates)
        person = cands[0][0] if cands and cands[0][1] >= tau else None
        ambiguous = person is not None and len(cands) >= 2 and cands[0][1] - cands[1][1] < self.matcher.margin
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
        )


def _ms_since(t: float) -> float:
    return (time.perf_counter() - t) * 1000.0
