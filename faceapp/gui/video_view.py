"""A live preview widget: the latest frame, scaled to fit, with face boxes and labels on top."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QImage, QMouseEvent, QPainter, QPaintEvent, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from faceapp.gui.camera import rgb_to_qimage

Box = tuple[float, float, float, float]

# colours as "#rrggbb" (immutable, so they can be dataclass defaults)
GOOD = "#2ecc71"
BAD = "#e74c3c"
NEUTRAL = "#f1c40f"
INFO = "#3498db"


@dataclass(frozen=True)
class Prompt:
    """A liveness challenge prompt drawn over the video: ``text``, an ``arrow``
    (``"left"``, ``"right"``, ``"up"``, ``"down"``, ``"blink"`` or ``""``; directions as the
    person sees them, so "left" points to the viewer's right in an unmirrored image),
    the progress ``done`` of ``total`` actions and the seconds left (NaN: no countdown)."""

    text: str
    arrow: str = ""
    done: int = 0
    total: int = 0
    seconds_left: float = float("nan")


@dataclass(frozen=True)
class Overlay:
    """A box drawn over the preview. ``box`` is (x1, y1, x2, y2) in frame pixels."""

    box: Box
    label: str = ""
    color: str = NEUTRAL
    selected: bool = False


class VideoView(QWidget):
    """Shows ``(H, W, 3) uint8`` RGB frames with overlays; emits ``faceClicked(index)``
    when the user clicks inside an overlay box (index into the current overlay list)."""

    faceClicked = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._image: QImage | None = None
        self._frame_size: tuple[int, int] = (0, 0)  # (W, H)
        self._overlays: list[Overlay] = []
        self._banner = ""
        self._banner_color = NEUTRAL
        self._prompt: Prompt | None = None
        self._placeholder = "No video. Start the camera or pick a source in Settings."
        self.setMinimumSize(320, 200)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)

    def sizeHint(self) -> QSize:
        return QSize(640, 400)

    # state -----------------------------------------------------------------------
    def set_frame(self, frame: np.ndarray) -> None:
        """Show a new ``(H, W, 3) uint8`` RGB frame (copied)."""
        self._image = rgb_to_qimage(frame)
        self._frame_size = (self._image.width(), self._image.height())
        self.update()

    def clear(self) -> None:
        self._image = None
        self._overlays = []
        self.update()

    def has_frame(self) -> bool:
        return self._image is not None

    def set_overlays(self, overlays: list[Overlay]) -> None:
        self._overlays = list(overlays)
        self.update()

    def overlays(self) -> list[Overlay]:
        return list(self._overlays)

    def set_banner(self, text: str, color: str = NEUTRAL) -> None:
        """A line of guidance shown over the top of the picture ("" hides it)."""
        self._banner = text
        self._banner_color = color
        self.update()

    def banner(self) -> str:
        return self._banner

    def set_prompt(self, prompt: Prompt | None) -> None:
        """Show (or, with ``None``, hide) a challenge prompt over the video."""
        self._prompt = prompt
        self.setAccessibleDescription(prompt.text if prompt is not None else "")
        self.update()

    def prompt(self) -> Prompt | None:
        return self._prompt

    def set_placeholder(self, text: str) -> None:
        self._placeholder = text
        self.update()

    def placeholder(self) -> str:
        return self._placeholder

    # geometry --------------------------------------------------------------------
    def _image_rect(self) -> QRectF:
        w, h = self._frame_size
        if w <= 0 or h <= 0:
            return QRectF()
        scale = min(self.width() / w, self.height() / h)
        dw, dh = w * scale, h * scale
        return QRectF((self.width() - dw) / 2, (self.height() - dh) / 2, dw, dh)

    def _to_widget(self, box: Box) -> QRectF:
        target = self._image_rect()
        w, _ = self._frame_size
        s = target.width() / w if w else 1.0
        x1, y1, x2, y2 = box
        return QRectF(target.x() + x1 * s, target.y() + y1 * s, (x2 - x1) * s, (y2 - y1) * s)

    def overlay_at(self, pos: QPointF) -> int:
        """Index of the smallest overlay box containing widget point ``pos``, or -1."""
        best, best_area = -1, float("inf")
        for i, ov in enumerate(self._overlays):
            r = self._to_widget(ov.box)
            if r.contains(pos) and r.width() * r.height() < best_area:
                best, best_area = i, r.width() * r.height()
        return best

    def mousePressEvent(self, event: QMouseEvent) -> None:
        idx = self.overlay_at(event.position())
        if idx >= 0:
            self.faceClicked.emit(idx)
        super().mousePressEvent(event)

    # painting --------------------------------------------------------------------
    def paintEvent(self, _event: QPaintEvent) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.fillRect(self.rect(), QColor(24, 26, 30))
        if self._image is None:
            p.setPen(QColor(170, 170, 170))
            p.drawText(
                self.rect().adjusted(20, 20, -20, -20),
                Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap,
                self._placeholder,
            )
            p.end()
            return
        target = self._image_rect()
        p.drawImage(target, self._image)
        font = QFont(self.font())
        font.setPointSizeF(max(9.0, font.pointSizeF()))
        font.setBold(True)
        p.setFont(font)
        fm = p.fontMetrics()
        for ov in self._overlays:
            r = self._to_widget(ov.box)
            color = QColor(ov.color)
            pen = QPen(color, 4 if ov.selected else 2)
            p.setPen(pen)
            p.setBrush(Qt.BrushStyle.NoBrush)
            p.drawRect(r)
            if ov.label:
                tw, th = fm.horizontalAdvance(ov.label) + 10, fm.height() + 4
                ty = r.top() - th if r.top() - th >= target.top() else r.bottom()
                label_rect = QRectF(r.left() - 1, ty, tw, th)
                p.fillRect(label_rect, color)
                p.setPen(QColor(0, 0, 0))
                p.drawText(label_rect, Qt.AlignmentFlag.AlignCenter, ov.label)
        if self._banner:
            th = fm.height() + 12
            band = QRectF(target.left(), target.top(), target.width(), th)
            p.fillRect(band, QColor(0, 0, 0, 160))
            p.setPen(QColor(self._banner_color))
            p.drawText(band, Qt.AlignmentFlag.AlignCenter, self._banner)
        if self._prompt is not None:
            self._paint_prompt(p, target)
        p.end()

    def _paint_prompt(self, p: QPainter, target: QRectF) -> None:
        pr = self._prompt
        assert pr is not None
        fm = p.fontMetrics()
        band_h = fm.height() * 2 + 24
        band = QRectF(target.left(), target.bottom() - band_h, target.width(), band_h)
        p.fillRect(band, QColor(0, 0, 0, 170))
        # the arrow / eye icon, left of the text
        size = band_h - 16
        icon = QRectF(band.left() + 10, band.top() + 8, size, size)
        p.setPen(QPen(QColor(INFO), 3))
        p.setBrush(QColor(INFO))
        cx, cy, r = icon.center().x(), icon.center().y(), size / 2
        # the person's left is the viewer's right in an unmirrored camera image
        tips = {"left": (1, 0), "right": (-1, 0), "up": (0, -1), "down": (0, 1)}
        if pr.arrow in tips:
            dx, dy = tips[pr.arrow]
            px, py = -dy, dx  # perpendicular
            poly = [QPointF(cx + dx * r, cy + dy * r),
                    QPointF(cx - dx * r * 0.2 + px * r * 0.7, cy - dy * r * 0.2 + py * r * 0.7),
                    QPointF(cx - dx * r * 0.2 - px * r * 0.7, cy - dy * r * 0.2 - py * r * 0.7)]
            p.drawPolygon(poly)
            p.drawLine(QPointF(cx - dx * r * 0.2, cy - dy * r * 0.2), QPointF(cx - dx * r, cy - dy * r))
        elif pr.arrow == "blink":
            p.setBrush(Qt.BrushStyle.NoBrush)
            p.drawEllipse(QRectF(cx - r, cy - r * 0.45, 2 * r, r * 0.9))
            p.setBrush(QColor(INFO))
            p.drawEllipse(QRectF(cx - r * 0.3, cy - r * 0.3, r * 0.6, r * 0.6))
        text_rect = QRectF(icon.right() + 12, band.top() + 4, band.width() - size - 34, fm.height() + 8)
        p.setPen(QColor(255, 255, 255))
        p.drawText(text_rect, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, pr.text)
        # progress: one dot per action, filled when done; the countdown after it
        dot = fm.height() * 0.6
        y = text_rect.bottom() + 4
        for i in range(pr.total):
            rect = QRectF(text_rect.left() + i * (dot + 8), y + (fm.height() - dot) / 2, dot, dot)
            p.setPen(QPen(QColor(GOOD), 2))
            p.setBrush(QColor(GOOD) if i < pr.done else Qt.BrushStyle.NoBrush)
            p.drawEllipse(rect)
        if pr.seconds_left == pr.seconds_left:  # not NaN
            p.setPen(QColor(200, 200, 200))
            left = QRectF(text_rect.left() + pr.total * (dot + 8) + 8, y, 120, fm.height())
            p.drawText(left, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
                       f"{pr.seconds_left:.1f} s")
