"""Gallery benchmark: 1:K search latency per search backend and cold-open time.

``bench_gallery`` returns a JSON-ready dict; ``faceapp bench gallery`` prints it. Search is
timed per probe (one probe at a time, as the camera loop does) against a naive NumPy float32
baseline in the same run (full score vector, scatter-max per person with ``np.maximum.at``,
full ``argsort``), for :class:`GalleryIndex` with each search backend available here
(:mod:`faceapp.gallery.quantized`; each must return the baseline's top-k people and scores)
and for the backend ``auto`` picks (after its self-check). Raw kernels that were candidates
are timed too: PyTorch bfloat16 matrix-vector, FAISS ``IndexPQFastScan`` (PQ32×4) with the
share of rows its error bound would leave to re-rank.

Galleries are **LFW-like** when real embeddings are given (``base``: a Gaussian fit of real
LFW embeddings, between- and within-person covariance, projected to D when the model's
width differs; probes are new templates of enrolled people, i.e. perturbed, and impostors),
else random unit vectors. Opening is timed from a SQLite file whose pages were dropped from
the OS cache (``posix_fadvise(DONTNEED)``, where available): from the database rows, and
from an index snapshot. Nothing runs at import.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
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
from faceapp.gallery.quantized import BACKENDS, get_backend
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


def _sqrt_psd(c: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((c + c.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))).astype(np.float32)


@dataclass(frozen=True)
class EmbeddingModel:
    """Gaussian fit of real embeddings: mean, square roots of the between-person and
    within-person covariances (D × D), and where it came from."""

    mean: np.ndarray
    between: np.ndarray
    within: np.ndarray
    source: str


def fit_embeddings(emb: np.ndarray, labels: np.ndarray, dim: int, source: str) -> EmbeddingModel:
    """Fit :class:`EmbeddingModel` to (M, Dm) unit embeddings with person ``labels``
    (people with >= 2 images give the within-person spread); projected onto the top
    ``dim`` principal axes when ``dim < Dm`` (padded with small noise when ``dim > Dm``)."""
    emb = np.asarray(emb, dtype=np.float64)
    labels = np.asarray(labels)
    people = [emb[labels == u] for u in np.unique(labels)]
    multi = [x for x in people if x.shape[0] >= 2]
    if len(people) < 3 or not multi:
        raise ValueError("need embeddings of at least 3 people, some with 2 or more images")
    means = np.stack([x.mean(axis=0) for x in people])
    resid = np.concatenate([(x - x.mean(axis=0)) * np.sqrt(x.shape[0] / (x.shape[0] - 1)) for x in multi])
    mu = means.mean(axis=0)
    cb = np.cov(means.T) + 1e-6 * np.eye(emb.shape[1])
    cw = resid.T @ resid / max(1, resid.shape[0] - 1) + 1e-6 * np.eye(emb.shape[1])
    dm = emb.shape[1]
    if dim != dm:
        _, vecs = np.linalg.eigh(cb + cw)
        axes = vecs[:, ::-1][:, : min(dim, dm)]
        mu, cb, cw = axes.T @ mu, axes.T @ cb @ axes, axes.T @ cw @ axes
        if dim > dm:  # pad the extra axes with a little independent spread
            pad = dim - dm
            mu = np.concatenate([mu, np.zeros(pad)])
            cb = np.block([[cb, np.zeros((dm, pad))], [np.zeros((pad, dm)), 1e-4 * np.eye(pad)]])
            cw = np.block([[cw, np.zeros((dm, pad))], [np.zeros((pad, dm)), 1e-4 * np.eye(pad)]])
    return EmbeddingModel(mu.astype(np.float32), _sqrt_psd(cb), _sqrt_psd(cw), source)


def lfw_like_gallery(n: int, dim: int, per_person: int, seed: int,
                     model: EmbeddingModel) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, D) unit rows, (N,) person ids and (N/per_person, D) person centres drawn from
    ``model`` (made in chunks)."""
    rng = np.random.default_rng(seed)
    n_people = -(-n // per_person)
    centres = model.mean + rng.standard_normal((n_people, dim), dtype=np.float32) @ model.between.T
    pids = np.arange(n, dtype=np.int64) // per_person
    emb = np.empty((n, dim), dtype=np.float32)
    step = 65_536
    for start in range(0, n, step):
        stop = min(n, start + step)
        block = centres[pids[start:stop]] + rng.standard_normal(
            (stop - start, dim), dtype=np.float32) @ model.within.T
        emb[start:stop] = l2_normalize(block)
    return emb, pids, centres.astype(np.float32)


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


def _probes(emb: np.ndarray, centres: np.ndarray | None, model: EmbeddingModel | None,
            count: int, seed: int) -> np.ndarray:
    """Probes: for LFW-like data, new templates of enrolled people (three in four) and new
    people (impostors); for random data, gallery rows plus noise."""
    rng = np.random.default_rng(seed + 1)
    n, dim = emb.shape
    if model is None or centres is None:
        rows = rng.choice(n, count, replace=count > n)
        return l2_normalize(emb[rows] + 0.1 * rng.standard_normal((count, dim), dtype=np.float32))
    who = rng.choice(centres.shape[0], count, replace=count > centres.shape[0])
    base = centres[who].copy()
    impostor = np.arange(count) % 4 == 3
    base[impostor] = model.mean + rng.standard_normal(
        (int(impostor.sum()), dim), dtype=np.float32) @ model.between.T
    return l2_normalize(base + rng.standard_normal((count, dim), dtype=np.float32) @ model.within.T)


def _time_index(index: GalleryIndex, queries: np.ndarray, k: int,
                reference: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    t0 = time.perf_counter()
    index.identify(queries[0][None], model_id=MODEL_ID, threshold=0.0, k=k)  # builds its copy
    first_s = time.perf_counter() - t0
    times: list[float] = []
    reranked: list[int] = []
    agree = True
    for q, (people, scores) in zip(queries, reference, strict=True):
        index.last_search = {}
        t = time.perf_counter()
        (res,) = index.identify(q[None], model_id=MODEL_ID, threshold=0.0, k=k)
        times.append(time.perf_counter() - t)
        reranked.append(int(index.last_search.get("rows_reranked", len(index))))
        got = [c.person_id for c in res.candidates]
        agree &= got == people.tolist() and bool(
            np.allclose([c.score for c in res.candidates], scores, atol=1e-5))
    return {"ms": _ms(times), "first_search_s": round(first_s, 3), "agree": bool(agree),
            "rows_reranked_median": int(np.median(reranked)), "rows_reranked_max": int(max(reranked))}


def _candidates(emb: np.ndarray, queries: np.ndarray, kth: list[float], seed: int) -> dict[str, Any]:
    """Raw kernels that were candidates for the first pass (not used by the index)."""
    out: dict[str, Any] = {}
    n, dim = emb.shape
    with contextlib.suppress(ImportError):
        import torch

        w = torch.from_numpy(emb).to(torch.bfloat16)
        times = []
        with torch.inference_mode():
            for q in queries:
                t = time.perf_counter()
                torch.nn.functional.linear(torch.from_numpy(q).to(torch.bfloat16)[None], w)
                times.append(time.perf_counter() - t)
        out["torch_bf16_matvec_ms"] = _ms(times[1:] or times)
        del w
    with contextlib.suppress(ImportError):
        import faiss

        m = 32 if dim % 32 == 0 else (16 if dim % 16 == 0 else 0)
        if m and n >= 4096:
            t = time.perf_counter()
            pq = faiss.IndexPQFastScan(dim, m, 4, faiss.METRIC_INNER_PRODUCT)
            rng = np.random.default_rng(seed)
            pq.train(emb[rng.choice(n, min(n, 65_536), replace=False)])
            pq.add(emb)
            build = time.perf_counter() - t
            times = []
            for q in queries:
                t = time.perf_counter()
                pq.search(q[None], 1000)
                times.append(time.perf_counter() - t)
            # its proven bound: |q·x - q·x̂| <= ||x - x̂||; rows it could not rule out
            worst, shares = 0.0, []
            decoded = []
            for lo in range(0, n, 65_536):
                block = emb[lo : lo + 65_536]
                rec = pq.sa_decode(pq.sa_encode(block))
                worst = max(worst, float(np.linalg.norm(block - rec, axis=1).max()))
                decoded.append(rec)
            for q, kk in list(zip(queries, kth, strict=True))[:5]:
                approx = np.concatenate([r @ q for r in decoded])
                shares.append(float(np.mean(approx + worst >= kk)))
            out[f"faiss_pq{m}x4_k1000_ms"] = _ms(times)
            out[f"faiss_pq{m}x4_build_s"] = round(build, 2)
            out[f"faiss_pq{m}x4_max_reconstruction_error"] = round(worst, 4)
            out[f"faiss_pq{m}x4_rows_to_rerank_share"] = round(float(np.median(shares)), 4)
    return out


def bench_search(n: int, dim: int, seed: int, *, probes: int, k: int, per_person: int,
                 model: EmbeddingModel | None = None, candidates: bool = True) -> dict[str, Any]:
    """One gallery of ``n`` templates: the naive baseline, the index with every backend
    available here and with the one ``auto`` chooses, and the candidate raw kernels."""
    from faceapp.gallery.selfcheck import choose_backend

    centres = None
    if model is not None:
        emb, pids, centres = lfw_like_gallery(n, dim, per_person, seed, model)
    else:
        emb, pids = synthetic_gallery(n, dim, per_person, seed)
    n_people = int(pids[-1]) + 1
    t0 = time.perf_counter()
    index = GalleryIndex.from_arrays(MODEL_ID, np.arange(n), pids, emb)
    index.people()  # group once, as a first search would
    build_s = time.perf_counter() - t0
    queries = _probes(emb, centres, model, probes, seed)
    # each method in its own loop: BLAS / OpenMP worker threads of one library keep spinning
    # for a while after a call and would slow down the other one if they alternated
    t_naive: list[float] = []
    reference = []
    for q in queries:
        t = time.perf_counter()
        reference.append(naive_top_k(emb, pids, n_people, q, k))
        t_naive.append(time.perf_counter() - t)
    naive_ms = _ms(t_naive)
    backends: dict[str, Any] = {}
    for name in BACKENDS:
        backend = get_backend(name)
        if backend.unavailable() is not None:
            backends[name] = {"unavailable": backend.unavailable()}
            continue
        index.set_backend(backend)
        index.quantize_min_rows = 1
        r = _time_index(index, queries, k, reference)
        r["ratio_vs_baseline"] = round(naive_ms["median"] / max(r["ms"]["median"], 1e-9), 2)
        backends[name] = r
    t = time.perf_counter()
    chosen = choose_backend(None, dim, n)
    choose_s = time.perf_counter() - t
    index.set_backend(None)
    index.quantize_min_rows = GalleryIndex(MODEL_ID, dim).quantize_min_rows
    default = _time_index(index, queries, k, reference)
    out: dict[str, Any] = {
        "templates": n,
        "people": n_people,
        "data": model.source if model is not None else "random unit vectors",
        "index_build_s": round(build_s, 3),
        "backend": chosen.name if n >= index.quantize_min_rows else "exact (below the two-pass size)",
        "backend_choice_s": round(choose_s, 3),
        "index_ms": default["ms"],
        "naive_ms": naive_ms,
        "speedup_median": round(naive_ms["median"] / max(default["ms"]["median"], 1e-9), 2),
        "agree": bool(default["agree"] and all(b.get("agree", True) for b in backends.values())),
        "default": default,
        "backends": backends,
    }
    if candidates:
        kth = [float(scores[-1]) for _, scores in reference]
        out["candidates"] = _candidates(emb, queries, kth, seed)
        out["candidates"]["naive_float32_matvec_ms"] = naive_ms
    return out


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
    base: EmbeddingModel | None = None,
    candidates: bool = True,
) -> dict[str, Any]:
    """Search latency per probe (index vs naive NumPy) for each size in ``sizes``, and
    cold-open time for each size in ``open_sizes`` (default: the sizes ≥ 100,000).

    Galleries: ``per_person`` templates per person, D = ``dim``, LFW-like when ``base`` (a
    fit of real embeddings, :func:`fit_embeddings`) is given, else random unit vectors.
    ``candidates``: also time the raw candidate kernels (torch bf16, FAISS PQ fast-scan).
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
        "data": base.source if base is not None else "random unit vectors",
        "search": [],
        "open": [],
    }
    for n in sizes:
        logger.info("bench search: %d templates", n)
        out["search"].append(bench_search(n, dim, seed, probes=probes, k=k, per_person=per_person,
                                          model=base, candidates=candidates))
    if open_sizes:
        with tempfile.TemporaryDirectory(dir=workdir, prefix="faceapp-bench-") as tmp:
            for n in open_sizes:
                logger.info("bench open: %d templates", n)
                out["open"].append(bench_open(n, dim, seed, per_person=per_person,
                                              workdir=Path(tmp)))
    return out
