"""What the pages share: the open service, the settings, the task runner and messages.

Pages never talk to each other or to the main window directly; they read
``ctx.service`` / ``ctx.settings``, start long jobs with :meth:`AppContext.run_task`, and
announce changes (``galleryChanged``) or messages (``message``, ``error``) through the
context's signals.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import shiboken6
from PySide6.QtCore import QObject, Signal

from faceapp.errors import FaceappError
from faceapp.gui.settings import GuiSettings
from faceapp.gui.workers import ProgressFn, StopFn, Task, TaskRunner, describe_error

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceInfo:
    """What the pages need to know about the open service, fetched once in a worker so the
    GUI thread never waits on the service (which serialises its calls).

    ``scorers``: names, ``distance`` first; ``thresholds``: scorer -> τ stored by the user
    or calibrated, as fetched (the τ in effect is :meth:`AppContext.threshold`);
    ``problems``: scorer -> why it has no τ.
    """

    scorers: tuple[str, ...] = ()
    thresholds: dict[str, float] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)

    @classmethod
    def fetch(cls, service: Any) -> ServiceInfo:
        """Ask ``service`` (blocking; call it in a worker). Expected failures become
        ``problems`` entries, never exceptions."""
        try:
            scorers = tuple(service.available_scorers())
        except FaceappError as err:  # e.g. a gallery opened without a model
            return cls((), {}, {"": str(err)})
        thresholds: dict[str, float] = {}
        problems: dict[str, str] = {}
        for scorer in scorers:
            try:
                thresholds[scorer] = float(service.thresholds.baseline(scorer))
            except FaceappError as err:
                problems[scorer] = str(err)
        return cls(scorers, thresholds, problems)


class AppContext(QObject):
    """Shared state of one main window.

    Signals: ``serviceChanged(object)`` (the new service or ``None``); ``galleryChanged()``
    (people or templates changed); ``thresholdChanged()`` (a τ was calibrated / applied);
    ``settingsChanged(GuiSettings)``; ``message(str)`` for the status bar; ``error(str)``
    for failures; ``taskStarted(Task, str)`` for jobs that want a progress bar;
    ``modelLoadingChanged(bool)`` when the face models start / stop loading in the
    background (the service is then gallery-only: see :attr:`model_loading`);
    ``passphraseChanged(str)`` after the gallery's passphrase was changed (key rotation):
    whoever hands the typed passphrase to the workers that open the gallery updates it.
    """

    serviceChanged = Signal(object)
    galleryChanged = Signal()
    thresholdChanged = Signal()
    settingsChanged = Signal(object)
    message = Signal(str)
    error = Signal(str)
    taskStarted = Signal(object, str)
    modelLoadingChanged = Signal(bool)
    passphraseChanged = Signal(str)

    def __init__(
        self,
        settings: GuiSettings,
        runner: TaskRunner | None = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self._settings = settings
        self._service: Any = None
        self._info = ServiceInfo()
        self._closed = False
        self._model_loading = False
        self.runner = runner if runner is not None else TaskRunner(parent=self)

    def close(self) -> None:
        """The window is going away: results of tasks still in flight are dropped."""
        self._closed = True

    def _guard(self, fn: Callable[..., None]) -> Callable[..., None]:
        """``fn`` wrapped so that it is skipped once this context is closed or deleted."""

        def call(*args: Any) -> None:
            if not self._closed and shiboken6.isValid(self):
                fn(*args)

        return call

    # service -------------------------------------------------------------------------
    @property
    def service(self) -> Any:
        """The open ``faceapp.services.FaceService``, or ``None`` while none is open."""
        return self._service

    @property
    def info(self) -> ServiceInfo:
        """Scorers and thresholds of the open service, as last fetched."""
        return self._info

    @property
    def has_model(self) -> bool:
        """A service is open and it has a face model (not gallery-only)."""
        return self._service is not None and bool(getattr(self._service, "has_model", True))

    @property
    def model_loading(self) -> bool:
        """The face models are being loaded in the background (progressive start-up: the
        open service is gallery-only until the full one replaces it)."""
        return self._model_loading

    def set_model_loading(self, loading: bool) -> None:
        if bool(loading) != self._model_loading:
            self._model_loading = bool(loading)
            self.modelLoadingChanged.emit(self._model_loading)

    def set_service(self, service: Any, info: ServiceInfo | None = None) -> None:
        """Install a service. Without ``info`` it is fetched here, synchronously: pass it
        when the service is busy in another thread (the GUI thread must not wait)."""
        self._service = service
        if service is None:
            self._info = ServiceInfo()
        else:
            self._info = info if info is not None else ServiceInfo.fetch(service)
            if self.has_model:
                # a τ change anywhere (a slider, the Calibrate page, another thread) reaches
                # every page; Qt queues the signal when it comes from a worker thread
                service.thresholds.on_change(lambda _scorer, _tau: self.thresholdChanged.emit())
                if self._settings.tau is not None:
                    self._apply_settings_tau()
        self.serviceChanged.emit(service)

    def set_info(self, info: ServiceInfo) -> None:
        """New scorers / thresholds (after a calibration): pages re-read them."""
        self._info = info
        self.thresholdChanged.emit()

    # settings ------------------------------------------------------------------------
    @property
    def settings(self) -> GuiSettings:
        return self._settings

    def set_settings(self, settings: GuiSettings) -> None:
        before = (self._settings.scorer, self._settings.tau)
        self._settings = settings
        if (settings.scorer, settings.tau) != before:
            if before[1] is not None and before[0] != settings.scorer and self._service is not None \
                    and self.has_model:
                with contextlib.suppress(FaceappError):
                    self._service.use_threshold(before[0], None)  # the old scorer's hand τ goes
            self._apply_settings_tau()
        self.settingsChanged.emit(settings)

    def scorers(self) -> list[str]:
        """Scorers the open service offers (empty without a service)."""
        return list(self._info.scorers)

    def current_scorer(self) -> str:
        """The scorer chosen in Settings when the service offers it, else its first one."""
        scorers = self.scorers()
        if self._settings.scorer in scorers:
            return self._settings.scorer
        return scorers[0] if scorers else ""

    def threshold(self, scorer: str, *, report: bool = True) -> float | None:
        """τ in effect for ``scorer``: the open service's (its τ policy, one value for every
        page, the live loops and the service calls; a τ set by hand in Settings is applied
        to it); ``None`` when there is none (said in the status bar if ``report``)."""
        if self._service is None or not scorer or not self.has_model:
            return None
        try:
            return float(self._service.thresholds.current(scorer))
        except FaceappError as err:
            if report:
                self.show_error(self._info.problems.get(scorer, str(err)))
            return None

    def identification_threshold(self, scorer: str, *, report: bool = True) -> float | None:
        """τ of a 1:K search with ``scorer`` now (the Recognize page): the user's τ if any,
        else the calibration's point for the gallery's size, so it follows enrolments and
        deletions (read from the service's memory: call it at each relabel); ``None`` when
        there is none (said in the status bar if ``report``)."""
        if self._service is None or not scorer or not self.has_model:
            return None
        try:
            return float(self._service.identification_threshold(scorer))
        except FaceappError as err:
            if report:
                self.show_error(self._info.problems.get(scorer, str(err)))
            return None

    def use_threshold(self, scorer: str, tau: float | None) -> None:
        """Make ``tau`` the τ of ``scorer`` for this session, everywhere (a slider moved);
        ``None``: back to the stored or calibrated τ. ``thresholdChanged`` follows."""
        if self._service is None or not scorer or not self.has_model:
            return
        try:
            self._service.use_threshold(scorer, tau)
        except FaceappError as err:
            self.show_error(str(err))

    def _apply_settings_tau(self) -> None:
        """A τ set by hand in Settings becomes the service's session τ for its scorer."""
        settings = self._settings
        if self._service is not None and self.has_model and settings.scorer:
            with contextlib.suppress(FaceappError):
                self._service.use_threshold(settings.scorer, settings.tau)

    # messages ------------------------------------------------------------------------
    def show_message(self, text: str) -> None:
        self.message.emit(text)

    def show_error(self, err: BaseException | str) -> None:
        text = err if isinstance(err, str) else describe_error(err)
        log.info("error shown to the user: %s", text)
        self.error.emit(text)

    # tasks ---------------------------------------------------------------------------
    def run_task(
        self,
        func: Callable[[ProgressFn, StopFn], Any],
        *,
        label: str,
        on_result: Callable[[Any], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        on_finished: Callable[[], None] | None = None,
        show_progress: bool = False,
    ) -> Task:
        """Run ``func(progress, should_stop)`` in the pool.

        ``on_result`` gets its return value, in the GUI thread; errors go to ``on_error``
        or, by default, to the ``error`` signal. With ``show_progress`` the main window
        shows a progress bar with a Cancel button while it runs.
        """
        task = Task(func, name=label)
        if on_result is not None:
            task.returned.connect(self._guard(on_result))
        task.errored.connect(self._guard(on_error if on_error is not None else self.show_error))
        task.aborted.connect(self._guard(lambda: self.show_message(f"{label}: cancelled")))
        if on_finished is not None:
            task.finished.connect(self._guard(on_finished))
        if show_progress:
            self.taskStarted.emit(task, label)
        self.runner.submit(task)
        return task
