"""1:K search inside PostgreSQL with pgvector: an HNSW short list, re-scored exactly.

When a gallery lives on a PostgreSQL server with the ``vector`` extension, every template
is also stored as a pgvector ``vector`` in the table ``template_vector`` (one row per
template, deleted with it by ``ON DELETE CASCADE``), and one partial HNSW index per model
(``vector_ip_ops``, inner product, on ``embedding::vector(D)`` for the rows of that model)
lets the server answer "the nearest templates to this probe" without the client holding
the gallery in memory.

:meth:`ServerSearch.identify` asks the server for a short list of ``shortlist`` templates
per probe (HNSW, ``hnsw.ef_search`` at least as wide), re-scores each candidate exactly in
float32 on the client (the same cosine as :class:`~faceapp.gallery.matching.GalleryIndex`),
keeps each person's best template and returns the top-``k`` people as
:class:`~faceapp.gallery.matching.Identification` results. The answer equals the exact
search whenever the short list holds the true best templates; how often that is so on real
embeddings is measured by ``faceapp bench gallery --db URL`` (HNSW is approximate).

The vector table is filled from ``face_template`` by :meth:`ServerSearch.sync` (templates
written by any desktop, any faceapp version): rows without a vector, or whose model changed
(reembed), get one. The vectors are plain float32 on the server: whoever administers the
server can read them, which is why a field-encrypted gallery (the default, see
:mod:`faceapp.gallery.fieldcrypt`) is never searched here. Nothing here runs at import;
without PostgreSQL or pgvector, :func:`server_search_available` says why and the client-side
index is used instead.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass

import numpy as np
from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    delete,
    func,
    select,
    text,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session

from faceapp.errors import GalleryError
from faceapp.gallery.matching import (
    DEFAULT_AMBIGUITY_MARGIN,
    Candidate,
    Identification,
    l2_normalize,
)
from faceapp.gallery.matching.normalised import rescored, shortlist_size
from faceapp.gallery.orm import FaceTemplate
from faceapp.nn.open_set import RAW_SCORES, ScoreNormaliser

logger = logging.getLogger(__name__)

_MODEL_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")

_metadata = MetaData()


def _vector_type():  # type: ignore[no-untyped-def]
    from pgvector.sqlalchemy import Vector  # only needed when a server gallery is used

    return Vector()


def _table() -> Table:
    """The ``template_vector`` table (built on first use: pgvector is imported lazily)."""
    if "template_vector" not in _metadata.tables:
        Table(
            "template_vector",
            _metadata,
            Column("template_id", BigInteger,
                   ForeignKey(FaceTemplate.id, ondelete="CASCADE"), primary_key=True),
            Column("person_id", Integer, nullable=False),
            Column("model_id", String(64), nullable=False),
            Column("dim", Integer, nullable=False),
            Column("embedding", _vector_type(), nullable=False),
        )
    return _metadata.tables["template_vector"]


@dataclass(frozen=True)
class ServerSearchConfig:
    """``shortlist``: templates the HNSW pass returns per probe before the exact re-score
    (at least ``k``; wider means higher recall and more work). ``ef_search``: HNSW search
    width (raised to ``shortlist`` when smaller); 800 is the narrowest width that found
    the exact top-1 person for every probe of ``faceapp bench gallery --db`` at 10⁶
    templates of real-embedding statistics (200 of 200; 0.98 at 400, 0.96 at 200).
    ``m`` / ``ef_construction``: HNSW build parameters. ``sync_chunk``: templates copied
    per statement by :meth:`ServerSearch.sync`."""

    shortlist: int = 100
    ef_search: int = 800
    m: int = 16
    ef_construction: int = 64
    sync_chunk: int = 20_000


@dataclass(frozen=True)
class Availability:
    """Whether the database can search itself, and if not, why (a sentence for the user)."""

    available: bool
    reason: str


ENCRYPTED_REASON = (
    "the gallery's embeddings are encrypted on the client (field-level encryption), so the "
    "server cannot compare them; it is searched on this desktop (search=client). In-server "
    "search needs a gallery created with FACEAPP_FIELD_ENCRYPTION=off, whose embeddings the "
    "server's operator can read")


def server_search_available(engine: Engine) -> Availability:
    """PostgreSQL with the ``vector`` extension installed or installable by this role."""
    if engine.dialect.name != "postgresql":
        return Availability(False, f"the gallery is on {engine.dialect.name}, not PostgreSQL")
    from faceapp.gallery.fieldcrypt import is_field_encrypted

    if is_field_encrypted(engine):
        return Availability(False, ENCRYPTED_REASON)
    try:
        import pgvector.sqlalchemy  # noqa: F401
    except ImportError:
        return Availability(False, "the pgvector Python package is not installed")
    with engine.connect() as conn:
        installed = conn.execute(text(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'")).scalar()
        if installed:
            return Availability(True, f"pgvector {installed}")
        offered = conn.execute(text(
            "SELECT default_version FROM pg_available_extensions WHERE name = 'vector'")).scalar()
    if offered is None:
        return Availability(False, "the server has no pgvector extension (CREATE EXTENSION "
                                   "vector is not possible there)")
    return Availability(True, f"pgvector {offered} (not yet created in this database)")


def _index_name(model_id: str, dim: int) -> str:
    digest = hashlib.sha1(f"{model_id}/{dim}".encode()).hexdigest()[:16]
    return f"ix_template_vector_hnsw_{digest}"


def _check_model_id(model_id: str) -> str:
    if not _MODEL_ID_RE.match(model_id):
        raise GalleryError(f"model id {model_id!r} is not valid for server-side search")
    return model_id


class ServerSearch:
    """pgvector search of one PostgreSQL gallery (see the module docstring).

    Create with :meth:`open` (it creates the extension, the table and its indexes when
    missing). Thread-compatible: callers pass their own session/connection.
    """

    def __init__(self, engine: Engine, config: ServerSearchConfig = ServerSearchConfig()) -> None:
        self._engine = engine
        self.config = config
        self._indexed: set[tuple[str, int]] = set()

    @classmethod
    def open(cls, engine: Engine, config: ServerSearchConfig = ServerSearchConfig()
             ) -> ServerSearch:
        """Prepare the database for server-side search; :class:`GalleryError` when it
        cannot (no PostgreSQL, no pgvector, no right to create the extension/table)."""
        avail = server_search_available(engine)
        if not avail.available:
            raise GalleryError(f"server-side search is not available: {avail.reason}")
        try:
            with engine.begin() as conn:
                conn.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
            with engine.begin() as conn:
                _table().create(conn, checkfirst=True)
        except Exception as err:
            raise GalleryError(f"cannot prepare server-side search: {err}") from err
        return cls(engine, config)

    # ------------------------------------------------------------------ sync
    def sync(self) -> int:
        """Copy templates that have no vector (or a vector of another model) into
        ``template_vector`` and make sure each model has its HNSW index; returns how many
        vectors were written. Safe to run from several desktops at once."""
        table = _table()
        written = 0
        with self._engine.begin() as conn:
            # a reembedded template keeps its id but changes model: drop its old vector
            conn.execute(delete(table).where(
                table.c.template_id == FaceTemplate.id,
                table.c.model_id != FaceTemplate.model_id,
            ))
        while True:
            with self._engine.begin() as conn:
                rows = conn.execute(
                    select(FaceTemplate.id, FaceTemplate.person_id, FaceTemplate.model_id,
                           FaceTemplate.dim, FaceTemplate.embedding)
                    .outerjoin(table, table.c.template_id == FaceTemplate.id)
                    .where(table.c.template_id.is_(None))
                    .order_by(FaceTemplate.id)
                    .limit(self.config.sync_chunk)
                ).all()
                if not rows:
                    break
                values = [
                    {"template_id": int(r[0]), "person_id": int(r[1]), "model_id": str(r[2]),
                     "dim": int(r[3]), "embedding": np.asarray(r[4], dtype=np.float32)}
                    for r in rows
                ]
                from sqlalchemy.dialects.postgresql import insert

                conn.execute(insert(table).on_conflict_do_nothing(
                    index_elements=["template_id"]), values)
                written += len(values)
            if len(rows) < self.config.sync_chunk:
                break
        with self._engine.begin() as conn:
            models = conn.execute(select(table.c.model_id, table.c.dim).distinct()).all()
            for model_id, dim in models:
                self._ensure_index(conn, str(model_id), int(dim))
        if written:
            logger.info("server search: %d template vector(s) written", written)
        return written

    def _ensure_index(self, conn: Connection, model_id: str, dim: int) -> None:
        if (model_id, dim) in self._indexed:
            return
        name = _index_name(_check_model_id(model_id), int(dim))
        conn.execute(text(
            f"CREATE INDEX IF NOT EXISTS {name} ON template_vector USING hnsw "
            f"((embedding::vector({int(dim)})) vector_ip_ops) "
            f"WITH (m = {int(self.config.m)}, ef_construction = {int(self.config.ef_construction)}) "
            f"WHERE model_id = '{model_id}' AND dim = {int(dim)}"
        ))
        self._indexed.add((model_id, dim))

    def count(self, model_id: str) -> int:
        """Vectors stored for ``model_id``."""
        table = _table()
        with self._engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(table)
                                    .where(table.c.model_id == model_id)).scalar() or 0)

    # ------------------------------------------------------------------ search
    def shortlist(self, session: Session | Connection, probe: np.ndarray, *, model_id: str,
                  n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The ``n`` templates the HNSW index ranks nearest to one unit (D,) probe:
        (template ids (n',) int64, person ids (n',) int64, embeddings (n', D) float32)."""
        model_id = _check_model_id(model_id)
        q = np.asarray(probe, dtype=np.float32).reshape(-1)
        dim = int(q.shape[0])
        ef = max(int(self.config.ef_search), int(n))
        session.execute(text("SELECT set_config('hnsw.ef_search', :ef, true)"),
                        {"ef": str(min(ef, 1000))})
        # the ORDER BY expression and the model/dim predicate are literally those of the
        # partial index, so the planner can use it (a bound model id could not prove it)
        stmt = text(
            "SELECT template_id, person_id, embedding FROM template_vector "
            f"WHERE model_id = '{model_id}' AND dim = {dim} "
            f"ORDER BY (embedding::vector({dim})) <#> CAST(:q AS vector({dim})) "
            "LIMIT :n"
        ).bindparams(bindparam("q", type_=_vector_type())).columns(
            template_id=BigInteger(), person_id=Integer(), embedding=_vector_type())
        rows = session.execute(stmt, {"q": q, "n": int(n)}).all()
        if not rows:
            return (np.zeros(0, np.int64), np.zeros(0, np.int64),
                    np.zeros((0, dim), np.float32))
        tids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        pids = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows))
        emb = np.stack([np.asarray(r[2], dtype=np.float32) for r in rows])
        return tids, pids, emb

    def identify(
        self,
        session: Session | Connection,
        probes: np.ndarray,
        *,
        model_id: str,
        threshold: float,
        k: int = 5,
        margin: float = DEFAULT_AMBIGUITY_MARGIN,
        normaliser: ScoreNormaliser = RAW_SCORES,
    ) -> list[Identification]:
        """Top-``k`` people for each of (P, D) probes, as ``GalleryIndex.identify`` would
        answer them when each probe's true best templates are in the short list (with
        ``normaliser``: the short-listed rows re-scored by it, see
        :mod:`faceapp.gallery.matching.normalised`)."""
        if k < 1:
            raise ValueError("k must be at least 1")
        q = l2_normalize(np.atleast_2d(np.asarray(probes, dtype=np.float32)))
        n = max(int(self.config.shortlist), shortlist_size(k, normaliser))
        results: list[Identification] = []
        for row in q:
            _, pids, emb = self.shortlist(session, row, model_id=model_id, n=n)
            if normaliser.active:
                results.append(Identification.of(rescored(row, pids, emb, k, normaliser),
                                                 threshold, margin))
            else:
                results.append(_identification(row, pids, emb, k, threshold, margin))
        return results


def _identification(probe: np.ndarray, pids: np.ndarray, emb: np.ndarray, k: int,
                    threshold: float, margin: float) -> Identification:
    """Exact cosine of the short-listed rows, best template per person, top ``k`` people."""
    if pids.shape[0] == 0:
        return Identification.of((), threshold, margin)
    scores = emb @ probe
    best: dict[int, float] = {}
    for pid, s in zip(pids.tolist(), scores.tolist(), strict=True):
        if pid not in best or s > best[pid]:
            best[pid] = s
    ranked = sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
    return Identification.of([Candidate(int(p), float(s)) for p, s in ranked], threshold, margin)
