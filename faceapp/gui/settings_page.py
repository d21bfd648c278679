"""Settings page: database, model, camera, scorer, τ and capture options, saved with QSettings."""

from __future__ import annotations

import dataclasses
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from faceapp.gui.camera import available_cameras
from faceapp.gui.context import AppContext
from faceapp.gui.page import Page, heading
from faceapp.gui.settings import GuiSettings, SettingsStore

VIDEO_FILTER = "Videos (*.mp4 *.mkv *.avi *.mov *.webm *.m4v);;All files (*)"


def _with_browse(edit: QLineEdit, button: QPushButton) -> QWidget:
    row = QHBoxLayout()
    row.setContentsMargins(0, 0, 0, 0)
    row.addWidget(edit, 1)
    row.addWidget(button)
    w = QWidget()
    w.setLayout(row)
    return w


class SettingsPage(Page):
    """Edit :class:`GuiSettings`; *Apply* saves them and tells the window (which reopens the
    service when the database or the model changed, and switches the camera source).

    Signal ``applied(GuiSettings)``.
    """

    title = "Settings"
    applied = Signal(object)

    def __init__(
        self, ctx: AppContext, store: SettingsStore | None = None, parent: QWidget | None = None
    ) -> None:
        super().__init__(ctx, parent)
        self.store = store
        self.db_edit = QLineEdit()
        self.db_edit.setPlaceholderText("default: db/faceapp.sqlite (or a SQLAlchemy URL)")
        self.db_browse = QPushButton("Browse…")
        self.model_edit = QLineEdit()
        self.model_edit.setPlaceholderText("default: models/default.pt")
        self.model_browse = QPushButton("Browse…")
        self.camera_combo = QComboBox()
        self.camera_combo.setEditable(True)
        self.camera_combo.setToolTip("A camera number, or a video file / image folder played as a camera.")
        self.video_browse = QPushButton("Video…")
        self.folder_browse = QPushButton("Folder…")
        self.loop_check = QCheckBox("Loop video / folder sources")
        self.liveness_check = QCheckBox("Check &liveness when verifying (challenge + passive checks)")
        self.scorer_combo = QComboBox()
        self.tau_check = QCheckBox("Set τ by hand")
        self.tau_spin = QDoubleSpinBox()
        self.tau_spin.setRange(-1.0, 1.0)
        self.tau_spin.setDecimals(4)
        self.tau_spin.setSingleStep(0.01)
        self.calibrated_label = QLabel()
        self.samples_spin = QSpinBox()
        self.samples_spin.setRange(1, 50)
        self.window_spin = QSpinBox()
        self.window_spin.setRange(1, 60)
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.apply_button = QPushButton("Apply")
        self.apply_button.setDefault(True)
        self.revert_button = QPushButton("Revert")

        cam_row = QHBoxLayout()
        cam_row.setContentsMargins(0, 0, 0, 0)
        cam_row.addWidget(self.camera_combo, 1)
        cam_row.addWidget(self.video_browse)
        cam_row.addWidget(self.folder_browse)
        cam = QWidget()
        cam.setLayout(cam_row)
        tau_row = QHBoxLayout()
        tau_row.setContentsMargins(0, 0, 0, 0)
        tau_row.addWidget(self.tau_check)
        tau_row.addWidget(self.tau_spin)
        tau_row.addWidget(self.calibrated_label, 1)
        tau = QWidget()
        tau.setLayout(tau_row)

        form = QFormLayout()
        form.addRow("Database", _with_browse(self.db_edit, self.db_browse))
        form.addRow("Model", _with_browse(self.model_edit, self.model_browse))
        form.addRow("Camera", cam)
        form.addRow("", self.loop_check)
        form.addRow("Scorer", self.scorer_combo)
        form.addRow("Threshold τ", tau)
        form.addRow("Samples per enrolment", self.samples_spin)
        form.addRow("Verification window", self.window_spin)
        form.addRow("", self.liveness_check)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.revert_button)
        buttons.addWidget(self.apply_button)
        layout = QVBoxLayout(self)
        layout.addWidget(heading("Settings"))
        layout.addLayout(form)
        layout.addWidget(self.status_label)
        layout.addLayout(buttons)
        layout.addStretch(1)

        self.db_browse.clicked.connect(self._browse_db)
        self.model_browse.clicked.connect(self._browse_model)
        self.video_browse.clicked.connect(self._browse_video)
        self.folder_browse.clicked.connect(self._browse_folder)
        self.tau_check.toggled.connect(self.tau_spin.setEnabled)
        self.scorer_combo.currentTextChanged.connect(lambda _t: self._show_calibrated())
        self.apply_button.clicked.connect(lambda: self.apply())
        self.revert_button.clicked.connect(lambda: self.load(self.ctx.settings))
        ctx.thresholdChanged.connect(self._show_calibrated)
        self.load(ctx.settings)
        self.on_service_changed(ctx.service)

    def on_service_changed(self, service: Any) -> None:
        current = self.scorer_combo.currentText() or self.ctx.settings.scorer
        self.scorer_combo.blockSignals(True)
        self.scorer_combo.clear()
        self.scorer_combo.addItems(self.ctx.scorers())
        if current and self.scorer_combo.findText(current) >= 0:
            self.scorer_combo.setCurrentText(current)
        self.scorer_combo.blockSignals(False)
        self._show_calibrated()

    def activated(self) -> None:
        self._fill_cameras(self.camera_combo.currentText())

    def _fill_cameras(self, current: str) -> None:
        self.camera_combo.blockSignals(True)
        self.camera_combo.clear()
        for i, name in enumerate(available_cameras()):
            self.camera_combo.addItem(f"{i}: {name}", str(i))
        if self.camera_combo.count() == 0:
            self.camera_combo.setPlaceholderText("no camera found: pick a video or a folder")
        idx = self.camera_combo.findData(current)
        if idx >= 0:
            self.camera_combo.setCurrentIndex(idx)
        else:
            self.camera_combo.setEditText(current)
        self.camera_combo.blockSignals(False)

    def _show_calibrated(self) -> None:
        scorer = self.scorer_combo.currentText()
        if self.service is None or not scorer:
            self.calibrated_label.setText("")
            return
        tau = self.ctx.info.thresholds.get(scorer)
        if tau is None:
            problem = self.ctx.info.problems.get(scorer, "")
            self.calibrated_label.setText("not calibrated")
            self.calibrated_label.setToolTip(problem)
            return
        self.calibrated_label.setText(f"in effect: {tau:.4f}")
        self.calibrated_label.setToolTip("stored in the gallery, or from the model's calibration")
        if not self.tau_check.isChecked():
            self.tau_spin.setValue(tau)

    # values --------------------------------------------------------------------------------
    def load(self, settings: GuiSettings) -> None:
        """Show ``settings`` in the form."""
        self.db_edit.setText(settings.db)
        self.model_edit.setText(settings.model)
        self._fill_cameras(settings.camera)
        self.loop_check.setChecked(settings.loop)
        self.liveness_check.setChecked(settings.liveness)
        if settings.scorer and self.scorer_combo.findText(settings.scorer) >= 0:
            self.scorer_combo.setCurrentText(settings.scorer)
        self.tau_check.setChecked(settings.tau is not None)
        self.tau_spin.setEnabled(settings.tau is not None)
        if settings.tau is not None:
            self.tau_spin.setValue(settings.tau)
        self.samples_spin.setValue(settings.samples)
        self.window_spin.setValue(settings.window)
        self._show_calibrated()

    def camera_value(self) -> str:
        text = self.camera_combo.currentText().strip()
        data = self.camera_combo.currentData()
        if data is not None and text == self.camera_combo.itemText(self.camera_combo.currentIndex()):
            return str(data)
        return text or "0"

    def current(self) -> GuiSettings:
        """The settings as edited (not yet applied)."""
        return dataclasses.replace(
            self.ctx.settings,
            db=self.db_edit.text().strip(),
            model=self.model_edit.text().strip(),
            camera=self.camera_value(),
            loop=self.loop_check.isChecked(),
            scorer=self.scorer_combo.currentText(),
            tau=self.tau_spin.value() if self.tau_check.isChecked() else None,
            samples=self.samples_spin.value(),
            window=self.window_spin.value(),
            liveness=self.liveness_check.isChecked(),
        )

    def apply(self) -> GuiSettings:
        """Save the edited settings and announce them."""
        settings = self.current()
        if self.store is not None:
            self.store.save(settings)
        self.ctx.set_settings(settings)
        self.ctx.show_message("Settings saved.")
        self.applied.emit(settings)
        return settings

    def set_status(self, text: str) -> None:
        """A line about the open service (or why none is open)."""
        self.status_label.setText(text)

    # browsing ------------------------------------------------------------------------------
    def _browse_db(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self,
            "Gallery database",
            self.db_edit.text(),
            "SQLite (*.sqlite *.db);;All files (*)",
            options=QFileDialog.Option.DontConfirmOverwrite,
        )
        if path:
            self.db_edit.setText(path)

    def _browse_model(self) -> None:
        path = self.ask_open_file("Model checkpoint", "Checkpoints (*.pt *.pth);;All files (*)")
        if path:
            self.model_edit.setText(path)

    def _browse_video(self) -> None:
        path = self.ask_open_file("Video file as camera", VIDEO_FILTER)
        if path:
            self.camera_combo.setEditText(path)

    def _browse_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Image folder as camera")
        if path:
            self.camera_combo.setEditText(path)
