"""``frame.liveness``: what the liveness session adds per frame on top of the live loop
(``ms_mean``, ``ms_p95``, ``live_capacity_fps_with_liveness``), on the frame benchmark's
videos letterboxed to 640×480."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from faceapp.bench.stats import percentile

LIVENESS_FRAME = (640, 480)
LIVENESS_TARGET_MS = 15.0


def _letterbox(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``frame`` scaled to fit ``size`` = (w, h) and centred on black (H, W, 3) uint8."""
    from PIL import Image

    w, h = size
    k = min(w / frame.shape[1], h / frame.shape[0])
    nw, nh = max(1, round(frame.shape[1] * k)), max(1, round(frame.shape[0] * k))
    small = np.asarray(Image.fromarray(frame).resize((nw, nh), Image.BILINEAR))
    out = np.zeros((h, w, 3), dtype=np.uint8)
    y0, x0 = (h - nh) // 2, (w - nw) // 2
    out[y0 : y0 + nh, x0 : x0 + nw] = small
    return out


def bench_liveness(videos: Sequence[Sequence[np.ndarray]], *, live_capacity_fps: float) -> dict[str, Any]:
    """What liveness adds per frame on top of the live loop's detection and tracking (head
    pose, blink cue, passive cues on every ``cue_every``-th frame, the challenge step), on
    the videos letterboxed to 640×480; ``live_capacity_fps_with_liveness``: the live loop's
    capacity (frames per second of process time) with that cost added."""
    from faceapp.liveness.model import PassiveModel
    from faceapp.liveness.session import FaceFollower, LivenessSession, draw_actions

    model = PassiveModel.load()
    follower = FaceFollower.create()
    per_frame: list[float] = []
    for frames in videos:
        session = LivenessSession(model, follower, draw_actions("auto", 0))
        follower.reset()
        for i, frame in enumerate(frames):
            res = session.process(_letterbox(frame, LIVENESS_FRAME), i / 30.0)
            if res.box is not None and i > 0:  # the first frame warms up
                per_frame.append(res.liveness_ms)
    mean = float(np.mean(per_frame)) if per_frame else float("nan")
    with_live = float("nan")
    if live_capacity_fps > 0 and per_frame:
        with_live = 1000.0 / (1000.0 / live_capacity_fps + mean)
    return {
        "frame_size": f"{LIVENESS_FRAME[0]}x{LIVENESS_FRAME[1]}",
        "frames_with_face": len(per_frame),
        "ms_mean": round(mean, 3),
        "ms_p50": percentile(per_frame, 50),
        "ms_p95": percentile(per_frame, 95),
        "target_ms": LIVENESS_TARGET_MS,
        "cue_every": model.cue_every,
        "live_capacity_fps_with_liveness": round(with_live, 2),
    }
