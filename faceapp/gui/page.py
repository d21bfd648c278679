"""Base class of the pages: access to the shared context, dialogs that tests can replace."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from PySide6.QtCore import Signal
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLayout,
    QLineEdit,
    QMessageBox,
    QWidget,
)

from faceapp.gui.context import AppContext
from faceapp.gui.video_view import BAD
from faceapp.gui.workers import FrameStats, FrameWorker, ProcessedFrame


class Page(QWidget):
    """One page of the main window.

    Live pages (``live = True``) receive camera frames through :meth:`on_frame` while they
    are shown, and report loop statistics with ``statsChanged(FrameStats)``; they process
    frames on a :class:`FrameWorker` made by :meth:`start_frame_worker`.
    User dialogs go through :meth:`confirm`, :meth:`ask_text`, :meth:`ask_open_files`,
    :meth:`ask_save_file` so tests can replace them.

    Pages with ``needs_model = True`` (face operations) see no service (``None``) while
    the open one is gallery-only, e.g. while the face models load at start-up
    (:attr:`AppContext.model_loading`); :meth:`no_service_text` says why.
    """

    title = "Page"
    live = False
    needs_model = False
    statsChanged = Signal(object)

    def __init__(self, ctx: AppContext, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self._stats: FrameStats | None = None
        ctx.serviceChanged.connect(self._service_changed)
        if self.needs_model:
            ctx.modelLoadingChanged.connect(self._model_loading_changed)

    @property
    def service(self) -> Any:
        """The open service; ``None`` for a page that ``needs_model`` while it is gallery-only."""
        if self.needs_model and not self.ctx.has_model:
            return None
        return self.ctx.service

    def _service_changed(self, _arg: object = None) -> None:
        self.on_service_changed(self.service)

    def _model_loading_changed(self, _loading: bool) -> None:
        if not self.ctx.has_model:  # the page sees no service either way: new banner text
            self.on_service_changed(None)

    def no_service_text(self) -> str:
        """Why :attr:`service` is ``None``, for the page's banner."""
        if self.ctx.service is None:
            return "Open a gallery first (Settings)."
        if self.ctx.model_loading:
            return "Loading the face models…"
        return "No face model loaded (see Settings)."

    # life cycle (overridden by pages) -------------------------------------------------
    def on_service_changed(self, service: Any) -> None:
        """A service was opened (or closed: ``None``)."""

    def refill_scorers(self, combo: Any) -> None:
        """Fill a scorer QComboBox with the service's scorers, selecting the current one, silently."""
        combo.blockSignals(True)
        combo.clear()
        combo.addItems(self.ctx.scorers())
        current = self.ctx.current_scorer()
        if current:
            combo.setCurrentText(current)
        combo.blockSignals(False)

    def activated(self) -> None:
        """The page became visible."""

    def deactivated(self) -> None:
        """Another page became visible."""

    def on_frame(self, frame: np.ndarray) -> None:
        """A camera frame, ``(H, W, 3) uint8`` RGB (live pages only)."""

    def on_camera_stopped(self) -> None:
        """The camera stopped (or failed): clear live state."""

    def drain(self) -> None:
        """Wait until no service call of this page is in flight (before the service closes)."""

    def shutdown(self) -> None:
        """The window closes: stop threads, wait for them."""

    def last_stats(self) -> FrameStats | None:
        """The live loop's latest statistics (``None`` before the first processed frame)."""
        return self._stats

    def lay_out_video_and_panel(self, video: QWidget, side: QLayout, max_width: int) -> None:
        """The live pages' layout: the video, stretching, with the ``side`` controls to its
        right in a panel at most ``max_width`` pixels wide."""
        panel = QWidget()
        panel.setLayout(side)
        panel.setMaximumWidth(max_width)
        layout = QHBoxLayout(self)
        layout.addWidget(video, 1)
        layout.addWidget(panel)

    # live frames --------------------------------------------------------------------------
    def start_frame_worker(self, on_result: Callable[[ProcessedFrame], None]) -> FrameWorker:
        """A started :class:`FrameWorker` owned by this page: its results go to
        ``on_result``, its errors to :meth:`_on_worker_error`, its statistics to
        :meth:`_on_stats`. Install the processing callable with ``set_process``."""
        worker = FrameWorker(parent=self)
        worker.resultReady.connect(on_result)
        worker.errorOccurred.connect(self._on_worker_error)
        worker.statsChanged.connect(self._on_stats)
        worker.start()
        return worker

    def _on_stats(self, stats: FrameStats) -> None:
        self._stats = stats
        self.statsChanged.emit(stats)

    def _on_worker_error(self, message: str) -> None:
        """A frame could not be processed: the message goes on the page's video view."""
        view = getattr(self, "view", None)
        if view is not None:
            view.set_banner(message, BAD)

    # dialogs ----------------------------------------------------------------------------
    def confirm(self, title: str, text: str) -> bool:
        answer = QMessageBox.question(
            self,
            title,
            text,
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        return answer == QMessageBox.StandardButton.Yes

    def ask_text(self, title: str, label: str, default: str = "") -> str | None:
        text, ok = QInputDialog.getText(self, title, label, text=default)
        return text if ok else None

    def ask_passphrase(self, title: str, label: str, *, confirm: bool = False) -> str | None:
        """A passphrase typed in a password field (asked twice when ``confirm``); ``None``
        when cancelled or the two differ."""
        first, ok = QInputDialog.getText(self, title, label, QLineEdit.EchoMode.Password)
        if not ok or not first:
            return None
        if confirm:
            again, ok = QInputDialog.getText(self, title, "Repeat it:", QLineEdit.EchoMode.Password)
            if not ok or again != first:
                self.ctx.show_error("The two passphrases differ.")
                return None
        return first

    def ask_open_files(self, title: str, filter_: str) -> list[str]:
        files, _ = QFileDialog.getOpenFileNames(self, title, "", filter_)
        return list(files)

    def ask_open_file(self, title: str, filter_: str) -> str | None:
        path, _ = QFileDialog.getOpenFileName(self, title, "", filter_)
        return path or None

    def ask_save_file(self, title: str, filter_: str, default: str = "") -> str | None:
        path, _ = QFileDialog.getSaveFileName(self, title, default, filter_)
        return path or None


def heading(text: str) -> QLabel:
    label = QLabel(text)
    font = QFont(label.font())
    font.setPointSizeF(font.pointSizeF() * 1.4)
    font.setBold(True)
    label.setFont(font)
    return label


IMAGE_FILTER = "Images (*.jpg *.jpeg *.png *.bmp *.pgm *.ppm *.gif *.tif *.tiff *.webp);;All files (*)"
