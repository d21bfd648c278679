"""What the repository takes and returns: person names as stored, templates to store, the rows
of an index and of the people list."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from faceapp.errors import GalleryError
from faceapp.gallery.orm import NAME_MAX_LEN


def normalize_name(name: str) -> str:
    """A person name as stored: NFC, surrounding blanks stripped, inner runs of blanks
    collapsed. Raises :class:`GalleryError` when empty, too long or containing control
    characters."""
    if not isinstance(name, str):
        raise GalleryError(f"a person name must be text, got {type(name).__name__}")
    text = " ".join(unicodedata.normalize("NFC", name).split())
    if not text:
        raise GalleryError("a person name cannot be empty")
    if len(text) > NAME_MAX_LEN:
        raise GalleryError(f"a person name is limited to {NAME_MAX_LEN} characters")
    if any(unicodedata.category(c).startswith("C") for c in text):
        raise GalleryError(f"person name {text!r} contains control characters")
    return text


@dataclass(frozen=True)
class NewTemplate:
    """A template to store. ``embedding``: (D,) float32 (stored as given, normalised or not);
    ``crop_png``: PNG bytes of the aligned crop, or ``None`` when there is no crop."""

    model_id: str
    embedding: np.ndarray
    crop_png: bytes | None = None
    source: str = ""
    quality: dict[str, object] = field(default_factory=dict)
    created: datetime | None = None


@dataclass(frozen=True)
class IndexRows:
    """Every template of one model, ready for an index.

    ``template_ids``, ``person_ids``: (N,) int64; ``embeddings``: (N, D) float32 as stored,
    in storage order (not grouped by person).
    """

    model_id: str
    template_ids: np.ndarray
    person_ids: np.ndarray
    embeddings: np.ndarray


@dataclass(frozen=True)
class PersonRow:
    id: int
    name: str
    created: datetime
    updated: datetime
    n_templates: int
    first_template_id: int | None


def _json_default(value: object) -> object:
    """``json.dumps`` ``default=``: NumPy scalars and arrays, tuples and sets as JSON values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
