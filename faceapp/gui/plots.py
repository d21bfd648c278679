"""Small charts drawn with ``QPainter``: score histograms and a ROC curve.

Both take plain ``numpy`` arrays; scores are similarities (higher = more alike) as the
services report them. The threshold τ is drawn as a vertical marker.
"""

from __future__ import annotations

import math

import numpy as np
from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QPainter, QPainterPath, QPaintEvent, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

GENUINE = QColor(46, 204, 113)
IMPOSTOR = QColor(231, 76, 60)
TAU = QColor(52, 152, 219)
AXIS = QColor(160, 160, 160)
BACKGROUND = QColor(30, 32, 36)


def histogram(values: np.ndarray, lo: float, hi: float, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised counts (sum 1, or all 0 when empty) of ``values`` in ``bins`` equal bins
    over ``[lo, hi]``; returns ``(density (bins,) float64, edges (bins + 1,) float64)``."""
    edges = np.linspace(lo, hi, bins + 1)
    v = np.asarray(values, dtype=np.float64).ravel()
    counts, _ = np.histogram(np.clip(v, lo, hi), bins=edges)
    total = counts.sum()
    return (counts / total if total else counts.astype(np.float64)), edges


class _Chart(QWidget):
    MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 46, 14, 26, 34

    def __init__(self, title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = title
        self.setMinimumSize(260, 180)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def sizeHint(self) -> QSize:
        return QSize(420, 260)

    def _plot_rect(self) -> QRectF:
        return QRectF(
            self.MARGIN_L,
            self.MARGIN_T,
            max(10.0, self.width() - self.MARGIN_L - self.MARGIN_R),
            max(10.0, self.height() - self.MARGIN_T - self.MARGIN_B),
        )

    def _frame(self, p: QPainter, rect: QRectF) -> None:
        p.fillRect(self.rect(), BACKGROUND)
        p.setPen(QColor(220, 220, 220))
        p.drawText(
            QRectF(0, 4, self.width(), self.MARGIN_T - 6),
            Qt.AlignmentFlag.AlignCenter,
            self.title,
        )
        p.setPen(QPen(AXIS, 1))
        p.drawRect(rect)

    def _empty(self, p: QPainter, rect: QRectF, text: str) -> None:
        p.setPen(AXIS)
        p.drawText(rect, Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap, text)


class HistogramPlot(_Chart):
    """Genuine (same person) and impostor (different people) score distributions + τ."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Score distributions", parent)
        self._genuine = np.zeros(0)
        self._impostor = np.zeros(0)
        self._tau: float | None = None
        self._bins = 40

    def set_scores(self, genuine: np.ndarray, impostor: np.ndarray) -> None:
        self._genuine = np.asarray(genuine, dtype=np.float64).ravel()
        self._impostor = np.asarray(impostor, dtype=np.float64).ravel()
        self.update()

    def set_tau(self, tau: float | None) -> None:
        self._tau = tau
        self.update()

    def tau(self) -> float | None:
        return self._tau

    def score_range(self) -> tuple[float, float]:
        both = np.concatenate([self._genuine, self._impostor])
        extra = [] if self._tau is None else [self._tau]
        both = np.concatenate([both, np.asarray(extra, dtype=np.float64)])
        if both.size == 0:
            return 0.0, 1.0
        lo, hi = float(both.min()), float(both.max())
        if hi - lo < 1e-9:
            lo, hi = lo - 0.5, hi + 0.5
        pad = 0.03 * (hi - lo)
        return lo - pad, hi + pad

    def paintEvent(self, _event: QPaintEvent) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        rect = self._plot_rect()
        self._frame(p, rect)
        if self._genuine.size == 0 and self._impostor.size == 0:
            self._empty(p, rect, "No scores yet: compute them from the gallery.")
            p.end()
            return
        lo, hi = self.score_range()
        dens_g, edges = histogram(self._genuine, lo, hi, self._bins)
        dens_i, _ = histogram(self._impostor, lo, hi, self._bins)
        top = max(float(dens_g.max(initial=0)), float(dens_i.max(initial=0)), 1e-9)

        def x_of(v: float) -> float:
            return rect.left() + (v - lo) / (hi - lo) * rect.width()

        for dens, color in ((dens_i, IMPOSTOR), (dens_g, GENUINE)):
            fill = QColor(color)
            fill.setAlpha(110)
            for k in range(self._bins):
                if dens[k] <= 0:
                    continue
                h = dens[k] / top * rect.height()
                x0, x1 = x_of(edges[k]), x_of(edges[k + 1])
                p.fillRect(QRectF(x0, rect.bottom() - h, max(1.0, x1 - x0 - 1), h), fill)
        if self._tau is not None:
            x = x_of(self._tau)
            p.setPen(QPen(TAU, 2, Qt.PenStyle.DashLine))
            p.drawLine(QPointF(x, rect.top()), QPointF(x, rect.bottom()))
            p.drawText(QPointF(x + 4, rect.top() + 14), f"τ = {self._tau:.3f}")
        p.setPen(AXIS)
        p.drawText(QPointF(rect.left(), rect.bottom() + 16), f"{lo:.2f}")
        p.drawText(QPointF(rect.right() - 40, rect.bottom() + 16), f"{hi:.2f}")
        p.setPen(GENUINE)
        p.drawText(QPointF(rect.left() + 60, rect.bottom() + 28), f"genuine ({self._genuine.size})")
        p.setPen(IMPOSTOR)
        p.drawText(QPointF(rect.left() + 200, rect.bottom() + 28), f"impostor ({self._impostor.size})")
        p.end()


class RocPlot(_Chart):
    """True-accept rate against false-accept rate (log-scaled FAR axis), with the
    operating point of the current τ marked."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("ROC: TAR vs FAR", parent)
        self._far = np.zeros(0)
        self._tar = np.zeros(0)
        self._point: tuple[float, float] | None = None

    def set_curve(self, far: np.ndarray, tar: np.ndarray) -> None:
        self._far = np.asarray(far, dtype=np.float64).ravel()
        self._tar = np.asarray(tar, dtype=np.float64).ravel()
        self.update()

    def set_operating_point(self, far: float | None, tar: float | None = None) -> None:
        self._point = None if far is None or tar is None else (float(far), float(tar))
        self.update()

    def operating_point(self) -> tuple[float, float] | None:
        return self._point

    def _far_floor(self) -> float:
        positive = self._far[self._far > 0]
        floor = float(positive.min()) if positive.size else 1e-3
        return max(1e-6, min(1e-2, floor / 2))

    def paintEvent(self, _event: QPaintEvent) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        rect = self._plot_rect()
        self._frame(p, rect)
        if self._far.size == 0:
            self._empty(p, rect, "No ROC yet.")
            p.end()
            return
        floor = self._far_floor()
        lmin = math.log10(floor)

        def pt(far: float, tar: float) -> QPointF:
            lx = (math.log10(max(far, floor)) - lmin) / (0 - lmin)
            return QPointF(rect.left() + lx * rect.width(), rect.bottom() - tar * rect.height())

        # decade grid
        p.setPen(QPen(QColor(70, 70, 70), 1, Qt.PenStyle.DotLine))
        for dec in range(math.ceil(lmin), 1):
            x = pt(10.0**dec, 0).x()
            p.drawLine(QPointF(x, rect.top()), QPointF(x, rect.bottom()))
            p.setPen(AXIS)
            p.drawText(QPointF(x - 14, rect.bottom() + 16), f"1e{dec}" if dec else "1")
            p.setPen(QPen(QColor(70, 70, 70), 1, Qt.PenStyle.DotLine))
        order = np.argsort(self._far, kind="stable")
        path = QPainterPath()
        for k, i in enumerate(order):
            q = pt(self._far[i], self._tar[i])
            if k == 0:
                path.moveTo(q)
            else:
                path.lineTo(q)
        p.setPen(QPen(GENUINE, 2))
        p.drawPath(path)
        p.setPen(AXIS)
        p.drawText(QPointF(4, rect.top() + 10), "1")
        p.drawText(QPointF(4, rect.bottom()), "0")
        if self._point is not None:
            q = pt(*self._point)
            p.setPen(QPen(TAU, 2))
            p.setBrush(TAU)
            p.drawEllipse(q, 5, 5)
            p.drawText(
                q + QPointF(8, 14),
                f"FAR {self._point[0]:.4f}, TAR {self._point[1]:.3f}",
            )
        p.end()
