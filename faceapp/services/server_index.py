"""1:K search inside PostgreSQL (pgvector) instead of the in-memory index.

:func:`choose_server_search` decides where search runs when a service opens;
:class:`ServerIndex` keeps the server's vector table in step with the gallery (once per
gallery generation, not once per search) and answers 1:K there. The database *is* the index
then, so each search is one round trip to the server (the live loop included).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import numpy as np
from sqlalchemy.engine import Engine

from faceapp.errors import FaceappError, GalleryError
from faceapp.gallery.database import current_generation, read_session, translate_errors
from faceapp.gallery.matching import Identification
from faceapp.gallery.repository import GalleryRepository
from faceapp.gallery.server_search import ServerSearch, server_search_available
from faceapp.nn.open_set import RAW_SCORES, ScoreNormaliser
from faceapp.services.index_cache import refuse_stale
from faceapp.services.unit_of_work import UnitOfWork

logger = logging.getLogger(__name__)

SEARCH_MODES = ("auto", "client", "server")

SERVER_SEARCH_MIN_TEMPLATES = 200_000
"""With ``search=auto``, a PostgreSQL gallery with pgvector is searched inside the server
from this many templates on (a desktop then no longer pulls every template into memory)."""


def choose_server_search(engine: Engine, mode: str | None = None) -> ServerSearch | None:
    """Where 1:K search runs (see :meth:`FaceService.open`); ``None`` means in memory."""
    mode = (mode or os.environ.get("FACEAPP_SEARCH") or "auto").strip().lower()
    if mode not in SEARCH_MODES:
        raise FaceappError(f"unknown search mode {mode!r} (choose {', '.join(SEARCH_MODES)})")
    if mode == "client":
        return None
    with translate_errors("server search"):
        avail = server_search_available(engine)
        if not avail.available:
            if mode == "server":
                raise GalleryError(f"server-side search is not available: {avail.reason}")
            return None
        if mode == "auto":
            with read_session(engine) as s:
                n = GalleryRepository(s).count_templates()
            if n < SERVER_SEARCH_MIN_TEMPLATES:
                return None
        try:
            search = ServerSearch.open(engine)
        except GalleryError as err:
            if mode == "server":
                raise
            logger.warning("searching on this desktop: %s", err)
            return None
    logger.info("1:K search runs inside the database server (%s)", avail.reason)
    return search


class ServerIndex:
    """In-server search of ``model_id``'s templates through ``search``."""

    def __init__(self, uow: UnitOfWork, search: ServerSearch, model_id: str,
                 normaliser: ScoreNormaliser = RAW_SCORES) -> None:
        self._uow = uow
        self._search = search
        self.model_id = model_id
        self.normaliser = normaliser
        self._gen = -1
        self._stale = 0
        self.n_people = 0
        """People with a template of ``model_id``, as of the last :meth:`sync` (in memory)."""

    def sync(self) -> None:
        """When the gallery changed since the last look: copy new templates into the
        server's vector table and recount the templates of other models and the people of
        this one (full counts, so once per generation, not once per search)."""
        with self._uow.read("server search") as (s, repo):
            gen = current_generation(s)
            if gen == self._gen:
                return
            stale = repo.count_other_model_templates(self.model_id)
            people = repo.count_people_with_templates(self.model_id)
        with self._uow.errors("server search sync"):
            self._search.sync()
        self._gen, self._stale, self.n_people = gen, stale, people

    @property
    def synced(self) -> bool:
        """Has a :meth:`sync` run (so :attr:`n_people` counts the gallery)?"""
        return self._gen >= 0

    def count(self) -> int:
        self.sync()
        return self._search.count(self.model_id)

    def identify(self, probes: np.ndarray, *, threshold_for: Callable[[int], float], k: int,
                 margin: float) -> tuple[list[Identification], dict[int, str], float]:
        """1:K of (N, D) float32 ``probes``: HNSW short list, exact re-score (cosine, then the
        normaliser), judged at τ = ``threshold_for(people with a template)`` counted by the
        same sync; returns the identifications, the names of every candidate and that τ."""
        self.sync()
        refuse_stale(self._stale, self.model_id)
        threshold = threshold_for(self.n_people)
        with self._uow.read("recognize") as (s, repo):
            with self._uow.errors("server search"):
                results = self._search.identify(s, probes, model_id=self.model_id,
                                                threshold=threshold, k=k, margin=margin,
                                                normaliser=self.normaliser)
            names = repo.person_names(c.person_id for r in results for c in r.candidates)
        return results, names, threshold
