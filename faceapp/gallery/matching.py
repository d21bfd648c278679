"""In-memory search index of one model's templates: 1:1 verification and 1:K identification.

Conventions (the same everywhere in faceapp):

* a **score is a similarity**: higher means more alike. The built-in scorer is the cosine
  similarity of L2-normalised embeddings (a plain dot product); any object with
  ``score_matrix(probes (P, D), gallery (M, D)) -> (P, M)`` (``faceapp.nn.scoring.Scorer``,
  e.g. the binary verification head's probability) can be passed instead.
* a comparison **matches when ``score >= threshold``**. The threshold τ always comes from
  the caller (the model's calibration file or the user), never from this module.
* a person's score is the **best (maximum) score over their templates** ("best template"
  aggregation), for both :meth:`GalleryIndex.verify` and :meth:`GalleryIndex.identify`.

Layout: the index holds an (N, D) float32 matrix of L2-normalised rows with, per row, the
template id and person id. Rows are kept grouped by person (sorted by person id, then
template id) so that the per-person maximum of a probe's N scores is one
``np.maximum.reduceat`` over the person segments: identification is one matrix product plus
one segmented reduction, no Python loop over templates or people. Adding templates appends
to a growable buffer (amortised O(new rows)); the grouping is restored lazily, once, at the
next search. Removing a person or templates compacts the buffer in place. No database access.

Large galleries (``len(index) >= quantize_min_rows``, cosine scorer) are identified in two
passes: a **compressed first pass** (int8 codes: a quarter of the memory traffic of float32,
which is what bounds a 1:K search; see :mod:`faceapp.gallery.quantized` for the backends and
their error bounds) proposes a short list of rows; then every person with a row in it is
**re-scored exactly in float32**. The short list grows until the first pass's error bound
proves that nobody outside it can enter the exact top-k, so the result (people and scores)
is the same as the exact search, ties aside (see :meth:`GalleryIndex.identify`). The
backend is chosen on first use for the gallery's width and size class
(:func:`faceapp.gallery.selfcheck.choose_backend`: a native one only after it passed a
self-check in a child process; else the exact search) and its copy of the rows is built on
the first search after a change.

Not thread-safe: one thread at a time (the services layer guarantees it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from faceapp.errors import ModelMismatch, PersonNotFound
from faceapp.gallery.quantized import AUTO, PreparedRows, SearchBackend, get_backend
from faceapp.nn.scoring import accepts

DEFAULT_AMBIGUITY_MARGIN = 0.03
"""Default margin for :attr:`Identification.ambiguous`: a tie-break tolerance on the score
scale (the runner-up is within this of the winner), **not** a match threshold. Callers pass
their own ``margin`` to suit the scorer."""

_CHUNK_ELEMENTS = 1 << 24
"""Scores computed per block (P × rows) by a custom scorer, to bound memory."""

QUANTIZE_MIN_ROWS = 50_000
"""Default size from which :meth:`GalleryIndex.identify` uses the two-pass search."""

_Q8_MAX_PROBES = 4
"""More probes at once are searched exactly: one float32 matrix product reads the gallery
once for all of them, the first pass reads it once per probe."""

_FULL_FRACTION = 8
"""A short list that would need more than 1/8 of the rows: the exact search instead."""


class PairScorer(Protocol):
    """What the index needs from a scorer (``faceapp.nn.scoring.Scorer`` satisfies it)."""

    name: str

    def score_matrix(self, probes: np.ndarray, gallery: np.ndarray) -> np.ndarray:
        """(P, D) float32, (M, D) float32 -> (P, M) float32 similarities."""
        ...


@dataclass(frozen=True)
class Candidate:
    """One person proposed for a probe, with their best-template score."""

    person_id: int
    score: float


@dataclass(frozen=True)
class Identification:
    """1:K result for one probe.

    ``candidates``: up to k people, best first. ``person_id`` is the best candidate when its
    score passes ``threshold`` (``score >= threshold``), else ``None`` (Unknown).
    ``ambiguous``: the best passes τ and the runner-up is within ``margin`` of it.
    """

    candidates: tuple[Candidate, ...]
    threshold: float
    ambiguous: bool
    margin: float

    @classmethod
    def of(cls, candidates: Sequence[Candidate], threshold: float,
           margin: float = DEFAULT_AMBIGUITY_MARGIN) -> Identification:
        """The result for ``candidates`` (best first), with :attr:`ambiguous` worked out."""
        cands = tuple(candidates)
        ambiguous = (len(cands) >= 2 and accepts(cands[0].score, threshold)
                     and cands[0].score - cands[1].score < margin)
        return cls(cands, float(threshold), bool(ambiguous), float(margin))

    @property
    def best_score(self) -> float:
        """Best candidate's score; ``-inf`` for an empty gallery."""
        return self.candidates[0].score if self.candidates else float("-inf")

    @property
    def person_id(self) -> int | None:
        if self.candidates and accepts(self.candidates[0].score, self.threshold):
            return self.candidates[0].person_id
        return None

    @property
    def is_known(self) -> bool:
        return self.person_id is not None


@dataclass(frozen=True)
class Verification:
    """1:1 result: ``score`` is the best score over the person's ``n_templates`` templates;
    ``match`` is ``score >= threshold``."""

    person_id: int
    score: float
    threshold: float
    match: bool
    n_templates: int


def _top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Column indices and values of the ``k`` best of each row of (P, G), best first."""
    n_probes, g = scores.shape
    if k < g:
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        top = np.broadcast_to(np.arange(g), (n_probes, g))
    top_scores = np.take_along_axis(scores, top, axis=1)
    order = np.argsort(-top_scores, axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1), np.take_along_axis(top_scores, order, axis=1)


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows of (N, D) -> float32 unit rows (a zero row stays zero)."""
    arr = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(arr, axis=-1, keepdims=True)
    return (arr / np.maximum(norms, eps)).astype(np.float32, copy=False)


class GalleryIndex:
    """Templates of one ``model_id`` (all of dimension ``dim``), searchable in memory."""

    def __init__(
        self, model_id: str, dim: int, capacity: int = 1024, *,
        quantize_min_rows: int = QUANTIZE_MIN_ROWS,
        backend: SearchBackend | str | None = None,
    ) -> None:
        """``quantize_min_rows``: from this many templates on, :meth:`identify` with the
        cosine scorer runs the first pass + exact re-rank (a very large value turns it
        off). ``backend``: the first pass (:mod:`faceapp.gallery.quantized`): an object is
        used as given; a name, or ``None`` (``$FACEAPP_SEARCH_BACKEND``, default ``auto``),
        goes through :func:`~faceapp.gallery.selfcheck.choose_backend` on first use."""
        if dim <= 0:
            raise ValueError(f"embedding dimension must be positive, got {dim}")
        self.model_id = model_id
        self.dim = int(dim)
        cap = max(16, int(capacity))
        self._emb = np.zeros((cap, self.dim), dtype=np.float32)
        self._pid = np.zeros(cap, dtype=np.int64)
        self._tid = np.zeros(cap, dtype=np.int64)
        self._n = 0
        self._grouped = True
        self._people = np.zeros(0, dtype=np.int64)  # (G,) person ids, ascending
        self._starts = np.zeros(0, dtype=np.int64)  # (G,) first row of each person
        self._segments_valid = True
        self.quantize_min_rows = int(quantize_min_rows)
        if isinstance(backend, str) and backend.strip().lower() != AUTO:
            get_backend(backend.strip().lower())  # an unknown name fails here, not at the first search
        self.backend = backend
        self._q8: PreparedRows | None = None  # first-pass copy of the rows, valid while not None
        self._q8_backend: SearchBackend | None = None
        self.last_search: dict[str, object] = {}
        """How the last one-probe search went: backend, rows re-ranked, rounds."""

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_arrays(
        cls,
        model_id: str,
        template_ids: np.ndarray,
        person_ids: np.ndarray,
        embeddings: np.ndarray,
    ) -> GalleryIndex:
        """Build from (N,) template ids, (N,) person ids and (N, D) embeddings."""
        emb = np.asarray(embeddings)
        if emb.ndim != 2 or emb.shape[0] == 0:
            raise ValueError("from_arrays needs a non-empty (N, D) embedding matrix")
        index = cls(model_id, emb.shape[1], capacity=emb.shape[0])
        index.add(template_ids, person_ids, emb, model_id=model_id)
        return index

    @classmethod
    def from_grouped(
        cls,
        model_id: str,
        template_ids: np.ndarray,
        person_ids: np.ndarray,
        embeddings: np.ndarray,
    ) -> GalleryIndex:
        """Adopt arrays that are already unit rows grouped by person (as returned by
        :meth:`embeddings`, :meth:`row_person_ids`, :meth:`row_template_ids`), without
        copying or re-normalising: the fast path for index snapshots. Grouping is checked."""
        emb = np.ascontiguousarray(embeddings, dtype=np.float32)
        pids = np.ascontiguousarray(person_ids, dtype=np.int64)
        tids = np.ascontiguousarray(template_ids, dtype=np.int64)
        if emb.ndim != 2 or pids.shape != (emb.shape[0],) or tids.shape != pids.shape:
            raise ValueError("expected (N,) ids, (N,) person ids and (N, D) embeddings")
        if emb.shape[0] and np.any(pids[1:] < pids[:-1]):
            raise ValueError("rows are not grouped by person")
        index = cls(model_id, emb.shape[1], capacity=16)
        index._emb, index._pid, index._tid = emb, pids, tids
        # arrays viewed on a read-only buffer (an opened snapshot) get one writable copy
        if not emb.flags.writeable:
            index._emb = emb.copy()
        if not pids.flags.writeable:
            index._pid = pids.copy()
        if not tids.flags.writeable:
            index._tid = tids.copy()
        index._n = emb.shape[0]
        index._grouped = True
        index._segments_valid = False
        index._q8 = None
        return index

    # ------------------------------------------------------------------ inspection
    def __len__(self) -> int:
        return self._n

    @property
    def n_people(self) -> int:
        self._ensure_grouped()
        return int(self._people.shape[0])

    def people(self) -> np.ndarray:
        """(G,) int64 ids of the people with at least one template, ascending."""
        self._ensure_grouped()
        return self._people.copy()

    def embeddings(self) -> np.ndarray:
        """(N, D) float32 unit rows grouped by person (a read-only view)."""
        self._ensure_grouped()
        view = self._emb[: self._n]
        view.flags.writeable = False
        return view

    def row_person_ids(self) -> np.ndarray:
        """(N,) int64 person id of each row of :meth:`embeddings`."""
        self._ensure_grouped()
        return self._pid[: self._n].copy()

    def row_template_ids(self) -> np.ndarray:
        self._ensure_grouped()
        return self._tid[: self._n].copy()

    def check_model(self, model_id: str, dim: int | None = None) -> None:
        """Raise :class:`ModelMismatch` unless the probe comes from this index's model."""
        if model_id != self.model_id:
            raise ModelMismatch(
                f"probe made by model {model_id!r} cannot be compared with templates of "
                f"model {self.model_id!r} (run 'faceapp reembed')"
            )
        if dim is not None and dim != self.dim:
            raise ModelMismatch(
                f"probe has {dim} dimensions, templates of model {self.model_id!r} have "
                f"{self.dim}"
            )

    # ------------------------------------------------------------------ updates
    def add(
        self,
        template_ids: Sequence[int] | np.ndarray,
        person_ids: Sequence[int] | np.ndarray,
        embeddings: np.ndarray,
        *,
        model_id: str,
    ) -> None:
        """Append templates: (N,) ids, (N,) person ids, (N, D) embeddings (normalised here).

        Raises :class:`ModelMismatch` for another ``model_id`` or dimension.
        """
        emb = np.asarray(embeddings, dtype=np.float32)
        if emb.ndim == 1:
            emb = emb[None, :]
        self.check_model(model_id, emb.shape[1] if emb.ndim == 2 else None)
        tids = np.asarray(template_ids, dtype=np.int64).reshape(-1)
        pids = np.asarray(person_ids, dtype=np.int64).reshape(-1)
        m = emb.shape[0]
        if tids.shape[0] != m or pids.shape[0] != m:
            raise ValueError(f"{m} embeddings but {tids.shape[0]} ids / {pids.shape[0]} people")
        if m == 0:
            return
        if not np.all(np.isfinite(emb)):
            raise ValueError("embeddings must be finite")
        self._reserve(self._n + m)
        lo, hi = self._n, self._n + m
        self._emb[lo:hi] = l2_normalize(emb)
        self._pid[lo:hi] = pids
        self._tid[lo:hi] = tids
        if self._grouped:
            keys_sorted = bool(np.all(np.diff(pids) >= 0))
            after_last = lo == 0 or pids[0] >= self._pid[lo - 1]
            self._grouped = keys_sorted and after_last
        self._n = hi
        self._segments_valid = False
        self._q8 = None

    def remove_person(self, person_id: int) -> int:
        """Drop every row of ``person_id``; returns how many were removed."""
        return self._remove_mask(self._pid[: self._n] == person_id)

    def remove_templates(self, template_ids: Sequence[int] | np.ndarray) -> int:
        """Drop the rows of these template ids; returns how many were removed."""
        ids = np.asarray(template_ids, dtype=np.int64).reshape(-1)
        return self._remove_mask(np.isin(self._tid[: self._n], ids))

    def _remove_mask(self, mask: np.ndarray) -> int:
        removed = int(mask.sum())
        if removed == 0:
            return 0
        keep = np.flatnonzero(~mask)
        k = keep.shape[0]
        # order-preserving compaction: grouping is kept
        self._emb[:k] = self._emb[keep]
        self._pid[:k] = self._pid[keep]
        self._tid[:k] = self._tid[keep]
        self._n = k
        self._segments_valid = False
        self._q8 = None
        return removed

    def _reserve(self, needed: int) -> None:
        cap = self._emb.shape[0]
        if needed <= cap:
            return
        new_cap = max(needed, cap + cap // 2, 16)
        emb = np.zeros((new_cap, self.dim), dtype=np.float32)
        emb[: self._n] = self._emb[: self._n]
        pid = np.zeros(new_cap, dtype=np.int64)
        pid[: self._n] = self._pid[: self._n]
        tid = np.zeros(new_cap, dtype=np.int64)
        tid[: self._n] = self._tid[: self._n]
        self._emb, self._pid, self._tid = emb, pid, tid

    def _ensure_grouped(self) -> None:
        n = self._n
        if not self._grouped:
            order = np.lexsort((self._tid[:n], self._pid[:n]))
            self._emb[:n] = self._emb[order]
            self._pid[:n] = self._pid[order]
            self._tid[:n] = self._tid[order]
            self._grouped = True
            self._segments_valid = False
            self._q8 = None
        if not self._segments_valid:
            pid = self._pid[:n]
            if n == 0:
                self._starts = np.zeros(0, dtype=np.int64)
                self._people = np.zeros(0, dtype=np.int64)
            else:
                starts = np.concatenate(([0], np.flatnonzero(pid[1:] != pid[:-1]) + 1))
                self._starts = starts.astype(np.int64)
                self._people = pid[starts].copy()
            self._segments_valid = True

    # ------------------------------------------------------------------ scoring
    def _prepare_probes(self, probes: np.ndarray, model_id: str) -> np.ndarray:
        arr = np.asarray(probes, dtype=np.float32)
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2:
            raise ValueError(f"probes must be (P, D), got shape {arr.shape}")
        self.check_model(model_id, arr.shape[1])
        if not np.all(np.isfinite(arr)):
            raise ValueError("probe embeddings must be finite")
        return l2_normalize(arr)

    def score_rows(
        self, probes: np.ndarray, lo: int = 0, hi: int | None = None,
        scorer: PairScorer | None = None,
    ) -> np.ndarray:
        """(P, D) unit probes -> (P, hi-lo) float32 similarities against rows lo:hi.

        ``scorer=None``: cosine similarity (dot product of unit vectors), one matrix product.
        Assumes the rows are grouped (callers run :meth:`_ensure_grouped` first).
        """
        hi = self._n if hi is None else hi
        gallery = self._emb[lo:hi]
        if scorer is None:
            return probes @ gallery.T
        p = max(1, probes.shape[0])
        step = max(1024, _CHUNK_ELEMENTS // p)
        out = np.empty((probes.shape[0], hi - lo), dtype=np.float32)
        for start in range(0, hi - lo, step):
            stop = min(hi - lo, start + step)
            block = np.asarray(scorer.score_matrix(probes, gallery[start:stop]), np.float32)
            if block.shape != (probes.shape[0], stop - start):
                raise ValueError(
                    f"scorer {scorer.name!r} returned shape {block.shape}, expected "
                    f"{(probes.shape[0], stop - start)}"
                )
            out[:, start:stop] = block
        return out

    def person_scores(
        self, probes: np.ndarray, *, model_id: str, scorer: PairScorer | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Best-template score of every person for every probe.

        Returns (people (G,) int64, scores (P, G) float32). G = 0 for an empty index.
        """
        q = self._prepare_probes(probes, model_id)
        self._ensure_grouped()
        if self._n == 0:
            return self._people.copy(), np.zeros((q.shape[0], 0), dtype=np.float32)
        rows = self.score_rows(q, scorer=scorer)
        per_person = np.maximum.reduceat(rows, self._starts, axis=1)
        return self._people.copy(), per_person

    def identify(
        self,
        probes: np.ndarray,
        *,
        model_id: str,
        threshold: float,
        k: int = 5,
        scorer: PairScorer | None = None,
        margin: float = DEFAULT_AMBIGUITY_MARGIN,
    ) -> list[Identification]:
        """Top-``k`` people for each of (P, D) probes (one result per probe, in order).

        Person score = best template score; candidates sorted by score descending; Unknown
        (``person_id is None``) when the best score is below ``threshold``. With the cosine
        scorer and at least ``quantize_min_rows`` templates, the first pass + exact
        float32 re-rank gives the same candidates and scores as the exact search.
        """
        if k < 1:
            raise ValueError("k must be at least 1")
        q = self._prepare_probes(probes, model_id)
        if scorer is None and self._n >= max(1, self.quantize_min_rows) and \
                1 <= q.shape[0] <= _Q8_MAX_PROBES and self._search_backend().two_pass:
            self._ensure_grouped()
            people = self._people
            g = people.shape[0]
            kk = min(k, g)
            picked = [self._top_people_q8(row, kk) for row in q]
            top = np.stack([t for t, _ in picked])
            top_scores = np.stack([v for _, v in picked])
            n_probes = q.shape[0]
        else:
            people, scores = self.person_scores(q, model_id=model_id, scorer=scorer)
            n_probes, g = scores.shape
            if g == 0:
                return [Identification.of((), threshold, margin)] * n_probes
            top, top_scores = _top_k(scores, min(k, g))
        return [
            Identification.of(
                [Candidate(int(people[j]), float(s)) for j, s in zip(top[i], top_scores[i], strict=True)],
                threshold, margin)
            for i in range(n_probes)
        ]

    # ------------------------------------------------------------------ two-pass search
    def set_backend(self, backend: SearchBackend | str | None) -> None:
        """Search with another backend from now on (its copy of the rows is built on the
        next search)."""
        if isinstance(backend, str) and backend.strip().lower() != AUTO:
            get_backend(backend.strip().lower())
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
        top, top_scores = _top_k(per_person[None, :], k)
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
                top, top_scores = _top_k(exact[None, :], min(k, groups.shape[0]))
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

    def verify(
        self,
        person_id: int,
        probe: np.ndarray,
        *,
        model_id: str,
        threshold: float,
        scorer: PairScorer | None = None,
    ) -> Verification:
        """Compare a (D,) probe with the templates of ``person_id`` (best template).

        Raises :class:`PersonNotFound` when the person has no template in this index.
        """
        q = self._prepare_probes(probe, model_id)
        if q.shape[0] != 1:
            raise ValueError("verify takes one probe")
        self._ensure_grouped()
        pos = int(np.searchsorted(self._people, person_id))
        if pos >= self._people.shape[0] or self._people[pos] != person_id:
            raise PersonNotFound(
                f"person id {person_id} has no template of model {self.model_id!r}"
            )
        lo = int(self._starts[pos])
        hi = int(self._starts[pos + 1]) if pos + 1 < self._starts.shape[0] else self._n
        scores = self.score_rows(q, lo, hi, scorer)[0]
        best = float(scores.max())
        return Verification(int(person_id), best, float(threshold), accepts(best, threshold), hi - lo)

    def pair_scores(
        self, scorer: PairScorer | None = None, max_templates: int = 4000, seed: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scores of every template pair i < j and whether both are the same person.

        Returns (scores (M,) float32, same (M,) bool), M = n(n-1)/2 with n = min(N,
        ``max_templates``) (a seeded random subset of rows beyond that).
        """
        self._ensure_grouped()
        n = self._n
        rows = np.arange(n)
        if n > max_templates:
            rows = np.sort(np.random.default_rng(seed).choice(n, max_templates, replace=False))
        emb = self._emb[rows]
        pid = self._pid[rows]
        full = emb @ emb.T if scorer is None else scorer.score_matrix(emb, emb)
        iu, ju = np.triu_indices(rows.shape[0], k=1)
        return np.asarray(full[iu, ju], dtype=np.float32), pid[iu] == pid[ju]
