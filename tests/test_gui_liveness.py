"""The Verify page with liveness on, end to end: real MTCNN, the shipped model, the
committed passive model, real frames of the genuine selfie clip fed as a camera would
(with a clock that follows the video's own time, so nothing depends on machine speed),
a scripted challenge that matches the clip's motion -> ACCEPT; a printed photo of the
same man moved by hand -> REJECT for liveness."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt

from faceapp.config import default_model_path
from faceapp.gui.main_window import MainWindow
from faceapp.gui.settings import GuiSettings, SettingsStore
from faceapp.services import FaceService
from faceapp.vision.liveness import Action, ChallengeConfig
from faceapp.vision.video import read_video_frames

pytestmark = pytest.mark.gui

WAIT = 60_000
FPS = 30.0


@pytest.fixture(scope="module")
def selfie(data_dir: Path) -> list[np.ndarray]:
    return read_video_frames(data_dir / "liveness" / "tvl_live_replay" / "real.mp4", max_frames=330)


@pytest.fixture
def window(qtbot, tmp_path: Path, selfie: list[np.ndarray]):
    if not default_model_path().is_file():
        pytest.skip("models/default.pt is not shipped in this checkout")
    service = FaceService.open(f"sqlite:///{tmp_path / 'g.sqlite'}", default_model_path())
    service.enroll("Selfie Man", [selfie[5], selfie[35]])
    w = MainWindow(GuiSettings(liveness=True), store=SettingsStore.at_path(str(tmp_path / "s.ini")),
                   service=service, owns_service=True, camera_on=False)
    qtbot.addWidget(w)
    yield w
    w.shutdown()


class VideoClock:
    """Each frame's time is its index in the clip / FPS (set before the frame is fed)."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def play(qtbot, page, frames: list[np.ndarray], clock: VideoClock) -> None:
    """Feed the frames no sooner than a camera at FPS would (the page's live loop detects
    faces in the background meanwhile), each stamped with its time in the clip."""
    last = -1.0
    for i, frame in enumerate(frames):
        clock.t = i / FPS
        qtbot.waitUntil(lambda: not page.worker.is_busy(), timeout=WAIT)
        wait_s = last + 1.0 / FPS - time.monotonic()
        if wait_s > 0:
            qtbot.wait(int(wait_s * 1000) + 1)
        last = time.monotonic()
        with qtbot.waitSignal(page.worker.statsChanged, timeout=WAIT):
            page.on_frame(frame)
        if page.liveness_result() is not None:
            return


def _ready(qtbot, window) -> object:
    page = window.verify_page
    window.show_page(page)
    qtbot.waitUntil(lambda: page.person_combo.count() == 1, timeout=WAIT)
    assert page.liveness_on()  # the setting turned it on by default
    return page


@pytest.mark.slow
def test_liveness_verify_accepts_the_live_man_with_a_matching_challenge(qtbot, window, selfie,
                                                                         monkeypatch) -> None:
    from faceapp.liveness.session import FaceFollower

    def no_second_follower(*_a, **_k):
        raise AssertionError("the attempt follows the faces with the page's live loop")

    monkeypatch.setattr(FaceFollower, "create", no_second_follower)
    page = _ready(qtbot, window)
    clock = VideoClock()
    page.liveness_actions = (Action.TURN_LEFT, Action.TURN_RIGHT)  # what the clip does, in order
    page.liveness_clock = clock
    page.liveness_config = ChallengeConfig(action_timeout_s=7.0, require_identity=True)
    qtbot.keyClick(page.start_button, Qt.Key.Key_Space)  # keyboard: a new attempt
    prompts = []
    page.view.update = lambda: prompts.append(page.view.prompt())  # record what is drawn
    play(qtbot, page, selfie, clock)
    res = page.liveness_result()
    assert res is not None, "the attempt never finished"
    assert page.live_session().recognizer.stats.frames > 0  # the live loop followed the face
    assert page.decision() == "ACCEPT", res.reasons
    assert res.identity_ok and res.live
    assert page.decision_label.text() == "ACCEPT"
    shown = [p for p in prompts if p is not None]
    assert any(p.arrow == "left" and p.total == 2 for p in shown)
    assert any(p.arrow == "right" and p.done == 1 for p in shown)


@pytest.mark.slow
def test_liveness_verify_rejects_a_printed_photo_of_him(qtbot, window, selfie) -> None:
    from faceapp.liveness import attacks

    page = _ready(qtbot, window)
    clock = VideoClock()
    page.liveness_actions = (Action.TURN_LEFT, Action.TURN_RIGHT)
    page.liveness_clock = clock
    page.liveness_config = ChallengeConfig(action_timeout_s=3.0, require_identity=True)
    page.start_challenge()
    printed = attacks.print_attack(selfie[5], np.random.default_rng(11), 200)
    play(qtbot, page, printed, clock)
    res = page.liveness_result()
    assert res is not None
    assert page.decision() == "REJECT"
    assert res.live is False and any(r.startswith("liveness") for r in res.reasons)
    assert "liveness" in page.liveness_label.text()


@pytest.mark.parametrize("on", [True, False])
def test_the_liveness_setting_persists(tmp_path: Path, on: bool) -> None:
    store = SettingsStore.at_path(str(tmp_path / "s.ini"))
    store.save(GuiSettings(liveness=on))
    assert store.load().liveness is on
