"""Liveness over a frame stream: follow the faces, run the challenge, collect passive cues,
decide. Qt-free; the CLI and the GUI both drive a :class:`LivenessSession`.

Per frame (:meth:`LivenessSession.process`): the faces come from the caller's live loop
(``faces``: the tracked faces of :class:`faceapp.services.live.LiveRecognizer`'s frame result,
see :func:`tracked_faces`; the GUI's Verify page), or else from the session's own
:class:`FaceFollower` (MTCNN every ``detect_every`` frames, O-Net refinement in between,
box-IoU track ids; the CLI and the liveness calibration); the largest face is the subject.
Its head pose and eye openness feed the challenge (when there is one) together with every
other face (second-face rule); every ``cue_every``-th frame its passive cues are computed;
every ``identity_every``-th frame an optional identity callback (the gallery, in
``verify --liveness``) says ``match`` / ``mismatch``.
:meth:`LivenessSession.finish` cuts the subject's frames into windows of the model's length,
scores each (:class:`PassiveModel`), and the passive score is the median window score.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from faceapp.config import DetectorConfig
from faceapp.liveness.model import PassiveModel, window_features
from faceapp.types import Detection
from faceapp.vision.detection import FaceDetector
from faceapp.vision.liveness import (
    Action,
    Challenge,
    ChallengeConfig,
    ChallengeState,
    DegenerateLandmarks,
    FaceObservation,
    Identity,
    Status,
    head_pose,
)
from faceapp.vision.liveness.blink import eye_openness
from faceapp.vision.liveness.passive import frame_cues
from faceapp.vision.refine import LandmarkRefiner
from faceapp.vision.tracking import IouTracker, TrackerConfig

IdentityFn = Callable[[np.ndarray, Detection], Identity]
TrackedFace = tuple[int, Detection]
"""(track id, detection in frame pixels) of one followed face."""


class FaceFollower:
    """Faces of a stream with stable track ids: detection every ``detect_every`` frames (and
    whenever a face was lost), O-Net refinement of each tracked box in between.

    Args:
        detector: MTCNN (e.g. ``FaceDetector(DetectorConfig(max_side=480, min_face_size=40))``).
        refiner: the O-Net step.
        min_score: O-Net face probability below which a tracked face is lost.
    """

    def __init__(self, detector: FaceDetector, refiner: LandmarkRefiner, *, detect_every: int = 10,
                 min_score: float = 0.7) -> None:
        if detect_every < 1:
            raise ValueError("detect_every must be >= 1")
        self.detector = detector
        self.refiner = refiner
        self.detect_every = detect_every
        self.min_score = min_score
        self.tracker = IouTracker(TrackerConfig())
        self._index = 0
        self._redetect = True

    @classmethod
    def create(cls, device: str = "cpu", **kwargs: object) -> FaceFollower:
        """Load MTCNN's networks from the facenet-pytorch wheel (no download)."""
        det = FaceDetector(DetectorConfig(max_side=480, min_face_size=40, device=device))
        return cls(det, LandmarkRefiner.create(device), **kwargs)  # type: ignore[arg-type]

    def reset(self) -> None:
        self.tracker.reset()
        self._index = 0
        self._redetect = True

    def step(self, frame: np.ndarray) -> list[tuple[int, Detection]]:
        """The faces of the next frame, largest first, as (track id, detection).

        Args:
            frame: (H, W, 3) uint8 RGB.
        """
        self._index += 1
        i = self._index
        live = self.tracker.observed()
        if self._redetect or not live or i % self.detect_every == 0:
            self.tracker.associate(i, self.detector.detect(frame))
            self._redetect = False
        else:
            refined = self.refiner.refine_until(frame, [t.predicted(i).box for t in live], self.min_score)
            obs = {t.track_id: d for t, d in zip(live, refined, strict=True) if d.score >= self.min_score}
            lost = [t.track_id for t in live if t.track_id not in obs]
            waiting = [t.track_id for t in self.tracker.tracks if t.misses > 0]
            self.tracker.observe(i, obs, lost + waiting)
            self._redetect = bool(lost)
        faces = [(t.track_id, t.detection) for t in self.tracker.observed()]
        faces.sort(key=lambda f: -f[1].area)
        return faces


@dataclass(frozen=True)
class FrameLiveness:
    """What one frame did: the subject's box (``None`` when no face), the challenge state
    (``None`` without a challenge), the milliseconds the liveness work took (cues, pose,
    blink, challenge; not detection/tracking)."""

    index: int
    box: tuple[float, float, float, float] | None
    challenge: ChallengeState | None
    liveness_ms: float


@dataclass(frozen=True)
class LivenessResult:
    """The decision. ``live``: passive score >= threshold and (no challenge or challenge
    passed); ``reasons``: why not (empty when live); ``frames``: frames processed;
    ``window_scores``: passive score of each window of the subject."""

    live: bool
    passive_score: float
    threshold: float
    challenge: tuple[Action, ...]
    completed: tuple[Action, ...]
    reasons: tuple[str, ...]
    frames: int
    window_scores: tuple[float, ...] = ()
    identity_checked: bool = False

    def to_dict(self) -> dict[str, object]:
        return {
            "live": self.live,
            "passive_score": round(self.passive_score, 5) if math.isfinite(self.passive_score) else None,
            "threshold": round(self.threshold, 5),
            "challenge": [a.value for a in self.challenge],
            "completed": [a.value for a in self.completed],
            "reasons": list(self.reasons),
            "frames": self.frames,
            "window_scores": [round(s, 4) for s in self.window_scores],
            "identity_checked": self.identity_checked,
        }


class CueCollector:
    """The subject's passive cues, sampled every ``cue_every`` frames, cut into windows of
    ``window`` frames that never span two tracks.

    Args:
        window: frames per window (the model's ``window``).
        cue_every: sample every N-th frame (the model's ``cue_every``).
    """

    def __init__(self, window: int, cue_every: int) -> None:
        if window < 1 or cue_every < 1:
            raise ValueError("window and cue_every must be >= 1")
        self.window = window
        self.cue_every = cue_every
        self.cues: list[np.ndarray] = []  # (6,) per sampled frame
        self.tracks: list[int] = []  # subject track id per sampled frame
        self.landmarks: list[np.ndarray] = []  # (5, 2) per sampled frame
        self.yaw_pitch: list[tuple[float, float]] = []

    def __len__(self) -> int:
        return len(self.cues)

    def add(self, index: int, frame: np.ndarray, track_id: int, det: Detection,
            yaw: float, pitch: float) -> None:
        """Offer frame ``index`` (1-based) of the subject; kept on every ``cue_every``-th."""
        if (index - 1) % self.cue_every:
            return
        try:
            cues = frame_cues(frame, det.box)
        except ValueError:
            return
        self.cues.append(cues.as_array())
        self.tracks.append(track_id)
        self.landmarks.append(det.landmarks_array())
        self.yaw_pitch.append((yaw, pitch))

    def spans(self) -> list[tuple[int, int]]:
        """(start, stop) sample ranges of the windows (a shorter run of one track only when
        there is no full window at all; a single sample is a still)."""
        per = max(1, self.window // self.cue_every)
        runs: list[tuple[int, int]] = []
        for i, tr in enumerate(self.tracks):
            if runs and self.tracks[runs[-1][0]] == tr:
                runs[-1] = (runs[-1][0], i + 1)
            else:
                runs.append((i, i + 1))
        spans = [(a, a + per) for r0, r1 in runs for a in range(r0, r1 - per + 1, per)]
        if not spans and runs:
            spans = [max(runs, key=lambda r: r[1] - r[0])]
        return spans

    def features(self) -> list[np.ndarray]:
        """(len(FEATURES),) float64 per window (:func:`window_features`)."""
        return [
            window_features(np.asarray(self.cues[a:b]), np.asarray(self.landmarks[a:b]),
                            np.asarray(self.yaw_pitch[a:b]))
            for a, b in self.spans()
        ]


class LivenessSession:
    """One liveness attempt over one stream (see the module docstring).

    Args:
        model: the calibrated passive model (window length, cue sampling, threshold).
        follower: face tracking (:meth:`FaceFollower.create`); ``None`` when the caller
            passes each frame's tracked faces to :meth:`process` (its live loop follows them).
        actions: the challenge (``()`` = passive checks only).
        challenge_config: :class:`ChallengeConfig`.
        identity: optional ``(frame, detection) -> "match" | "mismatch" | "unknown"``, called
            on the subject every ``identity_every`` frames (while the challenge runs, when
            there is one).
        stop_when_done: :attr:`done` turns true as soon as the challenge ended (the caller
            may stop feeding frames) once at least one window of passive cues is collected.
    """

    def __init__(self, model: PassiveModel, follower: FaceFollower | None, actions: Sequence[Action] = (), *,
                 challenge_config: ChallengeConfig = ChallengeConfig(), identity: IdentityFn | None = None,
                 identity_every: int = 10, mirrored: bool = False) -> None:
        self.model = model
        self.follower = follower
        self.actions = tuple(actions)
        self.challenge = Challenge(self.actions, challenge_config) if self.actions else None
        self.identity = identity
        self.identity_every = max(1, identity_every)
        self.mirrored = mirrored
        self._frames = 0
        self.collector = CueCollector(model.window, model.cue_every)
        self._identity_checked = False

    @property
    def frames(self) -> int:
        return self._frames

    @property
    def done(self) -> bool:
        """The challenge ended (passed or failed) and at least one window of cues is in."""
        if self.challenge is None:
            return False
        return self.challenge.state.done and len(self.collector) * self.model.cue_every >= self.model.window

    def process(self, frame: np.ndarray, t: float,
                faces: Sequence[TrackedFace] | None = None) -> FrameLiveness:
        """Feed one frame taken at time ``t`` (seconds, non-decreasing).

        Args:
            frame: (H, W, 3) uint8 RGB.
            faces: the frame's faces as the caller's live loop tracked them (largest first,
                :func:`tracked_faces`); ``None``: the session's follower finds them.
        """
        if faces is None:
            if self.follower is None:
                raise ValueError("this session has no face follower: pass the frame's tracked faces")
            faces = self.follower.step(frame)
        self._frames += 1
        t0 = time.perf_counter()
        observations: list[FaceObservation] = []
        subject: tuple[int, Detection] | None = None
        for k, (track_id, det) in enumerate(faces):
            try:
                pose = head_pose(det.landmarks_array(), mirrored=self.mirrored)
            except DegenerateLandmarks:
                continue
            is_subject = k == 0
            openness = eye_openness(frame, det.landmarks_array()) if is_subject else math.nan
            ident: Identity = "unknown"
            running = self.challenge is not None and self.challenge.state.status in (
                Status.RUNNING, Status.REARM)
            due = self._frames % self.identity_every == 0 and (self.challenge is None or running)
            if is_subject and self.identity is not None and due:
                ident = self.identity(frame, det)
                self._identity_checked = True
            observations.append(FaceObservation(track_id, pose, det.area, openness, ident))
            if is_subject:
                subject = (track_id, det)
                self.collector.add(self._frames, frame, track_id, det, pose.yaw, pose.pitch)
        state = self.challenge.update(t, observations) if self.challenge is not None else None
        ms = (time.perf_counter() - t0) * 1000.0
        return FrameLiveness(self._frames, subject[1].box if subject else None, state, ms)

    def window_scores(self) -> list[float]:
        """Passive score of each window of the subject so far."""
        return [float(self.model.score(f)) for f in self.collector.features()]

    def finish(self, ended: str = "ended") -> LivenessResult:
        """The decision over everything fed so far (a running challenge fails with ``ended``)."""
        reasons: list[str] = []
        scores = self.window_scores()
        thr = self.model.threshold
        passive = statistics.median(scores) if scores else math.nan
        if not scores:
            reasons.append("no_face")
        elif passive < thr:
            reasons.append(f"passive_score {passive:.3f} < threshold {thr:.3f}")
        completed: tuple[Action, ...] = ()
        if self.challenge is not None:
            st = self.challenge.state if self.challenge.state.done else self.challenge.fail(ended)
            completed = st.completed
            if st.status is not Status.PASSED:
                reasons.append(f"challenge: {st.reason}")
        return LivenessResult(
            live=not reasons, passive_score=passive, threshold=thr, challenge=self.actions,
            completed=completed, reasons=tuple(reasons), frames=self._frames,
            window_scores=tuple(scores), identity_checked=self._identity_checked,
        )


def draw_actions(spec: str, seed: int | None, n: int = 3) -> tuple[Action, ...]:
    """``"none"`` -> (); ``"auto"`` -> ``n`` random actions (``seed`` for repeatability,
    else drawn from the OS's entropy); else a comma list of action names."""
    from faceapp.vision.liveness import parse_actions, random_actions

    text = spec.strip().lower()
    if text == "none":
        return ()
    if text == "auto":
        rng = random.Random(seed) if seed is not None else random.SystemRandom()
        return random_actions(rng, n)
    return parse_actions(text)


def run_frames(session: LivenessSession, frames: Iterable[np.ndarray], fps: float,
               on_frame: Callable[[FrameLiveness], None] | None = None) -> LivenessResult:
    """Feed a finite frame sequence (video file, image folder) at ``fps`` and decide; stops
    early once the challenge is done (see :attr:`LivenessSession.done`)."""
    for i, frame in enumerate(frames):
        res = session.process(frame, i / fps)
        if on_frame is not None:
            on_frame(res)
        if session.done:
            break
    return session.finish()
