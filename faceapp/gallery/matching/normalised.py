"""1:K with a score normaliser (:mod:`faceapp.nn.open_set`): a cosine short list, re-scored.

The index (or the server) proposes the people of highest cosine similarity; every template of
those people is re-scored with the normaliser, a person's score is the best of their
normalised template scores, and the people are re-sorted by it (ties: lower person id first).
The open-set decision is then taken on the normalised score, against the same τ (the
normaliser's map puts it on the cosine scale). With :data:`~faceapp.nn.open_set.RAW_SCORES`
nothing is re-scored.
"""

from __future__ import annotations

import numpy as np

from faceapp.gallery.matching.results import Candidate
from faceapp.nn.open_set import ScoreNormaliser

NORMALISED_SHORTLIST = 5
"""People proposed by cosine similarity for re-scoring (at least ``k``). The normalised score
re-orders people whose cosine similarities are close; 5 gave the same rank-1, rank-5 and DIR at
FPIR 1e-2 as re-scoring everyone on LFW DevTest (248 people). Every app path asks for k <= 5
(live loop 3, recognize 5, the enrolment check 1), so all of them re-score the same 5 people
and take the same decision. A wider list costs speed in large galleries: the int8 first pass
must then prove a longer exact top list (``faceapp bench gallery``, ``normalised``)."""


def shortlist_size(k: int, normaliser: ScoreNormaliser) -> int:
    """How many people the cosine pass must propose for a top-``k`` answer."""
    return max(k, NORMALISED_SHORTLIST) if normaliser.active else k


def rescored(probe: np.ndarray, person_ids: np.ndarray, templates: np.ndarray, k: int,
             normaliser: ScoreNormaliser) -> list[Candidate]:
    """Top-``k`` people of the given rows by normalised best-template score, among the
    :func:`shortlist_size` people of highest cosine similarity (best template) in them.

    Args:
        probe: (D,) float32 unit probe.
        person_ids: (M,) int64 person of each template row.
        templates: (M, D) float32 unit rows (every template of the index's short-listed
            people, or the rows nearest the probe a server returned).
        normaliser: applied to the rows' cosine similarities.
    Returns:
        up to ``k`` candidates, best first (ties: lower person id first).
    """
    if person_ids.shape[0] == 0:
        return []
    q = np.asarray(probe, dtype=np.float32).reshape(1, -1)
    emb = np.asarray(templates, dtype=np.float32)
    cos = (q @ emb.T)[0]
    people, inverse = np.unique(person_ids, return_inverse=True)
    cos_best = _best_per_person(cos, inverse, people.shape[0])
    keep_people = np.lexsort((people, -cos_best))[:shortlist_size(k, normaliser)]
    rows = np.flatnonzero(np.isin(inverse, keep_people))
    scores = normaliser.normalise(q, emb[rows], cos[None, rows])[0]
    best = _best_per_person(scores, inverse[rows], people.shape[0])
    order = np.lexsort((people, -best))[:min(k, keep_people.shape[0])]
    return [Candidate(int(people[j]), float(best[j])) for j in order]


def _best_per_person(scores: np.ndarray, inverse: np.ndarray, n_people: int) -> np.ndarray:
    """(n_people,) float64 maximum of ``scores`` per person (``-inf`` for one without rows)."""
    best = np.full(n_people, -np.inf)
    np.maximum.at(best, inverse, scores.astype(np.float64))
    return best
