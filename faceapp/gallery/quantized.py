"""The int8 copy of a gallery's rows and the first-pass scores computed from it, each with a
proven bound on its error (used by :meth:`faceapp.gallery.matching.GalleryIndex.identify`).

A 1:K search over 10⁶ templates reads the whole template matrix once per probe, so memory
traffic bounds it: float32 rows are 512 bytes each at D = 128, int8 rows 128. Each row ``t``
(a unit vector) is stored as ``q = rint(t / s)`` with its own scale ``s = max|t| / 127``,
so ``|t - s·q| <= s / 2`` element-wise.

Two first-pass strategies compute ``s_i · (q_i · p)`` for a unit probe ``p``:

* :class:`NumpyFirstPass`: int8 blocks converted to float32 inside the cache and multiplied
  there with NumPy's BLAS, blocks spread over the cores. Only the int8 rounding counts:
  ``|score - t·p| <= max(s) / 2 · ||p||_1`` (+ float32 slack).
* :class:`TorchInt8FirstPass`: PyTorch's int8-weight matrix product
  (``torch._weight_int8pack_mm``: int8 rows, bfloat16 probe and scales, float32
  accumulation, bfloat16 output), about twice as fast as the NumPy pass on AVX2. Its bound
  adds three bfloat16 roundings (probe, scale, output), each at most ``u = 2⁻⁸`` relative,
  applied to a magnitude that is at most ``b = 1 + max(s)/2 · ||p||_1`` (because
  ``s·Σ|q_k||p_k| <= ||t||·||p|| + s/2·||p||_1``): see :meth:`TorchInt8FirstPass.error_bound`.
  The kernel reads rows of a multiple of 8 columns, so rows are zero-padded to that width
  (zeros change no dot product). It is a private PyTorch operator, so before its first use
  it is checked on a random problem against float64 arithmetic and the bound; when it is
  missing or fails the check, :func:`default_first_pass` falls back to NumPy.

Nothing is built or imported at import time: the pool of the NumPy pass, the BLAS hook and
PyTorch are looked up on first use.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

log = logging.getLogger(__name__)

_Q8_BLOCK = 4096
"""Rows converted from int8 to float32 per block by the NumPy pass (2 MB: stays in cache)."""

_PAD = 8
"""Row width multiple of the int8 copy (the PyTorch kernel reads 8 columns at a time)."""

_QUANTIZE_STEP = 65_536
"""Rows quantized per step (bounds the float32 temporaries)."""


@dataclass(eq=False)
class Int8Rows:
    """(N, D) unit rows stored as int8 with one float32 scale per row.

    ``q8``: (N, D8) int8, D8 = D rounded up to a multiple of 8 (extra columns are zero);
    ``scale``: (N,) float32 with ``|row - scale * q8[:, :D]| <= scale / 2`` element-wise;
    ``dim``: D. ``cache`` holds what a first pass derives from the rows (e.g. tensors).
    """

    q8: np.ndarray
    scale: np.ndarray
    dim: int
    cache: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.q8.shape[0])

    @property
    def max_scale(self) -> float:
        return float(self.scale.max()) if self.scale.shape[0] else 0.0


def quantize_rows(emb: np.ndarray) -> Int8Rows:
    """(N, D) float32 rows -> :class:`Int8Rows` (per-row symmetric int8, zero-padded)."""
    n, d = emb.shape
    width = -(-d // _PAD) * _PAD
    q8 = np.zeros((n, width), dtype=np.int8)
    scale = np.empty(n, dtype=np.float32)
    for lo in range(0, n, _QUANTIZE_STEP):
        block = emb[lo : lo + _QUANTIZE_STEP]
        s = np.abs(block).max(axis=1) / 127.0
        s[s == 0] = 1.0
        q8[lo : lo + _QUANTIZE_STEP, :d] = np.rint(block / s[:, None])
        scale[lo : lo + _QUANTIZE_STEP] = s
    return Int8Rows(q8, scale, d)


def _quantization_error(rows: Int8Rows, probe: np.ndarray) -> float:
    """Bound on ``|s_i (q_i · p) - t_i · p|`` over all rows, from the int8 rounding alone."""
    return 0.5 * rows.max_scale * float(np.abs(probe).sum())


class FirstPass(Protocol):
    """How the int8 rows are scored against one probe."""

    name: str

    def scores(self, rows: Int8Rows, probe: np.ndarray) -> np.ndarray:
        """(D,) float32 unit probe -> (N,) float32 approximations of the row cosines."""
        ...

    def error_bound(self, rows: Int8Rows, probe: np.ndarray) -> float:
        """A bound on ``|scores(rows, probe)[i] - t_i · p|`` valid for every row ``i``."""
        ...


# ---------------------------------------------------------------------------- NumPy pass

_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()
_BLAS_SETTER: list[Callable[[int], int] | None] = []


def _blas_thread_setter() -> Callable[[int], int] | None:
    """OpenBLAS's ``openblas_set_num_threads_local`` from NumPy's bundled library (sets the
    BLAS thread count of the calling thread only), or ``None`` when NumPy uses another BLAS.
    Looked up once, on first use."""
    with _POOL_LOCK:
        if not _BLAS_SETTER:
            setter = None
            libs = Path(np.__file__).resolve().parent.parent / "numpy.libs"
            for lib in sorted(libs.glob("*openblas*.so*")) if libs.is_dir() else []:
                with contextlib.suppress(OSError, AttributeError):
                    fn = ctypes.CDLL(str(lib)).openblas_set_num_threads_local
                    fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
                    setter = fn
                    break
            _BLAS_SETTER.append(setter)
        return _BLAS_SETTER[0]


def _one_blas_thread() -> None:
    setter = _blas_thread_setter()
    if setter is not None:
        setter(1)


def _q8_pool() -> ThreadPoolExecutor:
    """The process-wide pool of the NumPy pass, created on first use (never at import);
    its threads run BLAS single-threaded."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="faceapp-q8",
                                       initializer=_one_blas_thread)
        return _POOL


def _q8_workers(n_rows: int) -> int:
    """Threads for a NumPy pass over ``n_rows`` rows: one per core (at most 4) when NumPy's
    BLAS can be kept to one thread inside each of them, else 1 (nested BLAS threads on top
    of ours would oversubscribe the cores)."""
    if n_rows < 8 * _Q8_BLOCK or _blas_thread_setter() is None:
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


def _approx_block(q8: np.ndarray, probe: np.ndarray, lo: int, hi: int, out: np.ndarray) -> None:
    """out[lo:hi] = float32(q8[lo:hi]) @ probe, through a cache-sized float32 buffer
    (NumPy releases the GIL in both steps, so blocks of several threads run in parallel)."""
    buf = np.empty((min(hi - lo, _Q8_BLOCK), q8.shape[1]), dtype=np.float32)
    for start in range(lo, hi, _Q8_BLOCK):
        stop = min(hi, start + _Q8_BLOCK)
        b = buf[: stop - start]
        np.copyto(b, q8[start:stop], casting="unsafe")
        np.dot(b, probe, out=out[start:stop])


class NumpyFirstPass:
    """int8 -> float32 in cache-sized blocks, BLAS dot products, blocks over the cores."""

    name = "numpy"

    def scores(self, rows: Int8Rows, probe: np.ndarray) -> np.ndarray:
        n = len(rows)
        padded = np.zeros(rows.q8.shape[1], dtype=np.float32)
        padded[: rows.dim] = probe
        out = np.empty(n, dtype=np.float32)
        workers = _q8_workers(n)
        if workers == 1:
            _approx_block(rows.q8, padded, 0, n, out)
        else:
            step = -(-n // workers)
            futures = [_q8_pool().submit(_approx_block, rows.q8, padded, lo, min(n, lo + step), out)
                       for lo in range(0, n, step)]
            for f in futures:
                f.result()
        out *= rows.scale
        return out

    def error_bound(self, rows: Int8Rows, probe: np.ndarray) -> float:
        # float32 arithmetic on |values| <= ~1 over D terms: far below 1e-5 for D <= 4096
        return _quantization_error(rows, probe) + 1e-5


# ---------------------------------------------------------------------------- PyTorch pass

_BF16_UNIT = 2.0**-8
"""Relative error of one bfloat16 rounding (8 significant bits; 2⁻⁹ for round-to-nearest,
doubled so that truncating conversions are covered too)."""


class TorchInt8FirstPass:
    """``torch._weight_int8pack_mm`` on the int8 rows (PyTorch's intra-op threads)."""

    name = "torch-int8"

    def __init__(self) -> None:
        import torch  # here, not at import: faceapp.gallery works without loading torch

        op = getattr(torch, "_weight_int8pack_mm", None)
        if op is None:
            raise RuntimeError("this PyTorch has no _weight_int8pack_mm")
        self._torch = torch
        self._op: Callable[..., Any] = op

    def _tensors(self, rows: Int8Rows) -> tuple[Any, Any]:
        cached = rows.cache.get(self.name)
        if cached is None:
            torch = self._torch
            cached = (torch.from_numpy(rows.q8), torch.from_numpy(rows.scale).to(torch.bfloat16))
            rows.cache[self.name] = cached
        return cached

    def scores(self, rows: Int8Rows, probe: np.ndarray) -> np.ndarray:
        torch = self._torch
        weight, scale = self._tensors(rows)
        padded = torch.zeros((1, rows.q8.shape[1]), dtype=torch.float32)
        padded[0, : rows.dim] = torch.from_numpy(np.ascontiguousarray(probe, dtype=np.float32))
        with torch.inference_mode():
            out = self._op(padded.to(torch.bfloat16), weight, scale)
        return out[0].to(torch.float32).numpy()

    def error_bound(self, rows: Int8Rows, probe: np.ndarray) -> float:
        """int8 rounding ``e1`` plus, on a magnitude ``b = (1 + e1)·||p||_2``, three
        bfloat16 roundings (probe, scale, output: ``3u(1+u)²``) and the float32
        accumulation of D products (``D·2⁻²³``), plus 1e-5 of float32 slack."""
        e1 = _quantization_error(rows, probe)
        b = (1.0 + e1) * max(1.0, float(np.linalg.norm(probe)))
        u = _BF16_UNIT
        d = rows.q8.shape[1]
        return e1 + b * (3.0 * u * (1.0 + u) ** 2 * (1.0 + d * 2.0**-23) + d * 2.0**-23) + 1e-5


def self_check(first_pass: FirstPass, dim: int = 128, n: int = 4099, seed: int = 0) -> float:
    """Largest ``error / bound`` of ``first_pass`` on random unit rows (plus extreme ones)
    against float64 arithmetic; a value above 1 means the bound does not hold."""
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((n, dim))
    emb[:8] = 0.0
    emb[:8, :8] = np.eye(8)  # rows with one +-1 entry: the largest |q| and scale
    emb[8:16] = -1.0  # constant rows: every entry at the int8 extreme
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    emb = emb.astype(np.float32)
    rows = quantize_rows(emb)
    worst = 0.0
    for probe in (emb[20] + 0.1 * rng.standard_normal(dim), np.ones(dim), rng.standard_normal(dim)):
        p = (probe / np.linalg.norm(probe)).astype(np.float32)
        exact = emb.astype(np.float64) @ p.astype(np.float64)
        err = np.abs(first_pass.scores(rows, p).astype(np.float64) - exact)
        if not np.all(np.isfinite(err)):
            return float("inf")
        worst = max(worst, float(err.max()) / first_pass.error_bound(rows, p))
    return worst


_DEFAULT: list[FirstPass] = []
_DEFAULT_LOCK = threading.Lock()


def choose_first_pass(candidates: Sequence[Callable[[], FirstPass]]) -> FirstPass:
    """The first candidate that can be built and passes :func:`self_check`; NumPy if none."""
    for make in candidates:
        try:
            candidate = make()
        except (ImportError, RuntimeError) as exc:
            log.info("int8 first pass unavailable (%s)", exc)
            continue
        worst = self_check(candidate)
        if worst <= 1.0:
            return candidate
        log.warning("int8 first pass %r exceeds its error bound (x%.3g): not used", candidate.name, worst)
    return NumpyFirstPass()


def default_first_pass() -> FirstPass:
    """The fastest first pass that works here: PyTorch's int8 kernel when it exists and
    passes :func:`self_check`, else NumPy. Decided once per process, on first use."""
    with _DEFAULT_LOCK:
        if not _DEFAULT:
            _DEFAULT.append(choose_first_pass([TorchInt8FirstPass]))
        return _DEFAULT[0]
