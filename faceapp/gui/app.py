"""Start the desktop app: ``faceapp gui`` / ``make run`` end up in :func:`run`."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from PySide6.QtCore import QEvent, QObject, QTimer
from PySide6.QtWidgets import QApplication, QWidget

from faceapp.bench.startup_marks import StartupMarks, process_start_time
from faceapp.errors import FaceappError
from faceapp.gui.settings import APPLICATION, ORGANIZATION, GuiSettings, SettingsStore

if TYPE_CHECKING:
    from faceapp.gui.main_window import MainWindow, ServiceOpener

log = logging.getLogger(__name__)

# Qt Multimedia logs every FFmpeg probe at warning level; keep the terminal readable.
_QUIET_MULTIMEDIA = "qt.multimedia.*=false;qt.multimedia.ffmpeg*=false"

KeyPrompt = Callable[[str, bool], str]


def service_opener(device: str = "cpu", key_prompt: KeyPrompt | None = None) -> ServiceOpener:
    """A function that opens a ``FaceService`` for given settings (run in a worker thread).

    The gallery's search index is loaded too (from its snapshot when valid), so that the
    first recognition does not pay for it; a failure there is logged and reported again
    by the first search, the service stays usable for everything else."""

    def open_service(settings: GuiSettings) -> Any:
        # Imported here, in the worker thread: the model libraries (torch...) are imported
        # by FaceService.open, in this thread too (see run).
        from faceapp.services import FaceService

        service = FaceService.open(
            db_url=settings.db or None, model_path=settings.model or None, device=device,
            key_prompt=key_prompt,
        )
        try:
            service.load_index()
        except FaceappError as err:
            log.warning("could not load the gallery index: %s", err)
        return service

    return open_service


def gallery_opener(key_prompt: KeyPrompt | None = None) -> ServiceOpener:
    """A function that opens a gallery-only ``FaceService`` (no face model, so no torch:
    fast) for given settings, in a worker thread: listing, renaming, deleting, export and
    import work with it (see :meth:`MainWindow.open_service_async`)."""

    def open_gallery(settings: GuiSettings) -> Any:
        from faceapp.services import FaceService

        return FaceService.open(
            db_url=settings.db or None, model_path=settings.model or None, load_model=False,
            key_prompt=key_prompt,
        )

    return open_gallery


def ask_gallery_passphrase(db: str | None, parent: QWidget | None = None
                           ) -> RememberedPassphrase | None:
    """When the gallery needs a typed passphrase (no OS keyring, ``$FACEAPP_PASSPHRASE``
    unset), ask for it once here, in the GUI thread (twice for a new gallery), and return a
    prompt that gives it to the workers that open the gallery; ``None`` when not needed or
    cancelled (opening then reports what to do)."""
    from PySide6.QtWidgets import QInputDialog, QLineEdit

    from faceapp.services import gallery_passphrase_needed

    need = gallery_passphrase_needed(db)
    if need == "none":
        return None
    label = ("Passphrase of the encrypted gallery:" if need == "unlock" else
             "No OS keyring is available: choose a passphrase for the new encrypted gallery:")
    first, ok = QInputDialog.getText(parent, "faceapp gallery", label, QLineEdit.EchoMode.Password)
    if not ok or not first:
        return None
    if need == "new":
        again, ok = QInputDialog.getText(parent, "faceapp gallery", "Repeat it:",
                                         QLineEdit.EchoMode.Password)
        if not ok or again != first:
            return None

    return RememberedPassphrase(first)


class RememberedPassphrase:
    """The gallery passphrase typed once in the GUI, given to the workers that open the
    gallery (a :data:`KeyPrompt`); :meth:`set` after the Privacy page changed it."""

    def __init__(self, value: str) -> None:
        self._value = value

    def __call__(self, _message: str, _confirm: bool) -> str:
        return self._value

    def set(self, value: str) -> None:
        self._value = value


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


# ------------------------------------------------------------------------------ start-up timing


class StartupProbe(QObject):
    """The Qt half of the start-up record of one launch (``faceapp gui --exit-when-ready``,
    for ``faceapp bench startup``): it watches paint events, follows the main window's
    signals until the app is ready and defers with ``QTimer``; the marks, the clock and the
    JSON line are Qt-free, in :class:`faceapp.bench.startup_marks.StartupMarks` (``record``;
    the marks are listed there). ``finish`` writes the record as one JSON line
    ``{"startup": {...}}`` to ``out`` and calls ``quit``.
    """

    def __init__(self, t0: float, out: TextIO, quit_fn: Callable[[int], None]) -> None:
        super().__init__()
        self.record = StartupMarks(t0)
        self._out = out
        self._quit = quit_fn
        self._painted: dict[int, str] = {}
        self._window: MainWindow | None = None
        self._gallery_ok = False
        self._service_ok = False
        self._done = False

    def mark(self, name: str) -> float:
        """Record ``name`` now (the first time only); see :meth:`StartupMarks.mark`."""
        return self.record.mark(name)

    def watch_paint(self, widget: QWidget, name: str) -> None:
        """Mark ``name`` (and ``first_paint``) at the first paint event of ``widget``."""
        self._painted[id(widget)] = name
        widget.installEventFilter(self)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.Paint:
            name = self._painted.pop(id(watched), None)
            if name is not None:
                self.record.mark_paint(name)
                watched.removeEventFilter(self)
        return False

    def attach(self, window: MainWindow) -> None:
        """Follow the window until it is ready, then :meth:`finish`."""
        self._window = window
        window.galleryReady.connect(self._on_gallery)
        window.serviceReady.connect(self._on_service)
        window.people_page.peopleLoaded.connect(self._on_people)
        window.ctx.runner.busyChanged.connect(lambda _busy: self._check())

    def _fail(self) -> None:
        if self._done:  # a failed gallery fails both phases: report once
            return
        self._done = True
        self.record.info["error"] = next((m for m, err in reversed(self._window_messages()) if err), "")
        self.mark("service_failed")
        QTimer.singleShot(0, lambda: self.finish(1))

    def _on_gallery(self, service: Any) -> None:
        if service is None:
            self._fail()
            return
        self.mark("gallery")
        self._gallery_ok = True

    def _on_service(self, service: Any) -> None:
        if service is None:
            self._fail()
            return
        self.mark("service")
        self._service_ok = True
        self._check()

    def _on_people(self, n: int) -> None:
        if "people" not in self.record and (self._gallery_ok or self._service_ok):
            self.mark("people")
            self.record.info["people_listed"] = int(n)
            QTimer.singleShot(0, self._usable)

    def _usable(self) -> None:
        self.mark("usable")
        self._check()

    def _window_messages(self) -> list[tuple[str, bool]]:
        return list(self._window.messages) if self._window is not None else []

    def _check(self) -> None:
        window = self._window
        if self._done or window is None or not (self._service_ok and "usable" in self.record):
            return
        if window.ctx.runner.is_busy():
            return
        self.mark("ready")
        self._done = True
        QTimer.singleShot(0, self._idle)

    def _idle(self) -> None:
        self.mark("idle")
        self.finish(0)

    def finish(self, code: int) -> None:
        """Write the JSON line and quit with ``code``."""
        window = self._window
        service = window.ctx.service if window is not None else None
        if window is not None and service is not None:
            people = window.people_page.model.people()
            self.record.note_service(service, people, has_model=window.ctx.has_model)
        self.record.write(self._out, code)
        self._quit(code)


# ------------------------------------------------------------------------------ run


def run(
    *,
    camera: str | None = None,
    db: str | None = None,
    model: str | None = None,
    device: str = "cpu",
    store: SettingsStore | None = None,
    preload: Callable[[], None] | None = None,
    exit_when_ready: bool = False,
    report: TextIO | None = None,
) -> int:
    """Open the main window and run the event loop; returns the exit code.

    ``camera``, ``db`` and ``model`` override the saved settings for this run.
    Start-up is progressive: the main window is shown at once, a gallery-only service
    (no torch) is opened in a worker so that People lists the gallery, then the model
    libraries are imported and the full service (model + index) is opened in a worker
    too and replaces it; until then the model pages say the face models are loading.
    ``preload``: called first, in the **main** thread, before Qt starts: for the few
    native libraries that must not be loaded for the first time in a worker once Qt's
    video/GL stack runs (``faceapp gui`` imports triton there: it bundles its own LLVM,
    which crashes the process when loaded in a worker after Mesa's LLVM under X11, seen
    while a video plays). It should be quick: the window waits for it.
    ``exit_when_ready``: quit once the full service is ready (after the window became
    usable: People listed) after writing the start-up timings as one JSON line to
    ``report`` (default stdout; see :class:`StartupProbe`); for ``faceapp bench startup``.
    """
    check_display()
    probe: StartupProbe | None = None
    if exit_when_ready:
        probe = StartupProbe(process_start_time(), report or sys.stdout, QApplication.exit)
        probe.mark("run")
    if preload is not None:
        preload()
    if probe is not None:
        probe.mark("preloaded")
    app = create_app()
    from faceapp.gui.gc_guard import GuiThreadCollector
    from faceapp.gui.main_window import MainWindow

    collector = GuiThreadCollector(parent=app)  # cycles freed on this thread only
    collector.start()
    store = store if store is not None else SettingsStore()
    settings = store.load().with_overrides(camera=camera, db=db, model=model)
    key_prompt = ask_gallery_passphrase(settings.db or None)
    window = MainWindow(
        settings, store=store, open_service=service_opener(device, key_prompt),
        open_gallery=gallery_opener(key_prompt),
    )
    if isinstance(key_prompt, RememberedPassphrase):  # a key rotation changes it
        window.ctx.passphraseChanged.connect(key_prompt.set)
    if probe is not None:
        probe.watch_paint(window, "window_paint")
        probe.attach(window)
    window.show()
    if probe is not None:
        probe.mark("window_shown")
    QTimer.singleShot(0, window.open_service_async)
    code = app.exec()
    window.shutdown()
    collector.stop()
    return int(code)
