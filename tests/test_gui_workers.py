"""Workers: long tasks with progress / cancel / errors, and the frame loop that drops frames."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from faceapp.errors import NoFaceFound
from faceapp.gui.workers import FrameWorker, ProcessedFrame, Task, TaskRunner

pytestmark = pytest.mark.gui

# generous: only reached when something is wrong (or the machine is very busy)
WAIT = 60_000


@pytest.fixture
def runner(qapp):
    r = TaskRunner(max_threads=2)
    yield r
    r.abort_all()
    r.wait(WAIT)


def test_task_reports_progress_and_result(qtbot, runner: TaskRunner) -> None:
    seen: list[tuple[int, int, str]] = []

    def job(progress, should_stop):
        for i in range(3):
            progress(i + 1, 3, f"step {i + 1}")
        return sum(range(10))

    task = Task(job, name="sum")
    order: list[str] = []
    returned: list[object] = []
    task.progress.connect(lambda d, t, m: seen.append((d, t, m)))
    task.started.connect(lambda: order.append("started"))
    task.returned.connect(lambda v: (order.append("returned"), returned.append(v)))
    task.finished.connect(lambda: order.append("finished"))
    with qtbot.waitSignal(task.finished, timeout=WAIT):
        runner.submit(task)
    assert order == ["started", "returned", "finished"]
    assert returned == [45]
    assert seen == [(1, 3, "step 1"), (2, 3, "step 2"), (3, 3, "step 3")]
    qtbot.waitUntil(lambda: not runner.is_busy(), timeout=WAIT)


def test_task_error_becomes_signal(qtbot, runner: TaskRunner) -> None:
    def job(progress, should_stop):
        raise NoFaceFound("no face in probe.jpg")

    task = Task(job)
    returned: list[object] = []
    task.returned.connect(returned.append)
    with qtbot.waitSignal(task.errored, timeout=WAIT) as b:
        runner.submit(task)
    assert isinstance(b.args[0], NoFaceFound)
    qtbot.waitUntil(task.is_done, timeout=WAIT)
    assert returned == []


def test_task_cancel_is_cooperative(qtbot, runner: TaskRunner) -> None:
    gate = threading.Event()
    steps: list[int] = []

    def job(progress, should_stop):
        for i in range(1000):
            if should_stop():
                return i
            steps.append(i)
            gate.wait(0.005)
        return -1

    task = Task(job)
    returned: list[object] = []
    task.returned.connect(returned.append)
    runner.submit(task)
    qtbot.waitUntil(lambda: len(steps) >= 2, timeout=WAIT)
    with qtbot.waitSignal(task.aborted, timeout=WAIT):
        task.abort()
    assert returned == [] and len(steps) < 1000
    assert runner.wait(WAIT)


def test_task_call_wraps_plain_function(qtbot, runner: TaskRunner) -> None:
    task = Task.call(lambda a, b=0: a * b, 6, b=7)
    with qtbot.waitSignal(task.returned, timeout=WAIT) as b:
        runner.submit(task)
    assert b.args == [42]


@pytest.fixture
def frame_worker(qapp):
    workers: list[FrameWorker] = []

    def make(process):
        w = FrameWorker(process)
        w.start()
        workers.append(w)
        return w

    yield make
    for w in workers:
        w.stop()


def test_frame_worker_drops_frames_while_busy(qtbot, frame_worker) -> None:
    release = threading.Event()
    entered = threading.Event()
    processed: list[int] = []

    def slow(frame: np.ndarray) -> int:
        entered.set()
        release.wait(WAIT / 1000)
        processed.append(int(frame[0, 0, 0]))
        return int(frame.sum())

    worker = frame_worker(slow)
    frames = [np.full((4, 4, 3), i, dtype=np.uint8) for i in range(10)]
    results: list[ProcessedFrame] = []
    worker.resultReady.connect(results.append)

    assert worker.submit(frames[0]) is True
    assert entered.wait(WAIT / 1000)
    accepted = [worker.submit(f) for f in frames[1:]]  # all arrive while frame 0 is processed
    assert accepted == [False] * 9
    assert worker.dropped == 9
    release.set()
    qtbot.waitUntil(lambda: len(results) == 1, timeout=WAIT)
    assert processed == [0]
    assert results[0].value == 0 and results[0].frame is frames[0]
    # free again: the next frame is taken, the dropped ones never come back
    with qtbot.waitSignal(worker.resultReady, timeout=WAIT) as b:
        assert worker.submit(frames[5]) is True
    assert b.args[0].value == int(frames[5].sum())
    assert processed == [0, 5]
    assert worker.processed == 2 and worker.dropped == 9
    stats = worker.stats()
    assert stats.processed == 2 and stats.dropped == 9 and stats.latency_ms > 0


def test_frame_worker_error_keeps_loop_alive(qtbot, frame_worker) -> None:
    calls: list[int] = []

    def flaky(frame: np.ndarray) -> str:
        calls.append(1)
        if len(calls) == 1:
            raise NoFaceFound("no face")
        return "ok"

    worker = frame_worker(flaky)
    frame = np.zeros((2, 2, 3), np.uint8)
    with qtbot.waitSignal(worker.errorOccurred, timeout=WAIT) as b:
        worker.submit(frame)
    assert b.args == ["no face"]
    with qtbot.waitSignal(worker.resultReady, timeout=WAIT) as b:
        worker.submit(frame)
    assert b.args[0].value == "ok"
    assert worker.failed == 1 and worker.processed == 1


def test_frame_worker_discards_results_of_replaced_processor(qtbot, frame_worker) -> None:
    release = threading.Event()
    entered = threading.Event()

    def old(frame):
        entered.set()
        release.wait(WAIT / 1000)
        return "old"

    worker = frame_worker(old)
    results: list[ProcessedFrame] = []
    worker.resultReady.connect(results.append)
    worker.submit(np.zeros((2, 2, 3), np.uint8))
    assert entered.wait(WAIT / 1000)
    worker.set_process(lambda f: "new")
    release.set()
    with qtbot.waitSignal(worker.resultReady, timeout=WAIT):
        qtbot.waitUntil(lambda: worker.submit(np.zeros((2, 2, 3), np.uint8)), timeout=WAIT)
    assert [r.value for r in results] == ["new"]


def test_frame_worker_stop_waits_for_thread(qtbot, frame_worker) -> None:
    worker = frame_worker(lambda f: 1)
    assert worker.is_running()
    assert worker.stop()
    assert not worker.is_running()
    assert worker.submit(np.zeros((2, 2, 3), np.uint8)) is False
