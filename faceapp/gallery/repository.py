"""Gallery repository: queries and writes on a caller-owned :class:`Session`.

The repository never commits, rolls back or opens sessions: the caller owns the unit of
work (``with write_session(engine) as s: GalleryRepository(s).add_person(...)``), so that
an enrolment of several images is all-or-nothing.
"""

from __future__ import annotations

import json
import logging
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from sqlalchemy import (
    DateTime,
    Integer,
    LargeBinary,
    String,
    column,
    delete,
    func,
    insert,
    select,
    table,
    type_coerce,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from faceapp.errors import DuplicatePerson, GalleryError, PersonNotFound
from faceapp.gallery import audit
from faceapp.gallery.database import bump_generation
from faceapp.gallery.orm import (
    NAME_MAX_LEN,
    Event,
    FaceCrop,
    FaceTemplate,
    Person,
    Setting,
    utcnow,
)
from faceapp.gallery.types import EMBEDDING_DTYPE, embedding_to_bytes

logger = logging.getLogger(__name__)


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


class GalleryRepository:
    """People, templates, crops, events and settings, on the caller's session."""

    def __init__(self, session: Session) -> None:
        self.session = session

    # ------------------------------------------------------------------ people
    def find_person(self, name: str) -> Person | None:
        """The person called ``name`` (normalised), or ``None``."""
        key = normalize_name(name)
        return self.session.execute(select(Person).where(Person.name == key)).scalar_one_or_none()

    def get_person(self, name: str) -> Person:
        person = self.find_person(name)
        if person is None:
            raise PersonNotFound(f"no person named {normalize_name(name)!r} in the gallery")
        return person

    def get_person_by_id(self, person_id: int) -> Person:
        person = self.session.get(Person, person_id)
        if person is None:
            raise PersonNotFound(f"no person with id {person_id} in the gallery")
        return person

    def add_person(self, name: str) -> Person:
        key = normalize_name(name)
        if self.find_person(key) is not None:
            raise DuplicatePerson(f"a person named {key!r} already exists")
        person = Person(name=key)
        self.session.add(person)
        self._flush_unique(key)
        bump_generation(self.session)
        return person

    def _flush_unique(self, key: str) -> None:
        """Flush; a unique-name violation (another process won a race) is DuplicatePerson.

        The check above reads first for a clear message, but only the database's unique
        constraint is race-free: two desktops enrolling the same name on a shared server
        both pass the read, and the second INSERT fails here. The transaction is then
        unusable and is rolled back by the caller's unit of work.
        """
        try:
            self.session.flush()
        except IntegrityError as err:
            text = str(err.orig).lower() if err.orig is not None else str(err).lower()
            if "unique" in text or "duplicate" in text:
                raise DuplicatePerson(f"a person named {key!r} already exists") from err
            raise

    def rename_person(self, old: str, new: str) -> Person:
        person = self.get_person(old)
        key = normalize_name(new)
        if key == person.name:
            return person
        other = self.find_person(key)
        if other is not None and other.id != person.id:
            raise DuplicatePerson(f"a person named {key!r} already exists")
        person.name = key
        person.updated = utcnow()
        self._flush_unique(key)
        bump_generation(self.session)
        return person

    def delete_person(self, name: str) -> tuple[int, int]:
        """Delete a person with their templates and crops (database cascade).

        Returns (person id, number of templates deleted).
        """
        person = self.get_person(name)
        n = self.count_templates(person_id=person.id)
        pid = person.id
        self.session.execute(delete(Person).where(Person.id == pid))
        self.session.expunge(person)
        bump_generation(self.session)
        return pid, n

    def people(self) -> list[PersonRow]:
        """All people sorted by name, with their template count and first template id."""
        counts = (
            select(
                FaceTemplate.person_id.label("pid"),
                func.count(FaceTemplate.id).label("n"),
                func.min(FaceTemplate.id).label("first"),
            )
            .group_by(FaceTemplate.person_id)
            .subquery()
        )
        stmt = (
            select(Person.id, Person.name, Person.created, Person.updated, counts.c.n,
                   counts.c.first)
            .outerjoin(counts, counts.c.pid == Person.id)
            .order_by(Person.name)
        )
        return [
            PersonRow(int(r[0]), r[1], r[2], r[3], int(r[4] or 0),
                      None if r[5] is None else int(r[5]))
            for r in self.session.execute(stmt)
        ]

    def person_names(self, ids: Iterable[int] | None = None) -> dict[int, str]:
        """person id -> name (of everyone, or of the people ``ids`` only)."""
        stmt = select(Person.id, Person.name)
        if ids is not None:
            wanted = sorted({int(i) for i in ids})
            if not wanted:
                return {}
            stmt = stmt.where(Person.id.in_(wanted))
        return {int(i): n for i, n in self.session.execute(stmt)}

    def count_other_model_templates(self, model_id: str) -> int:
        """Templates made by another model than ``model_id`` (stale until reembedded)."""
        return int(self.session.execute(
            select(func.count(FaceTemplate.id)).where(FaceTemplate.model_id != model_id)
        ).scalar() or 0)

    # ------------------------------------------------------------------ templates
    def add_templates(self, person: Person, templates: Sequence[NewTemplate]) -> list[int]:
        """Store templates (and their crops) for ``person``; returns their ids in order."""
        ids: list[int] = []
        for t in templates:
            emb = np.asarray(t.embedding, dtype=np.float32)
            row = FaceTemplate(
                person_id=person.id,
                model_id=t.model_id,
                embedding=emb,
                source=t.source[:500],
                quality_json=json.dumps(t.quality, sort_keys=True, default=_json_default),
                created=t.created or utcnow(),
            )
            if t.crop_png is not None:
                row.crop = FaceCrop(png=t.crop_png)
            self.session.add(row)
            self.session.flush()
            ids.append(int(row.id))
        person.updated = utcnow()
        bump_generation(self.session)
        return ids

    def bulk_add_templates(
        self,
        person_ids: np.ndarray,
        embeddings: np.ndarray,
        model_id: str,
        *,
        source: str = "",
        batch: int = 50_000,
    ) -> int:
        """Fast insert of many crop-less templates (synthetic galleries, benchmarks).

        ``person_ids``: (N,) int of existing people; ``embeddings``: (N, D) float.
        Uses one Core ``executemany`` per batch. Returns N.
        """
        emb = np.ascontiguousarray(embeddings, dtype=EMBEDDING_DTYPE)
        pids = np.asarray(person_ids, dtype=np.int64)
        if emb.ndim != 2 or pids.shape != (emb.shape[0],):
            raise ValueError("expected person_ids (N,) and embeddings (N, D)")
        dim = int(emb.shape[1])
        now = utcnow()
        if not np.all(np.isfinite(emb)):
            raise ValueError("embeddings must be finite")
        # a lightweight table clause: plain LargeBinary, so that the rows (already encoded,
        # checked above) skip the per-row EmbeddingType processing
        tbl = table(
            FaceTemplate.__tablename__,
            column("person_id", Integer),
            column("model_id", String),
            column("dim", Integer),
            column("embedding", LargeBinary),
            column("source", String),
            column("quality_json", String),
            column("created", DateTime(timezone=True)),
        )
        n = emb.shape[0]
        raw = emb.tobytes()
        width = dim * EMBEDDING_DTYPE.itemsize
        conn = self.session.connection()
        dialect = conn.dialect
        if dialect.name == "sqlite":
            # driver-level executemany: SQLAlchemy's per-row parameter handling would
            # cost more than SQLite itself. The timestamp is encoded once by the
            # column type's own bind processor, so rows read back like ORM-made ones.
            encode = DateTime(timezone=True).dialect_impl(dialect).bind_processor(dialect)
            created = encode(now) if encode is not None else now
            sql = (
                f"INSERT INTO {FaceTemplate.__tablename__} "
                "(person_id, model_id, dim, embedding, source, quality_json, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)"
            )
            for start in range(0, n, batch):
                stop = min(n, start + batch)
                conn.exec_driver_sql(
                    sql,
                    [
                        (int(pids[i]), model_id, dim, raw[i * width : (i + 1) * width],
                         source, "{}", created)
                        for i in range(start, stop)
                    ],
                )
        else:
            for start in range(0, n, batch):
                rows = [
                    {
                        "person_id": int(pids[i]),
                        "model_id": model_id,
                        "dim": dim,
                        "embedding": raw[i * width : (i + 1) * width],
                        "source": source,
                        "quality_json": "{}",
                        "created": now,
                    }
                    for i in range(start, min(n, start + batch))
                ]
                self.session.execute(insert(tbl), rows)
        bump_generation(self.session)
        return n

    def count_templates(self, *, person_id: int | None = None, model_id: str | None = None) -> int:
        stmt = select(func.count(FaceTemplate.id))
        if person_id is not None:
            stmt = stmt.where(FaceTemplate.person_id == person_id)
        if model_id is not None:
            stmt = stmt.where(FaceTemplate.model_id == model_id)
        return int(self.session.execute(stmt).scalar_one())

    def model_counts(self) -> dict[str, int]:
        """model_id -> number of templates."""
        stmt = select(FaceTemplate.model_id, func.count(FaceTemplate.id)).group_by(
            FaceTemplate.model_id
        )
        return {m: int(n) for m, n in self.session.execute(stmt)}

    def templates_of(self, person: Person) -> list[FaceTemplate]:
        stmt = select(FaceTemplate).where(FaceTemplate.person_id == person.id).order_by(
            FaceTemplate.id
        )
        return list(self.session.execute(stmt).scalars())

    def template_ids_of(self, person_id: int) -> list[int]:
        """Ids of a person's templates, ascending (no embedding decoded)."""
        stmt = select(FaceTemplate.id).where(FaceTemplate.person_id == person_id).order_by(
            FaceTemplate.id)
        return [int(i) for i in self.session.execute(stmt).scalars()]

    def count_crops(self, template_ids: Sequence[int]) -> int:
        ids = list(template_ids)
        n = 0
        for start in range(0, len(ids), 500):
            n += int(self.session.execute(
                select(func.count()).select_from(FaceCrop)
                .where(FaceCrop.template_id.in_(ids[start : start + 500]))).scalar_one())
        return n

    def crop_png(self, template_id: int) -> bytes | None:
        return self.session.execute(
            select(FaceCrop.png).where(FaceCrop.template_id == template_id)
        ).scalar_one_or_none()

    def crops(self, template_ids: Iterable[int]) -> dict[int, bytes]:
        ids = list(template_ids)
        if not ids:
            return {}
        out: dict[int, bytes] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            stmt = select(FaceCrop.template_id, FaceCrop.png).where(
                FaceCrop.template_id.in_(chunk)
            )
            out.update({int(t): bytes(p) for t, p in self.session.execute(stmt)})
        return out

    def delete_template(self, template_id: int) -> int:
        """Delete one template (and its crop); returns its person id."""
        row = self.session.get(FaceTemplate, template_id)
        if row is None:
            raise GalleryError(f"no template with id {template_id}")
        pid = int(row.person_id)
        self.session.execute(delete(FaceTemplate).where(FaceTemplate.id == template_id))
        self.session.expunge(row)
        bump_generation(self.session)
        return pid

    def index_rows(self, model_id: str, chunk: int = 65_536) -> IndexRows:
        """Every template of ``model_id`` as arrays, without touching crops.

        Rows are fetched in chunks whose raw bytes are decoded with one ``np.frombuffer``
        each into a preallocated (N, D) array (no per-row objects kept), so opening a large
        gallery is fast and needs little more memory than the result.
        """
        where = FaceTemplate.model_id == model_id
        n, n_dims, dim = self.session.execute(
            select(func.count(FaceTemplate.id), func.count(func.distinct(FaceTemplate.dim)),
                   func.max(FaceTemplate.dim)).where(where)
        ).one()
        if not n:
            return IndexRows(model_id, np.zeros(0, np.int64), np.zeros(0, np.int64),
                             np.zeros((0, 0), np.float32))
        if n_dims != 1:
            raise GalleryError(f"templates of model {model_id!r} have several dimensions")
        n, dim = int(n), int(dim)
        tids = np.empty(n, dtype=np.int64)
        pids = np.empty(n, dtype=np.int64)
        emb = np.empty((n, dim), dtype=np.float32)
        width = dim * EMBEDDING_DTYPE.itemsize
        # storage order (a sequential scan); the index groups rows by person itself.
        # A Core statement on the connection: no ORM row processing.
        stmt = select(
            FaceTemplate.id, FaceTemplate.person_id,
            type_coerce(FaceTemplate.embedding, LargeBinary),
        ).where(where)
        result = self.session.connection().execute(stmt)
        filled = 0
        while True:
            rows = result.fetchmany(chunk)
            if not rows:
                break
            if filled + len(rows) > n:
                raise GalleryError("the gallery changed while it was being read")
            t, p, blobs = zip(*rows, strict=True)
            raw = b"".join(bytes(b) for b in blobs)
            if len(raw) != len(rows) * width:
                raise GalleryError(f"stored embeddings of model {model_id!r} have the wrong size")
            sl = slice(filled, filled + len(rows))
            tids[sl] = t
            pids[sl] = p
            emb[sl] = np.frombuffer(raw, dtype=EMBEDDING_DTYPE).reshape(len(rows), dim)
            filled += len(rows)
        if filled != n:
            raise GalleryError("the gallery changed while it was being read")
        return IndexRows(model_id, tids, pids, emb)

    def stale_templates(self, model_id: str, limit: int | None = None) -> list[tuple[int, str]]:
        """(template id, model id) of templates not made by ``model_id``, oldest first."""
        stmt = (
            select(FaceTemplate.id, FaceTemplate.model_id)
            .where(FaceTemplate.model_id != model_id)
            .order_by(FaceTemplate.id)
        )
        if limit is not None:
            stmt = stmt.limit(limit)
        return [(int(i), m) for i, m in self.session.execute(stmt)]

    def set_template_embedding(self, template_id: int, model_id: str, embedding: np.ndarray) -> None:
        row = self.session.get(FaceTemplate, template_id)
        if row is None:
            raise GalleryError(f"no template with id {template_id}")
        row.replace_embedding(model_id, embedding)

    # ------------------------------------------------------------------ events, settings
    def log_event(
        self,
        kind: str,
        outcome: str,
        *,
        person: str | None = None,
        score: float | None = None,
        threshold: float | None = None,
        scorer: str | None = None,
        model_id: str | None = None,
        detail: str = "",
    ) -> None:
        """One row of the ``event`` history, and its entry in the audit log (same
        transaction; no biometric data in either)."""
        finite = None if score is None or not np.isfinite(score) else float(score)
        facts = {"score": finite, "threshold": threshold, "scorer": scorer,
                 "model_id": model_id, "detail": detail or None}
        audit.append(self.session, kind, outcome, subject=person or "",
                     detail=json.dumps({k: v for k, v in facts.items() if v is not None},
                                       sort_keys=True, default=_json_default))
        self.session.add(
            Event(
                kind=kind,
                person=person,
                outcome=outcome,
                score=None if score is None or not np.isfinite(score) else float(score),
                threshold=None if threshold is None else float(threshold),
                scorer=scorer,
                model_id=model_id,
                detail=detail,
            )
        )

    def events(self, limit: int = 100, kind: str | None = None) -> list[Event]:
        stmt = select(Event).order_by(Event.id.desc()).limit(limit)
        if kind is not None:
            stmt = stmt.where(Event.kind == kind)
        return list(self.session.execute(stmt).scalars())

    def get_setting(self, key: str) -> str | None:
        row = self.session.get(Setting, key)
        return None if row is None else row.value

    def set_setting(self, key: str, value: str | None) -> None:
        row = self.session.get(Setting, key)
        if value is None:
            if row is not None:
                self.session.delete(row)
            return
        if row is None:
            self.session.add(Setting(key=key, value=value))
        else:
            row.value = value


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


__all__ = [
    "GalleryRepository",
    "IndexRows",
    "NewTemplate",
    "PersonRow",
    "embedding_to_bytes",
    "normalize_name",
]
