"""Generated presentation attacks for calibration and tests (never written into the repo).

* **print**: a photo printed on paper (lower contrast and saturation, a warm paper tint,
  paper grain, a white margin) held in front of the camera: laid on a background scene and
  moved by a smooth random homography (a hand's slow sway, tilt and drift);
* **screen**: the photo shown on a phone / tablet (display gamma, a bluish white point,
  a black bezel) and re-filmed: moiré from the screen's pixel grid beating with the
  camera's sensor, moved the same way;
* **replay**: frames of a genuine clip played on such a screen (the video's own 3-D head
  motion inside a flat, moving display).

Every clip then goes through a camera model: slight defocus blur, sensor noise and JPEG
compression. All randomness comes from the ``numpy.random.Generator`` passed in.
Frames are (H, W, 3) uint8 RGB.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageFilter

from faceapp.vision.liveness.passive import fit_homography

FRAME_SIZE = (640, 480)  # (width, height) of generated clips


def background(rng: np.random.Generator, size: tuple[int, int] = FRAME_SIZE) -> np.ndarray:
    """A room-like scene: a dim, mostly unsaturated colour field (walls, shading), a few
    rectangles (furniture, doors), texture at a few pixels' scale."""
    w, h = size
    base = rng.uniform(60, 200) + rng.normal(0, 15, size=3)
    coarse = np.clip(base + rng.normal(0, 25, size=(4, 5, 1)) + rng.normal(0, 8, size=(4, 5, 3)), 0, 255)
    img = Image.fromarray(coarse.astype(np.uint8)).resize((w, h), Image.BICUBIC)
    arr = np.asarray(img, dtype=np.float32)
    for _ in range(int(rng.integers(1, 4))):
        x0, y0 = int(rng.integers(0, w - 40)), int(rng.integers(0, h - 40))
        x1, y1 = int(rng.integers(x0 + 20, w)), int(rng.integers(y0 + 20, h))
        tone = rng.uniform(30, 230) + rng.normal(0, 20, size=3)
        arr[y0:y1, x0:x1] = arr[y0:y1, x0:x1] * 0.4 + tone * 0.6
    fine = rng.normal(0, 1, size=(h // 4 + 1, w // 4 + 1)).astype(np.float32)
    fine_up = np.asarray(Image.fromarray(fine, mode="F").resize((w, h), Image.BICUBIC))
    arr += rng.uniform(3, 10) * fine_up[..., None]
    out = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.6))
    return np.asarray(out)


def printed(photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The photo as a print: contrast compressed into the paper's range, desaturated,
    warm-tinted, grainy, with a white margin."""
    p = photo.astype(np.float32)
    grey = p @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    p = p * (1 - rng.uniform(0.15, 0.4)) + grey[..., None] * rng.uniform(0.15, 0.4)
    lo, hi = rng.uniform(20, 55), rng.uniform(190, 235)
    p = lo + p * (hi - lo) / 255.0
    p *= np.array([1.0, rng.uniform(0.95, 1.0), rng.uniform(0.85, 0.95)], dtype=np.float32)
    h, w = p.shape[:2]
    grain = rng.normal(0, 1, size=(h // 2 + 1, w // 2 + 1)).astype(np.float32)
    grain = np.asarray(Image.fromarray(grain, mode="F").resize((w, h), Image.BILINEAR))
    p *= 1 + rng.uniform(0.02, 0.06) * grain[..., None]
    m = max(2, int(0.06 * max(h, w)))
    sheet = np.full((h + 2 * m, w + 2 * m, 3), rng.uniform(225, 250), dtype=np.float32)
    sheet[m:-m, m:-m] = p
    return np.clip(sheet, 0, 255).astype(np.uint8)


def on_screen(content: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The content as a display shows it: gamma, brightness, bluish white point, a black bezel."""
    c = content.astype(np.float32) / 255.0
    c = c ** rng.uniform(0.6, 1.5)
    c = c * rng.uniform(0.85, 1.1) + rng.uniform(0.0, 0.08)
    c *= np.array([rng.uniform(0.88, 0.97), rng.uniform(0.95, 1.0), 1.0], dtype=np.float32)
    h, w = c.shape[:2]
    m = max(3, int(rng.uniform(0.05, 0.12) * max(h, w)))
    bezel = np.full((h + 2 * m, w + 2 * m, 3), rng.uniform(0.02, 0.12), dtype=np.float32)
    bezel[m:-m, m:-m] = c
    return np.clip(bezel * 255, 0, 255).astype(np.uint8)


def hand_motion(rng: np.random.Generator, n: int, sheet_size: tuple[int, int],
                frame_size: tuple[int, int] = FRAME_SIZE, fps: float = 30.0, *,
                max_rot_deg: float = 10.0, height: tuple[float, float] = (0.45, 0.95)) -> list[np.ndarray]:
    """``n`` (3, 3) homographies (sheet pixels -> frame pixels) of a sheet held in a hand:
    a random placement (the sheet's height a fraction ``height`` of the frame's), then slow
    sinusoidal sway of rotation (up to ``max_rot_deg``), tilt (perspective), scale and
    position, each with its own random period (1.5-5 s) and phase."""
    sw, sh = sheet_size
    fw, fh = frame_size
    scale = rng.uniform(*height) * fh / sh
    cx = fw / 2 + rng.uniform(-0.15, 0.15) * fw
    cy = fh / 2 + rng.uniform(-0.1, 0.1) * fh
    src = np.array([[0, 0], [sw, 0], [sw, sh], [0, sh]], dtype=np.float64)

    def wave(amp: float) -> np.ndarray:
        period = rng.uniform(1.5, 5.0)
        phase = rng.uniform(0, 2 * math.pi)
        t = np.arange(n) / fps
        return amp * np.sin(2 * math.pi * t / period + phase) + rng.uniform(-amp, amp)

    rot = wave(math.radians(rng.uniform(0.2, 1.0) * max_rot_deg))
    tilt_x, tilt_y = wave(rng.uniform(0.02, 0.12)), wave(rng.uniform(0.02, 0.12))
    zoom = 1 + wave(rng.uniform(0.02, 0.08))
    dx, dy = wave(rng.uniform(5, 30)), wave(rng.uniform(5, 20))
    out = []
    for i in range(n):
        s = scale * zoom[i]
        half = np.array([sw, sh]) * s / 2
        # tilt: one side of the sheet nearer the camera (larger) than the other
        corners = np.array([
            [-half[0] * (1 - tilt_y[i]), -half[1] * (1 - tilt_x[i])],
            [half[0] * (1 + tilt_y[i]), -half[1] * (1 - tilt_x[i])],
            [half[0] * (1 + tilt_y[i]), half[1] * (1 + tilt_x[i])],
            [-half[0] * (1 - tilt_y[i]), half[1] * (1 + tilt_x[i])],
        ])
        c, s_ = math.cos(rot[i]), math.sin(rot[i])
        corners = corners @ np.array([[c, -s_], [s_, c]]).T + [cx + dx[i], cy + dy[i]]
        out.append(fit_homography(src, corners))
    return out


def composite(scene: np.ndarray, sheet: np.ndarray, hmat: np.ndarray, *,
              moire: tuple[float, float, float, float] | None = None) -> np.ndarray:
    """Paint ``sheet`` into ``scene`` through ``hmat`` (sheet -> scene pixels).

    Args:
        moire: optional (fx, fy, amplitude, phase): a luminance interference pattern
            ``1 + amplitude·cos(2π(fx·x + fy·y) + phase)`` in scene pixels over the sheet.
    """
    h, w = scene.shape[:2]
    inv = np.linalg.inv(hmat)
    inv = inv / inv[2, 2]
    coeffs = tuple(float(v) for v in inv.reshape(-1)[:8])
    warped = np.asarray(Image.fromarray(sheet).transform((w, h), Image.PERSPECTIVE, coeffs, Image.BILINEAR))
    mask_img = Image.new("L", (sheet.shape[1], sheet.shape[0]), 255)
    mask = np.asarray(mask_img.transform((w, h), Image.PERSPECTIVE, coeffs, Image.BILINEAR),
                      dtype=np.float32)[..., None] / 255.0
    layer = warped.astype(np.float32)
    if moire is not None:
        fx, fy, amp, phase = moire
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        layer *= (1 + amp * np.cos(2 * math.pi * (fx * xx + fy * yy) + phase))[..., None]
    out = scene.astype(np.float32) * (1 - mask) + layer * mask
    return np.clip(out, 0, 255).astype(np.uint8)


def camera(frame: np.ndarray, rng: np.random.Generator, blur: float, noise: float,
           quality: int) -> np.ndarray:
    """Defocus blur (Gaussian radius ``blur`` px), sensor noise (σ ``noise``), JPEG at ``quality``."""
    img = Image.fromarray(frame)
    if blur > 0:
        img = img.filter(ImageFilter.GaussianBlur(blur))
    arr = np.asarray(img, dtype=np.float32) + rng.normal(0, noise, size=frame.shape)
    buf = io.BytesIO()
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def _camera_params(rng: np.random.Generator) -> tuple[float, float, int]:
    return float(rng.uniform(0.3, 1.2)), float(rng.uniform(1.5, 4.0)), int(rng.integers(70, 95))


def _moire(rng: np.random.Generator) -> tuple[float, float, float, float] | None:
    if rng.uniform() < 0.3:
        return None  # moiré depends on distance and focus: often invisible
    f = rng.uniform(0.12, 0.4)
    a = rng.uniform(0, math.pi)
    amp, phase = float(rng.uniform(0.02, 0.08)), float(rng.uniform(0, 2 * math.pi))
    return f * math.cos(a), f * math.sin(a), amp, phase


def print_attack(photo: np.ndarray, rng: np.random.Generator, n_frames: int = 30,
                 size: tuple[int, int] = FRAME_SIZE) -> list[np.ndarray]:
    """A clip of ``photo`` printed and held in a hand (see the module docstring)."""
    sheet = printed(photo, rng)
    scene = background(rng, size)
    cam = _camera_params(rng)
    hs = hand_motion(rng, n_frames, (sheet.shape[1], sheet.shape[0]), size)
    return [camera(composite(scene, sheet, h), rng, *cam) for h in hs]


def screen_attack(photo: np.ndarray, rng: np.random.Generator, n_frames: int = 30,
                  size: tuple[int, int] = FRAME_SIZE) -> list[np.ndarray]:
    """A clip of ``photo`` on a handheld screen, re-filmed with moiré."""
    disp = on_screen(photo, rng)
    scene = background(rng, size)
    cam = _camera_params(rng)
    moire = _moire(rng)
    hs = hand_motion(rng, n_frames, (disp.shape[1], disp.shape[0]), size, max_rot_deg=8.0)
    return [camera(composite(scene, disp, h, moire=moire), rng, *cam) for h in hs]


def replay_attack(frames: Sequence[np.ndarray], rng: np.random.Generator,
                  size: tuple[int, int] = FRAME_SIZE) -> list[np.ndarray]:
    """A genuine clip replayed on a screen held in front of the camera (one output frame
    per input frame)."""
    if not frames:
        return []
    scene = background(rng, size)
    cam = _camera_params(rng)
    moire = _moire(rng)
    h0, w0 = frames[0].shape[:2]
    screen_rng_seed = int(rng.integers(0, 2**31))  # the same display settings on every frame
    disp_size = on_screen(frames[0], np.random.default_rng(screen_rng_seed)).shape
    # a monitor or a laptop on a desk, filling much of the view (little rotation)
    hs = hand_motion(rng, len(frames), (disp_size[1], disp_size[0]), size, max_rot_deg=3.0, height=(0.7, 1.3))
    out = []
    for f, h in zip(frames, hs, strict=True):
        disp = on_screen(f[:h0, :w0], np.random.default_rng(screen_rng_seed))
        out.append(camera(composite(scene, disp, h, moire=moire), rng, *cam))
    return out

