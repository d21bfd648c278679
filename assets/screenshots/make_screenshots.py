"""Take the README screenshots of every page from a real window.

Run under a virtual X server (the window is a real xcb window, not offscreen):

    xvfb-run -a -s "-screen 0 1280x800x24" .venv/bin/python assets/screenshots/make_screenshots.py

It builds a throw-away gallery in a temporary folder: the singer of the Hamilton clip
(enrolled from clip frames), a few LFW people (from files), a τ calibrated on that gallery;
then shows each page in a realistic state and saves ``assets/screenshots/<page>.png``.
Uses ``models/default.pt`` when present, else a small random encoder (the pictures then
show the app, not the accuracy of a trained model).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PySide6.QtCore import QEventLoop, QTimer
from PySide6.QtWidgets import QApplication

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data"
CLIP = DATA / "face_videos" / "face_recognition_examples" / "short_hamilton_clip.mp4"
LFW = DATA / "lfw" / "lfw-deepfunneled"
OUT = Path(__file__).resolve().parent
OTHERS = ("George_W_Bush", "Colin_Powell", "Tony_Blair", "Serena_Williams")


def pump(app: QApplication, until=lambda: True, timeout_s: float = 60.0) -> None:
    """Run the event loop until ``until()`` holds (or the timeout)."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
        if until():
            return
        time.sleep(0.01)
    raise TimeoutError("the GUI did not reach the expected state")


def settle(app: QApplication, ms: int = 300) -> None:
    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec()


def feed(app: QApplication, page, frame: np.ndarray) -> None:
    pump(app, lambda: not page.worker.is_busy())
    before = page.worker.processed + page.worker.failed
    page.on_frame(frame)
    pump(app, lambda: page.worker.processed + page.worker.failed > before and not page.worker.is_busy())


def main() -> int:
    from faceapp.config import default_model_path
    from faceapp.gui.app import create_app
    from faceapp.gui.main_window import MainWindow
    from faceapp.gui.settings import GuiSettings, SettingsStore
    from faceapp.nn.checkpoint import create_untrained_model, save_checkpoint
    from faceapp.nn.encoder import EncoderConfig
    from faceapp.services import FaceService
    from faceapp.vision.video import read_video_frames

    app = create_app(sys.argv[:1])
    tmp = Path(tempfile.mkdtemp(prefix="faceapp-shots-"))
    model_path = default_model_path()
    if not model_path.is_file():
        model_path = tmp / "small.pt"
        model = create_untrained_model(
            EncoderConfig(input_size=64, embedding_dim=32, width=8, layers=(1, 1, 1, 1))
        )
        save_checkpoint(model_path, model.encoder)
    # the real way the app opens the gallery and the model (with its calibration.json)
    service = FaceService.open(db_url=str(tmp / "g.sqlite"), model_path=model_path)
    frames = read_video_frames(CLIP, max_frames=245)

    # gallery: the singer from clip frames, others from LFW files
    singer = [f for i in (100, 112, 124, 136) for f in service.analyze(frames[i])[:1]]
    service.enroll_faces("Hamilton singer", singer, sources=[f"clip frame {i}" for i in (100, 112, 124, 136)])
    for name in OTHERS:
        files = sorted((LFW / name).iterdir())[:3]
        service.enroll(name.replace("_", " "), [str(p) for p in files], largest=True)

    w = MainWindow(
        GuiSettings(camera=str(CLIP), samples=5, window=5),
        store=SettingsStore.at_path(str(tmp / "s.ini")),
        service=service,
        owns_service=True,
        camera_on=False,
    )
    w.resize(1280, 760)
    w.show()
    settle(app, 500)

    def shot(name: str, message: str = "") -> None:
        w.message_label.clear()
        if message:
            w.show_message(message)
        settle(app, 400)
        path = OUT / f"{name}.png"
        w.grab().save(str(path))
        print("saved", path)

    # Calibrate: the gallery's score distributions; a τ is applied only when the model has
    # no calibration of its own (the random stand-in model)
    cal = w.calibrate_page
    w.show_page(cal)
    cal.compute()
    pump(app, lambda: cal.scores() is not None)
    cal.set_target_far(0.01)
    if not w.ctx.info.thresholds:
        cal.apply()
        pump(app, lambda: bool(w.ctx.info.thresholds))
    pump(app, lambda: not w.ctx.runner.is_busy())
    shot("calibrate")

    enroll = w.enroll_page
    w.show_page(enroll)
    enroll.guide.capture_interval_s = 0.0
    enroll.name_edit.setText("Hamilton singer")
    enroll.capture_button.click()
    # consecutive frames, as a camera gives them, until three good samples are kept
    for i in range(100, 200):
        feed(app, enroll, frames[i])
        if len(enroll.samples()) >= 3:
            break
    pump(app, lambda: not w.ctx.runner.is_busy())
    shot("enroll", f"Capturing: {len(enroll.samples())} of 5 good samples so far.")
    enroll.set_capturing(False)
    enroll.clear_samples()
    enroll.name_edit.clear()

    verify = w.verify_page
    w.show_page(verify)
    pump(app, lambda: verify.person_combo.count() == 1 + len(OTHERS))
    verify.set_claimed("Hamilton singer")
    # consecutive frames, as a camera gives them: the live loop tracks the face and the
    # window fills from its new measurements
    for i in range(170, 245):
        feed(app, verify, frames[i])
        if len(verify.scores()) >= 5:
            break
    shot("verify")

    rec = w.recognize_page
    w.show_page(rec)
    # the live loop detects in the background: show consecutive frames, as a camera would,
    # until the face is labelled
    for i in range(140, 200):
        time.sleep(0.04)  # a 25-fps camera's pace: the background detection gets its time
        feed(app, rec, frames[i])
        if any(lab.name is not None for lab in rec.labels()) and i >= 150:
            break
    rec.select_face(0)
    shot("recognize")

    people = w.people_page
    w.show_page(people)
    pump(app, lambda: people.model.rowCount() == 1 + len(OTHERS))
    people.select_name("Hamilton singer")
    pump(app, lambda: people.templates.count() > 0)
    shot("people")

    privacy = w.privacy_page
    w.show_page(privacy)
    pump(app, lambda: len(privacy.audit_rows()) > 0 and not w.ctx.runner.is_busy())
    privacy.verify_chain()
    pump(app, lambda: not w.ctx.runner.is_busy())
    shot("privacy")

    w.show_page(w.settings_page)
    shot("settings")
    w.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
