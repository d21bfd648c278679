"""Every error faceapp raises on purpose. All derive from :class:`FaceappError`.

Callers (CLI, GUI) catch ``FaceappError`` and show ``str(err)``: messages are written
for a user, naming the file / person / model concerned and the reason.
"""

from __future__ import annotations


class FaceappError(Exception):
    """Base of all expected, user-facing failures."""


class InvalidImage(FaceappError):
    """An input could not be turned into an RGB image (unreadable, truncated, too large...)."""

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"{source}: {reason}")


class NoFaceFound(FaceappError):
    """An operation that needs a face got an image without one."""


class MultipleFaces(FaceappError):
    """An operation that needs exactly one face got several."""


class QualityRejected(FaceappError):
    """A face was found but is unfit for enrolment (too small, blurred, not frontal)."""


class ModelError(FaceappError):
    """A checkpoint cannot be loaded: missing, corrupt, truncated or of an unknown format."""


class ModelMismatch(ModelError):
    """Two artefacts made by different models (different ``model_id`` or shape) were mixed."""


class WeightsUnavailable(ModelError):
    """Pretrained weights were asked for but cannot be obtained (offline, no local file)."""


class CalibrationError(FaceappError):
    """No usable threshold: calibration file missing, corrupt, or without the asked scorer."""


class GalleryError(FaceappError):
    """The face database cannot be opened or written (locked, corrupt, newer schema...)."""


class PersonNotFound(GalleryError):
    """No person of that name (or id) in the gallery."""


class DuplicatePerson(GalleryError):
    """A person of that name already exists."""


class KeyUnavailable(GalleryError):
    """The key of an encrypted gallery cannot be obtained (no keyring, no passphrase given,
    key file missing); the message says what to do."""


class WrongPassphrase(GalleryError):
    """A passphrase did not unlock a gallery key or an export bundle; nothing was changed."""


class CameraError(FaceappError):
    """A camera or video source cannot be opened or stopped delivering frames."""
