"""Fine-tuning the imported dlib ResNet with faceapp's triplet loss and online hard mining.

CPU-friendly: the first layers stay frozen and their outputs are computed once per training
image (and its mirror, the only augmentation); only the last ``train_blocks`` residual blocks
and the fc layer are trained, on those cached activations. Validation runs the whole network
on held-out identities (identity-disjoint split of :func:`faceapp.training.trainer.prepare_data`),
and epoch 0 is the imported model itself, so the best checkpoint is never worse than the start
on validation. Resumable: ``OUT.state`` after every epoch.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from faceapp.errors import FaceappError
from faceapp.nn.checkpoint import LoadedModel, load_checkpoint, save_checkpoint
from faceapp.nn.dlib_resnet import DlibResNet
from faceapp.nn.encoder import Encoder
from faceapp.training.losses import TripletMarginLoss
from faceapp.training.samplers import PKBatchSampler
from faceapp.training.trainer import PreparedData, TrainConfig, make_miner, prepare_data, validate
from faceapp.vision.detection import FaceDetector

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinetuneConfig:
    """Settings of :func:`finetune` (stored in the checkpoint and the resume state).

    ``train_blocks``: trailing residual blocks trained (with the fc layer); 1 = the last
    256-channel down block only, 3 = the whole last 256-channel stage and the final block.
    ``margin`` is in squared L2 units of the unit-length embeddings (0..4).
    """

    base: str
    data: str
    people: str | None
    out: str
    train_blocks: int = 3
    epochs: int = 8
    p: int = 32
    k: int = 4
    lr: float = 1e-4
    weight_decay: float = 1e-4
    margin: float = 0.1
    miner: str = "batch-hard"
    metric: str = "squared_l2"
    val_identities: int = 300
    val_pairs: int = 3000
    seed: int = 0
    cache_dir: str = "cache"
    min_face_size: int = 40
    max_minutes: float | None = None
    max_steps: int | None = None
    batch_size: int = 64

    def __post_init__(self) -> None:
        if not 1 <= self.train_blocks <= 14:
            raise FaceappError(f"train_blocks must be 1..14, got {self.train_blocks}")
        if not self.lr > 0:
            raise FaceappError(f"lr must be > 0, got {self.lr}")


class _Tail(nn.Module):
    """The trained part: (N, C, H, W) cached activations -> (N, 128) unit-length embeddings."""

    def __init__(self, net: DlibResNet, n_blocks: int) -> None:
        super().__init__()
        self.blocks = copy.deepcopy(net.blocks[len(net.blocks) - n_blocks :])
        self.fc = copy.deepcopy(net.fc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.fc(self.blocks(x).mean(dim=(2, 3))), dim=1)


def _frozen_features(net: DlibResNet, encoder: Encoder, crops: torch.Tensor, n_tail: int,
                     batch_size: int, flip: bool) -> torch.Tensor:
    """(N, S, S, 3) uint8 -> (N, C, H, W) float16 activations entering the trained blocks."""
    head = net.blocks[: len(net.blocks) - n_tail]
    out = []
    with torch.inference_mode():
        for i in range(0, len(crops), batch_size):
            x = encoder.preprocess(crops[i : i + batch_size])
            if flip:
                x = torch.flip(x, dims=[3])
            out.append(head(net.features(x)).to(torch.float16))
    return torch.cat(out)


def _cached_features(cfg: FinetuneConfig, base: LoadedModel, data: PreparedData) -> tuple[torch.Tensor, ...]:
    """Frozen activations of the training crops and of their mirrors, (N, C, H, W) float16
    each, kept in ``cache_dir`` (keyed by base model, split point and the crops themselves) so
    that another run on the same data does not recompute them."""
    net = base.encoder.backbone
    if not isinstance(net, DlibResNet):
        raise FaceappError("fine-tuning needs the dlib ResNet backbone")
    h = hashlib.sha1(f"{base.model_id}-{cfg.train_blocks}".encode())
    h.update(data.train_crops.numpy().tobytes())
    path = Path(cfg.cache_dir) / f"finetune-features-{h.hexdigest()[:16]}.pt"
    if path.is_file():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            return blob["plain"], blob["mirror"]
        except (OSError, RuntimeError, KeyError) as err:
            log.warning("ignoring unreadable feature cache %s (%s)", path, err)
    plain = _frozen_features(net, base.encoder, data.train_crops, cfg.train_blocks, cfg.batch_size, False)
    mirror = _frozen_features(net, base.encoder, data.train_crops, cfg.train_blocks, cfg.batch_size, True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    torch.save({"plain": plain, "mirror": mirror}, tmp)
    os.replace(tmp, path)
    return plain, mirror


def _assemble(base: Encoder, tail: _Tail) -> Encoder:
    """A copy of ``base`` with the trained blocks / fc of ``tail`` put back."""
    enc = copy.deepcopy(base)
    net = enc.backbone
    if not isinstance(net, DlibResNet):
        raise FaceappError("fine-tuning needs the dlib ResNet backbone")
    n = len(tail.blocks)
    for i, block in enumerate(tail.blocks):
        net.blocks[len(net.blocks) - n + i].load_state_dict(block.state_dict())
    net.fc.load_state_dict(tail.fc.state_dict())
    return enc.eval()


ProgressFn = Callable[[dict[str, Any]], None]


def finetune(
    cfg: FinetuneConfig,
    *,
    resume: bool = False,
    detector: FaceDetector | None = None,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Fine-tune ``cfg.base`` on ``cfg.data``/``cfg.people``; writes ``cfg.out`` (the best epoch
    on validation AUC, epoch 0 being the base model). Returns the training history."""
    base: LoadedModel = load_checkpoint(cfg.base)
    net = base.encoder.backbone
    if not isinstance(net, DlibResNet):
        raise FaceappError(f"{cfg.base}: fine-tuning needs a dlib ResNet checkpoint (import-pretrained dlib)")
    tcfg = TrainConfig(
        data=cfg.data, people=cfg.people, out=cfg.out, val_identities=cfg.val_identities,
        val_pairs=cfg.val_pairs, seed=cfg.seed, cache_dir=cfg.cache_dir, min_face_size=cfg.min_face_size,
    )
    data: PreparedData = prepare_data(tcfg, detector, template=base.template)
    if data.n_classes < cfg.p:
        raise FaceappError(f"{data.n_classes} training identities: fewer than p = {cfg.p}")
    torch.manual_seed(cfg.seed)
    tail = _Tail(net, cfg.train_blocks)
    optimizer = torch.optim.AdamW(tail.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sampler = PKBatchSampler(data.train_labels.tolist(), cfg.p, cfg.k, seed=cfg.seed)
    out = Path(cfg.out)
    state_path = out.with_name(out.name + ".state")
    history: list[dict[str, Any]] = []
    epoch, step, elapsed, best = 0, 0, 0.0, -1.0
    if resume and state_path.exists():
        blob = torch.load(state_path, map_location="cpu", weights_only=True)
        saved = json.loads(blob["config"])
        limits = ("epochs", "max_minutes", "max_steps", "out", "cache_dir")
        differs = sorted(k for k, v in asdict(cfg).items() if k not in limits and saved.get(k) != v)
        if differs:
            raise FaceappError(f"cannot resume {state_path}: settings differ ({', '.join(differs)})")
        tail.load_state_dict(blob["tail"])
        optimizer.load_state_dict(blob["optimizer"])
        st = json.loads(blob["state"])
        epoch, step, elapsed = st["epoch"], st["step"], st["elapsed"]
        best, history = st["best"], st["history"]
        log.info("resumed fine-tuning at epoch %d", epoch)
    if not history:  # epoch 0: the base model on validation
        row = {"epoch": 0, "step": 0, "minutes": 0.0, **validate(base.encoder, data)}
        history.append(row)
        best = row["val_auc"]
        _save(cfg, base, tail, data, history, row)
        if progress:
            progress(row)
    t_start = time.perf_counter()
    feats, feats_flip = _cached_features(cfg, base, data)
    log.info("frozen activations %s ready in %.0f s", tuple(feats.shape), time.perf_counter() - t_start)
    labels = torch.as_tensor(data.train_labels)
    total_steps = cfg.epochs * len(sampler)
    loss_fn = TripletMarginLoss(make_miner(cfg.miner, cfg.margin, cfg.metric), margin=cfg.margin,
                                metric=cfg.metric)  # type: ignore[arg-type]

    def out_of_time() -> bool:
        if cfg.max_steps is not None and step >= cfg.max_steps:
            return True
        return bool(cfg.max_minutes) and elapsed >= 60 * float(cfg.max_minutes)

    while epoch < cfg.epochs and not out_of_time():
        sampler.set_epoch(epoch)
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        tail.train()
        sums = {"loss": 0.0, "active": 0.0}
        n = 0
        for indices in sampler:
            t0 = time.perf_counter()
            idx = torch.as_tensor(indices)
            mirror = torch.rand(len(idx), generator=gen) < 0.5
            x = torch.where(mirror.view(-1, 1, 1, 1), feats_flip[idx], feats[idx]).float()
            lr = cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, step / max(1, total_steps))))
            for group in optimizer.param_groups:
                group["lr"] = lr
            res = loss_fn(tail(x), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            res.loss.backward()
            optimizer.step()
            step += 1
            n += 1
            elapsed += time.perf_counter() - t0
            sums["loss"] += float(res.loss.detach())
            sums["active"] += res.active_fraction
            if out_of_time():
                break
        epoch += 1
        enc = _assemble(base.encoder, tail.eval())
        row = {"epoch": epoch, "step": step, "minutes": round(elapsed / 60, 2), "lr": lr,
               **{k: v / max(1, n) for k, v in sums.items()}, **validate(enc, data)}
        history.append(row)
        if row["val_auc"] > best:
            best = row["val_auc"]
            _save(cfg, base, tail, data, history, row)
        state = {"epoch": epoch, "step": step, "elapsed": elapsed, "best": best, "history": history}
        blob = {"config": json.dumps(asdict(cfg)), "tail": tail.state_dict(),
                "optimizer": optimizer.state_dict(), "state": json.dumps(state)}
        tmp = state_path.with_name(state_path.name + ".partial")
        torch.save(blob, tmp)
        os.replace(tmp, state_path)
        if progress:
            progress(row)
    return {"out": str(out), "data": data.report, "history": history, "best_val_auc": best}


def _save(cfg: FinetuneConfig, base: LoadedModel, tail: _Tail, data: PreparedData,
          history: list[dict[str, Any]], row: dict[str, Any]) -> None:
    enc = _assemble(base.encoder, tail) if row["epoch"] else base.encoder
    provenance = dict(base.meta.get("provenance", {}))
    provenance["fine_tuned"] = (
        f"from model {base.model_id} with faceapp's triplet loss ({cfg.miner} mining) on "
        f"{Path(cfg.people).name if cfg.people else Path(cfg.data).name}; best epoch {row['epoch']}"
    )
    save_checkpoint(
        cfg.out,
        enc,
        template=base.template,
        provenance=provenance,
        training={"finetune": asdict(cfg), "base_model_id": base.model_id, "data": data.report,
                  "history": list(history), "config": {"min_face_size": cfg.min_face_size}},
        metrics={"validation": {k: row[k] for k in ("epoch", "val_accuracy", "val_auc")}},
    )
