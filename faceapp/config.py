"""Configuration as frozen dataclasses, resolved once from defaults, flags and environment.

Nothing here touches the disk or the network at import time; :func:`resolve_paths`
reads the environment only when called.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
"""The checkout (or site-packages) directory that holds ``faceapp/``, ``models/`` and ``db/``."""

DEFAULT_MODEL_NAME = "default.pt"
DEFAULT_DB_NAME = "faceapp.sqlite"
ENV_DB = "FACEAPP_DB"
ENV_MODEL = "FACEAPP_MODEL"
ENV_DATA = "FACEAPP_DATA"
DEFAULT_DATA_DIR = PROJECT_ROOT.parent / "shared" / "data"
"""The real data (LFW, face videos, liveness media) when neither a flag nor ``$FACEAPP_DATA``
names it: ``../shared/data`` beside the checkout. Read, never copied into the repository."""


@dataclass(frozen=True)
class DetectorConfig:
    """MTCNN settings.

    ``min_face_size`` is in pixels of the analysed image; ``thresholds`` are the P/R/O-net
    score cut-offs; ``max_side``: images whose longer side exceeds it are downscaled for
    detection (coordinates are mapped back), which bounds the cost on large photos.
    """

    min_face_size: int = 20
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    factor: float = 0.709
    max_side: int = 1280
    device: str = "cpu"


@dataclass(frozen=True)
class ImageLimits:
    """Limits applied when decoding untrusted images (decompression-bomb guard)."""

    max_pixels: int = 64_000_000
    max_bytes: int = 200_000_000


@dataclass(frozen=True)
class QualityConfig:
    """Gate for enrolment samples. Relative values, tuned on LFW/ORL/Yale, not match thresholds.

    ``min_face_px``: minimum inter-ocular distance-derived face width in source pixels;
    ``min_sharpness``: variance of the Laplacian of the aligned grey crop;
    ``max_yaw``: |nose offset| relative to the eye distance (0 = frontal).
    """

    min_face_px: float = 40.0
    min_sharpness: float = 20.0
    max_yaw: float = 0.35
    min_score: float = 0.90


@dataclass(frozen=True)
class AppPaths:
    """Where the gallery database, the default model and the real data (benchmarks,
    calibration media) live."""

    db_url: str
    model_path: Path
    data_dir: Path = DEFAULT_DATA_DIR


def default_model_path() -> Path:
    return PROJECT_ROOT / "models" / DEFAULT_MODEL_NAME


def default_db_path() -> Path:
    return PROJECT_ROOT / "db" / DEFAULT_DB_NAME


def as_db_url(value: str | os.PathLike[str]) -> str:
    """A SQLAlchemy URL from a URL or a plain file path (taken as SQLite)."""
    text = os.fspath(value)
    if "://" in text:
        return text
    return f"sqlite:///{Path(text).expanduser().resolve()}"


def resolve_paths(
    db: str | None = None,
    model: str | os.PathLike[str] | None = None,
    data: str | os.PathLike[str] | None = None,
) -> AppPaths:
    """Flags win over the environment (``FACEAPP_DB``, ``FACEAPP_MODEL``, ``FACEAPP_DATA``),
    which wins over defaults."""
    db_value = db or os.environ.get(ENV_DB) or str(default_db_path())
    model_value = model or os.environ.get(ENV_MODEL) or default_model_path()
    data_value = data or os.environ.get(ENV_DATA) or DEFAULT_DATA_DIR
    return AppPaths(
        db_url=as_db_url(db_value),
        model_path=Path(model_value).expanduser(),
        data_dir=Path(data_value).expanduser(),
    )
