"""ROC curve and score histograms as PNG files, drawn with Pillow (no plotting dependency)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

W, H, PAD = 640, 480, 60


def _frame(title: str, xlabel: str, ylabel: str) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    d.rectangle([PAD, PAD // 2, W - PAD // 2, H - PAD], outline="black")
    d.text((PAD, 8), title, fill="black")
    d.text((W // 2 - 40, H - PAD + 28), xlabel, fill="black")
    d.text((4, H // 2), ylabel, fill="black")
    return img, d


def _xy(x: float, y: float) -> tuple[float, float]:
    return PAD + x * (W - 1.5 * PAD), (H - PAD) - y * (H - 1.5 * PAD)


def plot_roc(far: np.ndarray, tar: np.ndarray, path: str | Path, title: str = "ROC") -> None:
    """ROC with a logarithmic FAR axis from 1e-4 to 1 (TAR linear), saved as PNG."""
    img, d = _frame(title, "false accept rate (log)", "TAR")
    lo = -4.0
    lx = (np.log10(np.clip(far, 10**lo, 1.0)) - lo) / -lo
    pts = [_xy(float(x), float(y)) for x, y in zip(lx, tar, strict=True)]
    if len(pts) > 1:
        d.line(pts, fill=(200, 30, 30), width=2)
    for e in range(int(lo), 1):
        x, y = _xy((e - lo) / -lo, 0)
        d.line([x, y, x, y + 5], fill="black")
        d.text((x - 12, y + 8), f"1e{e}", fill="black")
    for t in (0.0, 0.25, 0.5, 0.75, 1.0):
        x, y = _xy(0, t)
        d.text((x - 34, y - 6), f"{t:.2f}", fill="black")
    img.save(path)


def plot_histograms(
    scores: np.ndarray,
    same: np.ndarray,
    path: str | Path,
    threshold: float | None = None,
    title: str = "scores",
) -> None:
    """Genuine (green) and impostor (red) score histograms, with the threshold as a blue line."""
    img, d = _frame(title, "score (higher = more alike)", "share")
    lo, hi = float(np.min(scores)), float(np.max(scores))
    if hi <= lo:
        hi = lo + 1.0
    bins = np.linspace(lo, hi, 41)
    hg, _ = np.histogram(scores[same], bins=bins)
    hi_, _ = np.histogram(scores[~same], bins=bins)
    top = max(
        1.0, float(max(hg.max(initial=0) / max(1, same.sum()), hi_.max(initial=0) / max(1, (~same).sum())))
    )
    for counts, total, colour in ((hg, same.sum(), (30, 160, 30)), (hi_, (~same).sum(), (200, 30, 30))):
        share = counts / max(1, total) / top
        pts = [_xy(i / 40, float(v)) for i, v in enumerate(share)]
        d.line(pts, fill=colour, width=2)
    if threshold is not None:
        x, _ = _xy((threshold - lo) / (hi - lo), 0)
        d.line([x, PAD // 2, x, H - PAD], fill=(30, 30, 200), width=1)
    d.text((PAD, H - PAD + 8), f"{lo:.2f}", fill="black")
    d.text((W - PAD, H - PAD + 8), f"{hi:.2f}", fill="black")
    img.save(path)
