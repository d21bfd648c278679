"""Presentation-attack detection cues, Qt-free and model-free: head pose from five
landmarks, a blink cue, the challenge state machine and the passive image / motion cues.

Orchestration over a video (detector, tracker, identity) lives in :mod:`faceapp.liveness`.
"""

from faceapp.vision.liveness.challenge import (
    POSE_ACTIONS,
    Action,
    Challenge,
    ChallengeConfig,
    ChallengeState,
    FaceObservation,
    Identity,
    Status,
    parse_actions,
    random_actions,
    sequence_count,
)
from faceapp.vision.liveness.pose import DegenerateLandmarks, HeadPose, head_pose

__all__ = [
    "POSE_ACTIONS",
    "Action",
    "Challenge",
    "ChallengeConfig",
    "ChallengeState",
    "DegenerateLandmarks",
    "FaceObservation",
    "HeadPose",
    "Identity",
    "Status",
    "head_pose",
    "parse_actions",
    "random_actions",
    "sequence_count",
]
