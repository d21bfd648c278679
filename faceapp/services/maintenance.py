"""Gallery maintenance: recomputing templates for a new model (``faceapp reembed``).

Every template keeps a model-independent face picture (:mod:`faceapp.vision.face_image`);
from it the crop of any later model is derived, so a model change does not lose anyone.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence

import numpy as np
from sqlalchemy.orm import Session

from faceapp.errors import GalleryError, InvalidImage
from faceapp.gallery.database import bump_generation
from faceapp.services.core import Core
from faceapp.services.results import ReembedReport
from faceapp.vision.face_image import FaceImage, chip_from_face_image, decode_face_image, is_old_crop

logger = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]
StopFn = Callable[[], bool]


def reembed(
    core: Core,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    *,
    batch_size: int = 32,
) -> ReembedReport:
    """Recompute, from their stored face pictures, every template made by another model.

    A template's crop for the current model is derived from its stored picture (a
    256-px face image with its landmarks, :mod:`faceapp.vision.face_image`); templates
    stored by older versions only have the previous model's small aligned crop, from
    which the crop is re-derived as well and counted in ``from_old_crops``.
    Works in batches, each committed on its own (a template is always consistent: its
    embedding and ``model_id`` change together), so it can be stopped
    (``should_stop()`` is polled between batches) and resumed. ``progress(done, total)``
    is called after each batch. Templates without a crop, or whose stored picture cannot
    be decoded (each logged with its id and person), are skipped, the others recomputed,
    and the skipped ones reported by a :class:`GalleryError` at the end.
    """
    pipeline = core.pipeline
    model_id = pipeline.model_id
    with core.uow.read("reembed") as (_, repo):
        todo = repo.stale_templates(model_id)
    total = len(todo)
    done = old = 0
    missing: list[int] = []
    unusable: list[str] = []
    if progress is not None:
        progress(0, total)
    for start in range(0, total, max(1, batch_size)):
        if should_stop is not None and should_stop():
            logger.info("reembed stopped after %d of %d templates", done, total)
            break
        ids = [tid for tid, _ in todo[start : start + batch_size]]
        with core.uow.write("reembed") as (s, repo):
            crops = repo.crops(ids)
            ready = [t for t in ids if t in crops]
            missing.extend(t for t in ids if t not in crops)
            decoded: dict[int, FaceImage] = {}
            for tid in ready:
                try:
                    decoded[tid] = decode_face_image(crops[tid])
                except InvalidImage as err:  # this one is skipped, the others go on
                    who = _template_owner(s, tid)
                    unusable.append(f"template {tid} of {who!r} ({err.reason})")
                    logger.warning("reembed: skipping template %d of %r: its crop %s",
                                   tid, who, err.reason)
            ready = [t for t in ready if t in decoded]
            if ready:
                chips, n_old = chips_for_model(core, [decoded[t] for t in ready])
                embs = np.asarray(pipeline.embed_crops(chips), dtype=np.float32)
                for tid, emb in zip(ready, embs, strict=True):
                    repo.set_template_embedding(tid, model_id, emb)
                repo.session.flush()
                bump_generation(repo.session)
                repo.log_event("reembed", "recomputed", model_id=model_id,
                               detail=json.dumps({"templates": len(ready), "from_old_crops": n_old}))
                old += n_old
        done += len(ready)
        if progress is not None:
            progress(min(start + batch_size, total), total)
    core.cache.invalidate()
    if done:
        core.cache.drop_snapshots()
    problems = []
    if missing:
        problems.append(f"{len(missing)} template(s) have no stored crop and cannot be "
                        f"recomputed (ids {missing[:10]}); delete and re-enrol them")
    if unusable:
        problems.append(f"{len(unusable)} template(s) were skipped: "
                        + "; ".join(unusable[:10]) + (" ..." if len(unusable) > 10 else "")
                        + "; delete and re-enrol them")
    if problems:
        raise GalleryError(f"recomputed {done} of {total} template(s); " + "; ".join(problems))
    return ReembedReport(recomputed=done, from_old_crops=old, model_id=model_id)

def chips_for_model(core: Core, faces: Sequence[FaceImage]) -> tuple[np.ndarray, int]:
    """(N, S, S, 3) uint8 crops for the loaded model from decoded stored pictures, and how
    many came from old aligned crops. A pipeline without an alignment template (a
    stand-in) gets the stored pixels, resized to its input size."""
    pipeline = core.pipeline
    n_old = sum(is_old_crop(f) for f in faces)
    if pipeline.template is None:
        return np.stack([_resized(f.image, pipeline.input_size) for f in faces]), n_old
    return np.stack([chip_from_face_image(f, pipeline.template) for f in faces]), n_old


def _template_owner(session: Session, template_id: int) -> str:
    """Name of the person a template belongs to (for messages)."""
    from faceapp.gallery.orm import FaceTemplate

    row = session.get(FaceTemplate, template_id)
    return row.person.name if row is not None and row.person is not None else "?"


def _resized(crop: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (S, S, 3), resized to the model's input size when it differs."""
    if crop.shape[:2] != (size, size):
        from PIL import Image

        crop = np.asarray(Image.fromarray(crop).resize((size, size), Image.BILINEAR))
    return crop
