"""The in-memory index of one model's templates: rows grouped by person, updates, exact scoring,
1:K identification, 1:1 verification and template-pair scores (see the package docstring)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from faceapp.errors import ModelMismatch, PersonNotFound
from faceapp.gallery.matching.arrays import l2_normalize, top_k
from faceapp.gallery.matching.normalised import rescored, shortlist_size
from faceapp.gallery.matching.results import (
    DEFAULT_AMBIGUITY_MARGIN,
    Candidate,
    Identification,
    PairScorer,
    Verification,
)
from faceapp.gallery.matching.two_pass import QUANTIZE_MIN_ROWS, TwoPassSearch
from faceapp.gallery.quantized import SearchBackend
from faceapp.nn.open_set import RAW_SCORES, ScoreNormaliser
from faceapp.nn.scoring import accepts

_CHUNK_ELEMENTS = 1 << 24
"""Scores computed per block (P × rows) by a custom scorer, to bound memory."""


class GalleryIndex(TwoPassSearch):
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
        self._init_search(quantize_min_rows, backend)

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
        normaliser: ScoreNormaliser = RAW_SCORES,
    ) -> list[Identification]:
        """Top-``k`` people for each of (P, D) probes (one result per probe, in order).

        Person score = best template score; candidates sorted by score descending; Unknown
        (``person_id is None``) when the best score is below ``threshold``. With the cosine
        scorer and at least ``quantize_min_rows`` templates, the first pass + exact
        float32 re-rank gives the same candidates and scores as the exact search.
        ``normaliser`` (cosine scorer only): the people of the cosine short list
        (:func:`~faceapp.gallery.matching.normalised.shortlist_size`) are re-scored and
        re-sorted by their best normalised template score, and decided on it.
        """
        if k < 1:
            raise ValueError("k must be at least 1")
        _refuse_head_normalised(scorer, normaliser)
        q = self._prepare_probes(probes, model_id)
        want = shortlist_size(k, normaliser)
        if self._two_pass_applies(q.shape[0], scorer):
            self._ensure_grouped()
            people = self._people
            top, top_scores = self._two_pass_top(q, min(want, people.shape[0]))
            n_probes = q.shape[0]
        else:
            people, scores = self.person_scores(q, model_id=model_id, scorer=scorer)
            n_probes, g = scores.shape
            if g == 0:
                return [Identification.of((), threshold, margin)] * n_probes
            top, top_scores = top_k(scores, min(want, g))
        if normaliser.active:
            return [Identification.of(self._rescored(q[i], top[i], k, normaliser), threshold, margin)
                    for i in range(n_probes)]
        return [
            Identification.of(
                [Candidate(int(people[j]), float(s)) for j, s in zip(top[i], top_scores[i], strict=True)],
                threshold, margin)
            for i in range(n_probes)
        ]


    def _rescored(self, probe: np.ndarray, positions: np.ndarray, k: int,
                  normaliser: ScoreNormaliser) -> list[Candidate]:
        """Every template of the people at group ``positions``, re-scored (rows grouped)."""
        ends = np.append(self._starts[1:], self._n)
        rows = np.concatenate([np.arange(self._starts[j], ends[j]) for j in positions])
        return rescored(probe, self._pid[rows], self._emb[rows], k, normaliser)

    def verify(
        self,
        person_id: int,
        probe: np.ndarray,
        *,
        model_id: str,
        threshold: float,
        scorer: PairScorer | None = None,
        normaliser: ScoreNormaliser = RAW_SCORES,
    ) -> Verification:
        """Compare a (D,) probe with the templates of ``person_id`` (best template).

        ``normaliser`` (cosine scorer only): each template's cosine similarity is normalised
        (probe vs that template) before the best is taken and judged against ``threshold``.
        Raises :class:`PersonNotFound` when the person has no template in this index.
        """
        _refuse_head_normalised(scorer, normaliser)
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
        scores = self.score_rows(q, lo, hi, scorer)
        if normaliser.active:
            scores = normaliser.normalise(q, self._emb[lo:hi], scores)
        best = float(scores[0].max())
        return Verification(int(person_id), best, float(threshold), accepts(best, threshold), hi - lo)

    def pair_scores(
        self, scorer: PairScorer | None = None, max_templates: int = 4000, seed: int = 0,
        normaliser: ScoreNormaliser = RAW_SCORES,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scores of every template pair i < j and whether both are the same person.

        Returns (scores (M,) float32, same (M,) bool), M = n(n-1)/2 with n = min(N,
        ``max_templates``) (a seeded random subset of rows beyond that). ``normaliser``
        (cosine scorer only): the cosine similarities normalised, as :meth:`verify` scores.
        """
        _refuse_head_normalised(scorer, normaliser)
        self._ensure_grouped()
        n = self._n
        rows = np.arange(n)
        if n > max_templates:
            rows = np.sort(np.random.default_rng(seed).choice(n, max_templates, replace=False))
        emb = self._emb[rows]
        pid = self._pid[rows]
        full = emb @ emb.T if scorer is None else scorer.score_matrix(emb, emb)
        if normaliser.active:
            full = normaliser.normalise(emb, emb, full)
        iu, ju = np.triu_indices(rows.shape[0], k=1)
        return np.asarray(full[iu, ju], dtype=np.float32), pid[iu] == pid[ju]


def _refuse_head_normalised(scorer: PairScorer | None, normaliser: ScoreNormaliser) -> None:
    """Score normalisation applies to cosine similarity only (``scorer`` None)."""
    if normaliser.active and scorer is not None:
        raise ValueError(f"score normalisation applies to cosine similarity, not {scorer.name!r}")
