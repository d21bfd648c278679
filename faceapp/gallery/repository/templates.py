"""Templates and their crops: store (one by one or in bulk), count, list, read as index rows,
re-embed, delete."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence

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
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from faceapp.errors import GalleryError
from faceapp.gallery import fieldcrypt
from faceapp.gallery.database import bump_generation
from faceapp.gallery.orm import FaceCrop, FaceTemplate, Person, utcnow
from faceapp.gallery.repository.rows import IndexRows, NewTemplate, _json_default
from faceapp.gallery.types import EMBEDDING_DTYPE, embedding_to_bytes


class TemplateQueries:
    """The templates part of :class:`~faceapp.gallery.repository.GalleryRepository`."""

    session: Session

    def add_templates(self, person: Person, templates: Sequence[NewTemplate]) -> list[int]:
        """Store templates (and their crops) for ``person``; returns their ids in order.

        In a field-encrypted gallery the embedding and crop are sealed with the person's key
        and bound to the template's id, which is therefore allocated before the INSERT (the
        server never sees them in clear, not even for a moment)."""
        cipher = fieldcrypt.cipher_of(self.session)
        key = None if cipher is None else fieldcrypt.person_keys(
            self.session, cipher, [int(person.id)])[int(person.id)]
        ids: list[int] = []
        for t in templates:
            emb = np.asarray(t.embedding, dtype=np.float32)
            row = FaceTemplate(
                person_id=person.id,
                model_id=t.model_id,
                source=t.source[:500],
                quality_json=json.dumps(t.quality, sort_keys=True, default=_json_default),
                created=t.created or utcnow(),
            )
            if cipher is None or key is None:
                row.embedding = emb
                if t.crop_png is not None:
                    row.crop = FaceCrop(png=t.crop_png)
            else:
                tid, pid = self._allocate_template_ids(1)[0], int(person.id)
                row.id, row.dim = tid, int(emb.shape[0])
                row.embedding = cipher.seal(  # type: ignore[assignment]
                    key, fieldcrypt.EMBEDDING, tid, pid, embedding_to_bytes(emb))
                row.source = cipher.seal_text(key, fieldcrypt.SOURCE, tid, pid, t.source[:500])
                if t.crop_png is not None:
                    row.crop = FaceCrop(png=cipher.seal(key, fieldcrypt.CROP, tid, pid,
                                                        bytes(t.crop_png)))
            self.session.add(row)
            self.session.flush()
            if cipher is not None:
                set_committed_value(row, "embedding", emb)
                set_committed_value(row, "source", t.source[:500])
            ids.append(int(row.id))
        person.updated = utcnow()
        bump_generation(self.session)
        return ids

    def _allocate_template_ids(self, n: int) -> list[int]:
        """``n`` new template ids, taken before the rows are written (their ciphertext is
        bound to them): the column's sequence on PostgreSQL; above the largest id on SQLite,
        whose writers are serialised by ``BEGIN IMMEDIATE``."""
        conn = self.session.connection()
        if conn.dialect.name == "postgresql":
            return [int(i) for i in conn.exec_driver_sql(
                "SELECT nextval(pg_get_serial_sequence('face_template', 'id')) "
                f"FROM generate_series(1, {int(n)})").scalars()]
        self.session.flush()
        top = int(conn.execute(select(func.coalesce(func.max(FaceTemplate.id), 0))).scalar() or 0)
        return list(range(top + 1, top + 1 + n))

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
            column("id", Integer),
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
        blobs: list[bytes] = [raw[i * width : (i + 1) * width] for i in range(n)]
        sources = [source[:500]] * n
        tids: list[int] | None = None
        cipher = fieldcrypt.cipher_of(self.session)
        if cipher is not None and n:
            keys = fieldcrypt.person_keys(self.session, cipher, pids.tolist(), create_missing=True)
            tids = self._allocate_template_ids(n)
            blobs = [cipher.seal(keys[int(p)], fieldcrypt.EMBEDDING, t, int(p), b)
                     for t, p, b in zip(tids, pids.tolist(), blobs, strict=True)]
            if source:
                sources = [cipher.seal_text(keys[int(p)], fieldcrypt.SOURCE, t, int(p), source[:500])
                           for t, p in zip(tids, pids.tolist(), strict=True)]
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
                "(id, person_id, model_id, dim, embedding, source, quality_json, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            )
            for start in range(0, n, batch):
                stop = min(n, start + batch)
                conn.exec_driver_sql(
                    sql,
                    [
                        (None if tids is None else tids[i], int(pids[i]), model_id, dim,
                         blobs[i], sources[i], "{}", created)
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
                        "embedding": blobs[i],
                        "source": sources[i],
                        "quality_json": "{}",
                        "created": now,
                    } | ({} if tids is None else {"id": tids[i]})
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

    def count_people_with_templates(self, model_id: str) -> int:
        """People with at least one template of ``model_id`` (the G of a 1:K search)."""
        stmt = select(func.count(func.distinct(FaceTemplate.person_id))).where(
            FaceTemplate.model_id == model_id)
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
        return sum(
            int(self.session.execute(select(func.count()).select_from(FaceCrop)
                                     .where(FaceCrop.template_id.in_(chunk))).scalar_one())
            for chunk in _chunks(template_ids))

    def crop_png(self, template_id: int) -> bytes | None:
        return self.crops([template_id]).get(int(template_id))

    def crops(self, template_ids: Iterable[int]) -> dict[int, bytes]:
        cipher = fieldcrypt.cipher_of(self.session)
        out: dict[int, bytes] = {}
        for chunk in _chunks(template_ids):
            stmt = (select(FaceCrop.template_id, FaceTemplate.person_id, FaceCrop.png)
                    .join(FaceTemplate, FaceTemplate.id == FaceCrop.template_id)
                    .where(FaceCrop.template_id.in_(chunk)))
            rows = self.session.execute(stmt).all()
            if cipher is None:
                out.update({int(t): bytes(p) for t, _, p in rows})
                continue
            keys = fieldcrypt.person_keys(self.session, cipher, {int(r[1]) for r in rows})
            out.update({int(t): cipher.open(keys[int(p)], fieldcrypt.CROP, int(t), int(p), png)
                        for t, p, png in rows})
        return out

    def _template(self, template_id: int) -> FaceTemplate:
        row = self.session.get(FaceTemplate, template_id)
        if row is None:
            raise GalleryError(f"no template with id {template_id}")
        return row

    def delete_template(self, template_id: int) -> int:
        """Delete one template (and its crop); returns its person id."""
        row = self._template(template_id)
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
        cipher = fieldcrypt.cipher_of(self.session)
        result = self.session.connection().execute(stmt)
        filled = 0
        while True:
            rows = result.fetchmany(chunk)
            if not rows:
                break
            if filled + len(rows) > n:
                raise GalleryError("the gallery changed while it was being read")
            t, p, blobs = zip(*rows, strict=True)
            if cipher is not None:
                keys = fieldcrypt.person_keys(self.session, cipher, set(p))
                blobs = tuple(cipher.open(keys[int(pi)], fieldcrypt.EMBEDDING, int(ti), int(pi), b)
                              for ti, pi, b in rows)
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
        row = self._template(template_id)
        cipher = fieldcrypt.cipher_of(self.session)
        if cipher is None:
            row.replace_embedding(model_id, embedding)
            return
        emb = np.asarray(embedding, dtype=np.float32)
        pid = int(row.person_id)
        key = fieldcrypt.person_keys(self.session, cipher, [pid])[pid]
        row.model_id, row.dim = model_id, int(emb.shape[0])
        row.embedding = cipher.seal(  # type: ignore[assignment]
            key, fieldcrypt.EMBEDDING, int(template_id), pid, embedding_to_bytes(emb))
        self.session.flush()
        set_committed_value(row, "embedding", emb)


_IN_CHUNK = 500
"""Ids per ``IN (...)`` list (below SQLite's variable limit)."""


def _chunks(ids: Iterable[int]) -> Iterator[list[int]]:
    """``ids`` in lists of at most :data:`_IN_CHUNK` (none for no ids)."""
    items = list(ids)
    for start in range(0, len(items), _IN_CHUNK):
        yield items[start : start + _IN_CHUNK]
