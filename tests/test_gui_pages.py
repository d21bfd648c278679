"""GUI pages through their widgets, on a real FaceService + SQLite gallery with a
deterministic stand-in face pipeline (fast, exact). The real detector and model on the
Hamilton clip are exercised in ``test_gui_clip.py``.

A frame encodes its faces in its first pixels: row r, column 0 = (person, variant, flags)
(flags 1 = blurred), column 1 channel 0 = face size; person 0 ends the list. Face r's box
is painted in the colour (person, variant, 0), so that the live recognizer's alignment
(real, from the fake landmarks) gives a crop from which the stand-in encoder reads the
identity back.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fakes import FakeFace
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent

from faceapp.config import DetectorConfig, QualityConfig
from faceapp.gallery import open_database
from faceapp.gallery.bundle import open_bundle
from faceapp.gui.calibrate_page import ScoreSet
from faceapp.gui.camera import rgb_to_qimage
from faceapp.gui.main_window import MainWindow
from faceapp.gui.recognize_page import UNKNOWN, LiveFrameStats
from faceapp.gui.settings import GuiSettings, SettingsStore
from faceapp.nn.calibration import Calibration
from faceapp.nn.scoring import CosineScorer
from faceapp.services import FaceService
from faceapp.services.live import LiveConfig
from faceapp.types import AlignedFace, Detection, FaceImage
from faceapp.vision.alignment import AlignmentTemplate
from faceapp.vision.quality import FaceQuality
from faceapp.vision.tracking import box_iou

pytestmark = pytest.mark.gui

# generous: only reached when something is wrong (or the machine is very busy)
WAIT = 60_000

DIM = 16
CROP = 16
TAU = 0.6
# the stand-in pipeline has no O-Net to track with: detect every frame, synchronously
# (faces are still matched to the previous frame's tracks, and their decisions reused)
FAKE_LIVE = LiveConfig(detect_every=1, async_detect=False)


class FakeModel:
    def __init__(self, model_id: str) -> None:
        self.model_id = model_id
        self.embedding_dim = DIM
        self.heads: dict = {}


def identity_vector(person: int, variant: int) -> np.ndarray:
    base = np.random.default_rng([7, person]).standard_normal(DIM)
    noise = np.random.default_rng([7, person, variant]).standard_normal(DIM)
    v = base + 0.25 * noise
    return (v / np.linalg.norm(v)).astype(np.float32)


def face_box(r: int, size: float) -> tuple[float, float, float, float]:
    x = 10.0 + 60.0 * r
    return (x, 10.0, x + size, 10.0 + size)


class FakePipeline:
    """What ``FaceService`` and ``faceapp.services.live.LiveRecognizer`` use of a ``FacePipeline``."""

    def __init__(self) -> None:
        self.model = FakeModel("fake-gui-model")
        self.model_id = self.model.model_id
        self.detector = None
        self.detector_config = DetectorConfig()
        self.quality = QualityConfig()
        self.template = AlignmentTemplate.for_size(CROP)
        self.embedding_dim = DIM
        self.input_size = CROP

    def embed_crops(self, crops: np.ndarray) -> np.ndarray:
        return np.stack([identity_vector(int(c[0, 0, 0]), int(c[0, 0, 1])) for c in crops])

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Face r's landmarks are the template's, scaled onto its box: the aligned crop is
        the box (painted in the face's colour)."""
        out = []
        for r in range(image.shape[0]):
            if int(image[r, 0, 0]) == 0:
                break
            box = face_box(r, float(image[r, 1, 0]))
            scale = (box[2] - box[0]) / CROP
            landmarks = tuple(
                (box[0] + (px + 0.5) * scale - 0.5, box[1] + (py + 0.5) * scale - 0.5)
                for px, py in self.template.points
            )
            out.append(Detection(box=box, score=0.99, landmarks=landmarks))  # type: ignore[arg-type]
        return out

    def analyze(self, image: np.ndarray) -> list[FakeFace]:
        return self.faces_from_detections(image, self.detect(image))

    def faces_from_detections(self, image: np.ndarray, detections: list[Detection]) -> list[FakeFace]:
        """Each detection is face r of the frame whose box overlaps it most (the live loop
        passes tracked detections); its quality comes from the frame's flags."""
        rows = self.detect(image)
        faces = []
        for det in detections:
            r = max(range(len(rows)), key=lambda i: box_iou(rows[i].box, det.box))
            person, variant, flags = (int(v) for v in image[r, 0])
            size = det.box[2] - det.box[0]
            crop = np.random.default_rng([person, variant]).integers(0, 255, (CROP, CROP, 3), dtype=np.uint8)
            crop[0, 0] = (person, variant, 0)
            blurred = bool(flags & 1)
            quality = FaceQuality(
                ok=not blurred,
                reasons=("too blurred (sharpness 5 < 20): hold still",) if blurred else (),
                face_px=size,
                sharpness=5.0 if blurred else 80.0,
                yaw=0.0,
                score=0.99,
            )
            faces.append(
                FakeFace(
                    det,
                    AlignedFace(crop, det, np.eye(2, 3)),
                    self.embed_crops(crop[None])[0],
                    quality,
                    self.model_id,
                    FaceImage(crop, AlignmentTemplate.for_size(CROP).array()),
                )
            )
        return faces


def frame(*faces: tuple[int, ...]) -> np.ndarray:
    """A 120x200 RGB frame holding faces (person, variant[, flags[, size]])."""
    a = np.full((120, 200, 3), 40, dtype=np.uint8)
    a[: len(faces) + 1, :2] = 0
    for r, f in enumerate(faces):
        a[r, 0] = (f[0], f[1], f[2] if len(f) > 2 else 0)
        a[r, 1, 0] = f[3] if len(f) > 3 else 50
        x1, y1, x2, y2 = (int(v) for v in face_box(r, float(a[r, 1, 0])))
        a[y1:y2, x1:x2] = (f[0], f[1], 0)
    return a


@pytest.fixture
def service(tmp_path: Path):
    pipe = FakePipeline()
    cal = Calibration(model_id=pipe.model_id, scorers={"distance": {"far_0.01": TAU}})
    svc = FaceService(
        open_database(f"sqlite:///{tmp_path / 'g.sqlite'}"),
        pipe,
        cal,
        scorers={"distance": CosineScorer()},
        owns_engine=True,
    )
    yield svc
    svc.close()


@pytest.fixture
def store(tmp_path: Path) -> SettingsStore:
    return SettingsStore.at_path(str(tmp_path / "settings.ini"))


@pytest.fixture
def window(qtbot, service, store):
    w = MainWindow(
        GuiSettings(camera="0", samples=3, window=3), store=store, service=service, camera_on=False
    )
    qtbot.addWidget(w)
    for page in (w.recognize_page, w.enroll_page, w.verify_page):
        page.set_live_config(FAKE_LIVE)
    yield w
    w.shutdown()


def feed(qtbot, page, image: np.ndarray) -> None:
    """Show one frame to a live page and wait until its worker has processed it."""
    qtbot.waitUntil(lambda: not page.worker.is_busy(), timeout=WAIT)
    with qtbot.waitSignal(page.worker.statsChanged, timeout=WAIT):
        page.on_frame(image)


def idle(qtbot, window: MainWindow) -> None:
    qtbot.waitUntil(lambda: not window.ctx.runner.is_busy(), timeout=WAIT)


def enroll(qtbot, window: MainWindow, name: str, person: int, n: int = 3) -> None:
    """Enroll through the Enroll page: capture n samples from the live frames, save."""
    page = window.enroll_page
    window.show_page(page)
    page.guide.capture_interval_s = 0.0
    page.name_edit.setText(name)
    page.target_spin.setValue(n)
    page.capture_button.click()
    assert page.is_capturing()
    variant = 0
    while len(page.samples()) < n:
        feed(qtbot, page, frame((person, variant)))
        variant += 1
        assert variant < 3 * n
    assert not page.is_capturing()
    with qtbot.waitSignal(page.saved, timeout=WAIT):
        assert page.save(ask=False)
    idle(qtbot, window)


# --------------------------------------------------------------------------------- enroll
def test_enroll_guidance(qtbot, window) -> None:
    page = window.enroll_page
    page.guide.remeasure_s = 0.0  # the advice follows every frame (the fake's blur has no motion)
    feed(qtbot, page, frame())
    assert page.guidance().startswith("No face")
    feed(qtbot, page, frame((1, 0), (2, 0)))
    assert page.guidance().startswith("Several faces")
    feed(qtbot, page, frame((1, 0, 1)))
    assert page.guidance() == "Hold still"  # the advice of the quality reason
    feed(qtbot, page, frame((1, 0)))
    assert "Start capture" in page.guidance()
    assert page.samples() == []  # nothing captured while not capturing
    assert page.view.overlays()[0].box == (10.0, 10.0, 60.0, 60.0)


def test_enroll_capture_and_save(qtbot, window, service) -> None:
    enroll(qtbot, window, "Ann Lee", person=1, n=3)
    people = service.list_people()
    assert [(p.name, p.n_templates) for p in people] == [("Ann Lee", 3)]
    assert window.enroll_page.samples() == []  # cleared after saving
    qtbot.waitUntil(lambda: window.people_page.model.names() == ["Ann Lee"], timeout=WAIT)


def test_enroll_flags_duplicate_name_and_known_face(qtbot, window) -> None:
    enroll(qtbot, window, "Ann", person=1)
    page = window.enroll_page
    page.capture_button.click()
    feed(qtbot, page, frame((1, 9)))  # Ann's face again
    with qtbot.waitSignal(page.warningsChanged, timeout=WAIT) as b:
        page.name_edit.setText("Bob")
    assert any("already matches 'Ann'" in w for w in b.args[0])
    with qtbot.waitSignal(page.warningsChanged, timeout=WAIT) as b:
        page.name_edit.setText("Ann")
    assert any("already exists" in w for w in b.args[0])
    qtbot.waitUntil(lambda: not page.is_checking(), timeout=WAIT)
    asked: list[str] = []
    page.confirm = lambda title, text: asked.append(text) or False  # type: ignore[method-assign]
    assert page.save() is False  # the user declined after seeing the warnings
    assert asked and "already exists" in asked[0]


def test_enroll_from_files_and_drop(qtbot, window, service, tmp_path: Path) -> None:
    page = window.enroll_page
    files = []
    for i, img in enumerate([frame((4, 0)), frame((4, 1)), frame(), frame((4, 2, 1))]):
        path = tmp_path / f"img{i}.png"
        assert rgb_to_qimage(img).save(str(path))
        files.append(path)
    (tmp_path / "broken.png").write_bytes(b"nope")
    files.append(tmp_path / "broken.png")
    with qtbot.waitSignal(page.filesAdded, timeout=WAIT) as b:
        page.add_files(files)
    kept, problems = b.args
    assert kept == 2 and len(page.samples()) == 2
    assert len(problems) == 3
    assert any("no face" in p for p in problems) and any("blurred" in p for p in problems)
    assert any(m[1] for m in window.messages)  # skipped files are reported, not fatal


def test_drop_files_on_enroll_page(qtbot, window, tmp_path: Path) -> None:
    page = window.enroll_page
    path = tmp_path / "dropped.png"
    assert rgb_to_qimage(frame((5, 0))).save(str(path))
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path)), QUrl("https://example.com/x.png")])
    enter = QDragEnterEvent(
        QPointF(5, 5),
        Qt.DropAction.CopyAction,
        mime,
        Qt.MouseButton.LeftButton,
        Qt.KeyboardModifier.NoModifier,
    )
    page.dragEnterEvent(enter)
    assert enter.isAccepted()
    drop = QDropEvent(
        QPointF(5, 5),
        Qt.DropAction.CopyAction,
        mime,
        Qt.MouseButton.LeftButton,
        Qt.KeyboardModifier.NoModifier,
    )
    with qtbot.waitSignal(page.filesAdded, timeout=WAIT) as b:
        page.dropEvent(drop)
    assert b.args[0] == 1 and len(page.samples()) == 1
    assert page.thumbs.count() == 1 and page.thumbs.item(0).toolTip() == str(path)


def test_save_without_name_is_a_message(qtbot, window) -> None:
    page = window.enroll_page
    page.add_faces(service_faces := FakePipeline().analyze(frame((1, 0))), "x")
    assert len(service_faces) == 1
    assert page.save(ask=False) is False
    assert window.messages[-1] == ("Enter the person's name first.", True)


# --------------------------------------------------------------------------------- verify
def test_verify_accepts_claimed_and_rejects_other(qtbot, window) -> None:
    enroll(qtbot, window, "Ann", person=1)
    enroll(qtbot, window, "Bob", person=2)
    page = window.verify_page
    window.show_page(page)
    qtbot.waitUntil(lambda: page.person_combo.count() == 2, timeout=WAIT)
    page.set_claimed("Ann")
    assert page.threshold() == pytest.approx(TAU)
    for v in range(3):
        feed(qtbot, page, frame((1, 10 + v)))
    assert page.decision() == "ACCEPT"
    assert page.fused_score() >= TAU
    assert page.fused_score() == pytest.approx(float(np.median(page.scores())))
    page.set_claimed("Bob")  # the same face now claims to be Bob
    assert page.decision() == "…"  # the window restarts
    feed(qtbot, page, frame((1, 20)))
    assert page.decision() == "…"  # not enough frames yet
    for v in range(2):
        feed(qtbot, page, frame((1, 21 + v)))
    assert page.decision() == "REJECT"
    assert page.fused_score() < TAU


def test_verify_without_face_shows_guidance(qtbot, window) -> None:
    enroll(qtbot, window, "Ann", person=1)
    page = window.verify_page
    window.show_page(page)
    qtbot.waitUntil(lambda: page.person_combo.count() == 1, timeout=WAIT)
    feed(qtbot, page, frame())
    assert page.view.banner().startswith("No face")
    assert page.scores() == []


# ------------------------------------------------------------------------------ recognize
def test_recognize_labels_and_immediate_threshold(qtbot, window) -> None:
    enroll(qtbot, window, "Ann", person=1)
    enroll(qtbot, window, "Bob", person=2)
    page = window.recognize_page
    window.show_page(page)
    qtbot.waitUntil(lambda: page.threshold() is not None, timeout=WAIT)
    assert page.threshold() == pytest.approx(TAU, abs=2e-3)
    feed(qtbot, page, frame((2, 30), (1, 31), (9, 0)))
    labels = page.labels()
    assert [lab.name for lab in labels] == ["Bob", "Ann", None]
    assert labels[2].text.startswith(UNKNOWN)
    assert [o.label for o in page.view.overlays()] == [lab.text for lab in labels]
    # candidates of the selected face, best first, scores as the service computed them
    page.select_face(1)
    shown = page.candidates_shown()
    assert shown[0][0] == "Ann" and shown[0][1] >= shown[1][1]
    # raising τ above every score relabels at once, without a new frame
    with qtbot.waitSignal(page.labelsChanged, timeout=WAIT) as b:
        page.set_threshold(0.999)
    assert [lab.name for lab in b.args[0]] == [None, None, None]
    page.set_threshold(-0.99)  # everyone passes: the stranger gets their best candidate
    assert [lab.name for lab in page.labels()][:2] == ["Bob", "Ann"]
    assert page.labels()[2].name == page.labels()[2].candidates[0][0]


def test_recognize_threshold_follows_the_gallery_size(qtbot, tmp_path: Path, store) -> None:
    """No τ chosen: the page shows and judges against the 1:K τ for the gallery's size —
    far_0.01's with 1 person, far_0.001's after a second is enrolled (at the relabel that
    follows, no new frame); a τ set on the slider wins; Verify keeps far_0.01's."""
    pipe = FakePipeline()
    cal = Calibration(model_id=pipe.model_id,
                      scorers={"distance": {"far_0.01": TAU, "far_0.001": 0.7, "far_0.0001": 0.8}})
    svc = FaceService(open_database(f"sqlite:///{tmp_path / 'tiers.sqlite'}"), pipe, cal,
                      scorers={"distance": CosineScorer()}, owns_engine=True)
    w = MainWindow(GuiSettings(camera="0", samples=3, window=3), store=store, service=svc,
                   camera_on=False)
    qtbot.addWidget(w)
    try:
        for page in (w.recognize_page, w.enroll_page, w.verify_page):
            page.set_live_config(FAKE_LIVE)
        enroll(qtbot, w, "Ann", person=1)
        page = w.recognize_page
        w.show_page(page)
        feed(qtbot, page, frame((1, 30)))
        assert page.threshold() == pytest.approx(TAU)
        assert page.last_frame_result().faces[0].threshold == pytest.approx(TAU)
        assert page.labels()[0].name == "Ann"
        enroll(qtbot, w, "Bob", person=2)  # the Recognize page relabels on galleryChanged
        assert page.threshold() == pytest.approx(0.7)
        assert page.tau_label.text().startswith("τ = 0.700")
        slider = page.tau_slider  # [-1, 1] in steps: within one step of the new τ
        assert -1 + 2 * slider.value() / slider.maximum() == pytest.approx(0.7, abs=2e-3)
        w.show_page(page)
        feed(qtbot, page, frame((2, 31)))
        assert page.last_frame_result().faces[0].threshold == pytest.approx(0.7)
        assert w.verify_page.threshold() == pytest.approx(TAU)
        page.set_threshold(0.65)  # the user's τ wins over the gallery size, on every page
        assert page.threshold() == pytest.approx(0.65, abs=2e-3)
        assert w.verify_page.threshold() == pytest.approx(0.65, abs=2e-3)
    finally:
        w.shutdown()
        svc.close()


def test_recognize_reuses_recognizer_and_embeddings(qtbot, window) -> None:
    enroll(qtbot, window, "Ann", person=1)
    page = window.recognize_page
    window.show_page(page)
    qtbot.waitUntil(lambda: page.threshold() is not None, timeout=WAIT)
    embedded, recognizers = [], []
    for _ in range(3):  # Ann holds still: embedded once, then tracked
        feed(qtbot, page, frame((1, 7)))
        embedded.append(page.last_frame_result().n_embedded)
        recognizers.append(page.recognizer())
        assert [lab.name for lab in page.labels()] == ["Ann"]
    assert embedded == [1, 0, 0]
    assert recognizers[0] is not None and all(r is recognizers[0] for r in recognizers)
    stats = page.last_stats()
    assert isinstance(stats, LiveFrameStats) and stats.processed == 3 and stats.n_embedded == 0
    assert "embed" in stats.text()
    # the slider's τ reaches the recognizer, and relabels at once from the candidates
    with qtbot.waitSignal(page.labelsChanged, timeout=WAIT) as b:
        page.set_threshold(0.999)
    assert [lab.name for lab in b.args[0]] == [None]
    assert page.recognizer().threshold == pytest.approx(0.999)
    page.set_threshold(TAU)
    assert [lab.name for lab in page.labels()] == ["Ann"]

    # the gallery changes while the page is shown (e.g. an import finishing): the tracked
    # face is embedded again
    window.ctx.service.enroll("Bob", [frame((2, 0))])
    window.ctx.galleryChanged.emit()
    feed(qtbot, page, frame((1, 7)))
    assert page.recognizer() is recognizers[0]
    result = page.last_frame_result()
    assert result.index == 4 and result.n_embedded == 1
    assert [c[0] for c in page.labels()[0].candidates] == ["Ann", "Bob"]
    # the camera stops, or the page is shown again: the next frame starts a new stream
    page.on_camera_stopped()
    assert page.labels() == []
    feed(qtbot, page, frame((1, 7)))
    result = page.last_frame_result()
    assert result.index == 1 and result.n_embedded == 1
    feed(qtbot, page, frame((1, 7)))
    window.show_page(window.people_page)
    window.show_page(page)
    feed(qtbot, page, frame((1, 7)))
    assert page.last_frame_result().index == 1


def test_recognizer_closed_when_replaced_and_at_shutdown(qtbot, window) -> None:
    page = window.recognize_page
    window.show_page(page)
    feed(qtbot, page, frame((1, 0)))
    closed: list[int] = []

    def watch(recognizer, tag: int) -> None:
        close = recognizer.close
        recognizer.close = lambda: (closed.append(tag), close())

    first = page.recognizer()
    watch(first, 1)
    page.set_live_config(FAKE_LIVE)  # a new configuration: a new recognizer
    assert page.recognizer() is None
    idle(qtbot, window)
    assert closed == [1]
    feed(qtbot, page, frame((1, 0)))
    second = page.recognizer()
    assert second is not None and second is not first
    assert page.last_frame_result().index == 1
    watch(second, 2)
    window.shutdown()
    assert closed == [1, 2]
    assert not page.worker.is_running()


def test_recognize_click_selects_face(qtbot, window) -> None:
    enroll(qtbot, window, "Ann", person=1)
    page = window.recognize_page
    window.show_page(page)
    window.resize(1000, 700)
    feed(qtbot, page, frame((9, 0), (1, 3)))
    assert page.selected_face() == 0
    with qtbot.waitSignal(page.view.faceClicked, timeout=WAIT) as b:
        # click in the middle of the second box, mapped to widget coordinates
        rect = page.view._to_widget(page.view.overlays()[1].box)
        pos = QPoint(int(rect.center().x()), int(rect.center().y()))
        qtbot.mouseClick(page.view, Qt.MouseButton.LeftButton, pos=pos)
    assert b.args == [1]
    assert page.selected_face() == 1
    assert page.candidates_shown()[0][0] == "Ann"


# --------------------------------------------------------------------------------- people
def test_people_model_passes_modeltester(qtbot, qtmodeltester, window, service) -> None:
    enroll(qtbot, window, "Ann", person=1)
    enroll(qtbot, window, "Bob", person=2, n=2)
    page = window.people_page
    window.show_page(page)
    qtbot.waitUntil(lambda: page.model.rowCount() == 2, timeout=WAIT)
    qtmodeltester.check(page.model)
    idx = page.model.index(1, 0)
    assert page.model.data(idx) == "Bob"
    assert "2 templates" in page.model.data(idx, Qt.ItemDataRole.ToolTipRole)
    assert not page.model.data(idx, Qt.ItemDataRole.DecorationRole).isNull()


def test_delete_person_removes_them_from_recognition(qtbot, window, service) -> None:
    enroll(qtbot, window, "Ann", person=1)
    enroll(qtbot, window, "Bob", person=2)
    rec = window.recognize_page
    window.show_page(rec)
    feed(qtbot, rec, frame((1, 40)))
    assert rec.labels()[0].name == "Ann"

    page = window.people_page
    window.show_page(page)
    qtbot.waitUntil(lambda: page.model.rowCount() == 2, timeout=WAIT)
    assert page.select_name("Ann")
    qtbot.waitUntil(lambda: page.templates.count() == 3, timeout=WAIT)
    page.confirm = lambda title, text: False  # type: ignore[method-assign]
    assert page.delete_selected() is False  # declined: nothing happens
    page.confirm = lambda title, text: "3 templates" in text  # type: ignore[method-assign]
    assert page.delete_selected() is True
    qtbot.waitUntil(lambda: page.model.names() == ["Bob"], timeout=WAIT)
    assert [p.name for p in service.list_people()] == ["Bob"]

    window.show_page(rec)
    feed(qtbot, rec, frame((1, 41)))
    lab = rec.labels()[0]
    assert lab.name is None
    assert all(name != "Ann" for name, _ in lab.candidates)


def test_rename_export_import(qtbot, window, service, tmp_path: Path) -> None:
    enroll(qtbot, window, "Ann", person=1)
    page = window.people_page
    window.show_page(page)
    qtbot.waitUntil(lambda: page.model.rowCount() == 1, timeout=WAIT)
    page.select_name("Ann")
    assert page.rename_selected("Anna")
    qtbot.waitUntil(lambda: page.model.names() == ["Anna"], timeout=WAIT)
    out = tmp_path / "export.faceapp"
    asked: list[bool] = []

    def passphrase(title: str, label: str, *, confirm: bool = False) -> str:
        asked.append(confirm)
        return "bundle passphrase"

    page.ask_passphrase = passphrase  # type: ignore[method-assign]
    assert page.export_gallery(str(out))
    idle(qtbot, window)
    doc = json.loads(open_bundle(out.read_bytes(), "bundle passphrase"))
    assert doc["people"][0]["name"] == "Anna" and asked == [True]
    # importing the same file again: the user is asked, and "No" skips the duplicate
    page.confirm = lambda title, text: False  # type: ignore[method-assign]
    assert page.import_gallery(str(out))
    assert asked == [True, False]
    idle(qtbot, window)
    qtbot.waitUntil(lambda: "skipped Anna" in window.messages[-1][0], timeout=WAIT)
    assert [p.n_templates for p in service.list_people()] == [3]


# ------------------------------------------------------------------------------ calibrate
def test_calibrate_computes_chooses_and_applies(qtbot, window, service) -> None:
    enroll(qtbot, window, "Ann", person=1)
    enroll(qtbot, window, "Bob", person=2)
    enroll(qtbot, window, "Cid", person=3)
    page = window.calibrate_page
    window.show_page(page)
    with qtbot.waitSignal(page.scoresReady, timeout=WAIT) as b:
        assert page.compute()
    s: ScoreSet = b.args[0]
    assert s.genuine.size == 3 * 3 and s.impostor.size == 27  # 9 templates: C(9,2) = 36
    page.set_target_far(0.1)
    tau = page.chosen_tau()
    assert tau is not None
    # brute force: the smallest score with FAR <= 0.1
    cands = sorted(set(s.genuine.tolist()) | set(s.impostor.tolist()))
    ok = [t for t in cands if np.mean(s.impostor >= t) <= 0.1]
    assert tau == pytest.approx(min(ok))
    with qtbot.waitSignal(page.applied, timeout=WAIT):
        assert page.apply()
    assert service.threshold("distance") == pytest.approx(tau)
    qtbot.waitUntil(lambda: window.recognize_page.threshold() is not None, timeout=WAIT)
    assert window.recognize_page.threshold() == pytest.approx(tau, abs=2e-3)


# ------------------------------------------------------------------------------- settings
def test_settings_persist(qtbot, window, store) -> None:
    page = window.settings_page
    window.show_page(page)
    page.samples_spin.setValue(9)
    page.window_spin.setValue(11)
    page.tau_check.setChecked(True)
    page.tau_spin.setValue(0.42)
    page.camera_combo.setEditText("/tmp/some_video.mp4")
    with qtbot.waitSignal(window.ctx.settingsChanged, timeout=WAIT):
        page.apply()
    loaded = store.load()
    assert (loaded.samples, loaded.window, loaded.tau) == (9, 11, pytest.approx(0.42))
    assert loaded.camera == "/tmp/some_video.mp4"
    assert window.enroll_page.target_spin.value() == 9
    assert window.verify_page.window_spin.value() == 11
    assert window.source is not None and window.source.description == "video some_video.mp4"
    # a hand-set τ for the chosen scorer wins over the calibrated one
    assert window.ctx.threshold("distance") == pytest.approx(0.42)


# ----------------------------------------------------------------------- window, camera
def test_missing_camera_shows_message(qtbot, service, store) -> None:
    from faceapp.gui.camera import available_cameras

    if available_cameras():
        pytest.skip("a camera is attached; this test is for machines without one")
    w = MainWindow(GuiSettings(camera="0"), store=store, service=service, camera_on=False)
    qtbot.addWidget(w)
    with qtbot.waitSignal(w.messageShown, timeout=WAIT) as b:
        w.set_camera_wanted(True)  # Enroll is a live page: the camera starts
    assert b.args[1] is True and "No camera" in b.args[0]
    assert "No camera" in w.enroll_page.view.placeholder()
    assert not w.camera_action.isChecked()
    w.show_page("People")  # the app keeps working
    w.shutdown()


def test_bad_video_file_shows_message(qtbot, service, store, tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00garbage" * 100)
    w = MainWindow(GuiSettings(camera=str(bad)), store=store, service=service, camera_on=False)
    qtbot.addWidget(w)
    with qtbot.waitSignal(w.messageShown, timeout=WAIT) as b:
        w.set_camera_wanted(True)
    assert b.args[1] is True and "bad.mp4" in b.args[0]
    w.show_page("Recognize")
    w.shutdown()


def test_video_file_frames_reach_the_page(qtbot, service, store, data_dir: Path) -> None:
    clip = data_dir / "face_videos" / "face_recognition_examples" / "short_hamilton_clip.mp4"
    w = MainWindow(GuiSettings(camera=str(clip)), store=store, service=service, camera_on=False)
    qtbot.addWidget(w)
    w.show_page("Recognize")
    w.set_camera_wanted(True)
    qtbot.waitUntil(lambda: w.recognize_page.worker.processed >= 2, timeout=WAIT)
    assert w.recognize_page.view.has_frame()
    stats = w.recognize_page.last_stats()
    assert stats is not None and stats.processed >= 2
    w.show_page("People")  # not a live page: the camera stops
    assert not w.source.is_active()
    w.show_page("Recognize")
    assert w.source.is_active()
    w.close()  # closeEvent: camera stopped, workers stopped and waited for
    assert not w.source.is_active()
    assert not w.recognize_page.worker.is_running()


def test_long_task_shows_progress_and_cancels(qtbot, window) -> None:
    started = []

    def job(progress, should_stop):
        started.append(1)
        for i in range(10_000):
            if should_stop():
                return i
            progress(i, 10_000, "working")
            time.sleep(0.001)
        return -1

    window.show()
    task = window.ctx.run_task(job, label="Long job", show_progress=True)
    qtbot.waitUntil(lambda: window.progress.isVisible() and window.progress.value() > 0, timeout=WAIT)
    assert window.cancel_button.isVisible()
    with qtbot.waitSignal(task.aborted, timeout=WAIT):
        window.cancel_button.click()
    qtbot.waitUntil(lambda: not window.progress.isVisible(), timeout=WAIT)
    assert window.messages[-1] == ("Long job: cancelled", False)


def test_service_open_failure_is_a_message(qtbot, store) -> None:
    def boom(_settings):
        from faceapp.errors import ModelError

        raise ModelError("models/default.pt: no such model")

    w = MainWindow(GuiSettings(), store=store, open_service=boom, camera_on=False)
    qtbot.addWidget(w)
    with qtbot.waitSignal(w.serviceReady, timeout=WAIT) as b:
        w.open_service_async()
    assert b.args == [None]
    assert w.messages[-1] == ("models/default.pt: no such model", True)
    assert "no such model" in w.settings_page.status_label.text()
    w.shutdown()


def test_service_opens_in_background(qtbot, store, service) -> None:
    w = MainWindow(GuiSettings(), store=store, open_service=lambda s: service, camera_on=False)
    qtbot.addWidget(w)
    assert w.ctx.service is None
    with qtbot.waitSignal(w.serviceReady, timeout=WAIT):
        w.open_service_async()
    assert w.ctx.service is service
    assert "fake-gui-model" in w.service_label.text()
    qtbot.waitUntil(lambda: w.recognize_page.scorer_combo.count() == 1, timeout=WAIT)
    w.shutdown()


def test_enroll_page_asks_consent_once_in_an_organisation_gallery(qtbot, window, service) -> None:
    from faceapp.services import Consent, PrivacyPolicy

    service.set_privacy_policy(PrivacyPolicy(use="organisation"))
    page = window.enroll_page
    asked: list[str] = []
    lookups: list[bool] = []  # the consent lookup reads the gallery: never in the GUI thread
    required = service.consent_required
    service.consent_required = lambda name: (  # type: ignore[method-assign]
        lookups.append(threading.current_thread() is threading.main_thread()) or required(name))
    page.ask_consent = lambda name: asked.append(name)  # type: ignore[method-assign,assignment,return-value]
    window.show_page(page)
    page.guide.capture_interval_s = 0.0
    page.name_edit.setText("Ann")
    page.target_spin.setValue(2)
    page.capture_button.click()
    variant = 0
    while len(page.samples()) < 2:
        feed(qtbot, page, frame((1, variant)))
        variant += 1
    with qtbot.waitSignal(page.saveRefused, timeout=WAIT):  # the consent lookup runs on a pool thread
        assert page.save(ask=False)
    assert asked == ["Ann"] and service.list_people() == []  # cancelled: nothing saved
    def consent(name: str) -> Consent:
        asked.append(name)
        return Consent("lab door", "form 12")

    page.ask_consent = consent  # type: ignore[method-assign]
    with qtbot.waitSignal(page.saved, timeout=WAIT):
        assert page.save(ask=False)
    idle(qtbot, window)
    assert service.consents("Ann")[0]["purpose"] == "lab door" and asked == ["Ann", "Ann"]
    enroll(qtbot, window, "Ann", person=1, n=2)  # more samples of Ann: no consent asked again
    assert asked == ["Ann", "Ann"]
    assert lookups == [False, False, False]


def test_recognize_keeps_showing_video_while_the_gallery_server_is_down(qtbot, store, pg_server,
                                                                        pg_url) -> None:
    """A shared gallery on a real PostgreSQL server that stops while the camera runs: the
    page keeps processing frames and labelling faces from the in-memory index (the live
    loop does no database round trip per frame: no error, no stuck worker); the
    recognizer's background check says the server cannot be reached, and clears once the
    server is back."""
    pipe = FakePipeline()
    cal = Calibration(model_id=pipe.model_id, scorers={"distance": {"far_0.01": TAU}})
    svc = FaceService(open_database(pg_url), pipe, cal, scorers={"distance": CosineScorer()},
                      owns_engine=True)
    w = MainWindow(GuiSettings(camera="0", samples=3, window=3), store=store, service=svc,
                   camera_on=False)
    qtbot.addWidget(w)
    for page in (w.recognize_page, w.enroll_page, w.verify_page):
        page.set_live_config(FAKE_LIVE)
    try:
        enroll(qtbot, w, "Ann", person=1)
        page = w.recognize_page
        w.show_page(page)
        feed(qtbot, page, frame((1, 30)))
        assert [lab.name for lab in page.labels()] == ["Ann"]
        matcher = page.recognizer().matcher
        matcher.refresh_s = 0.0  # check the gallery's generation on every batch
        pg_server.stop()
        try:
            failed_before = page.worker.failed
            feed(qtbot, page, frame((1, 30), (2, 31)))  # a new face: matched from memory
            assert page.worker.failed == failed_before
            assert [lab.name for lab in page.labels()] == ["Ann", None]
            assert page.worker.is_running()
            n = 32

            def outage_seen() -> bool:
                nonlocal n
                n += 1
                feed(qtbot, page, frame((1, 30), (2, n)))
                return "cannot reach the database server" in matcher.problem

            qtbot.waitUntil(outage_seen, timeout=WAIT)
            assert page.worker.failed == failed_before
        finally:
            pg_server.start()
        feed(qtbot, page, frame((1, 30), (2, 99)))
        assert page.view.banner() == ""
        assert page.labels()[0].name == "Ann"
    finally:
        w.shutdown()
        svc.close()
