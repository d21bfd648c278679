"""Opening a service: the gallery first (a bad file or passphrase fails before the slow model
load), then the model with its calibration, then the retention policy applied at start-up.

The detector runs with the app's :class:`~faceapp.config.DetectorConfig` — the same settings
evaluation and calibration use (:func:`faceapp.training.evaluation.detector_for`).
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Literal

from faceapp.config import resolve_paths
from faceapp.errors import CalibrationError, FaceappError
from faceapp.gallery.database import DatabaseConfig, open_database, sqlite_path
from faceapp.gallery.keys import KeyConfig, PromptFn, passphrase_needed
from faceapp.nn.open_set import RAW_SCORES, ScoreNormaliser, normaliser_for
from faceapp.services.server_index import choose_server_search

if TYPE_CHECKING:
    from faceapp.services import FaceService

logger = logging.getLogger(__name__)


def open_service(cls: type[FaceService], db_url: str | None = None,
                 model_path: str | os.PathLike[str] | None = None, *, device: str = "cpu",
                 load_model: bool = True, key_prompt: PromptFn | None = None,
                 search: str | None = None) -> FaceService:
    """See :meth:`FaceService.open`."""
    paths = resolve_paths(db=db_url, model=model_path)
    # first: a bad gallery (or passphrase) fails before the slow model load
    engine = open_database(paths.db_url, DatabaseConfig(keys=KeyConfig(prompt=key_prompt)))
    try:
        server = choose_server_search(engine, search)
    except BaseException:
        engine.dispose()
        raise
    pipeline = None
    cal = None
    problem = None
    normaliser: ScoreNormaliser = RAW_SCORES
    if load_model:
        from faceapp.nn.calibration import Calibration, calibration_path_for
        from faceapp.nn.pipeline import FacePipeline

        try:
            pipeline = FacePipeline.from_paths(paths.model_path, device=device)
        except BaseException:
            engine.dispose()
            raise
        normaliser = normaliser_for(paths.model_path, pipeline.model_id)
        try:
            cal = Calibration.load(calibration_path_for(paths.model_path))
        except CalibrationError as err:
            problem = str(err)
            logger.warning("no usable calibration: %s", err)
    service = cls(engine, pipeline, cal, owns_engine=True, calibration_problem=problem,
                  server_search=server, normaliser=normaliser)
    try:  # the retention policy is applied at start-up
        service.expire_people()
    except FaceappError as err:
        logger.warning("could not apply the retention policy: %s", err)
    return service


def gallery_passphrase_needed(db_url: str | None = None) -> Literal["none", "unlock", "new"]:
    """Would :meth:`FaceService.open` need a typed passphrase for this gallery? ``unlock``
    (it is protected by one), ``new`` (it will be created and no OS keyring exists) or
    ``none`` (keyring, ``$FACEAPP_PASSPHRASE``, plaintext or not a SQLite file)."""
    path = sqlite_path(resolve_paths(db=db_url).db_url)
    return "none" if path is None else passphrase_needed(path)
