"""The 1:K search index of the current model, kept in memory and in step with the gallery.

One :class:`IndexCache` per service. It holds an :class:`IndexView` (the
:class:`~faceapp.gallery.matching.GalleryIndex` of the current model's templates, person
names, how many templates another model made, and the gallery generation it reflects):

* :meth:`IndexCache.sync` (inside a read unit of work) compares the gallery's generation
  counter with the view's and reloads when they differ — from a valid snapshot when there is
  one, else from the rows (then saving a snapshot of a large gallery);
* this service's own changes (enrol, rename, delete) are applied to the view in place when
  it was current (:meth:`added`, :meth:`renamed`, :meth:`removed_person`,
  :meth:`removed_templates`), else the view is dropped;
* :meth:`latest` and :meth:`identify` read the view **without a database round trip**: the
  live loop matches through them (:class:`faceapp.services.live.CacheMatcher`), so a frame
  never waits for SQL, and never for the service lock that a ``reembed`` holds.

Threads: a small lock guards the view (in-place changes and searches); a reload builds the
new index outside it and swaps it in.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
from sqlalchemy.orm import Session

from faceapp.errors import ModelMismatch
from faceapp.gallery.database import current_generation, gallery_uuid
from faceapp.gallery.matching import GalleryIndex, Identification, PairScorer
from faceapp.gallery.repository import GalleryRepository
from faceapp.gallery.snapshot import (
    SNAPSHOT_MIN_TEMPLATES,
    load_snapshot,
    remove_snapshots,
    save_snapshot,
    snapshot_path,
)
from faceapp.nn.open_set import RAW_SCORES, ScoreNormaliser
from faceapp.services.unit_of_work import UnitOfWork

logger = logging.getLogger(__name__)


def stale_message(stale: int, model_id: str) -> str:
    return (f"{stale} template(s) in the gallery were made by another model than {model_id}; "
            "run `faceapp reembed` to recompute them from their crops")


def refuse_stale(stale: int, model_id: str) -> None:
    """:class:`ModelMismatch` when ``stale`` templates were made by another model."""
    if stale:
        raise ModelMismatch(stale_message(stale, model_id))


@dataclass(frozen=True)
class IndexView:
    """The index of ``model_id`` as of gallery ``generation``; ``names``: person id -> name;
    ``stale``: templates of other models (comparisons are refused while there are any);
    ``n_people``: people with a template in ``index`` (the G of a 1:K τ, read without
    touching the index)."""

    index: GalleryIndex
    names: Mapping[int, str]
    stale: int
    generation: int
    n_people: int


class IndexCache:
    """The in-memory index of one model over one gallery (see the module docstring)."""

    def __init__(self, uow: UnitOfWork, model_id: str, dim: int,
                 normaliser: ScoreNormaliser = RAW_SCORES) -> None:
        """``normaliser``: how 1:K cosine similarities are normalised (the model's
        ``score_norm.npz``, :mod:`faceapp.nn.open_set`); head scorers are never normalised."""
        self._uow = uow
        self.model_id = model_id
        self.dim = int(dim)
        self.normaliser = normaliser
        self._view: IndexView | None = None
        self._lock = threading.Lock()
        self._snapshot_gen = -1
        self._listeners: list[threading.Event] = []

    # ------------------------------------------------------------------ reading
    def latest(self) -> IndexView | None:
        """The view as last synced (no database access); ``None`` before the first sync or
        after a change this cache could not apply in place."""
        return self._view

    def is_current(self, session: Session) -> bool:
        """Does the view reflect the gallery as ``session`` sees it?"""
        view = self._view
        return view is not None and current_generation(session) == view.generation

    def sync(self, session: Session, repo: GalleryRepository) -> IndexView:
        """The view, reloaded first when the gallery's generation moved on."""
        gen = current_generation(session)
        view = self._view
        if view is not None and view.generation == gen:
            return view
        view = self._load(session, repo, gen)
        with self._lock:
            self._view = view
        logger.debug("gallery index loaded: %d templates (generation %d)", len(view.index), gen)
        self._notify()
        return view

    def comparable(self, session: Session, repo: GalleryRepository) -> IndexView:
        """:meth:`sync`, refusing a gallery that holds another model's templates."""
        view = self.sync(session, repo)
        refuse_stale(view.stale, self.model_id)
        return view

    def identify(self, view: IndexView, probes: np.ndarray, *, threshold: float, k: int,
                 scorer: PairScorer | None, margin: float) -> list[Identification]:
        """1:K of (N, D) float32 ``probes`` in ``view`` (under the cache lock: an in-place
        change never runs beside a search)."""
        refuse_stale(view.stale, self.model_id)
        normaliser = self.normaliser if scorer is None else RAW_SCORES
        with self._lock:
            return view.index.identify(probes, model_id=self.model_id, threshold=threshold,
                                       k=k, scorer=scorer, margin=margin, normaliser=normaliser)

    def subscribe(self) -> threading.Event:
        """An event set whenever the view changes (the live loop forgets its decisions)."""
        event = threading.Event()
        self._listeners.append(event)
        return event

    def unsubscribe(self, event: threading.Event) -> None:
        """Stop setting ``event`` (a live loop that closes)."""
        with contextlib.suppress(ValueError):
            self._listeners.remove(event)

    # ------------------------------------------------------------------ this service's changes
    def added(self, template_ids: Sequence[int], person_id: int, name: str,
              embeddings: np.ndarray, *, was_current: bool, generation: int) -> None:
        """Templates committed by this service: (N,) ids of ``person_id`` with (N, D) float32
        ``embeddings``. ``was_current``: the view was in step just before the change (else
        it is dropped and reloaded on the next sync)."""
        ids = list(template_ids)
        self._apply(was_current, generation,
                    lambda index: index.add(ids, [person_id] * len(ids), embeddings,
                                            model_id=self.model_id),
                    lambda names: {**names, person_id: name})

    def renamed(self, person_id: int, name: str, *, was_current: bool, generation: int) -> None:
        self._apply(was_current, generation, lambda index: None,
                    lambda names: {**names, person_id: name})

    def removed_person(self, person_id: int, *, was_current: bool, generation: int) -> None:
        self._apply(was_current, generation, lambda index: index.remove_person(person_id),
                    lambda names: {p: n for p, n in names.items() if p != person_id})

    def removed_templates(self, template_ids: Sequence[int], *, was_current: bool,
                          generation: int) -> None:
        ids = list(template_ids)
        self._apply(was_current, generation, lambda index: index.remove_templates(ids),
                    lambda names: names)

    def invalidate(self) -> None:
        """Forget the view (the next sync reloads it)."""
        with self._lock:
            self._view = None
        self._notify()

    def drop_snapshots(self) -> int:
        """After committed template changes: delete the gallery's on-disk snapshots (they may
        hold faces that were deleted; the next load or :meth:`save_snapshot_if_useful` writes a
        fresh one); returns how many were removed."""
        self._snapshot_gen = -1
        return remove_snapshots(self._uow.url)

    def save_snapshot_if_useful(self) -> None:
        """Persist the view of a large gallery that changed since its snapshot."""
        view = self._view
        if view is None or len(view.index) < SNAPSHOT_MIN_TEMPLATES \
                or view.generation == self._snapshot_gen or self._uow.read_only:
            return
        path = snapshot_path(self._uow.url, self.model_id)
        if path is None:
            return
        with self._uow.read("snapshot") as (s, _):
            if current_generation(s) != view.generation:
                return  # someone else changed the gallery meanwhile
            uid = gallery_uuid(s)
        save_snapshot(path, view.index, dict(view.names), view.stale, gallery_uuid=uid,
                      generation=view.generation, cipher=self._uow.at_rest)
        self._snapshot_gen = view.generation

    # ------------------------------------------------------------------ internals
    def _apply(self, was_current: bool, generation: int,
               change_index: Callable[[GalleryIndex], object],
               change_names: Callable[[Mapping[int, str]], Mapping[int, str]]) -> None:
        with self._lock:
            view = self._view
            if not was_current or view is None:
                self._view = None
            else:
                change_index(view.index)
                self._view = replace(view, names=change_names(view.names), generation=generation,
                                     n_people=view.index.n_people)
        self._notify()

    def _notify(self) -> None:
        for event in self._listeners:
            event.set()

    def _load(self, session: Session, repo: GalleryRepository, gen: int) -> IndexView:
        uid = gallery_uuid(session)
        snap_path = snapshot_path(self._uow.url, self.model_id)
        if snap_path is not None:
            snap = load_snapshot(snap_path, model_id=self.model_id, gallery_uuid=uid,
                                 generation=gen, cipher=self._uow.at_rest)
            if snap is not None:
                self._snapshot_gen = gen
                return IndexView(snap.index, dict(snap.names), snap.stale, gen,
                                 snap.index.n_people)
        rows = repo.index_rows(self.model_id)
        stale = repo.count_templates() - rows.template_ids.shape[0]
        names = repo.person_names()
        if rows.template_ids.shape[0]:
            index = GalleryIndex.from_arrays(self.model_id, rows.template_ids, rows.person_ids,
                                             rows.embeddings)
        else:
            index = GalleryIndex(self.model_id, self.dim)
        if snap_path is not None and len(index) >= SNAPSHOT_MIN_TEMPLATES and not self._uow.read_only:
            save_snapshot(snap_path, index, names, stale, gallery_uuid=uid, generation=gen,
                          cipher=self._uow.at_rest)
            self._snapshot_gen = gen
        return IndexView(index, names, stale, gen, index.n_people)
