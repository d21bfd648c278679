"""The two-pass 1:K search of large galleries (cosine scorer): a compressed first pass proposes
a short list of rows, the people in it are re-scored exactly in float32, and the list grows
until the first pass's error bound proves that nobody outside it can enter the exact top-k.

:class:`TwoPassSearch` is the part of :class:`~faceapp.gallery.matching.GalleryIndex` that
does it (the index inherits it; it works on the index's grouped rows).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from faceapp.gallery.matching.arrays import top_k
from faceapp.gallery.quantized import AUTO, PreparedRows, SearchBackend, get_backend

if TYPE_CHECKING:
    from faceapp.gallery.matching.results import PairScorer

QUANTIZE_MIN_ROWS = 50_000
"""Default size from which :meth:`GalleryIndex.identify` uses the two-pass search."""

_Q8_MAX_PROBES = 4
"""More probes at once are searched exactly: one float32 matrix product reads the gallery
once for all of them, the first pass reads it once per probe."""

_FULL_FRACTION = 8
"""A short list that would need more than 1/8 of the rows: the exact search instead."""


def _check_backend_name(backend: SearchBackend | str | None) -> None:
    """An unknown backend name fails here, when it is set, not at the first search."""
    if isinstance(backend, str) and backend.strip().lower() != AUTO:
        get_backend(backend.strip().lower())


class TwoPassSearch:
    """First pass + exact re-rank over the rows of a :class:`GalleryIndex` (a mixin)."""

    dim: int
    _emb: np.ndarray
    _n: int
    _starts: np.ndarray

    def _init_search(self, quantize_min_rows: int, backend: SearchBackend | str | None) -> None:
        self.quantize_min_rows = int(quantize_min_rows)
        _check_backend_name(backend)
        self.backend = backend
        self._q8: PreparedRows | None = None  # first-pass copy of the rows, valid while not None
        self._q8_backend: SearchBackend | None = None
        self.last_search: dict[str, object] = {}
        """How the last one-probe search went: backend, rows re-ranked, rounds."""

    def _two_pass_applies(self, n_probes: int, scorer: PairScorer | None) -> bool:
        """Is a search of ``n_probes`` probes with ``scorer`` run in two passes?"""
        return (scorer is None and self._n >= max(1, self.quantize_min_rows)
                and 1 <= n_probes <= _Q8_MAX_PROBES and self._search_backend().two_pass)

    def _two_pass_top(self, probes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(P, k) group positions and scores of the exact top-``k`` of (P, D) unit probes."""
        picked = [self._top_people_q8(row, k) for row in probes]
        return np.stack([t for t, _ in picked]), np.stack([v for _, v in picked])

    def set_backend(self, backend: SearchBackend | str | None) -> None:
        """Search with another backend from now on (its copy of the rows is built on the
        next search)."""
        _check_backend_name(backend)
        self.backend = backend
        self._q8 = None
        self._q8_backend = None

    def _search_backend(self) -> SearchBackend:
        """The backend for this index's width and size (chosen once per size class)."""
        if self.backend is not None and not isinstance(self.backend, str):
            return self.backend
        from faceapp.gallery.selfcheck import choose_backend  # the child-process check

        return choose_backend(self.backend, self.dim, self._n)

    def _ensure_q8(self) -> PreparedRows:
        """The backend's copy of the rows, rebuilt after a change (or a new backend)."""
        backend = self._search_backend()
        if self._q8 is None or len(self._q8) != self._n or self._q8_backend is not backend:
            self._q8 = backend.prepare(self._emb[: self._n])
            self._q8_backend = backend
        return self._q8

    def _exact_people(self, probe: np.ndarray, groups: np.ndarray) -> np.ndarray:
        """(C,) exact best-template cosine of the people at group positions ``groups``."""
        starts = self._starts[groups]
        ends = np.where(groups + 1 < self._starts.shape[0],
                        self._starts[np.minimum(groups + 1, self._starts.shape[0] - 1)],
                        self._n)
        lengths = ends - starts
        offsets = np.cumsum(lengths) - lengths
        rows = np.arange(int(lengths.sum())) - np.repeat(offsets - starts, lengths)
        scores = self._emb[rows] @ probe
        return np.maximum.reduceat(scores, offsets)

    def _top_people_exact(self, probe: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        per_person = np.maximum.reduceat(self._emb[: self._n] @ probe, self._starts)
        top, top_scores = top_k(per_person[None, :], k)
        return top[0], top_scores[0]

    def _top_people_q8(self, probe: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` (group positions, scores), best first, for one (D,) unit probe.

        The first-pass score of any row differs from its exact score by at most ``eps``
        (the scan's ``error_bound``). The short list is the ``m`` rows with the highest
        first-pass scores; every other row scores at most ``floor`` there, so exactly at
        most ``floor + eps``. The people with a row in the list are scored exactly (all
        their templates); once ``floor + eps`` is below the k-th of those exact scores,
        nobody outside can enter the top-k. Otherwise ``m`` grows 8-fold; past 1/8 of the
        rows, the exact search runs instead.
        """
        scan = self._ensure_q8().scan(probe)
        n = self._n
        eps = float(scan.error_bound)
        name = self._q8_backend.name if self._q8_backend is not None else "?"
        m = min(n, 32 + 16 * k)
        rounds = 0
        while np.isfinite(eps):
            rounds += 1
            rows, _approx, floor = scan.top(m)
            if rows.shape[0] != m:  # a broken first pass: be exact
                break
            groups = np.unique(np.searchsorted(self._starts, rows, side="right") - 1)
            if groups.shape[0] >= k or m >= n:
                exact = self._exact_people(probe, groups)
                top, top_scores = top_k(exact[None, :], min(k, groups.shape[0]))
                kth = float(top_scores[0, -1])
                if m >= n or floor + eps < kth:
                    self.last_search = {"backend": name, "rows_reranked": int(m),
                                        "people_reranked": int(groups.shape[0]), "rounds": rounds}
                    return groups[top[0]], top_scores[0]
            if m * _FULL_FRACTION >= n:
                break
            m = min(n, 8 * m)
        self.last_search = {"backend": f"{name}, then exact", "rows_reranked": int(n),
                            "people_reranked": int(self._starts.shape[0]), "rounds": rounds}
        return self._top_people_exact(probe, k)
