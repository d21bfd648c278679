"""Cyclic garbage collection on the GUI thread only.

CPython's cycle collector runs in whichever thread happens to allocate when its thresholds are
crossed: in this app often a worker thread (a gallery job of a :class:`~faceapp.gui.workers.
TaskRunner`, the live loop). When the cycles it frees hold Qt wrappers (a page's closures, a
widget kept by a lambda), their C++ objects are destroyed from a thread that does not own them,
and Qt may crash. That happened in the test suite: a segmentation fault with the collector
running in a People-page worker thread while the Privacy page was being shown.

The usual remedy for Python Qt applications is to switch the automatic collector off and
collect from a timer on the GUI thread, by the same generation thresholds CPython uses
(:class:`GuiThreadCollector`). Reference counting, which frees almost everything, is unchanged;
only cycles wait for the timer (at most ``interval_ms``).
"""

from __future__ import annotations

import gc

from PySide6.QtCore import QObject, QTimer


class GuiThreadCollector(QObject):
    """While started, the automatic collector is off and :meth:`collect_due` runs every
    ``interval_ms`` on the thread that owns this object (create it on the GUI thread)."""

    def __init__(self, interval_ms: int = 500, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._thresholds = gc.get_threshold()
        self._timer = QTimer(self)
        self._timer.setInterval(max(1, int(interval_ms)))
        self._timer.timeout.connect(self.collect_due)
        self._was_enabled = gc.isenabled()
        self._running = False

    @property
    def running(self) -> bool:
        return self._running

    def start(self) -> None:
        """Switch the automatic collector off and start the timer (idempotent)."""
        if self._running:
            return
        self._was_enabled = gc.isenabled()
        gc.disable()
        self._timer.start()
        self._running = True

    def stop(self) -> None:
        """Stop the timer, collect once here, and give the automatic collector back."""
        if not self._running:
            return
        self._timer.stop()
        self._running = False
        gc.collect()
        if self._was_enabled:
            gc.enable()

    def collect_due(self) -> int:
        """Collect the oldest generation whose count is past CPython's threshold for it
        (none when generation 0 is not: nothing is due); returns the objects freed."""
        counts = gc.get_count()
        if counts[0] <= self._thresholds[0]:
            return 0
        generation = 0
        for g in (2, 1):
            if counts[g] > self._thresholds[g]:
                generation = g
                break
        return gc.collect(generation)
