"""Face datasets: identity folders, LFW protocol files, and a cache of aligned crops.

Layout: ``root/<person>/<image>``. LFW protocol files:
- ``people*.txt``: a count line, then ``name n_images`` lines (View 2 ``people.txt``
  repeats the count line per fold: ``10`` then ``601`` ...; all folds are read);
- ``pairs*.txt``: a header line, then matched ``name n1 n2`` or mismatched
  ``name1 n1 name2 n2`` lines; image = ``name/name_%04d.jpg``.

Preprocessing runs the detector + aligner once per image and caches the (S, S, 3)
uint8 crops in one ``.npz`` per (image list, alignment settings), with a per-image key
made of the file content hash, so epochs never re-run MTCNN and a changed file is
re-done. Images where no face is detected are either skipped (training) or aligned
with fallback landmarks (the median landmarks of the detected images of the same size:
LFW images are centred, so this is a stated centre crop) — each counted and reported.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from faceapp.errors import FaceappError, InvalidImage
from faceapp.types import Detection
from faceapp.vision.alignment import AlignmentTemplate, align_face
from faceapp.vision.detection import FaceDetector
from faceapp.vision.images import IMAGE_SUFFIXES, load_image

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
STATUS_DETECTED = 0
STATUS_FALLBACK = 1
STATUS_FAILED = 2


@dataclass(frozen=True)
class Pair:
    """One verification pair: two image paths and whether they show the same person."""

    a: Path
    b: Path
    same: bool


def lfw_image_path(root: Path, name: str, index: int) -> Path:
    return root / name / f"{name}_{index:04d}.jpg"


def read_people(path: str | Path) -> dict[str, int]:
    """``people*.txt`` -> {name: n_images} (all folds merged, file order kept)."""
    people: dict[str, int] = {}
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as err:
        raise FaceappError(f"{path}: cannot read people file ({err})") from None
    for line in lines[1:]:
        parts = line.split()
        if len(parts) == 2 and not parts[0].isdigit():
            people[parts[0]] = int(parts[1])
        elif len(parts) not in (0, 1):
            raise FaceappError(f"{path}: unexpected line {line!r}")
    return people


def read_pairs(path: str | Path, root: str | Path) -> list[Pair]:
    """``pairs*.txt`` -> list of :class:`Pair` in file order (paths under ``root``)."""
    root = Path(root)
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as err:
        raise FaceappError(f"{path}: cannot read pairs file ({err})") from None
    pairs: list[Pair] = []
    for line in lines[1:]:
        p = line.split()
        if len(p) == 3:
            pairs.append(
                Pair(lfw_image_path(root, p[0], int(p[1])), lfw_image_path(root, p[0], int(p[2])), True)
            )
        elif len(p) == 4:
            pairs.append(
                Pair(lfw_image_path(root, p[0], int(p[1])), lfw_image_path(root, p[2], int(p[3])), False)
            )
        elif p:
            raise FaceappError(f"{path}: unexpected line {line!r}")
    if not pairs:
        raise FaceappError(f"{path}: no pairs found")
    return pairs


@dataclass(frozen=True)
class ImageList:
    """Labelled image files: ``paths[i]`` shows identity ``labels[i]`` named ``names[labels[i]]``."""

    paths: tuple[Path, ...]
    labels: np.ndarray  # (N,) int64
    names: tuple[str, ...]


def scan_identity_folders(root: str | Path, people: Sequence[str] | None = None) -> ImageList:
    """Images under ``root/<person>/``, restricted to ``people`` when given (sorted order)."""
    root = Path(root)
    if not root.is_dir():
        raise FaceappError(f"{root}: data folder not found")
    wanted = sorted(people) if people is not None else sorted(p.name for p in root.iterdir() if p.is_dir())
    paths: list[Path] = []
    labels: list[int] = []
    names: list[str] = []
    for name in wanted:
        folder = root / name
        if not folder.is_dir():
            raise FaceappError(f"{folder}: identity folder listed but missing")
        files = sorted(
            f
            for f in folder.iterdir()
            if f.is_file() and (f.suffix.lower() in IMAGE_SUFFIXES or not f.suffix)
        )
        if not files:
            continue
        names.append(name)
        paths.extend(files)
        labels.extend([len(names) - 1] * len(files))
    return ImageList(tuple(paths), np.asarray(labels, dtype=np.int64), tuple(names))


@dataclass(frozen=True)
class CropSet:
    """Aligned crops of an image list.

    ``crops``: (N, S, S, 3) uint8; ``status``: (N,) int8 — 0 detected, 1 fallback
    landmarks (no face found), 2 failed (unreadable, or no face found and no detected image
    to take fallback landmarks from: the crop is black).
    """

    paths: tuple[Path, ...]
    crops: np.ndarray
    status: np.ndarray

    def index(self) -> dict[Path, int]:
        return {p: i for i, p in enumerate(self.paths)}

    def counts(self) -> dict[str, int]:
        return {
            "detected": int((self.status == STATUS_DETECTED).sum()),
            "fallback": int((self.status == STATUS_FALLBACK).sum()),
            "failed": int((self.status == STATUS_FAILED).sum()),
        }


def file_key(path: Path) -> str:
    """20 hex digits of the SHA-1 of the file content.

    A file that cannot be read gets a key derived from its path (prefixed ``unreadable-``),
    so that it is reported as failed rather than crashing the whole preprocessing; once the
    file becomes readable its content key differs and it is processed again.
    """
    try:
        return hashlib.sha1(path.read_bytes()).hexdigest()[:20]
    except OSError:
        return "unreadable-" + hashlib.sha1(str(path).encode()).hexdigest()[:20]


def pick_central_face(detections: Sequence[Detection], shape: tuple[int, ...]) -> Detection | None:
    """The detection nearest the image centre among those at least 20% of the image wide.

    Identity datasets (LFW, ORL, Yale) show the labelled person centred; other faces in the
    frame are background people. Returns None when no detection qualifies (caller decides).
    """
    h, w = shape[:2]
    cands = [d for d in detections if d.width >= 0.2 * min(h, w)]
    if not cands:
        return None
    cx, cy = w / 2, h / 2
    return min(
        cands, key=lambda d: ((d.box[0] + d.box[2]) / 2 - cx) ** 2 + ((d.box[1] + d.box[3]) / 2 - cy) ** 2
    )


def _settings_key(template: AlignmentTemplate, detector: FaceDetector | None) -> str:
    cfg = detector.config if detector is not None else None
    blob = json.dumps(
        {
            "format": CACHE_FORMAT,
            "template": template.to_dict(),
            "detector": None
            if cfg is None
            else [cfg.min_face_size, list(cfg.thresholds), cfg.factor, cfg.max_side],
        },
        sort_keys=True,
    )
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def build_crop_cache(
    paths: Sequence[Path],
    template: AlignmentTemplate,
    detector: FaceDetector,
    cache_dir: str | Path,
    *,
    name: str,
    batch_size: int = 16,
    progress: Callable[[int, int], None] | None = None,
) -> CropSet:
    """Detect + align every image once; reuse cached crops whose file content is unchanged.

    Args:
        paths: image files.
        template: alignment template (its size is the crop size S).
        detector: the MTCNN detector used for uncached images.
        cache_dir: folder holding ``{name}-{settings}.npz``.
        name: a name for this image list (e.g. ``lfw-devtrain``).
    Returns:
        :class:`CropSet` in the order of ``paths``.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache_file = cache_dir / f"{name}-{_settings_key(template, detector)}.npz"
    keys = [file_key(Path(p)) for p in paths]
    cached = _load_cached(cache_dir, cache_file.name.rsplit("-", 1)[1], set(keys))
    S = template.size
    crops = np.zeros((len(paths), S, S, 3), dtype=np.uint8)
    status = np.full(len(paths), STATUS_FAILED, dtype=np.int8)
    landmarks = np.zeros((len(paths), 5, 2), dtype=np.float32)
    todo = [i for i, k in enumerate(keys) if k not in cached]
    for i, k in enumerate(keys):
        if k in cached:
            crops[i], status[i], landmarks[i] = cached[k]
    undetected: list[tuple[int, np.ndarray]] = []
    done = len(paths) - len(todo)
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        images: list[tuple[int, np.ndarray]] = []
        for i in chunk:
            try:
                images.append((i, load_image(paths[i])))
            except InvalidImage as err:
                log.warning("skipping %s", err)
        dets = detector.detect_batch([im for _, im in images])
        for (i, im), d in zip(images, dets, strict=True):
            face = pick_central_face(d, im.shape)
            if face is None:
                undetected.append((i, im))
                continue
            crops[i] = align_face(im, face, template).crop
            status[i] = STATUS_DETECTED
            landmarks[i] = face.landmarks_array()
        done += len(chunk)
        if progress is not None:
            progress(done, len(paths))
    if undetected:
        _fallback_align(undetected, crops, status, landmarks, template)
    if todo or not cache_file.exists():  # everything cached already: do not rewrite the file
        tmp = cache_file.with_name(cache_file.name + ".partial.npz")
        np.savez(
            tmp,
            keys=np.asarray(keys),
            crops=crops,
            status=status,
            landmarks=landmarks,
        )
        tmp.replace(cache_file)
    result = CropSet(tuple(Path(p) for p in paths), crops, status)
    log.info("crops for %s: %s", name, result.counts())
    return result


def _load_cached(
    cache_dir: Path, settings_suffix: str, wanted: set[str]
) -> dict[str, tuple[np.ndarray, int, np.ndarray]]:
    """Crops of ``wanted`` file keys from every cache file made with the same settings."""
    found: dict[str, tuple[np.ndarray, int, np.ndarray]] = {}
    for file in sorted(cache_dir.glob(f"*-{settings_suffix}")):
        if len(found) == len(wanted):
            break
        try:
            with np.load(file, allow_pickle=False) as z:
                keys = [str(k) for k in z["keys"]]
                rows = [i for i, k in enumerate(keys) if k in wanted and k not in found]
                if not rows:
                    continue
                crops, status, lms = z["crops"], z["status"], z["landmarks"]
                for i in rows:
                    found[keys[i]] = (crops[i], int(status[i]), lms[i])
        except (OSError, ValueError, KeyError) as err:
            log.warning("ignoring unreadable crop cache %s (%s)", file, err)
    return found


def _fallback_align(
    undetected: list[tuple[int, np.ndarray]],
    crops: np.ndarray,
    status: np.ndarray,
    landmarks: np.ndarray,
    template: AlignmentTemplate,
) -> None:
    """Align undetected images with the median landmarks of detected images of the same size."""
    for i, im in undetected:
        h, w = im.shape[:2]
        same_size = [
            j
            for j in np.flatnonzero(status == STATUS_DETECTED)
            if landmarks[j, :, 0].max() < w and landmarks[j, :, 1].max() < h
        ]
        if not same_size:
            continue
        med = np.median(landmarks[same_size], axis=0)
        det = Detection(
            box=(0.0, 0.0, float(w), float(h)), score=0.0, landmarks=tuple(map(tuple, med.tolist()))
        )  # type: ignore[arg-type]
        crops[i] = align_face(im, det, template).crop
        status[i] = STATUS_FALLBACK
        landmarks[i] = med
