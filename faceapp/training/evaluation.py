"""Evaluation by the LFW protocol (verification), calibration of τ, and the s-norm cohort.

Verification: 10-fold accuracy with τ chosen on 9 folds and applied to the 10th, ROC AUC,
EER and TAR at FAR 1e-2 / 1e-3 over all pairs. Evaluation is read-only: thresholds reach the
model's ``calibration.json`` only through :func:`calibrate` (``faceapp calibrate-model``: pairs of
training identities, >= 1e5 impostor pairs so that FAR 1e-3 and 1e-4 are measured) or an
explicit ``evaluate --write-calibration``.
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
from faceapp.nn.open_set import RAW_SCORES, ScoreNormaliser, normaliser_for
from faceapp.nn.score_norm import DEFAULT_TOP_K, Cohort, s_norm_pairs
from faceapp.nn.scoring import DISTANCE, Scorer, accepts_all, scorers_for
from faceapp.training.datasets import (
    STATUS_DETECTED,
    CropSet,
    build_crop_cache,
    read_pairs,
    read_people,
    scan_identity_folders,
)
from faceapp.training.metrics import (
    best_threshold,
    equal_error_rate,
    lfw_folds,
    roc_auc,
    roc_curve,
    tar_at_far,
    verification_report,
)
from faceapp.vision.detection import FaceDetector

log = logging.getLogger(__name__)


def detector_for(model: LoadedModel) -> FaceDetector:
    """The detector evaluation and calibration run with: the app's own settings
    (:class:`~faceapp.config.DetectorConfig` defaults, as :meth:`FacePipeline.from_paths`
    and the services use), so that τ is measured the way the app detects. ``model`` is
    accepted for callers that pick a detector per model; its training settings (e.g. the
    40-px minimum face of its training data) do not apply to evaluation."""
    del model
    return FaceDetector(DetectorConfig())


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


def detected_embeddings(
    model: LoadedModel,
    data: str | Path,
    people_file: str | Path | None,
    cache_dir: str | Path,
    detector: FaceDetector | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The model's embeddings of every image of ``people_file``'s identities under ``data``
    (all identity folders when ``None``) in which a face was detected: ``(emb (N, D) float32,
    labels (N,) int64 identity index)``; crops cached in ``cache_dir``."""
    images = scan_identity_folders(data, list(read_people(people_file)) if people_file else None)
    name = Path(people_file).stem.lower() if people_file else Path(data).name
    crops = crops_for(model, list(images.paths), cache_dir, name, detector)
    ok = crops.status == STATUS_DETECTED
    return model.encoder.embed(crops.crops[ok]), np.asarray(images.labels[ok], dtype=np.int64)


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


def cohort_from_people(
    model: LoadedModel,
    data: str | Path,
    cohort_people: str | Path,
    *,
    exclude: set[str],
    top_k: int = DEFAULT_TOP_K,
    cache_dir: str | Path = "cache",
    detector: FaceDetector | None = None,
) -> tuple[Cohort, dict[str, Any]]:
    """The s-norm cohort: embeddings of every detected face of the identities in ``cohort_people``.

    Raises:
        FaceappError: a cohort identity is also evaluated (``exclude``): the cohort must be
            disjoint from the people it normalises.
    """
    names = list(read_people(cohort_people))
    both = sorted(set(names) & exclude)
    if both:
        raise FaceappError(
            f"{cohort_people}: {len(both)} cohort identities are also evaluated (e.g. {both[0]}); "
            "the cohort must be other people (e.g. peopleDevTrain.txt for DevTest)"
        )
    images = scan_identity_folders(data, names)
    crops = crops_for(model, list(images.paths), cache_dir, Path(cohort_people).stem.lower(), detector)
    ok = crops.status == STATUS_DETECTED
    try:
        cohort = Cohort(model.encoder.embed(crops.crops[ok]), top_k)
    except ValueError as err:
        raise FaceappError(f"{cohort_people}: {err}") from None
    info = {
        "score_norm": "asnorm",
        "cohort": Path(cohort_people).name,
        "cohort_images": len(cohort),
        "cohort_identities": len(np.unique(images.labels[ok])),
        "cohort_top_k": cohort.top_k,
    }
    return cohort, info


def make_cohort_cli(
    model_path: Path, data: str, people: str, *, out: str, top_k: int, cache_dir: str
) -> dict[str, Any]:
    """``faceapp make-cohort``: embed every detected face of ``people`` with the model and write
    the s-norm cohort file (:meth:`Cohort.save`) the app would load beside the model."""
    model = load_checkpoint(model_path)
    cohort, info = cohort_from_people(model, data, people, exclude=set(), top_k=top_k, cache_dir=cache_dir)
    source = {"data": Path(data).name, **{k: v for k, v in info.items() if k != "score_norm"}}
    path = cohort.save(out, model.model_id, source)
    return {"cohort_file": str(path), "model_id": model.model_id, **source}


def evaluate_pairs(
    model: LoadedModel,
    data: str | Path,
    pairs_file: str | Path,
    *,
    scorer: str = DISTANCE,
    cache_dir: str | Path = "cache",
    detector: FaceDetector | None = None,
    cohort_people: str | Path | None = None,
    cohort_top_k: int = DEFAULT_TOP_K,
    normaliser: ScoreNormaliser = RAW_SCORES,
) -> tuple[list[dict[str, Any]], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Reports per scorer, and the (scores, same) arrays behind them.

    ``detector``: for images not in the crop cache (default: :func:`detector_for` the model).
    ``normaliser``: the distance scorer's cosine similarities normalised by it, as the app
    scores them (:func:`app_normaliser`; the CLI's default). ``cohort_people``: instead,
    normalise them by adaptive s-norm against a cohort of these identities
    (:mod:`faceapp.nn.score_norm`; disjoint from the pairs' people; distance scorer only).
    """
    chosen = resolve_scorers(model, scorer)  # an unknown scorer fails before any detection
    if cohort_people is not None and set(chosen) != {DISTANCE}:
        raise FaceappError("score normalisation (--cohort) applies to the distance scorer only")
    if cohort_people is not None and normaliser.active:
        raise FaceappError("--cohort replaces the model's score normaliser: add --normaliser none")
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
    norm_info: dict[str, Any] = {}
    app_info = {"score_normaliser": normaliser.name}
    if cohort_people is not None:
        people = {p.a.parent.name for p in pairs} | {p.b.parent.name for p in pairs}
        cohort, norm_info = cohort_from_people(
            model, data, cohort_people, exclude=people, top_k=cohort_top_k, cache_dir=cache_dir,
            detector=detector,
        )
        img_stats = cohort.stats(emb)
    reports: list[dict[str, Any]] = []
    raw: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, sc in chosen.items():
        scores = sc.score_pairs(emb[ia], emb[ib]).astype(np.float64)
        if norm_info:
            scores = s_norm_pairs(scores, img_stats.take(ia), img_stats.take(ib))
        elif name == DISTANCE:
            scores = normaliser.normalise_pairs(emb[ia], emb[ib], scores)
        rep = verification_report(scores, same, folds)
        rep.update(norm_info or (app_info if name == DISTANCE else {"score_normaliser": "none"}))
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


def _calibration_to_update(model: LoadedModel) -> tuple[Path, Calibration]:
    """The model's calibration file and its content (kept, overrides included, when it is for
    this model; a fresh one otherwise)."""
    if model.path is None:
        raise CalibrationError("model has no file path: cannot place calibration.json")
    path = calibration_path_for(model.path)
    try:
        cal = Calibration.load(path)
        if cal.model_id != model.model_id:
            cal = Calibration(model_id=model.model_id)
    except CalibrationError:
        cal = Calibration(model_id=model.model_id)
    return path, cal


def update_calibration(model: LoadedModel, reports: Sequence[dict[str, Any]], source: dict[str, Any]) -> Path:
    """Write the operating-point thresholds of ``reports`` into the model's calibration.json."""
    path, cal = _calibration_to_update(model)
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


CALIBRATION_FARS = (0.01, 0.001, 0.0001)
MIN_IMPOSTOR_PAIRS = 100_000
STRICT_FAR = 1e-5
"""Also calibrated (``far_1e-05``, for 1:K against more than 100 people) when the sample holds at
least :data:`STRICT_FAR_MIN_IMPOSTORS` impostor pairs, so that about 10 of them lie above τ."""
STRICT_FAR_MIN_IMPOSTORS = 1_000_000


def sample_calibration_pairs(
    labels: np.ndarray, *, impostor_pairs: int, genuine_per_person: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Genuine and impostor index pairs over rows with identity ``labels``.

    Args:
        labels: (N,) int identity per row.
        impostor_pairs: distinct pairs (i < j) of rows of different identities, drawn at random.
        genuine_per_person: at most this many same-identity pairs per identity (all of them
            when the identity has fewer), drawn at random.
    Returns:
        ``(a, b, same)``: (M,) int64 row indices and (M,) bool, genuine pairs first.
    Raises:
        FaceappError: fewer possible impostor pairs than asked for, or no genuine pair.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    gen_a: list[np.ndarray] = []
    gen_b: list[np.ndarray] = []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        if rows.size < 2:
            continue
        ia, ib = np.triu_indices(rows.size, k=1)
        if ia.size > genuine_per_person:
            pick = rng.choice(ia.size, size=genuine_per_person, replace=False)
            ia, ib = ia[pick], ib[pick]
        gen_a.append(rows[ia])
        gen_b.append(rows[ib])
    if not gen_a:
        raise FaceappError("no identity has two images: no genuine pair to calibrate on")
    n = labels.size
    counts = np.bincount(np.unique(labels, return_inverse=True)[1])
    possible = (n * (n - 1) - int((counts * (counts - 1)).sum())) // 2
    if impostor_pairs > possible:
        raise FaceappError(f"only {possible} impostor pairs exist, {impostor_pairs} asked for")
    chosen: set[tuple[int, int]] = set()
    while len(chosen) < impostor_pairs:
        need = impostor_pairs - len(chosen)
        i = rng.integers(0, n, size=2 * need + 16)
        j = rng.integers(0, n, size=2 * need + 16)
        keep = labels[i] != labels[j]
        for x, y in zip(np.minimum(i, j)[keep].tolist(), np.maximum(i, j)[keep].tolist(), strict=True):
            chosen.add((x, y))
            if len(chosen) == impostor_pairs:
                break
    imp = np.asarray(sorted(chosen), dtype=np.int64).reshape(-1, 2)
    a = np.concatenate([*gen_a, imp[:, 0]]).astype(np.int64)
    b = np.concatenate([*gen_b, imp[:, 1]]).astype(np.int64)
    n_gen = a.size - imp.shape[0]
    same = np.zeros(a.size, dtype=bool)
    same[:n_gen] = True
    return a, b, same


def calibration_entry(scores: np.ndarray, same: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """Thresholds at FAR 1e-2/1e-3/1e-4 (and :data:`STRICT_FAR` given enough impostor pairs),
    the EER and the best balanced accuracy, with the TAR / FAR measured at each (similarity
    scores: accept when score >= τ)."""
    s = np.asarray(scores, dtype=np.float64)
    g = np.asarray(same, dtype=bool)
    entry: dict[str, Any] = {}
    metrics: dict[str, Any] = {"auc": roc_auc(s, g)}
    imp = s[~g]
    strict = (STRICT_FAR,) if imp.size >= STRICT_FAR_MIN_IMPOSTORS else ()
    for far in (*CALIBRATION_FARS, *strict):
        tar, tau = tar_at_far(s, g, far)
        entry[f"far_{far:g}"] = tau
        metrics[f"tar_at_far_{far:g}"] = tar
        metrics[f"measured_far_{far:g}"] = float(accepts_all(imp, tau).mean())
    eer, t_eer = equal_error_rate(s, g)
    entry["eer"] = t_eer
    metrics["eer"] = eer
    # accuracy threshold on a balanced subsample (impostors far outnumber genuine pairs)
    rng = np.random.default_rng(seed)
    gi, ii = np.flatnonzero(g), np.flatnonzero(~g)
    k = min(gi.size, ii.size)
    rows = np.concatenate([rng.choice(gi, k, replace=False), rng.choice(ii, k, replace=False)])
    tau_acc, acc = best_threshold(s[rows], g[rows])
    entry["accuracy"] = tau_acc
    metrics["balanced_accuracy"] = acc
    entry["metrics"] = metrics
    return entry


def calibrate(
    model: LoadedModel,
    data: str | Path,
    people_file: str | Path,
    *,
    scorer: str = "all",
    impostor_pairs: int = 200_000,
    genuine_per_person: int = 50,
    seed: int = 0,
    cache_dir: str | Path = "cache",
    detector: FaceDetector | None = None,
    min_impostor_pairs: int = MIN_IMPOSTOR_PAIRS,
    normaliser: ScoreNormaliser = RAW_SCORES,
) -> dict[str, Any]:
    """Measure τ on pairs of the identities of ``people_file`` and write calibration.json.

    Only images with a detected face take part. ``normaliser``: the distance scorer's
    similarities normalised by it first, as the app decides on them (the CLI passes
    :func:`app_normaliser`); the file's ``source`` names it. Returns what was written
    (JSON-able) plus ``calibration`` (the file's path).
    Raises:
        FaceappError: fewer than ``min_impostor_pairs`` (default 1e5) impostor pairs asked
            for, or fewer images than that needs.
    """
    if impostor_pairs < min_impostor_pairs:
        raise FaceappError(
            f"--impostor-pairs {impostor_pairs}: at least {min_impostor_pairs} are needed to measure FAR 1e-4"
        )
    chosen = resolve_scorers(model, scorer)
    images = scan_identity_folders(data, list(read_people(people_file)))
    crops = crops_for(model, list(images.paths), cache_dir, Path(people_file).stem.lower(), detector)
    ok = crops.status == STATUS_DETECTED
    labels = images.labels[ok]
    a, b, same = sample_calibration_pairs(
        labels, impostor_pairs=impostor_pairs, genuine_per_person=genuine_per_person, seed=seed
    )
    emb = model.encoder.embed(crops.crops[ok])
    path, cal = _calibration_to_update(model)
    for name, sc in chosen.items():
        scores = sc.score_pairs(emb[a], emb[b]).astype(np.float64)
        if name == DISTANCE:
            scores = normaliser.normalise_pairs(emb[a], emb[b], scores)
        cal.scorers[name] = calibration_entry(scores, same, seed)
    cal.source = {
        "method": "faceapp calibrate-model",
        "data": Path(data).name,
        "people": Path(people_file).name,
        "identities": len(np.unique(labels)),
        "images": int(ok.sum()),
        "images_without_detected_face": int((~ok).sum()),
        "genuine_pairs": int(same.sum()),
        "impostor_pairs": int((~same).sum()),
        "genuine_per_person": genuine_per_person,
        "seed": seed,
        "score_normaliser": normaliser.name,
    }
    cal.save(path)
    return {"calibration": str(path), "model_id": model.model_id, "source": cal.source,
            "scorers": {k: cal.scorers[k] for k in chosen}}


def app_normaliser(model: LoadedModel, choice: str = "app") -> ScoreNormaliser:
    """``app``: the normaliser the app decides with for ``model`` (its ``score_norm.npz``;
    raw cosine when it has none or it is unusable, see :func:`normaliser_for`); ``none``:
    raw cosine similarity."""
    if choice == "none" or model.path is None:
        return RAW_SCORES
    if choice != "app":
        raise FaceappError(f"--normaliser {choice!r}: expected app or none")
    return normaliser_for(model.path, model.model_id)


def calibrate_cli(model_path: Path, data: str, people: str, *, normaliser: str = "app",
                  **kw: Any) -> dict[str, Any]:
    model = load_checkpoint(model_path)
    return calibrate(model, data, people, normaliser=app_normaliser(model, normaliser), **kw)


def evaluate_pairs_cli(
    model_path: Path,
    data: str,
    pairs_file: str,
    *,
    scorer: str,
    plots: str | None,
    write_calibration: bool,
    cache_dir: str,
    cohort_people: str | None = None,
    cohort_top_k: int = DEFAULT_TOP_K,
    normaliser: str = "app",
) -> list[dict[str, Any]]:
    model = load_checkpoint(model_path)
    if write_calibration and cohort_people is not None:
        raise FaceappError("--write-calibration with --cohort: the app does not decide on "
                           "real-cohort scores")
    reports, raw = evaluate_pairs(
        model, data, pairs_file, scorer=scorer, cache_dir=cache_dir, cohort_people=cohort_people,
        cohort_top_k=cohort_top_k, normaliser=(norm := app_normaliser(model, normaliser)),
    )
    if write_calibration:
        update_calibration(model, reports, {"pairs": Path(pairs_file).name, "n_pairs": reports[0]["pairs"],
                                            "score_normaliser": norm.name})
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
