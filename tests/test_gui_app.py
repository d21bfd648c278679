"""Starting the app: the ``faceapp gui`` command, the real service opener, settings storage."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from faceapp.cli import gui_cmds
from faceapp.errors import FaceappError
from faceapp.gui.app import check_display, run, service_opener
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
    seen = {}
    monkeypatch.setattr("faceapp.gui.app.run", lambda **kw: seen.update(kw) or 0)
    assert args.func(args) == 0
    preload = seen.pop("preload")
    assert seen == {"camera": "clip.mp4", "db": "g.sqlite", "model": "m.pt", "device": "cpu"}
    preload()  # imports the model stack in this (the main) thread
    assert "faceapp.nn.pipeline" in sys.modules
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
