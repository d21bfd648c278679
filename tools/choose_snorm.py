"""Choose the s-norm setting on LFW DevTrain people only (for models/MODEL_CARD.md).

    PYTHONPATH=. .venv/bin/python tools/choose_snorm.py --data ../shared/data/lfw/lfw-deepfunneled \
        --people ../shared/data/lfw/peopleDevTrain.txt [--model models/default.pt] [--cache-dir cache]

DevTrain identities are split at random into two halves (3 splits): one half is the cohort,
the other is run through ``faceapp evaluate-identification``'s protocol (first image of each
enrolled identity in the gallery, half of the identities with >= 2 images never enrolled).
Prints rank-1, rank-5 and DIR at FPIR 1e-2 (mean over the splits) without normalisation and with
adaptive s-norm for several top-k (ranking and accepting by it, or ``_accept_only``: ranking by
cosine, accepting by it), so that DevTest is never used to choose.

``learned_k50_*``: the learned normaliser (:mod:`faceapp.nn.open_set`, ``fit_normaliser`` with
its default settings) trained on the cohort half only and applied to the other half, in the
same two scopes; ``learned_k50_all_shortlistN`` re-scores only each probe's N best people by
cosine similarity, as ``GalleryIndex.identify`` does (``--shortlist``, default the app's
``NORMALISED_SHORTLIST``; ``--no-learned`` skips these rows).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--people", required=True)
    ap.add_argument("--model", default="models/default.pt")
    ap.add_argument("--cache-dir", default="cache")
    ap.add_argument("--splits", type=int, default=3)
    ap.add_argument("--top-k", default="20,50,100,200,400")
    ap.add_argument("--no-learned", action="store_true", help="skip the learned normaliser rows")
    ap.add_argument("--shortlist", type=int, help="people re-scored per probe (default: the app's)")
    ap.add_argument("--out", help="also write the summary (and per-split rows) as JSON here")
    args = ap.parse_args()

    from faceapp.nn.checkpoint import load_checkpoint
    from faceapp.nn.score_norm import Cohort, s_norm_matrix
    from faceapp.training.evaluation import detected_embeddings
    from faceapp.training.metrics import identification_report_from_scores
    from faceapp.training.open_set import NormaliserConfig, fit_normaliser

    model = load_checkpoint(args.model)
    emb, lab = detected_embeddings(model, args.data, args.people, args.cache_dir)
    ks = [int(k) for k in args.top_k.split(",")]
    from faceapp.gallery.matching.normalised import NORMALISED_SHORTLIST

    shortlist = args.shortlist or NORMALISED_SHORTLIST
    rows: dict[str, list[dict[str, float]]] = {}
    for split in range(args.splits):
        rng = np.random.default_rng(100 + split)
        ids = np.unique(lab)
        in_cohort = np.isin(lab, rng.choice(ids, size=ids.size // 2, replace=False))
        cohort_emb, cohort_lab = emb[in_cohort], lab[in_cohort]
        e, y = emb[~in_cohort], lab[~in_cohort]
        counts = np.bincount(y)
        multi = np.flatnonzero(counts >= 2)
        distract = set(rng.choice(multi, size=round(multi.size * 0.5), replace=False).tolist())
        known = set(multi.tolist()) - distract
        g_rows: list[int] = []
        p_rows: list[int] = []
        seen: set[int] = set()
        for r, c in enumerate(y.tolist()):
            if c in known and c not in seen:
                g_rows.append(r)
                seen.add(c)
            else:
                p_rows.append(r)
        gal, prb = e[g_rows], e[p_rows]
        raw = (prb @ gal.T).astype(np.float64)
        variants: dict[str, tuple[np.ndarray, np.ndarray | None]] = {"none": (raw, None)}
        for k in ks:
            c = Cohort(cohort_emb, top_k=k)
            normed = s_norm_matrix(raw, c.stats(prb), c.stats(gal))
            variants[f"asnorm_k{k}"] = (normed, None)
            variants[f"asnorm_k{k}_accept_only"] = (raw, normed)  # --snorm-scope accept
        if not args.no_learned:
            cfg = NormaliserConfig()
            norm = fit_normaliser(cohort_emb, cohort_lab, model_id=model.model_id, config=cfg)
            learned = norm.z_scores(prb, gal, raw)
            tag = f"learned_k{cfg.top_k}"
            variants[f"{tag}_all"] = (learned, None)
            variants[f"{tag}_accept_only"] = (raw, learned)
            variants[f"{tag}_all_shortlist{shortlist}"] = (_shortlisted(raw, learned, shortlist), None)
        for name, (scores, accept) in variants.items():
            rep = identification_report_from_scores(scores, y[g_rows], y[p_rows], accept)
            rows.setdefault(name, []).append({k: rep[k] for k in ("rank1", "rank5", "dir_at_fpir_0.01")})
    summary = {
        name: {key: float(np.mean([r[key] for r in reps])) for key in reps[0]} for name, reps in rows.items()
    }
    print(json.dumps(summary, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps({"summary": summary, "splits": rows}, indent=2))
    return 0


def _shortlisted(raw: np.ndarray, normed: np.ndarray, n: int) -> np.ndarray:
    """``normed`` on each row's ``n`` highest ``raw`` columns, a floor below every score elsewhere
    (one gallery row per person here, so a column is a person)."""
    out = np.full_like(normed, float(normed.min()) - 1.0)
    top = np.argpartition(-raw, min(n, raw.shape[1]) - 1, axis=1)[:, :n]
    rows = np.arange(raw.shape[0])[:, None]
    out[rows, top] = normed[rows, top]
    return out


if __name__ == "__main__":
    raise SystemExit(main())
