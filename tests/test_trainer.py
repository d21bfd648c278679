"""The trainer on real faces: a tiny encoder, a handful of LFW identities, a few dozen steps.

The identity-folder tree is built in ``tmp_path`` from symlinks to real LFW-deepfunneled images
(never copied into the repo). MTCNN is replaced by :class:`TemplateDetector`, which places one
face at the median MTCNN landmarks of LFW-deepfunneled images (LFW's deep-funnelled faces are
centred and aligned, so this is what MTCNN finds on them, give or take a few pixels): MTCNN
costs ~0.5 s an image on the shared CPU, the trainer is what is tested here.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fakes import PEOPLE, TemplateDetector

from faceapp.errors import FaceappError
from faceapp.nn.checkpoint import load_checkpoint
from faceapp.nn.encoder import EncoderConfig
from faceapp.training.augment import AugmentConfig
from faceapp.training.datasets import build_crop_cache, scan_identity_folders
from faceapp.training.trainer import PreparedData, TrainConfig, Trainer, prepare_data, train
from faceapp.vision.alignment import AlignmentTemplate

NO_AUGMENT = AugmentConfig(
    flip=0, scale=0, rotate_deg=0, translate=0, brightness=0, contrast=0, saturation=0, grey=0
)
TINY = EncoderConfig(input_size=32, embedding_dim=16, width=8, layers=(1, 1, 1, 1))


def make_cfg(root: Path, out: Path, **kw: Any) -> TrainConfig:
    base: dict[str, Any] = {
        "data": str(root),
        "people": None,
        "out": str(out),
        "encoder": TINY,
        "miner": "batch-all",
        "warmup_epochs": 0,
        "epochs": 1000,
        "p": 4,
        "k": 4,
        "extra_singletons": 0,
        "lr": 2e-3,
        "lr_warmup_steps": 3,
        "aux_weight": 0.0,
        "val_identities": 2,
        "val_pairs": 40,
        "cache_dir": str(out.parent / "cache"),
        "augment": NO_AUGMENT,
        "threads": 1,
    }
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def prepared(lfw_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainConfig, PreparedData]:
    cfg = make_cfg(lfw_tree, tmp_path_factory.mktemp("prep") / "m.pt")
    return cfg, prepare_data(cfg, TemplateDetector())


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_prepare_data_identity_disjoint(lfw_tree: Path, prepared: tuple[TrainConfig, PreparedData]) -> None:
    cfg, data = prepared
    images = scan_identity_folders(lfw_tree)
    n_images = len(images.paths)
    assert data.report["images"] == n_images and data.report["identities"] == len(PEOPLE)
    assert data.report["undetected_skipped"] == 1  # the blank image, reported and skipped
    assert data.report["val_identities"] == 2  # a third of the 8 identities with 2-20 images
    assert data.report["train_images"] + data.report["val_images"] == n_images - 1
    assert data.train_crops.shape == (data.report["train_images"], 32, 32, 3)
    assert data.train_crops.dtype == torch.uint8
    assert sorted(set(data.train_labels.tolist())) == list(range(6)) == list(range(data.n_classes))

    # Recover the identity of every crop from its pixels (all images differ) and check by brute force.
    crops = build_crop_cache(
        list(images.paths), AlignmentTemplate.for_size(32), TemplateDetector(), cfg.cache_dir, name="check"
    )
    who = {crops.crops[i].tobytes(): images.names[images.labels[i]] for i in range(n_images)}
    train_who = [who[c.tobytes()] for c in data.train_crops.numpy()]
    val_who = [who[c.tobytes()] for c in data.val_crops]
    assert not set(train_who) & set(val_who)
    assert len(set(val_who)) == 2
    label_to_name = set(zip(data.train_labels.tolist(), train_who, strict=True))
    assert len(label_to_name) == len({n for _, n in label_to_name}) == 6  # one label per identity
    assert len(data.val_pairs) == 40 and data.val_same.sum() == 20
    for (i, j), same in zip(data.val_pairs.tolist(), data.val_same.tolist(), strict=True):
        assert i != j and (val_who[i] == val_who[j]) == same


@pytest.mark.parametrize(
    "settings",
    [
        {"miner": "batch-all"},  # the triplet loss alone
        # warm-up with batch-all, then batch-hard; CosFace auxiliary loss; default augmentation
        {"miner": "batch-hard", "warmup_epochs": 4, "aux_weight": 1.0, "augment": AugmentConfig()},
    ],
    ids=["batch-all", "batch-hard+aux+augment"],
)
def test_training_loss_falls(
    prepared: tuple[TrainConfig, PreparedData], tmp_path: Path, settings: dict[str, Any]
) -> None:
    base, data = prepared
    cfg = replace(base, out=str(tmp_path / "tiny.pt"), max_steps=40, **settings)
    seen: list[dict[str, Any]] = []
    row = Trainer(cfg, data).run(seen.append)

    assert [d["step"] for d in seen] == list(range(1, 41))
    assert set(seen[0]) >= {"epoch", "step", "steps_in_epoch", "loss", "active", "images_per_s", "miner"}
    losses = np.array([d["loss"] for d in seen])
    assert np.isfinite(losses).all()
    first, last = losses[:10].mean(), losses[-10:].mean()
    assert last < 0.75 * first, (first, last)
    if not cfg.warmup_epochs:  # one miner all along: fewer and fewer triplets violate the margin
        active = np.array([d["active"] for d in seen])
        assert active[-10:].mean() < active[:10].mean()
    else:
        assert {d["miner"] for d in seen if d["epoch"] < 4} == {"batch-all"}
        assert {d["miner"] for d in seen if d["epoch"] >= 4} == {"batch-hard"}

    # one log row per epoch, in JSON lines and CSV
    rows = _rows(tmp_path / "tiny.pt.log.jsonl")
    steps_per_epoch = seen[0]["steps_in_epoch"]
    assert [r["epoch"] for r in rows] == list(range(40 // steps_per_epoch))
    assert rows[-1]["step"] == 40 and rows[-1] == json.loads(json.dumps(row))
    csv_lines = (tmp_path / "tiny.pt.log.csv").read_text().splitlines()
    assert len(csv_lines) == len(rows) + 1 and csv_lines[0].startswith("epoch,step,")

    # the best checkpoint is a real checkpoint, from the best validation epoch
    model = load_checkpoint(tmp_path / "tiny.pt")
    assert model.encoder.config == TINY
    assert model.meta["training"]["config"] == cfg.to_dict()
    assert model.meta["training"]["data"] == data.report
    assert model.meta["training"]["events"] == []  # no collapse on a healthy run
    val = model.meta["metrics"]["validation"]
    best = max(r["val_accuracy"] for r in rows)
    assert val["val_accuracy"] == best
    assert val["epoch"] == max(r["epoch"] for r in rows if r["best"])
    emb = model.encoder.embed(data.val_crops[:4])
    assert emb.shape == (4, 16) and np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_resume_continues_from_saved_step(prepared: tuple[TrainConfig, PreparedData], tmp_path: Path) -> None:
    base, data = prepared
    # reference: 10 steps in one go
    ref_cfg = replace(base, out=str(tmp_path / "ref" / "m.pt"), max_steps=10)
    (tmp_path / "ref").mkdir()
    Trainer(ref_cfg, data).run()

    cfg = replace(base, out=str(tmp_path / "m.pt"), max_steps=6)
    first = Trainer(cfg, data)
    first.run()
    assert first.state.step == 6 and (tmp_path / "m.pt.state").is_file()
    saved_weights = {k: v.clone() for k, v in first.encoder.state_dict().items()}

    # the longer run may raise the step limit: only run limits may change on resume
    second = Trainer(replace(cfg, max_steps=10), data)
    assert second.load_state() is True
    assert (second.state.step, second.state.epoch) == (first.state.step, first.state.epoch)
    for k, v in second.encoder.state_dict().items():
        assert torch.equal(v, saved_weights[k]), k
    assert second.optimizer.state_dict()["state"]  # Adam moments restored, not fresh
    seen: list[int] = []
    second.run(lambda d: seen.append(d["step"]))
    assert seen == [7, 8, 9, 10]
    rows = _rows(tmp_path / "m.pt.log.jsonl")
    assert [r["step"] for r in rows] == [r["step"] for r in _rows(tmp_path / "ref" / "m.pt.log.jsonl")]
    # seeds per epoch + restored optimizer: the resumed run is the uninterrupted run
    ref_state = torch.load(tmp_path / "ref" / "m.pt.state", weights_only=True)["encoder"]
    for k, v in second.encoder.state_dict().items():
        torch.testing.assert_close(v, ref_state[k], msg=k)

    with pytest.raises(FaceappError, match="margin"):
        Trainer(replace(cfg, margin=0.5), data).load_state()
    with pytest.raises(FaceappError, match="miner"):
        Trainer(replace(cfg, miner="semi-hard"), data).load_state()
    # train() refuses to overwrite a run that was not asked to resume
    with pytest.raises(FaceappError, match="--resume"):
        train(cfg, detector=TemplateDetector())


def test_collapse_falls_back_to_batch_all(
    prepared: tuple[TrainConfig, PreparedData], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A spread threshold no batch can reach: every batch-hard stretch is declared collapsed."""
    base, data = prepared
    cfg = replace(
        base,
        out=str(tmp_path / "c.pt"),
        miner="batch-hard",
        warmup_epochs=0,
        collapse_spread=1e9,
        collapse_patience=2,
        max_steps=6,
    )
    trainer = Trainer(cfg, data)
    assert len(trainer.sampler) == 2  # two batches per epoch in this data set
    with caplog.at_level(logging.WARNING, logger="faceapp.training.trainer"):
        trainer.run()
    rows = _rows(tmp_path / "c.pt.log.jsonl")
    # epoch 0: batch-hard, collapse declared at its 2nd step -> epoch 1 on batch-all (2 steps, the
    # low-spread count goes on) -> epoch 2: batch-hard collapses at once -> epoch 3 batch-all.
    assert [(r["epoch"], r["miner"], r["step"]) for r in rows] == [
        (0, "batch-hard", 2),
        (1, "batch-all", 4),
        (2, "batch-hard", 5),
        (3, "batch-all", 6),
    ]
    events = trainer.state.events
    assert len(events) == 2 and all(e.startswith("collapse detected at step") for e in events)
    assert "step 2 " in events[0] and "step 5 " in events[1]
    assert trainer.state.lr_scale == 0.25  # halved at each collapse
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned == events
    # the events travel in the checkpoint and in the resumable state
    model = load_checkpoint(tmp_path / "c.pt")
    assert set(model.meta["training"]["events"]) <= set(events)
    state = json.loads(torch.load(tmp_path / "c.pt.state", weights_only=True)["state"])
    assert state["events"] == events


def test_default_collapse_threshold_not_triggered_by_healthy_run(
    prepared: tuple[TrainConfig, PreparedData], tmp_path: Path
) -> None:
    base, data = prepared
    cfg = replace(base, out=str(tmp_path / "h.pt"), miner="batch-hard", max_steps=8, collapse_patience=2)
    trainer = Trainer(cfg, data)
    trainer.run()
    assert trainer.state.events == [] and trainer.state.lr_scale == 1.0
    assert {r["miner"] for r in _rows(tmp_path / "h.pt.log.jsonl")} == {"batch-hard"}
    assert min(r["spread"] for r in _rows(tmp_path / "h.pt.log.jsonl")) > cfg.collapse_spread


def test_without_validation_identities_the_latest_model_is_kept(
    prepared: tuple[TrainConfig, PreparedData], lfw_tree: Path, tmp_path: Path
) -> None:
    base, _ = prepared
    cfg = replace(base, out=str(tmp_path / "nv.pt"), val_identities=0, max_steps=4)
    data = prepare_data(cfg, TemplateDetector())
    assert data.report["val_identities"] == 0 and len(data.val_pairs) == 0
    Trainer(cfg, data).run()
    rows = _rows(tmp_path / "nv.pt.log.jsonl")
    assert all(math.isnan(r["val_accuracy"]) for r in rows)
    assert load_checkpoint(tmp_path / "nv.pt").meta["metrics"]["validation"]["epoch"] == rows[-1]["epoch"]


def test_too_few_identities_is_a_clear_error(
    prepared: tuple[TrainConfig, PreparedData], tmp_path: Path
) -> None:
    base, data = prepared
    with pytest.raises(FaceappError, match="P x K"):
        Trainer(replace(base, out=str(tmp_path / "x.pt"), p=7), data)  # 6 training identities
    with pytest.raises(FaceappError, match="unknown miner"):
        replace(base, miner="hardest")
