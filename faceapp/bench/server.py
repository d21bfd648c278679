"""Benchmark of 1:K search inside PostgreSQL (pgvector HNSW) against the in-memory index.

``faceapp bench gallery --db URL`` runs :func:`bench_server_gallery`: for each gallery size
it fills an empty PostgreSQL database through the gallery code (people, templates, then
:meth:`~faceapp.gallery.server_search.ServerSearch.sync`, which copies the vectors and
builds the HNSW index), then times one probe at a time:

* ``server``: :meth:`ServerSearch.identify` (HNSW short list + exact re-score);
* ``client``: :class:`~faceapp.gallery.matching.GalleryIndex` (exact, in memory), the
  baseline, in the same run on the same data;

and reports p50/p95 latency, recall of the exact top-1 person (and of the full top-k), the
index build time, the client-side memory each mode holds, and how long a new desktop takes
from connecting to its first answer (``usable_s``: it pulls no templates in server mode).

Galleries follow the statistics of real embeddings when ``base`` is given (rows of real
face embeddings, e.g. of LFW images, see :func:`faceapp.bench.inputs.lfw_base_embeddings`):
each enrolled person is a real face's embedding moved by a small perturbation, their
templates and probes are further small perturbations of it, so neighbouring people are as
close as real faces are. Without ``base``, independent Gaussian people are used (HNSW's
worst case); see :func:`faceapp.bench.synthetic.realistic_gallery`. Nothing runs at import.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from faceapp.bench.stats import ms_summary
from faceapp.bench.synthetic import fill_gallery, realistic_gallery
from faceapp.errors import GalleryError
from faceapp.gallery.database import DatabaseConfig, open_database, read_session
from faceapp.gallery.matching import GalleryIndex, l2_normalize
from faceapp.gallery.orm import FaceTemplate
from faceapp.gallery.server_search import ServerSearch, ServerSearchConfig

logger = logging.getLogger(__name__)

_IN_CLEAR = DatabaseConfig(field_encryption=False)
"""In-server search needs the vectors in clear: these scratch galleries opt out of
field-level encryption (a field-encrypted gallery is searched on the client)."""

MODEL_ID = "bench-server"


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def bench_one(url: str, n: int, dim: int, seed: int, *, base: np.ndarray | None,
              probes: int, k: int, per_person: int, config: ServerSearchConfig
              ) -> dict[str, Any]:
    emb, pids, centres = realistic_gallery(n, dim, per_person, seed, base)
    t0 = time.perf_counter()
    engine = open_database(url, _IN_CLEAR)
    try:
        person_ids = fill_gallery(engine, emb, pids, MODEL_ID, name="bench person")
        fill_s = time.perf_counter() - t0
        search = ServerSearch.open(engine, config)
        t0 = time.perf_counter()
        search.sync()
        build_s = time.perf_counter() - t0
        with read_session(engine) as s:
            tids = np.asarray(s.execute(select(FaceTemplate.id).order_by(FaceTemplate.id)).scalars().all(),
                              dtype=np.int64)
    finally:
        engine.dispose()
    rng = np.random.default_rng(seed + 1)
    who = rng.integers(0, centres.shape[0], probes)
    scale = 1.0 / np.sqrt(dim)
    queries = l2_normalize(centres[who] + 0.25 * scale *
                           rng.standard_normal((probes, dim), dtype=np.float32))

    # a new desktop: connect, prepare server search, first answer (no templates pulled)
    rss0 = _rss_mb()
    t0 = time.perf_counter()
    engine = open_database(url, _IN_CLEAR)
    try:
        search = ServerSearch.open(engine, config)
        with engine.connect() as conn:
            search.identify(conn, queries[:1], model_id=MODEL_ID, threshold=0.0, k=k)
        usable_s = time.perf_counter() - t0
        t_server: list[float] = []
        server_res = []
        with engine.connect() as conn:
            for q in queries:
                t = time.perf_counter()
                (res,) = search.identify(conn, q[None], model_id=MODEL_ID, threshold=0.0, k=k)
                t_server.append(time.perf_counter() - t)
                server_res.append(res)
    finally:
        engine.dispose()

    # the in-memory baseline of the same run: pull every template, exact search
    t0 = time.perf_counter()
    index = GalleryIndex.from_arrays(MODEL_ID, tids, person_ids, emb)
    index.people()
    client_open_s = time.perf_counter() - t0
    t_client: list[float] = []
    client_res = []
    for q in queries:
        t = time.perf_counter()
        (res,) = index.identify(q[None], model_id=MODEL_ID, threshold=0.0, k=k)
        t_client.append(time.perf_counter() - t)
        client_res.append(res)
    top1 = sum(a.candidates[0].person_id == b.candidates[0].person_id
               for a, b in zip(server_res, client_res, strict=True))
    topk = sum([c.person_id for c in a.candidates] == [c.person_id for c in b.candidates]
               for a, b in zip(server_res, client_res, strict=True))
    server_ms, client_ms = (ms_summary(t, ("p50", "p95", "max")) for t in (t_server, t_client))
    return {
        "templates": n,
        "people": int(centres.shape[0]),
        "fill_s": round(fill_s, 2),
        "index_build_s": round(build_s, 2),
        "server_ms": server_ms,
        "client_ms": client_ms,
        "p95_ratio_server_vs_client": round(server_ms["p95"] / max(client_ms["p95"], 1e-9), 2),
        "recall_top1": round(top1 / probes, 4),
        "recall_top1_count": f"{top1}/{probes}",
        "same_top_k": f"{topk}/{probes}",
        "usable_s_server": round(usable_s, 3),
        "open_s_client": round(client_open_s, 3),
        "client_index_mb": round(emb.nbytes / 2**20, 1),
        "client_rss_growth_mb_server_mode": round(_rss_mb() - rss0, 1),
    }


def bench_server_gallery(
    database_urls: Sequence[str],
    sizes: Sequence[int],
    *,
    dim: int = 128,
    seed: int = 0,
    base: np.ndarray | None = None,
    probes: int = 200,
    k: int = 5,
    per_person: int = 4,
    config: ServerSearchConfig = ServerSearchConfig(),
) -> dict[str, Any]:
    """One entry per size; ``database_urls[i]`` (an empty database) holds size ``i``."""
    if len(database_urls) != len(sizes):
        raise ValueError("one empty database per gallery size")
    if base is not None:
        dim = int(base.shape[1])
    out: dict[str, Any] = {
        "dim": dim, "seed": seed, "probes": probes, "k": k,
        "templates_per_person": per_person,
        "embeddings": "real (perturbed)" if base is not None else "gaussian",
        "base_embeddings": 0 if base is None else int(base.shape[0]),
        "shortlist": config.shortlist, "ef_search": config.ef_search,
        "hnsw_m": config.m, "hnsw_ef_construction": config.ef_construction,
        "cpu_count": os.cpu_count(),
        "sizes": [],
    }
    for url, n in zip(database_urls, sizes, strict=True):
        logger.info("bench server search: %d templates", n)
        out["sizes"].append(bench_one(url, n, dim, seed, base=base, probes=probes, k=k,
                                      per_person=per_person, config=config))
    return out


@contextlib.contextmanager
def scratch_databases(server_url: str, sizes: Sequence[int]) -> Iterator[list[str]]:
    """One new, empty database per size on the server of ``server_url`` (the role needs
    CREATEDB), dropped afterwards; yields their URLs. Nothing else on the server is touched."""
    url = make_url(server_url)
    if url.get_backend_name() != "postgresql":
        raise GalleryError("the server benchmark needs a PostgreSQL URL (--db postgresql+psycopg://...)")
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    names = [f"faceapp_bench_{n}_{uuid.uuid4().hex[:8]}" for n in sizes]
    made: list[str] = []
    try:
        with admin.connect() as conn:
            for name in names:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
                made.append(name)
        yield [url.set(database=name).render_as_string(hide_password=False) for name in names]
    finally:
        with admin.connect() as conn:
            for name in made:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
