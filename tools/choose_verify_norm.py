"""Should 1:1 verification decide on the learned normaliser's score? Chosen on LFW DevTrain only.

    PYTHONPATH=. .venv/bin/python tools/choose_verify_norm.py --data ../shared/data/lfw/lfw-deepfunneled \
        --people ../shared/data/lfw/peopleDevTrain.txt [--model models/default.pt] [--cache-dir cache]

DevTrain identities are split at random into two halves (3 splits, the seeds of
``tools/choose_snorm.py``): the learned normaliser (:func:`faceapp.training.open_set.fit_normaliser`,
its defaults) is fitted on one half; on the other half every identity gives at most 20 genuine
pairs and 200,000 random pairs of different people are drawn. Prints, for cosine similarity and
for the normalised score (mean over the splits and each split): ROC AUC, TAR at FAR 1e-2 / 1e-3 /
1e-4 on all pairs, and 10-fold accuracy (τ chosen on 9 folds) on a balanced subset (as many
impostor pairs as genuine ones). DevTest is never used.
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
    ap.add_argument("--impostor-pairs", type=int, default=200_000)
    ap.add_argument("--out", help="also write the summary and per-split rows as JSON here")
    args = ap.parse_args()

    from faceapp.nn.checkpoint import load_checkpoint
    from faceapp.training.evaluation import detected_embeddings
    from faceapp.training.metrics import best_threshold, lfw_folds, roc_auc, tar_at_far
    from faceapp.training.open_set import fit_normaliser

    model = load_checkpoint(args.model)
    emb, lab = detected_embeddings(model, args.data, args.people, args.cache_dir)
    rows: dict[str, list[dict[str, float]]] = {}
    for split in range(args.splits):
        rng = np.random.default_rng(100 + split)
        ids = np.unique(lab)
        fitted_on = np.isin(lab, rng.choice(ids, size=ids.size // 2, replace=False))
        norm = fit_normaliser(emb[fitted_on], lab[fitted_on], model_id=model.model_id)
        e, y = emb[~fitted_on], lab[~fitted_on]
        a, b, same = _pairs(y, args.impostor_pairs, rng)
        cos = np.sum(e[a].astype(np.float64) * e[b], axis=1)
        variants = {"cosine": cos, "learned_snorm": norm.normalise_pairs(e[a], e[b], cos)}
        n_gen = int(same.sum())
        balanced = np.r_[np.flatnonzero(same), rng.choice(np.flatnonzero(~same), n_gen, replace=False)]
        folds = lfw_folds(same[balanced])
        for name, s in variants.items():
            row = {"auc": roc_auc(s, same), "genuine_pairs": n_gen, "impostor_pairs": int((~same).sum())}
            for far in (1e-2, 1e-3, 1e-4):
                row[f"tar_at_far_{far:g}"] = tar_at_far(s, same, far)[0]
            sb, yb = s[balanced], same[balanced]
            acc = [np.mean((sb[folds == j] >= best_threshold(sb[folds != j], yb[folds != j])[0])
                           == yb[folds == j]) for j in range(10)]
            row["balanced_accuracy_10fold"] = float(np.mean(acc))
            rows.setdefault(name, []).append(row)
    summary = {name: {k: float(np.mean([r[k] for r in reps])) for k in reps[0]}
               for name, reps in rows.items()}
    print(json.dumps(summary, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps({"summary": summary, "splits": rows}, indent=2))
    return 0


def _pairs(labels: np.ndarray, n_impostor: int, rng: np.random.Generator
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row pairs (a, b) and same-person flags: at most 20 genuine pairs per identity, then
    ``n_impostor`` random pairs of different identities."""
    ga: list[int] = []
    gb: list[int] = []
    for person in np.unique(labels):
        r = np.flatnonzero(labels == person)
        pairs = [(int(r[i]), int(r[j])) for i in range(r.size) for j in range(i + 1, r.size)]
        for k in rng.permutation(len(pairs))[:20]:
            ga.append(pairs[k][0])
            gb.append(pairs[k][1])
    ia = rng.integers(0, labels.size, 2 * n_impostor)
    ib = rng.integers(0, labels.size, 2 * n_impostor)
    keep = np.flatnonzero(labels[ia] != labels[ib])[:n_impostor]
    a = np.r_[np.asarray(ga, dtype=np.int64), ia[keep]]
    b = np.r_[np.asarray(gb, dtype=np.int64), ib[keep]]
    return a, b, np.r_[np.ones(len(ga), bool), np.zeros(keep.size, bool)]


if __name__ == "__main__":
    raise SystemExit(main())
