"""Verify from a camera with liveness (the service side of :mod:`faceapp.liveness`): ACCEPT
only when the identity and the liveness both pass. Shared by ``faceapp verify NAME --camera
SOURCE --liveness`` and the GUI (which reaches liveness only through this module).

Identity is checked on challenge frames, on the tracked subject itself (its detection is
embedded, not a fresh detection of the frame), on frames where the head is near frontal
(the encoder is trained on frontal faces; a turned head would be compared unfairly).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from faceapp.config import default_model_path
from faceapp.liveness.model import PassiveModel
from faceapp.liveness.session import (
    FaceFollower,
    FrameLiveness,
    LivenessResult,
    LivenessSession,
    TrackedFace,
    draw_actions,
)
from faceapp.nn.calibration import Calibration
from faceapp.nn.pipeline import FaceEmbedding, FacePipeline
from faceapp.nn.scoring import DISTANCE
from faceapp.services.live import FrameResult
from faceapp.types import Detection
from faceapp.vision.liveness import Action, ChallengeConfig, DegenerateLandmarks, Identity, head_pose

if TYPE_CHECKING:
    from faceapp.services import FaceService

__all__ = [
    "Action",
    "ChallengeConfig",
    "IdentityChecker",
    "LiveVerifier",
    "LiveVerifyResult",
    "LiveVerifyStep",
    "SameFaceChecker",
    "decide",
    "draw_actions",
    "frontal_faces",
    "tracked_faces",
]

FRONTAL_DEG = 15.0
"""Identity is only checked on frames whose head yaw and pitch are within this (degrees)."""


def frontal_faces(pipeline: FacePipeline, frame: np.ndarray, det: Detection) -> list[FaceEmbedding]:
    """``det`` analysed on ``frame`` (RGB (H, W, 3) uint8) when the face is near-frontal
    (|yaw| and |pitch| ≤ :data:`FRONTAL_DEG`, from its 5 points); ``[]`` otherwise: identity
    is only compared on frames where the embedding is reliable."""
    try:
        pose = head_pose(det.landmarks_array())
    except DegenerateLandmarks:
        return []
    if abs(pose.yaw) > FRONTAL_DEG or abs(pose.pitch) > FRONTAL_DEG:
        return []
    return list(pipeline.faces_from_detections(frame, [det]))


def tracked_faces(result: FrameResult) -> list[TrackedFace]:
    """The faces of a live-loop frame result as the session takes them: (track id, the
    tracked box, O-Net's face probability and landmarks), largest first."""
    return [
        (f.track_id, Detection(box=f.box, score=f.detection_score, landmarks=f.landmarks))
        for f in result.faces
    ]


@dataclass
class IdentityChecker:
    """``(frame, detection) -> "match" | "mismatch" | "unknown"`` against one enrolled
    person, through the service (best-template score against the service's τ)."""

    service: FaceService
    name: str
    scorer: str = DISTANCE
    threshold: float | None = None
    scores: list[float] = field(default_factory=list)
    matches: int = 0
    mismatches: int = 0
    tau: float = math.nan

    def __call__(self, frame: np.ndarray, det: Detection) -> Identity:
        faces = frontal_faces(self.service.pipeline, frame, det)
        if not faces:
            return "unknown"
        res = self.service.verify(self.name, faces[0], scorer=self.scorer, threshold=self.threshold,
                                  log_event=False)
        self.scores.append(res.score)
        self.tau = res.threshold
        if res.match:
            self.matches += 1
            return "match"
        self.mismatches += 1
        return "mismatch"


@dataclass(frozen=True)
class LiveVerifyResult:
    """``accepted`` = ``identity_ok`` and ``live``; ``reasons`` names what failed."""

    person: str
    accepted: bool
    identity_ok: bool
    live: bool
    identity_checks: int
    identity_matches: int
    best_score: float
    threshold: float
    liveness: LivenessResult
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        def num(x: float) -> float | None:
            return round(float(x), 5) if math.isfinite(x) else None

        return {
            "person": self.person,
            "decision": "ACCEPT" if self.accepted else "REJECT",
            "accepted": self.accepted,
            "identity_ok": self.identity_ok,
            "live": self.live,
            "identity_checks": self.identity_checks,
            "identity_matches": self.identity_matches,
            "best_score": num(self.best_score),
            "threshold": num(self.threshold),
            "reasons": list(self.reasons),
            "liveness": self.liveness.to_dict(),
        }


def decide(checker: IdentityChecker, liveness: LivenessResult) -> LiveVerifyResult:
    """Combine the identity checks and the liveness result."""
    identity_ok = checker.matches > 0 and checker.mismatches == 0
    reasons: list[str] = []
    if not identity_ok:
        if checker.matches + checker.mismatches == 0:
            reasons.append("identity: no frontal frame of the face was checked")
        else:
            reasons.append(f"identity: {checker.mismatches} of {checker.matches + checker.mismatches} "
                           f"checks did not match {checker.name}")
    if not liveness.live:
        reasons += [f"liveness: {r}" for r in liveness.reasons]
    best = max(checker.scores) if checker.scores else -math.inf
    return LiveVerifyResult(
        person=checker.name, accepted=identity_ok and liveness.live, identity_ok=identity_ok,
        live=liveness.live, identity_checks=checker.matches + checker.mismatches,
        identity_matches=checker.matches, best_score=best, threshold=checker.tau, liveness=liveness,
        reasons=tuple(reasons),
    )


@dataclass(frozen=True)
class LiveVerifyStep:
    """One frame of a :class:`LiveVerifier`: the frame's liveness state and, once the
    attempt is over, the decision (``result``; ``None`` while it runs)."""

    frame: FrameLiveness
    result: LiveVerifyResult | None


class LiveVerifier:
    """One camera verification attempt with liveness (what the GUI's Verify page drives).

    Builds the face follower, the passive model and the identity checker; feed frames with
    :meth:`process` (from one thread) until a step carries a result.

    Args:
        service: the app's service (gallery + model).
        name: the claimed person.
        actions: the challenge (e.g. :func:`faceapp.liveness.session.draw_actions`).
        max_frames: end the attempt after this many frames even if the challenge never
            ended (e.g. no face ever seen).
        tracked: the caller passes each frame's tracked faces to :meth:`process` (from its
            live loop, as the GUI's Verify page does): no follower of its own is built.
    """

    def __init__(self, service: FaceService, name: str, actions: Sequence[Action], *,
                 scorer: str = DISTANCE, threshold: float | None = None,
                 config: ChallengeConfig | None = None, model: PassiveModel | None = None,
                 follower: FaceFollower | None = None, max_frames: int = 900,
                 tracked: bool = False) -> None:
        self.checker = IdentityChecker(service, name, scorer=scorer, threshold=threshold)
        cfg = config if config is not None else ChallengeConfig(require_identity=True)
        self.session = LivenessSession(
            model if model is not None else PassiveModel.load(),
            follower if follower is not None or tracked else FaceFollower.create(),
            actions, challenge_config=cfg, identity=self.checker,
        )
        self.max_frames = max_frames
        self.result: LiveVerifyResult | None = None

    @property
    def actions(self) -> tuple[Action, ...]:
        return self.session.actions

    def process(self, frame: np.ndarray, t: float,
                faces: Sequence[TrackedFace] | None = None) -> LiveVerifyStep:
        """Feed one frame taken at ``t`` seconds (and its tracked faces, see
        :meth:`LivenessSession.process`); after the result, frames are ignored."""
        s = self.session
        if self.result is not None:
            state = s.challenge.state if s.challenge is not None else None
            return LiveVerifyStep(FrameLiveness(s.frames, None, state, 0.0), self.result)
        fl = s.process(frame, t, faces)
        passive_only_done = not self.actions and len(s.collector) * s.model.cue_every >= s.model.window
        if s.done or passive_only_done or s.frames >= self.max_frames:
            self.result = decide(self.checker, s.finish())
        return LiveVerifyStep(fl, self.result)


@dataclass
class SameFaceChecker:
    """Identity consistency without a gallery (``faceapp liveness`` with a challenge): the
    subject's first near-frontal embedding during the challenge is the reference; every later
    near-frontal one must reach the model's calibrated cosine threshold τ against it, else
    ``"mismatch"`` (a face swapped in at the same place, which box tracking cannot see).

    ``pipeline``: detector + encoder (only the encoder is used, on the given detection);
    ``tau``: the model's calibrated threshold of the ``distance`` scorer (cosine similarity).
    """

    pipeline: FacePipeline
    tau: float
    reference: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    similarities: list[float] = field(default_factory=list)

    @classmethod
    def from_model(cls, model_path: str | os.PathLike[str] | None = None,
                   device: str = "cpu") -> SameFaceChecker:
        """Load the encoder checkpoint (default ``models/default.pt``) and its calibration."""
        path = Path(model_path) if model_path is not None else default_model_path()
        pipeline = FacePipeline.from_paths(path, device=device)
        cal = Calibration.load_for(path, pipeline.model_id)
        return cls(pipeline, float(cal.threshold(DISTANCE)))

    def __call__(self, frame: np.ndarray, det: Detection) -> Identity:
        faces = frontal_faces(self.pipeline, frame, det)
        if not faces:
            return "unknown"
        emb = np.asarray(faces[0].embedding, dtype=np.float32)
        if self.reference.size == 0:
            self.reference = emb
            return "match"
        sim = float(emb @ self.reference)
        self.similarities.append(sim)
        return "match" if sim >= self.tau else "mismatch"
