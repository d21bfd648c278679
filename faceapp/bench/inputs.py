"""What the benchmarks read: the model checkpoint and the real data (face videos, LFW).

The data folder comes from the caller (``faceapp bench --data DIR``), else from
:func:`faceapp.config.resolve_paths` (``$FACEAPP_DATA``, else the documented default
:data:`faceapp.config.DEFAULT_DATA_DIR`); nothing here names a location of its own.
Embeddings of real LFW faces, used to give synthetic galleries realistic statistics, are
cached outside the repository.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from faceapp.config import DetectorConfig, resolve_paths
from faceapp.errors import GalleryError, ModelError
from faceapp.nn.checkpoint import LoadedModel, load_checkpoint
from faceapp.nn.pipeline import FacePipeline
from faceapp.vision.detection import FaceDetector
from faceapp.vision.images import load_image

LFW_FIT_PEOPLE = 150
"""People of LFW (with >= 2 images, up to 3 each) embedded to fit the LFW-like galleries."""


def load_model(model_path: str | os.PathLike[str] | None) -> tuple[LoadedModel, Path]:
    """The checkpoint at ``model_path`` (default: as the app resolves it) and its path."""
    path = resolve_paths(model=model_path).model_path
    if not path.is_file():
        raise ModelError(
            f"{path}: model file not found (train one with `faceapp train`, or pass --model CKPT)"
        )
    return load_checkpoint(path), path


def data_root(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The real data folder: ``data_dir`` when given, else as configured (see the module)."""
    return resolve_paths(data=data_dir).data_dir


def default_videos(data_dir: Path) -> list[Path]:
    """The sample videos in ``data_dir/face_videos`` (sorted, any depth), if any."""
    root = data_dir / "face_videos"
    return sorted(root.rglob("*.mp4")) if root.is_dir() else []


def lfw_root(data_dir: Path) -> Path:
    """The LFW person folders (deep-funneled) under ``data_dir``."""
    return data_dir / "lfw" / "lfw-deepfunneled"


def lfw_embeddings(model: LoadedModel, lfw_dir: Path, *,
                   people: int = LFW_FIT_PEOPLE) -> tuple[np.ndarray, np.ndarray]:
    """(M, D) embeddings of real LFW faces by ``model`` (largest face of each image) and
    their (M,) person labels; cached per model in the user cache folder (0600)."""
    from faceapp.gallery.selfcheck import cache_dir

    cache = cache_dir() / f"lfw-embeddings-{model.model_id}-{people}.npz"
    with contextlib.suppress(OSError, ValueError, KeyError), np.load(cache) as data:
        return data["emb"], data["labels"]
    if not lfw_dir.is_dir():
        raise FileNotFoundError(f"{lfw_dir}: LFW not found")
    pipeline = FacePipeline(FaceDetector(DetectorConfig()), model)
    emb: list[np.ndarray] = []
    labels: list[int] = []
    chosen = 0
    for person in sorted(p for p in lfw_dir.iterdir() if p.is_dir()):
        images = sorted(person.glob("*.jpg"))
        if len(images) < 2:
            continue
        for img in images[:3]:
            faces = pipeline.analyze(load_image(img))
            if faces:
                emb.append(max(faces, key=lambda f: f.detection.area).embedding)
                labels.append(chosen)
        chosen += 1
        if chosen >= people:
            break
    out = np.stack(emb).astype(np.float32), np.asarray(labels, dtype=np.int64)
    with contextlib.suppress(OSError):
        cache.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(cache.with_suffix(".partial"), os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, emb=out[0], labels=out[1])
        os.replace(cache.with_suffix(".partial"), cache)
    return out


def lfw_probe_sets(lfw_dir: Path, people: int) -> list[tuple[str, list[Path], Path]]:
    """(name, 2 enrolment images, 1 other probe image) of the first LFW people with 3+
    ([] when ``lfw_dir`` is missing)."""
    out: list[tuple[str, list[Path], Path]] = []
    if not lfw_dir.is_dir():
        return out
    for person in sorted(p for p in lfw_dir.iterdir() if p.is_dir()):
        images = sorted(person.glob("*.jpg"))
        if len(images) >= 3:
            out.append((person.name.replace("_", " "), images[:2], images[2]))
        if len(out) == people:
            break
    return out


def lfw_base_embeddings(lfw_dir: str | os.PathLike[str], model_path: str | None,
                        limit: int = 2000, cache: Path | None = None) -> np.ndarray:
    """(B, D) unit embeddings of up to ``limit`` LFW images (central face of each), with the
    app's model and detector; cached in ``cache`` (an .npy outside the repository). The
    server benchmark's real base (see :func:`faceapp.bench.synthetic.realistic_gallery`)."""
    from faceapp.gallery.matching import l2_normalize

    if cache is not None and cache.exists():
        return np.load(cache)
    paths = resolve_paths(model=model_path)
    pipeline = FacePipeline.from_paths(paths.model_path, detector_config=DetectorConfig())
    files = sorted(Path(lfw_dir).rglob("*.jpg"))[:: max(1, len(list(Path(lfw_dir).rglob("*.jpg")))
                                                       // limit)][:limit]
    out = []
    for f in files:
        faces = pipeline.analyze(load_image(f))
        if faces:
            out.append(np.asarray(faces[0].embedding, dtype=np.float32))
    if not out:
        raise GalleryError(f"{lfw_dir}: no face embedded")
    arr = l2_normalize(np.stack(out))
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache, arr)
    return arr
