"""Throw-away galleries for the benchmarks: synthetic templates (random, LFW-like or
perturbed real embeddings), written into an empty gallery through the gallery's ORM model
and :class:`~faceapp.gallery.repository.GalleryRepository` (no SQL of our own), and the
key environment and page-cache helpers that make their timings honest.

Generators make their rows in chunks (little peak memory at 10⁶ templates) and are
deterministic for a seed.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import func, insert, select
from sqlalchemy.engine import Engine

from faceapp.errors import GalleryError
from faceapp.gallery.database import read_session, write_session
from faceapp.gallery.matching import l2_normalize
from faceapp.gallery.orm import Person
from faceapp.gallery.repository import GalleryRepository

CHUNK = 65_536
"""Rows made (and people inserted) per step."""
TEMPLATE_BATCH = 100_000
"""Templates written per transaction."""


def _unit_rows(n: int, dim: int, block: Callable[[int, int], np.ndarray]) -> np.ndarray:
    """(n, dim) float32 unit rows, rows ``start:stop`` being ``block(start, stop)`` normalised."""
    emb = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, CHUNK):
        stop = min(n, start + CHUNK)
        emb[start:stop] = l2_normalize(block(start, stop))
    return emb


def synthetic_gallery(n: int, dim: int, per_person: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) float32 random unit rows and (N,) person ids (``per_person`` rows each)."""
    rng = np.random.default_rng(seed)
    emb = _unit_rows(n, dim, lambda start, stop: rng.standard_normal((stop - start, dim), dtype=np.float32))
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
    ``model``."""
    rng = np.random.default_rng(seed)
    n_people = -(-n // per_person)
    centres = model.mean + rng.standard_normal((n_people, dim), dtype=np.float32) @ model.between.T
    pids = np.arange(n, dtype=np.int64) // per_person
    emb = _unit_rows(n, dim, lambda start, stop: centres[pids[start:stop]] + rng.standard_normal(
        (stop - start, dim), dtype=np.float32) @ model.within.T)
    return emb, pids, centres.astype(np.float32)


def realistic_gallery(n: int, dim: int, per_person: int, seed: int,
                      base: np.ndarray | None, *, spread: float = 0.35,
                      noise: float = 0.25) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, D) unit templates, (N,) person ids 0.., (P, D) unit person centres.

    A person's centre is a row of ``base`` (real embeddings, unit) plus Gaussian noise of
    relative size ``spread`` (so a new identity near a real one), or a Gaussian direction
    when ``base`` is None; their templates add relative noise ``noise`` to the centre.
    Noise scales are relative to a unit vector's per-coordinate size (1/√D).
    """
    rng = np.random.default_rng(seed)
    n_people = -(-n // per_person)
    scale = 1.0 / np.sqrt(dim)
    if base is None:
        centres = l2_normalize(rng.standard_normal((n_people, dim), dtype=np.float32))
    else:
        rows = rng.integers(0, base.shape[0], n_people)
        centres = l2_normalize(base[rows] + spread * scale *
                               rng.standard_normal((n_people, dim), dtype=np.float32))
    pids = (np.arange(n, dtype=np.int64) // per_person)
    emb = _unit_rows(n, dim, lambda start, stop: centres[pids[start:stop]] + noise * scale *
                     rng.standard_normal((stop - start, dim), dtype=np.float32))
    return emb, pids, centres


def fill_gallery(engine: Engine, emb: np.ndarray, pids: np.ndarray, model_id: str, *,
                 name: str = "person") -> np.ndarray:
    """Write people ``0 .. pids.max()`` (named ``f"{name} {i:07d}"``) and their templates
    ``emb`` (of ``model_id``, person ``pids[i]``, no crops) into the **empty** gallery of
    ``engine``, through the ORM and :meth:`GalleryRepository.bulk_add_templates`; a SQLite
    file is checkpointed afterwards (its WAL emptied, as a closed app leaves it). Returns
    the (N,) gallery person ids of the templates."""
    n_people = int(pids.max()) + 1 if len(pids) else 0
    with read_session(engine) as s:
        if s.execute(select(func.count(Person.id))).scalar():
            raise GalleryError(f"{engine.url}: the benchmark needs an empty gallery database")
    with write_session(engine) as s:
        for start in range(0, n_people, CHUNK):
            s.execute(insert(Person), [{"name": f"{name} {i:07d}"}
                                       for i in range(start, min(n_people, start + CHUNK))])
        ids = np.asarray(s.execute(select(Person.id).order_by(Person.id)).scalars().all(), dtype=np.int64)
    if ids.shape != (n_people,):
        raise GalleryError(f"{engine.url}: {ids.size} people written, {n_people} expected")
    person_ids = ids[pids]
    for start in range(0, emb.shape[0], TEMPLATE_BATCH):
        stop = min(emb.shape[0], start + TEMPLATE_BATCH)
        with write_session(engine) as s:
            GalleryRepository(s).bulk_add_templates(person_ids[start:stop], emb[start:stop], model_id)
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    return person_ids


def drop_from_page_cache(paths: Sequence[Path]) -> bool:
    """Drop the files' pages from the OS cache (``posix_fadvise(DONTNEED)``) so that the
    next read is cold; False where the OS has no such call."""
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


@contextlib.contextmanager
def bench_key_environment() -> Iterator[None]:
    """The bench's throw-away galleries get a random passphrase (unless
    ``$FACEAPP_PASSPHRASE`` is set) and never touch the OS keyring; child processes
    (``bench startup``) inherit both. The environment is restored afterwards."""
    saved = {k: os.environ.get(k) for k in ("FACEAPP_PASSPHRASE", "FACEAPP_KEYRING")}
    os.environ.setdefault("FACEAPP_PASSPHRASE", secrets.token_urlsafe(24))
    os.environ["FACEAPP_KEYRING"] = "off"
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
