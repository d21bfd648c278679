"""Open-set identification by the gallery/probe protocol (``faceapp evaluate-identification``).

Gallery = the first ``gallery_images`` images of each enrolled identity; probes = their other
images plus every image of never-enrolled identities. Scores either as the app computes them
(an :class:`IdentificationScoring`, e.g. ``faceapp.cli.identification_scoring.AppScoring``:
the 1:K search with the model's open-set normaliser), by cosine similarity, or by adaptive
s-norm against a real cohort (an evaluation option). Reports rank-1, rank-5 and DIR at FPIR
1e-2 (:func:`~faceapp.training.metrics.identification_report_from_scores`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from faceapp.errors import FaceappError
from faceapp.nn.checkpoint import LoadedModel, load_checkpoint
from faceapp.nn.score_norm import DEFAULT_TOP_K, s_norm_matrix
from faceapp.nn.templates import AGGREGATES, mean_templates
from faceapp.training.datasets import STATUS_DETECTED, read_people, scan_identity_folders
from faceapp.training.evaluation import cohort_from_people, crops_for
from faceapp.training.metrics import identification_report_from_scores
from faceapp.vision.detection import FaceDetector


class IdentificationScoring(Protocol):
    """Probe-against-gallery scores of :func:`evaluate_identification` (one template per
    gallery row; a person is an identity label)."""

    @property
    def name(self) -> str:
        """What the scores are (``cosine``, ``learned-snorm``: ``ScoreNormaliser.name``)."""
        ...

    @property
    def active(self) -> bool:
        """False when the scores are plain cosine similarities."""
        ...

    def scores(self, gallery: np.ndarray, gallery_labels: np.ndarray, probes: np.ndarray) -> np.ndarray:
        """(G, D) unit rows with (G,) int identities, (P, D) unit probes -> (P, U) scores of
        each probe against each identity of ``np.unique(gallery_labels)`` (higher = more alike;
        a finite value below every other score for identities the search did not return)."""
        ...


def evaluate_identification(
    model: LoadedModel,
    data: str | Path,
    people_file: str | Path | None,
    *,
    distractor_fraction: float = 0.5,
    seed: int = 0,
    cache_dir: str | Path = "cache",
    detector: FaceDetector | None = None,
    cohort_people: str | Path | None = None,
    cohort_top_k: int = DEFAULT_TOP_K,
    gallery_images: int = 1,
    aggregate: str = "max",
    snorm_scope: str = "all",
    scoring: IdentificationScoring | None = None,
) -> dict[str, Any]:
    """Gallery = first ``gallery_images`` images of each enrolled identity; probes = their other
    images plus every image of the distractor identities (never enrolled). Identities with
    fewer than ``gallery_images + 1`` detected faces are distractors.

    ``detector``: for images not in the crop cache (default: :func:`detector_for` the model).
    ``cohort_people``: score probes against templates by adaptive s-norm with a cohort of these
    identities (:mod:`faceapp.nn.score_norm`; they must be disjoint from ``people_file``'s).
    ``aggregate``: ``max`` scores an identity by its best template, ``mean`` by one template,
    the normalised mean of its gallery embeddings (:mod:`faceapp.nn.templates`).
    ``snorm_scope`` (with a cohort): ``all`` ranks and accepts by the normalised score;
    ``accept`` ranks by cosine similarity and decides open-set acceptance of the top-1 identity
    by its normalised score.
    ``scoring``: how probes are scored against the gallery (e.g. as the app does, through its
    1:K search and the model's open-set normaliser: ``faceapp evaluate-identification``'s
    default); ``None``: cosine similarity of every probe with every gallery row. Reported as
    ``open_set_normaliser`` (``cosine`` for ``None``, ``cohort-asnorm`` with a cohort).

    Raises:
        FaceappError: a cohort together with an active ``scoring`` (two normalisations).
    """
    if cohort_people is not None:
        if scoring is not None and scoring.active:
            raise FaceappError(
                f"--cohort normalises by a real cohort, but this model's 1:K scores are already "
                f"normalised ({scoring.name}); add --normaliser none to evaluate real-cohort AS-norm"
            )
        scoring = None  # real-cohort AS-norm normalises the full cosine matrix
    if snorm_scope not in SNORM_SCOPES:
        raise FaceappError(f"unknown s-norm scope {snorm_scope!r} (known: {', '.join(SNORM_SCOPES)})")
    if gallery_images < 1:
        raise FaceappError(f"--gallery-images must be >= 1, got {gallery_images}")
    if aggregate not in AGGREGATES:
        raise FaceappError(f"unknown aggregate {aggregate!r} (known: {', '.join(AGGREGATES)})")
    people = list(read_people(people_file)) if people_file else None
    images = scan_identity_folders(data, people)
    name = Path(people_file).stem.lower() if people_file else Path(data).name
    crops = crops_for(model, list(images.paths), cache_dir, name, detector)
    ok = crops.status == STATUS_DETECTED
    labels = images.labels
    counts = np.bincount(labels[ok], minlength=len(images.names))
    rng = np.random.default_rng(seed)
    multi = np.flatnonzero(counts >= gallery_images + 1)
    n_distract = round(len(multi) * distractor_fraction)
    distract = set(rng.choice(multi, size=n_distract, replace=False).tolist())
    known = [c for c in multi.tolist() if c not in distract]
    if not known:
        raise FaceappError(
            f"{data}: no identity left for the gallery (identities with >= {gallery_images + 1} detected "
            f"faces: {len(multi)}, distractor fraction {distractor_fraction})"
        )
    emb = model.encoder.embed(crops.crops[ok])
    lab = labels[ok]
    gallery_rows, probe_rows = [], []
    enrolled: dict[int, int] = {}
    for row, c in enumerate(lab.tolist()):
        if c in known and enrolled.get(c, 0) < gallery_images:
            gallery_rows.append(row)
            enrolled[c] = enrolled.get(c, 0) + 1
        else:
            probe_rows.append(row)
    gal, gal_lab, prb = emb[gallery_rows], lab[gallery_rows], emb[probe_rows]
    if aggregate == "mean":
        gal_lab, gal = mean_templates(gal, gal_lab)
    norm_info: dict[str, Any] = {"open_set_normaliser": "cosine"}
    if scoring is not None:
        scores = np.asarray(scoring.scores(gal, gal_lab, prb), dtype=np.float64)
        gal_lab = np.unique(gal_lab)  # one column per person
        norm_info["open_set_normaliser"] = scoring.name
    else:
        scores = (prb @ gal.T).astype(np.float64)
    if cohort_people is not None:
        cohort, cohort_info = cohort_from_people(
            model, data, cohort_people, exclude=set(images.names), top_k=cohort_top_k,
            cache_dir=cache_dir, detector=detector,
        )
        norm_info.update(cohort_info)
        normed = s_norm_matrix(scores, cohort.stats(prb), cohort.stats(gal))
        norm_info["open_set_normaliser"] = "cohort-asnorm"
        norm_info["snorm_scope"] = snorm_scope
        if snorm_scope == "all":
            scores, accept = normed, None
        else:
            accept = normed
    else:
        accept = None
    rep = identification_report_from_scores(scores, gal_lab, lab[probe_rows], accept)
    rep.update({"model_id": model.model_id, "images_without_detected_face": int((~ok).sum())})
    if gallery_images != 1 or aggregate != "max":
        rep.update({"gallery_images": gallery_images, "aggregate": aggregate})
    rep.update(norm_info)
    return rep


SNORM_SCOPES = ("all", "accept")


def evaluate_identification_cli(
    model_path: Path,
    data: str,
    people: str | None,
    *,
    distractor_fraction: float,
    seed: int,
    cache_dir: str,
    cohort_people: str | None = None,
    cohort_top_k: int = DEFAULT_TOP_K,
    gallery_images: int = 1,
    aggregate: str = "max",
    snorm_scope: str = "all",
    scoring: Callable[[LoadedModel], IdentificationScoring] | None = None,
) -> dict[str, Any]:
    """``faceapp evaluate-identification``; ``scoring``: made for the loaded model (``None``:
    cosine similarity, :func:`evaluate_identification`)."""
    model = load_checkpoint(model_path)
    return evaluate_identification(
        model,
        data,
        people,
        distractor_fraction=distractor_fraction,
        seed=seed,
        cache_dir=cache_dir,
        cohort_people=cohort_people,
        cohort_top_k=cohort_top_k,
        gallery_images=gallery_images,
        aggregate=aggregate,
        snorm_scope=snorm_scope,
        scoring=scoring(model) if scoring is not None else None,
    )
