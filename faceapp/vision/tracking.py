"""Face tracking between detections: box IoU, optimal assignment, landmark-shape change.

Pure geometry (numpy only, no model, no Qt). The live loop (:mod:`faceapp.services.live`) runs the
detector every few frames and calls :meth:`IouTracker.associate` with its detections; on the
frames in between it refreshes each track's box and landmarks (MTCNN's O-Net on the
predicted box) and reports them with :meth:`IouTracker.observe`.

Conventions: boxes are (x1, y1, x2, y2) floats in pixels of the full frame; a box with
non-positive width or height has area 0 (its IoU with anything is 0). Frame indices are
plain increasing integers given by the caller.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from faceapp.types import Box, Detection
from faceapp.vision.alignment import apply_transform, umeyama_similarity

# ---------------------------------------------------------------------------- geometry


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes, in [0, 1]."""
    return float(iou_matrix(np.asarray([a], dtype=np.float64), np.asarray([b], dtype=np.float64))[0, 0])


def iou_matrix(a: np.ndarray | Sequence[Box], b: np.ndarray | Sequence[Box]) -> np.ndarray:
    """Pairwise IoU.

    Args:
        a: (N, 4) boxes (x1, y1, x2, y2), any real dtype.
        b: (M, 4) boxes.
    Returns:
        (N, M) float64 in [0, 1]; 0 where either box is empty.
    """
    aa = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    bb = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    area_a = np.clip(aa[:, 2] - aa[:, 0], 0, None) * np.clip(aa[:, 3] - aa[:, 1], 0, None)
    area_b = np.clip(bb[:, 2] - bb[:, 0], 0, None) * np.clip(bb[:, 3] - bb[:, 1], 0, None)
    iw = np.minimum(aa[:, None, 2], bb[None, :, 2]) - np.maximum(aa[:, None, 0], bb[None, :, 0])
    ih = np.minimum(aa[:, None, 3], bb[None, :, 3]) - np.maximum(aa[:, None, 1], bb[None, :, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    return out


def max_weight_assignment(weights: np.ndarray, min_weight: float = 0.0) -> list[tuple[int, int]]:
    """Optimal one-to-one assignment of rows to columns (Hungarian algorithm, O(n²m)).

    Maximises the sum of ``weights[i, j]`` over the chosen pairs, where only pairs with
    ``weights[i, j] >= min_weight`` (and > 0) may be chosen; rows and columns may stay
    unassigned.

    Args:
        weights: (N, M) real matrix (e.g. an IoU matrix), any float dtype; NaN counts as 0.
        min_weight: pairs below it are never chosen.
    Returns:
        Sorted list of (row, column) pairs.
    """
    w = np.nan_to_num(np.asarray(weights, dtype=np.float64), nan=0.0)
    if w.ndim != 2:
        raise ValueError(f"weights must be a 2-D matrix, got shape {w.shape}")
    n, m = w.shape
    if n == 0 or m == 0:
        return []
    gain = np.where((w >= min_weight) & (w > 0), w, 0.0)
    transposed = n > m
    if transposed:  # the algorithm below wants rows <= columns
        gain = gain.T
        n, m = m, n
    cost = gain.max() - gain  # minimise cost == maximise gain (all complete assignments)
    # e-maxx formulation with potentials u (rows) and v (columns), 1-based with a dummy 0.
    inf = math.inf
    u = [0.0] * (n + 1)
    v = [0.0] * (m + 1)
    match_col = [0] * (m + 1)  # match_col[j] = row assigned to column j (0 = none)
    way = [0] * (m + 1)
    for i in range(1, n + 1):
        match_col[0] = i
        j0 = 0
        minv = [inf] * (m + 1)
        used = [False] * (m + 1)
        while True:
            used[j0] = True
            i0 = match_col[j0]
            delta = inf
            j1 = 0
            for j in range(1, m + 1):
                if not used[j]:
                    cur = cost[i0 - 1, j - 1] - u[i0] - v[j]
                    if cur < minv[j]:
                        minv[j] = cur
                        way[j] = j0
                    if minv[j] < delta:
                        delta = minv[j]
                        j1 = j
            for j in range(m + 1):
                if used[j]:
                    u[match_col[j]] += delta
                    v[j] -= delta
                else:
                    minv[j] -= delta
            j0 = j1
            if match_col[j0] == 0:
                break
        while True:
            j1 = way[j0]
            match_col[j0] = match_col[j1]
            j0 = j1
            if j0 == 0:
                break
    pairs = []
    for j in range(1, m + 1):
        i = match_col[j]
        if i and gain[i - 1, j - 1] > 0:
            pairs.append((j - 1, i - 1) if transposed else (i - 1, j - 1))
    return sorted(pairs)


def shape_change(
    a: np.ndarray | Sequence[tuple[float, float]], b: np.ndarray | Sequence[tuple[float, float]]
) -> float:
    """How much a 5-point landmark configuration changed, ignoring position, size and roll.

    ``b`` is mapped onto ``a`` by the best similarity transform (Umeyama); the RMS residual
    is divided by the distance between the two eyes of ``a``. 0 for the same shape moved,
    scaled or rotated in the image plane; grows with head turn (yaw/pitch), expression or a
    different face.

    Args:
        a, b: (5, 2) landmark coordinates (left eye, right eye, nose, mouth corners).
    Returns:
        Non-negative float; ``inf`` when ``a``'s eyes coincide or ``b`` is degenerate.
    """
    pa = np.asarray(a, dtype=np.float64).reshape(-1, 2)
    pb = np.asarray(b, dtype=np.float64).reshape(-1, 2)
    if pa.shape != pb.shape or pa.shape[0] < 3:
        raise ValueError(f"need two (N, 2) landmark sets with N >= 3, got {pa.shape}, {pb.shape}")
    eye = float(np.hypot(*(pa[1] - pa[0])))
    if eye <= 1e-9:
        return math.inf
    try:
        matrix = umeyama_similarity(pb, pa)
    except ValueError:
        return math.inf
    resid = apply_transform(matrix, pb) - pa
    return float(np.sqrt((resid**2).sum(axis=1).mean()) / eye)


def shift_detection(det: Detection, dx: float, dy: float) -> Detection:
    """``det`` translated by (dx, dy) pixels (box and landmarks)."""
    if dx == 0.0 and dy == 0.0:
        return det
    x1, y1, x2, y2 = det.box
    return Detection(
        box=(x1 + dx, y1 + dy, x2 + dx, y2 + dy),
        score=det.score,
        landmarks=tuple((x + dx, y + dy) for x, y in det.landmarks),  # type: ignore[arg-type]
    )


def _centre(box: Box) -> tuple[float, float]:
    return ((box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0)


# ---------------------------------------------------------------------------- tracker


@dataclass(frozen=True)
class TrackerConfig:
    """``min_iou``: a detection continues a track only if their boxes overlap at least this
    much (the track's box is first moved by its velocity); ``max_misses``: a track is dropped
    after more consecutive updates without an observation; ``merge_iou``: two observed tracks
    overlapping more than this are one face (the younger track is dropped);
    ``velocity_smoothing``: weight of the newest displacement in the velocity average."""

    min_iou: float = 0.3
    max_misses: int = 2
    merge_iou: float = 0.7
    velocity_smoothing: float = 0.5


@dataclass(frozen=True)
class Track:
    """One face followed over frames (immutable snapshot; the tracker replaces it).

    ``detection``: last observation (full-frame coordinates); ``first_frame`` /
    ``last_frame``: frames of the first and the last observation; ``hits``: observations so
    far; ``misses``: consecutive updates without one; ``velocity``: (dx, dy) of the box
    centre in pixels per frame.
    """

    track_id: int
    detection: Detection
    first_frame: int
    last_frame: int
    hits: int = 1
    misses: int = 0
    velocity: tuple[float, float] = (0.0, 0.0)

    @property
    def box(self) -> Box:
        return self.detection.box

    def predicted(self, frame: int) -> Detection:
        """The last observation moved by the velocity to ``frame`` (constant-velocity model)."""
        dt = frame - self.last_frame
        return shift_detection(self.detection, self.velocity[0] * dt, self.velocity[1] * dt)


@dataclass(frozen=True)
class TrackUpdate:
    """What one tracker update did (track ids): ``updated`` got an observation,
    ``created`` are new, ``missed`` got none (still kept), ``removed`` were dropped."""

    updated: tuple[int, ...] = ()
    created: tuple[int, ...] = ()
    missed: tuple[int, ...] = ()
    removed: tuple[int, ...] = ()


class IouTracker:
    """Tracks detected faces by optimal box-IoU assignment with a constant-velocity model.

    Not thread-safe: one tracker per video stream.
    """

    def __init__(self, config: TrackerConfig = TrackerConfig()) -> None:
        if not 0.0 < config.min_iou <= 1.0:
            raise ValueError(f"min_iou must be in (0, 1], got {config.min_iou}")
        if config.max_misses < 0:
            raise ValueError(f"max_misses must be >= 0, got {config.max_misses}")
        self.config = config
        self._tracks: dict[int, Track] = {}
        self._next_id = 1

    @property
    def tracks(self) -> tuple[Track, ...]:
        """Every live track (observed or missed), by id."""
        return tuple(self._tracks[k] for k in sorted(self._tracks))

    def observed(self) -> tuple[Track, ...]:
        """Tracks observed in their latest update (``misses == 0``), by id."""
        return tuple(t for t in self.tracks if t.misses == 0)

    def get(self, track_id: int) -> Track:
        """The track of that id (``KeyError`` when it does not exist)."""
        return self._tracks[track_id]

    def __len__(self) -> int:
        return len(self._tracks)

    def reset(self) -> None:
        """Forget every track (ids keep increasing)."""
        self._tracks.clear()

    # ------------------------------------------------------------------ updates
    def associate(self, frame: int, detections: Sequence[Detection]) -> TrackUpdate:
        """Continue tracks with the detections of ``frame`` (optimal IoU assignment between
        the tracks' predicted boxes and the detected boxes); unmatched detections start new
        tracks; unmatched tracks count a miss and are dropped after ``max_misses``."""
        tracks = self.tracks
        preds = [t.predicted(frame).box for t in tracks]
        weights = iou_matrix(preds, [d.box for d in detections])
        pairs = max_weight_assignment(weights, self.config.min_iou)
        matched_tracks = {i for i, _ in pairs}
        matched_dets = {j for _, j in pairs}
        updated = []
        for i, j in pairs:
            self._observe(tracks[i], frame, detections[j])
            updated.append(tracks[i].track_id)
        created = []
        for j, det in enumerate(detections):
            if j not in matched_dets:
                created.append(self._create(frame, det))
        missed, removed = self._miss(t.track_id for i, t in enumerate(tracks) if i not in matched_tracks)
        removed += self._merge_duplicates()
        return TrackUpdate(tuple(updated), tuple(created), missed, tuple(removed))

    def observe(
        self, frame: int, observations: Mapping[int, Detection], lost: Iterable[int] = ()
    ) -> TrackUpdate:
        """Per-track observations of ``frame`` (e.g. O-Net refinements of the predicted boxes);
        the ``lost`` tracks count a miss. Unknown track ids raise ``KeyError``."""
        for track_id, det in observations.items():
            self._observe(self._tracks[track_id], frame, det)
        missed, removed = self._miss(lost)
        removed += self._merge_duplicates()
        return TrackUpdate(tuple(observations), (), missed, tuple(removed))

    def spawn(self, frame: int, detections: Sequence[Detection]) -> TrackUpdate:
        """Add faces from detections that no observed track covers (IoU < ``min_iou``), e.g.
        late detections from a detector running beside the tracking loop: they never move
        or miss observed tracks. A detection over the predicted box of a recently missed
        track revives that track (its identity is kept); any other starts a new track.
        Detections are taken largest first."""
        created: list[int] = []
        revived: list[int] = []
        for det in sorted(detections, key=lambda d: -d.area):
            observed = self.observed()
            if (
                observed
                and float(iou_matrix([t.box for t in observed], [det.box]).max()) >= self.config.min_iou
            ):
                continue
            missed = [t for t in self.tracks if t.misses > 0]
            if missed:
                ious = iou_matrix([t.predicted(frame).box for t in missed], [det.box])[:, 0]
                best = int(np.argmax(ious))
                if ious[best] >= self.config.min_iou:
                    self._observe(missed[best], frame, det)
                    revived.append(missed[best].track_id)
                    continue
            created.append(self._create(frame, det))
        return TrackUpdate(updated=tuple(revived), created=tuple(created))

    def _create(self, frame: int, det: Detection) -> int:
        track_id = self._next_id
        self._next_id += 1
        self._tracks[track_id] = Track(track_id, det, frame, frame)
        return track_id

    def _observe(self, track: Track, frame: int, det: Detection) -> None:
        dt = max(1, frame - track.last_frame)
        (cx0, cy0), (cx1, cy1) = _centre(track.box), _centre(det.box)
        a = self.config.velocity_smoothing
        vel = (
            a * (cx1 - cx0) / dt + (1 - a) * track.velocity[0],
            a * (cy1 - cy0) / dt + (1 - a) * track.velocity[1],
        )
        self._tracks[track.track_id] = dataclasses.replace(
            track, detection=det, last_frame=frame, hits=track.hits + 1, misses=0, velocity=vel
        )

    def _miss(self, track_ids: Iterable[int]) -> tuple[tuple[int, ...], list[int]]:
        missed, removed = [], []
        for track_id in track_ids:
            track = self._tracks[track_id]
            if track.misses + 1 > self.config.max_misses:
                del self._tracks[track_id]
                removed.append(track_id)
            else:
                self._tracks[track_id] = dataclasses.replace(track, misses=track.misses + 1)
                missed.append(track_id)
        return tuple(missed), removed

    def _merge_duplicates(self) -> list[int]:
        """Drop the younger of two observed tracks that cover the same face."""
        live = self.observed()
        if len(live) < 2:
            return []
        ious = iou_matrix([t.box for t in live], [t.box for t in live])
        removed: list[int] = []
        for i, j in zip(*np.triu_indices(len(live), k=1), strict=True):
            a, b = live[i], live[j]
            if ious[i, j] > self.config.merge_iou and a.track_id not in removed and b.track_id not in removed:
                younger = b if (a.hits, -a.track_id) >= (b.hits, -b.track_id) else a
                del self._tracks[younger.track_id]
                removed.append(younger.track_id)
        return removed
