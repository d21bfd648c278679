"""Side-by-side with dlib itself on an LFW pairs file (for models/MODEL_CARD.md).

    PYTHONPATH=. .venv/bin/python tools/compare_dlib.py \
        --data ../shared/data/lfw/lfw-deepfunneled --pairs ../shared/data/lfw/pairsDevTest.txt \
        [--model models/default.pt] [--cache-dir cache] [--out FILE.json]

Measures, on the same pairs and with faceapp's own 10-fold protocol code:
  * dlib's own pipeline (dlib-bin): its HOG face detector, its 5-point shape predictor
    (``shape_predictor_5_face_landmarks.dat`` of face_recognition_models), ``get_face_chip``
    (150 px, padding 0.25) and ``compute_face_descriptor``; Euclidean distance;
  * faceapp's pipeline: MTCNN, the checkpoint's alignment template, faceapp's encoder;
  * dlib's network on faceapp's chips, and the largest difference between its descriptors and
    faceapp's (the port's equivalence on every image of the pairs file).
dlib-bin is a test-only dependency (``pip install -e '.[test]'``); faceapp never needs it.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import time
from pathlib import Path

import numpy as np
import torch


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--pairs", required=True)
    ap.add_argument("--model", default="models/default.pt")
    ap.add_argument("--cache-dir", default="cache")
    ap.add_argument("--out")
    args = ap.parse_args()

    import dlib

    from faceapp.nn.checkpoint import load_checkpoint
    from faceapp.nn.pretrained import locate_dlib_model
    from faceapp.training.datasets import read_pairs
    from faceapp.training.evaluation import crops_for
    from faceapp.training.metrics import lfw_folds, verification_report
    from faceapp.vision.images import load_image

    pairs = read_pairs(args.pairs, args.data)
    same = np.asarray([p.same for p in pairs])
    folds = lfw_folds(same)
    paths = sorted({p.a for p in pairs} | {p.b for p in pairs})
    index = {p: i for i, p in enumerate(paths)}
    ia = np.asarray([index[p.a] for p in pairs])
    ib = np.asarray([index[p.b] for p in pairs])

    dist = importlib.metadata.distribution("face_recognition_models")
    predictor_path = dist.locate_file("face_recognition_models/models/shape_predictor_5_face_landmarks.dat")
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(predictor_path))
    net = dlib.face_recognition_model_v1(str(locate_dlib_model()))

    # dlib's own pipeline
    t0 = time.perf_counter()
    dlib_chips, fallback = [], 0
    for path in paths:
        img = load_image(path)
        rects = detector(img, 1)
        h, w = img.shape[:2]
        if len(rects):
            rect = min(rects, key=lambda r: (r.center().x - w / 2) ** 2 + (r.center().y - h / 2) ** 2)
        else:  # no face found: the central quarter, as LFW faces are centred
            fallback += 1
            rect = dlib.rectangle(w // 4, h // 4, 3 * w // 4, 3 * h // 4)
        dlib_chips.append(dlib.get_face_chip(img, predictor(img, rect), size=150, padding=0.25))
    t_prep = time.perf_counter() - t0
    t0 = time.perf_counter()
    dlib_desc = np.stack([np.asarray(net.compute_face_descriptor(c)) for c in dlib_chips])
    t_dlib_embed = time.perf_counter() - t0

    # faceapp's pipeline and dlib's network on faceapp's chips
    model = load_checkpoint(args.model)
    crops = crops_for(model, paths, args.cache_dir, Path(args.pairs).stem.lower())
    t0 = time.perf_counter()
    ours = model.encoder.embed(crops.crops, batch_size=32)
    t_ours = time.perf_counter() - t0
    with torch.inference_mode():
        raw = np.concatenate([
            model.encoder.raw(model.encoder.preprocess(crops.crops[i : i + 64])).double().numpy()
            for i in range(0, len(paths), 64)
        ])
    dlib_on_ours = np.stack([np.asarray(net.compute_face_descriptor(c)) for c in crops.crops])

    def report(emb: np.ndarray, euclid: bool) -> dict[str, float]:
        if euclid:
            scores = -np.linalg.norm(emb[ia] - emb[ib], axis=1)
        else:
            scores = np.einsum("nd,nd->n", emb[ia], emb[ib])
        r = verification_report(scores, same, folds)
        return {k: round(float(r[k]), 4) for k in ("accuracy", "accuracy_std", "auc", "tar_at_far_0.01",
                                                   "tar_at_far_0.001")}

    counts = crops.counts()
    result = {
        "pairs_file": Path(args.pairs).name,
        "pairs": len(pairs),
        "images": len(paths),
        "dlib_pipeline": {**report(dlib_desc, True), "images_without_dlib_face": fallback,
                          "seconds_detect_align": round(t_prep, 1),
                          "embeddings_per_s": round(len(paths) / t_dlib_embed, 1)},
        "dlib_network_on_faceapp_chips": report(dlib_on_ours, True),
        "faceapp": {**report(ours, False), "model_id": model.model_id,
                    "flip_tta": model.encoder.config.flip_tta,
                    "images_without_detected_face": int(counts["fallback"] + counts["failed"]),
                    "embeddings_per_s_batch32": round(len(paths) / t_ours, 1)},
        "max_abs_descriptor_difference": float(np.abs(raw - dlib_on_ours).max()),
        "threads": torch.get_num_threads(),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
