"""The τ policy: which threshold a decision uses, held in one place for the whole service.

τ comes, in this order, from: an explicit argument (``--threshold``, ``threshold=``); the
user's τ for the scorer — chosen on a slider (:meth:`ThresholdPolicy.use`, this session
only) or stored in the gallery database (:meth:`ThresholdPolicy.store`: ``setting`` table,
key ``threshold/<model_id>/<scorer>``, so it follows the gallery it was chosen for and never
edits the shipped model folder); the model's ``calibration.json`` (its ``overrides``, else
the operating point, default ``far_0.01``). Never a constant.

1:1 and 1:K need different τ. ``far_0.01`` is a *verification* operating point: one
comparison of a stranger with one claimed person is accepted with probability 1e-2. A 1:K
search compares a stranger with every one of the G people of the gallery, so a stranger is
accepted as *someone* with probability FPIR ≈ G × FAR (measured on LFW DevTest: G = 10
accepts 9-10 % of strangers at τ(1e-2), about 1 % at τ(1e-3); G = 100: 55-63 % at τ(1e-2),
about 1 % at τ(1e-4)). So, when nobody chose a τ, recognition
(:meth:`ThresholdPolicy.identification`: ``recognize``, the enrolment's "already enrolled"
check, the live loops) uses the calibration point :func:`identification_point` picks for
the gallery's size, aiming at FPIR :data:`FPIR_TARGET`; verification
(:meth:`ThresholdPolicy.current`) keeps the operating point. A τ the user chose (argument,
session, stored, the calibration's ``overrides``) or an operating point the caller set
applies to both alike.

After its first read a τ is kept in memory, so the live loop, the GUI pages and the service
calls read the same number without a database round trip, and a change applies to all of
them at once. The decision itself is :func:`faceapp.nn.scoring.accepts`.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from faceapp.errors import CalibrationError
from faceapp.gallery.matching import PairScorer
from faceapp.nn.scoring import DISTANCE, accepts
from faceapp.services.unit_of_work import UnitOfWork

if TYPE_CHECKING:
    from faceapp.nn.calibration import Calibration

DEFAULT_POINT = "far_0.01"
SETTING_KEY = "threshold/{model_id}/{scorer}"

FPIR_TARGET = 1e-2
"""The product's open-set operating point (as :data:`DEFAULT_POINT` is its 1:1 one): the
share of strangers a 1:K search may accept as someone of the gallery, when nobody chose τ."""

IDENTIFICATION_POINTS = (("far_0.01", 1e-2), ("far_0.001", 1e-3), ("far_0.0001", 1e-4),
                         ("far_1e-05", 1e-5))
"""Calibration points 1:K may use, loosest first, with their pair-level FAR."""

__all__ = ["DEFAULT_POINT", "DISTANCE", "FPIR_TARGET", "ThresholdPolicy", "accepts",
           "finite_threshold", "identification_point"]


def finite_threshold(value: float) -> float:
    """``value`` as a float; :class:`CalibrationError` when it is not a finite number."""
    try:
        tau = float(value)
    except (TypeError, ValueError):
        raise CalibrationError(f"threshold must be a finite number, got {value!r}") from None
    if not math.isfinite(tau):
        raise CalibrationError(f"threshold must be a finite number, got {value}")
    return tau


def identification_point(n_people: int) -> str:
    """The calibration point of a 1:K search against ``n_people`` people: the loosest of
    ``far_0.01`` / ``far_0.001`` / ``far_0.0001`` / ``far_1e-05`` whose pair FAR is at most
    ``FPIR_TARGET / max(1, n_people)`` (FPIR ≈ G × FAR). G <= 1: ``far_0.01``; 2-10:
    ``far_0.001``; 11-100: ``far_0.0001``; 101-1000: ``far_1e-05`` (a calibration without
    it gives ``far_0.0001``, see :meth:`ThresholdPolicy.identification`). Above 1,000 people
    no calibrated point is strict enough: ``far_1e-05``, and FPIR then exceeds the target
    (≈ G × 1e-5, e.g. 2 % for 2,000 people)."""
    budget = FPIR_TARGET / max(1, int(n_people))
    for point, far in IDENTIFICATION_POINTS:
        if far <= budget * (1 + 1e-9):  # 1e-2 / 10 is 1e-3 up to rounding
            return point
    return IDENTIFICATION_POINTS[-1][0]


class ThresholdPolicy:
    """τ per scorer of one model on one gallery (see the module docstring).

    Args:
        uow: the gallery (the stored user τ lives there).
        model_id: the loaded model.
        scorers: name -> scorer of the model (``distance`` is the cosine fast path).
        calibration: the model's calibration (``None``: none usable, then ``problem`` says why).
        operating_point: calibration point used when no user τ is set (1:K too when it is
            not the default; the default is replaced by :func:`identification_point` there).
    """

    def __init__(self, uow: UnitOfWork, model_id: str, scorers: Mapping[str, PairScorer],
                 calibration: Calibration | None, *, problem: str | None = None,
                 operating_point: str = DEFAULT_POINT) -> None:
        self._uow = uow
        self.model_id = model_id
        self._scorers = dict(scorers)
        self._calibration = calibration
        self._problem = problem
        self.operating_point = operating_point
        self._session: dict[str, float] = {}  # scorer -> τ chosen for this session (use)
        self._stored: dict[str, float | None] = {}  # scorer -> stored τ (None: none), once read
        self._lock = threading.Lock()
        self._listeners: list[Callable[[str, float], None]] = []

    # ------------------------------------------------------------------ scorers
    def names(self) -> list[str]:
        """Scorer names, ``distance`` first."""
        return sorted(self._scorers, key=lambda n: (n != DISTANCE, n))

    def scorer(self, name: str) -> PairScorer:
        """The scorer called ``name`` (:class:`CalibrationError` for an unknown one)."""
        if name not in self._scorers:
            raise CalibrationError(
                f"unknown scorer {name!r}; this model offers {', '.join(sorted(self._scorers))}")
        return self._scorers[name]

    def index_scorer(self, name: str) -> PairScorer | None:
        """The scorer as the gallery index takes it (``None``: its built-in cosine path)."""
        scorer = self.scorer(name)
        return None if name == DISTANCE else scorer

    # ------------------------------------------------------------------ τ
    def resolve(self, scorer: str, threshold: float | None = None) -> float:
        """τ for a decision: ``threshold`` when given, else :meth:`current`."""
        if threshold is not None:
            return finite_threshold(threshold)
        return self.current(scorer)

    def current(self, scorer: str = DISTANCE) -> float:
        """The τ in effect for ``scorer``: the user's, else the calibration's
        (:class:`CalibrationError` when there is neither)."""
        chosen = self._user_tau(scorer)
        if chosen is not None:
            return chosen
        return self._require_calibration().threshold(scorer, self.operating_point)

    def baseline(self, scorer: str = DISTANCE) -> float:
        """τ without this session's choice: the stored one, else the calibration's."""
        self.scorer(scorer)
        stored = self._stored_tau(scorer)
        if stored is not None:
            return stored
        return self._require_calibration().threshold(scorer, self.operating_point)

    def identification(self, scorer: str, n_people: int, threshold: float | None = None) -> float:
        """τ of a 1:K search against a gallery of ``n_people`` people: ``threshold`` when
        given; else the user's τ (session, stored, the calibration's override) as for
        :meth:`current`; else the calibration's τ at :func:`identification_point`
        (``n_people``) — or at the operating point, when the caller chose one other than the
        default. A calibration without the wanted point (an older file, a head's entry)
        gives its next looser one (``far_1e-05`` -> ``far_0.0001`` -> ``far_0.001`` ->
        ``far_0.01``);
        :class:`CalibrationError` only where :meth:`current` raises too."""
        if threshold is not None:
            return finite_threshold(threshold)
        chosen = self._user_tau(scorer)
        if chosen is not None:
            return chosen
        calibration = self._require_calibration()
        if self.operating_point != DEFAULT_POINT or scorer in calibration.overrides:
            return calibration.threshold(scorer, self.operating_point)
        entry = calibration.scorers.get(scorer, {})
        points = [point for point, _ in IDENTIFICATION_POINTS]
        wanted = points.index(identification_point(n_people))
        for point in reversed(points[: wanted + 1]):  # the wanted one, then looser ones
            if point in entry:
                return calibration.threshold(scorer, point)
        return calibration.threshold(scorer, self.operating_point)  # raises as current does

    def calibrated(self, scorer: str, point: str) -> float:
        """The calibration file's τ of ``scorer`` at ``point`` (``far_0.01``, ``eer``, ...)."""
        self.scorer(scorer)
        return self._require_calibration().calibrated_threshold(scorer, point)

    def decide(self, score: float, scorer: str = DISTANCE, threshold: float | None = None) -> bool:
        """Does ``score`` accept under the τ in effect (or ``threshold``)?"""
        return accepts(score, self.resolve(scorer, threshold))

    def use(self, scorer: str, value: float | None) -> float | None:
        """Make ``value`` the user's τ for ``scorer`` in this session (not stored): every
        decision of the service and its live loops uses it from now on. ``None`` forgets
        it (back to the stored τ, else the calibration)."""
        self.scorer(scorer)
        tau = None if value is None else finite_threshold(value)
        with self._lock:
            if tau is None:
                self._session.pop(scorer, None)
            else:
                self._session[scorer] = tau
        self._changed(scorer)
        return tau

    def store(self, scorer: str, value: float | None) -> None:
        """Store the user's τ for ``scorer`` in the gallery (``None`` removes it: back to the
        calibration) and use it at once."""
        self.scorer(scorer)
        tau = None if value is None else finite_threshold(value)
        key = SETTING_KEY.format(model_id=self.model_id, scorer=scorer)
        with self._uow.write("set threshold") as (_, repo):
            repo.set_setting(key, None if tau is None else repr(tau))
            repo.log_event("calibrate", "set" if tau is not None else "cleared",
                           threshold=tau, scorer=scorer, model_id=self.model_id)
        with self._lock:
            self._stored[scorer] = tau
            self._session.pop(scorer, None)
        self._changed(scorer)

    def on_change(self, listener: Callable[[str, float], None]) -> None:
        """Call ``listener(scorer, tau)`` after every :meth:`use` / :meth:`store` (from the
        thread that made the change)."""
        self._listeners.append(listener)

    # ------------------------------------------------------------------ internals
    def _user_tau(self, scorer: str) -> float | None:
        """The τ the user chose for ``scorer``: this session's, else the stored one; ``None``
        when neither (the calibration decides). :class:`CalibrationError` for an unknown scorer."""
        self.scorer(scorer)
        with self._lock:
            session = self._session.get(scorer)
        return session if session is not None else self._stored_tau(scorer)

    def _require_calibration(self) -> Calibration:
        if self._calibration is None:
            reason = self._problem or f"no calibration for model {self.model_id}"
            raise CalibrationError(f"{reason}; pass a threshold (--threshold) or calibrate the gallery")
        return self._calibration

    def _stored_tau(self, scorer: str) -> float | None:
        with self._lock:
            if scorer in self._stored:
                return self._stored[scorer]
        key = SETTING_KEY.format(model_id=self.model_id, scorer=scorer)
        with self._uow.read("threshold") as (_, repo):
            stored = repo.get_setting(key)
        value = None if stored is None else float(stored)
        with self._lock:
            return self._stored.setdefault(scorer, value)

    def _changed(self, scorer: str) -> None:
        try:
            tau = self.current(scorer)
        except CalibrationError:
            return
        for listener in list(self._listeners):
            listener(scorer, tau)
