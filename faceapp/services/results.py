"""What the services return: frozen dataclasses, each with ``to_dict`` for ``--json``.

Scores are similarities (higher = more alike); non-finite scores become ``null`` in JSON.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from faceapp.types import Box


@dataclass(frozen=True)
class EnrollReport:
    """``accepted``: sources stored as templates; ``rejected``: (source, reason)."""

    person: str
    accepted: list[str]
    rejected: list[tuple[str, str]]
    templates_added: int

    def to_dict(self) -> dict[str, object]:
        return {
            "person": self.person,
            "accepted": list(self.accepted),
            "rejected": [{"source": s, "reason": r} for s, r in self.rejected],
            "templates_added": self.templates_added,
        }


@dataclass(frozen=True)
class VerifyResult:
    """1:1 decision: ``match`` is ``score >= threshold`` (best template of ``person``).
    ``faces_found``: faces in the probe image; ``face``: the one compared (1-based, in the
    order ``recognize`` lists them)."""

    person: str
    match: bool
    score: float
    threshold: float
    scorer: str
    box: Box | None = None
    faces_found: int = 1
    face: int = 1

    def to_dict(self) -> dict[str, object]:
        return {
            "person": self.person,
            "match": self.match,
            "score": finite_or_none(self.score),
            "threshold": self.threshold,
            "faces_found": self.faces_found,
            "face": self.face,
            "scorer": self.scorer,
            "box": None if self.box is None else [round(v, 2) for v in self.box],
        }


@dataclass(frozen=True)
class RecognizedFace:
    """1:K result for one face.

    ``person``: the best candidate when its score passes τ, else ``None`` (Unknown);
    ``score``: best candidate's score (``-inf`` when the gallery is empty);
    ``candidates``: up to top-k (name, score), best first; ``ambiguous``: the runner-up is
    within the ambiguity margin of a passing best.
    """

    box: Box
    person: str | None
    score: float
    candidates: list[tuple[str, float]]
    ambiguous: bool
    threshold: float = math.nan
    scorer: str = ""

    def to_dict(self) -> dict[str, object]:
        return {
            "box": [round(v, 2) for v in self.box],
            "person": self.person,
            "score": finite_or_none(self.score),
            "candidates": [{"person": n, "score": finite_or_none(s)} for n, s in self.candidates],
            "ambiguous": self.ambiguous,
            "threshold": finite_or_none(self.threshold),
            "scorer": self.scorer,
        }


@dataclass(frozen=True)
class PairScores:
    """Scores of a labelled pairs file: ``scores`` (M,) float64 and ``same`` (M,) bool for
    the M pairs whose two images both gave a face; ``skipped``: pairs left out;
    ``images``: distinct images read; ``problems``: (path, reason) of each image left out."""

    scores: np.ndarray
    same: np.ndarray
    skipped: int
    images: int
    problems: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class PersonSummary:
    """``thumbnail_png``: PNG of the person's first stored crop (``b""`` if none)."""

    id: int
    name: str
    n_templates: int
    created: datetime
    thumbnail_png: bytes = field(repr=False)
    expires: datetime | None = None
    """When the gallery's retention policy deletes them (``None``: no retention policy)."""

    def to_dict(self) -> dict[str, object]:
        return {"id": self.id, "name": self.name, "n_templates": self.n_templates,
                "created": self.created.isoformat(),
                "expires": None if self.expires is None else self.expires.isoformat()}


@dataclass(frozen=True)
class TemplateSummary:
    """One stored template: its crop (PNG), source label, quality measures and model."""

    id: int
    crop_png: bytes = field(repr=False)
    source: str = ""
    quality: dict[str, object] = field(default_factory=dict)
    created: datetime | None = None
    model_id: str = ""

    def to_dict(self) -> dict[str, object]:
        return {"id": self.id, "source": self.source, "quality": self.quality,
                "created": None if self.created is None else self.created.isoformat(),
                "model_id": self.model_id, "has_crop": bool(self.crop_png)}


@dataclass(frozen=True)
class ReembedReport:
    """What ``reembed`` did: templates recomputed for ``model_id``, and how many of them came
    from the small aligned crops older versions stored (their crop for the new model is
    re-derived from that crop: upsampled, and black where the new framing is wider) rather
    than from a stored face picture."""

    recomputed: int
    from_old_crops: int
    model_id: str

    def __str__(self) -> str:
        old = f", {self.from_old_crops} re-derived from old small crops" if self.from_old_crops else ""
        return f"{self.recomputed} template(s) recomputed for model {self.model_id}{old}"

    def to_dict(self) -> dict[str, object]:
        return {"recomputed": self.recomputed, "from_old_crops": self.from_old_crops,
                "model_id": self.model_id}


@dataclass(frozen=True)
class GalleryTransfer:
    """Counts of an export or import."""

    people: int
    templates: int
    skipped: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {"people": self.people, "templates": self.templates, "skipped": self.skipped}


@dataclass(frozen=True)
class ExpiredPerson:
    """Someone deleted (or, in a dry run, to be deleted) by the retention policy."""

    name: str
    expired: datetime
    templates_deleted: int

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "expired": self.expired.isoformat(),
                "templates_deleted": self.templates_deleted}


@dataclass(frozen=True)
class DeletionReceipt:
    """What a deletion removed, to answer an erasure request (no biometric data in it).

    ``removed_ids_sha256``: SHA-256 of the removed record ids
    (``person:<id>`` then ``template:<id>`` lines, ascending), so that the gallery's owner
    can later show which records went without keeping them. ``storage``: how the bytes
    left the disk (:class:`~faceapp.gallery.database.PurgeReport`, snapshots removed).
    """

    person: str
    deleted_at: datetime
    gallery: str
    gallery_uuid: str
    templates: int
    crops: int
    removed_ids_sha256: str
    storage: dict[str, object]
    encrypted: bool

    def to_dict(self) -> dict[str, object]:
        return {"format": "faceapp-deletion-receipt", "version": 1, "person": self.person,
                "deleted_at": self.deleted_at.isoformat(), "gallery": self.gallery,
                "gallery_uuid": self.gallery_uuid,
                "removed": {"people": 1, "templates": self.templates, "crops": self.crops},
                "removed_ids_sha256": self.removed_ids_sha256,
                "encrypted_at_rest": self.encrypted, "storage": dict(self.storage)}


def finite_or_none(x: float) -> float | None:
    """``x`` as a float, or ``None`` (JSON ``null``) when it is not finite."""
    return float(x) if math.isfinite(x) else None
