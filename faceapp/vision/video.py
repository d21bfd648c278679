"""Decode video files (and image folders) into RGB frames with PyAV, Qt-free.

Used by the benchmark, the tests and the training tools; the GUI has its own
QtMultimedia source but the same frame format: (H, W, 3) uint8 RGB.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from faceapp.errors import CameraError, InvalidImage
from faceapp.vision.images import IMAGE_SUFFIXES, load_image, resize_max_side


def iter_video_frames(
    path: str | Path, *, max_side: int | None = None, max_frames: int | None = None,
    input_format: str | None = None,
) -> Iterator[np.ndarray]:
    """Yield the frames of a video file (or a capture device) in order.

    Args:
        path: any container/codec FFmpeg (PyAV) decodes.
        input_format: FFmpeg input format, e.g. ``"v4l2"`` for a Linux camera device
            (``None``: guessed from the file).
        max_side: downscale frames whose longer side exceeds it.
        max_frames: stop after this many frames.
    Yields:
        (H, W, 3) uint8 RGB frames.
    Raises:
        CameraError: the file cannot be opened or holds no video stream.
    """
    import av  # imported here: decoding is an edge concern, keep import-time light

    try:
        container = av.open(str(path), format=input_format)
    except (OSError, av.FFmpegError) as err:
        raise CameraError(f"{path}: cannot open video ({err})") from None
    with container:
        if not container.streams.video:
            raise CameraError(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        count = 0
        try:
            for frame in container.decode(stream):
                rgb = frame.to_ndarray(format="rgb24")
                if max_side is not None:
                    rgb, _ = resize_max_side(rgb, max_side)
                yield np.ascontiguousarray(rgb)
                count += 1
                if max_frames is not None and count >= max_frames:
                    return
        except av.FFmpegError as err:
            raise CameraError(f"{path}: video decoding failed after {count} frames ({err})") from None


def read_video_frames(
    path: str | Path, *, max_side: int | None = None, max_frames: int | None = None
) -> list[np.ndarray]:
    """All (or the first ``max_frames``) frames of a video as a list of (H, W, 3) uint8."""
    return list(iter_video_frames(path, max_side=max_side, max_frames=max_frames))


def iter_image_folder(path: str | Path) -> Iterator[tuple[Path, np.ndarray]]:
    """Yield (file, RGB frame) for the images of a folder in name order; unreadable files skipped."""
    folder = Path(path)
    if not folder.is_dir():
        raise CameraError(f"{folder}: not a folder")
    for file in sorted(folder.iterdir()):
        if file.suffix.lower() in IMAGE_SUFFIXES and file.is_file():
            try:
                yield file, load_image(file)
            except InvalidImage:
                continue
