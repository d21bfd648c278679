"""Evaluation by the LFW protocol (verification) and by gallery/probe identification.

Verification: 10-fold accuracy with τ chosen on 9 folds and applied to the 10th, ROC AUC,
EER and TAR at FAR 1e-2 / 1e-3 over all pairs; the thresholds at those operating points are
written to ``calibration.json`` beside the model, per scorer.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from faceapp.config import DetectorConfig
from faceapp.errors import CalibrationError, FaceappError
from faceapp.nn.calibration import Calibration, calibration_path_for
from faceapp.nn.checkpoint import LoadedModel, load_checkpoint
from faceapp.nn.scoring import DISTANCE, Scorer, scorers_for
from faceapp.training.datasets import (
    STATUS_DETECTED,
    CropSet,
    build_crop_cache,
    read_pairs,
    read_people,
    scan_identity_folders,
)
from faceapp.training.metrics import identification_report, lfw_folds, roc_curve, verification_report
from faceapp.vision.detection import FaceDetector

log = logging.getLogger(__name__)


def detector_for(model: LoadedModel) -> FaceDetector:
    """The detector settings the model's training data was prepared with (min face 40 px default)."""
    cfg = model.meta.get("training", {}).get("config", {})
    return FaceDetector(DetectorConfig(min_face_size=int(cfg.get("min_face_size", 40))))


def crops_for(
    model: LoadedModel,
    paths: Sequence[Path],
    cache_dir: str | Path,
    name: str,
    detector: FaceDetector | None = None,
) -> CropSet:
    return build_crop_cache(
        list(paths), model.template, detector or detector_for(model), cache_dir, name=name
    )


def resolve_scorers(model: LoadedModel, scorer: str) -> dict[str, Scorer]:
    available = scorers_for(model)
    if scorer == "all":
        return available
    name = "head_l1" if scorer == "head" else scorer
    if name not in available:
        raise FaceappError(
            f"scorer {scorer!r} is not available for this model (available: {', '.join(available)}); "
            "train a head with `faceapp train-head`"
        )
    return {name: available[name]}


def evaluate_pairs(
    model: LoadedModel,
    data: str | Path,
    pairs_file: str | Path,
    *,
    scorer: str = DISTANCE,
    cache_dir: str | Path = "cache",
    detector: FaceDetector | None = None,
) -> tuple[list[dict[str, Any]], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Reports per scorer, and the (scores, same) arrays behind them.

    ``detector``: for images not in the crop cache (default: :func:`detector_for` the model).
    """
    chosen = resolve_scorers(model, scorer)  # an unknown scorer fails before any detection
    pairs = read_pairs(pairs_file, data)
    same = np.asarray([p.same for p in pairs])
    try:
        folds = lfw_folds(same)
    except ValueError as err:  # fewer than 10 matched or 10 mismatched pairs
        raise FaceappError(f"{pairs_file}: too few pairs for the 10-fold protocol ({err})") from None
    paths = sorted({p.a for p in pairs} | {p.b for p in pairs})
    crops = crops_for(model, paths, cache_dir, Path(pairs_file).stem.lower(), detector)
    index = crops.index()
    emb = model.encoder.embed(crops.crops)
    ia = np.asarray([index[p.a] for p in pairs])
    ib = np.asarray([index[p.b] for p in pairs])
    counts = crops.counts()
    reports: list[dict[str, Any]] = []
    raw: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, sc in chosen.items():
        scores = sc.score_pairs(emb[ia], emb[ib]).astype(np.float64)
        rep = verification_report(scores, same, folds)
        rep.update(
            {
                "scorer": name,
                "model_id": model.model_id,
                "pairs_file": Path(pairs_file).name,
                "images": len(paths),
                "images_without_detected_face": counts["fallback"] + counts["failed"],
            }
        )
        reports.append(rep)
        raw[name] = (scores, same)
    return reports, raw


def update_calibration(model: LoadedModel, reports: Sequence[dict[str, Any]], source: dict[str, Any]) -> Path:
    """Write the operating-point thresholds of ``reports`` into the model's calibration.json."""
    if model.path is None:
        raise CalibrationError("model has no file path: cannot place calibration.json")
    path = calibration_path_for(model.path)
    try:
        cal = Calibration.load(path)
        if cal.model_id != model.model_id:
            cal = Calibration(model_id=model.model_id)
    except CalibrationError:
        cal = Calibration(model_id=model.model_id)
    for r in reports:
        cal.scorers[r["scorer"]] = {
            "far_0.01": r["threshold_far_0.01"],
            "far_0.001": r["threshold_far_0.001"],
            "eer": r["threshold_eer"],
            "accuracy": r["threshold"],
            "metrics": {
                k: r[k]
                for k in ("accuracy", "accuracy_std", "auc", "eer", "tar_at_far_0.01", "tar_at_far_0.001")
            },
        }
    cal.source = source
    cal.save(path)
    return path


def evaluate_pairs_cli(
    model_path: Path,
    data: str,
    pairs_file: str,
    *,
    scorer: str,
    plots: str | None,
    write_calibration: bool,
    cache_dir: str,
) -> list[dict[str, Any]]:
    model = load_checkpoint(model_path)
    reports, raw = evaluate_pairs(model, data, pairs_file, scorer=scorer, cache_dir=cache_dir)
    if write_calibration:
        update_calibration(model, reports, {"pairs": Path(pairs_file).name, "n_pairs": reports[0]["pairs"]})
    if plots:
        from faceapp.training.plots import plot_histograms, plot_roc

        out = Path(plots)
        out.mkdir(parents=True, exist_ok=True)
        for r in reports:
            scores, same = raw[r["scorer"]]
            roc = roc_curve(scores, same)
            plot_roc(
                roc.far,
                roc.tar,
                out / f"roc_{r['scorer']}.png",
                title=f"ROC {r['scorer']} ({r['pairs_file']})",
            )
            plot_histograms(
                scores,
                same,
                out / f"hist_{r['scorer']}.png",
                r["threshold"],
                title=f"genuine vs impostor: {r['scorer']}",
            )
    return reports


def evaluate_identification(
    model: LoadedModel,
    data: str | Path,
    people_file: str | Path | None,
    *,
    distractor_fraction: float = 0.5,
    seed: int = 0,
    cache_dir: str | Path = "cache",
    detector: FaceDetector | None = None,
) -> dict[str, Any]:
    """Gallery = first image of each enrolled identity; probes = their other images plus every
    image of the distractor identities (never enrolled). Identities with one image are distractors.

    ``detector``: for images not in the crop cache (default: :func:`detector_for` the model).
    """
    people = list(read_people(people_file)) if people_file else None
    images = scan_identity_folders(data, people)
    name = Path(people_file).stem.lower() if people_file else Path(data).name
    crops = crops_for(model, list(images.paths), cache_dir, name, detector)
    ok = crops.status == STATUS_DETECTED
    labels = images.labels
    counts = np.bincount(labels[ok], minlength=len(images.names))
    rng = np.random.default_rng(seed)
    multi = np.flatnonzero(counts >= 2)
    n_distract = round(len(multi) * distractor_fraction)
    distract = set(rng.choice(multi, size=n_distract, replace=False).tolist())
    known = [c for c in multi.tolist() if c not in distract]
    if not known:
        raise FaceappError(
            f"{data}: no identity left for the gallery (identities with >= 2 detected faces: "
            f"{len(multi)}, distractor fraction {distractor_fraction})"
        )
    emb = model.encoder.embed(crops.crops[ok])
    lab = labels[ok]
    gallery_rows, probe_rows = [], []
    seen: set[int] = set()
    for row, c in enumerate(lab.tolist()):
        if c in known and c not in seen:
            gallery_rows.append(row)
            seen.add(c)
        else:
            probe_rows.append(row)
    rep = identification_report(emb[gallery_rows], lab[gallery_rows], emb[probe_rows], lab[probe_rows])
    rep.update({"model_id": model.model_id, "images_without_detected_face": int((~ok).sum())})
    return rep


def evaluate_identification_cli(
    model_path: Path, data: str, people: str | None, *, distractor_fraction: float, seed: int, cache_dir: str
) -> dict[str, Any]:
    return evaluate_identification(
        load_checkpoint(model_path),
        data,
        people,
        distractor_fraction=distractor_fraction,
        seed=seed,
        cache_dir=cache_dir,
    )
