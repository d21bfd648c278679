"""Background work without freezing the window.

* :class:`Task` + :class:`TaskRunner`: one long job (open a gallery, re-embed, calibrate,
  import...) on a thread pool, reporting ``started`` / ``progress`` / ``returned`` /
  ``errored`` / ``aborted`` / ``finished`` through signals (the shape of superqt's
  workers) and stopping cooperatively when :meth:`Task.abort` is called.
* :class:`FrameWorker`: the live-camera loop. Frames are handed to a Qt-free processing
  callable (a :mod:`faceapp.services` call) on a dedicated ``QThread``. It holds at most
  one frame: a frame that arrives while the previous one is still being processed is
  **dropped** (and counted), never queued, so results never lag behind the preview.
  Processed-frames-per-second, camera FPS and latency are published as :class:`FrameStats`.
* :class:`LiveSession`: the live loop every live page runs on its frame worker (one
  :class:`faceapp.services.live.LiveRecognizer`: detection every few frames, tracking in
  between, embedding only new or changed faces); :func:`tracking_session` builds the one
  of Enroll and Verify (no 1:K matching: they decide on each tracked face's embedding).

All bookkeeping (busy flag, counters) happens in the GUI thread; the worker thread only
runs the callable. The callables must not touch Qt objects.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, QRunnable, QThread, QThreadPool, Signal, Slot

from faceapp.errors import FaceappError

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, str], None]
"""``progress(done, total, message)``; ``total`` 0 means unknown."""
StopFn = Callable[[], bool]
"""``should_stop() -> bool``: true once the user cancelled."""
TaskFn = Callable[[ProgressFn, StopFn], Any]


def describe_error(err: BaseException) -> str:
    """One line for the status bar / a dialog: the message of expected errors, the type of others."""
    if isinstance(err, FaceappError):
        return str(err)
    text = str(err)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


class Task(QObject):
    """One long job. ``func(progress, should_stop)`` runs on a pool thread.

    Signals, in order: ``started()``; any number of ``progress(done, total, message)``;
    then exactly one of ``returned(object)`` (the function's result), ``aborted()`` (the
    task was cancelled and the function returned early) or ``errored(object)`` (the
    exception it raised); and last ``finished()``.
    """

    started = Signal()
    progress = Signal(int, int, str)
    returned = Signal(object)
    errored = Signal(object)
    aborted = Signal()
    finished = Signal()

    def __init__(self, func: TaskFn, *, name: str = "task", parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.name = name
        self._func = func
        self._stop = threading.Event()
        self._done = threading.Event()
        self._running = False

    @classmethod
    def call(cls, fn: Callable[..., Any], *args: Any, name: str = "task", **kwargs: Any) -> Task:
        """A task for a plain function that takes no progress / cancel callbacks."""
        return cls(lambda _progress, _stop: fn(*args, **kwargs), name=name)

    def abort(self) -> None:
        """Ask the function to stop at its next ``should_stop()`` check."""
        self._stop.set()

    def should_stop(self) -> bool:
        return self._stop.is_set()

    def is_done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until the function has returned; true if it did within ``timeout_s``."""
        return self._done.wait(timeout_s)

    def _report(self, done: int, total: int, message: str = "") -> None:
        self.progress.emit(int(done), int(total), str(message))

    def run(self) -> None:
        """Run the function in the calling thread (the pool calls this)."""
        self.started.emit()
        try:
            result = self._func(self._report, self.should_stop)
        except Exception as err:  # every failure becomes a signal, never a crash
            if not isinstance(err, FaceappError):
                log.exception("task %s failed", self.name)
            self._done.set()
            self.errored.emit(err)
        else:
            self._done.set()
            if self._stop.is_set():
                self.aborted.emit()
            else:
                self.returned.emit(result)
        self.finished.emit()


class _TaskRunnable(QRunnable):
    def __init__(self, task: Task) -> None:
        super().__init__()
        self.setAutoDelete(True)
        self._task = task

    def run(self) -> None:
        self._task.run()


class TaskRunner(QObject):
    """Runs :class:`Task` objects on its own thread pool and keeps them alive until done.

    ``busyChanged(bool)`` tells whether any task is running (for a busy indicator).
    """

    busyChanged = Signal(bool)

    def __init__(self, max_threads: int = 2, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(max(1, max_threads))
        self._active: set[Task] = set()

    def submit(self, task: Task) -> Task:
        """Start ``task`` in the pool; returns it (connect its signals before submitting)."""
        self._active.add(task)
        task.finished.connect(self._on_task_finished)  # a bound slot: dropped with the runner
        if len(self._active) == 1:
            self.busyChanged.emit(True)
        self._pool.start(_TaskRunnable(task))
        return task

    def run(self, func: TaskFn, *, name: str = "task") -> Task:
        """Convenience: ``submit(Task(func, name=name))`` (signals connected after start
        still fire, because they are delivered through the GUI event loop)."""
        return self.submit(Task(func, name=name))

    @Slot()
    def _on_task_finished(self) -> None:
        task = self.sender()
        if isinstance(task, Task):
            self._forget(task)

    def _forget(self, task: Task) -> None:
        self._active.discard(task)
        if not self._active:
            self.busyChanged.emit(False)

    def active(self) -> list[Task]:
        return list(self._active)

    def is_busy(self) -> bool:
        return bool(self._active)

    def abort_all(self) -> None:
        for task in list(self._active):
            task.abort()

    def wait(self, timeout_ms: int = -1) -> bool:
        """Block until every submitted task has finished (true) or the timeout passed."""
        return self._pool.waitForDone(timeout_ms)


@dataclass(frozen=True)
class ProcessedFrame:
    """The outcome of processing one frame.

    ``frame``: the ``(H, W, 3) uint8`` RGB frame that was processed; ``value``: what the
    processing callable returned; ``latency_s``: its run time in seconds; ``seq``: the
    frame's number among all submitted frames.
    """

    seq: int
    frame: np.ndarray
    value: Any
    latency_s: float


@dataclass(frozen=True)
class FrameStats:
    """Live-loop counters. ``fps``: processed frames per second; ``input_fps``: frames offered
    per second; ``latency_ms``: mean processing time of the recent frames."""

    fps: float
    input_fps: float
    latency_ms: float
    processed: int
    dropped: int
    failed: int

    def text(self) -> str:
        return (
            f"{self.fps:4.1f} fps · {self.latency_ms:4.0f} ms · "
            f"camera {self.input_fps:4.1f} fps · dropped {self.dropped}"
        )


class _FrameProcessor(QObject):
    """Lives in the worker thread; runs the callable on one frame at a time."""

    done = Signal(int, int, object, object, float)  # generation, seq, frame, value, latency
    failed = Signal(int, int, object, float)  # generation, seq, exception, latency

    def __init__(self) -> None:
        super().__init__()
        self.process: Callable[[np.ndarray], Any] | None = None

    @Slot(int, int, object, object)
    def handle(self, generation: int, seq: int, frame: object, process: object) -> None:
        t0 = time.perf_counter()
        try:
            value = process(frame)  # type: ignore[operator]
        except Exception as err:  # reported, the loop keeps running
            if not isinstance(err, FaceappError):
                log.exception("frame processing failed")
            self.failed.emit(generation, seq, err, time.perf_counter() - t0)
            return
        self.done.emit(generation, seq, frame, value, time.perf_counter() - t0)


class FrameWorker(QObject):
    """Processes live frames on a dedicated thread, dropping frames while busy.

    ``process(frame) -> value`` is a Qt-free callable taking an ``(H, W, 3) uint8`` RGB
    array. :meth:`submit` returns ``False`` (and counts a drop) when the previous frame is
    still being processed. Signals: ``resultReady(ProcessedFrame)``,
    ``errorOccurred(str)``, ``statsChanged(FrameStats)``.
    """

    resultReady = Signal(object)
    errorOccurred = Signal(str)
    statsChanged = Signal(object)
    _request = Signal(int, int, object, object)

    def __init__(
        self,
        process: Callable[[np.ndarray], Any] | None = None,
        *,
        window_s: float = 2.0,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self._process = process
        self._generation = 0
        self._seq = 0
        self._busy = False
        self.processed = 0
        self.dropped = 0
        self.failed = 0
        self._window_s = window_s
        self._done_times: deque[float] = deque()
        self._input_times: deque[float] = deque()
        self._latencies: deque[float] = deque(maxlen=20)
        self._thread = QThread()
        self._thread.setObjectName("FrameWorker")
        self._worker = _FrameProcessor()
        self._worker.moveToThread(self._thread)
        self._request.connect(self._worker.handle)
        self._worker.done.connect(self._on_done)
        self._worker.failed.connect(self._on_failed)

    # control ----------------------------------------------------------------------
    def start(self) -> None:
        if not self._thread.isRunning():
            self._thread.start()

    def stop(self, wait_ms: int = 10_000) -> bool:
        """Stop the thread (after the frame being processed, if any); true if it stopped."""
        if not self._thread.isRunning():
            return True
        self._thread.quit()
        ok = self._thread.wait(wait_ms)
        self._busy = False
        return bool(ok)

    def is_running(self) -> bool:
        return self._thread.isRunning()

    def is_busy(self) -> bool:
        return self._busy

    def set_process(self, process: Callable[[np.ndarray], Any] | None) -> None:
        """Swap the callable; results of frames already in flight are discarded."""
        self._process = process
        self._generation += 1
        self._busy = False  # a result from the old generation may still arrive: ignored

    def reset_stats(self) -> None:
        self.processed = self.dropped = self.failed = 0
        self._done_times.clear()
        self._input_times.clear()
        self._latencies.clear()

    # frames -------------------------------------------------------------------------
    def submit(self, frame: np.ndarray) -> bool:
        """Offer a frame. Returns true if it will be processed, false if it was dropped."""
        now = time.monotonic()
        self._input_times.append(now)
        self._trim(self._input_times, now)
        if self._process is None or not self._thread.isRunning():
            return False
        if self._busy:
            self.dropped += 1
            return False
        self._busy = True
        self._seq += 1
        self._request.emit(self._generation, self._seq, frame, self._process)
        return True

    def _trim(self, times: deque[float], now: float) -> None:
        while times and now - times[0] > self._window_s:
            times.popleft()

    def _rate(self, times: deque[float], now: float) -> float:
        self._trim(times, now)
        if len(times) < 2:
            return 0.0
        span = max(now - times[0], 1e-6)
        return (len(times) - 1) / span if span > 0 else 0.0

    def stats(self) -> FrameStats:
        now = time.monotonic()
        lat = 1000.0 * float(np.mean(self._latencies)) if self._latencies else 0.0
        return FrameStats(
            fps=self._rate(self._done_times, now),
            input_fps=self._rate(self._input_times, now),
            latency_ms=lat,
            processed=self.processed,
            dropped=self.dropped,
            failed=self.failed,
        )

    def _finish(self, generation: int, latency: float) -> bool:
        if generation != self._generation:
            return False
        self._busy = False
        now = time.monotonic()
        self._done_times.append(now)
        self._latencies.append(latency)
        return True

    def _on_done(self, generation: int, seq: int, frame: object, value: object, latency: float) -> None:
        if not self._finish(generation, latency):
            return
        self.processed += 1
        self.resultReady.emit(ProcessedFrame(seq, frame, value, latency))  # type: ignore[arg-type]
        self.statsChanged.emit(self.stats())

    def _on_failed(self, generation: int, _seq: int, err: object, latency: float) -> None:
        if not self._finish(generation, latency):
            return
        self.failed += 1
        self.errorOccurred.emit(describe_error(err))  # type: ignore[arg-type]
        self.statsChanged.emit(self.stats())


class LiveSession:
    """One :class:`faceapp.services.live.LiveRecognizer` driven by a frame worker (Qt-free).

    The recognizer is only used from the worker's thread: :meth:`process` runs there, and
    the GUI thread's requests (:meth:`request_reset`, :meth:`request_forget`) are applied
    at the start of the next frame. τ is not the session's: the recognizer reads the
    service's τ policy on every frame.
    :meth:`close` waits for a frame in progress, then stops the recognizer's detection
    thread; a closed session processes nothing (``process`` returns ``None``).
    """

    def __init__(self, recognizer: Any) -> None:
        self.recognizer = recognizer
        self._running = threading.Lock()  # held while a frame is processed
        self._requests = threading.Lock()
        self._reset = False
        self._forget = False
        self._closed = False

    def process(self, frame: np.ndarray) -> Any:
        """The recognizer's ``FrameResult`` for an ``(H, W, 3) uint8`` RGB frame (worker thread)."""
        with self._running:
            if self._closed:
                return None
            with self._requests:
                reset, forget = self._reset, self._forget
                self._reset = self._forget = False
            if reset:
                self.recognizer.reset()
            elif forget:
                self.recognizer.forget_decisions()
            return self.recognizer.process(frame)

    def request_reset(self) -> None:
        """A new stream: forget every track before the next frame."""
        with self._requests:
            self._reset = True

    def request_forget(self) -> None:
        """Embed every face again on the next frame (the gallery changed, or a page wants a
        fresh measurement: Enroll before a sample, Verify while its window fills)."""
        with self._requests:
            self._forget = True

    def close(self) -> None:
        """Stop the recognizer once no frame is in progress (blocks until then; idempotent)."""
        with self._running:
            self._closed = True
            self.recognizer.close()

    @property
    def closed(self) -> bool:
        return self._closed


def tracking_session(service: Any, config: Any = None) -> LiveSession:
    """A live session on ``service``'s pipeline that tracks and embeds faces without 1:K
    matching (``LiveFace.face`` is each face's latest ``FaceEmbedding``), for the Enroll and
    Verify pages. ``config``: a ``services.live.LiveConfig`` (``None``: its defaults).
    Raises the services' errors (e.g. no model loaded)."""
    # imported here, not at the top: importing the GUI must not load torch
    from faceapp.services.live import LiveConfig, LiveRecognizer

    return LiveSession(LiveRecognizer(service.pipeline, None, config if config is not None else LiveConfig()))


class TrackedLoop:
    """The live session of a page that decides on the tracked faces itself (Enroll,
    Verify), managed from the GUI thread.

    :meth:`session` builds it on first use for a service (:func:`tracking_session` with
    :attr:`config`) and calls ``on_new(session)`` so that the page installs its processing
    callable on its worker; a new service or config retires the old session, which is closed
    through ``close_later(fn)`` (a background task) once its frame in flight is done.
    """

    def __init__(self, worker: FrameWorker, close_later: Callable[[Callable[[], None]], None],
                 on_new: Callable[[LiveSession], None]) -> None:
        self.worker = worker
        self.config: Any = None
        self._close_later = close_later
        self._on_new = on_new
        self._service: Any = None
        self._session: LiveSession | None = None

    @property
    def current(self) -> LiveSession | None:
        return self._session

    def session(self, service: Any) -> LiveSession | None:
        """The session for ``service`` (``None``: no service); raises the services' errors."""
        if service is not self._service:
            self.retire()
            self._service = service
        if self._session is None and service is not None:
            self._session = tracking_session(service, self.config)
            self._on_new(self._session)
        return self._session

    def set_config(self, config: Any) -> None:
        """Use ``config`` (a ``services.live.LiveConfig``, ``None`` = defaults) from the next frame."""
        self.config = config
        self.retire()

    def retire(self) -> None:
        old, self._session = self._session, None
        self.worker.set_process(None)
        if old is not None:
            self._close_later(old.close)

    def request_reset(self) -> None:
        if self._session is not None:
            self._session.request_reset()

    def request_measure(self) -> None:
        """Embed every tracked face again on the next frame."""
        if self._session is not None:
            self._session.request_forget()

    def shutdown(self) -> None:
        """Close the session now (the worker has stopped: no frame in flight)."""
        session, self._session = self._session, None
        if session is not None:
            session.close()
