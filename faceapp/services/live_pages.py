"""What the Enroll and Verify pages decide on each frame of the live loop (Qt-free).

Every live page runs the same loop (:class:`~faceapp.services.live.LiveRecognizer`);
Recognize decides through its matcher, Enroll and Verify run it without one
(:class:`~faceapp.services.live.NoMatcher`) and decide on its tracked faces here, so that
the GUI only draws what they return and ``faceapp bench frame`` can run each page's
configuration without Qt:

* :class:`CaptureGuide` (Enroll) looks at one ``FrameResult`` and decides the advice shown
  over the video ("Hold still", "Look at the camera", "Good: capturing…"), whether the
  tracked face becomes a sample now (a fresh, good measurement, at most one per
  ``capture_interval_s``), and whether the loop should measure the face again on the next
  frame;
* :class:`TrackedVerifier` (Verify) scores the largest tracked face against the claimed
  person on each of its new embeddings (``FaceService.verify``, the service's τ).

This module is kept out of :mod:`faceapp.services.live` (whose import loads torch) so that
the GUI can import it at start-up.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from faceapp.services import FaceService
    from faceapp.services.live import FrameResult
    from faceapp.services.results import VerifyResult

Tone = Literal["bad", "neutral", "good", "info"]


@dataclass(frozen=True)
class Sample:
    """One face kept for enrolment: the service's ``FaceEmbedding`` and where it came from."""

    face: Any
    source: str


@dataclass(frozen=True)
class Guidance:
    """The outcome of one frame: ``text`` in ``tone`` over ``boxes`` (frame pixels);
    ``sample`` to keep now (or ``None``); ``measure``: ask the loop for a new measurement
    on the next frame (a sample is due); ``remeasure``: the same, rate-limited (the advice
    is not Good; see :meth:`CaptureGuide.wants_measure`); ``done``: the target count is
    reached (capture stops)."""

    text: str
    tone: Tone
    boxes: tuple[tuple[float, ...], ...] = ()
    sample: Sample | None = None
    measure: bool = False
    remeasure: bool = False
    done: bool = False


def advice(reason: str) -> str:
    """The user instruction in a quality reason ("too blurred (...): hold still" -> "Hold still")."""
    _head, sep, tail = reason.rpartition(": ")
    text = tail if sep else reason
    return text[:1].upper() + text[1:]


def box_center_shift(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Distance between two box centres, relative to the mean box width."""
    ca = ((a[0] + a[2]) / 2, (a[1] + a[3]) / 2)
    cb = ((b[0] + b[2]) / 2, (b[1] + b[3]) / 2)
    width = max(1e-6, ((a[2] - a[0]) + (b[2] - b[0])) / 2)
    return float(np.hypot(ca[0] - cb[0], ca[1] - cb[1]) / width)


class CaptureGuide:
    """Per-stream state of the Enroll page's capture (see the module docstring): the page
    only draws and stores what :meth:`step` returns.

    ``max_shift``: "hold still" above this box-centre move between frames (× face width);
    ``capture_interval_s``: at least this long between two samples; ``remeasure_s``: while
    the advice is not Good, a new measurement at most this often; ``clock``: seconds.
    """

    def __init__(self, *, max_shift: float = 0.15, capture_interval_s: float = 0.4,
                 remeasure_s: float = 0.2, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_shift = max_shift
        self.capture_interval_s = capture_interval_s
        self.remeasure_s = remeasure_s
        self._last_remeasure = -1e9
        self.capturing = False
        self._clock = clock
        self._last_box: tuple[float, ...] | None = None
        self._last_capture = 0.0

    def new_stream(self) -> None:
        """A new camera or video: the next face has no previous position."""
        self._last_box = None

    def wants_measure(self, g: Guidance) -> bool:
        """Should the loop measure the face again on the next frame after ``g``? Yes when a
        sample is due (``g.measure``); when the advice asks for it (``g.remeasure``), only if
        the last such request is ``remeasure_s`` old."""
        if g.measure:
            return True
        if g.remeasure:
            now = self._clock()
            if now - self._last_remeasure >= self.remeasure_s:
                self._last_remeasure = now
                return True
        return False

    def step(self, live: FrameResult, seq: int, n_samples: int, target: int) -> Guidance:
        """The guidance for the live loop's ``FrameResult`` ``live`` (frame number ``seq``)
        with ``n_samples`` kept of ``target``."""
        faces = list(live.faces)
        if not faces:
            self._last_box = None
            return Guidance("No face: look at the camera", "neutral")
        if len(faces) > 1:
            self._last_box = None
            return Guidance("Several faces: only the person enrolling should be in view", "bad",
                            tuple(tuple(f.box) for f in faces), remeasure=True)
        tracked = faces[0]
        box = tuple(tracked.box)
        quality = tracked.face.quality
        moved = self._last_box is not None and box_center_shift(self._last_box, box) > self.max_shift
        self._last_box = box
        if not quality.ok:
            text = advice(quality.reasons[0]) if quality.reasons else "Low quality"
            return Guidance(text, "bad", (box,), remeasure=True)
        if moved:
            return Guidance("Hold still", "neutral", (box,), remeasure=True)
        if not self.capturing:
            # good and not capturing: the loop re-measures a moving or turning face itself
            return Guidance("Good: press Start capture", "info", (box,))
        sample = None
        done = False
        now = self._clock()
        if tracked.fresh and now - self._last_capture >= self.capture_interval_s:
            self._last_capture = now
            sample = Sample(tracked.face, f"camera frame {seq}")
            done = n_samples + 1 >= target
        text = "Done: review the samples and save" if done else "Good: capturing…"
        # the next sample is measured on the first frame after it is due
        due = not done and self._clock() - self._last_capture >= self.capture_interval_s
        return Guidance(text, "good", (box,), sample=sample, measure=due, done=done)


@dataclass(frozen=True)
class VerifyStep:
    """The outcome of one frame for Verify: the service's ``VerifyResult`` for the largest
    tracked face (``None`` when the frame holds no face, or when that face was not embedded
    again on this frame: its last score stands) and its tracked box (``None``: no face)."""

    result: VerifyResult | None
    box: tuple[float, float, float, float] | None


class TrackedVerifier:
    """Verify's decision on the live loop's tracked faces: the largest one, scored against
    ``name`` with ``scorer`` on each of its new embeddings (``fresh``), by
    ``service.verify(..., log_event=False)``; τ is the service's own (its τ policy, shared
    with every page), never a copy held here. Fusing the scores (the median of a window) is
    the caller's."""

    def __init__(self, service: FaceService, name: str, scorer: str) -> None:
        self.service = service
        self.name = name
        self.scorer = scorer

    def step(self, live: FrameResult) -> VerifyStep:
        """The :class:`VerifyStep` of the live loop's ``FrameResult`` ``live``."""
        if not live.faces:
            return VerifyStep(None, None)
        top = live.faces[0]  # the largest
        x1, y1, x2, y2 = (float(v) for v in top.box)
        box = (x1, y1, x2, y2)
        if not top.fresh or top.face is None:  # tracked, not embedded again: no new score
            return VerifyStep(None, box)
        return VerifyStep(self.service.verify(self.name, top.face, scorer=self.scorer, log_event=False), box)
