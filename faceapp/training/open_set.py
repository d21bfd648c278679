"""Build the learned open-set score normaliser (:mod:`faceapp.nn.open_set`) from a cohort.

1. :func:`cohort_targets`: for every cohort face, μ and σ of its ``top_k`` highest cosine
   similarities to the cohort's faces **of other people** (what adaptive s-norm would measure
   for a face that is not in the cohort).
2. :func:`fit_normaliser`: a 2-hidden-layer tanh network, (N, D) unit embeddings ->
   standardised (μ, log σ), trained by mean squared error (AdamW, cosine decay).
3. :func:`anchor_to_cosine`: the affine map ``α s' + β`` that puts s' on the cosine scale: the
   τ of FAR 1e-2 and 1e-3 on calibration pairs of the same people are equal for cosine and for
   the normalised score.

Only the network's weights leave this module: the cohort's embeddings are not stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from faceapp.errors import FaceappError
from faceapp.nn.checkpoint import load_checkpoint
from faceapp.nn.open_set import LearnedNormaliser, normaliser_path_for
from faceapp.training.evaluation import detected_embeddings, sample_calibration_pairs
from faceapp.training.metrics import tar_at_far

ANCHOR_FARS = (1e-2, 1e-3)


@dataclass(frozen=True)
class NormaliserConfig:
    """How the network is fitted (defaults chosen on LFW DevTrain only, models/MODEL_CARD.md)."""

    top_k: int = 50
    hidden: int = 64
    epochs: int = 300
    batch: int = 256
    lr: float = 3e-3
    weight_decay: float = 1e-3
    seed: int = 0


def cohort_targets(emb: np.ndarray, labels: np.ndarray, top_k: int,
                   chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """μ, σ ((N,) float64 each) of each row's ``top_k`` highest cosine similarities to the rows
    of *other* identities.

    Args:
        emb: (N, D) float unit rows. labels: (N,) int identity of each row.
    Raises:
        ValueError: some row has fewer than ``top_k`` rows of other identities.
    """
    x = np.asarray(emb, dtype=np.float32)
    y = np.asarray(labels)
    n = x.shape[0]
    if top_k < 2 or n - np.bincount(np.unique(y, return_inverse=True)[1]).max() < top_k:
        raise ValueError(f"top_k {top_k}: some face has fewer faces of other people than that")
    mu = np.empty(n, dtype=np.float64)
    sd = np.empty(n, dtype=np.float64)
    for lo in range(0, n, chunk):
        s = (x[lo:lo + chunk] @ x.T).astype(np.float64)
        s[y[lo:lo + chunk, None] == y[None, :]] = -np.inf
        top = np.partition(s, n - top_k, axis=1)[:, n - top_k:]
        mu[lo:lo + s.shape[0]] = top.mean(axis=1)
        sd[lo:lo + s.shape[0]] = top.std(axis=1)
    return mu, sd


def fit_normaliser(emb: np.ndarray, labels: np.ndarray, *, model_id: str,
                   config: NormaliserConfig = NormaliserConfig(),
                   provenance: dict[str, Any] | None = None) -> LearnedNormaliser:
    """Train the network on (N, D) unit ``emb`` with identities ``labels`` (the cohort).

    Returns a normaliser with the identity map (α = 1, β = 0): see :func:`anchor_to_cosine`.
    """
    mu, sd = cohort_targets(emb, labels, config.top_k)
    log_sd = np.log(np.maximum(sd, 1e-6))
    m0, ms = float(mu.mean()), float(mu.std()) or 1.0
    l0, ls = float(log_sd.mean()), float(log_sd.std()) or 1.0
    gen = torch.Generator().manual_seed(config.seed)
    d, h = int(emb.shape[1]), config.hidden
    net = torch.nn.Sequential(torch.nn.Linear(d, h), torch.nn.Tanh(), torch.nn.Linear(h, h),
                              torch.nn.Tanh(), torch.nn.Linear(h, 2))
    with torch.no_grad():  # seeded initialisation, independent of the global RNG
        for p in net.parameters():
            bound = 1.0 / np.sqrt(p.shape[-1] if p.dim() == 2 else h)  # biases: 1/sqrt(h) (fixed:
            # the shipped score_norm.npz was fitted with it)
            p.copy_(torch.empty_like(p).uniform_(-bound, bound, generator=gen))
    x = torch.as_tensor(np.asarray(emb, dtype=np.float32))
    t = torch.as_tensor(np.stack([(mu - m0) / ms, (log_sd - l0) / ls], axis=1), dtype=torch.float32)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, config.epochs)
    for _ in range(config.epochs):
        order = torch.randperm(x.shape[0], generator=gen)
        for lo in range(0, x.shape[0], config.batch):
            rows = order[lo:lo + config.batch]
            loss = torch.nn.functional.mse_loss(net(x[rows]), t[rows])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    lin = [m for m in net if isinstance(m, torch.nn.Linear)]
    layers = {}
    for i, m in enumerate(lin, start=1):
        layers[f"w{i}"] = m.weight.detach().numpy().T.copy()
        layers[f"b{i}"] = m.bias.detach().numpy().copy()
    meta = {"model_id": model_id, "alpha": 1.0, "beta": 0.0, "mu_mean": m0, "mu_scale": ms,
            "logstd_mean": l0, "logstd_scale": ls, "top_k": config.top_k,
            "config": config.__dict__, "source": provenance or {}}
    return LearnedNormaliser(layers, meta)


def anchor_to_cosine(norm: LearnedNormaliser, a: np.ndarray, b: np.ndarray,
                     same: np.ndarray) -> tuple[LearnedNormaliser, dict[str, Any]]:
    """The normaliser with α, β set so that τ(FAR 1e-2) and τ(FAR 1e-3) of cosine similarity
    and of the mapped normalised score coincide on the row-wise pairs (a[i], b[i]) ((M, D)
    unit rows each, ``same`` (M,) bool). Returns it and the thresholds it was fitted on.

    Raises:
        FaceappError: the pairs cannot separate the two operating points (too few impostors).
    """
    cos = np.sum(np.asarray(a, np.float64) * np.asarray(b, np.float64), axis=1)
    z = norm.z_pairs(a, b, cos)  # s'
    tc = [tar_at_far(cos, same, far)[1] for far in ANCHOR_FARS]
    tz = [tar_at_far(z, same, far)[1] for far in ANCHOR_FARS]
    if not (tz[1] > tz[0] and tc[1] > tc[0]):
        raise FaceappError("calibration pairs too few to tell FAR 1e-2 from 1e-3")
    alpha = (tc[1] - tc[0]) / (tz[1] - tz[0])
    beta = tc[0] - alpha * tz[0]
    anchor = {"cosine_tau": tc, "far": list(ANCHOR_FARS), "pairs": int(same.size),
              "impostor_pairs": int((~same).sum())}
    return norm.with_map(alpha, beta, anchor=anchor), anchor


def make_normaliser_cli(model_path: Path, data: str, people: str, *, out: str | None,
                        cache_dir: str, impostor_pairs: int = 200_000, genuine_per_person: int = 50,
                        config: NormaliserConfig = NormaliserConfig()) -> dict[str, Any]:
    """``faceapp make-normaliser``: fit on every detected face of ``people`` (the model's own
    embedding, flip-TTA included), anchor on calibration pairs of the same people (the sample
    ``faceapp calibrate-model`` draws), write ``score_norm.npz`` beside the model (or ``out``)."""
    model = load_checkpoint(model_path)
    emb, labels = detected_embeddings(model, data, people, cache_dir)
    if np.unique(labels).size < 10:
        raise FaceappError(f"{people}: {np.unique(labels).size} identities with a detected face; "
                           "a cohort needs many people")
    source = {"method": "faceapp make-normaliser", "data": Path(data).name, "people": Path(people).name,
              "identities": int(np.unique(labels).size), "images": int(labels.size)}
    try:
        norm = fit_normaliser(emb, labels, model_id=model.model_id, config=config, provenance=source)
    except ValueError as err:
        raise FaceappError(f"{people}: {err}") from None
    a, b, same = sample_calibration_pairs(labels, impostor_pairs=impostor_pairs,
                                          genuine_per_person=genuine_per_person)
    norm, anchor = anchor_to_cosine(norm, emb[a], emb[b], same)
    path = norm.save(out if out else normaliser_path_for(model_path))
    return {"normaliser": str(path), "model_id": model.model_id, "source": source, "anchor": anchor,
            "alpha": norm.alpha, "beta": norm.beta}
