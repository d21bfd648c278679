"""Cycles are freed on the GUI thread, never by a worker thread that allocates (gc_guard)."""

from __future__ import annotations

import gc
import threading
from typing import ClassVar

from faceapp.gui.gc_guard import GuiThreadCollector


class Cycle:
    """Refers to itself (only the cycle collector frees it); records the thread that did."""

    freed_on: ClassVar[list[str]] = []

    def __init__(self) -> None:
        self.me = self

    def __del__(self) -> None:
        Cycle.freed_on.append(threading.current_thread().name)


def churn_in_a_worker() -> None:
    """Drop cycles in a worker thread, three times as many as generation 0's threshold (each
    stays allocated until a collection, so the collector is due)."""

    def work() -> None:
        for _ in range(3 * gc.get_threshold()[0]):
            Cycle()

    t = threading.Thread(target=work, name="worker")
    t.start()
    t.join()


def test_without_the_guard_a_worker_frees_the_cycle(qapp):
    """The hazard itself: with CPython's automatic collector on, a worker thread frees it
    (the suite's own guard, running around this Qt test, is suspended for the check)."""
    was = gc.isenabled()
    gc.collect()
    Cycle.freed_on.clear()
    gc.enable()
    try:
        churn_in_a_worker()
    finally:
        if not was:
            gc.disable()
    assert "worker" in Cycle.freed_on


def test_with_the_guard_the_gui_thread_frees_it(qtbot):
    collector = GuiThreadCollector(interval_ms=10)
    collector.start()
    try:
        assert collector.running and not gc.isenabled()
        gc.collect()
        Cycle.freed_on.clear()
        churn_in_a_worker()
        assert Cycle.freed_on == []  # nothing collected in the worker
        qtbot.waitUntil(lambda: Cycle.freed_on != [], timeout=5000)  # the timer, on this thread
        assert set(Cycle.freed_on) == {threading.current_thread().name}
    finally:
        collector.stop()


def test_stop_gives_the_automatic_collector_back(qapp):
    outer = gc.isenabled()  # the suite's own guard may be running around this test
    collector = GuiThreadCollector()
    collector.start()
    assert not gc.isenabled()
    collector.start()  # idempotent
    Cycle.freed_on.clear()
    Cycle()
    collector.stop()  # collects once, here
    assert Cycle.freed_on == [threading.current_thread().name]
    assert gc.isenabled() == outer


def test_collect_due_follows_the_generation_thresholds(qapp):
    collector = GuiThreadCollector()
    collector.start()
    try:
        gc.collect()
        assert collector.collect_due() == 0  # generation 0 below its threshold: nothing due
        Cycle.freed_on.clear()
        Cycle()
        keep = [[] for _ in range(gc.get_threshold()[0] + 10)]
        assert collector.collect_due() >= 1 and Cycle.freed_on
        del keep
    finally:
        collector.stop()
