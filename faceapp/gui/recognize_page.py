"""Recognize page (1:K): every face in view labelled with a name and a score, or "Unknown".

The worker asks ``service.recognize(frame, top_k=...)`` for each face's best candidates;
labels are decided here against the τ slider, so moving it relabels the faces at once,
without waiting for the next frame. Clicking a face (or :meth:`select_face`) lists its
top candidates.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QSlider,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from faceapp.gui.context import AppContext
from faceapp.gui.page import Page, heading
from faceapp.gui.scoring import candidate_pairs, passes, score_range
from faceapp.gui.video_view import BAD, GOOD, NEUTRAL, Overlay, VideoView
from faceapp.gui.workers import FrameResult, FrameStats, FrameWorker

log = logging.getLogger(__name__)

UNKNOWN = "Unknown"
SLIDER_STEPS = 1000
TOP_K = 5


@dataclass(frozen=True)
class FaceLabel:
    """One face as shown: box in frame pixels, the label text, the name (``None`` = unknown)
    and the best score."""

    box: tuple[float, float, float, float]
    name: str | None
    score: float
    candidates: tuple[tuple[str, float], ...]
    ambiguous: bool

    @property
    def text(self) -> str:
        if self.name is None:
            return f"{UNKNOWN} ({self.score:.2f})" if self.candidates else UNKNOWN
        return f"{self.name}{'?' if self.ambiguous else ''} {self.score:.2f}"


class RecognizePage(Page):
    """Live 1:K identification with an immediate τ slider.

    Signals: ``labelsChanged(list[FaceLabel])`` after every result or τ change.
    """

    title = "Recognize"
    live = True
    labelsChanged = Signal(list)

    def __init__(self, ctx: AppContext, parent: QWidget | None = None) -> None:
        super().__init__(ctx, parent)
        self._faces: list[Any] = []
        self._labels: list[FaceLabel] = []
        self._selected = -1
        self._tau: float | None = None
        self._range = (-1.0, 1.0)
        self._stats: FrameStats | None = None

        self.worker = FrameWorker(parent=self)
        self.worker.resultReady.connect(self._on_result)
        self.worker.errorOccurred.connect(self._on_worker_error)
        self.worker.statsChanged.connect(self._on_stats)
        self.worker.start()

        self.view = VideoView()
        self.scorer_combo = QComboBox()
        self.tau_slider = QSlider(Qt.Orientation.Horizontal)
        self.tau_slider.setRange(0, SLIDER_STEPS)
        self.tau_label = QLabel("τ: –")
        self.count_label = QLabel("No faces")
        self.table = QTableWidget(0, 2)
        self.table.setHorizontalHeaderLabels(["Candidate", "Score"])
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QTableWidget.SelectionMode.NoSelection)

        form = QFormLayout()
        form.addRow("Scorer", self.scorer_combo)
        form.addRow("Threshold", self.tau_slider)
        form.addRow("", self.tau_label)
        side = QVBoxLayout()
        side.addWidget(heading("Recognize (1:K)"))
        side.addLayout(form)
        side.addWidget(self.count_label)
        side.addWidget(QLabel("Top candidates of the selected face (click a face):"))
        side.addWidget(self.table, 1)
        panel = QWidget()
        panel.setLayout(side)
        panel.setMaximumWidth(360)
        layout = QHBoxLayout(self)
        layout.addWidget(self.view, 1)
        layout.addWidget(panel)

        self.scorer_combo.currentTextChanged.connect(lambda _t: self._reconfigure())
        self.tau_slider.valueChanged.connect(self._on_slider)
        self.view.faceClicked.connect(self.select_face)
        ctx.thresholdChanged.connect(self._reconfigure)
        ctx.settingsChanged.connect(lambda _s: self._reconfigure())
        self.on_service_changed(ctx.service)

    # state --------------------------------------------------------------------------------
    def labels(self) -> list[FaceLabel]:
        return list(self._labels)

    def selected_face(self) -> int:
        return self._selected

    def candidates_shown(self) -> list[tuple[str, float]]:
        out = []
        for r in range(self.table.rowCount()):
            name_item, score_item = self.table.item(r, 0), self.table.item(r, 1)
            if name_item is not None and score_item is not None:
                out.append((name_item.text(), float(score_item.text())))
        return out

    def threshold(self) -> float | None:
        return self._tau

    def last_stats(self) -> FrameStats | None:
        return self._stats

    def set_threshold(self, tau: float) -> None:
        """Move the slider to (the step nearest) ``tau``; labels update immediately."""
        lo, hi = self._range
        self._tau = float(tau)
        self.tau_slider.blockSignals(True)
        self.tau_slider.setValue(round((tau - lo) / (hi - lo) * SLIDER_STEPS))
        self.tau_slider.blockSignals(False)
        self._relabel()

    def set_scorer(self, scorer: str) -> None:
        self.scorer_combo.setCurrentIndex(self.scorer_combo.findText(scorer))

    # configuration ------------------------------------------------------------------------
    def on_service_changed(self, service: Any) -> None:
        self.refill_scorers(self.scorer_combo)
        self._reconfigure()

    def _reconfigure(self) -> None:
        service = self.service
        scorer = self.scorer_combo.currentText()
        self._faces = []
        if service is None or not scorer:
            self.worker.set_process(None)
            self._tau = None
            self.tau_slider.setEnabled(False)
            self.view.set_banner("Open a gallery first (Settings)." if service is None else "")
            self._relabel()
            return
        tau = self.ctx.threshold(scorer)
        self._range = score_range(scorer, tau)
        self.tau_slider.setEnabled(True)
        self.set_threshold(tau if tau is not None else sum(self._range) / 2)
        self.view.set_banner("")

        def process(frame: np.ndarray) -> list[Any]:
            # τ only decides the service's own labels, which are redrawn here from the
            # candidates with the slider's current value; the slider's τ is passed so that
            # an uncalibrated model still gives candidates.
            return list(
                service.recognize(frame, top_k=TOP_K, scorer=scorer, threshold=self._tau, log_event=False)
            )

        self.worker.set_process(process)

    def _on_slider(self, value: int) -> None:
        lo, hi = self._range
        self._tau = lo + (hi - lo) * value / SLIDER_STEPS
        self._relabel()

    # live loop ----------------------------------------------------------------------------
    def on_frame(self, frame: np.ndarray) -> None:
        self.view.set_frame(frame)
        self.worker.submit(frame)

    def on_camera_stopped(self) -> None:
        self._faces = []
        self._relabel()

    def _on_stats(self, stats: FrameStats) -> None:
        self._stats = stats
        self.statsChanged.emit(stats)

    def _on_worker_error(self, message: str) -> None:
        self.view.set_banner(message, BAD)

    def _on_result(self, result: FrameResult) -> None:
        self.view.set_banner("")
        self._faces = list(result.value)
        if self._selected >= len(self._faces):
            self._selected = -1
        if self._selected < 0 and self._faces:
            self._selected = 0
        self._relabel()

    def select_face(self, index: int) -> None:
        self._selected = index if 0 <= index < len(self._faces) else -1
        self._relabel()

    def _label(self, face: Any) -> FaceLabel:
        cands = tuple(candidate_pairs(getattr(face, "candidates", ())))
        box = tuple(float(v) for v in face.box)
        if cands:
            name, score = cands[0]
        else:
            name, score = None, float(getattr(face, "score", float("nan")))
        known = name is not None and self._tau is not None and np.isfinite(score) and passes(score, self._tau)
        return FaceLabel(
            box=box,  # type: ignore[arg-type]
            name=name if known else None,
            score=score,
            candidates=cands,
            ambiguous=bool(getattr(face, "ambiguous", False)),
        )

    def _relabel(self) -> None:
        self._labels = [self._label(f) for f in self._faces]
        overlays = []
        for i, lab in enumerate(self._labels):
            color = GOOD if lab.name is not None else BAD
            if lab.ambiguous and lab.name is not None:
                color = NEUTRAL
            overlays.append(Overlay(lab.box, lab.text, color, selected=i == self._selected))
        self.view.set_overlays(overlays)
        n = len(self._labels)
        known = sum(1 for lab in self._labels if lab.name is not None)
        self.count_label.setText(
            "No faces" if n == 0 else f"{n} face{'s' if n != 1 else ''}, {known} recognised"
        )
        if self._tau is not None:
            lo, hi = self._range
            self.tau_label.setText(f"τ = {self._tau:.3f}   (range {lo:.2f} … {hi:.2f})")
        self._fill_table()
        self.labelsChanged.emit(self._labels)

    def _fill_table(self) -> None:
        cands = self._labels[self._selected].candidates if 0 <= self._selected < len(self._labels) else ()
        self.table.setRowCount(len(cands))
        for r, (name, score) in enumerate(cands):
            ok = self._tau is not None and passes(score, self._tau)
            name_item = QTableWidgetItem(name)
            score_item = QTableWidgetItem(f"{score:.4f}")
            score_item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            if not ok:
                name_item.setForeground(Qt.GlobalColor.gray)
                score_item.setForeground(Qt.GlobalColor.gray)
            self.table.setItem(r, 0, name_item)
            self.table.setItem(r, 1, score_item)

    # life cycle ---------------------------------------------------------------------------
    def drain(self) -> None:
        self.worker.stop()
        self.worker.start()

    def shutdown(self) -> None:
        self.worker.stop()
