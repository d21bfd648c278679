"""Calibrate page: genuine / impostor score distributions, ROC, τ for a target FAR, apply.

Scores come from the gallery (every pair of templates: same person = genuine, different
people = impostor) or from a labelled pairs file (LFW ``pairs*.txt`` format, with its image
folder), computed in the background. The chosen τ is the lowest score whose
false-accept rate on these pairs is at most the target; *Apply* stores it through the
service so verification and recognition use it from then on.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from faceapp.errors import FaceappError
from faceapp.gui.context import AppContext, ServiceInfo
from faceapp.gui.page import Page, heading
from faceapp.gui.plots import HistogramPlot, RocPlot
from faceapp.services.calibration import roc, threshold_for_far

log = logging.getLogger(__name__)

TARGET_FARS = (0.1, 0.01, 0.001, 0.0001)


@dataclass(frozen=True)
class ScoreSet:
    """Scores of one scorer: ``genuine`` (G,) and ``impostor`` (I,) float64, and their origin."""

    scorer: str
    genuine: np.ndarray
    impostor: np.ndarray
    origin: str


class CalibratePage(Page):
    """Compute distributions, pick τ for a target FAR, apply and persist it.

    Signals: ``scoresReady(ScoreSet)``; ``tauChosen(float)``; ``applied(str, float)``.
    """

    title = "Calibrate"
    needs_model = True
    scoresReady = Signal(object)
    tauChosen = Signal(float)
    applied = Signal(str, float)

    def __init__(self, ctx: AppContext, parent: QWidget | None = None) -> None:
        super().__init__(ctx, parent)
        self._scores: ScoreSet | None = None
        self._tau: float | None = None

        self.scorer_combo = QComboBox()
        self.far_combo = QComboBox()
        for far in TARGET_FARS:
            self.far_combo.addItem(f"{far:g}  ({far * 100:g} %)", far)
        self.far_combo.setCurrentIndex(1)
        self.compute_button = QPushButton("Compute from gallery")
        self.pairs_button = QPushButton("From a pairs file…")
        self.pairs_button.setToolTip(
            "Labelled pairs in the LFW format (e.g. pairsDevTest.txt), then the folder that "
            "holds one sub-folder of images per person"
        )
        self.apply_button = QPushButton("Apply τ")
        self.apply_button.setEnabled(False)
        self.info = QLabel(
            "Scores of all template pairs in the gallery: needs at least two "
            "people, one of them with two or more templates."
        )
        self.info.setWordWrap(True)
        self.result_label = QLabel()
        self.result_label.setWordWrap(True)
        self.current_label = QLabel()
        self.hist = HistogramPlot()
        self.roc = RocPlot()

        form = QFormLayout()
        form.addRow("Scorer", self.scorer_combo)
        form.addRow("Target false-accept rate", self.far_combo)
        buttons = QHBoxLayout()
        buttons.addWidget(self.compute_button)
        buttons.addWidget(self.pairs_button)
        buttons.addWidget(self.apply_button)
        buttons.addStretch(1)
        plots = QHBoxLayout()
        plots.addWidget(self.hist, 1)
        plots.addWidget(self.roc, 1)
        layout = QVBoxLayout(self)
        layout.addWidget(heading("Calibrate the threshold τ"))
        layout.addWidget(self.info)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.current_label)
        layout.addWidget(self.result_label)
        layout.addLayout(plots, 1)

        self.compute_button.clicked.connect(lambda: self.compute())
        self.pairs_button.clicked.connect(lambda: self.ask_pairs())
        self.apply_button.clicked.connect(lambda: self.apply())
        self.far_combo.currentIndexChanged.connect(lambda _i: self._choose())
        self.scorer_combo.currentTextChanged.connect(lambda _t: self._scorer_changed())
        ctx.thresholdChanged.connect(self._show_current)
        ctx.galleryChanged.connect(self._invalidate)
        self.on_service_changed(self.service)

    # state ------------------------------------------------------------------------------
    def scores(self) -> ScoreSet | None:
        return self._scores

    def chosen_tau(self) -> float | None:
        return self._tau

    def target_far(self) -> float:
        return float(self.far_combo.currentData())

    def set_target_far(self, far: float) -> None:
        idx = self.far_combo.findData(far)
        if idx < 0:
            self.far_combo.addItem(f"{far:g}", far)
            idx = self.far_combo.count() - 1
        self.far_combo.setCurrentIndex(idx)

    def on_service_changed(self, service: Any) -> None:
        self.refill_scorers(self.scorer_combo)
        self.compute_button.setEnabled(service is not None)
        self.pairs_button.setEnabled(service is not None)
        self._invalidate()

    def _scorer_changed(self) -> None:
        self._invalidate()

    def _invalidate(self) -> None:
        self._scores = None
        self._tau = None
        self.hist.set_scores(np.zeros(0), np.zeros(0))
        self.hist.set_tau(None)
        self.roc.set_curve(np.zeros(0), np.zeros(0))
        self.roc.set_operating_point(None)
        self.apply_button.setEnabled(False)
        self.result_label.setText("")
        self._show_current()

    def _show_current(self) -> None:
        scorer = self.scorer_combo.currentText()
        if self.service is None or not scorer:
            self.current_label.setText("")
            return
        tau = self.ctx.threshold(scorer, report=False)
        if tau is None:
            problem = self.ctx.info.problems.get(scorer, "not calibrated")
            self.current_label.setText(f"Current τ for {scorer}: none ({problem})")
        else:
            self.current_label.setText(f"Current τ for {scorer}: {tau:.4f}")

    # compute ----------------------------------------------------------------------------
    def compute(self) -> bool:
        """Score every template pair of the gallery (background)."""
        service = self.service
        scorer = self.scorer_combo.currentText()
        if service is None or not scorer:
            return False
        self.compute_button.setEnabled(False)

        def job(_progress: Any, _stop: Any) -> ScoreSet:
            scores, same = service.gallery_scores(scorer=scorer)
            s = np.asarray(scores, dtype=np.float64).ravel()
            m = np.asarray(same, dtype=bool).ravel()
            return ScoreSet(scorer, s[m], s[~m], "gallery")

        self.ctx.run_task(
            job,
            label="Scoring gallery pairs",
            on_result=self.set_scores,
            on_finished=lambda: (self.compute_button.setEnabled(self.service is not None),
                                 self.pairs_button.setEnabled(self.service is not None)),
            show_progress=True,
        )
        return True

    def ask_pairs(self) -> bool:
        """Ask for a pairs file, then its image folder, and score it (background)."""
        pairs = self.ask_open_file("Labelled pairs file (LFW format)", "Pairs files (*.txt);;All files (*)")
        if pairs is None:
            return False
        root = self.ask_directory("Folder with one sub-folder of images per person", str(Path(pairs).parent))
        if root is None:
            return False
        return self.compute_from_pairs(pairs, root)

    def ask_directory(self, title: str, start: str) -> str | None:
        path = QFileDialog.getExistingDirectory(self, title, start)
        return path or None

    def compute_from_pairs(self, pairs_file: str | Path, image_root: str | Path) -> bool:
        """Score the labelled pairs of ``pairs_file`` (images under ``image_root``) with the
        current model (background, with progress and Cancel)."""
        service = self.service
        scorer = self.scorer_combo.currentText()
        if service is None or not scorer:
            return False
        name = Path(pairs_file).name
        self.compute_button.setEnabled(False)
        self.pairs_button.setEnabled(False)

        def job(progress: Any, stop: Any) -> ScoreSet | None:
            try:
                result = service.pair_scores(pairs_file, image_root, scorer=scorer,
                                             progress=progress, should_stop=stop)
            except FaceappError:
                if stop():
                    return None  # cancelled: the task reports it as such
                raise
            if result.skipped:
                log.info("%s: %d pairs left out (%d images without a usable face)",
                         name, result.skipped, len(result.problems))
            left_out = f", {result.skipped} pairs left out (no usable face)" if result.skipped else ""
            return ScoreSet(scorer, result.scores[result.same], result.scores[~result.same],
                            f"pairs file {name}{left_out}")

        def enable() -> None:
            self.compute_button.setEnabled(self.service is not None)
            self.pairs_button.setEnabled(self.service is not None)

        self.ctx.run_task(
            job,
            label=f"Scoring {name}",
            on_result=self.set_scores,
            on_finished=enable,
            show_progress=True,
        )
        return True

    def set_scores(self, scores: ScoreSet) -> None:
        self._scores = scores
        self.hist.set_scores(scores.genuine, scores.impostor)
        g, i = scores.genuine.size, scores.impostor.size
        if g == 0 or i == 0:
            self.result_label.setText(
                f"{g} genuine and {i} impostor pairs: both kinds are needed. Enroll at least "
                "two people, one with two or more samples."
            )
            self.roc.set_curve(np.zeros(0), np.zeros(0))
            self._tau = None
            self.apply_button.setEnabled(False)
        else:
            far, tar, _ = roc(scores.genuine, scores.impostor)
            self.roc.set_curve(far, tar)
            self._choose()
        self.scoresReady.emit(scores)

    def _choose(self) -> None:
        s = self._scores
        if s is None or s.genuine.size == 0 or s.impostor.size == 0:
            return
        target = self.target_far()
        chosen = threshold_for_far(s.genuine, s.impostor, target)
        tau, far, tar = chosen.threshold, chosen.far, chosen.tar
        self._tau = tau
        self.hist.set_tau(tau)
        self.roc.set_operating_point(far, tar)
        floor = 1.0 / s.impostor.size
        note = (
            f" (only {s.impostor.size} impostor pairs: FAR below {floor:.2g} cannot be measured)"
            if target < floor
            else ""
        )
        self.result_label.setText(
            f"<b>τ = {tau:.4f}</b> for FAR ≤ {target:g}: measured FAR {far:.4f}, TAR {tar:.3f} "
            f"on {s.genuine.size} genuine / {s.impostor.size} impostor pairs from the {s.origin}." + note
        )
        self.apply_button.setEnabled(self.service is not None)
        self.tauChosen.emit(tau)

    # apply ------------------------------------------------------------------------------
    def apply(self) -> bool:
        """Persist the chosen τ for the scorer through the service (background)."""
        service = self.service
        scorer = self.scorer_combo.currentText()
        tau = self._tau
        if service is None or tau is None or not scorer:
            return False

        def job(_p: Any, _s: Any) -> ServiceInfo:
            service.set_threshold(scorer, tau)
            return ServiceInfo.fetch(service)

        def done(info: ServiceInfo) -> None:
            settings = self.ctx.settings
            if settings.tau is not None and settings.scorer == scorer:
                # a hand-set τ would hide the one just calibrated
                self.ctx.set_settings(dataclasses.replace(settings, tau=None))
            self.ctx.show_message(f"τ for {scorer} set to {tau:.4f} and saved.")
            if self.service is service:
                self.ctx.set_info(info)
            self.applied.emit(scorer, tau)

        self.ctx.run_task(job, label="Saving τ", on_result=done)
        return True
