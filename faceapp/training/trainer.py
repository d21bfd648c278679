"""Training loop: triplet loss with online mining (+ an optional auxiliary CosFace loss).

Schedule and safeguards:
- the chosen miner (batch-hard, semi-hard or batch-all) runs after ``warmup_epochs`` of
  ``warmup_miner`` (batch-all by default): hard mining from random weights is what makes
  embeddings collapse;
- learning-rate warm-up, then cosine decay over the run, where progress is the larger of
  step/total-steps and elapsed/``max_minutes`` (so a time-boxed run still anneals);
- collapse detection: when the mean pairwise distance of the batch embeddings stays below
  ``collapse_spread`` for ``collapse_patience`` steps, training falls back to batch-all
  for ``warmup_epochs`` epochs and halves the learning rate (logged as an event);
- an auxiliary CosFace classifier over the training identities (weight ``aux_weight``,
  0 disables it) uses every image, singletons included.

Every epoch: validation on pairs of identities held out of training (identity-disjoint),
the best model kept at ``out``, a resumable state at ``out`` + ``.state``, one JSON line and
one CSV row of metrics in ``out`` + ``.log.jsonl`` / ``.log.csv``. Seeds are fixed.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from faceapp.config import DetectorConfig
from faceapp.errors import FaceappError
from faceapp.nn.checkpoint import save_checkpoint
from faceapp.nn.encoder import Encoder, EncoderConfig
from faceapp.training.augment import AugmentConfig, augment_batch
from faceapp.training.datasets import (
    STATUS_DETECTED,
    build_crop_cache,
    read_people,
    scan_identity_folders,
)
from faceapp.training.losses import TripletMarginLoss, embedding_spread
from faceapp.training.metrics import best_threshold, roc_auc
from faceapp.training.miners import BatchAllMiner, BatchHardMiner, Miner, SemiHardMiner
from faceapp.training.samplers import PKBatchSampler
from faceapp.vision.alignment import AlignmentTemplate
from faceapp.vision.detection import FaceDetector

log = logging.getLogger(__name__)

MINERS = ("batch-hard", "semi-hard", "batch-all")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (stored in the checkpoint)."""

    data: str
    people: str | None
    out: str
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    miner: str = "batch-hard"
    margin: float = 0.2
    metric: str = "squared_l2"
    soft_margin: bool = False
    warmup_miner: str = "batch-all"
    warmup_epochs: int = 2
    epochs: int = 30
    max_minutes: float | None = None
    p: int = 24
    k: int = 4
    extra_singletons: int = 16
    lr: float = 2e-3
    weight_decay: float = 5e-2
    lr_warmup_steps: int = 200
    aux_weight: float = 1.0
    aux_scale: float = 24.0
    aux_margin: float = 0.2
    val_identities: int = 100
    val_pairs: int = 600
    collapse_spread: float = 0.1
    collapse_patience: int = 25
    seed: int = 0
    threads: int = 0
    cache_dir: str = "cache"
    min_face_size: int = 40
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    max_steps: int | None = None

    def __post_init__(self) -> None:
        for m in (self.miner, self.warmup_miner):
            if m not in MINERS:
                raise FaceappError(f"unknown miner {m!r} (choose from {', '.join(MINERS)})")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["encoder"] = self.encoder.to_dict()
        return d


def make_miner(name: str, margin: float, metric: str) -> Miner:
    if name == "batch-hard":
        return BatchHardMiner(metric=metric)  # type: ignore[arg-type]
    if name == "semi-hard":
        return SemiHardMiner(margin=margin, metric=metric)  # type: ignore[arg-type]
    return BatchAllMiner(metric=metric)  # type: ignore[arg-type]


class CosFaceClassifier(nn.Module):
    """Large-margin cosine classifier over identities: s·(cos θ_y − m) for the true class.

    Input (N, D) L2-normalised embeddings, (N,) labels -> scalar cross-entropy loss.
    """

    def __init__(self, dim: int, n_classes: int, scale: float, margin: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_classes, dim) * 0.01)
        self.scale = scale
        self.margin = margin

    def forward(self, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cos = F.normalize(emb, dim=1) @ F.normalize(self.weight, dim=1).T
        logits = self.scale * (cos - self.margin * F.one_hot(labels, cos.shape[1]).to(cos.dtype))
        return F.cross_entropy(logits, labels)


@dataclass
class PreparedData:
    """Aligned training crops and the held-out validation pairs."""

    train_crops: torch.Tensor  # (N, S, S, 3) uint8
    train_labels: np.ndarray  # (N,) int64, contiguous 0..C-1
    n_classes: int
    val_crops: np.ndarray  # (M, S, S, 3) uint8
    val_pairs: np.ndarray  # (P, 2) int64 indices into val_crops
    val_same: np.ndarray  # (P,) bool
    report: dict[str, Any]


def prepare_data(
    cfg: TrainConfig, detector: FaceDetector | None = None, template: AlignmentTemplate | None = None
) -> PreparedData:
    """Detect/align (cached), drop undetected images, split off validation identities.

    ``template``: the crops' alignment (default: the ArcFace one at the encoder's input size).
    """
    people = list(read_people(cfg.people)) if cfg.people else None
    images = scan_identity_folders(cfg.data, people)
    template = template or AlignmentTemplate.for_size(cfg.encoder.input_size)
    detector = detector or FaceDetector(DetectorConfig(min_face_size=cfg.min_face_size))
    name = Path(cfg.people).stem.lower() if cfg.people else Path(cfg.data).name
    crops = build_crop_cache(list(images.paths), template, detector, cfg.cache_dir, name=name)
    keep = crops.status == STATUS_DETECTED
    labels = images.labels[keep]
    arr = crops.crops[keep]
    rng = np.random.default_rng(cfg.seed)
    ids, counts = np.unique(labels, return_counts=True)
    # validation identities: 2-20 images each, so that no large identity leaves training
    multi = ids[(counts >= 2) & (counts <= 20)]
    n_val = min(cfg.val_identities, len(multi) // 3)
    val_ids = set(rng.choice(multi, size=n_val, replace=False).tolist()) if n_val >= 2 else set()
    is_val = np.isin(labels, list(val_ids))
    val_crops, val_labels = arr[is_val], labels[is_val]
    tr_labels_raw = labels[~is_val]
    _, tr_labels = np.unique(tr_labels_raw, return_inverse=True)
    pairs, same = _validation_pairs(val_labels, cfg.val_pairs, rng)
    report = {
        "images": len(images.paths),
        "identities": len(images.names),
        "undetected_skipped": int((~keep).sum()),
        "train_images": int((~is_val).sum()),
        "train_identities": len(np.unique(tr_labels)),
        "val_identities": len(val_ids),
        "val_images": int(is_val.sum()),
        "val_pairs": len(pairs),
    }
    return PreparedData(
        train_crops=torch.from_numpy(np.ascontiguousarray(arr[~is_val])),
        train_labels=tr_labels.astype(np.int64),
        n_classes=int(tr_labels.max()) + 1 if len(tr_labels) else 0,
        val_crops=val_crops,
        val_pairs=pairs,
        val_same=same,
        report=report,
    )


def _validation_pairs(
    labels: np.ndarray, n_pairs: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Balanced genuine / impostor index pairs among ``labels`` (identity-disjoint from training)."""
    if len(labels) < 2:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=bool)
    genuine = [
        (i, j) for i in range(len(labels)) for j in range(i + 1, len(labels)) if labels[i] == labels[j]
    ]
    rng.shuffle(genuine)
    genuine = genuine[: n_pairs // 2]
    impostor: set[tuple[int, int]] = set()
    tries = 0
    while len(impostor) < len(genuine) and tries < 100 * n_pairs:
        i, j = (int(v) for v in rng.integers(0, len(labels), size=2))
        tries += 1
        if labels[i] != labels[j]:
            impostor.add((min(i, j), max(i, j)))
    pairs = np.asarray(genuine + sorted(impostor), dtype=np.int64).reshape(-1, 2)
    same = np.asarray([True] * len(genuine) + [False] * len(impostor))
    return pairs, same


def validate(encoder: Encoder, data: PreparedData) -> dict[str, float]:
    """Accuracy at the best threshold and ROC AUC on the held-out pairs (cosine similarity)."""
    if len(data.val_pairs) == 0:
        return {"val_accuracy": float("nan"), "val_auc": float("nan")}
    emb = encoder.embed(data.val_crops)
    scores = np.einsum("nd,nd->n", emb[data.val_pairs[:, 0]], emb[data.val_pairs[:, 1]])
    _, acc = best_threshold(scores, data.val_same)
    return {"val_accuracy": float(acc), "val_auc": float(roc_auc(scores, data.val_same))}


@dataclass
class _State:
    epoch: int = 0
    step: int = 0
    elapsed: float = 0.0
    best: float = -1.0
    fallback_until_epoch: int = -1
    lr_scale: float = 1.0
    events: list[str] = field(default_factory=list)


ProgressFn = Callable[[dict[str, Any]], None]

# Settings that only bound or place a run: a resume may change them.
_RUN_LIMITS = ("max_minutes", "max_steps", "epochs", "out", "threads", "cache_dir")


class Trainer:
    """Runs :class:`TrainConfig` to completion (or to ``max_minutes``), resumable."""

    def __init__(self, cfg: TrainConfig, data: PreparedData) -> None:
        self.cfg = cfg
        self.data = data
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.encoder = Encoder(cfg.encoder)
        self.classifier = (
            CosFaceClassifier(cfg.encoder.embedding_dim, data.n_classes, cfg.aux_scale, cfg.aux_margin)
            if cfg.aux_weight > 0 and data.n_classes > 1
            else None
        )
        params = list(self.encoder.parameters()) + (
            list(self.classifier.parameters()) if self.classifier else []
        )
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        try:
            self.sampler = PKBatchSampler(data.train_labels.tolist(), cfg.p, cfg.k, seed=cfg.seed)
        except ValueError as err:  # too few identities for P x K batches, or bad p / k
            raise FaceappError(f"cannot build P x K batches from the training data: {err}") from None
        self.singletons = np.flatnonzero(np.bincount(data.train_labels)[data.train_labels] == 1)
        self.state = _State()
        self.out = Path(cfg.out)
        self.state_path = self.out.with_name(self.out.name + ".state")
        self.log_jsonl = self.out.with_name(self.out.name + ".log.jsonl")
        self.log_csv = self.out.with_name(self.out.name + ".log.csv")

    # -- persistence -------------------------------------------------------------------
    def save_state(self) -> None:
        blob = {
            "config": json.dumps(self.cfg.to_dict()),
            "encoder": self.encoder.state_dict(),
            "classifier": self.classifier.state_dict() if self.classifier else {},
            "optimizer": self.optimizer.state_dict(),
            "state": json.dumps(asdict(self.state)),
        }
        tmp = self.state_path.with_name(self.state_path.name + ".partial")
        torch.save(blob, tmp)
        os.replace(tmp, self.state_path)

    def load_state(self) -> bool:
        if not self.state_path.exists():
            return False
        blob = torch.load(self.state_path, map_location="cpu", weights_only=True)
        saved = json.loads(blob["config"])
        now = self.cfg.to_dict()
        differs = {k for k in now if k not in _RUN_LIMITS and saved.get(k) != now[k]}
        if differs:
            raise FaceappError(
                f"cannot resume {self.state_path}: settings differ ({', '.join(sorted(differs))})"
            )
        self.encoder.load_state_dict(blob["encoder"])
        if self.classifier is not None:
            self.classifier.load_state_dict(blob["classifier"])
        self.optimizer.load_state_dict(blob["optimizer"])
        self.state = _State(**json.loads(blob["state"]))
        log.info(
            "resumed at epoch %d step %d (%.1f min)",
            self.state.epoch,
            self.state.step,
            self.state.elapsed / 60,
        )
        return True

    # -- schedule ------------------------------------------------------------------------
    def _progress(self) -> float:
        total = self.cfg.epochs * len(self.sampler)
        p = self.state.step / max(1, total)
        if self.cfg.max_minutes:
            p = max(p, self.state.elapsed / (60 * self.cfg.max_minutes))
        return min(1.0, p)

    def _lr(self) -> float:
        warm = min(1.0, (self.state.step + 1) / max(1, self.cfg.lr_warmup_steps))
        cosine = 0.5 * (1 + math.cos(math.pi * self._progress()))
        return self.cfg.lr * warm * (0.02 + 0.98 * cosine) * self.state.lr_scale

    def _miner_name(self) -> str:
        if self.state.epoch < self.cfg.warmup_epochs or self.state.epoch <= self.state.fallback_until_epoch:
            return self.cfg.warmup_miner
        return self.cfg.miner

    def _out_of_time(self) -> bool:
        if self.cfg.max_steps is not None and self.state.step >= self.cfg.max_steps:
            return True
        return bool(self.cfg.max_minutes) and self.state.elapsed >= 60 * float(self.cfg.max_minutes)

    # -- loop ----------------------------------------------------------------------------
    def _batch(self, indices: list[int], gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        idx = list(indices)
        if self.cfg.extra_singletons and len(self.singletons):
            pick = torch.randint(0, len(self.singletons), (self.cfg.extra_singletons,), generator=gen)
            idx += self.singletons[pick.numpy()].tolist()
        crops = self.data.train_crops[idx]
        x = crops.permute(0, 3, 1, 2).float().div_(255.0)
        x = augment_batch(x, self.cfg.augment, gen)
        x = (x - self.cfg.encoder.mean) / self.cfg.encoder.std
        return x.contiguous(memory_format=torch.channels_last), torch.as_tensor(self.data.train_labels[idx])

    def run(
        self, progress: ProgressFn | None = None, should_stop: Callable[[], bool] | None = None
    ) -> dict[str, Any]:
        """Train until ``epochs`` or ``max_minutes``; returns the last epoch's log row."""
        cfg = self.cfg
        self.encoder = self.encoder.to(memory_format=torch.channels_last)
        last_row: dict[str, Any] = {}
        low_spread = 0
        while self.state.epoch < cfg.epochs and not self._out_of_time():
            epoch = self.state.epoch
            self.sampler.set_epoch(epoch)
            gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
            miner_name = self._miner_name()
            loss_fn = TripletMarginLoss(
                make_miner(miner_name, cfg.margin, cfg.metric),
                margin=cfg.margin,
                metric=cfg.metric,  # type: ignore[arg-type]
                soft=cfg.soft_margin,
                reduction="mean_active" if miner_name == "batch-all" else "mean",
            )
            self.encoder.train()
            sums = {"loss": 0.0, "triplet": 0.0, "aux": 0.0, "active": 0.0, "spread": 0.0}
            n_steps, n_images, t_epoch = 0, 0, time.perf_counter()
            for indices in self.sampler:
                t0 = time.perf_counter()
                x, y = self._batch(indices, gen)
                for group in self.optimizer.param_groups:
                    group["lr"] = self._lr()
                emb = self.encoder(x)
                out = loss_fn(emb, y)
                loss = out.loss
                aux = torch.zeros(())
                if self.classifier is not None:
                    aux = self.classifier(emb, y)
                    loss = loss + cfg.aux_weight * aux
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                spread = embedding_spread(emb.detach())
                self.state.step += 1
                self.state.elapsed += time.perf_counter() - t0
                n_steps += 1
                n_images += len(x)
                for key, val in (
                    ("loss", float(loss.detach())),
                    ("triplet", float(out.loss.detach())),
                    ("aux", float(aux.detach())),
                    ("active", out.active_fraction),
                    ("spread", spread),
                ):
                    sums[key] += val
                low_spread = low_spread + 1 if spread < cfg.collapse_spread else 0
                if low_spread >= cfg.collapse_patience and miner_name != cfg.warmup_miner:
                    msg = (
                        f"collapse detected at step {self.state.step} (spread {spread:.3f} < "
                        f"{cfg.collapse_spread} for {low_spread} steps, active {out.active_fraction:.2f}): "
                        f"{cfg.warmup_miner} for {max(1, cfg.warmup_epochs)} epoch(s), lr halved"
                    )
                    log.warning(msg)
                    self.state.events.append(msg)
                    self.state.fallback_until_epoch = epoch + max(1, cfg.warmup_epochs)
                    self.state.lr_scale *= 0.5
                    low_spread = 0
                    break
                if progress is not None:
                    progress(
                        {
                            "epoch": epoch,
                            "step": self.state.step,
                            "steps_in_epoch": len(self.sampler),
                            "loss": float(loss.detach()),
                            "active": out.active_fraction,
                            "images_per_s": len(x) / max(1e-9, time.perf_counter() - t0),
                            "miner": miner_name,
                        }
                    )
                if self._out_of_time() or (should_stop is not None and should_stop()):
                    break
            metrics = validate(self.encoder, self.data)
            row: dict[str, Any] = {
                "epoch": epoch,
                "step": self.state.step,
                "minutes": round(self.state.elapsed / 60, 2),
                "miner": miner_name,
                "lr": self._lr(),
                **{k: v / max(1, n_steps) for k, v in sums.items()},
                "images_per_s": n_images / max(1e-9, time.perf_counter() - t_epoch),
                **metrics,
            }
            self.state.epoch += 1
            # No validation pairs (too few held-out identities): keep the latest model.
            improved = math.isnan(metrics["val_accuracy"]) or metrics["val_accuracy"] >= self.state.best
            if improved:
                if not math.isnan(metrics["val_accuracy"]):
                    self.state.best = metrics["val_accuracy"]
                self._save_model(row)
            row["best"] = improved
            self._log(row)
            self.save_state()
            last_row = row
            if should_stop is not None and should_stop():
                break
        return last_row

    def _save_model(self, row: dict[str, Any]) -> None:
        save_checkpoint(
            self.out,
            self.encoder,
            training={
                "config": self.cfg.to_dict(),
                "data": self.data.report,
                "events": list(self.state.events),
            },
            metrics={"validation": {k: row[k] for k in ("epoch", "val_accuracy", "val_auc", "minutes")}},
        )

    def _log(self, row: dict[str, Any]) -> None:
        with self.log_jsonl.open("a") as f:
            f.write(json.dumps(row) + "\n")
        new = not self.log_csv.exists()
        with self.log_csv.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(row))
            if new:
                w.writeheader()
            w.writerow(row)


def train(
    cfg: TrainConfig,
    *,
    resume: bool = False,
    progress: ProgressFn | None = None,
    detector: FaceDetector | None = None,
) -> dict[str, Any]:
    """Prepare data, build a :class:`Trainer`, optionally resume, run. Returns the last log row."""
    data = prepare_data(cfg, detector)
    log.info("training data: %s", data.report)
    trainer = Trainer(cfg, data)
    if resume:
        trainer.load_state()
    elif trainer.state_path.exists():
        raise FaceappError(f"{trainer.state_path} exists: pass --resume to continue, or delete it")
    return trainer.run(progress)


def with_overrides(cfg: TrainConfig, **kw: Any) -> TrainConfig:
    return replace(cfg, **kw)
