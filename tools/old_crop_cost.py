"""What re-embedding from old small crops costs (for models/MODEL_CARD.md).

    PYTHONPATH=. .venv/bin/python tools/old_crop_cost.py --data ../shared/data/lfw/lfw-deepfunneled \
        --pairs ../shared/data/lfw/pairsDevTest.txt [--model models/default.pt] [--old-size 96]

Galleries of older versions stored each template's aligned crop of the model of the time
(ArcFace framing, 96 px for the scratch model) and nothing else. `faceapp reembed` derives the
new model's crop from it. This script measures, on an LFW pairs file with faceapp's protocol
code, the new model on (a) crops aligned from the photos and (b) crops re-derived from such
old crops, and (c) from the 256-px face pictures this version stores.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--pairs", required=True)
    ap.add_argument("--model", default="models/default.pt")
    ap.add_argument("--old-size", type=int, default=96)
    args = ap.parse_args()

    from faceapp.nn.checkpoint import load_checkpoint
    from faceapp.training.datasets import pick_central_face, read_pairs
    from faceapp.training.evaluation import detector_for
    from faceapp.training.metrics import lfw_folds, verification_report
    from faceapp.vision.alignment import AlignmentTemplate, align_face
    from faceapp.vision.face_image import chip_from_face_image, decode_face_image, extract_face_image
    from faceapp.vision.images import encode_png, load_image

    model = load_checkpoint(args.model)
    detector = detector_for(model)
    pairs = read_pairs(args.pairs, args.data)
    paths = sorted({p.a for p in pairs} | {p.b for p in pairs})
    old_template = AlignmentTemplate.for_size(args.old_size)
    direct, from_old, from_picture, index = [], [], [], {}
    for path in paths:
        image = load_image(path)
        face = pick_central_face(detector.detect(image), image.shape)
        if face is None:
            continue
        index[path] = len(direct)
        direct.append(align_face(image, face, model.template).crop)
        old = decode_face_image(encode_png(align_face(image, face, old_template).crop))
        from_old.append(chip_from_face_image(old, model.template))
        from_picture.append(chip_from_face_image(extract_face_image(image, face), model.template))
    kept = [p for p in pairs if p.a in index and p.b in index]
    ia = np.asarray([index[p.a] for p in kept])
    ib = np.asarray([index[p.b] for p in kept])
    g = np.asarray([p.same for p in kept])
    folds = lfw_folds(g)
    out: dict[str, object] = {"pairs_file": Path(args.pairs).name, "pairs": len(kept),
                              "left_out_pairs": len(pairs) - len(kept), "old_crop": old_template.name}
    for name, crops in (("aligned_from_photo", direct), ("from_old_crops", from_old),
                        ("from_face_pictures", from_picture)):
        emb = model.encoder.embed(np.stack(crops), batch_size=32)
        r = verification_report(np.einsum("nd,nd->n", emb[ia], emb[ib]), g, folds)
        out[name] = {k: round(float(r[k]), 4) for k in ("accuracy", "accuracy_std", "auc",
                                                         "tar_at_far_0.01", "tar_at_far_0.001")}
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
