"""What a search answers: candidates, 1:K identifications and 1:1 verifications, and the scorer
interface the index needs. Decisions follow :func:`faceapp.nn.scoring.accepts`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from faceapp.nn.scoring import accepts

DEFAULT_AMBIGUITY_MARGIN = 0.03
"""Default margin for :attr:`Identification.ambiguous`: a tie-break tolerance on the score
scale (the runner-up is within this of the winner), **not** a match threshold. Callers pass
their own ``margin`` to suit the scorer."""


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
