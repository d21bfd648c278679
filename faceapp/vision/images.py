"""One loader for every image input: path, bytes, PIL image or numpy array -> RGB uint8 (H, W, 3).

Applied once, at the edge:
- EXIF orientation (``ImageOps.exif_transpose``);
- grey (L, 1), palette (P), LA/RGBA (alpha composited onto white), CMYK, YCbCr, LAB, HSV,
  16/32-bit integer (I;16*, I) and float (F) images are converted to 8-bit RGB
  (high-bit-depth images are rescaled by their actual range, not clipped; a numpy array of
  a generic integer type other than uint16 whose values all lie in [0, 255] is taken as 8-bit);
- a pixel-count cap against decompression bombs, checked from the header before decoding.

Every failure raises :class:`~faceapp.errors.InvalidImage` naming the source and the reason.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from faceapp.config import ImageLimits
from faceapp.errors import InvalidImage

ImageInput = Union[str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray]  # noqa: UP007
"""Anything :func:`load_image` accepts."""

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".pgm", ".ppm", ".tif", ".tiff", ".webp"}
)
"""File endings taken as images when scanning folders (files without an ending are tried too)."""


def describe_source(src: object) -> str:
    """A short human-readable name for an image input (file name, or its kind)."""
    if isinstance(src, str | os.PathLike):
        return os.fspath(src)
    if isinstance(src, bytes | bytearray | memoryview):
        return f"<{len(src)} bytes>"
    if isinstance(src, Image.Image):
        return f"<PIL image {src.mode} {src.size[0]}x{src.size[1]}>"
    if isinstance(src, np.ndarray):
        return f"<array {src.dtype} {tuple(src.shape)}>"
    return f"<{type(src).__name__}>"


def load_image(src: ImageInput, *, limits: ImageLimits = ImageLimits()) -> np.ndarray:
    """Decode ``src`` into an RGB image.

    Returns:
        (H, W, 3) uint8, C-contiguous, a new array (the input is never modified).
    Raises:
        InvalidImage: unreadable, truncated, empty, not an image, or over ``limits``.
    """
    name = describe_source(src)
    if isinstance(src, np.ndarray):
        return _array_to_rgb(src, name, limits)
    if isinstance(src, Image.Image):
        _check_pixels(src.size, name, limits)
        try:
            src.load()  # a lazily opened (Image.open) image decodes here: truncated data fails now
        except OSError as err:
            raise InvalidImage(name, f"corrupt or truncated image ({err})") from None
        except (ValueError, SyntaxError, EOFError, struct.error, MemoryError) as err:
            raise InvalidImage(name, f"cannot decode image ({type(err).__name__}: {err})") from None
        return _pil_to_rgb(src, name, limits)
    if isinstance(src, str | os.PathLike):
        path = Path(src)
        try:
            if path.is_dir():
                raise InvalidImage(name, "is a directory, not an image file")
            size = path.stat().st_size
        except FileNotFoundError:
            raise InvalidImage(name, "file not found") from None
        except PermissionError:
            raise InvalidImage(name, "permission denied") from None
        except OSError as err:
            raise InvalidImage(name, f"cannot read file ({err.strerror or err})") from None
        if size == 0:
            raise InvalidImage(name, "file is empty")
        if size > limits.max_bytes:
            raise InvalidImage(name, f"file is too large ({size} bytes > {limits.max_bytes})")
        try:
            data = path.read_bytes()
        except OSError as err:
            raise InvalidImage(name, f"cannot read file ({err.strerror or err})") from None
    elif isinstance(src, bytes | bytearray | memoryview):
        data = bytes(src)
        if not data:
            raise InvalidImage(name, "no data (0 bytes)")
        if len(data) > limits.max_bytes:
            raise InvalidImage(name, f"data is too large ({len(data)} bytes > {limits.max_bytes})")
    else:
        raise InvalidImage(name, f"unsupported input type {type(src).__name__}")
    return _decode_bytes(data, name, limits)


def _decode_bytes(data: bytes, name: str, limits: ImageLimits) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            _check_pixels(img.size, name, limits)
            img.load()  # force the full decode now: truncated files fail here
    except InvalidImage:
        raise
    except UnidentifiedImageError:
        raise InvalidImage(name, "not an image (unrecognised format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidImage(name, "image is too large (decompression bomb guard)") from None
    except OSError as err:
        raise InvalidImage(name, f"corrupt or truncated image ({err})") from None
    except (ValueError, SyntaxError, EOFError, struct.error, MemoryError) as err:
        raise InvalidImage(name, f"cannot decode image ({type(err).__name__}: {err})") from None
    return _pil_to_rgb(img, name, limits)


def _check_pixels(size: tuple[int, int], name: str, limits: ImageLimits) -> None:
    w, h = size
    if w <= 0 or h <= 0:
        raise InvalidImage(name, f"image has no pixels ({w}x{h})")
    if w * h > limits.max_pixels:
        raise InvalidImage(name, f"image is too large ({w}x{h} = {w * h} pixels > {limits.max_pixels})")


def _pil_to_rgb(img: Image.Image, name: str, limits: ImageLimits) -> np.ndarray:
    _check_pixels(img.size, name, limits)
    try:
        img = ImageOps.exif_transpose(img) or img
    except Exception as err:  # malformed EXIF must not make a good image unreadable
        # Pillow raises several types on broken EXIF blocks; orientation is then unknown.
        del err
    mode = img.mode
    if mode == "RGB":
        out = np.asarray(img, dtype=np.uint8)
    elif mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        out = _high_depth_to_rgb(np.asarray(img))
    elif mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        out = np.asarray(Image.alpha_composite(white, rgba).convert("RGB"), dtype=np.uint8)
    else:  # L, 1, P, CMYK, YCbCr, LAB, HSV, RGBX, ...
        try:
            out = np.asarray(img.convert("RGB"), dtype=np.uint8)
        except (ValueError, OSError) as err:
            raise InvalidImage(name, f"unsupported colour mode {mode} ({err})") from None
    return np.ascontiguousarray(out)


def _high_depth_to_rgb(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    finite = np.isfinite(a)
    if not finite.any():
        a = np.zeros(a.shape, dtype=np.float64)
    lo, hi = (float(a[finite].min()), float(a[finite].max())) if finite.any() else (0.0, 0.0)
    a = np.where(finite, a, lo)
    if hi <= lo:
        scaled = np.zeros(a.shape, dtype=np.uint8)
    else:
        scaled = np.round((a - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    if scaled.ndim == 2:
        scaled = np.repeat(scaled[:, :, None], 3, axis=2)
    return scaled


def _array_to_rgb(a: np.ndarray, name: str, limits: ImageLimits) -> np.ndarray:
    if a.ndim not in (2, 3) or a.size == 0:
        raise InvalidImage(name, "array must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)")
    h, w = a.shape[:2]
    _check_pixels((w, h), name, limits)
    if a.ndim == 3 and a.shape[2] not in (1, 3, 4):
        raise InvalidImage(name, f"array has {a.shape[2]} channels (need 1, 3 or 4)")
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif a.dtype != np.uint8:
        if np.issubdtype(a.dtype, np.integer) and a.dtype != np.uint16 and a.min() >= 0 and a.max() <= 255:
            a = a.astype(np.uint8)  # 8-bit values in a generic integer array (e.g. int64): as they are
        elif np.issubdtype(a.dtype, np.floating) and np.nanmax(a) <= 1.0 and np.nanmin(a) >= 0.0:
            a = np.round(np.nan_to_num(a) * 255.0).astype(np.uint8)
        elif np.issubdtype(a.dtype, np.number):
            a = _high_depth_to_rgb(a if a.ndim == 2 or a.shape[2] != 1 else a[:, :, 0])
        else:
            raise InvalidImage(name, f"unsupported array dtype {a.dtype}")
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    elif a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    elif a.shape[2] == 4:
        alpha = a[:, :, 3:4].astype(np.float32) / 255.0
        rgb = a[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
        a = np.round(rgb).astype(np.uint8)
    return np.array(a, dtype=np.uint8, copy=True, order="C")


def encode_png(image: np.ndarray) -> bytes:
    """(H, W, 3) uint8 RGB -> PNG bytes (lossless; used to store aligned crops)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8), "RGB").save(buf, format="PNG")
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes -> (H, W, 3) uint8 RGB (raises InvalidImage on corrupt data)."""
    return load_image(data)


def resize_max_side(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Downscale (H, W, 3) uint8 so that max(H, W) <= max_side.

    Returns the (possibly same) image and the factor f such that original = resized * f.
    """
    h, w = image.shape[:2]
    side = max(h, w)
    if side <= max_side:
        return image, 1.0
    scale = max_side / side
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    out = np.asarray(Image.fromarray(image).resize(new, Image.BILINEAR))
    return out, side / max_side
