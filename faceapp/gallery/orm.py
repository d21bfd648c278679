"""ORM mapping of the gallery (SQLAlchemy 2.x typed declarative).

Tables:

* ``person``: one row per enrolled identity, unique ``name``.
* ``face_template``: one embedding of one face of a person, tagged with the ``model_id``
  of the encoder that produced it (templates of different models are never compared).
* ``face_crop``: the aligned face crop (PNG bytes) a template was computed from, so that
  ``reembed`` can recompute templates for a new model and the GUI can show thumbnails.
  Kept out of ``face_template`` so that loading the search index reads no image bytes.
* ``event``: an append-only log of enrol / verify / recognize / rename / delete / import /
  reembed operations. It refers to the person by their random pseudonym (no foreign key, never
  the name: :mod:`faceapp.gallery.pseudonyms`), so that the history survives a deletion and
  nothing in it names the deleted person.
* ``audit_entry``: the hash-chained, append-only audit log (:mod:`faceapp.gallery.audit`); its
  ``subject`` is a pseudonym too.
* ``consent``: consent to enrolment per person (:mod:`faceapp.gallery.privacy`).
* ``gallery_key``: field-level encryption (:mod:`faceapp.gallery.fieldcrypt`): the key id and
  ratchet epoch of the key that wraps every person's key, and a check value; no key in it.
* ``setting``: small key/value store (user-chosen thresholds, see ``services``).
* ``schema_info``: the schema version (one row), a ``generation`` counter incremented by
  every change of people/templates (so that a process can tell its cached index is stale)
  and a random ``gallery_uuid`` naming this gallery (for index snapshots).
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime

import numpy as np
from sqlalchemy import (
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, validates

from faceapp.gallery.types import EmbeddingType, SealedField

NAME_MAX_LEN = 200


def utcnow() -> datetime:
    """Timezone-aware current UTC time (stored naive-UTC by SQLite, aware by PostgreSQL)."""
    return datetime.now(UTC)


def new_pseudonym() -> str:
    """A fresh random pseudonym of a person: ``p:`` + 16 hex digits (64 random bits,
    nothing derived from the name; see :mod:`faceapp.gallery.pseudonyms`)."""
    return "p:" + secrets.token_hex(8)


class Base(DeclarativeBase):
    """Declarative base of the gallery tables."""


class SchemaInfo(Base):
    __tablename__ = "schema_info"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    generation: Mapped[int] = mapped_column(Integer, default=0)
    app_version: Mapped[str] = mapped_column(String(40), default="")
    gallery_uuid: Mapped[str] = mapped_column(String(36), default="")


class Person(Base):
    __tablename__ = "person"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_MAX_LEN), unique=True)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )
    key_wrapped: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    """The person's data key (field encryption), wrapped by the gallery's key of epoch
    ``key_epoch``; ``None`` in a gallery without field encryption."""
    key_epoch: Mapped[int | None] = mapped_column(Integer, default=None)
    pseudonym: Mapped[str] = mapped_column(String(40), default=new_pseudonym, index=True,
                                           unique=True)
    """The random token by which events and the audit log refer to this person (see
    :mod:`faceapp.gallery.pseudonyms`); deleted with the row, which unlinks the history."""

    templates: Mapped[list[FaceTemplate]] = relationship(
        back_populates="person",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="FaceTemplate.id",
    )

    def __repr__(self) -> str:
        return f"Person(id={self.id!r}, name={self.name!r})"


class FaceTemplate(Base):
    __tablename__ = "face_template"
    __table_args__ = (Index("ix_face_template_model_person", "model_id", "person_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    person_id: Mapped[int] = mapped_column(
        ForeignKey("person.id", ondelete="CASCADE"), index=True
    )
    model_id: Mapped[str] = mapped_column(String(64))
    dim: Mapped[int] = mapped_column(Integer)
    embedding: Mapped[np.ndarray] = mapped_column(EmbeddingType())
    source: Mapped[str] = mapped_column(Text, default="")
    """Where the face came from (at most 500 characters; sealed text in a field-encrypted
    gallery: file paths often name the person)."""
    quality_json: Mapped[str] = mapped_column(Text, default="{}")
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    person: Mapped[Person] = relationship(back_populates="templates")
    crop: Mapped[FaceCrop | None] = relationship(
        back_populates="template",
        cascade="all, delete-orphan",
        passive_deletes=True,
        uselist=False,
    )

    @validates("embedding")
    def _check_embedding(self, key: str, value: np.ndarray) -> np.ndarray:
        """An embedding must be (dim,); an unset ``dim`` is taken from the embedding."""
        if isinstance(value, SealedField):
            return value  # ciphertext set by the repository (``dim`` set by it too)
        arr = np.asarray(value, dtype=np.float32)
        if arr.ndim != 1:
            raise ValueError(f"an embedding must be 1-D, got shape {arr.shape}")
        if self.dim is None:
            self.dim = int(arr.shape[0])
        elif arr.shape[0] != self.dim:
            raise ValueError(f"embedding has {arr.shape[0]} values, template dim is {self.dim}")
        return arr

    def replace_embedding(self, model_id: str, embedding: np.ndarray) -> None:
        """Swap in the template of another model (possibly of another dimension)."""
        self.dim = None  # type: ignore[assignment]
        self.embedding = embedding
        self.model_id = model_id

    @property
    def quality(self) -> dict[str, object]:
        return json.loads(self.quality_json or "{}")

    def __repr__(self) -> str:
        return (
            f"FaceTemplate(id={self.id!r}, person_id={self.person_id!r}, "
            f"model_id={self.model_id!r}, dim={self.dim!r})"
        )


class FaceCrop(Base):
    __tablename__ = "face_crop"

    template_id: Mapped[int] = mapped_column(
        ForeignKey("face_template.id", ondelete="CASCADE"), primary_key=True
    )
    png: Mapped[bytes] = mapped_column(LargeBinary)

    template: Mapped[FaceTemplate] = relationship(back_populates="crop")


class Event(Base):
    __tablename__ = "event"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    kind: Mapped[str] = mapped_column(String(20))
    person: Mapped[str | None] = mapped_column(String(NAME_MAX_LEN))
    """The person's pseudonym (``Person.pseudonym``), never their name; NULL: no person."""
    outcome: Mapped[str] = mapped_column(String(40))
    score: Mapped[float | None] = mapped_column(Float)
    threshold: Mapped[float | None] = mapped_column(Float)
    scorer: Mapped[str | None] = mapped_column(String(40))
    model_id: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text, default="")


class GalleryKey(Base):
    """Field-level encryption of this gallery (one row, ``id`` = 1; absent: fields in clear).

    ``key_id`` names the gallery's field key (held, wrapped, in a key file on the client,
    never here); ``epoch`` counts its ratchet steps (one per deletion of a person: every
    remaining person key is re-wrapped by the next key, the old one is destroyed);
    ``check_value`` is a known text sealed by the key of ``epoch`` (a wrong key file is refused)."""

    __tablename__ = "gallery_key"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key_id: Mapped[str] = mapped_column(String(36))
    epoch: Mapped[int] = mapped_column(Integer, default=0)
    check_value: Mapped[bytes] = mapped_column(LargeBinary)


class Setting(Base):
    __tablename__ = "setting"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class AuditEntry(Base):
    """One entry of the tamper-evident audit log (see :mod:`faceapp.gallery.audit`):
    who/what/when, never biometric data. ``time`` is ISO-8601 UTC text (hashed as stored);
    ``hash`` = SHA-256 of ``prev_hash`` and the entry's canonical JSON. SQLite triggers
    refuse UPDATE and DELETE on this table (append-only)."""

    __tablename__ = "audit_entry"
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    time: Mapped[str] = mapped_column(String(40), index=True)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(40))
    outcome: Mapped[str] = mapped_column(String(40))
    subject: Mapped[str] = mapped_column(String(NAME_MAX_LEN), default="")
    detail: Mapped[str] = mapped_column(Text, default="")
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class ConsentRecord(Base):
    """Consent to enrolment of one person (see :mod:`faceapp.gallery.privacy`): who gave
    it, who recorded it, when, for what purpose, on what basis. Deleted with the person."""

    __tablename__ = "consent"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    person_id: Mapped[int] = mapped_column(
        ForeignKey("person.id", ondelete="CASCADE"), index=True
    )
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    given_by: Mapped[str] = mapped_column(String(NAME_MAX_LEN))
    recorded_by: Mapped[str] = mapped_column(String(200))
    purpose: Mapped[str] = mapped_column(String(500))
    basis: Mapped[str] = mapped_column(Text)
