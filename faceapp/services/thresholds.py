"""The τ policy: which threshold a decision uses, held in one place for the whole service.

τ comes, in this order, from: an explicit argument (``--threshold``, ``threshold=``); the
user's τ for the scorer — chosen on a slider (:meth:`ThresholdPolicy.use`, this session
only) or stored in the gallery database (:meth:`ThresholdPolicy.store`: ``setting`` table,
key ``threshold/<model_id>/<scorer>``, so it follows the gallery it was chosen for and never
edits the shipped model folder); the model's ``calibration.json`` (its ``overrides``, else
the operating point, default ``far_0.01``). Never a constant.

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

__all__ = ["DEFAULT_POINT", "DISTANCE", "ThresholdPolicy", "accepts", "finite_threshold"]


def finite_threshold(value: float) -> float:
    """``value`` as a float; :class:`CalibrationError` when it is not a finite number."""
    try:
        tau = float(value)
    except (TypeError, ValueError):
        raise CalibrationError(f"threshold must be a finite number, got {value!r}") from None
    if not math.isfinite(tau):
        raise CalibrationError(f"threshold must be a finite number, got {value}")
    return tau


class ThresholdPolicy:
    """τ per scorer of one model on one gallery (see the module docstring).

    Args:
        uow: the gallery (the stored user τ lives there).
        model_id: the loaded model.
        scorers: name -> scorer of the model (``distance`` is the cosine fast path).
        calibration: the model's calibration (``None``: none usable, then ``problem`` says why).
        operating_point: calibration point used when no user τ is set.
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
        with self._lock:
            session = self._session.get(scorer)
        if session is not None:
            self.scorer(scorer)
            return session
        return self.baseline(scorer)

    def baseline(self, scorer: str = DISTANCE) -> float:
        """τ without this session's choice: the stored one, else the calibration's."""
        self.scorer(scorer)
        stored = self._stored_tau(scorer)
        if stored is not None:
            return stored
        if self._calibration is None:
            reason = self._problem or f"no calibration for model {self.model_id}"
            raise CalibrationError(f"{reason}; pass a threshold (--threshold) or calibrate the gallery")
        return self._calibration.threshold(scorer, self.operating_point)

    def calibrated(self, scorer: str, point: str) -> float:
        """The calibration file's τ of ``scorer`` at ``point`` (``far_0.01``, ``eer``, ...)."""
        self.scorer(scorer)
        if self._calibration is None:
            reason = self._problem or f"no calibration for model {self.model_id}"
            raise CalibrationError(f"{reason}; pass a threshold (--threshold) or calibrate the gallery")
        return self._calibration.calibrated_threshold(scorer, point)

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
