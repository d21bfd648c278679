"""Plain result types shared by the layers (no behaviour beyond small conveniences)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

Point = tuple[float, float]
Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels of the analysed image


@dataclass(frozen=True)
class Detection:
    """One face found by the detector.

    ``box`` is (x1, y1, x2, y2); ``landmarks`` are 5 (x, y) points in the order
    left eye, right eye, nose, left mouth corner, right mouth corner (image left/right,
    i.e. as seen in the picture); ``score`` is the detector's face probability in [0, 1].
    """

    box: Box
    score: float
    landmarks: tuple[Point, Point, Point, Point, Point]

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def area(self) -> float:
        return max(0.0, self.width) * max(0.0, self.height)

    def landmarks_array(self) -> np.ndarray:
        """(5, 2) float64 landmark coordinates."""
        return np.asarray(self.landmarks, dtype=np.float64)

    def scaled(self, factor: float) -> Detection:
        """The same detection in an image ``factor`` times larger (coordinates multiplied)."""
        b = self.box
        return Detection(
            box=(b[0] * factor, b[1] * factor, b[2] * factor, b[3] * factor),
            score=self.score,
            landmarks=tuple((x * factor, y * factor) for x, y in self.landmarks),  # type: ignore[arg-type]
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "box": [round(v, 2) for v in self.box],
            "score": round(self.score, 5),
            "landmarks": [[round(x, 2), round(y, 2)] for x, y in self.landmarks],
        }


@dataclass(frozen=True, eq=False)
class AlignedFace:
    """A face warped onto the canonical 5-point template.

    ``crop`` is (S, S, 3) uint8 RGB; ``matrix`` the (2, 3) float64 similarity transform
    that maps source-image pixels onto crop pixels.
    """

    crop: np.ndarray
    detection: Detection
    matrix: np.ndarray = field(repr=False)


@dataclass(frozen=True, eq=False)
class FaceImage:
    """A model-independent picture of one face: a generous square crop around it and where
    its 5 landmarks are in that crop, from which any model's aligned crop can be derived.

    ``image`` is (S, S, 3) uint8 RGB; ``landmarks`` (5, 2) float64 pixel-index coordinates
    in ``image`` (same order as :class:`Detection`); ``framing`` names how it was cut
    (``"face256"`` for faces stored by this version, ``"arcface<S>"`` for older aligned crops).
    """

    image: np.ndarray
    landmarks: np.ndarray = field(repr=False)
    framing: str = "face256"
