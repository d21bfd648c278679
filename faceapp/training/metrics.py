"""Verification (1:1) and identification (1:K) metrics, numpy only.

Convention (the one of the whole project): a *score* is a similarity, higher = more alike,
and a pair is *accepted* when ``score >= threshold``. ``same`` marks genuine pairs (same
identity) with True and impostor pairs with False.

* FAR (false accept rate) = accepted impostors / impostors;
* TAR (true accept rate) = accepted genuine pairs / genuine pairs; FRR = 1 - TAR.

Verification functions take ``scores``: ``(N,)`` float and ``same``: ``(N,)`` bool (0/1
integers are accepted too) and raise ``ValueError`` on malformed input, non-finite scores, or
(where the quantity needs them) a missing genuine or impostor class.

Thresholds returned here are what calibration stores; they are always finite score values
(or a midpoint between two of them, or the next float above the largest score when nothing
may be accepted).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from faceapp.nn.scoring import accepts_all

__all__ = [
    "KFoldResult",
    "RocCurve",
    "best_threshold",
    "equal_error_rate",
    "identification_report",
    "identification_report_from_scores",
    "kfold_accuracy",
    "lfw_folds",
    "roc_auc",
    "roc_curve",
    "tar_at_far",
    "verification_report",
]

logger = logging.getLogger(__name__)

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
IntArray = NDArray[np.int64]


# --------------------------------------------------------------------------- validation


def _as_scores(scores: ArrayLike, name: str = "scores") -> FloatArray:
    arr = np.asarray(scores)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size and not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    out = arr.astype(np.float64)
    if not np.isfinite(out).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return out


def _as_same(same: ArrayLike, n: int) -> BoolArray:
    arr = np.asarray(same)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"same must have shape ({n},), got {arr.shape}")
    if arr.dtype == np.bool_:
        return arr
    if arr.size and (not np.issubdtype(arr.dtype, np.integer) or not np.isin(arr, (0, 1)).all()):
        raise ValueError("same must be booleans (or 0/1 integers)")
    return arr.astype(np.bool_)


def _pairs(scores: ArrayLike, same: ArrayLike, *, need_both: bool) -> tuple[FloatArray, BoolArray]:
    s = _as_scores(scores)
    g = _as_same(same, s.shape[0])
    if s.size == 0:
        raise ValueError("no pairs")
    if need_both:
        n_gen = int(g.sum())
        if n_gen == 0 or n_gen == g.size:
            raise ValueError(
                f"need both genuine and impostor pairs, got {n_gen} genuine and {g.size - n_gen} impostor"
            )
    return s, g


def _above(x: float) -> float:
    """Smallest float strictly greater than ``x`` (a threshold that rejects ``x``)."""
    return float(np.nextafter(x, np.inf))


# --------------------------------------------------------------------------- ROC family


@dataclass(frozen=True)
class RocCurve:
    """ROC curve, one point per distinct threshold.

    Attributes:
        far: ``(M + 1,)`` float64, non-decreasing, from 0 to 1.
        tar: ``(M + 1,)`` float64, non-decreasing, from 0 to 1.
        thresholds: ``(M + 1,)`` float64, strictly decreasing: ``+inf`` (accept nothing, the
            point (0, 0)) followed by the ``M`` distinct scores (the last one accepts
            everything, the point (1, 1)). Point ``i`` is the rates of ``score >= thresholds[i]``.
    """

    far: FloatArray
    tar: FloatArray
    thresholds: FloatArray


def roc_curve(scores: ArrayLike, same: ArrayLike) -> RocCurve:
    """ROC curve of similarity ``scores`` (``(N,)`` float) for labels ``same`` (``(N,)`` bool).

    Raises:
        ValueError: malformed input, or a class (genuine/impostor) is missing.
    """
    s, g = _pairs(scores, same, need_both=True)
    order = np.argsort(-s, kind="stable")
    s_desc, g_desc = s[order], g[order]
    tp = np.cumsum(g_desc)
    fp = np.cumsum(~g_desc)
    # Last position of each run of equal scores.
    ends = np.flatnonzero(np.r_[s_desc[1:] != s_desc[:-1], True])
    n_gen, n_imp = int(tp[-1]), int(fp[-1])
    return RocCurve(
        far=np.r_[0.0, fp[ends] / n_imp],
        tar=np.r_[0.0, tp[ends] / n_gen],
        thresholds=np.r_[np.inf, s_desc[ends]],
    )


def _midranks(x: FloatArray) -> FloatArray:
    """1-based ranks of ``x`` in ascending order, ties sharing their average rank."""
    order = np.argsort(x, kind="stable")
    xs = x[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], xs.size]  # exclusive
    avg = (starts + 1 + ends) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty_like(x)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def roc_auc(scores: ArrayLike, same: ArrayLike) -> float:
    """Area under the ROC curve.

    Computed as the Mann-Whitney statistic ``P(s_genuine > s_impostor) + 0.5 P(equal)`` over
    all genuine x impostor pairs (via mid-ranks, ``O(N log N)``).
    """
    s, g = _pairs(scores, same, need_both=True)
    n_gen = int(g.sum())
    n_imp = g.size - n_gen
    rank_sum = float(_midranks(s)[g].sum())
    return (rank_sum - n_gen * (n_gen + 1) / 2.0) / (n_gen * n_imp)


def equal_error_rate(scores: ArrayLike, same: ArrayLike) -> tuple[float, float]:
    """Equal error rate and its threshold: ``(eer, threshold)``.

    Among the thresholds equal to a distinct score, take the one minimising
    ``|FAR - FRR|`` (ties: the highest such threshold, i.e. the lowest FAR); the EER is
    ``(FAR + FRR) / 2`` there. No interpolation: the result is an operating point that
    exists on this data.
    """
    roc = roc_curve(scores, same)
    far, frr, thr = roc.far[1:], 1.0 - roc.tar[1:], roc.thresholds[1:]
    i = int(np.argmin(np.abs(far - frr)))  # first minimiser = highest threshold
    return float((far[i] + frr[i]) / 2.0), float(thr[i])


def tar_at_far(scores: ArrayLike, same: ArrayLike, far: float) -> tuple[float, float]:
    """Best TAR with FAR at most ``far``: ``(tar, threshold)``.

    Among thresholds equal to a distinct score whose FAR is ``<= far``, the smallest one (it
    has the largest TAR). When even the largest score gives FAR ``> far`` (impostors share
    the top score, and they are more than ``far`` of all impostors), no score threshold
    qualifies: the only compliant operating point accepts nothing, reported honestly as
    ``tar = 0.0`` with ``threshold`` the next float above the largest score.
    """
    if not 0.0 <= far <= 1.0:
        raise ValueError(f"far must be in [0, 1], got {far}")
    roc = roc_curve(scores, same)
    ok = np.flatnonzero(roc.far[1:] <= far)
    if ok.size == 0:
        logger.debug("no score threshold reaches FAR <= %g; reporting TAR 0", far)
        return 0.0, _above(float(roc.thresholds[1]))
    i = int(ok[-1]) + 1
    return float(roc.tar[i]), float(roc.thresholds[i])


# --------------------------------------------------------------------------- accuracy


def _threshold_candidates(s: FloatArray, g: BoolArray) -> tuple[FloatArray, IntArray]:
    """Candidate thresholds in ascending order and the number of correct decisions of each.

    Candidates: the smallest score (accept all), the midpoint between each pair of
    consecutive distinct scores, and the next float above the largest score (reject all).
    """
    order = np.argsort(s, kind="stable")
    s_asc, g_asc = s[order], g[order]
    ends = np.flatnonzero(np.r_[s_asc[1:] != s_asc[:-1], True])  # last index of each value
    values = s_asc[ends]
    gen_le = np.cumsum(g_asc)[ends]  # genuine with score <= value
    imp_le = np.cumsum(~g_asc)[ends]
    n_gen = int(g.sum())
    mids = values[:-1] + (values[1:] - values[:-1]) / 2.0
    # A midpoint of two adjacent floats may round down onto the lower value: use the upper.
    mids = np.where(mids <= values[:-1], values[1:], mids)
    cand = np.r_[values[0], mids, _above(float(values[-1]))]
    # Threshold above value j rejects every score <= value j.
    correct = np.r_[n_gen, imp_le + (n_gen - gen_le)].astype(np.int64)
    return cand, correct


def best_threshold(scores: ArrayLike, same: ArrayLike) -> tuple[float, float]:
    """Threshold maximising accuracy, and that accuracy: ``(threshold, accuracy)``.

    Candidates are placed midway between consecutive distinct sorted scores (plus accept-all
    and reject-all, see :func:`_threshold_candidates`). Ties: the lowest threshold. Works
    with a single class too (then accept-all or reject-all wins).
    """
    s, g = _pairs(scores, same, need_both=False)
    cand, correct = _threshold_candidates(s, g)
    i = int(np.argmax(correct))
    return float(cand[i]), float(correct[i] / s.size)


def lfw_folds(n_pairs_or_same: int | ArrayLike, n_folds: int = 10) -> IntArray:
    """Fold index (``0 .. n_folds-1``) of each pair, LFW style.

    Given ``same`` (``(N,)`` bool, pairs in file order), the matched pairs, in file order, are
    cut into ``n_folds`` contiguous chunks (sizes differing by at most one) and chunk ``j``
    goes to fold ``j``; likewise for the mismatched pairs. This reproduces the official
    View 2 folds of ``pairs.txt`` (10 blocks of 300 matched then 300 mismatched: fold ``j`` =
    block ``j``) and gives ``pairsDevTest.txt`` (500 matched then 500 mismatched) 50 + 50
    pairs per fold. Given an integer ``N`` instead (labels unknown), the pairs are simply cut
    into ``n_folds`` contiguous chunks.

    Returns:
        ``(N,)`` int64 fold indices.
    """
    if n_folds < 2:
        raise ValueError(f"n_folds must be >= 2, got {n_folds}")
    if isinstance(n_pairs_or_same, int | np.integer):
        n = int(n_pairs_or_same)
        if n < n_folds:
            raise ValueError(f"cannot split {n} pairs into {n_folds} folds")
        groups = [np.arange(n)]
    else:
        raw = np.asarray(n_pairs_or_same)
        if raw.ndim != 1:
            raise ValueError(f"expected a pair count or a (N,) bool array, got shape {raw.shape}")
        same = _as_same(raw, raw.shape[0])
        n = same.size
        groups = [np.flatnonzero(same), np.flatnonzero(~same)]
        for cls, idx in zip(("matched", "mismatched"), groups, strict=True):
            if 0 < idx.size < n_folds:
                raise ValueError(f"only {idx.size} {cls} pairs for {n_folds} folds")
        if n == 0:
            raise ValueError("no pairs")
    folds = np.empty(n, dtype=np.int64)
    for idx in groups:
        for j, chunk in enumerate(np.array_split(idx, n_folds)):
            folds[chunk] = j
    return folds


@dataclass(frozen=True)
class KFoldResult:
    """Cross-validated verification accuracy.

    Attributes:
        accuracy: mean of ``fold_accuracies``.
        accuracy_std: population standard deviation (``ddof=0``) of ``fold_accuracies``.
        fold_accuracies: ``(F,)`` float64, accuracy on each held-out fold (folds in
            ascending index order).
        fold_thresholds: ``(F,)`` float64, threshold chosen on the other folds.
        threshold: best threshold on all pairs (for calibration).
    """

    accuracy: float
    accuracy_std: float
    fold_accuracies: FloatArray
    fold_thresholds: FloatArray
    threshold: float


def kfold_accuracy(scores: ArrayLike, same: ArrayLike, folds: ArrayLike) -> KFoldResult:
    """LFW protocol accuracy: for each fold, pick :func:`best_threshold` on the other folds and
    measure accuracy (``(score >= t) == same``) on the held-out fold.

    Args:
        scores: ``(N,)`` float similarities.
        same: ``(N,)`` bool.
        folds: ``(N,)`` int fold index per pair (e.g. from :func:`lfw_folds`); at least 2
            distinct values.
    """
    s, g = _pairs(scores, same, need_both=False)
    f = np.asarray(folds)
    if f.shape != s.shape or (f.size and not np.issubdtype(f.dtype, np.integer)):
        raise ValueError(f"folds must be integers of shape {s.shape}, got {f.dtype} {f.shape}")
    fold_ids = np.unique(f)
    if fold_ids.size < 2:
        raise ValueError("need at least 2 folds")
    accs, thrs = [], []
    for fid in fold_ids:
        test = f == fid
        t, _ = best_threshold(s[~test], g[~test])
        accs.append(float(np.mean(accepts_all(s[test], t) == g[test])))
        thrs.append(t)
    acc = np.asarray(accs, dtype=np.float64)
    return KFoldResult(
        accuracy=float(acc.mean()),
        accuracy_std=float(acc.std()),
        fold_accuracies=acc,
        fold_thresholds=np.asarray(thrs, dtype=np.float64),
        threshold=best_threshold(s, g)[0],
    )


def verification_report(scores: ArrayLike, same: ArrayLike, folds: ArrayLike) -> dict[str, Any]:
    """All verification numbers of a pair protocol, as plain Python floats / ints.

    Keys: ``accuracy``, ``accuracy_std`` (k-fold, see :func:`kfold_accuracy`), ``auc``,
    ``eer``, ``tar_at_far_0.01``, ``tar_at_far_0.001``, ``threshold`` (best accuracy on all
    pairs), ``pairs`` (int), ``threshold_far_0.01``, ``threshold_far_0.001``,
    ``threshold_eer``.
    """
    s, g = _pairs(scores, same, need_both=True)
    kf = kfold_accuracy(s, g, folds)
    eer, t_eer = equal_error_rate(s, g)
    tar2, t2 = tar_at_far(s, g, 0.01)
    tar3, t3 = tar_at_far(s, g, 0.001)
    return {
        "accuracy": kf.accuracy,
        "accuracy_std": kf.accuracy_std,
        "auc": roc_auc(s, g),
        "eer": eer,
        "tar_at_far_0.01": tar2,
        "tar_at_far_0.001": tar3,
        "threshold": kf.threshold,
        "pairs": int(s.size),
        "threshold_far_0.01": t2,
        "threshold_far_0.001": t3,
        "threshold_eer": t_eer,
    }


# --------------------------------------------------------------------------- identification


def _as_matrix(x: ArrayLike, name: str) -> FloatArray:
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be (rows, D), got shape {arr.shape}")
    out = arr.astype(np.float64)
    if not np.isfinite(out).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return out


def _as_labels(x: ArrayLike, n: int, name: str) -> IntArray:
    arr = np.asarray(x)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},), got {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def identification_report(
    gallery: ArrayLike,
    gallery_labels: ArrayLike,
    probes: ArrayLike,
    probe_labels: ArrayLike,
) -> dict[str, Any]:
    """Closed-set and open-set identification against a gallery.

    Scores are cosine similarities ``probes @ gallery.T`` (embeddings are expected to be
    L2-normalised), reduced to one score per gallery identity (its best row).

    * Closed set, over *known* probes (label present in the gallery): ``rankK`` = fraction
      whose true identity is among the top ``K`` identities. Ties count against the probe
      (an impostor identity scoring exactly as high as the true one ranks before it).
    * Open set: *distractor* probes (label absent from the gallery) must be rejected. The
      threshold ``t`` is the smallest value with at most 1% of distractors having top-1 score
      ``>= t`` (the next float above the appropriate distractor score, see the key
      ``threshold_fpir_0.01``); ``dir_at_fpir_0.01`` = fraction of known probes whose top-1
      identity is correct (rank 0) and whose top-1 score is ``>= t``.

    Args:
        gallery: ``(G, D)`` float, ``G >= 1``; several rows may share an identity.
        gallery_labels: ``(G,)`` int identities.
        probes: ``(P, D)`` float.
        probe_labels: ``(P,)`` int identities; labels absent from the gallery are distractors.

    Returns:
        dict with ``rank1``, ``rank5``, ``dir_at_fpir_0.01``, ``threshold_fpir_0.01`` (floats;
        NaN when the probes needed are absent: no known probe for rank/DIR, no distractor for
        the threshold/DIR), ``n_gallery`` (gallery identities), ``n_known_probes``,
        ``n_distractor_probes`` (ints).
    """
    gal = _as_matrix(gallery, "gallery")
    prb = _as_matrix(probes, "probes")
    if gal.shape[0] == 0:
        raise ValueError("empty gallery")
    if prb.shape[1] != gal.shape[1]:
        raise ValueError(f"probes have dimension {prb.shape[1]}, gallery {gal.shape[1]}")
    return identification_report_from_scores(prb @ gal.T, gallery_labels, probe_labels)


def identification_report_from_scores(
    scores: ArrayLike,
    gallery_labels: ArrayLike,
    probe_labels: ArrayLike,
    accept_scores: ArrayLike | None = None,
) -> dict[str, Any]:
    """:func:`identification_report` of a given ``(P, G)`` similarity matrix (entry (i, j):
    probe i against gallery row j; e.g. cohort-normalised scores, :mod:`faceapp.nn.score_norm`),
    reduced to one score per gallery identity (its best row); same keys and rules.

    ``accept_scores``: another ``(P, G)`` matrix for the open-set decision only: identities are
    ranked by ``scores``, and the top-1 identity is accepted when *its* ``accept_scores`` value
    (best row of that identity) reaches the threshold set on the distractors' such values.
    """
    sc = _as_matrix(scores, "scores")
    if sc.shape[1] == 0:
        raise ValueError("empty gallery")
    g_lab = _as_labels(gallery_labels, sc.shape[1], "gallery_labels")
    p_lab = _as_labels(probe_labels, sc.shape[0], "probe_labels")

    ids, inverse = np.unique(g_lab, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    starts = np.flatnonzero(np.r_[True, inverse[order][1:] != inverse[order][:-1]])
    id_scores = np.maximum.reduceat(sc[:, order], starts, axis=1)  # (P, U)

    known = np.isin(p_lab, ids)
    n_known = int(known.sum())
    n_distractor = int(sc.shape[0] - n_known)
    top1 = id_scores.max(axis=1) if id_scores.size else np.zeros(0)
    if accept_scores is not None:
        acc = _as_matrix(accept_scores, "accept_scores")
        if acc.shape != sc.shape:
            raise ValueError(f"accept_scores has shape {acc.shape}, scores {sc.shape}")
        acc_id = np.maximum.reduceat(acc[:, order], starts, axis=1)
        top1 = acc_id[np.arange(acc_id.shape[0]), id_scores.argmax(axis=1)]

    nan = float("nan")
    rank1 = rank5 = nan
    rank = np.zeros(0, dtype=np.int64)
    if n_known:
        col = np.searchsorted(ids, p_lab[known])
        true_score = id_scores[known, col]
        # 0-based rank, ties counted against the probe (minus the true identity itself).
        rank = (id_scores[known] >= true_score[:, None]).sum(axis=1) - 1
        rank1 = float(np.mean(rank < 1))
        rank5 = float(np.mean(rank < 5))

    threshold = nan
    dir_at_fpir = nan
    if n_distractor:
        d_desc = np.sort(top1[~known])[::-1]
        allowed = math.floor(0.01 * n_distractor + 1e-9)
        # allowed < n_distractor always; rejecting d_desc[allowed] leaves <= allowed above t.
        threshold = _above(float(d_desc[allowed]))
        if n_known:
            dir_at_fpir = float(np.mean((rank == 0) & accepts_all(top1[known], threshold)))
    else:
        logger.debug("no distractor probe: open-set metrics are undefined (NaN)")
    return {
        "rank1": rank1,
        "rank5": rank5,
        "dir_at_fpir_0.01": dir_at_fpir,
        "threshold_fpir_0.01": threshold,
        "n_gallery": int(ids.size),
        "n_known_probes": n_known,
        "n_distractor_probes": n_distractor,
    }
