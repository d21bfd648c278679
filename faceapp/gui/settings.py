"""GUI preferences persisted between runs with ``QSettings``.

:class:`GuiSettings` is a frozen dataclass; :class:`SettingsStore` reads and writes it.
Command-line flags (``--camera``, ``--db``, ``--model``) override the stored values for
one run without being saved (see :meth:`GuiSettings.with_overrides`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from PySide6.QtCore import QSettings

ORGANIZATION = "faceapp"
APPLICATION = "faceapp"


@dataclass(frozen=True)
class GuiSettings:
    """What the user chose.

    ``db``: database URL or file (``""`` = the default one); ``model``: checkpoint path
    (``""`` = the default model); ``camera``: device index or a video file / image folder;
    ``scorer``: the scorer used to verify and recognise (``""`` = the service's first);
    ``tau``: a threshold the user set by hand for ``scorer`` (``None`` = the calibrated one);
    ``samples``: faces captured per enrolment; ``window``: frames fused for a verification
    decision; ``loop``: replay a video / folder source when it ends; ``liveness``: Verify
    runs the liveness challenge and passive checks by default.
    """

    db: str = ""
    model: str = ""
    camera: str = "0"
    scorer: str = ""
    tau: float | None = None
    samples: int = 5
    window: int = 7
    loop: bool = True
    liveness: bool = False

    def with_overrides(
        self, *, camera: str | None = None, db: str | None = None, model: str | None = None
    ) -> GuiSettings:
        changes: dict[str, object] = {}
        if camera is not None:
            changes["camera"] = str(camera)
        if db is not None:
            changes["db"] = str(db)
        if model is not None:
            changes["model"] = str(model)
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def _to_bool(value: object) -> bool:
    if isinstance(value, str):
        return value.lower() in {"1", "true", "yes", "on"}
    return bool(value)


class SettingsStore:
    """Load / save :class:`GuiSettings` in a ``QSettings`` (pass one in for tests)."""

    def __init__(self, qsettings: QSettings | None = None) -> None:
        self._qs = qsettings if qsettings is not None else QSettings(ORGANIZATION, APPLICATION)

    @classmethod
    def at_path(cls, path: str) -> SettingsStore:
        """A store in an INI file (tests, portable installs)."""
        return cls(QSettings(path, QSettings.Format.IniFormat))

    def load(self) -> GuiSettings:
        d = GuiSettings()
        qs = self._qs

        def get(key: str, default: object) -> object:
            value = qs.value(key, default)
            return default if value is None else value

        tau_raw = get("tau", "")
        try:
            tau = float(tau_raw) if tau_raw not in ("", None) else None  # type: ignore[arg-type]
        except (TypeError, ValueError):
            tau = None
        try:
            samples = max(1, int(get("samples", d.samples)))  # type: ignore[call-overload]
            window = max(1, int(get("window", d.window)))  # type: ignore[call-overload]
        except (TypeError, ValueError):
            samples, window = d.samples, d.window
        return GuiSettings(
            db=str(get("db", d.db)),
            model=str(get("model", d.model)),
            camera=str(get("camera", d.camera)),
            scorer=str(get("scorer", d.scorer)),
            tau=tau,
            samples=samples,
            window=window,
            loop=_to_bool(get("loop", d.loop)),
            liveness=_to_bool(get("liveness", d.liveness)),
        )

    def save(self, settings: GuiSettings) -> None:
        qs = self._qs
        qs.setValue("db", settings.db)
        qs.setValue("model", settings.model)
        qs.setValue("camera", settings.camera)
        qs.setValue("scorer", settings.scorer)
        qs.setValue("tau", "" if settings.tau is None else repr(float(settings.tau)))
        qs.setValue("samples", int(settings.samples))
        qs.setValue("window", int(settings.window))
        qs.setValue("loop", bool(settings.loop))
        qs.setValue("liveness", bool(settings.liveness))
        qs.sync()

    def value(self, key: str, default: object = None) -> object:
        """Other persisted UI state (window geometry...)."""
        return self._qs.value(key, default)

    def set_value(self, key: str, value: object) -> None:
        self._qs.setValue(key, value)
