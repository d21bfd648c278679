"""The main window: the pages (see :mod:`faceapp.gui.navigation`), the shared camera, status bar,
progress and shutdown."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QProgressBar,
    QPushButton,
    QStyle,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from faceapp.gui.camera import FrameSource, open_source
from faceapp.gui.context import AppContext, ServiceInfo
from faceapp.gui.navigation import Navigation, create_pages
from faceapp.gui.page import Page
from faceapp.gui.settings import GuiSettings, SettingsStore
from faceapp.gui.workers import FrameStats, Task

log = logging.getLogger(__name__)

ServiceOpener = Callable[[GuiSettings], Any]
"""Opens a ``FaceService`` for the given settings (runs in a worker thread)."""

MESSAGE_MS = 8000

MODEL_AFTER_GALLERY_MAX_S = 3.0
"""Progressive start: the face models start loading once the gallery's tasks are done (the
People list), or this long after the gallery opened, whichever comes first."""


class MainWindow(QMainWindow):
    """Pages on the left, the selected page in the middle, messages at the bottom.

    ``service``: an already open service (the window does not close it unless
    ``owns_service``); ``open_service``: how to open one from the settings, used at start
    (:meth:`open_service_async`) and when the database or model setting changes.
    ``open_gallery``: how to open a gallery-only service (no face model: fast); with it,
    :meth:`open_service_async` starts progressively: the gallery first (People works), then
    the full service loads in the background and replaces it, while the model pages say
    the face models are loading.
    ``camera_on``: run the camera while a live page is shown (the toolbar button; it waits
    while the face models load);
    ``camera_rate``: playback speed of a video-file source.

    Signals: ``serviceReady(object)`` once a service is open (``None`` if opening failed);
    ``galleryReady(object)`` once the gallery-only service of a progressive start is
    installed (``None`` if the gallery could not be opened); ``messageShown(str, bool)``
    for every status-bar message (text, is_error).
    """

    serviceReady = Signal(object)
    galleryReady = Signal(object)
    messageShown = Signal(str, bool)

    def __init__(
        self,
        settings: GuiSettings | None = None,
        *,
        store: SettingsStore | None = None,
        open_service: ServiceOpener | None = None,
        open_gallery: ServiceOpener | None = None,
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
        self._open_gallery = open_gallery
        self._open_generation = 0
        self._retired: list[Any] = []  # replaced services, closed once no task can use them
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

        pages = create_pages(self.ctx, store)
        (self.enroll_page, self.verify_page, self.recognize_page, self.people_page,
         self.calibrate_page, self.privacy_page, self.settings_page) = pages
        self.navigation = Navigation(pages, self.style(), parent=self)
        self.pages, self.nav, self.stack = self.navigation.pages, self.navigation.nav, self.navigation.stack
        for page in self.pages:
            page.statsChanged.connect(self._on_stats)
        central = QWidget()
        layout = QHBoxLayout(central)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(self.nav)
        self.loading_banner = QLabel(
            "Loading the face models… People and Privacy work already; Enroll, Verify, Recognize and "
            "Calibrate start as soon as the models are loaded."
        )
        self.loading_banner.setWordWrap(True)
        self.loading_banner.setStyleSheet(
            "background: #fff3cd; color: #664d03; padding: 6px; border-radius: 4px;"
        )
        self.loading_banner.setVisible(False)
        right = QVBoxLayout()
        right.setContentsMargins(0, 0, 0, 0)
        right.addWidget(self.loading_banner)
        right.addWidget(self.stack, 1)
        layout.addLayout(right, 1)
        self.setCentralWidget(central)
        self.ctx.modelLoadingChanged.connect(self.loading_banner.setVisible)
        self.ctx.modelLoadingChanged.connect(lambda _loading: self._update_camera_running())

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

        self.navigation.pageChanged.connect(self._on_page_changed)
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
        return self.navigation.current_page()

    def show_page(self, page: Page | str) -> None:
        """Switch to a page (object or title)."""
        self.navigation.show_page(page)

    def _on_page_changed(self, _page: Page) -> None:
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
        # not while the face models load: the live pages cannot use frames yet, and
        # decoding video would slow the loading down
        want = self._camera_wanted and self.current_page().live and not self.ctx.model_loading
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
        """Open (or reopen) the service from the current settings in the background.

        With ``open_gallery``: the gallery-only service first, then the full one (see the
        class); returns the first task."""
        if self._open_service is None:
            return None
        self._close_service()
        self._open_generation += 1
        if self._open_gallery is None:
            return self._open_full(self._open_generation, upgrade=False)
        generation, opener, settings = self._open_generation, self._open_gallery, self.ctx.settings
        self.service_label.setText("opening gallery…")
        self.settings_page.set_status("Opening the gallery…")

        def failed(err: BaseException) -> None:
            if generation != self._open_generation:
                return
            self.ctx.show_error(err)
            self.service_label.setText("no gallery open")
            self.settings_page.set_status(f"Could not open: {err}")
            self.galleryReady.emit(None)
            self.serviceReady.emit(None)

        def opened(result: tuple[Any, ServiceInfo]) -> None:
            service, info = result
            if self._closing or generation != self._open_generation:
                service.close()
                return
            self._owns_service = True
            self.ctx.set_model_loading(True)
            self.ctx.set_service(service, info)
            self.galleryReady.emit(service)
            deadline = time.monotonic() + MODEL_AFTER_GALLERY_MAX_S

            def load_model_when_idle() -> None:
                # after the gallery's own start-up tasks (the People list): the imports hold
                # the GIL much of the time and would slow them down several times over
                if self._closing or generation != self._open_generation:
                    return
                if self.ctx.runner.is_busy() and time.monotonic() < deadline:
                    QTimer.singleShot(20, load_model_when_idle)
                    return
                self._open_full(generation, upgrade=True)

            QTimer.singleShot(0, load_model_when_idle)

        def open_it(_p: Any, _s: Any) -> tuple[Any, ServiceInfo]:
            service = opener(settings)
            return service, ServiceInfo.fetch(service)

        return self.ctx.run_task(open_it, label="Opening the gallery", on_result=opened, on_error=failed)

    def _open_full(self, generation: int, *, upgrade: bool) -> Task:
        """Open the full service (model + index) in the background; with ``upgrade`` it
        replaces the gallery-only service in use (kept open until the next close)."""
        opener, settings = self._open_service, self.ctx.settings
        assert opener is not None
        if not upgrade:
            self.service_label.setText("opening gallery and model…")
            self.settings_page.set_status("Opening the gallery and loading the model…")

        def failed(err: BaseException) -> None:
            if generation != self._open_generation:
                return
            self.ctx.set_model_loading(False)
            self.ctx.show_error(err)
            if upgrade:
                self._on_service_changed(self.ctx.service)
                self.settings_page.set_status(f"Gallery open, but the model could not be loaded: {err}")
            else:
                self.service_label.setText("no gallery open")
                self.settings_page.set_status(f"Could not open: {err}")
            self.serviceReady.emit(None)

        def opened(result: tuple[Any, ServiceInfo] | None) -> None:
            if result is None:
                return
            service, info = result
            if self._closing or generation != self._open_generation:
                service.close()
                return
            old = self.ctx.service
            if old is not None and old is not service and self._owns_service:
                self._retired.append(old)
            self._owns_service = True
            self.ctx.set_service(service, info)
            self.ctx.set_model_loading(False)
            self.serviceReady.emit(service)

        def finished() -> None:  # also after a cancel: no longer loading
            if generation == self._open_generation:
                self.ctx.set_model_loading(False)

        def open_it(_p: Any, should_stop: Any) -> tuple[Any, ServiceInfo] | None:
            service = opener(settings)
            if should_stop():
                service.close()
                return None
            return service, ServiceInfo.fetch(service)

        return self.ctx.run_task(
            open_it,
            label="Loading the face models" if upgrade else "Opening gallery and model",
            on_result=opened,
            on_error=failed,
            on_finished=finished,
            show_progress=True,
        )

    def _close_service(self) -> None:
        service = self.ctx.service
        self.ctx.set_model_loading(False)
        if service is None and not self._retired:
            return
        if service is not None:
            self.ctx.set_service(None)  # pages drop their processing callables
        for p in self.pages:
            p.drain()  # no frame in flight uses the old service any more
        self.ctx.runner.wait(10_000)
        self._close_retired()
        if service is not None and self._owns_service:
            try:
                service.close()
            except Exception as err:  # closing must not stop the app
                log.warning("closing the service failed: %s", err)

    def _close_retired(self) -> None:
        """Close the services replaced by a later one (call when no task is running)."""
        while self._retired:
            try:
                self._retired.pop().close()
            except Exception as err:  # closing must not stop the app
                log.warning("closing the service failed: %s", err)

    def _on_service_changed(self, service: Any) -> None:
        if service is None:
            self.service_label.setText("no gallery open")
            return
        text = self._describe_service(service)
        if self.ctx.model_loading:
            text = text.replace("no model", "loading the model…")
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
        self._close_retired()
        if self.store is not None:
            self.store.set_value("window/geometry", self.saveGeometry())
        service = self.ctx.service
        if service is not None and self._owns_service:
            try:
                service.close()
            except Exception as err:  # closing must not crash the exit
                log.warning("closing the service failed: %s", err)
