"""A blink cue from the five MTCNN landmarks and the pixels around the eyes (no extra model).

Choice: MTCNN gives each eye's centre but no eyelid contour, and the landmark models that
would give one either restrict commercial use (dlib's 68-point predictor, trained on
iBUG 300-W) or pin numpy < 2 (mediapipe 0.10.21). An open eye, however, is the most
contrasted patch of a face: dark iris and pupil between white sclera, crossed by vertical
edges; a closed eye is a patch of skin with one horizontal lash line. So the cue is

    openness = std(eye patch) × mean |∂/∂x (eye patch)|

on grey-level patches around both eye centres, in a face crop normalised by the 5-point
similarity (so the patch covers the same part of every face at any distance or roll),
averaged over the two eyes. A blink shows as a dip of this value to ~0.5–0.65 of the
person's own open-eye level for 2–5 frames (measured on the annotated blinks of
``liveportrait_blinks/d13.mp4``, where no other frame dips below 0.7; see
``tests/test_liveness_cues.py``). The value has no absolute meaning: the challenge divides
it by the median over the person's first frames (:class:`ChallengeConfig` ``blink_*``).
Looking down also lowers it (the lids drop), which the challenge tolerates because blinks
are never counted as wrong actions.
"""

from __future__ import annotations

import numpy as np

from faceapp.vision.alignment import AlignmentTemplate, estimate_alignment, warp

CROP = 64
"""Side of the normalised face crop the cue works on (the cue's own scale, independent of
the encoder's input size)."""
_PATCH_W, _PATCH_H = 14, 9  # eye patch in crop pixels (≈ 0.4 × 0.25 of the eye distance ×2)

_GREY = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def eye_openness(frame: np.ndarray, landmarks: np.ndarray) -> float:
    """The eye-openness cue of one face (larger = more open; relative, see module doc).

    Args:
        frame: (H, W, 3) uint8 RGB.
        landmarks: (5, 2) float MTCNN points of the face in ``frame`` pixels.
    Returns:
        A non-negative float; 0 for a patch outside the frame (black fill).
    """
    template = AlignmentTemplate.for_size(CROP)
    matrix = estimate_alignment(np.asarray(landmarks, dtype=np.float64), template)
    crop = warp(frame, matrix, CROP).astype(np.float32) @ _GREY
    values = []
    for ex, ey in template.points[:2]:
        x0 = round(ex - _PATCH_W / 2)
        y0 = round(ey - _PATCH_H / 2)
        patch = crop[y0 : y0 + _PATCH_H, x0 : x0 + _PATCH_W]
        gx = float(np.abs(np.diff(patch, axis=1)).mean())
        values.append(float(patch.std()) * gx)
    return float(np.mean(values))
