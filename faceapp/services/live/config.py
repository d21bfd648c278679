"""Settings and results of the live loop: :class:`LiveConfig`, per-frame :class:`FrameResult`
with its :class:`LiveFace` list and :class:`StageTimes`, and the :class:`LiveStats` counters.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from faceapp.nn.pipeline import FaceEmbedding
from faceapp.nn.scoring import DISTANCE
from faceapp.types import Box, Point
from faceapp.vision.tracking import (
    TrackerConfig,
)

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


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
