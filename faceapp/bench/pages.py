"""The live loop configured as each camera page, for ``faceapp bench frame`` (Qt-free).

Every live page runs :class:`~faceapp.services.live.LiveRecognizer`; they differ in what
decides on its tracked faces and in when they ask it to measure a face again:

* ``recognize``: the loop's own matcher (:class:`~faceapp.services.live.CacheMatcher`), the
  recognizer as it is;
* ``enroll`` (:class:`EnrollLoop`): no matcher, :class:`~faceapp.services.live_pages.CaptureGuide`
  capturing, with the Enroll page's measurement requests (``CaptureGuide.wants_measure``: a
  new measurement when a sample is due; while the advice is not Good, at most every
  ``remeasure_s``); when the target count
  is reached, capture starts again (as if *Start capture* were pressed at once), so that the
  whole video is played while capturing;
* ``verify`` (:class:`VerifyLoop`): no matcher, :class:`~faceapp.services.live_pages.TrackedVerifier`
  against the claimed person, with the Verify page's requests (a new measurement on every
  frame while its window of ``window`` scores is filling).

Each has ``process(frame) -> FrameResult`` and ``reset()`` (a new video), so that
:func:`faceapp.bench.frame.play_realtime` plays any of them as a camera would.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

import numpy as np

from faceapp.services.live import FrameResult, LiveRecognizer
from faceapp.services.live_pages import CaptureGuide, TrackedVerifier

PAGES = ("recognize", "enroll", "verify")


class FrameLoop(Protocol):
    """What :func:`faceapp.bench.frame.play_realtime` plays: a recognizer, or a page's loop."""

    def process(self, frame: np.ndarray) -> FrameResult: ...


class EnrollLoop:
    """The Enroll page's configuration of the live loop, capturing (see the module docstring).

    ``target``: samples per enrolment (the Settings default, 5).
    """

    def __init__(self, recognizer: LiveRecognizer, *, target: int = 5,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.recognizer = recognizer
        self.guide = CaptureGuide(clock=clock)  # the page's settings (capture, re-measurement)
        self.target = target
        self.samples = 0
        """Samples kept in all (every enrolment of the run)."""
        self.enrolments = 0
        """Times the target count was reached."""
        self._n = 0  # samples of the current enrolment
        self._seq = 0
        self._measure = False
        self._start()

    def _start(self) -> None:
        self._n = 0
        self.guide.capturing = True
        self.guide.new_stream()
        self._measure = True  # the first sample is measured on its own frame

    def reset(self) -> None:
        """A new video: forget every track, start capturing again."""
        self.recognizer.reset()
        self._start()

    def process(self, frame: np.ndarray) -> FrameResult:
        if self._measure:
            self.recognizer.forget_decisions()
            self._measure = False
        live = self.recognizer.process(frame)
        self._seq += 1
        g = self.guide.step(live, self._seq, self._n, self.target)
        if g.sample is not None:
            self._n += 1
            self.samples += 1
        if g.done:
            self.enrolments += 1
            self._start()
        elif self.guide.wants_measure(g):
            self._measure = True
        return live


class VerifyLoop:
    """The Verify page's configuration of the live loop (see the module docstring):
    ``window`` is the page's fusing window (the Settings default, 7 scores)."""

    def __init__(self, recognizer: LiveRecognizer, verifier: TrackedVerifier, *, window: int = 7) -> None:
        self.recognizer = recognizer
        self.verifier = verifier
        self.window: deque[float] = deque(maxlen=max(1, window))
        self.scored = 0
        """Scores computed in all (new embeddings of the largest face)."""
        self.matched = 0
        """... of which accepted (``VerifyResult.match``: score ≥ the service's τ)."""
        self._measure = True

    def reset(self) -> None:
        """A new video: forget every track, empty the window."""
        self.recognizer.reset()
        self.window.clear()
        self._measure = True

    def process(self, frame: np.ndarray) -> FrameResult:
        if self._measure:
            self.recognizer.forget_decisions()
            self._measure = False
        live = self.recognizer.process(frame)
        step = self.verifier.step(live)
        if step.result is not None:
            self.window.append(float(step.result.score))
            self.scored += 1
            self.matched += bool(step.result.match)
        if step.box is not None:
            self._measure = len(self.window) < (self.window.maxlen or 1)  # fill the window
        return live
