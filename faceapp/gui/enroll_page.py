"""Enroll page: capture good samples of one person from the camera or from files, then save.

Frames go through the live loop every live page runs (:class:`~faceapp.gui.workers.LiveSession`),
without 1:K matching; :class:`~faceapp.services.live_pages.CaptureGuide` turns each result into
guidance and, while capturing, samples (fresh, good, still measurements of the one face in
view). Duplicate names and faces that already match someone else are checked with
``service.check_enrollment`` whenever the name or the samples change, and flagged before
saving; whether the gallery needs the person's consent is asked on a pool thread when saving.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PySide6.QtCore import QSize, QTimer, Signal
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QIcon, QKeySequence, QPixmap, QShortcut
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from faceapp.errors import FaceappError
from faceapp.gui.camera import rgb_to_qimage
from faceapp.gui.context import AppContext
from faceapp.gui.page import IMAGE_FILTER, Page, heading
from faceapp.gui.video_view import BAD, GOOD, INFO, NEUTRAL, Overlay, VideoView
from faceapp.gui.workers import LiveSession, ProcessedFrame, TrackedLoop, describe_error
from faceapp.services.live_pages import CaptureGuide, Sample

if TYPE_CHECKING:
    from faceapp.services import Consent

log = logging.getLogger(__name__)

THUMB = 72


TONES = {"bad": BAD, "neutral": NEUTRAL, "good": GOOD, "info": INFO}
"""The overlay and banner colour of each tone of :class:`~faceapp.services.live_pages.Guidance`."""


class EnrollPage(Page):
    """Name + live capture (or files) -> thumbnails -> checks -> save.

    Signals: ``samplesChanged(int)``; ``warningsChanged(list)`` after each check;
    ``saved(object)`` with the service's ``EnrollReport``; ``saveRefused(str)`` when a save
    that :meth:`save` started did not happen (consent declined, the consent lookup
    failed); ``filesAdded(int, list)`` after images were read (faces kept, problems).

    ``live_config``: the ``services.live.LiveConfig`` of the live loop (``None``: its
    defaults); change it with :meth:`set_live_config`.
    """

    title = "Enroll"
    needs_model = True
    live = True
    samplesChanged = Signal(int)
    warningsChanged = Signal(list)
    saved = Signal(object)
    saveRefused = Signal(str)
    filesAdded = Signal(int, list)

    def __init__(self, ctx: AppContext, parent: QWidget | None = None) -> None:
        super().__init__(ctx, parent)
        self.setAcceptDrops(True)
        self.guide = CaptureGuide()  # advice and sample capture from the live frames
        self._samples: list[Sample] = []
        self._warnings: list[str] = []
        self._check_pending = False
        self._check_running = False

        self.worker = self.start_frame_worker(self._on_result)
        self.loop = TrackedLoop(
            self.worker,
            lambda close: ctx.run_task(lambda _p, _s: close(), label="Closing the live loop"),
            lambda session: self.worker.set_process(session.process),
        )

        self.view = VideoView()
        self.name_edit = QLineEdit()
        self.name_edit.setPlaceholderText("Full name of the person")
        self.name_edit.setClearButtonEnabled(True)
        self.target_spin = QSpinBox()
        self.target_spin.setRange(1, 50)
        self.target_spin.setValue(ctx.settings.samples)
        self.capture_button = QPushButton("Start capture")
        self.capture_button.setCheckable(True)
        self.add_files_button = QPushButton("Add images…")
        self.remove_button = QPushButton("Remove selected")
        self.clear_button = QPushButton("Clear")
        self.save_button = QPushButton("Save to gallery")
        self.save_button.setDefault(True)
        self.progress = QProgressBar()
        self.progress.setFormat("%v / %m samples")
        self.thumbs = QListWidget()
        self.thumbs.setViewMode(QListWidget.ViewMode.IconMode)
        self.thumbs.setIconSize(QSize(THUMB, THUMB))
        self.thumbs.setResizeMode(QListWidget.ResizeMode.Adjust)
        self.thumbs.setMovement(QListWidget.Movement.Static)
        self.thumbs.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.thumbs.setMinimumHeight(2 * THUMB + 30)
        self.warning_label = QLabel()
        self.warning_label.setWordWrap(True)
        self.warning_label.setStyleSheet("color: #e67e22;")
        self.hint = QLabel("Drop image files here, or capture from the camera.")
        self.hint.setWordWrap(True)
        self.hint.setStyleSheet("color: gray;")

        form = QFormLayout()
        form.addRow("Name", self.name_edit)
        form.addRow("Samples", self.target_spin)
        buttons = QHBoxLayout()
        buttons.addWidget(self.capture_button)
        buttons.addWidget(self.add_files_button)
        row2 = QHBoxLayout()
        row2.addWidget(self.remove_button)
        row2.addWidget(self.clear_button)
        side = QVBoxLayout()
        side.addWidget(heading("Enroll a person"))
        side.addLayout(form)
        side.addLayout(buttons)
        side.addWidget(self.progress)
        side.addWidget(self.thumbs, 1)
        side.addLayout(row2)
        side.addWidget(self.warning_label)
        side.addWidget(self.hint)
        side.addWidget(self.save_button)
        self.lay_out_video_and_panel(self.view, side, 380)

        self._check_timer = QTimer(self)
        self._check_timer.setSingleShot(True)
        self._check_timer.setInterval(300)
        self._check_timer.timeout.connect(self.run_checks)
        self.name_edit.textChanged.connect(lambda _t: self._schedule_check())
        self.target_spin.valueChanged.connect(self._update_progress)
        self.capture_button.toggled.connect(self.set_capturing)
        self.add_files_button.clicked.connect(self._pick_files)
        self.remove_button.clicked.connect(self.remove_selected)
        self.clear_button.clicked.connect(self.clear_samples)
        self.save_button.clicked.connect(lambda: self.save())
        QShortcut(QKeySequence.StandardKey.Delete, self.thumbs, activated=self.remove_selected)
        ctx.settingsChanged.connect(lambda s: self.target_spin.setValue(s.samples))
        self._update_progress()
        self.on_service_changed(self.service)

    # state ------------------------------------------------------------------------------
    def samples(self) -> list[Sample]:
        return list(self._samples)

    def warnings(self) -> list[str]:
        return list(self._warnings)

    def is_capturing(self) -> bool:
        return self.guide.capturing

    def is_checking(self) -> bool:
        """A look-alike / duplicate-name check is scheduled or running."""
        return self._check_timer.isActive() or self._check_running

    def guidance(self) -> str:
        return self.view.banner()

    @property
    def live_config(self) -> Any:
        return self.loop.config

    def set_live_config(self, config: Any) -> None:
        """Use ``config`` (a ``services.live.LiveConfig``, ``None`` = defaults) from the next frame."""
        self.loop.set_config(config)

    def live_session(self) -> LiveSession | None:
        """The live loop in use (``None`` until the first frame after a (re)configuration)."""
        return self.loop.current

    def on_service_changed(self, service: Any) -> None:
        self.loop.retire()
        enabled = service is not None
        for w in (self.capture_button, self.add_files_button, self.save_button):
            w.setEnabled(enabled)
        if not enabled:
            self.set_capturing(False)
            self.view.set_overlays([])
        self._update_buttons()

    # live loop ---------------------------------------------------------------------------
    def set_capturing(self, on: bool) -> None:
        """Start / stop automatic capture of good samples from the live frames."""
        on = bool(on) and self.service is not None
        if on and len(self._samples) >= self.target_spin.value():
            self.ctx.show_message("Enough samples already: remove some or raise the count.")
            on = False
        self.guide.capturing = on
        self.guide.new_stream()
        if on:
            self.loop.request_measure()  # the first sample is measured on its own frame
        self.capture_button.blockSignals(True)
        self.capture_button.setChecked(on)
        self.capture_button.setText("Stop capture" if on else "Start capture")
        self.capture_button.blockSignals(False)

    def on_frame(self, frame: np.ndarray) -> None:
        self.view.set_frame(frame)
        try:
            session = self.loop.session(self.service)
        except FaceappError as err:
            self.view.set_banner(describe_error(err), BAD)
            return
        if session is not None:
            self.worker.submit(frame)

    def on_camera_stopped(self) -> None:
        self._new_stream()
        self.view.set_overlays([])
        self.view.set_banner("")

    def activated(self) -> None:
        # frames were missed while another page was shown: tracks are stale
        self._new_stream()

    def _new_stream(self) -> None:
        self.guide.new_stream()
        self.loop.request_reset()

    def _on_result(self, result: ProcessedFrame) -> None:
        live = result.value
        if live is None:  # processed by a session closed meanwhile
            return
        g = self.guide.step(live, result.seq, len(self._samples), self.target_spin.value())
        if g.sample is not None:
            self._add_sample(g.sample)
        if g.done:
            self.set_capturing(False)
        if self.guide.wants_measure(g):
            self.loop.request_measure()
        color = TONES[g.tone]
        self.view.set_overlays([Overlay(box, "", color) for box in g.boxes])  # type: ignore[arg-type]
        self.view.set_banner(g.text, color)

    # samples -----------------------------------------------------------------------------
    def _add_sample(self, sample: Sample) -> None:
        self._samples.append(sample)
        crop = np.ascontiguousarray(sample.face.aligned.crop)
        item = QListWidgetItem(QIcon(QPixmap.fromImage(rgb_to_qimage(crop))), "")
        item.setToolTip(sample.source)
        self.thumbs.addItem(item)
        self._samples_changed()

    def add_faces(self, faces: list[Any], source: str = "") -> None:
        """Add already analysed faces (``FaceEmbedding``) as samples."""
        for face in faces:
            self._add_sample(Sample(face, source))

    def remove_selected(self) -> None:
        rows = sorted({self.thumbs.row(i) for i in self.thumbs.selectedItems()}, reverse=True)
        for r in rows:
            self.thumbs.takeItem(r)
            del self._samples[r]
        if rows:
            self._samples_changed()

    def clear_samples(self) -> None:
        self._samples.clear()
        self.thumbs.clear()
        self._samples_changed()

    def _samples_changed(self) -> None:
        self._update_progress()
        self._update_buttons()
        self.samplesChanged.emit(len(self._samples))
        self._schedule_check()

    def _update_progress(self) -> None:
        self.progress.setMaximum(self.target_spin.value())
        self.progress.setValue(min(len(self._samples), self.target_spin.value()))

    def _update_buttons(self) -> None:
        has = bool(self._samples)
        self.remove_button.setEnabled(has)
        self.clear_button.setEnabled(has)
        self.save_button.setEnabled(has and self.service is not None)

    # files ---------------------------------------------------------------------------------
    def _pick_files(self) -> None:
        files = self.ask_open_files("Add images of this person", IMAGE_FILTER)
        if files:
            self.add_files(files)

    def add_files(self, paths: list[str | Path]) -> None:
        """Analyse image files in the background; each file with one good face adds a sample."""
        service = self.service
        if service is None:
            self.ctx.show_error("No model/gallery open: see Settings.")
            return
        files = [str(p) for p in paths]

        def job(progress: Any, should_stop: Any) -> tuple[list[tuple[Any, str]], list[str]]:
            kept: list[tuple[Any, str]] = []
            problems: list[str] = []
            for i, path in enumerate(files):
                if should_stop():
                    break
                progress(i, len(files), Path(path).name)
                try:
                    faces = list(service.analyze(path))
                except Exception as err:  # reported per file, the others still load
                    problems.append(f"{Path(path).name}: {err}")
                    continue
                if not faces:
                    problems.append(f"{Path(path).name}: no face found")
                    continue
                face = max(faces, key=lambda f: f.detection.area)
                if len(faces) > 1:
                    problems.append(f"{Path(path).name}: {len(faces)} faces, the largest was used")
                if not face.quality.ok:
                    problems.append(f"{Path(path).name}: {'; '.join(face.quality.reasons)}")
                    continue
                kept.append((face, path))
            progress(len(files), len(files), "")
            return kept, problems

        def done(result: tuple[list[tuple[Any, str]], list[str]]) -> None:
            kept, problems = result
            for face, path in kept:
                self._add_sample(Sample(face, path))
            msg = f"Added {len(kept)} of {len(files)} image(s)."
            if problems:
                self.ctx.show_error(msg + " Skipped: " + " | ".join(problems))
            else:
                self.ctx.show_message(msg)
            self.filesAdded.emit(len(kept), problems)

        self.ctx.run_task(job, label="Reading images", on_result=done, show_progress=True)

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if event.mimeData().hasUrls() and any(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event: QDropEvent) -> None:
        paths: list[str | Path] = []
        for url in event.mimeData().urls():
            if not url.isLocalFile():
                continue
            p = Path(url.toLocalFile())
            if p.is_dir():
                paths.extend(sorted(q for q in p.iterdir() if q.is_file()))
            else:
                paths.append(p)
        if paths:
            event.acceptProposedAction()
            self.add_files(paths)

    # checks + save -------------------------------------------------------------------------
    def _schedule_check(self) -> None:
        self._check_timer.start()

    def run_checks(self) -> None:
        """Ask the service about duplicate names / faces matching someone else (background)."""
        service = self.service
        name = self.name_edit.text().strip()
        if service is None or (not name and not self._samples):
            self._set_warnings([])
            return
        if self._check_running:
            self._check_pending = True
            return
        self._check_running = True
        faces = [s.face for s in self._samples]

        def finished() -> None:
            self._check_running = False
            if self._check_pending:
                self._check_pending = False
                self.run_checks()

        self.ctx.run_task(
            lambda _p, _s: list(service.check_enrollment(name, faces)),
            label="Checking enrolment",
            on_result=self._set_warnings,
            on_error=lambda err: self._set_warnings([f"could not check the faces: {describe_error(err)}"]),
            on_finished=finished,
        )

    def _set_warnings(self, warnings: list[str]) -> None:
        self._warnings = list(warnings)
        self.warning_label.setText("\n".join(f"⚠ {w}" for w in self._warnings))
        self.warningsChanged.emit(self._warnings)

    def save(self, *, ask: bool = True) -> bool:
        """Enroll the samples under the name (in the background). Returns false when
        nothing was started (no name, no samples, or the user declined a warning). A started
        save first asks the gallery (on a pool thread) whether the person's consent is
        needed; declining it ends with ``saveRefused`` instead of ``saved``."""
        service = self.service
        name = self.name_edit.text().strip()
        if service is None:
            self.ctx.show_error("No model/gallery open: see Settings.")
            return False
        if not name:
            self.ctx.show_error("Enter the person's name first.")
            self.name_edit.setFocus()
            return False
        if not self._samples:
            self.ctx.show_error("No samples yet: capture from the camera or add images.")
            return False
        if ask and self.is_checking():
            # the look-alike check of the current samples has not answered yet
            self._check_timer.stop()
            self.run_checks()
            self.ctx.show_message("Checking the samples against the gallery… press Save again.")
            return False
        if (
            ask
            and self._warnings
            and not self.confirm("Save anyway?", "\n".join(self._warnings) + "\n\nSave anyway?")
        ):
            return False
        faces = [s.face for s in self._samples]
        sources = [s.source for s in self._samples]
        self.save_button.setEnabled(False)
        self.set_capturing(False)

        def refuse(message: str) -> None:
            self.ctx.show_error(message)
            self._update_buttons()
            self.saveRefused.emit(message)

        def done(report: Any) -> None:
            self.ctx.show_message(f"Saved {name}: {len(faces)} sample(s).")
            self.clear_samples()
            self.name_edit.clear()
            self._set_warnings([])
            self.ctx.galleryChanged.emit()
            self.saved.emit(report)

        def enroll(required: bool) -> None:
            consent = None
            if required:  # an organisation's gallery, a new person
                consent = self.ask_consent(name)
                if consent is None:
                    refuse(f"{name} was not saved: this gallery records consent "
                           "before enrolling a new person.")
                    return
            self.ctx.run_task(
                lambda _p, _s: service.enroll_faces(name, faces, sources=sources, consent=consent),
                label=f"Saving {name}",
                on_result=done,
                on_finished=self._update_buttons,
            )

        # the consent lookup reads the gallery: on a pool thread, never in the GUI thread
        self.ctx.run_task(
            lambda _p, _s: bool(service.consent_required(name)),
            label=f"Checking consent for {name}",
            on_result=enroll,
            on_error=lambda err: refuse(f"{name} was not saved: {describe_error(err)}"),
        )
        return True

    def ask_consent(self, name: str) -> Consent | None:
        """Ask once for the consent of a new person: its purpose and basis (``None``:
        cancelled)."""
        purpose = self.ask_text(f"Consent of {name}",
                                f"{name} consents to be enrolled for what purpose?")
        if not purpose or not purpose.strip():
            return None
        basis = self.ask_text(f"Consent of {name}",
                              "On what basis (how was consent given, e.g. signed form no.)?")
        if not basis or not basis.strip():
            return None
        from faceapp.services import Consent

        return Consent(purpose.strip(), basis.strip())

    # life cycle ----------------------------------------------------------------------------
    def deactivated(self) -> None:
        self.set_capturing(False)

    def drain(self) -> None:
        self.worker.stop()
        self.worker.start()

    def shutdown(self) -> None:
        self.set_capturing(False)
        self.worker.stop()  # no frame in flight any more: the live loop can close here
        self.loop.shutdown()
