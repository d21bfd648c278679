"""Start the desktop app: ``faceapp gui`` / ``make run`` end up in :func:`run`."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QColor, QFont, QPainter, QPixmap
from PySide6.QtWidgets import QApplication, QSplashScreen

from faceapp.errors import FaceappError
from faceapp.gui.main_window import MainWindow, ServiceOpener
from faceapp.gui.settings import APPLICATION, ORGANIZATION, GuiSettings, SettingsStore

log = logging.getLogger(__name__)

# Qt Multimedia logs every FFmpeg probe at warning level; keep the terminal readable.
_QUIET_MULTIMEDIA = "qt.multimedia.*=false;qt.multimedia.ffmpeg*=false"


def service_opener(device: str = "cpu") -> ServiceOpener:
    """A function that opens a ``FaceService`` for given settings (run in a worker thread)."""

    def open_service(settings: GuiSettings) -> Any:
        # Imported here, in the worker thread: loading torch takes seconds and the window
        # should already be on screen meanwhile.
        from faceapp.services import FaceService

        return FaceService.open(db_url=settings.db or None, model_path=settings.model or None, device=device)

    return open_service


def check_display() -> None:
    """Fail with a clear message (instead of Qt aborting the process) when no display is
    available on Linux and no other Qt platform was chosen."""
    if not sys.platform.startswith("linux") or os.environ.get("QT_QPA_PLATFORM"):
        return
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise FaceappError(
            "no display found (DISPLAY / WAYLAND_DISPLAY unset): run the app on a desktop, "
            "under `xvfb-run -a`, or with QT_QPA_PLATFORM=offscreen"
        )


def create_app(argv: Sequence[str] | None = None) -> QApplication:
    """The ``QApplication`` (created once per process)."""
    app = QApplication.instance()
    if app is None:
        os.environ.setdefault("QT_LOGGING_RULES", _QUIET_MULTIMEDIA)
        app = QApplication(list(argv) if argv is not None else sys.argv[:1])
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationName(APPLICATION)
    app.setApplicationDisplayName("faceapp")
    return app  # type: ignore[return-value]


def splash(app: QApplication, text: str) -> QSplashScreen:
    """A small start-up card shown while the model libraries load."""
    pix = QPixmap(460, 140)
    pix.fill(QColor(30, 32, 36))
    p = QPainter(pix)
    p.setPen(QColor(235, 235, 235))
    font = QFont(app.font())
    font.setPointSizeF(font.pointSizeF() * 2)
    font.setBold(True)
    p.setFont(font)
    p.drawText(pix.rect().adjusted(0, 20, 0, -60), Qt.AlignmentFlag.AlignCenter, "faceapp")
    p.end()
    card = QSplashScreen(pix)
    card.showMessage(
        text, Qt.AlignmentFlag.AlignBottom | Qt.AlignmentFlag.AlignHCenter, QColor(180, 180, 180)
    )
    card.show()
    app.processEvents()
    return card


def run(
    *,
    camera: str | None = None,
    db: str | None = None,
    model: str | None = None,
    device: str = "cpu",
    store: SettingsStore | None = None,
    preload: Callable[[], None] | None = None,
) -> int:
    """Open the main window and run the event loop; returns the exit code.

    ``camera``, ``db`` and ``model`` override the saved settings for this run.
    ``preload``: imports the model libraries (torch, MTCNN...) in the **main** thread,
    behind a start-up card, before any worker thread or video decoder runs: importing
    them for the first time in a worker thread while Qt's video/GL stack is active can
    crash the process (seen with triton's bundled LLVM under X11). ``faceapp gui`` passes
    one; the service itself is then opened in a worker.
    """
    check_display()
    app = create_app()
    if preload is not None:
        card = splash(app, "Loading the face models…")
        preload()
        card.close()
    store = store if store is not None else SettingsStore()
    settings = store.load().with_overrides(camera=camera, db=db, model=model)
    window = MainWindow(settings, store=store, open_service=service_opener(device))
    window.show()
    QTimer.singleShot(0, window.open_service_async)
    code = app.exec()
    window.shutdown()
    return int(code)
