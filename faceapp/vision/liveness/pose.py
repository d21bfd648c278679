"""Head pose (yaw, pitch, roll) from MTCNN's five landmarks, pure geometry.

Five points cannot give a full 3-D pose, but they give the three angles a liveness
challenge needs, to a few degrees, from one simple face model:

* **roll**: the angle of the eye line;
* **yaw**: after undoing the roll, the nose tip's horizontal offset from the face's midline
  (the line through the mid-eye and mid-mouth points), in eye distances. A nose tip ``d``
  eye distances in front of the eye/mouth plane at yaw θ shows an offset ``d·tan θ``
  (the eye distance itself shrinks with cos θ), so ``yaw = atan(offset / d)``;
* **pitch**: the nose tip's vertical position between the eye line and the mouth line,
  compared with its position in a frontal face (the ArcFace 5-point template), in
  eye-to-mouth distances; ``pitch = atan(Δ / d')`` with ``d'`` the nose depth in
  eye-to-mouth distances.

The depths ``d`` and ``d'`` are anthropometric averages (nose tip ≈ 0.55 eye distances,
≈ 0.5 eye-to-mouth distances in front of the eye/mouth plane); the angles are therefore
approximate degrees, good for "has the head turned by ≳ 15°", not for measurement.

Sign conventions (in the person's own frame, for an unmirrored camera image):
``yaw > 0`` the person turned to **their left** (their nose moves to the image's right);
``pitch > 0`` the person looks **up**; ``roll > 0`` the head tilts towards the person's
left shoulder (the eye line turns clockwise in the image). A mirrored preview flips the
sign of yaw and roll (:func:`head_pose` ``mirrored=True``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from faceapp.vision.alignment import AlignmentTemplate

NOSE_DEPTH_EYE = 0.55
"""Nose-tip depth in front of the eye/mouth plane, in inter-ocular distances (average face)."""
NOSE_DEPTH_MOUTH = 0.5
"""The same depth in eye-line-to-mouth-line distances."""


def _frontal_nose_ratio() -> float:
    """Where the nose tip sits between eye line (0) and mouth line (1) in a frontal face,
    read off the canonical 5-point template (the same one alignment uses)."""
    pts = AlignmentTemplate.for_size(112).array()
    eye_y = (pts[0, 1] + pts[1, 1]) / 2.0
    mouth_y = (pts[3, 1] + pts[4, 1]) / 2.0
    return float((pts[2, 1] - eye_y) / (mouth_y - eye_y))


@dataclass(frozen=True)
class HeadPose:
    """Approximate head angles in degrees (see the module docstring for signs).

    ``yaw_offset``: nose offset from the midline in eye distances (signed like ``yaw``);
    ``pitch_offset``: nose vertical offset from its frontal position in eye-to-mouth
    distances (signed like ``pitch``); ``eye_distance``: in pixels.
    """

    yaw: float
    pitch: float
    roll: float
    yaw_offset: float
    pitch_offset: float
    eye_distance: float

    def to_dict(self) -> dict[str, float]:
        return {k: round(float(v), 3) for k, v in self.__dict__.items()}


class DegenerateLandmarks(ValueError):
    """The five points do not describe a face (eyes on top of each other, mouth on the eye line)."""


def head_pose(landmarks: np.ndarray, *, mirrored: bool = False) -> HeadPose:
    """Head pose from five landmarks.

    Args:
        landmarks: (5, 2) float (x, y) pixels in MTCNN's order: left eye, right eye, nose,
            left mouth corner, right mouth corner (image left / right).
        mirrored: the image is a mirrored (selfie-preview) view.
    Returns:
        :class:`HeadPose`.
    Raises:
        DegenerateLandmarks: eye distance or eye-to-mouth distance below 1e-6 px.
    """
    pts = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    if mirrored:
        pts = pts.copy()
        pts[:, 0] = -pts[:, 0]
        pts = pts[[1, 0, 2, 4, 3]]  # image-left/right swap places in a mirror
    left_eye, right_eye = pts[0], pts[1]
    eye_vec = right_eye - left_eye
    eye_dist = float(np.hypot(*eye_vec))
    if eye_dist < 1e-6:
        raise DegenerateLandmarks("the two eye landmarks coincide")
    roll = math.atan2(float(eye_vec[1]), float(eye_vec[0]))
    c, s = math.cos(-roll), math.sin(-roll)
    rot = np.array([[c, -s], [s, c]])
    mid_eye = (left_eye + right_eye) / 2.0
    p = (pts - mid_eye) @ rot.T  # de-rolled, mid-eye at the origin, eye line along +x
    mid_mouth = (p[3] + p[4]) / 2.0
    mouth_h = float(mid_mouth[1])
    if abs(mouth_h) < 1e-6:
        raise DegenerateLandmarks("the mouth lies on the eye line")
    nose = p[2]
    # the midline runs from the origin (mid-eye) to mid-mouth; its x at the nose's height
    mid_x = float(mid_mouth[0]) * float(nose[1]) / mouth_h
    yaw_off = (float(nose[0]) - mid_x) / eye_dist
    pitch_off = _frontal_nose_ratio() - float(nose[1]) / mouth_h  # nose higher -> looking up
    return HeadPose(
        yaw=math.degrees(math.atan(yaw_off / NOSE_DEPTH_EYE)),
        pitch=math.degrees(math.atan(pitch_off / NOSE_DEPTH_MOUTH)),
        roll=math.degrees(roll),
        yaw_offset=yaw_off,
        pitch_offset=pitch_off,
        eye_distance=eye_dist,
    )
