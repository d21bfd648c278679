"""MTCNN's output network (O-Net) as a tracking step: a refreshed box, 5 landmarks and a face
probability for given boxes of a frame, without running the full detector. Used by the live
loop (:mod:`faceapp.services.live`) and the liveness session's follower.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from faceapp.errors import ModelError
from faceapp.types import Box, Detection


class LandmarkRefiner:
    """MTCNN's output network (O-Net) run on given boxes: a refreshed box, 5 landmarks and
    a face probability per box, with MTCNN's own crop and regression rules.

    Costs one 48×48 forward pass per face instead of the whole P/R/O-Net cascade: this is
    the tracking step between detections.

    Args:
        onet: facenet-pytorch's ``ONet`` (weights loaded), in eval mode.
    """

    INPUT = 48

    def __init__(self, onet: torch.nn.Module) -> None:
        self.onet = onet.eval()
        self.device = next(onet.parameters()).device

    @classmethod
    def create(cls, device: str = "cpu") -> LandmarkRefiner:
        """Load O-Net's weights from the facenet-pytorch wheel (no download)."""
        try:
            from facenet_pytorch.models.mtcnn import ONet
        except ImportError as err:  # pragma: no cover - depends on the installation
            raise ModelError(f"facenet-pytorch is not installed ({err}); run `make setup`") from err
        return cls(ONet().to(torch.device(device)))

    def refine(self, frame: np.ndarray, boxes: Sequence[Box]) -> list[Detection]:
        """One detection per input box, in order.

        Args:
            frame: (H, W, 3) uint8 RGB.
            boxes: (x1, y1, x2, y2) in pixels of ``frame``, roughly around a face.
        Returns:
            Detections in frame pixels; ``score`` is O-Net's face probability in [0, 1]
            (0 for a box entirely outside the frame). Callers apply their threshold.
        """
        if not boxes:
            return []
        h, w = frame.shape[:2]
        squares: list[tuple[float, float, float, float]] = []
        crops: list[torch.Tensor] = []
        valid: list[bool] = []
        for x1, y1, x2, y2 in boxes:
            bw, bh = x2 - x1, y2 - y1
            side = max(bw, bh)
            ok = bool(np.isfinite(side)) and side >= 2
            if ok:
                # the square crop around the box, in whole pixels; parts outside the frame are
                # zero-padded (not squeezed), so a face cut by the frame edge keeps its shape
                s_px = round(side)
                x0 = math.floor(x1 + bw * 0.5 - s_px * 0.5)
                y0 = math.floor(y1 + bh * 0.5 - s_px * 0.5)
                fx0, fx1 = max(0, x0), min(w, x0 + s_px)
                fy0, fy1 = max(0, y0), min(h, y0 + s_px)
                ok = fx1 > fx0 and fy1 > fy0
            valid.append(ok)
            if not ok:
                squares.append((0.0, 0.0, 0.0, 0.0))
                continue
            squares.append((float(x0), float(y0), float(s_px), 0.0))
            part = frame[fy0:fy1, fx0:fx1]
            if part.shape[:2] != (s_px, s_px):
                canvas = np.zeros((s_px, s_px, 3), dtype=np.uint8)
                canvas[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0] = part
                part = canvas
            crop = torch.from_numpy(np.ascontiguousarray(part)).to(self.device)
            crop = crop.permute(2, 0, 1).unsqueeze(0).float()
            crops.append(F.interpolate(crop, size=(self.INPUT, self.INPUT), mode="area"))
        if not crops:
            return [_empty_detection(b) for b in boxes]
        with torch.inference_mode():
            batch = (torch.cat(crops) - 127.5) * 0.0078125
            reg, pts, prob = self.onet(batch)
        reg_np = reg.float().cpu().numpy().astype(np.float64)
        pts_np = pts.float().cpu().numpy().astype(np.float64)
        prob_np = prob[:, 1].float().cpu().numpy().astype(np.float64)
        out: list[Detection] = []
        k = 0
        for box, sq, ok in zip(boxes, squares, valid, strict=True):
            if not ok:
                out.append(_empty_detection(box))
                continue
            # O-Net's outputs are relative to the crop (MTCNN's conventions: landmarks as
            # fractions of the side from the crop's first pixel, box offsets from the
            # 1-based corners of the crop)
            x0, y0, side_px = sq[0], sq[1], sq[2]
            px = side_px * pts_np[k, :5] + x0
            py = side_px * pts_np[k, 5:] + y0
            r = reg_np[k]
            new_box = (
                x0 + 1.0 + r[0] * side_px,
                y0 + 1.0 + r[1] * side_px,
                x0 + side_px + r[2] * side_px,
                y0 + side_px + r[3] * side_px,
            )
            landmarks = tuple((float(x), float(y)) for x, y in zip(px, py, strict=True))
            if not (np.all(np.isfinite(new_box)) and np.all(np.isfinite(px)) and np.all(np.isfinite(py))):
                out.append(_empty_detection(box))
            else:
                out.append(
                    Detection(
                        box=tuple(float(v) for v in new_box),  # type: ignore[arg-type]
                        score=float(prob_np[k]),
                        landmarks=landmarks,  # type: ignore[arg-type]
                    )
                )
            k += 1
        return out

    def refine_until(
        self, frame: np.ndarray, boxes: Sequence[Box], min_score: float, max_passes: int = 2
    ) -> list[Detection]:
        """:meth:`refine`, then again from the refined box for the faces still below
        ``min_score``, up to ``max_passes`` passes (O-Net's box regression converges over a
        few passes when the start box is off, e.g. a fast face or a detection some frames
        old). One detection per input box; callers still check ``score >= min_score``."""
        out = self.refine(frame, boxes)
        for _ in range(max_passes - 1):
            retry = [i for i, d in enumerate(out) if d.score < min_score and d.area > 0]
            if not retry:
                break
            again = self.refine(frame, [out[i].box for i in retry])
            for i, d in zip(retry, again, strict=True):
                if d.score > out[i].score:
                    out[i] = d
        return out


def _empty_detection(box: Box) -> Detection:
    x1, y1, x2, y2 = (float(v) for v in box)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return Detection(box=(x1, y1, x2, y2), score=0.0, landmarks=((cx, cy),) * 5)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- the loop
