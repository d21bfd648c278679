"""How many strangers a 1:K search accepts, by gallery size and τ (for models/MODEL_CARD.md).

    PYTHONPATH=. .venv/bin/python tools/fpir_by_gallery_size.py --data ../shared/data/lfw/lfw-deepfunneled \
        --people ../shared/data/lfw/peopleDevTest.txt [--model models/default.pt] [--cache-dir cache]

For each gallery size G, ``--repeats`` random galleries of G identities (their first detected
image each) are searched by every image of the other identities (strangers); FPIR is the share
of strangers whose best score reaches τ, for τ at each calibrated FAR point of the model's
``calibration.json``, with cosine similarity and with the model's open-set normaliser
(``score_norm.npz``: the score 1:K decides on). Mean over the repeats, printed as JSON.
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
    ap.add_argument("--sizes", default="5,10,25,100")
    ap.add_argument("--repeats", type=int, default=40)
    args = ap.parse_args()

    from faceapp.nn.calibration import Calibration
    from faceapp.nn.checkpoint import load_checkpoint
    from faceapp.nn.open_set import normaliser_for
    from faceapp.training.evaluation import detected_embeddings

    model = load_checkpoint(args.model)
    cal = Calibration.load_for(args.model, model.model_id)
    norm = normaliser_for(args.model, model.model_id)
    emb, lab = detected_embeddings(model, args.data, args.people, args.cache_dir)
    ids = np.unique(lab)
    points = [p for p in ("far_0.01", "far_0.001", "far_0.0001", "far_1e-05") if p in cal.scorers["distance"]]
    taus = {p: cal.calibrated_threshold("distance", p) for p in points}
    rng = np.random.default_rng(0)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for g_size in (int(x) for x in args.sizes.split(",")):
        acc: dict[str, list[list[float]]] = {p: [[], []] for p in points}
        for _ in range(args.repeats):
            gal_ids = rng.choice(ids, g_size, replace=False)
            g = np.array([np.flatnonzero(lab == c)[0] for c in gal_ids])
            p_rows = np.flatnonzero(~np.isin(lab, gal_ids))
            cos = emb[p_rows] @ emb[g].T
            normed = norm.normalise(emb[p_rows], emb[g], cos)
            for p, t in taus.items():
                acc[p][0].append(float((cos.max(axis=1) >= t).mean()))
                acc[p][1].append(float((normed.max(axis=1) >= t).mean()))
        out[str(g_size)] = {p: {"tau": round(taus[p], 4), "fpir_cosine": round(float(np.mean(a)), 4),
                                norm.name: round(float(np.mean(b)), 4)} for p, (a, b) in acc.items()}
    print(json.dumps({"model_id": model.model_id, "people": Path(args.people).name,
                      "repeats": args.repeats, "fpir": out}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
