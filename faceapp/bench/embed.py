"""``faceapp bench embed``: aligned crops embedded per second by the model (as configured,
flip-TTA included) at batch 1 and 32 (``embed.per_s_b1``, ``embed.per_s_b32``), against
facenet-pytorch's InceptionResnetV1 (random weights, 160×160) in the same run
(``embed.baseline_*``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from faceapp.bench.stats import time_call
from faceapp.nn.checkpoint import LoadedModel


def bench_embed(model: LoadedModel, *, quick: bool = False, seed: int = 0) -> dict[str, Any]:
    """Embeddings per second at batch 1 and 32: ``model`` vs InceptionResnetV1 (random)."""
    from facenet_pytorch import InceptionResnetV1

    reps, seconds = (1, 0.0) if quick else (20, 3.0)
    warm = not quick
    rng = np.random.default_rng(seed)
    size = model.encoder.input_size
    crops32 = rng.integers(0, 256, size=(32, size, size, 3), dtype=np.uint8)
    encoder = model.encoder.eval()
    ours_b1 = time_call(lambda: encoder.embed(crops32[:1]), min_reps=reps * 5, min_seconds=seconds)
    ours_b32 = time_call(lambda: encoder.embed(crops32), min_reps=reps, min_seconds=seconds, warmup=warm)

    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        net = InceptionResnetV1(pretrained=None, classify=False).eval()
    finally:
        torch.random.set_rng_state(gen_state)
    base32 = rng.integers(0, 256, size=(32, 160, 160, 3), dtype=np.uint8)

    def baseline(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(batch).permute(0, 3, 1, 2).float()
            x = (x - 127.5) / 128.0  # facenet-pytorch's fixed_image_standardization
            return net(x).numpy()

    base_b1 = time_call(lambda: baseline(base32[:1]), min_reps=reps * 5, min_seconds=seconds)
    base_b32 = time_call(lambda: baseline(base32), min_reps=reps, min_seconds=seconds, warmup=warm)
    cfg = model.encoder.config
    out = {
        "per_s_b1": round(1.0 / ours_b1, 2),
        "per_s_b32": round(32.0 / ours_b32, 2),
        "baseline_per_s_b1": round(1.0 / base_b1, 2),
        "baseline_per_s_b32": round(32.0 / base_b32, 2),
        "model": {
            "model_id": model.model_id,
            "backbone": cfg.backbone,
            "input_size": cfg.input_size,
            "embedding_dim": cfg.embedding_dim,
            "flip_tta": cfg.flip_tta,
            "parameters": int(sum(p.numel() for p in encoder.parameters())),
        },
        "baseline_model": "facenet-pytorch InceptionResnetV1, random weights, 160x160 -> 512-D",
        "baseline_parameters": int(sum(p.numel() for p in net.parameters())),
    }
    out["ratio_b1"] = round(out["per_s_b1"] / out["baseline_per_s_b1"], 2)
    out["ratio_b32"] = round(out["per_s_b32"] / out["baseline_per_s_b32"], 2)
    return out
