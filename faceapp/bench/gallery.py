"""``faceapp bench gallery``: 1:K search latency per search backend and cold-open time.

:func:`bench_gallery` returns the raw figures. Search is timed per probe (one probe at a
time, as the camera loop does) against a naive NumPy float32 baseline in the same run (full
score vector, scatter-max per person with ``np.maximum.at``, full ``argsort``), for
:class:`GalleryIndex` with each search backend available here
(:mod:`faceapp.gallery.quantized`; each must return the baseline's top-k people and scores)
and for the backend ``auto`` picks (after its self-check). Raw kernels that were candidates
are timed too: PyTorch bfloat16 matrix-vector, FAISS ``IndexPQFastScan`` (PQ32×4) with the
share of rows its error bound would leave to re-rank.

Galleries are **LFW-like** when real embeddings are given (``base``: a Gaussian fit of real
LFW embeddings, between- and within-person covariance, projected to D when the model's
width differs; probes are new templates of enrolled people, i.e. perturbed, and impostors),
else random unit vectors (:mod:`faceapp.bench.synthetic`). Opening is timed from a SQLite
file whose pages were dropped from the OS cache (``posix_fadvise(DONTNEED)``, where
available): from the database rows, and from an index snapshot.

:func:`bench_gallery_part` is the ``gallery`` part of ``faceapp bench``: those figures
under stable keys (``gallery.search_ms_1e4`` … ``_1e6``, ``gallery.open_s_1e5``/``_1e6``),
on LFW-like galleries fitted to the model's embeddings of real LFW faces when both are
there. Nothing runs at import.
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

from faceapp.bench.inputs import LFW_FIT_PEOPLE, lfw_embeddings, lfw_root, load_model
from faceapp.bench.stats import load_average, ms_summary
from faceapp.bench.synthetic import (
    EmbeddingModel,
    drop_from_page_cache,
    fill_gallery,
    fit_embeddings,
    lfw_like_gallery,
    synthetic_gallery,
)
from faceapp.errors import FaceappError
from faceapp.gallery.database import at_rest, current_generation, gallery_uuid, open_database, read_session
from faceapp.gallery.matching import GalleryIndex, l2_normalize
from faceapp.gallery.quantized import BACKENDS, get_backend
from faceapp.gallery.repository import GalleryRepository
from faceapp.gallery.snapshot import load_snapshot, save_snapshot, snapshot_path
from faceapp.nn.checkpoint import LoadedModel
from faceapp.nn.open_set import LearnedNormaliser

logger = logging.getLogger(__name__)

MODEL_ID = "bench-synthetic"
GALLERY_SIZES = {"1e4": 10_000, "1e5": 100_000, "1e6": 1_000_000}
QUICK_GALLERY_SIZES = {"1e4": 1_000, "1e5": 2_000, "1e6": 4_000}


def naive_top_k(emb: np.ndarray, pids: np.ndarray, n_people: int, probe: np.ndarray,
                k: int) -> tuple[np.ndarray, np.ndarray]:
    """Baseline: (N,) scores, per-person max by scatter, full sort. Returns (people, scores)."""
    scores = emb @ probe
    best = np.full(n_people, -np.inf, dtype=np.float32)
    np.maximum.at(best, pids, scores)
    order = np.argsort(-best, kind="stable")[:k]
    return order, best[order]


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
    return {"ms": ms_summary(times), "first_search_s": round(first_s, 3), "agree": bool(agree),
            "rows_reranked_median": int(np.median(reranked)), "rows_reranked_max": int(max(reranked))}


def _time_normalised(index: GalleryIndex, queries: np.ndarray, k: int) -> dict[str, Any]:
    """The app's 1:K with the open-set score normaliser (cosine short list re-scored): a
    network of the shipped architecture (D → 64 → 64 → 2) with seeded random weights, as
    the cost does not depend on the values."""
    rng = np.random.default_rng(0)
    d, h = index.dim, 64
    layers = {"w1": rng.standard_normal((d, h)) / np.sqrt(d), "b1": np.zeros(h),
              "w2": rng.standard_normal((h, h)) / np.sqrt(h), "b2": np.zeros(h),
              "w3": rng.standard_normal((h, 2)) / np.sqrt(h), "b3": np.zeros(2)}
    norm = LearnedNormaliser(layers, {"model_id": MODEL_ID, "alpha": 0.006, "beta": 0.92,
                                      "mu_mean": 0.8, "mu_scale": 0.02, "logstd_mean": -4.0,
                                      "logstd_scale": 0.2})
    index.identify(queries[0][None], model_id=MODEL_ID, threshold=0.0, k=k, normaliser=norm)
    times: list[float] = []
    for q in queries:
        t = time.perf_counter()
        index.identify(q[None], model_id=MODEL_ID, threshold=0.0, k=k, normaliser=norm)
        times.append(time.perf_counter() - t)
    return {"ms": ms_summary(times)}


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
        out["torch_bf16_matvec_ms"] = ms_summary(times[1:] or times)
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
            out[f"faiss_pq{m}x4_k1000_ms"] = ms_summary(times)
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
    naive_ms = ms_summary(t_naive)
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
    normalised = _time_normalised(index, queries, k)
    normalised["over_cosine_median"] = round(
        normalised["ms"]["median"] / max(default["ms"]["median"], 1e-9), 2)
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
        "normalised": normalised,
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
        fill_gallery(engine, emb, pids, MODEL_ID)
    finally:
        engine.dispose()
    build_s = time.perf_counter() - t0
    del emb
    files = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
    cold = drop_from_page_cache(files)

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
    drop_from_page_cache([*files, snap])
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
def bench_gallery_part(dim: int, *, data_dir: Path, quick: bool = False, seed: int = 0,
                       model: LoadedModel | None = None) -> dict[str, Any]:
    """Search and open times from :func:`bench_gallery`, under stable keys, on LFW-like
    galleries (fitted to ``model``'s embeddings of real LFW faces under ``data_dir``) when
    a model and LFW are there, else on random unit vectors; plus random vectors at 10⁶."""
    sizes = QUICK_GALLERY_SIZES if quick else GALLERY_SIZES
    open_keys = ("1e5", "1e6")
    base = None
    why_random = ""
    try:
        if model is None:
            model, _ = load_model(None)
        emb, labels = lfw_embeddings(model, lfw_root(data_dir), people=12 if quick else LFW_FIT_PEOPLE)
        base = fit_embeddings(emb, labels, dim, f"LFW-like: Gaussian fit of {emb.shape[0]} real "
                              f"LFW embeddings ({int(labels.max()) + 1} people) by model "
                              f"{model.model_id} (D={emb.shape[1]}), new templates as probes")
    except (FaceappError, OSError, ValueError) as err:
        why_random = f"random unit vectors ({err})"
        logger.warning("gallery bench on random vectors: %s", err)
    raw = bench_gallery(
        tuple(sizes.values()),
        dim=dim,
        seed=seed,
        open_sizes=tuple(sizes[k] for k in open_keys),
        probes=5 if quick else 30,
        base=base,
    )
    random_raw = bench_gallery((sizes["1e6"],), dim=dim, seed=seed, open_sizes=(),
                               probes=5 if quick else 30, candidates=False)
    by_n_search = {int(r["templates"]): r for r in raw["search"]}
    by_n_open = {int(r["templates"]): r for r in raw["open"]}
    out: dict[str, Any] = {"templates": dict(sizes), "dim": dim,
                           "data": raw["data"] if base is not None else why_random}
    agree = True
    for key, n in sizes.items():
        r = by_n_search[n]
        out[f"search_ms_{key}"] = r["index_ms"]["median"]
        out[f"baseline_search_ms_{key}"] = r["naive_ms"]["median"]
        out[f"ratio_{key}"] = round(r["naive_ms"]["median"] / max(r["index_ms"]["median"], 1e-9), 2)
        out[f"backend_{key}"] = r["backend"]
        out[f"rows_reranked_{key}"] = r["default"]["rows_reranked_median"]
        for name, b in r["backends"].items():
            if "ms" in b:
                out.setdefault("backends", {}).setdefault(name, {})[f"search_ms_{key}"] = b["ms"]["median"]
                out["backends"][name][f"ratio_{key}"] = b["ratio_vs_baseline"]
        out[f"candidates_{key}"] = {
            k: (v["median"] if isinstance(v, dict) else v) for k, v in r.get("candidates", {}).items()}
        agree &= bool(r.get("agree", False))
    (rr,) = random_raw["search"]
    out["random_search_ms_1e6"] = rr["index_ms"]["median"]
    out["random_baseline_search_ms_1e6"] = rr["naive_ms"]["median"]
    out["random_ratio_1e6"] = round(rr["naive_ms"]["median"] / max(rr["index_ms"]["median"], 1e-9), 2)
    agree &= bool(rr.get("agree", False))
    for key in open_keys:
        r = by_n_open[sizes[key]]
        out[f"open_s_{key}"] = r["open_from_snapshot_s"]
        out[f"open_rows_s_{key}"] = r["open_from_rows_s"]
    out["same_top_k_as_baseline"] = agree
    if loads := load_average():
        out["load_average_after"] = loads
    out["raw"] = raw
    out["raw_random"] = random_raw
    return out
