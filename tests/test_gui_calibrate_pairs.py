"""Calibrate page from a labelled pairs file: real LFW photos, real detector and model, the
scores equal those of FaceService.pair_scores, τ is chosen from them and can be applied."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from faceapp.config import DetectorConfig
from faceapp.gallery import open_database
from faceapp.gui.main_window import MainWindow
from faceapp.gui.settings import GuiSettings, SettingsStore
from faceapp.nn.checkpoint import load_checkpoint
from faceapp.nn.pipeline import FacePipeline
from faceapp.services import FaceService
from faceapp.vision.detection import FaceDetector

pytestmark = pytest.mark.gui

WAIT = 60_000
PEOPLE = ("Colin_Powell", "Tony_Blair", "Gerhard_Schroeder", "Jean_Chretien")


@pytest.fixture
def window(qtbot, tmp_path: Path, small_model_path: Path):
    pipeline = FacePipeline(FaceDetector(DetectorConfig(min_face_size=40)),
                            load_checkpoint(small_model_path))
    engine = open_database(f"sqlite:///{tmp_path / 'g.sqlite'}")
    service = FaceService(engine, pipeline, None, owns_engine=True)
    w = MainWindow(GuiSettings(), store=SettingsStore.at_path(str(tmp_path / "s.ini")), service=service,
                   owns_service=True, camera_on=False)
    qtbot.addWidget(w)
    yield w
    w.shutdown()


@pytest.fixture
def pairs_file(tmp_path: Path) -> Path:
    lines = ["1\t12"]
    lines += [f"{p}\t1\t{i}" for p in PEOPLE for i in (2, 3, 4)]
    n = len(PEOPLE)
    lines += [f"{PEOPLE[j]}\t{j + 1}\t{PEOPLE[(j + 1) % n]}\t{j + 1}" for j in range(n)]
    lines += [f"{PEOPLE[j]}\t{j + 2}\t{PEOPLE[(j + 2) % n]}\t{j + 1}" for j in range(n)]
    path = tmp_path / "pairs.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_scores_from_a_pairs_file_choose_and_apply_tau(qtbot, window, pairs_file, lfw_dir) -> None:
    page = window.calibrate_page
    window.show_page(page)
    asked: list[str] = []
    page.ask_open_file = lambda title, filt: str(pairs_file)  # type: ignore[method-assign]
    page.ask_directory = lambda title, start: asked.append(start) or str(lfw_dir)  # type: ignore[method-assign]
    with qtbot.waitSignal(page.scoresReady, timeout=WAIT) as got:
        assert page.ask_pairs()
    assert asked == [str(pairs_file.parent)]  # the folder dialog opens beside the pairs file
    s = got.args[0]
    assert s.genuine.size == 12 and s.impostor.size == 8 and "pairs.txt" in s.origin
    expected = window.ctx.service.pair_scores(pairs_file, lfw_dir)
    np.testing.assert_allclose(np.sort(s.genuine), np.sort(expected.scores[expected.same]), atol=1e-6)
    np.testing.assert_allclose(np.sort(s.impostor), np.sort(expected.scores[~expected.same]), atol=1e-6)
    page.set_target_far(0.1)
    tau = page.chosen_tau()
    assert tau is not None and np.mean(s.impostor >= tau) <= 0.1
    assert "pairs.txt" in page.result_label.text()
    with qtbot.waitSignal(page.applied, timeout=WAIT):
        assert page.apply()
    assert window.ctx.service.threshold("distance") == pytest.approx(tau)


def test_a_bad_pairs_file_is_a_message_not_a_crash(qtbot, window, tmp_path, lfw_dir) -> None:
    page = window.calibrate_page
    window.show_page(page)
    bad = tmp_path / "bad.txt"
    bad.write_text("1\t1\nnot a pairs line at all\n")
    assert page.compute_from_pairs(bad, lfw_dir)
    qtbot.waitUntil(lambda: page.pairs_button.isEnabled(), timeout=WAIT)
    qtbot.waitUntil(lambda: any("unexpected line" in m[0] for m in window.messages), timeout=WAIT)
    assert page.scores() is None
