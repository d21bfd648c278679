"""``faceapp bench startup``: seconds from launching ``faceapp gui`` to a usable and to a
ready main window, with a 10⁵-template gallery against an empty one in the same run.

Stable keys: ``startup.window_s_1e5``, ``startup.ready_s_1e5``, ``startup.first_paint_s_1e5``,
``startup.window_s_empty``, ``startup.ready_s_empty``, ... Each launch is a child process
(``faceapp gui --exit-when-ready``, offscreen Qt) that reports its own start-up marks as one
JSON line (the child's side: :mod:`faceapp.bench.startup_marks` and
``faceapp.gui.app.StartupProbe``); this module is the parent's side: it builds the
galleries, launches, reads the records and summarises them (:func:`bench_startup`).
Target (usable window): ``STARTUP_TARGET_S``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from faceapp.bench.startup_marks import LAUNCH_T0_ENV
from faceapp.bench.stats import load_average, median
from faceapp.bench.synthetic import fill_gallery, synthetic_gallery
from faceapp.errors import FaceappError
from faceapp.gallery.database import open_database
from faceapp.nn.checkpoint import LoadedModel

logger = logging.getLogger(__name__)

STARTUP_TARGET_S = 3.0
"""Issue 6: the main window is usable at most this long after launch (10⁵ templates)."""
STARTUP_TEMPLATES = 100_000
QUICK_STARTUP_TEMPLATES = 2_000
STARTUP_STAGES = (
    ("python_qt", None, "run"),
    ("preload", "run", "preloaded"),
    ("window", "preloaded", "window_shown"),
    ("gallery", "window_shown", "gallery"),
    ("people", "gallery", "people"),
    ("settle", "people", "usable"),
    ("model", "usable", "service"),
    ("ready", "service", "ready"),
)
"""(name, from mark, to mark) of the start-up stages reported in ``startup.stages_s_*``
(progressive start: the window is usable at ``usable``, then the model loads until
``service``; they add up to ``ready``)."""



def build_startup_gallery(
    path: Path, n: int, *, model_id: str, dim: int, per_person: int = 4, seed: int = 0
) -> dict[str, Any]:
    """A SQLite gallery at ``path`` with ``n`` synthetic unit templates of ``model_id``
    (``per_person`` per person, D = ``dim``; no crops), made with the gallery bench's
    generator and :func:`~faceapp.bench.synthetic.fill_gallery`. ``n = 0``: an empty
    gallery. Returns its sizes."""
    t0 = time.perf_counter()
    engine = open_database(f"sqlite:///{path}")
    n_people = 0
    try:
        if n > 0:
            emb, pids = synthetic_gallery(n, dim, per_person, seed)
            n_people = int(pids[-1]) + 1
            fill_gallery(engine, emb, pids, model_id)
    finally:
        engine.dispose()
    return {"templates": n, "people": n_people, "build_s": round(time.perf_counter() - t0, 3)}


def launch_app(
    db: Path, model_path: Path, *, workdir: Path, timeout: float = 300.0
) -> dict[str, Any]:
    """Start ``faceapp gui --exit-when-ready`` on ``db`` in a child process (offscreen Qt,
    fresh settings in ``workdir``, the camera pointed at a missing file so that no device is
    opened) and return its start-up record (see :mod:`faceapp.bench.startup_marks`): marks in
    seconds since the spawn, plus ``parent_ready_s`` (when the parent read the record) and
    ``exit_s`` (when the child had exited)."""
    env = dict(os.environ)
    env.update(
        QT_QPA_PLATFORM="offscreen",
        XDG_CONFIG_HOME=str(workdir / "config"),
        PYTHONUNBUFFERED="1",
    )
    cmd = [
        sys.executable, "-m", "faceapp", "gui",
        "--db", str(db), "--model", str(model_path),
        "--camera", str(workdir / "no-camera.mp4"),
        "--exit-when-ready",
    ]  # fmt: skip
    with tempfile.TemporaryFile(mode="w+") as err:
        t0 = time.time()
        env[LAUNCH_T0_ENV] = repr(t0)
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env, cwd=workdir
        )
        watchdog = threading.Timer(timeout, proc.kill)
        watchdog.start()
        record: dict[str, Any] | None = None
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                with contextlib.suppress(ValueError):
                    parsed = json.loads(line)
                    if isinstance(parsed, dict) and "startup" in parsed:
                        record = parsed["startup"]
                        record["parent_ready_s"] = round(time.time() - t0, 4)
            code = proc.wait()
            exit_s = round(time.time() - t0, 4)
        finally:
            watchdog.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        err.seek(0)
        stderr = err.read()
    if record is None or code != 0 or record.get("exit_code") != 0:
        tail = "\n".join(stderr.strip().splitlines()[-5:])
        reason = (record or {}).get("error") or tail or f"exit code {code}"
        raise FaceappError(f"the app did not start on {db}: {reason}")
    record["exit_s"] = exit_s
    return record


def _stages(seconds: dict[str, float]) -> dict[str, float]:
    out = {}
    for name, start, stop in STARTUP_STAGES:
        if stop in seconds and (start is None or start in seconds):
            out[name] = round(seconds[stop] - (seconds[start] if start else 0.0), 3)
    return out


def bench_startup(
    model: LoadedModel,
    model_path: Path,
    *,
    quick: bool = False,
    launches: int | None = None,
    templates: int | None = None,
) -> dict[str, Any]:
    """Seconds from launching ``faceapp gui`` to a usable main window (``window_s_*``) and
    to a ready app (``ready_s_*``), with a 10⁵-template gallery (``_1e5``) and, as the
    baseline in the same run, an empty one (``_empty``); medians over ``launches`` launches
    each (default 3; 1 with ``quick``, whose gallery has ``QUICK_STARTUP_TEMPLATES``
    templates).

    *Usable* (the start-up is progressive): the main window is shown and answers, and the
    People list is filled from the gallery (``templates_listed_*``, ``people_listed_*``):
    People works. *Ready*: then the model and the gallery's search index are loaded too
    (``templates_loaded_*`` = its size, checked against the gallery built), the model pages
    (Enroll, Verify, Recognize, Calibrate) are enabled, and no start-up task is left.
    ``first_paint_s_*``: the main window is painted. ``cpu_s_*`` / ``ready_cpu_s_*``: CPU
    seconds the app used until usable / ready (all threads; less sensitive than wall time
    to other load on the machine). Without ``quick`` every gallery gets one untimed launch
    first (it writes the index snapshot, as any first launch does, and warms the OS file
    cache); its time to ready is ``first_launch_s_1e5``. With ``quick`` the single launch
    is also the first one.
    """
    n = templates if templates is not None else (QUICK_STARTUP_TEMPLATES if quick else STARTUP_TEMPLATES)
    launches = launches if launches is not None else (1 if quick else 3)
    key = "1e5"
    load_before = load_average()
    out: dict[str, Any] = {
        "templates": {key: n, "empty": 0},
        "target_s": STARTUP_TARGET_S,
        "launches": launches,
        "model_id": model.model_id,
    }
    runs: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="faceapp-bench-startup-") as tmp:
        work = Path(tmp)
        for name, size in (("empty", 0), (key, n)):
            db = work / f"gallery_{name}.sqlite"
            built = build_startup_gallery(db, size, model_id=model.model_id, dim=model.embedding_dim)
            out[f"people_{name}"] = built["people"]
            out[f"build_s_{name}"] = built["build_s"]
            first: dict[str, Any] | None = None
            if not quick:
                logger.info("bench startup: first launch (%s)", name)
                first = launch_app(db, model_path, workdir=work)
            records = []
            for i in range(launches):
                logger.info("bench startup: launch %d/%d (%s)", i + 1, launches, name)
                records.append(launch_app(db, model_path, workdir=work))
            runs[name] = records
            first = first or records[0]
            out[f"first_launch_s_{name}"] = round(first["seconds"]["ready"], 3)
    for name, records in runs.items():
        secs = [r["seconds"] for r in records]
        out[f"window_s_{name}"] = median([s["usable"] for s in secs])
        out[f"ready_s_{name}"] = median([s["ready"] for s in secs])
        out[f"first_paint_s_{name}"] = median([s["first_paint"] for s in secs])
        out[f"window_shown_s_{name}"] = median([s["window_shown"] for s in secs])
        out[f"cpu_s_{name}"] = median([r["cpu_s"]["usable"] for r in records])
        out[f"ready_cpu_s_{name}"] = median([r["cpu_s"]["ready"] for r in records])
        out[f"exit_s_{name}"] = median([r["exit_s"] for r in records])
        stages = [_stages(s) for s in secs]
        out[f"stages_s_{name}"] = {k: median([st[k] for st in stages]) for k in stages[0]}
        loaded = {int(r.get("templates_loaded", -1)) for r in records}
        listed = {int(r.get("templates_listed", -1)) for r in records}
        out[f"templates_loaded_{name}"] = loaded.pop() if len(loaded) == 1 else sorted(loaded)
        out[f"templates_listed_{name}"] = listed.pop() if len(listed) == 1 else sorted(listed)
        out[f"people_listed_{name}"] = int(records[0].get("people_listed", -1))
    out["meets_target"] = bool(out[f"window_s_{key}"] <= STARTUP_TARGET_S)
    out["overhead_s_1e5_vs_empty"] = round(out[f"window_s_{key}"] - out["window_s_empty"], 3)
    out["ready_overhead_s_1e5_vs_empty"] = round(out[f"ready_s_{key}"] - out["ready_s_empty"], 3)
    out["load_average"] = {"before": load_before, "after": load_average()}
    out["raw"] = runs
    return out
