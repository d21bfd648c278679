"""The Qt-free half of the start-up probe: what a launched app records about its own
start-up for ``faceapp bench startup``, and how it writes it.

The split: ``faceapp.gui.app.StartupProbe`` (a ``QObject``) is the Qt half. It stays in the
GUI because it needs Qt, which only ``faceapp.gui`` may import (import-linter): it installs
the paint event filter, follows the main window's signals and defers with ``QTimer``. At
each of those moments it calls :meth:`StartupMarks.mark`; this module holds the rest: the
clock (:func:`process_start_time`), the marks with the CPU time used so far, what is noted
about the loaded service, and the JSON line written at the end. The parent's side (building
galleries, launching, reading the line) is :mod:`faceapp.bench.startup`.

This module imports only the standard library (and ``faceapp.errors``), and
``faceapp.bench`` re-exports its names lazily: the GUI imports it at start-up without
loading numpy, torch or the gallery.

Marks, in seconds since :func:`process_start_time`: ``run`` (the GUI code starts: Python
and Qt imported), ``preloaded`` (after ``run``'s ``preload``, if any), ``first_paint`` (the
first paint of any top-level window), ``window_shown`` / ``window_paint`` (the main window
shown / first painted), ``gallery`` (the gallery-only service is installed), ``people``
(the People list is filled from it), ``usable`` (the event loop then ran once more: the
window answers and People works), ``service`` (the model and the gallery's index are
loaded and the full service replaced the gallery-only one: the model pages are enabled),
``ready`` (all of these, and no start-up task left), ``idle`` (the event loop then ran once
more with nothing to do); ``service_failed`` when opening failed. Without a gallery phase
(a window with no ``open_gallery``) ``people`` waits for ``service``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable
from typing import Any, TextIO

from faceapp.errors import FaceappError

log = logging.getLogger(__name__)

LAUNCH_T0_ENV = "FACEAPP_LAUNCH_T0"
"""Epoch seconds at which a parent process launched the app (benchmarks); start-up times
are counted from it. Without it, from the process start time in ``/proc``."""


def process_start_time() -> float:
    """Epoch seconds at which this process was launched: ``$FACEAPP_LAUNCH_T0`` when a
    parent set it, else the start time in ``/proc/self/stat`` (Linux, 10 ms ticks), else now."""
    raw = os.environ.get(LAUNCH_T0_ENV)
    if raw:
        try:
            return float(raw)
        except ValueError:
            log.warning("ignoring %s=%r (not a number)", LAUNCH_T0_ENV, raw)
    try:
        with open("/proc/self/stat") as fh:
            # the command name (field 2) may hold spaces: split after its closing parenthesis
            fields = fh.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime") as fh:
            uptime = float(fh.read().split()[0])
        started_after_boot = int(fields[19]) / os.sysconf("SC_CLK_TCK")
        return time.time() - (uptime - started_after_boot)
    except (OSError, ValueError, IndexError):
        return time.time()


class StartupMarks:
    """The start-up record of one launch: ``marks`` (seconds since ``t0``), ``cpu`` (CPU
    seconds of this process at each mark, all threads) and ``info`` (what was loaded)."""

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.marks: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.info: dict[str, Any] = {}

    def __contains__(self, name: str) -> bool:
        return name in self.marks

    def mark(self, name: str) -> float:
        """Record ``name`` now (the first time only), with the CPU time this process has
        used so far (in ``cpu``); returns its time."""
        if name not in self.marks:
            self.cpu[name] = round(time.process_time(), 4)
        return self.marks.setdefault(name, round(time.time() - self.t0, 4))

    def mark_paint(self, name: str) -> None:
        """Record the first paint of a window as ``name``, and as ``first_paint`` when it
        is the first paint of all (the same instant, not a second reading)."""
        t = self.mark(name)
        if "first_paint" not in self.marks:
            self.marks["first_paint"], self.cpu["first_paint"] = t, self.cpu[name]

    def note_service(self, service: Any, people: Iterable[Any], *, has_model: bool) -> None:
        """Note what the app holds at the end: the templates listed in People (``people``:
        rows with ``n_templates``) and, with a model, its id and the templates in the
        search index (``load_index`` is cached: no reload; -1 and ``index_error`` when it
        fails)."""
        self.info["templates_listed"] = int(sum(int(p.n_templates) for p in people))
        if not has_model:
            return
        self.info["model_id"] = str(service.model_id)
        try:
            self.info["templates_loaded"] = int(service.load_index())
        except FaceappError as err:
            self.info["templates_loaded"] = -1
            self.info["index_error"] = str(err)

    def write(self, out: TextIO, code: int) -> None:
        """Write the record as one JSON line ``{"startup": {...}}`` with ``exit_code``."""
        record = {
            "startup": {"seconds": dict(self.marks), "cpu_s": dict(self.cpu), **self.info, "exit_code": code}
        }
        out.write(json.dumps(record) + "\n")
        out.flush()
