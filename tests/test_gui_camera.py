"""Frame sources: conversion at the edge, video file, image folder, missing camera, bad file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PySide6.QtMultimedia")

from PySide6.QtGui import QImage

from faceapp.gui.camera import (
    CameraSource,
    ImageFolderSource,
    VideoFileSource,
    available_cameras,
    open_source,
    parse_camera_spec,
    qimage_to_rgb,
    rgb_to_qimage,
)

pytestmark = pytest.mark.gui

# generous: only reached when something is wrong (or the machine is very busy)
WAIT = 60_000

CLIP = Path("face_videos") / "face_recognition_examples" / "short_hamilton_clip.mp4"


@pytest.mark.parametrize("width", [1, 5, 7, 8, 13])
@pytest.mark.parametrize(
    "fmt",
    [QImage.Format.Format_RGB888, QImage.Format.Format_RGB32, QImage.Format.Format_ARGB32],
)
def test_qimage_to_rgb_matches_pixel_loop(width: int, fmt: QImage.Format) -> None:
    rng = np.random.default_rng(width)
    h = 4
    img = QImage(width, h, fmt)
    expected = rng.integers(0, 256, size=(h, width, 3), dtype=np.uint8)
    for y in range(h):
        for x in range(width):
            r, g, b = (int(v) for v in expected[y, x])
            img.setPixel(x, y, (0xFF << 24) | (r << 16) | (g << 8) | b)
    out = qimage_to_rgb(img)
    assert out.shape == (h, width, 3) and out.dtype == np.uint8
    for y in range(h):
        for x in range(width):
            c = img.pixelColor(x, y)
            assert tuple(out[y, x]) == (c.red(), c.green(), c.blue())
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("shape", [(5, 7), (1, 1), (3, 10)])
def test_rgb_to_qimage_round_trip(shape: tuple[int, int]) -> None:
    frame = np.random.default_rng(sum(shape)).integers(0, 256, size=(*shape, 3), dtype=np.uint8)
    img = rgb_to_qimage(frame)
    assert (img.height(), img.width()) == shape
    np.testing.assert_array_equal(qimage_to_rgb(img), frame)


def test_null_image_is_an_error() -> None:
    from faceapp.errors import CameraError

    with pytest.raises(CameraError):
        qimage_to_rgb(QImage())


def test_parse_camera_spec(tmp_path: Path) -> None:
    assert parse_camera_spec(None) == 0
    assert parse_camera_spec("2") == 2
    assert parse_camera_spec(1) == 1
    assert parse_camera_spec(str(tmp_path)) == tmp_path


def test_open_source_kinds(qapp, tmp_path: Path) -> None:
    assert isinstance(open_source("0"), CameraSource)
    assert isinstance(open_source(str(tmp_path)), ImageFolderSource)
    assert isinstance(open_source(str(tmp_path / "x.mp4")), VideoFileSource)


def test_video_file_plays_as_camera(qtbot, data_dir: Path) -> None:
    source = VideoFileSource(data_dir / CLIP, loop=False, rate=2.0)
    frames: list[np.ndarray] = []
    source.frameReady.connect(frames.append)
    with qtbot.waitSignal(source.started, timeout=WAIT):
        source.start()
    qtbot.waitUntil(lambda: len(frames) >= 3, timeout=WAIT)
    source.stop()
    assert not source.is_active()
    f = frames[-1]
    assert f.shape == (360, 640, 3) and f.dtype == np.uint8
    assert f.flags.c_contiguous and f.flags.owndata
    assert f.std() > 5  # a real picture, not a blank buffer


def test_image_folder_source_plays_and_ends(qtbot, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    pics = [rng.integers(0, 256, size=(6, 9, 3), dtype=np.uint8) for _ in range(3)]
    for i, p in enumerate(pics):
        assert rgb_to_qimage(p).save(str(tmp_path / f"{i:02d}.png"))
    (tmp_path / "zz_broken.png").write_bytes(b"not an image")
    (tmp_path / "notes.txt").write_text("ignored")
    source = ImageFolderSource(tmp_path, interval_ms=0, loop=False)
    frames: list[np.ndarray] = []
    source.frameReady.connect(frames.append)
    with qtbot.waitSignal(source.ended, timeout=WAIT):
        source.start()
    assert len(frames) == 3
    for got, want in zip(frames, pics, strict=True):
        np.testing.assert_array_equal(got, want)


def test_missing_camera_reports_error(qtbot, monkeypatch) -> None:
    if available_cameras():
        pytest.skip("a camera is attached; this test is for machines without one")
    source = CameraSource(0)
    with qtbot.waitSignal(source.errorOccurred, timeout=WAIT) as blocker:
        source.start()
    assert "No camera" in blocker.args[0]
    assert not source.is_active()


def test_bad_video_file_reports_error(qtbot, tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video" * 50)
    source = VideoFileSource(bad)
    with qtbot.waitSignal(source.errorOccurred, timeout=WAIT) as blocker:
        source.start()
    assert "bad.mp4" in blocker.args[0]
    qtbot.waitUntil(lambda: not source.is_active(), timeout=WAIT)


@pytest.mark.parametrize("name", ["missing.mp4", "missing_folder/"])
def test_missing_path_reports_error(qtbot, tmp_path: Path, name: str) -> None:
    source = open_source(str(tmp_path / name))
    with qtbot.waitSignal(source.errorOccurred, timeout=WAIT) as blocker:
        source.start()
    assert "not found" in blocker.args[0]


def test_empty_folder_reports_error(qtbot, tmp_path: Path) -> None:
    source = ImageFolderSource(tmp_path)
    with qtbot.waitSignal(source.errorOccurred, timeout=WAIT) as blocker:
        source.start()
    assert "No images" in blocker.args[0]
