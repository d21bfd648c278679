"""Search backends: a compressed first pass over a gallery's rows whose every score carries a
proven error bound, so that :meth:`faceapp.gallery.matching.GalleryIndex.identify` can
re-rank a short list exactly in float32 and still return the exact top-k.

A 1:K search over 10⁶ templates reads the whole template matrix once per probe, so memory
traffic bounds it: float32 rows are 512 bytes each at D = 128, int8 rows 128. Rows ``x``
(unit vectors) are stored as int8 codes ``c = rint(x / s)`` with **one scale for the whole
gallery**, ``s = max|x| / 127``; ``r_i = ||x_i - s·c_i||`` (the row's reconstruction error)
is computed exactly once per row and kept. For a probe ``p`` and any approximation ``p̂``:

    |x·p - (s·c)·p̂| <= ||x||·||p - p̂|| + r_i·||p̂||         (Cauchy–Schwarz, twice)

Backends (all public APIs; nothing private of NumPy or PyTorch is used):

* :class:`ExactBackend` (``"exact"``): no first pass; the float32 brute force. Always there,
  and what every fallback ends in.
* :class:`NumpyInt8Backend` (``"numpy-int8"``): int8 blocks converted to float32 inside the
  cache and multiplied with NumPy's BLAS (``p̂ = p``). Pure NumPy.
* :class:`FaissSQ8Backend` (``"faiss-sq8"``): FAISS's ``IndexScalarQuantizer`` with
  ``QT_8bit_direct_signed`` codes (the int8 codes above), searched with an integer-valued
  probe ``q = rint(p / s_p)``, ``s_p = max|p| / 127`` (``p̂ = s_p·q``): every product and
  sum is then an integer below 2²⁴ (D <= 1040), computed exactly by any correct kernel,
  and FAISS returns the top rows without materialising N scores. About 4 ms per probe at
  10⁶ × 128 on one core. It is compiled code, so :mod:`faceapp.gallery.selfcheck` tries it
  in a child process for the gallery's width and size class before it is used here.

The error bound of a scan covers every row (the largest ``r_i``), the float32 roundings of
the first pass (``(D + 4)·2⁻²³`` relative) and 1e-5 of slack for the float32 re-rank.

Nothing is built or imported at import time (FAISS is imported on first use).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

log = logging.getLogger(__name__)

EXACT = "exact"
AUTO = "auto"
ENV_BACKEND = "FACEAPP_SEARCH_BACKEND"
"""Environment variable naming the backend to use (``auto``, ``exact``, ``numpy-int8``,
``faiss-sq8``); read on first use."""

_Q8_BLOCK = 8192
"""Rows converted from int8 to float32 per block by the NumPy pass (4 MB at D = 128)."""

_QUANTIZE_STEP = 65_536
"""Rows quantized per step (bounds the float32 temporaries)."""

_SLACK = 1e-5
"""Absolute slack added to every bound: float32 re-rank vs float32 brute force."""


def _fp_relative(dim: int) -> float:
    """Relative error of a float32 dot product of ``dim`` terms plus a few roundings."""
    return (dim + 4) * 2.0**-23


# ---------------------------------------------------------------------------- int8 codes


@dataclass(eq=False)
class Int8Codes:
    """(N, D) unit rows as int8 codes with one scale.

    ``q8``: (N, D) int8 in [-127, 127]; ``scale``: float with ``row ≈ scale * q8``;
    ``radius``: (N,) float64 upper bounds of ``||row - scale * q8||`` (exactly computed,
    rounded up); ``dim``: D.
    """

    q8: np.ndarray
    scale: float
    radius: np.ndarray
    dim: int

    def __len__(self) -> int:
        return int(self.q8.shape[0])

    @property
    def max_radius(self) -> float:
        return float(self.radius.max()) if self.radius.shape[0] else 0.0


def quantize_rows(emb: np.ndarray) -> Int8Codes:
    """(N, D) float32 rows -> :class:`Int8Codes` (one symmetric scale for all rows).

    Done in float32 (10⁶ × 128 rows in well under a second); the radius is then rounded up
    by the float32 error of computing it: each ``x_k - s·c_k`` is off by at most
    ``2⁻²⁴(|x_k| + |x_k - s·c_k|)``, the norm of D terms by ``D·2⁻²⁴`` relative."""
    emb = np.asarray(emb, dtype=np.float32)
    n, d = emb.shape
    peak = float(np.abs(emb).max()) if emb.size else 0.0
    scale = float(np.float32(peak / 127.0)) if peak > 0 else 1.0  # exactly a float32
    inv, s32 = np.float32(1.0 / scale), np.float32(scale)
    q8 = np.empty((n, d), dtype=np.int8)
    radius = np.empty(n, dtype=np.float64)
    for lo in range(0, n, _QUANTIZE_STEP):
        block = emb[lo : lo + _QUANTIZE_STEP]
        codes = np.rint(block * inv)
        np.clip(codes, -127, 127, out=codes)
        q8[lo : lo + _QUANTIZE_STEP] = codes
        diff = block - codes * s32
        radius[lo : lo + _QUANTIZE_STEP] = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    radius = radius * (1.0 + (d + 4) * 2.0**-23) + 2.0**-22
    return Int8Codes(q8, scale, radius, d)


def quantize_probe(probe: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(D,) float probe -> (integer-valued float32 codes in [-127, 127], scale ``s_p``,
    upper bound of ``||probe - s_p * codes||``)."""
    p = np.asarray(probe, dtype=np.float64)
    peak = float(np.abs(p).max()) if p.size else 0.0
    s = peak / 127.0 if peak > 0 else 1.0
    codes = np.clip(np.rint(p / s), -127, 127)
    rho = float(np.linalg.norm(p - s * codes)) * (1.0 + 1e-9)
    return codes.astype(np.float32), s, rho


# ---------------------------------------------------------------------------- protocols


class Scan(Protocol):
    """The first pass of one probe over prepared rows."""

    error_bound: float
    """``|approx_i - row_i · probe| <= error_bound`` for every row ``i``."""

    def top(self, m: int) -> tuple[np.ndarray, np.ndarray, float]:
        """The ``m`` rows with the highest first-pass scores: (rows (m',) int64,
        approximations (m',) float32, floor). No row outside ``rows`` has a first-pass
        score above ``floor``; ``floor = -inf`` when ``rows`` holds every row."""
        ...


class PreparedRows(Protocol):
    """A backend's compressed copy of one gallery's (N, D) rows."""

    def __len__(self) -> int: ...

    def scan(self, probe: np.ndarray) -> Scan:
        """First pass of one (D,) float32 unit probe."""
        ...


class SearchBackend(Protocol):
    name: str
    native: bool
    """Runs compiled code beyond NumPy's: checked in a child process before use."""
    two_pass: bool
    """False for the exact search (no first pass)."""

    def unavailable(self) -> str | None:
        """Why this backend cannot run here (``None`` when it can)."""
        ...

    def version(self) -> str:
        """Version of what the backend runs (part of the self-check's cache key)."""
        ...

    def prepare(self, emb: np.ndarray) -> PreparedRows:
        """(N, D) float32 unit rows -> the compressed copy the first pass reads."""
        ...


# ---------------------------------------------------------------------------- exact


class ExactBackend:
    """The float32 brute force: no first pass (``prepare`` is never called)."""

    name = EXACT
    native = False
    two_pass = False

    def unavailable(self) -> str | None:
        return None

    def version(self) -> str:
        return np.__version__

    def prepare(self, emb: np.ndarray) -> PreparedRows:
        raise TypeError("the exact backend has no first pass")


# ---------------------------------------------------------------------------- shared scan


def _top_of(scores: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Top-``m`` of a full (N,) score vector: rows, scores (descending) and floor."""
    n = scores.shape[0]
    if m >= n:
        rows = np.argsort(-scores, kind="stable")
        return rows.astype(np.int64), scores[rows], -math.inf
    part = np.argpartition(-scores, m - 1)[:m]
    part = part[np.argsort(-scores[part], kind="stable")]
    return part.astype(np.int64), scores[part], float(scores[part[-1]])


@dataclass
class _FullScan:
    scores: np.ndarray
    error_bound: float

    def top(self, m: int) -> tuple[np.ndarray, np.ndarray, float]:
        return _top_of(self.scores, m)


# ---------------------------------------------------------------------------- NumPy int8


@dataclass(eq=False)
class _NumpyRows:
    codes: Int8Codes

    def __len__(self) -> int:
        return len(self.codes)

    def scan(self, probe: np.ndarray) -> Scan:
        codes = self.codes
        p = np.ascontiguousarray(probe, dtype=np.float32)
        n = len(codes)
        out = np.empty(n, dtype=np.float32)
        buf = np.empty((min(n, _Q8_BLOCK), codes.dim), dtype=np.float32)
        for lo in range(0, n, _Q8_BLOCK):
            hi = min(n, lo + _Q8_BLOCK)
            b = buf[: hi - lo]
            np.copyto(b, codes.q8[lo:hi], casting="unsafe")
            np.dot(b, p, out=out[lo:hi])
        out *= np.float32(codes.scale)
        pn = float(np.linalg.norm(p.astype(np.float64)))
        r = codes.max_radius
        bound = r * pn + _fp_relative(codes.dim) * (1.0 + r) * pn + _SLACK
        return _FullScan(out, bound)


class NumpyInt8Backend:
    """int8 codes -> float32 in cache-sized blocks, NumPy BLAS dot products (one thread)."""

    name = "numpy-int8"
    native = False
    two_pass = True

    def unavailable(self) -> str | None:
        return None

    def version(self) -> str:
        return np.__version__

    def prepare(self, emb: np.ndarray) -> PreparedRows:
        return _NumpyRows(quantize_rows(emb))


# ---------------------------------------------------------------------------- FAISS SQ8


_FAISS_LOCK = threading.Lock()
_FAISS: list[Any] = []


def _faiss() -> Any:
    """The ``faiss`` module, imported on first use, its OpenMP pool set to one thread (a
    one-probe search is bound by memory traffic; several OpenMP runtimes in one process,
    PyTorch's and FAISS's, spinning on the same cores slow it down several times)."""
    with _FAISS_LOCK:
        if not _FAISS:
            import faiss  # here, not at import: optional, and heavy

            faiss.omp_set_num_threads(1)
            _FAISS.append(faiss)
        return _FAISS[0]


@dataclass
class _FaissScan:
    index: Any
    query: np.ndarray
    factor: float
    n: int
    error_bound: float

    def top(self, m: int) -> tuple[np.ndarray, np.ndarray, float]:
        m = max(1, min(int(m), self.n))
        dist, labels = self.index.search(self.query, m)
        keep = labels[0] >= 0
        rows = labels[0][keep].astype(np.int64)
        approx = (dist[0][keep].astype(np.float64) * self.factor).astype(np.float32)
        if m >= self.n:
            return rows, approx, -math.inf
        floor = float(approx[-1]) if approx.shape[0] else math.inf
        return rows, approx, floor


@dataclass(eq=False)
class _FaissRows:
    index: Any
    scale: float
    max_radius: float
    dim: int
    n: int

    def __len__(self) -> int:
        return self.n

    def scan(self, probe: np.ndarray) -> Scan:
        codes, s_p, rho = quantize_probe(probe)
        pn = float(np.linalg.norm(np.asarray(probe, dtype=np.float64)))
        p_hat = pn + rho
        r = self.max_radius
        # ||row|| <= 1 (+ float32 rounding of the normalisation)
        bound = (1.0 + 1e-6) * rho + r * p_hat + _fp_relative(self.dim) * (1.0 + r) * p_hat + _SLACK
        return _FaissScan(self.index, codes[None, :], self.scale * s_p, self.n, bound)


class FaissSQ8Backend:
    """FAISS ``IndexScalarQuantizer(QT_8bit_direct_signed)`` over the int8 codes, searched
    with an integer-valued probe (exact integer arithmetic); one OpenMP thread."""

    name = "faiss-sq8"
    native = True
    two_pass = True

    def unavailable(self) -> str | None:
        try:
            _faiss()
        except ImportError as err:
            return f"faiss is not installed ({err})"
        return None

    def version(self) -> str:
        try:
            return str(_faiss().__version__)
        except ImportError:
            return "missing"

    def prepare(self, emb: np.ndarray) -> PreparedRows:
        faiss = _faiss()
        codes = quantize_rows(emb)
        n, d = codes.q8.shape
        index = faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_8bit_direct_signed,
                                           faiss.METRIC_INNER_PRODUCT)
        index.is_trained = True
        if n:
            # direct_signed stores c + 128 as uint8: the same bits as c with the top bit flipped
            index.add_sa_codes(np.ascontiguousarray(codes.q8).view(np.uint8) ^ np.uint8(0x80))
        return _FaissRows(index, codes.scale, codes.max_radius, d, n)


# ---------------------------------------------------------------------------- registry


BACKENDS: dict[str, Callable[[], SearchBackend]] = {
    EXACT: ExactBackend,
    NumpyInt8Backend.name: NumpyInt8Backend,
    FaissSQ8Backend.name: FaissSQ8Backend,
}
"""Every backend by name."""

AUTO_ORDER = (FaissSQ8Backend.name,)
"""What ``auto`` tries, in order, before the exact search (chosen by
``faceapp bench gallery``: the NumPy int8 pass is kept for forcing and comparison, but on the
machines measured it is barely faster than the float32 brute force)."""


def get_backend(name: str) -> SearchBackend:
    """The backend called ``name`` (``ValueError`` naming the choices otherwise)."""
    try:
        return BACKENDS[name.strip().lower()]()
    except KeyError:
        raise ValueError(
            f"unknown search backend {name!r} (choose from {', '.join([AUTO, *BACKENDS])})"
        ) from None
