"""The GUI end to end with the real detector and model on frames of the Hamilton clip.

The shipped model (``models/default.pt``) is used when present, else a small random
encoder: templates of the same face in nearby frames are close even then. τ is never
typed in: it is calibrated from the gallery through the Calibrate page. The Recognize page
runs the live loop (``faceapp.services.live``) with its default settings: detection in the
background every few frames, tracking in between, embeddings reused.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from faceapp.config import DetectorConfig, default_model_path
from faceapp.gallery import open_database
from faceapp.gui.main_window import MainWindow
from faceapp.gui.recognize_page import UNKNOWN
from faceapp.gui.settings import GuiSettings, SettingsStore
from faceapp.nn.checkpoint import load_checkpoint
from faceapp.nn.pipeline import FacePipeline
from faceapp.services import FaceService
from faceapp.services.live import NoMatcher
from faceapp.vision.detection import FaceDetector
from faceapp.vision.video import read_video_frames

pytestmark = pytest.mark.gui

# generous: only reached when something is wrong (or the machine is very busy)
WAIT = 60_000

SINGER = "Hamilton Singer"
OTHER = "George W Bush"
# one frontal, sharp face (the singer), fed as the camera gives them (the Enroll page runs
# the live loop at the camera's rate): poses vary over these two seconds, and the page
# captures only when the face holds still between two processed frames, at most one sample
# per capture interval (its default, 0.4 s: samples about 12 frames apart)
ENROLL_FRAMES = tuple(range(100, 166))
N_SAMPLES = 3
LATER_FRAMES = (192, 198, 204)  # the same singer, about two seconds later
LIVE_FRAMES = tuple(range(192, 212))  # consecutive frames, as the camera loop gives them
HOLD_FRAME = 200  # a frontal view of the singer, shown as by a paused camera
AFTER_DELETE = tuple(range(212, 224))


@pytest.fixture(scope="module")
def clip_frames(hamilton_clip: Path) -> dict[int, np.ndarray]:
    wanted = (*ENROLL_FRAMES, *LATER_FRAMES, *LIVE_FRAMES, *AFTER_DELETE)
    frames = read_video_frames(hamilton_clip, max_frames=max(wanted) + 1)
    return {i: frames[i] for i in wanted}


@pytest.fixture(scope="module")
def pipeline(small_model_path: Path) -> FacePipeline:
    model = default_model_path() if default_model_path().is_file() else small_model_path
    # faces in these frames are >= 70 px, >= 52 px in the live loop's detection frames
    # (downscaled to 480 px): a larger minimum size than the app's keeps MTCNN fast
    return FacePipeline(FaceDetector(DetectorConfig(min_face_size=48)), load_checkpoint(model))


@pytest.fixture
def window(qtbot, tmp_path: Path, pipeline: FacePipeline):
    service = FaceService(
        open_database(f"sqlite:///{tmp_path / 'g.sqlite'}"), pipeline, None, owns_engine=True
    )
    w = MainWindow(
        GuiSettings(samples=N_SAMPLES, window=3),
        store=SettingsStore.at_path(str(tmp_path / "s.ini")),
        service=service,
        owns_service=True,
        camera_on=False,
    )
    qtbot.addWidget(w)
    yield w
    w.shutdown()


FRAME_S = 1 / 29.97  # the clip's frame period
_last_feed: dict[int, float] = {}


def feed(qtbot, page, image: np.ndarray) -> None:
    """Show one frame to a live page, no sooner than a camera at the clip's rate would
    (the live loop's detector runs in the background meanwhile), and wait until it was
    processed."""
    qtbot.waitUntil(lambda: not page.worker.is_busy(), timeout=WAIT)
    wait_s = _last_feed.get(id(page), 0.0) + FRAME_S - time.monotonic()
    if wait_s > 0:
        qtbot.wait(int(wait_s * 1000) + 1)
    _last_feed[id(page)] = time.monotonic()
    with qtbot.waitSignal(page.worker.statsChanged, timeout=WAIT):
        page.on_frame(image)


def start_stream(qtbot, page, image: np.ndarray) -> None:
    """Show ``image`` as a still camera would, until the page's live loop (whose detector
    runs in the background) reports a face: labels on Recognize, a box on Enroll and Verify."""

    def seen() -> bool:
        feed(qtbot, page, image)
        return bool(page.labels()) if hasattr(page, "labels") else bool(page.view.overlays())

    qtbot.waitUntil(seen, timeout=WAIT)


def idle(qtbot, window: MainWindow) -> None:
    qtbot.waitUntil(lambda: not window.ctx.runner.is_busy(), timeout=WAIT)


def enroll_singer_from_frames(qtbot, window: MainWindow, frames: dict[int, np.ndarray]) -> None:
    page = window.enroll_page
    window.show_page(page)
    page.name_edit.setText(SINGER)
    start_stream(qtbot, page, frames[ENROLL_FRAMES[0]])
    assert page.samples() == []  # nothing captured while not capturing
    page.capture_button.click()
    guidance = []
    for i in ENROLL_FRAMES:  # as a user would: hold on until enough good samples
        feed(qtbot, page, frames[i])
        guidance.append(page.guidance())
        if len(page.samples()) == N_SAMPLES:
            break
    assert len(page.samples()) == N_SAMPLES, guidance
    assert not page.is_capturing()  # capture stops by itself
    with qtbot.waitSignal(page.saved, timeout=WAIT):
        assert page.save(ask=False)
    idle(qtbot, window)


def enroll_other_from_files(qtbot, window: MainWindow, lfw_dir: Path) -> None:
    page = window.enroll_page
    files = sorted((lfw_dir / OTHER.replace(" ", "_")).iterdir())[:2]
    with qtbot.waitSignal(page.filesAdded, timeout=WAIT) as b:
        page.add_files(files)
    assert b.args[0] == 2, b.args[1]
    page.name_edit.setText(OTHER)
    with qtbot.waitSignal(page.saved, timeout=WAIT):
        assert page.save(ask=False)
    idle(qtbot, window)


def calibrate(qtbot, window: MainWindow) -> float:
    page = window.calibrate_page
    window.show_page(page)
    with qtbot.waitSignal(page.scoresReady, timeout=WAIT) as b:
        assert page.compute()
    scores = b.args[0]
    assert scores.genuine.size == 3 + 1 and scores.impostor.size == N_SAMPLES * 2
    page.set_target_far(0.0001)  # no impostor pair of the gallery accepted
    tau = page.chosen_tau()
    assert tau is not None and tau > scores.impostor.max()
    with qtbot.waitSignal(page.applied, timeout=WAIT):
        assert page.apply()
    return tau


def test_enroll_from_clip_then_recognize_live_frames(qtbot, window, clip_frames, lfw_dir) -> None:
    enroll_singer_from_frames(qtbot, window, clip_frames)
    enroll_other_from_files(qtbot, window, lfw_dir)
    tau = calibrate(qtbot, window)
    people = {p.name: p.n_templates for p in window.ctx.service.list_people()}
    assert people == {SINGER: N_SAMPLES, OTHER: 2}

    page = window.recognize_page
    window.show_page(page)
    qtbot.waitUntil(lambda: page.threshold() is not None, timeout=WAIT)
    assert page.threshold() == pytest.approx(tau, abs=2e-3)
    start_stream(qtbot, page, clip_frames[LIVE_FRAMES[0]])
    recognizer = page.recognizer()
    names: list[str | None] = []
    embedded = 0
    for i in LIVE_FRAMES[1:]:
        feed(qtbot, page, clip_frames[i])
        embedded += page.last_frame_result().n_embedded
        labels = page.labels()
        names.append(labels[0].name if labels else None)
        if labels and labels[0].name == SINGER:
            assert labels[0].text.startswith(SINGER)
            assert [c[0] for c in labels[0].candidates] == [SINGER, OTHER]
    assert page.recognizer() is recognizer  # one recognizer for the whole stream
    assert names.count(SINGER) >= 2 * len(names) // 3, names
    assert embedded < len(names)  # tracked faces keep their embedding
    assert page.last_stats().n_embedded == page.last_frame_result().n_embedded

    # the slider relabels at once, without a new frame
    top = page.labels()[0]
    assert top.candidates[0][0] == SINGER, top
    with qtbot.waitSignal(page.labelsChanged, timeout=WAIT) as b:
        page.set_threshold(top.score + 1e-3)
    assert b.args[0][0].name is None
    with qtbot.waitSignal(page.labelsChanged, timeout=WAIT) as b:
        page.set_threshold(top.score - 1e-3)
    assert b.args[0][0].name == SINGER
    page.set_threshold(tau)

    # a paused camera: the face is embedded at most once more, then its decision is reused
    for _ in range(3):
        feed(qtbot, page, clip_frames[HOLD_FRAME])
    assert page.last_frame_result().n_embedded == 0
    assert page.labels()[0].name == SINGER

    # the singer is deleted (through the People page's actions, while Recognize stays on
    # screen, as when a gallery task finishes in the background): from the next frame on,
    # they are Unknown
    people_page = window.people_page
    qtbot.waitUntil(lambda: people_page.model.rowCount() == 2, timeout=WAIT)
    assert people_page.select_name(SINGER)
    qtbot.waitUntil(lambda: people_page.templates.count() == N_SAMPLES, timeout=WAIT)
    people_page.confirm = lambda title, text: True  # type: ignore[method-assign]
    assert people_page.delete_selected()
    qtbot.waitUntil(lambda: people_page.model.names() == [OTHER], timeout=WAIT)
    assert window.current_page() is page
    # the same picture again: the tracked face is embedded again all the same
    feed(qtbot, page, clip_frames[HOLD_FRAME])
    assert page.last_frame_result().n_embedded >= 1
    after = page.labels()[:1]
    for i in AFTER_DELETE:
        feed(qtbot, page, clip_frames[i])
        after.extend(page.labels()[:1])
    assert after, "the singer is still in view"
    for lab in after:
        assert lab.name is None and lab.text.startswith(UNKNOWN), lab
        assert SINGER not in [c[0] for c in lab.candidates]


def test_verify_accepts_enrolled_and_rejects_other_enrolled(qtbot, window, clip_frames, lfw_dir) -> None:
    enroll_singer_from_frames(qtbot, window, clip_frames)
    enroll_other_from_files(qtbot, window, lfw_dir)
    tau = calibrate(qtbot, window)

    page = window.verify_page
    window.show_page(page)
    qtbot.waitUntil(lambda: page.person_combo.count() == 2, timeout=WAIT)
    page.set_claimed(SINGER)
    assert page.threshold() == pytest.approx(tau)
    start_stream(qtbot, page, clip_frames[LATER_FRAMES[0]])
    page.reset()  # the decision is made on the frames below
    for i in LATER_FRAMES:
        feed(qtbot, page, clip_frames[i])
    assert page.decision() == "ACCEPT", (page.scores(), tau)

    page.set_claimed(OTHER)  # the singer claims to be someone else who is enrolled
    for i in LATER_FRAMES:
        feed(qtbot, page, clip_frames[i])
    assert page.decision() == "REJECT", (page.scores(), tau)
    assert page.fused_score() < tau


def test_enroll_and_verify_decide_on_the_live_loops_tracked_faces(qtbot, window, clip_frames,
                                                                  lfw_dir) -> None:
    """Enroll and Verify run the same live loop as Recognize (tracking, embeddings reused):
    Enroll's samples are fresh measurements of the tracked face, Verify scores the tracked
    face's new embeddings only."""
    page = window.enroll_page
    enrolled: list = []  # the live loop's FrameResult of every Enroll frame
    page.worker.resultReady.connect(lambda r: enrolled.append(r.value))
    window.show_page(page)
    page.name_edit.setText(SINGER)
    start_stream(qtbot, page, clip_frames[ENROLL_FRAMES[0]])
    recognizer = page.live_session().recognizer
    assert isinstance(recognizer.matcher, NoMatcher)  # no 1:K matching: the page decides on LiveFace.face
    page.capture_button.click()
    for i in ENROLL_FRAMES:
        feed(qtbot, page, clip_frames[i])
        if len(page.samples()) == N_SAMPLES:
            break
    assert len(page.samples()) == N_SAMPLES
    assert page.live_session().recognizer is recognizer  # one loop for the whole stream
    lives = [r for r in enrolled if r is not None]
    fresh = {id(f.face) for r in lives for f in r.faces if f.fresh}
    assert all(id(s.face) in fresh for s in page.samples())  # measured on their own frame
    assert all(s.face.quality.ok for s in page.samples())
    # while not capturing, a good face holds its measurement from frame to frame
    n_faces = sum(len(r.faces) for r in lives)
    assert sum(r.n_embedded for r in lives) < n_faces
    with qtbot.waitSignal(page.saved, timeout=WAIT):
        assert page.save(ask=False)
    idle(qtbot, window)
    enroll_other_from_files(qtbot, window, lfw_dir)
    tau = calibrate(qtbot, window)

    page = window.verify_page
    verified: list = []  # the VerifyFrame of every Verify frame
    page.worker.resultReady.connect(lambda r: verified.append(r.value))
    window.show_page(page)
    qtbot.waitUntil(lambda: page.person_combo.count() == 2, timeout=WAIT)
    page.set_claimed(SINGER)
    start_stream(qtbot, page, clip_frames[LIVE_FRAMES[0]])
    page.reset()
    verified.clear()
    for i in LIVE_FRAMES[1:]:
        feed(qtbot, page, clip_frames[i])
    assert page.decision() == "ACCEPT", (page.scores(), tau)
    frames = [v for v in verified if v is not None]
    scored = [v for v in frames if v.result is not None]
    assert len(frames) == len(LIVE_FRAMES) - 1
    # every score is of the largest tracked face, embedded on that frame
    for v in scored:
        top = v.live.faces[0]
        assert top.fresh and v.result.box == tuple(top.face.detection.box)
        assert v.result.person == SINGER and v.result.threshold == pytest.approx(tau)
    assert len(scored) >= 3  # the window filled from the first frames
    assert len(scored) < len(frames)  # then the tracked face kept its embedding
    assert page.scores() == pytest.approx([v.result.score for v in scored][-3:])
