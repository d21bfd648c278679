"""Starting the app: the ``faceapp gui`` command, the real service opener, settings storage."""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import sys
import threading
from pathlib import Path

import pytest
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from faceapp.cli import gui_cmds
from faceapp.errors import FaceappError, GalleryError
from faceapp.gui.app import check_display, gallery_opener, run, service_opener
from faceapp.gui.main_window import MainWindow
from faceapp.gui.settings import GuiSettings, SettingsStore

pytestmark = pytest.mark.gui

# generous: only reached when something is wrong (or the machine is very busy)
WAIT = 60_000


def test_gui_command_flags(monkeypatch) -> None:
    parser = argparse.ArgumentParser()
    gui_cmds.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["gui", "--camera", "clip.mp4", "--db", "g.sqlite", "--model", "m.pt"])
    assert (args.camera, args.db, args.model, args.device) == ("clip.mp4", "g.sqlite", "m.pt", "cpu")
    assert args.exit_when_ready is False
    assert parser.parse_args(["gui", "--exit-when-ready"]).exit_when_ready is True
    seen = {}
    monkeypatch.setattr("faceapp.gui.app.run", lambda **kw: seen.update(kw) or 0)
    assert args.func(args) == 0
    preload = seen.pop("preload")
    assert seen == {
        "camera": "clip.mp4", "db": "g.sqlite", "model": "m.pt", "device": "cpu", "exit_when_ready": False
    }
    preload()  # only the native libraries that must load in the main thread (triton)
    if importlib.util.find_spec("triton") is not None:
        assert "triton" in sys.modules
    assert parser.parse_args(["gui"]).camera is None


def test_settings_round_trip_and_overrides(tmp_path: Path) -> None:
    store = SettingsStore.at_path(str(tmp_path / "s.ini"))
    assert store.load() == GuiSettings()
    s = GuiSettings(
        db="a.sqlite", model="m.pt", camera="2", scorer="head_l1", tau=0.25, samples=4, window=9, loop=False
    )
    store.save(s)
    assert SettingsStore.at_path(str(tmp_path / "s.ini")).load() == s
    o = s.with_overrides(camera="/v.mp4", db=None, model="x.pt")
    assert (o.camera, o.db, o.model, o.tau) == ("/v.mp4", "a.sqlite", "x.pt", 0.25)


def test_real_service_opens_in_background(qtbot, tmp_path: Path, small_model_path: Path) -> None:
    settings = GuiSettings(db=str(tmp_path / "g.sqlite"), model=str(small_model_path))
    w = MainWindow(
        settings,
        store=SettingsStore.at_path(str(tmp_path / "s.ini")),
        open_service=service_opener("cpu"),
        camera_on=False,
    )
    qtbot.addWidget(w)
    with qtbot.waitSignal(w.serviceReady, timeout=WAIT) as b:
        w.open_service_async()
    service = b.args[0]
    assert service is not None and service.list_people() == []
    assert service.model_id in w.service_label.text()
    assert "g.sqlite" in w.service_label.text()
    # no calibration beside the small model: said so, the app keeps running
    w.show_page("Recognize")
    assert w.recognize_page.scorer_combo.currentText() == "distance"
    assert any("calibrat" in m for m, err in w.messages if err)
    w.close()


def test_missing_model_keeps_the_window_open(qtbot, tmp_path: Path) -> None:
    settings = GuiSettings(db=str(tmp_path / "g.sqlite"), model=str(tmp_path / "none.pt"))
    w = MainWindow(settings, open_service=service_opener("cpu"), camera_on=False)
    qtbot.addWidget(w)
    with qtbot.waitSignal(w.serviceReady, timeout=WAIT) as b:
        w.open_service_async()
    assert b.args == [None]
    assert w.messages[-1][1] is True and "none.pt" in w.messages[-1][0]
    assert not w.enroll_page.capture_button.isEnabled()
    w.show_page("Settings")
    assert "none.pt" in w.settings_page.status_label.text()
    w.close()


def test_run_opens_window_and_returns(qapp, tmp_path: Path, small_model_path: Path) -> None:
    store = SettingsStore.at_path(str(tmp_path / "s.ini"))
    windows: list[MainWindow] = []

    def poll() -> None:
        found = [w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow)]
        if found and found[0].ctx.service is not None:
            windows.append(found[0])
            found[0].close()
        else:
            QTimer.singleShot(50, poll)

    QTimer.singleShot(0, poll)
    clip = str(tmp_path / "no_such_clip.mp4")
    code = run(camera=clip, db=str(tmp_path / "g.sqlite"), model=str(small_model_path), store=store)
    assert code == 0
    w = windows[0]
    assert w.ctx.settings.camera == clip
    assert any("no_such_clip.mp4" in m for m, err in w.messages if err)  # a message, no crash
    assert store.load().camera == GuiSettings().camera  # flags are not saved
    assert store.value("window/geometry") is not None  # the window geometry is


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="X11/Wayland check")
def test_no_display_is_a_clear_error(monkeypatch) -> None:
    for var in ("QT_QPA_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(FaceappError, match="no display"):
        check_display()
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    check_display()


def _startup_gallery(path: Path, model_path: Path, n: int) -> str:
    from faceapp.bench import build_startup_gallery
    from faceapp.nn.checkpoint import load_checkpoint

    model = load_checkpoint(model_path)
    build_startup_gallery(path, n, model_id=model.model_id, dim=model.embedding_dim, per_person=4)
    return model.model_id


def test_exit_when_ready_reports_a_loaded_gallery(qapp, tmp_path: Path, small_model_path: Path) -> None:
    db = tmp_path / "g.sqlite"
    model_id = _startup_gallery(db, small_model_path, 40)
    out = io.StringIO()
    code = run(
        camera=str(tmp_path / "none.mp4"),
        db=str(db),
        model=str(small_model_path),
        store=SettingsStore.at_path(str(tmp_path / "s.ini")),
        exit_when_ready=True,
        report=out,
    )
    assert code == 0
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])["startup"]
    assert record["exit_code"] == 0 and record["model_id"] == model_id
    # the index really holds the gallery, and the People page listed every person
    assert record["templates_loaded"] == 40 and record["templates_listed"] == 40
    assert record["people_listed"] == 10
    s = record["seconds"]
    # progressive: People listed from the gallery-only service, then the model is loaded
    assert s["run"] <= s["preloaded"] <= s["window_shown"] <= s["gallery"] <= s["people"] <= s["usable"]
    assert s["usable"] <= s["service"] <= s["ready"] <= s["idle"]
    assert s["first_paint"] == s["window_paint"]
    assert set(record["cpu_s"]) == set(s)


def test_exit_when_ready_reports_a_failed_start(qapp, tmp_path: Path) -> None:
    out = io.StringIO()
    code = run(
        camera=str(tmp_path / "none.mp4"),
        db=str(tmp_path / "g.sqlite"),
        model=str(tmp_path / "none.pt"),
        store=SettingsStore.at_path(str(tmp_path / "s.ini")),
        exit_when_ready=True,
        report=out,
    )
    assert code == 1
    record = json.loads(out.getvalue())["startup"]
    assert record["exit_code"] == 1 and "none.pt" in record["error"]
    assert "service_failed" in record["seconds"] and "ready" not in record["seconds"]
    assert "model_id" not in record  # the gallery-only service has none
    # a gallery that cannot be opened fails both phases: still one record
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    out = io.StringIO()
    code = run(
        camera=str(tmp_path / "none.mp4"),
        db=str(bad),
        model=str(tmp_path / "none.pt"),
        store=SettingsStore.at_path(str(tmp_path / "s.ini")),
        exit_when_ready=True,
        report=out,
    )
    assert code == 1
    (line,) = out.getvalue().splitlines()
    record = json.loads(line)["startup"]
    assert record["exit_code"] == 1 and record["error"] and "gallery" not in record["seconds"]


def _model_pages(w: MainWindow) -> list:
    return [w.enroll_page, w.verify_page, w.recognize_page, w.calibrate_page]


def test_progressive_start_lists_people_before_the_model(
    qtbot, tmp_path: Path, small_model_path: Path, hamilton_clip: Path
) -> None:
    """The gallery-only service comes first (People works), the model pages wait for the
    full service, which replaces it once loaded (held back here until the checks ran);
    the camera waits for it too."""
    db = tmp_path / "g.sqlite"
    _startup_gallery(db, small_model_path, 40)
    gate = threading.Event()
    open_full = service_opener("cpu")

    def gated_open(settings: GuiSettings) -> object:
        assert gate.wait(WAIT / 1000)
        return open_full(settings)

    settings = GuiSettings(db=str(db), model=str(small_model_path), camera=str(hamilton_clip))
    w = MainWindow(settings, open_service=gated_open, open_gallery=gallery_opener())
    qtbot.addWidget(w)
    w.show_page("People")
    with qtbot.waitSignal(w.people_page.peopleLoaded, timeout=WAIT) as listed:
        w.open_service_async()
    assert listed.args == [10]
    w.show_page("Enroll")  # a live page: the camera waits for the models
    assert w.source is not None and not w.source.is_active()
    gallery = w.ctx.service
    assert gallery is not None and gallery.has_model is False and w.ctx.model_loading
    assert not w.loading_banner.isHidden() and "Loading the face models" in w.loading_banner.text()
    assert "loading the model" in w.service_label.text()
    people = w.people_page
    assert people.selected_name() is not None
    assert people.rename_button.isEnabled() and people.export_button.isEnabled()
    assert not people.add_button.isEnabled() and not people.reembed_button.isEnabled()
    for page in _model_pages(w):
        assert page.service is None, page.title
    assert not w.enroll_page.capture_button.isEnabled()
    assert not w.calibrate_page.compute_button.isEnabled()
    assert w.verify_page.view.banner() == w.recognize_page.view.banner() == "Loading the face models…"

    with qtbot.waitSignal(w.serviceReady, timeout=WAIT) as ready:
        gate.set()
    full = ready.args[0]
    assert full is w.ctx.service and full is not gallery and full.has_model
    assert not w.ctx.model_loading and w.loading_banner.isHidden()
    assert w.source.is_active()
    assert full.model_id in w.service_label.text()
    for page in _model_pages(w):
        assert page.service is full, page.title
    assert w.enroll_page.capture_button.isEnabled() and w.calibrate_page.compute_button.isEnabled()
    assert people.add_button.isEnabled() and people.reembed_button.isEnabled()
    assert people.model.rowCount() == 10  # the list shown was kept
    assert w.recognize_page.view.banner() != "Loading the face models…"
    w.close()
    with pytest.raises(GalleryError):  # the replaced gallery-only service was closed too
        gallery.list_people()


def test_progressive_start_model_failure_keeps_people(qtbot, tmp_path: Path) -> None:
    settings = GuiSettings(db=str(tmp_path / "g.sqlite"), model=str(tmp_path / "none.pt"))
    w = MainWindow(
        settings, open_service=service_opener("cpu"), open_gallery=gallery_opener(), camera_on=False
    )
    qtbot.addWidget(w)
    with (
        qtbot.waitSignal(w.galleryReady, timeout=WAIT) as gallery,
        qtbot.waitSignal(w.serviceReady, timeout=WAIT) as full,
    ):
        w.open_service_async()
    assert gallery.args[0] is not None and full.args == [None]
    assert w.messages[-1][1] is True and "none.pt" in w.messages[-1][0]
    assert w.ctx.service is gallery.args[0] and not w.ctx.model_loading
    assert w.loading_banner.isHidden()
    assert w.people_page.export_button.isEnabled() and w.people_page.refresh_button.isEnabled()
    assert not w.enroll_page.capture_button.isEnabled()
    assert w.recognize_page.view.banner() == "No face model loaded (see Settings)."
    assert "none.pt" in w.settings_page.status_label.text()
    w.close()
