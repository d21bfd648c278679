"""Verify page (1:1): is the person in front of the camera who they claim to be?

Each processed frame gives one score (``service.verify(name, frame, scorer=...)``); the
decision is the median of the last few scores against τ, so one bad frame does not flip
it. ACCEPT / REJECT is shown only once enough frames were scored.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from faceapp.errors import NoFaceFound
from faceapp.gui.context import AppContext
from faceapp.gui.page import Page, heading
from faceapp.gui.scoring import ScoreWindow, passes
from faceapp.gui.video_view import BAD, GOOD, NEUTRAL, Overlay, VideoView
from faceapp.gui.workers import FrameResult

log = logging.getLogger(__name__)

ACCEPT = "ACCEPT"
REJECT = "REJECT"
WAITING = "…"


@dataclass(frozen=True)
class VerifyFrame:
    """What the worker returns for one frame: the service's ``VerifyResult`` (``None``
    when the frame holds no face) and the probe's box, if the service reports one."""

    result: Any
    box: tuple[float, float, float, float] | None


class VerifyPage(Page):
    """Claimed person + scorer + live camera -> fused ACCEPT / REJECT.

    Signals: ``decisionChanged(str, float)`` with ``"ACCEPT"``, ``"REJECT"`` or ``"…"``
    and the fused score.
    """

    title = "Verify"
    needs_model = True
    live = True
    decisionChanged = Signal(str, float)

    def __init__(self, ctx: AppContext, parent: QWidget | None = None) -> None:
        super().__init__(ctx, parent)
        self._window = ScoreWindow(ctx.settings.window)
        self._decision = WAITING
        self._tau: float | None = None

        self.worker = self.start_frame_worker(self._on_result)

        self.view = VideoView()
        self.person_combo = QComboBox()
        self.person_combo.setMinimumContentsLength(16)
        self.scorer_combo = QComboBox()
        self.window_spin = QSpinBox()
        self.window_spin.setRange(1, 60)
        self.window_spin.setValue(ctx.settings.window)
        self.window_spin.setSuffix(" frames")
        self.reset_button = QPushButton("Reset")
        self.decision_label = QLabel(WAITING)
        self.decision_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        font = QFont(self.decision_label.font())
        font.setPointSizeF(font.pointSizeF() * 2.6)
        font.setBold(True)
        self.decision_label.setFont(font)
        self.decision_label.setMinimumHeight(70)
        self.score_label = QLabel()
        self.score_label.setWordWrap(True)
        self.tau_label = QLabel()
        self.tau_label.setWordWrap(True)
        self.count_label = QLabel()

        form = QFormLayout()
        form.addRow("Claimed person", self.person_combo)
        form.addRow("Scorer", self.scorer_combo)
        form.addRow("Fuse over", self.window_spin)
        side = QVBoxLayout()
        side.addWidget(heading("Verify (1:1)"))
        side.addLayout(form)
        side.addWidget(self.decision_label)
        side.addWidget(self.score_label)
        side.addWidget(self.tau_label)
        side.addWidget(self.count_label)
        side.addWidget(self.reset_button)
        side.addStretch(1)
        panel = QWidget()
        panel.setLayout(side)
        panel.setMaximumWidth(360)
        layout = QHBoxLayout(self)
        layout.addWidget(self.view, 1)
        layout.addWidget(panel)

        self.person_combo.currentTextChanged.connect(lambda _t: self._reconfigure())
        self.scorer_combo.currentTextChanged.connect(lambda _t: self._reconfigure())
        self.window_spin.valueChanged.connect(self._on_window_size)
        self.reset_button.clicked.connect(self.reset)
        ctx.galleryChanged.connect(self.refresh_people)
        ctx.thresholdChanged.connect(self._reconfigure)
        ctx.settingsChanged.connect(self._on_settings)
        self.on_service_changed(self.service)

    # state --------------------------------------------------------------------------------
    def decision(self) -> str:
        return self._decision

    def fused_score(self) -> float:
        return self._window.fused()

    def scores(self) -> list[float]:
        return self._window.scores()

    def threshold(self) -> float | None:
        return self._tau

    def set_claimed(self, name: str) -> None:
        self.person_combo.setCurrentIndex(self.person_combo.findText(name))

    def set_scorer(self, scorer: str) -> None:
        self.scorer_combo.setCurrentIndex(self.scorer_combo.findText(scorer))

    # configuration ------------------------------------------------------------------------
    def on_service_changed(self, service: Any) -> None:
        self.refill_scorers(self.scorer_combo)
        self.refresh_people()

    def _on_settings(self, settings: Any) -> None:
        self.window_spin.setValue(settings.window)
        if settings.scorer and self.scorer_combo.findText(settings.scorer) >= 0:
            self.scorer_combo.setCurrentText(settings.scorer)
        self._reconfigure()

    def refresh_people(self) -> None:
        """Reload the names (background); keeps the current choice when it still exists."""
        service = self.service
        if service is None:
            self.person_combo.clear()
            self._reconfigure()
            return
        self.ctx.run_task(
            lambda _p, _s: service.people_names(),
            label="Loading people",
            on_result=self._set_people,
        )

    def _set_people(self, names: list[str]) -> None:
        current = self.person_combo.currentText()
        self.person_combo.blockSignals(True)
        self.person_combo.clear()
        self.person_combo.addItems(names)
        if current in names:
            self.person_combo.setCurrentText(current)
        self.person_combo.blockSignals(False)
        self._reconfigure()

    def _on_window_size(self, size: int) -> None:
        self._window.resize(size)
        self._update_decision()

    def _reconfigure(self) -> None:
        """Person, scorer or τ changed: new processing callable, empty window."""
        service = self.service
        name = self.person_combo.currentText()
        scorer = self.scorer_combo.currentText()
        self._window.clear()
        self._tau = self.ctx.threshold(scorer) if service is not None and scorer else None
        if service is None or not name or not scorer:
            self.worker.set_process(None)
            msg = self.no_service_text() if service is None else "Enroll someone first."
            self.view.set_banner(msg if service is None or not name else "", NEUTRAL)
        else:
            tau = self._tau

            def process(frame: np.ndarray) -> VerifyFrame:
                try:
                    result = service.verify(name, frame, scorer=scorer, threshold=tau, log_event=False,
                                            largest=True)
                except NoFaceFound:
                    return VerifyFrame(None, None)
                box = getattr(result, "box", None)
                return VerifyFrame(result, tuple(box) if box is not None else None)

            self.worker.set_process(process)
            self.view.set_banner("")
        if self._tau is None:
            self.tau_label.setText("τ: not calibrated for this scorer (see Calibrate)")
        else:
            self.tau_label.setText(f"τ = {self._tau:.4f} ({scorer})")
        self._update_decision()

    def reset(self) -> None:
        self._window.clear()
        self._update_decision()

    # live loop ----------------------------------------------------------------------------
    def on_frame(self, frame: np.ndarray) -> None:
        self.view.set_frame(frame)
        self.worker.submit(frame)

    def on_camera_stopped(self) -> None:
        self.view.set_overlays([])
        self.reset()

    def _on_result(self, result: FrameResult) -> None:
        vf: VerifyFrame = result.value
        if vf.result is None:
            self.view.set_banner("No face: look at the camera", NEUTRAL)
            self.view.set_overlays([])
            return
        self.view.set_banner("")
        score = float(vf.result.score)
        if self._tau is None and getattr(vf.result, "threshold", None) is not None:
            self._tau = float(vf.result.threshold)
        self._window.add(score)
        self._update_decision()
        if vf.box is not None:
            ok = self._tau is not None and passes(score, self._tau)
            self.view.set_overlays([Overlay(vf.box, f"{score:.3f}", GOOD if ok else BAD)])
        else:
            self.view.set_overlays([])

    def _update_decision(self) -> None:
        n, size = len(self._window), self._window.size
        self.count_label.setText(f"{n} / {size} frames scored")
        if not self._window.ready() or self._tau is None:
            decision, color = WAITING, "#999999"
            fused = self._window.fused()
            self.score_label.setText(
                "Collecting frames…" if self._tau is not None else "No threshold for this scorer."
            )
        else:
            fused = self._window.fused()
            ok = passes(fused, self._tau)
            decision, color = (ACCEPT, "#2ecc71") if ok else (REJECT, "#e74c3c")
            rel = "≥" if (fused >= self._tau) else "<"
            self.score_label.setText(f"median score {fused:.4f} {rel} τ {self._tau:.4f}")
        self.decision_label.setText(decision)
        self.decision_label.setStyleSheet(f"color: {color};")
        if decision != self._decision:
            self._decision = decision
            self.decisionChanged.emit(decision, fused)

    # life cycle ---------------------------------------------------------------------------
    def activated(self) -> None:
        self.reset()

    def drain(self) -> None:
        self.worker.stop()
        self.worker.start()

    def shutdown(self) -> None:
        self.worker.stop()
