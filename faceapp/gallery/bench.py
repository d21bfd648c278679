"""Gallery benchmark: 1:K search latency and cold-open time on synthetic galleries.

``bench_gallery`` returns a JSON-ready dict; ``faceapp bench gallery`` prints it. Search is
timed per probe (one probe at a time, as the camera loop does) for :class:`GalleryIndex`
and for a naive NumPy float32 baseline in the same run (full score vector, scatter-max per
person with ``np.maximum.at``, full ``argsort``); both must return the same top-k people.
Opening is timed from a SQLite file whose pages were dropped from the OS cache
(``posix_fadvise(DONTNEED)``, where available): from the database rows, and from an index
snapshot. Nothing runs at import.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from faceapp.gallery.database import (
    at_rest,
    current_generation,
    gallery_uuid,
    open_database,
    read_session,
    write_session,
)
from faceapp.gallery.matching import GalleryIndex, l2_normalize
from faceapp.gallery.repository import GalleryRepository
from faceapp.gallery.snapshot import load_snapshot, save_snapshot, snapshot_path

logger = logging.getLogger(__name__)

MODEL_ID = "bench-synthetic"


def synthetic_gallery(n: int, dim: int, per_person: int, seed: int) -> tuple[np.ndarray,
                                                                           np.ndarray]:
    """(N, D) float32 unit rows (made in chunks, little peak memory) and (N,) person ids."""
    rng = np.random.default_rng(seed)
    emb = np.empty((n, dim), dtype=np.float32)
    step = 65_536
    for start in range(0, n, step):
        stop = min(n, start + step)
        emb[start:stop] = l2_normalize(rng.standard_normal((stop - start, dim), dtype=np.float32))
    return emb, np.arange(n, dtype=np.int64) // per_person


def naive_top_k(emb: np.ndarray, pids: np.ndarray, n_people: int, probe: np.ndarray,
                k: int) -> tuple[np.ndarray, np.ndarray]:
    """Baseline: (N,) scores, per-person max by scatter, full sort. Returns (people, scores)."""
    scores = emb @ probe
    best = np.full(n_people, -np.inf, dtype=np.float32)
    np.maximum.at(best, pids, scores)
    order = np.argsort(-best, kind="stable")[:k]
    return order, best[order]


def _drop_from_page_cache(paths: Sequence[Path]) -> bool:
    fadvise = getattr(os, "posix_fadvise", None)
    if fadvise is None:
        return False
    for path in paths:
        if not path.exists():
            continue
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return True


def _ms(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values) * 1000.0
    return {"median": round(float(np.median(arr)), 3), "p90": round(float(np.percentile(arr, 90)), 3),
            "min": round(float(arr.min()), 3)}


def bench_search(n: int, dim: int, seed: int, *, probes: int, k: int,
                 per_person: int) -> dict[str, Any]:
    emb, pids = synthetic_gallery(n, dim, per_person, seed)
    n_people = int(pids[-1]) + 1
    t0 = time.perf_counter()
    index = GalleryIndex.from_arrays(MODEL_ID, np.arange(n), pids, emb)
    index.people()  # group once, as a first search would
    build_s = time.perf_counter() - t0
    rng = np.random.default_rng(seed + 1)
    rows = rng.choice(n, probes, replace=False)
    queries = l2_normalize(emb[rows] + 0.1 * rng.standard_normal((probes, dim), dtype=np.float32))
    # each method in its own loop: BLAS / OpenMP worker threads of one library keep spinning
    # for a while after a call and would slow down the other one if they alternated
    t_index: list[float] = []
    results = []
    for q in queries:
        t = time.perf_counter()
        (res,) = index.identify(q[None], model_id=MODEL_ID, threshold=0.0, k=k)
        t_index.append(time.perf_counter() - t)
        results.append(res)
    t_naive: list[float] = []
    agree = True
    for q, res in zip(queries, results, strict=True):
        t = time.perf_counter()
        people, scores = naive_top_k(emb, pids, n_people, q, k)
        t_naive.append(time.perf_counter() - t)
        got = [c.person_id for c in res.candidates]
        agree &= got == people.tolist() and bool(
            np.allclose([c.score for c in res.candidates], scores, atol=1e-5))
    index_ms, naive_ms = _ms(t_index), _ms(t_naive)
    return {
        "templates": n,
        "people": n_people,
        "index_build_s": round(build_s, 3),
        "index_ms": index_ms,
        "naive_ms": naive_ms,
        "speedup_median": round(naive_ms["median"] / max(index_ms["median"], 1e-9), 2),
        "agree": bool(agree),
    }


def bench_open(n: int, dim: int, seed: int, *, per_person: int, workdir: Path) -> dict[str, Any]:
    emb, pids = synthetic_gallery(n, dim, per_person, seed)
    n_people = int(pids[-1]) + 1
    path = workdir / f"bench_{n}.sqlite"
    url = f"sqlite:///{path}"
    t0 = time.perf_counter()
    engine = open_database(url)
    try:
        with write_session(engine) as s:
            s.connection().exec_driver_sql(
                "INSERT INTO person (id, name, created, updated) VALUES (?, ?, ?, ?)",
                [(i + 1, f"person {i:07d}", "2024-01-01 00:00:00.000000",
                  "2024-01-01 00:00:00.000000") for i in range(n_people)],
            )
            GalleryRepository(s).bulk_add_templates(pids + 1, emb, MODEL_ID)
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        engine.dispose()
    build_s = time.perf_counter() - t0
    del emb
    files = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
    cold = _drop_from_page_cache(files)

    t0 = time.perf_counter()
    engine = open_database(url)
    try:
        with read_session(engine) as s:
            rows = GalleryRepository(s).index_rows(MODEL_ID)
            gen, uid = current_generation(s), gallery_uuid(s)
        index = GalleryIndex.from_arrays(MODEL_ID, rows.template_ids, rows.person_ids,
                                         rows.embeddings)
        index.people()
        open_rows_s = time.perf_counter() - t0
        del rows
        snap = snapshot_path(url, MODEL_ID)
        assert snap is not None
        save_snapshot(snap, index, {}, 0, gallery_uuid=uid, generation=gen,
                      cipher=at_rest(engine))
        reference = len(index)
        del index
    finally:
        engine.dispose()
    _drop_from_page_cache([*files, snap])
    t0 = time.perf_counter()
    engine = open_database(url)
    try:
        with read_session(engine) as s:
            gen, uid = current_generation(s), gallery_uuid(s)
        loaded = load_snapshot(snap, model_id=MODEL_ID, gallery_uuid=uid, generation=gen,
                               cipher=at_rest(engine))
        open_snapshot_s = time.perf_counter() - t0
        ok = loaded is not None and len(loaded.index) == reference
    finally:
        engine.dispose()
    db_bytes = path.stat().st_size
    for f in [*files, snap]:
        with contextlib.suppress(FileNotFoundError):
            f.unlink()
    return {
        "templates": n,
        "people": n_people,
        "db_build_s": round(build_s, 3),
        "db_mb": round(db_bytes / 2**20, 1),
        "page_cache_dropped": cold,
        "open_from_rows_s": round(open_rows_s, 3),
        "open_from_snapshot_s": round(open_snapshot_s, 3),
        "snapshot_ok": bool(ok),
    }


def bench_gallery(
    sizes: Sequence[int] = (10_000, 100_000, 1_000_000),
    dim: int = 128,
    seed: int = 0,
    *,
    open_sizes: Sequence[int] | None = None,
    probes: int = 30,
    k: int = 5,
    per_person: int = 4,
    workdir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Search latency per probe (index vs naive NumPy) for each size in ``sizes``, and
    cold-open time for each size in ``open_sizes`` (default: the sizes ≥ 100,000).

    Galleries are synthetic: ``per_person`` random unit templates per person, D = ``dim``.
    ``workdir``: where the temporary SQLite files go (default: a temp folder; the 10⁶ file
    takes about 0.6 GB).
    """
    if open_sizes is None:
        open_sizes = [n for n in sizes if n >= 100_000]
    out: dict[str, Any] = {
        "dim": dim,
        "seed": seed,
        "probes": probes,
        "k": k,
        "templates_per_person": per_person,
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
        "machine": platform.machine(),
        "search": [],
        "open": [],
    }
    for n in sizes:
        logger.info("bench search: %d templates", n)
        out["search"].append(bench_search(n, dim, seed, probes=probes, k=k,
                                          per_person=per_person))
    if open_sizes:
        with tempfile.TemporaryDirectory(dir=workdir, prefix="faceapp-bench-") as tmp:
            for n in open_sizes:
                logger.info("bench open: %d templates", n)
                out["open"].append(bench_open(n, dim, seed, per_person=per_person,
                                              workdir=Path(tmp)))
    return out
