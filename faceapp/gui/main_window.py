"""The main window: page navigation, the shared camera, status bar, progress and shutdown."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
from PySide6.QtCore import QSize, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QProgressBar,
    QPushButton,
    QStackedWidget,
    QStyle,
    QToolBar,
    QWidget,
)

from faceapp.gui.calibrate_page import CalibratePage
from faceapp.gui.camera import FrameSource, open_source
from faceapp.gui.context import AppContext, ServiceInfo
from faceapp.gui.enroll_page import EnrollPage
from faceapp.gui.page import Page
from faceapp.gui.people_page import PeoplePage
from faceapp.gui.recognize_page import RecognizePage
from faceapp.gui.settings import GuiSettings, SettingsStore
from faceapp.gui.settings_page import SettingsPage
from faceapp.gui.verify_page import VerifyPage
from faceapp.gui.workers import FrameStats, Task

log = logging.getLogger(__name__)

ServiceOpener = Callable[[GuiSettings], Any]
"""Opens a ``FaceService`` for the given settings (runs in a worker thread)."""

MESSAGE_MS = 8000


class MainWindow(QMainWindow):
    """Pages on the left, the selected page in the middle, messages at the bottom.

    ``service``: an already open service (the window does not close it unless
    ``owns_service``); ``open_service``: how to open one from the settings, used at start
    (:meth:`open_service_async`) and when the database or model setting changes.
    ``camera_on``: run the camera while a live page is shown (the toolbar button);
    ``camera_rate``: playback speed of a video-file source.

    Signals: ``serviceReady(object)`` once a service is open (``None`` if opening failed);
    ``messageShown(str, bool)`` for every status-bar message (text, is_error).
    """

    serviceReady = Signal(object)
    messageShown = Signal(str, bool)

    def __init__(
        self,
        settings: GuiSettings | None = None,
        *,
        store: SettingsStore | None = None,
        open_service: ServiceOpener | None = None,
        service: Any = None,
        owns_service: bool = False,
        camera_rate: float = 1.0,
        camera_on: bool = True,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("faceapp: face verification & recognition")
        self.store = store
        self._open_service = open_service
        self._owns_service = owns_service
        self._camera_rate = camera_rate
        self._closing = False
        self._camera_wanted = camera_on
        self.source: FrameSource | None = None
        self.messages: list[tuple[str, bool]] = []

        self.ctx = AppContext(settings or GuiSettings(), parent=self)
        self._applied_settings = self.ctx.settings
        self.ctx.message.connect(lambda t: self.show_message(t, error=False))
        self.ctx.error.connect(lambda t: self.show_message(t, error=True))
        self.ctx.taskStarted.connect(self._track_task)
        self.ctx.settingsChanged.connect(self._on_settings_changed)

        self.enroll_page = EnrollPage(self.ctx)
        self.verify_page = VerifyPage(self.ctx)
        self.recognize_page = RecognizePage(self.ctx)
        self.people_page = PeoplePage(self.ctx)
        self.calibrate_page = CalibratePage(self.ctx)
        self.settings_page = SettingsPage(self.ctx, store)
        self.pages: list[Page] = [
            self.enroll_page,
            self.verify_page,
            self.recognize_page,
            self.people_page,
            self.calibrate_page,
            self.settings_page,
        ]
        icons = [
            QStyle.StandardPixmap.SP_FileDialogNewFolder,
            QStyle.StandardPixmap.SP_DialogApplyButton,
            QStyle.StandardPixmap.SP_FileDialogContentsView,
            QStyle.StandardPixmap.SP_DirHomeIcon,
            QStyle.StandardPixmap.SP_FileDialogDetailedView,
            QStyle.StandardPixmap.SP_FileDialogInfoView,
        ]
        self.nav = QListWidget()
        self.nav.setIconSize(QSize(22, 22))
        self.nav.setFixedWidth(150)
        self.nav.setSpacing(3)
        self.stack = QStackedWidget()
        for page, icon in zip(self.pages, icons, strict=True):
            item = QListWidgetItem(self.style().standardIcon(icon), page.title)
            item.setSizeHint(QSize(140, 36))
            self.nav.addItem(item)
            self.stack.addWidget(page)
            page.statsChanged.connect(self._on_stats)
        central = QWidget()
        layout = QHBoxLayout(central)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(self.nav)
        layout.addWidget(self.stack, 1)
        self.setCentralWidget(central)

        # toolbar: camera
        self.toolbar = QToolBar("Camera")
        self.toolbar.setMovable(False)
        self.toolbar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.addToolBar(self.toolbar)
        self.camera_action = QAction(
            self.style().standardIcon(QStyle.StandardPixmap.SP_MediaPlay), "Camera on", self
        )
        self.camera_action.setCheckable(True)
        self.camera_action.setChecked(camera_on)
        self.camera_action.setShortcut(QKeySequence("Ctrl+K"))
        self.camera_action.toggled.connect(self.set_camera_wanted)
        self.toolbar.addAction(self.camera_action)
        self.source_label = QLabel()
        self.toolbar.addWidget(self.source_label)
        self.set_camera_wanted(camera_on)

        # status bar
        self.message_label = QLabel()
        self.message_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(180)
        self.progress.setVisible(False)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setVisible(False)
        self.stats_label = QLabel()
        self.service_label = QLabel("no gallery open")
        bar = self.statusBar()
        bar.addWidget(self.message_label, 1)
        bar.addPermanentWidget(self.progress)
        bar.addPermanentWidget(self.cancel_button)
        bar.addPermanentWidget(self.stats_label)
        bar.addPermanentWidget(self.service_label)
        self._message_timer = QTimer(self)
        self._message_timer.setSingleShot(True)
        self._message_timer.timeout.connect(self.message_label.clear)
        self._tracked: list[Task] = []
        self.cancel_button.clicked.connect(self._cancel_tasks)

        self.nav.currentRowChanged.connect(self._on_page_changed)
        self.ctx.serviceChanged.connect(self._on_service_changed)
        self.set_camera(self.ctx.settings.camera)
        if service is not None:
            self.ctx.set_service(service)
        self.nav.setCurrentRow(0)
        self.resize(1200, 760)
        if store is not None:
            geometry = store.value("window/geometry")
            if geometry is not None:
                self.restoreGeometry(geometry)  # type: ignore[arg-type]

    # pages ----------------------------------------------------------------------------------
    def current_page(self) -> Page:
        return self.pages[max(0, self.nav.currentRow())]

    def show_page(self, page: Page | str) -> None:
        """Switch to a page (object or title)."""
        for i, p in enumerate(self.pages):
            if p is page or p.title == page:
                self.nav.setCurrentRow(i)
                return
        raise KeyError(page)

    def _on_page_changed(self, row: int) -> None:
        if row < 0:
            return
        for i, p in enumerate(self.pages):
            if i != row and self.stack.currentIndex() == i:
                p.deactivated()
        self.stack.setCurrentIndex(row)
        page = self.pages[row]
        page.activated()
        self.stats_label.setText("")
        self._update_camera_running()

    # camera ---------------------------------------------------------------------------------
    def set_camera(self, spec: str) -> None:
        """Use ``spec`` (device number, video file or image folder) as the frame source."""
        if self.source is not None:
            self.source.stop()
            self.source.deleteLater()
        self.source = open_source(spec, loop=self.ctx.settings.loop, rate=self._camera_rate, parent=self)
        self.source.frameReady.connect(self._on_frame)
        self.source.errorOccurred.connect(self._on_camera_error)
        self.source.stopped.connect(self._on_camera_stopped)
        self.source_label.setText(f"  Source: {self.source.description}")
        self._update_camera_running()

    def set_camera_wanted(self, on: bool) -> None:
        """The camera button: on = run the camera while a live page is shown."""
        self._camera_wanted = on
        self.camera_action.blockSignals(True)
        self.camera_action.setChecked(on)
        self.camera_action.setText("Camera on" if on else "Camera off")
        self.camera_action.setIcon(
            self.style().standardIcon(
                QStyle.StandardPixmap.SP_MediaPlay if on else QStyle.StandardPixmap.SP_MediaStop
            )
        )
        self.camera_action.blockSignals(False)
        self._update_camera_running()

    def _update_camera_running(self) -> None:
        if self.source is None or self._closing:
            return
        want = self._camera_wanted and self.current_page().live
        if want and not self.source.is_active():
            self.source.start()
        elif not want and self.source.is_active():
            self.source.stop()

    def _on_frame(self, frame: np.ndarray) -> None:
        page = self.current_page()
        if page.live and not self._closing:
            page.on_frame(frame)

    def _on_camera_error(self, message: str) -> None:
        self.show_message(message, error=True)
        for p in self.pages:
            view = getattr(p, "view", None)
            if view is not None and hasattr(view, "set_placeholder"):
                view.set_placeholder(message)
        self.set_camera_wanted(False)

    def _on_camera_stopped(self) -> None:
        for p in self.pages:
            p.on_camera_stopped()
        self.stats_label.setText("")

    def _on_stats(self, stats: FrameStats) -> None:
        if self.sender() is self.current_page():
            self.stats_label.setText(stats.text())

    # service --------------------------------------------------------------------------------
    def open_service_async(self) -> Task | None:
        """Open (or reopen) the service from the current settings in the background."""
        if self._open_service is None:
            return None
        self._close_service()
        opener, settings = self._open_service, self.ctx.settings
        self.service_label.setText("opening gallery and model…")
        self.settings_page.set_status("Opening the gallery and loading the model…")

        def failed(err: BaseException) -> None:
            self.ctx.show_error(err)
            self.service_label.setText("no gallery open")
            self.settings_page.set_status(f"Could not open: {err}")
            self.serviceReady.emit(None)

        def opened(result: tuple[Any, ServiceInfo]) -> None:
            service, info = result
            if self._closing:
                service.close()
                return
            self._owns_service = True
            self.ctx.set_service(service, info)
            self.serviceReady.emit(service)

        def open_it(_p: Any, _s: Any) -> tuple[Any, ServiceInfo]:
            service = opener(settings)
            return service, ServiceInfo.fetch(service)

        return self.ctx.run_task(
            open_it,
            label="Opening gallery and model",
            on_result=opened,
            on_error=failed,
            show_progress=True,
        )

    def _close_service(self) -> None:
        service = self.ctx.service
        if service is None:
            return
        self.ctx.set_service(None)  # pages drop their processing callables
        for p in self.pages:
            p.drain()  # no frame in flight uses the old service any more
        self.ctx.runner.wait(10_000)
        if self._owns_service:
            try:
                service.close()
            except Exception as err:  # closing must not stop the app
                log.warning("closing the service failed: %s", err)

    def _on_service_changed(self, service: Any) -> None:
        if service is None:
            self.service_label.setText("no gallery open")
            return
        text = self._describe_service(service)
        self.service_label.setText(text)
        self.settings_page.set_status(f"Open: {text}")

    @staticmethod
    def _describe_service(service: Any) -> str:
        parts = []
        try:
            parts.append(f"model {service.model_id}")
        except Exception:  # a gallery-only service has no model
            parts.append("no model")
        engine = getattr(service, "engine", None)
        database = getattr(getattr(engine, "url", None), "database", None)
        if database:
            parts.append(f"db {database.rsplit('/', 1)[-1]}")
        return " · ".join(parts)

    def _on_settings_changed(self, settings: GuiSettings) -> None:
        old, self._applied_settings = self._applied_settings, settings
        if (settings.camera, settings.loop) != (old.camera, old.loop):
            self.set_camera(settings.camera)
            self.set_camera_wanted(True)
        if (settings.db, settings.model) != (old.db, old.model):
            self.open_service_async()

    # messages & tasks -------------------------------------------------------------------------
    def show_message(self, text: str, *, error: bool = False) -> None:
        """Status-bar message; errors in red. Never raises."""
        self.messages.append((text, error))
        self.message_label.setStyleSheet("color: #e74c3c;" if error else "")
        self.message_label.setText(("⚠ " if error else "") + text)
        self.message_label.setToolTip(text)
        self._message_timer.start(MESSAGE_MS * (2 if error else 1))
        self.messageShown.emit(text, error)

    def _track_task(self, task: Task, label: str) -> None:
        self._tracked.append(task)
        self.progress.setVisible(True)
        self.cancel_button.setVisible(True)
        self.progress.setRange(0, 0)  # busy until the first progress report
        self.progress.setFormat(label)
        self.progress.setToolTip(label)

        def on_progress(done: int, total: int, message: str) -> None:
            if total > 0:
                self.progress.setRange(0, total)
                self.progress.setValue(done)
            self.progress.setToolTip(f"{label}: {message}" if message else label)

        def on_finished() -> None:
            if task in self._tracked:
                self._tracked.remove(task)
            if not self._tracked:
                self.progress.setVisible(False)
                self.cancel_button.setVisible(False)

        task.progress.connect(on_progress)
        task.finished.connect(on_finished)

    def _cancel_tasks(self) -> None:
        for t in self._tracked:
            t.abort()

    # shutdown -----------------------------------------------------------------------------------
    def closeEvent(self, event: QCloseEvent) -> None:
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self) -> None:
        """Stop the camera, cancel and wait for every worker, close the service (idempotent)."""
        if self._closing:
            return
        self._closing = True
        if self.source is not None:
            self.source.stop()
        self.ctx.runner.abort_all()
        for p in self.pages:
            p.shutdown()
        if not self.ctx.runner.wait(15_000):
            log.warning("some background tasks did not finish in time")
        self.ctx.close()  # results still queued for delivery are dropped
        if self.store is not None:
            self.store.set_value("window/geometry", self.saveGeometry())
        service = self.ctx.service
        if service is not None and self._owns_service:
            try:
                service.close()
            except Exception as err:  # closing must not crash the exit
                log.warning("closing the service failed: %s", err)
