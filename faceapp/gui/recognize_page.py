"""Recognize page (1:K): every face in view labelled with a name and a score, or "Unknown".

Frames go through the fast live loop, :class:`faceapp.services.live.LiveRecognizer` (one per open
service and scorer, reused across frames): it detects on a downscaled copy every few
frames, tracks faces in between and embeds only new or changed faces, so the boxes follow
the faces on every processed frame. It runs on the page's frame worker; the page only
sends it requests (:class:`LiveSession`). Labels are decided here from each face's top
candidates against the τ slider, so moving it relabels the faces at once, without waiting
for the next frame. Clicking a face (or :meth:`select_face`) lists its top candidates.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHeaderView,
    QLabel,
    QSlider,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from faceapp.errors import FaceappError
from faceapp.gui.context import AppContext
from faceapp.gui.page import Page, heading
from faceapp.gui.scoring import accepts, candidate_pairs, score_range
from faceapp.gui.video_view import BAD, GOOD, NEUTRAL, Overlay, VideoView
from faceapp.gui.workers import FrameStats, LiveSession, ProcessedFrame, describe_error

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


@dataclass(frozen=True)
class LiveFrameStats(FrameStats):
    """:class:`FrameStats` plus what the live recognizer did on the latest frame: per-stage
    milliseconds (``detect_ms`` is 0 while detection runs in the background) and the
    number of faces embedded on it."""

    detect_ms: float = 0.0
    track_ms: float = 0.0
    embed_ms: float = 0.0
    match_ms: float = 0.0
    n_embedded: int = 0

    def text(self) -> str:
        stages = f"track {self.track_ms:3.0f} · embed {self.embed_ms:3.0f} ({self.n_embedded})"
        if self.detect_ms > 0:
            stages = f"detect {self.detect_ms:3.0f} · " + stages
        return f"{super().text()} · {stages} ms"


class RecognizePage(Page):
    """Live 1:K identification with an immediate τ slider.

    Signals: ``labelsChanged(list[FaceLabel])`` after every result or τ change.

    ``live_config``: the :class:`faceapp.services.live.LiveConfig` of the recognizer (``None``: its
    defaults); its ``top_k``, ``scorer`` and ``threshold`` are set by the page. Change it
    with :meth:`set_live_config`.
    """

    title = "Recognize"
    needs_model = True
    live = True
    labelsChanged = Signal(list)

    def __init__(self, ctx: AppContext, parent: QWidget | None = None) -> None:
        super().__init__(ctx, parent)
        self._faces: list[Any] = []
        self._labels: list[FaceLabel] = []
        self._selected = -1
        self._range = (-1.0, 1.0)
        self.live_config: Any = None
        self._live_key: tuple[Any, str] | None = None  # (service, scorer) the session is for
        self._session: LiveSession | None = None
        self._last_frame: Any = None  # the recognizer's latest FrameResult

        self.worker = self.start_frame_worker(self._on_result)

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
        self.lay_out_video_and_panel(self.view, side, 360)

        self.scorer_combo.currentTextChanged.connect(lambda _t: self._reconfigure())
        self.tau_slider.valueChanged.connect(self._on_slider)
        self.view.faceClicked.connect(self.select_face)
        ctx.thresholdChanged.connect(self._show_threshold)
        ctx.settingsChanged.connect(lambda _s: self._reconfigure())
        ctx.galleryChanged.connect(self._on_gallery_changed)
        self.on_service_changed(self.service)

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
        """The τ labels are judged against: the service's 1:K τ (shared with every page; with
        no τ chosen it follows the gallery's size), read afresh at each relabel."""
        scorer = self.scorer_combo.currentText()
        if self._live_key is None:
            return None
        return self.ctx.identification_threshold(scorer, report=False)

    def recognizer(self) -> Any:
        """The live recognizer in use (``None`` until the first frame after a (re)configuration)."""
        return self._session.recognizer if self._session is not None else None

    def last_frame_result(self) -> Any:
        """The recognizer's ``FrameResult`` of the latest processed frame (``None`` before one)."""
        return self._last_frame

    def set_threshold(self, tau: float) -> None:
        """Make ``tau`` the session's τ (for every page and the live loops) and move the
        slider to it; labels update immediately."""
        if self._live_key is not None:  # the service's τ: thresholdChanged redraws (_show_threshold)
            self.ctx.use_threshold(self._live_key[1], float(tau))
        else:
            self._show_threshold()

    def _show_threshold(self) -> None:
        """Slider, labels and table after a τ change (here or anywhere else)."""
        self._relabel()

    def _move_slider(self, tau: float) -> None:
        """The slider at ``tau`` (without a τ change of its own)."""
        lo, hi = self._range = score_range(self.scorer_combo.currentText(), tau)
        value = round((tau - lo) / (hi - lo) * SLIDER_STEPS)
        if self.tau_slider.value() != value:
            self.tau_slider.blockSignals(True)
            self.tau_slider.setValue(value)
            self.tau_slider.blockSignals(False)

    def set_scorer(self, scorer: str) -> None:
        self.scorer_combo.setCurrentIndex(self.scorer_combo.findText(scorer))

    # configuration ------------------------------------------------------------------------
    def on_service_changed(self, service: Any) -> None:
        self.refill_scorers(self.scorer_combo)
        self._reconfigure()

    def set_live_config(self, config: Any) -> None:
        """Use ``config`` (a ``services.live.LiveConfig``, ``None`` = defaults) from the next frame."""
        self.live_config = config
        self._retire_session()

    def _reconfigure(self) -> None:
        service = self.service
        scorer = self.scorer_combo.currentText()
        self._faces = []
        key = None if service is None or not scorer else (service, scorer)
        if key != self._live_key:  # one recognizer per (service, scorer)
            self._retire_session()
            self._live_key = key
        if key is None:
            self.tau_slider.setEnabled(False)
            self.view.set_banner(self.no_service_text() if service is None else "")
            self._relabel()
            return
        tau = self.ctx.identification_threshold(scorer)
        self._range = score_range(scorer, tau)
        self.tau_slider.setEnabled(True)
        if tau is None:  # uncalibrated: the slider's middle, so that candidates still show
            self.set_threshold(sum(self._range) / 2)
        else:
            self._show_threshold()
        self.view.set_banner("")

    def _on_slider(self, value: int) -> None:
        lo, hi = self._range
        if self._live_key is not None:  # thresholdChanged redraws the labels (_show_threshold)
            self.ctx.use_threshold(self._live_key[1], lo + (hi - lo) * value / SLIDER_STEPS)

    def _ensure_session(self) -> LiveSession | None:
        """The live session for the current (service, scorer), built on first use (in the
        GUI thread: the service's model libraries are loaded by then)."""
        if self._session is not None or self._live_key is None:
            return self._session
        service, scorer = self._live_key
        # imported here, not at the top: importing the GUI must not load torch
        from faceapp.services.live import LiveConfig, LiveRecognizer

        base = self.live_config if self.live_config is not None else LiveConfig()
        # τ is the service's (no argument τ): the slider moves it for every page at once
        config = dataclasses.replace(base, top_k=TOP_K, scorer=scorer, threshold=None)
        try:
            recognizer = LiveRecognizer.from_service(service, config)
        except FaceappError as err:
            self._live_key = None  # retried after the next (re)configuration
            self.view.set_banner(describe_error(err), BAD)
            return None
        self._session = LiveSession(recognizer)
        self.worker.set_process(self._session.process)
        return self._session

    def _retire_session(self) -> None:
        """Stop using the current session; it is closed once its frame in flight is done."""
        old, self._session = self._session, None
        self.worker.set_process(None)
        if old is not None:
            self.ctx.run_task(lambda _progress, _stop: old.close(), label="Closing the live recognizer")

    def _on_gallery_changed(self) -> None:
        if self._session is not None:
            self._session.request_forget()
        self._relabel()  # the gallery's size may have moved the 1:K τ

    # live loop ----------------------------------------------------------------------------
    def on_frame(self, frame: np.ndarray) -> None:
        self.view.set_frame(frame)
        if self._ensure_session() is not None:
            self.worker.submit(frame)

    def on_camera_stopped(self) -> None:
        self._new_stream()

    def activated(self) -> None:
        # frames were missed while another page was shown: tracks and decisions are stale
        self._new_stream()

    def _new_stream(self) -> None:
        self._faces = []
        self._last_frame = None
        if self._session is not None:
            self._session.request_reset()  # applied before the next frame
        self._relabel()

    def _on_stats(self, stats: FrameStats) -> None:
        live = self._last_frame
        if live is not None:
            t = live.timings
            stats = LiveFrameStats(
                **{f.name: getattr(stats, f.name) for f in dataclasses.fields(FrameStats)},
                detect_ms=float(t.detect_ms),
                track_ms=float(t.track_ms),
                embed_ms=float(t.align_ms + t.embed_ms),
                match_ms=float(t.match_ms),
                n_embedded=int(live.n_embedded),
            )
        super()._on_stats(stats)

    def _on_result(self, result: ProcessedFrame) -> None:
        live = result.value
        if live is None:  # processed by a session closed meanwhile
            return
        self.view.set_banner("")
        self._last_frame = live
        self._faces = list(live.faces)
        if self._selected >= len(self._faces):
            self._selected = -1
        if self._selected < 0 and self._faces:
            self._selected = 0
        self._relabel()

    def select_face(self, index: int) -> None:
        self._selected = index if 0 <= index < len(self._faces) else -1
        self._relabel()

    def _label(self, face: Any, tau: float | None) -> FaceLabel:
        cands = tuple(candidate_pairs(getattr(face, "candidates", ())))
        box = tuple(float(v) for v in face.box)
        if cands:
            name, score = cands[0]
        else:
            name, score = None, float(getattr(face, "score", float("nan")))
        known = name is not None and tau is not None and np.isfinite(score) and accepts(score, tau)
        return FaceLabel(
            box=box,  # type: ignore[arg-type]
            name=name if known else None,
            score=score,
            candidates=cands,
            ambiguous=bool(getattr(face, "ambiguous", False)),
        )

    def _relabel(self) -> None:
        tau = self.threshold()  # from the service's memory: follows the gallery's size
        if tau is not None:
            self._move_slider(tau)
        self._labels = [self._label(f, tau) for f in self._faces]
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
        if tau is not None:
            lo, hi = self._range
            self.tau_label.setText(f"τ = {tau:.3f}   (range {lo:.2f} … {hi:.2f})")
        self._fill_table(tau)
        self.labelsChanged.emit(self._labels)

    def _fill_table(self, tau: float | None) -> None:
        cands = self._labels[self._selected].candidates if 0 <= self._selected < len(self._labels) else ()
        self.table.setRowCount(len(cands))
        for r, (name, score) in enumerate(cands):
            ok = tau is not None and accepts(score, tau)
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
        self.worker.stop()  # no frame in flight any more: the recognizer can close here
        session, self._session = self._session, None
        if session is not None:
            session.close()
