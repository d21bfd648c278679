"""Frame sources: a camera, a video file or an image folder, all delivering RGB arrays.

Every source is a :class:`FrameSource` (a ``QObject``) that emits ``frameReady`` with one
``(H, W, 3) uint8`` RGB ``numpy`` array per frame. The Qt frame is converted exactly once,
here, at the edge (:func:`qimage_to_rgb`); nothing past this module sees a ``QVideoFrame``.

* :class:`CameraSource`: a capture device, via ``QCamera`` + ``QMediaCaptureSession`` +
  ``QVideoSink``.
* :class:`VideoFileSource`: a video file played as if it were a camera, via
  ``QMediaPlayer`` + ``QVideoSink`` (Qt's FFmpeg backend decodes it), optionally looping.
* :class:`ImageFolderSource`: the images of a folder, one per timer tick, optionally looping.

:func:`open_source` turns the ``--camera`` value (``N`` or a path) into one of them.
Failures (no camera, unreadable file) never raise out of a running source: they are
reported through ``errorOccurred(str)`` with a message written for the user.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, QTimer, QUrl, Signal
from PySide6.QtGui import QImage, QImageReader
from PySide6.QtMultimedia import (
    QCamera,
    QMediaCaptureSession,
    QMediaDevices,
    QMediaPlayer,
    QVideoFrame,
    QVideoSink,
)

from faceapp.errors import CameraError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm", ".gif", ".tif", ".tiff", ".webp"}
)


def qimage_to_rgb(image: QImage) -> np.ndarray:
    """Copy a ``QImage`` of any format into a ``(H, W, 3) uint8`` RGB array.

    The image is converted to ``Format_RGB888`` first; rows are read with the image's
    ``bytesPerLine`` (Qt pads rows to 4 bytes), so odd widths are handled.
    Raises :class:`CameraError` for a null image.
    """
    if image.isNull():
        raise CameraError("empty video frame")
    if image.format() != QImage.Format.Format_RGB888:
        image = image.convertToFormat(QImage.Format.Format_RGB888)
    h, w, bpl = image.height(), image.width(), image.bytesPerLine()
    buf = np.frombuffer(image.constBits(), dtype=np.uint8, count=h * bpl)
    return buf.reshape(h, bpl)[:, : w * 3].reshape(h, w, 3).copy()


def rgb_to_qimage(frame: np.ndarray) -> QImage:
    """A ``QImage`` (RGB888) that owns a copy of an ``(H, W, 3) uint8`` RGB array."""
    arr = np.ascontiguousarray(frame, dtype=np.uint8)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 array, got shape {arr.shape}")
    h, w, _ = arr.shape
    return QImage(arr.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()


def video_frame_to_rgb(frame: QVideoFrame) -> np.ndarray:
    """Convert one ``QVideoFrame`` to ``(H, W, 3) uint8`` RGB (see :func:`qimage_to_rgb`)."""
    return qimage_to_rgb(frame.toImage())


class FrameSource(QObject):
    """Base of every frame source.

    Signals: ``frameReady(object)`` with an ``(H, W, 3) uint8`` RGB array;
    ``errorOccurred(str)`` with a user-facing message; ``started()``; ``stopped()``;
    ``ended()`` when a non-looping file or folder runs out of frames.
    """

    frameReady = Signal(object)
    errorOccurred = Signal(str)
    started = Signal()
    stopped = Signal()
    ended = Signal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._active = False
        self.frames_emitted = 0

    @property
    def description(self) -> str:
        """A short human-readable name of the source (shown in the UI)."""
        return type(self).__name__

    def is_active(self) -> bool:
        return self._active

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    # helpers for subclasses
    def _emit_frame(self, frame: np.ndarray) -> None:
        self.frames_emitted += 1
        self.frameReady.emit(frame)

    def _fail(self, message: str) -> None:
        log.warning("%s: %s", self.description, message)
        was_active = self._active
        self._active = False
        self.errorOccurred.emit(message)
        if was_active:
            self.stopped.emit()

    def _set_active(self, active: bool) -> None:
        if active == self._active:
            return
        self._active = active
        (self.started if active else self.stopped).emit()


def available_cameras() -> list[str]:
    """Descriptions of the video input devices Qt sees, in device-index order."""
    return [dev.description() for dev in QMediaDevices.videoInputs()]


class _SinkMixin:
    """Turns ``QVideoSink.videoFrameChanged`` into RGB arrays."""

    def _on_video_frame(self, frame: QVideoFrame) -> None:
        if not self._active or not frame.isValid():  # type: ignore[attr-defined]
            return
        try:
            rgb = video_frame_to_rgb(frame)
        except CameraError as err:
            log.debug("dropped an unreadable frame: %s", err)
            return
        self._emit_frame(rgb)  # type: ignore[attr-defined]


class CameraSource(_SinkMixin, FrameSource):
    """Capture device number ``index`` (0 = first camera Qt lists)."""

    def __init__(self, index: int = 0, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.index = index
        self._camera: QCamera | None = None
        self._session = QMediaCaptureSession(self)
        self._sink = QVideoSink(self)
        self._session.setVideoSink(self._sink)
        self._sink.videoFrameChanged.connect(self._on_video_frame)

    @property
    def description(self) -> str:
        return f"camera {self.index}"

    def start(self) -> None:
        if self._active:
            return
        devices = QMediaDevices.videoInputs()
        if not devices:
            self._fail(
                "No camera found. Connect a camera, or choose a video file or image folder "
                "as the source (Settings, or faceapp gui --camera PATH)."
            )
            return
        if not 0 <= self.index < len(devices):
            names = ", ".join(f"{i}: {d.description()}" for i, d in enumerate(devices))
            self._fail(f"Camera {self.index} does not exist (available: {names}).")
            return
        if self._camera is None:
            self._camera = QCamera(devices[self.index], self)
            self._camera.errorOccurred.connect(self._on_camera_error)
            self._session.setCamera(self._camera)
        self._set_active(True)
        self._camera.start()

    def stop(self) -> None:
        if self._camera is not None:
            self._camera.stop()
        self._set_active(False)

    def _on_camera_error(self, _error: QCamera.Error, message: str) -> None:
        if self._camera is not None:
            self._camera.stop()
        self._fail(f"Camera {self.index} failed: {message or 'unknown error'}")


class VideoFileSource(_SinkMixin, FrameSource):
    """A video file played through ``QMediaPlayer`` as if it were a live camera.

    ``loop``: restart at the end (otherwise ``ended`` is emitted and the source stops).
    ``rate``: playback speed factor (1.0 = real time).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        loop: bool = True,
        rate: float = 1.0,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.path = Path(path)
        self.loop = loop
        self.rate = rate
        self._player = QMediaPlayer(self)
        self._sink = QVideoSink(self)
        self._player.setVideoSink(self._sink)
        self._sink.videoFrameChanged.connect(self._on_video_frame)
        self._player.errorOccurred.connect(self._on_player_error)
        self._player.mediaStatusChanged.connect(self._on_status)

    @property
    def description(self) -> str:
        return f"video {self.path.name}"

    def start(self) -> None:
        if self._active:
            return
        if not self.path.is_file():
            self._fail(f"Video file not found: {self.path}")
            return
        self._player.setLoops(QMediaPlayer.Loops.Infinite if self.loop else 1)
        self._player.setPlaybackRate(self.rate)
        if self._player.source().isEmpty():
            self._player.setSource(QUrl.fromLocalFile(str(self.path.resolve())))
        self._set_active(True)
        self._player.play()

    def stop(self) -> None:
        self._player.stop()
        self._set_active(False)

    def _on_player_error(self, _error: QMediaPlayer.Error, message: str) -> None:
        self._player.stop()
        self._fail(f"Cannot play {self.path.name}: {message or 'unsupported or corrupt file'}")

    def _on_status(self, status: QMediaPlayer.MediaStatus) -> None:
        if status == QMediaPlayer.MediaStatus.InvalidMedia and self._active:
            self._player.stop()
            self._fail(f"Cannot play {self.path.name}: not a video this app can decode")
        elif status == QMediaPlayer.MediaStatus.EndOfMedia and self._active and not self.loop:
            self._set_active(False)
            self.ended.emit()


class ImageFolderSource(FrameSource):
    """The images of a folder (sorted by name), one every ``interval_ms``.

    Unreadable files are skipped with a log message; a folder without any readable
    image reports an error.
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        interval_ms: int = 100,
        loop: bool = True,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.folder = Path(folder)
        self.loop = loop
        self._files: list[Path] = []
        self._pos = 0
        self._good = 0
        self._timer = QTimer(self)
        self._timer.setInterval(max(0, interval_ms))
        self._timer.timeout.connect(self._tick)

    @property
    def description(self) -> str:
        return f"folder {self.folder.name}"

    def start(self) -> None:
        if self._active:
            return
        if not self.folder.is_dir():
            self._fail(f"Image folder not found: {self.folder}")
            return
        self._files = sorted(
            p for p in self.folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not self._files:
            self._fail(f"No images in folder {self.folder}")
            return
        self._pos = 0
        self._good = 0
        self._set_active(True)
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()
        self._set_active(False)

    def _tick(self) -> None:
        if self._pos >= len(self._files):
            if not self.loop or self._good == 0:
                self._timer.stop()
                if self._good == 0:
                    self._fail(f"No readable image in folder {self.folder}")
                    return
                self._set_active(False)
                self.ended.emit()
                return
            self._pos = 0
        path = self._files[self._pos]
        self._pos += 1
        reader = QImageReader(str(path))
        reader.setAutoTransform(True)  # honour EXIF orientation
        image = reader.read()
        if image.isNull():
            log.info("skipping unreadable image %s: %s", path, reader.errorString())
            return
        self._good += 1
        self._emit_frame(qimage_to_rgb(image))


def parse_camera_spec(spec: str | int | None) -> int | Path:
    """``--camera`` value -> device index (``int``) or a path (video file or image folder)."""
    if spec is None or spec == "":
        return 0
    if isinstance(spec, int):
        return spec
    text = str(spec).strip()
    if text.isdigit():
        return int(text)
    return Path(text).expanduser()


def open_source(
    spec: str | int | None,
    *,
    loop: bool = True,
    rate: float = 1.0,
    interval_ms: int = 100,
    parent: QObject | None = None,
) -> FrameSource:
    """Build the frame source for ``spec`` (a device index, a video file or an image folder).

    Nothing is opened until :meth:`FrameSource.start`; problems found then (no camera,
    missing or undecodable file) are reported through ``errorOccurred``.
    """
    target = parse_camera_spec(spec)
    if isinstance(target, int):
        return CameraSource(target, parent=parent)
    if target.is_dir():
        return ImageFolderSource(target, interval_ms=interval_ms, loop=loop, parent=parent)
    return VideoFileSource(target, loop=loop, rate=rate, parent=parent)
