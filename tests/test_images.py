"""The image loader at the edge: every input kind -> RGB uint8 (H, W, 3), every bad input -> InvalidImage."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceapp.config import ImageLimits
from faceapp.errors import InvalidImage
from faceapp.vision.images import decode_png, encode_png, load_image, resize_max_side

RNG_SEED = 1234


def _rgb_array(h: int = 40, w: int = 50, seed: int = RNG_SEED) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _save(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _assert_rgb(a: np.ndarray, shape: tuple[int, int]) -> None:
    assert isinstance(a, np.ndarray)
    assert a.dtype == np.uint8
    assert a.shape == (*shape, 3)
    assert a.flags.c_contiguous


# ---------------------------------------------------------------- good inputs


def test_real_jpeg_path_bytes_and_pil_agree(lfw_dir: Path) -> None:
    path = lfw_dir / "George_W_Bush" / "George_W_Bush_0001.jpg"
    from_path = load_image(path)
    _assert_rgb(from_path, (250, 250))
    assert np.array_equal(load_image(str(path)), from_path)
    assert np.array_equal(load_image(path.read_bytes()), from_path)
    assert np.array_equal(load_image(Image.open(path)), from_path)
    assert from_path.std() > 10  # a real photo, not a blank decode


def test_orl_pgm_and_yale_gif_without_extension(data_dir: Path) -> None:
    orl = load_image(data_dir / "orl_faces" / "s1" / "1.pgm")
    _assert_rgb(orl, (112, 92))
    yale = load_image(data_dir / "yalefaces" / "subject01.happy")
    _assert_rgb(yale, (243, 320))
    for grey in (orl, yale):  # grey sources: three equal channels
        assert np.array_equal(grey[:, :, 0], grey[:, :, 1])
        assert np.array_equal(grey[:, :, 0], grey[:, :, 2])
    with Image.open(data_dir / "orl_faces" / "s1" / "1.pgm") as pgm:
        assert np.array_equal(orl[:, :, 0], np.asarray(pgm.convert("L")))


def test_png_round_trip_is_lossless() -> None:
    a = _rgb_array()
    data = encode_png(a)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert np.array_equal(decode_png(data), a)


def test_grey_mode_l_and_1() -> None:
    grey = np.arange(40 * 50, dtype=np.uint32).reshape(40, 50) % 256
    out = load_image(_save(Image.fromarray(grey.astype(np.uint8), "L"), "PNG"))
    _assert_rgb(out, (40, 50))
    for c in range(3):
        assert np.array_equal(out[:, :, c], grey.astype(np.uint8))
    bits = Image.fromarray((grey % 2).astype(bool))
    assert bits.mode == "1"
    out1 = load_image(_save(bits, "PNG"))
    assert np.array_equal(out1[:, :, 1], np.where(grey % 2 == 1, 255, 0).astype(np.uint8))


def test_palette_image() -> None:
    img = Image.new("P", (4, 3))
    img.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    img.putdata([0, 1, 2, 0, 1, 2, 0, 1, 2, 2, 2, 2])
    out = load_image(_save(img, "PNG"))
    _assert_rgb(out, (3, 4))
    assert out[0, 0].tolist() == [255, 0, 0]
    assert out[0, 1].tolist() == [0, 255, 0]
    assert out[2, 3].tolist() == [0, 0, 255]


def test_palette_with_transparency_goes_onto_white() -> None:
    img = Image.new("P", (2, 1))
    img.putpalette([10, 20, 30, 200, 100, 50] + [0] * (256 * 3 - 6))
    img.putdata([0, 1])
    out = load_image(_save(img, "PNG", transparency=0))
    assert out[0, 0].tolist() == [255, 255, 255]  # index 0 is fully transparent
    assert out[0, 1].tolist() == [200, 100, 50]


def test_rgba_and_la_are_composited_onto_white() -> None:
    rgba = np.zeros((2, 3, 4), dtype=np.uint8)
    rgba[..., :3] = (20, 40, 60)
    rgba[0, :, 3] = 255  # opaque row
    rgba[1, 0, 3] = 0  # transparent pixel
    rgba[1, 1, 3] = 128  # half
    rgba[1, 2, 3] = 255
    out = load_image(_save(Image.fromarray(rgba, "RGBA"), "PNG"))
    _assert_rgb(out, (2, 3))
    assert out[0, 0].tolist() == [20, 40, 60]
    assert out[1, 0].tolist() == [255, 255, 255]
    half = out[1, 1].astype(int)
    for got, colour in zip(half, (20, 40, 60), strict=True):  # alpha blend, brute force
        expected = colour * 128 / 255 + 255 * (1 - 128 / 255)
        assert abs(got - expected) <= 1.0
    la = Image.fromarray(rgba[..., [0, 3]], "LA")
    out_la = load_image(_save(la, "PNG"))
    assert out_la[1, 0].tolist() == [255, 255, 255]
    assert out_la[0, 0].tolist() == [20, 20, 20]


def test_cmyk_tiff_and_cmyk_jpeg() -> None:
    cmyk = Image.new("CMYK", (3, 2), (255, 0, 0, 0))  # pure cyan
    out = load_image(_save(cmyk, "TIFF"))
    _assert_rgb(out, (2, 3))
    assert out[0, 0].tolist() == [0, 255, 255]
    out_jpeg = load_image(_save(Image.new("CMYK", (16, 16), (0, 255, 0, 0)), "JPEG", quality=95))
    _assert_rgb(out_jpeg, (16, 16))
    r, g, b = out_jpeg[8, 8].astype(int)  # magenta, up to JPEG loss
    assert r > 200 and g < 60 and b > 200


def test_16_bit_grey_png_is_rescaled_by_its_range() -> None:
    ramp = np.linspace(1000, 61000, 7 * 9).reshape(7, 9).astype(np.uint16)
    img = Image.fromarray(ramp)
    data = _save(img, "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    out = load_image(data)
    _assert_rgb(out, (7, 9))
    grey = out[:, :, 0].astype(int)
    assert grey.min() == 0 and grey.max() == 255
    expected = np.round((ramp.astype(float) - 1000) * 255 / 60000)  # brute-force the documented rescale
    assert np.abs(grey - expected).max() <= 1
    assert np.all(np.diff(grey.ravel()) >= 0)  # monotone, not wrapped around


def test_float_tiff_mode_f() -> None:
    f = np.linspace(-1.0, 3.0, 12, dtype=np.float32).reshape(3, 4)
    out = load_image(_save(Image.fromarray(f, "F"), "TIFF"))
    _assert_rgb(out, (3, 4))
    assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255


@pytest.mark.parametrize(
    ("orientation", "shape", "corner"),
    [
        (1, (40, 60), (slice(0, 8), slice(0, 8))),  # as stored: marker top-left
        (3, (40, 60), (slice(-8, None), slice(-8, None))),  # 180°: bottom-right
        (6, (60, 40), (slice(0, 8), slice(-8, None))),  # rotate 90° clockwise: top-right
        (8, (60, 40), (slice(-8, None), slice(0, 8))),  # rotate 90° counter-clockwise: bottom-left
    ],
)
def test_exif_orientation_is_applied(
    tmp_path: Path, orientation: int, shape: tuple[int, int], corner: tuple[slice, slice]
) -> None:
    stored = np.full((40, 60, 3), 255, dtype=np.uint8)  # W=60, H=40 as stored in the file
    stored[:16, :16] = (255, 0, 0)  # red marker in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "rotated.jpg"
    Image.fromarray(stored).save(path, format="JPEG", quality=95, exif=exif.tobytes())
    out = load_image(path)
    _assert_rgb(out, shape)
    patch = out[corner].astype(int)
    assert patch[..., 0].mean() > 200 and patch[..., 1].mean() < 60 and patch[..., 2].mean() < 60
    white = out[shape[0] // 2 - 4 : shape[0] // 2 + 4, shape[1] // 2 - 4 : shape[1] // 2 + 4]
    assert white.min() > 200  # the rest stays white


# ---------------------------------------------------------------- numpy / PIL inputs


def test_array_inputs_grey_single_channel_rgba_float_int_bool() -> None:
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    for a in (grey, grey[:, :, None]):
        out = load_image(a)
        _assert_rgb(out, (3, 4))
        assert np.array_equal(out[:, :, 2], grey)
    rgba = np.zeros((3, 4, 4), dtype=np.uint8)
    rgba[..., 3] = 0
    assert load_image(rgba).min() == 255  # fully transparent -> white
    unit = np.full((3, 4, 3), 0.5, dtype=np.float32)
    assert np.all(load_image(unit) == 128)
    ints = np.array([[10, 20], [30, 40]])  # numpy's default int64: 8-bit values, taken as they are
    assert load_image(ints)[:, :, 0].tolist() == [[10, 20], [30, 40]]
    mask = np.array([[True, False]])
    assert load_image(mask)[0, :, 0].tolist() == [255, 0]


def test_output_is_a_new_array() -> None:
    a = _rgb_array()
    out = load_image(a)
    assert np.array_equal(out, a)
    out[:] = 0
    assert a.any()  # the caller's array is untouched


@pytest.mark.parametrize(
    "bad",
    [np.zeros((4,), np.uint8), np.zeros((0, 5, 3), np.uint8), np.zeros((4, 4, 2), np.uint8)],
    ids=["1d", "empty", "2-channels"],
)
def test_bad_arrays(bad: np.ndarray) -> None:
    with pytest.raises(InvalidImage):
        load_image(bad)


def test_unsupported_input_type() -> None:
    with pytest.raises(InvalidImage, match="unsupported input type"):
        load_image(12345)  # type: ignore[arg-type]


def test_lazily_opened_truncated_pil_image(lfw_dir: Path) -> None:
    data = (lfw_dir / "Tony_Blair" / "Tony_Blair_0001.jpg").read_bytes()
    img = Image.open(io.BytesIO(data[: len(data) // 3]))  # header reads fine, pixels do not
    with pytest.raises(InvalidImage, match="truncated"):
        load_image(img)


# ---------------------------------------------------------------- bad files


def test_truncated_jpeg(tmp_path: Path, lfw_dir: Path) -> None:
    data = (lfw_dir / "Colin_Powell" / "Colin_Powell_0001.jpg").read_bytes()
    path = tmp_path / "truncated.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidImage) as info:
        load_image(path)
    assert info.value.source == str(path)
    assert "truncated" in info.value.reason
    assert str(path) in str(info.value)


def test_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "noise.jpg"
    path.write_bytes(np.random.default_rng(RNG_SEED).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(InvalidImage, match="not an image"):
        load_image(path)
    with pytest.raises(InvalidImage, match="not an image"):
        load_image(path.read_bytes())


def test_empty_file_and_empty_bytes(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(InvalidImage, match="empty"):
        load_image(path)
    with pytest.raises(InvalidImage, match="0 bytes"):
        load_image(b"")


def test_text_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture\n" * 20)
    with pytest.raises(InvalidImage, match="not an image"):
        load_image(path)


def test_directory_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidImage, match="directory"):
        load_image(tmp_path)
    with pytest.raises(InvalidImage, match="not found") as info:
        load_image(tmp_path / "missing.jpg")
    assert info.value.source.endswith("missing.jpg")


def test_pixel_cap_on_a_real_image(lfw_dir: Path) -> None:
    path = lfw_dir / "George_W_Bush" / "George_W_Bush_0001.jpg"
    small = ImageLimits(max_pixels=250 * 250 - 1)
    for src in (path, path.read_bytes(), Image.open(path), load_image(path)):
        with pytest.raises(InvalidImage, match="too large"):
            load_image(src, limits=small)
    assert load_image(path, limits=ImageLimits(max_pixels=250 * 250)).shape == (250, 250, 3)


def test_byte_cap(lfw_dir: Path) -> None:
    path = lfw_dir / "George_W_Bush" / "George_W_Bush_0001.jpg"
    limits = ImageLimits(max_bytes=path.stat().st_size - 1)
    with pytest.raises(InvalidImage, match="too large"):
        load_image(path, limits=limits)
    with pytest.raises(InvalidImage, match="too large"):
        load_image(path.read_bytes(), limits=limits)


def _png_claiming_size(width: int, height: int) -> bytes:
    """A tiny valid-looking PNG whose header claims ``width`` x ``height`` (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    raw = zlib.compress(b"\x00" + b"\x00" * 3)  # one row of one pixel: far too little data

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def test_decompression_bomb_is_refused_from_the_header() -> None:
    bomb = _png_claiming_size(100_000, 100_000)  # 10^10 pixels announced in 60 bytes
    assert len(bomb) < 100
    with pytest.raises(InvalidImage, match="too large"):
        load_image(bomb)
    with pytest.raises(InvalidImage, match="too large"):
        load_image(_png_claiming_size(300, 300), limits=ImageLimits(max_pixels=300 * 300 - 1))


def test_corrupted_bytes_never_escape_as_raw_errors(lfw_dir: Path) -> None:
    """Seeded damage (truncation, flipped bytes) of real JPEG/PNG/GIF data: decoded or InvalidImage."""
    rng = np.random.default_rng(RNG_SEED)
    base = load_image(lfw_dir / "Tony_Blair" / "Tony_Blair_0001.jpg")[::4, ::4]
    sources = {
        fmt: _save(Image.fromarray(np.ascontiguousarray(base)), fmt) for fmt in ("JPEG", "PNG", "GIF", "BMP")
    }
    failures = 0
    for data in sources.values():
        for _ in range(25):
            damaged = bytearray(data)
            if rng.random() < 0.5:
                damaged = damaged[: int(rng.integers(1, len(damaged)))]
            else:
                for pos in rng.integers(0, len(damaged), size=8):
                    damaged[pos] = int(rng.integers(0, 256))
            try:
                out = load_image(bytes(damaged))
            except InvalidImage:
                failures += 1
                continue
            assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    assert failures > 0  # the damage was real


# ---------------------------------------------------------------- resizing


def test_resize_max_side() -> None:
    a = _rgb_array(100, 300)
    same, f = resize_max_side(a, 300)
    assert same is a and f == 1.0
    small, f = resize_max_side(a, 150)
    assert small.shape == (50, 150, 3) and small.dtype == np.uint8
    assert f == pytest.approx(2.0)
