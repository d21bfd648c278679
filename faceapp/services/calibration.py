"""Calibrating τ: scores of labelled pairs (the gallery's own templates or a pairs file) and
the threshold that meets a target false-accept rate — one implementation for the CLI
(``faceapp calibrate``) and the GUI's Calibrate page.

The ROC and the τ for a FAR are :func:`faceapp.training.metrics.roc_curve` and
:func:`~faceapp.training.metrics.tar_at_far` (accept when ``score >= τ``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from faceapp.errors import FaceappError, InvalidImage
from faceapp.nn.scoring import DISTANCE, accepts_all
from faceapp.services.core import Core
from faceapp.services.results import PairScores
from faceapp.training.metrics import roc_auc, roc_curve, tar_at_far
from faceapp.vision.images import load_image

ProgressFn = Callable[[int, int], None]
StopFn = Callable[[], bool]


@dataclass(frozen=True)
class FarCalibration:
    """τ for ``target_far`` on ``genuine``/``impostor`` pairs, with the FAR and TAR measured
    there; ``measurable``: enough impostor pairs for that FAR to be observed at all."""

    threshold: float
    far: float
    tar: float
    auc: float
    target_far: float
    genuine: int
    impostor: int

    @property
    def measurable(self) -> bool:
        return self.target_far >= 1.0 / self.impostor

    def to_dict(self) -> dict[str, object]:
        return {"genuine_pairs": self.genuine, "impostor_pairs": self.impostor,
                "target_far": self.target_far, "threshold": self.threshold, "far": self.far,
                "tar": self.tar, "auc": self.auc, "far_measurable": self.measurable}


def threshold_for_far(genuine: np.ndarray, impostor: np.ndarray, target_far: float, *,
                      origin: str = "") -> FarCalibration:
    """The lowest τ whose FAR on these pairs is ``<= target_far``, from (G,) genuine and
    (I,) impostor similarity scores (both non-empty: :class:`FaceappError` otherwise). When
    no score reaches the target, τ is the next float above the largest score (accepts
    nothing: FAR 0, TAR 0). ``origin`` names the pairs in messages."""
    if not 0.0 <= target_far <= 1.0:
        raise FaceappError(f"the target FAR must be between 0 and 1, got {target_far}")
    g = np.asarray(genuine, dtype=np.float64).ravel()
    i = np.asarray(impostor, dtype=np.float64).ravel()
    if g.size == 0 or i.size == 0:
        raise FaceappError(
            f"{origin + ': ' if origin else ''}{g.size} genuine and {i.size} impostor pairs; both "
            "are needed (enrol at least two people, one of them with two or more samples)")
    scores, same = np.r_[g, i], np.r_[np.ones(g.size, bool), np.zeros(i.size, bool)]
    tar, tau = tar_at_far(scores, same, target_far)
    far = float(np.mean(accepts_all(i, tau)))
    return FarCalibration(tau, far, tar, roc_auc(scores, same), target_far, int(g.size), int(i.size))


def split_pairs(scores: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(M,) scores and (M,) same-person flags -> (genuine scores, impostor scores), float64."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    g = np.asarray(same, dtype=bool).ravel()
    return s[g], s[~g]


def roc(genuine: np.ndarray, impostor: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC of (G,) genuine and (I,) impostor similarity scores: ``(far, tar, thresholds)``,
    each (M + 1,) float64 from "accept nothing" (τ = +inf) to "accept everything"."""
    g = np.asarray(genuine, dtype=np.float64).ravel()
    i = np.asarray(impostor, dtype=np.float64).ravel()
    if g.size == 0 or i.size == 0:
        raise ValueError("need at least one genuine and one impostor score")
    curve = roc_curve(np.r_[g, i], np.r_[np.ones(g.size, bool), np.zeros(i.size, bool)])
    return curve.far, curve.tar, curve.thresholds


def gallery_scores(core: Core, scorer: str = DISTANCE, max_templates: int = 4000
                   ) -> tuple[np.ndarray, np.ndarray]:
    """See :meth:`FaceService.gallery_scores`."""
    scorer_obj = core.thresholds.index_scorer(scorer)
    with core.uow.read("gallery scores") as (s, repo):
        view = core.cache.comparable(s, repo)
    return view.index.pair_scores(scorer_obj, max_templates=max_templates,
                                  normaliser=core.normaliser_for(scorer))


def pair_scores(core: Core, pairs_file: str | Path, image_root: str | Path,
                scorer: str = DISTANCE, *, progress: ProgressFn | None = None,
                should_stop: StopFn | None = None, batch_size: int = 32) -> PairScores:
    """Scores of a verification protocol file (LFW ``pairs*.txt`` format, image paths
    under ``image_root``) with the current model, for calibrating τ on labelled pairs; scored
    as verification scores them (the cosine scorer through the model's score normaliser).

    Each distinct image is read once, its central face (the labelled person; see
    :func:`~faceapp.training.datasets.pick_central_face`) aligned and embedded in
    batches. A pair with an image that cannot be read or shows no usable face is
    left out and counted. ``should_stop()`` is polled between batches (then
    :class:`~faceapp.errors.FaceappError` "stopped"); ``progress(done, total)`` counts
    images. No database access: safe beside the live pages.

    Raises:
        FaceappError: unreadable or malformed pairs file; fewer than one genuine and one
            impostor pair left; stopped.
        CalibrationError: unknown scorer.
    """
    from faceapp.training.datasets import pick_central_face, read_pairs

    pipeline = core.pipeline
    score_pairs = core.thresholds.scorer(scorer).score_pairs  # unknown scorer: before any image
    pairs = read_pairs(pairs_file, image_root)
    paths = sorted({p.a for p in pairs} | {p.b for p in pairs})
    row: dict[Path, int] = {}
    crops: list[np.ndarray] = []
    problems: list[tuple[str, str]] = []
    embeddings: list[np.ndarray] = []
    if progress is not None:
        progress(0, len(paths))
    for start in range(0, len(paths), max(1, batch_size)):
        if should_stop is not None and should_stop():
            raise FaceappError(f"{pairs_file}: scoring stopped")
        for path in paths[start : start + batch_size]:
            try:
                image = load_image(path)
            except InvalidImage as err:
                problems.append((str(path), err.reason))
                continue
            face = pick_central_face(pipeline.detect(image), image.shape)
            if face is None:
                problems.append((str(path), "no face"))
                continue
            row[path] = len(row)
            crops.append(pipeline.align(image, [face])[0].crop)
        if crops:
            embeddings.append(np.asarray(pipeline.embed_crops(np.stack(crops)), dtype=np.float32))
            crops = []
        if progress is not None:
            progress(min(start + batch_size, len(paths)), len(paths))
    kept = [p for p in pairs if p.a in row and p.b in row]
    same = np.asarray([p.same for p in kept], dtype=bool)
    if not same.any() or same.all():
        raise FaceappError(
            f"{pairs_file}: {int(same.sum())} genuine and {int((~same).sum())} impostor pairs "
            f"with a face in both images: both kinds are needed")
    emb = np.concatenate(embeddings)
    ia = np.asarray([row[p.a] for p in kept])
    ib = np.asarray([row[p.b] for p in kept])
    scores = np.asarray(score_pairs(emb[ia], emb[ib]), dtype=np.float64)
    scores = core.normaliser_for(scorer).normalise_pairs(emb[ia], emb[ib], scores)
    return PairScores(scores, same, len(pairs) - len(kept), len(paths), tuple(problems))
