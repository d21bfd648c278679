"""Checkpoints: exact round trip, metadata, model_id, and clean failures on damaged or foreign files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from faceapp.errors import ModelError, ModelMismatch
from faceapp.nn.checkpoint import (
    FORMAT_VERSION,
    add_head,
    create_untrained_model,
    load_checkpoint,
    read_checkpoint_dict,
    save_checkpoint,
    weights_id,
)
from faceapp.nn.encoder import Encoder, EncoderConfig
from faceapp.nn.heads import BinaryVerificationHead
from faceapp.nn.scoring import HeadScorer, scorers_for
from faceapp.vision.alignment import AlignmentTemplate

TINY = EncoderConfig(input_size=32, embedding_dim=16, width=4, layers=(1, 1, 1, 1), flip_tta=True)


def _crops(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)


def _encoder(seed: int = 0) -> Encoder:
    """A seeded tiny encoder with non-trivial BatchNorm statistics (they are saved too)."""
    torch.manual_seed(seed)
    enc = Encoder(TINY).train()
    with torch.no_grad():
        enc(enc.preprocess(_crops(8, seed=50)))
    return enc.eval()


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, Encoder, str]:
    enc = _encoder()
    path = tmp_path / "models" / "tiny.pt"
    model_id = save_checkpoint(
        path, enc, training={"epochs": 3, "miner": "batch-hard"}, metrics={"val_auc": 0.75}
    )
    return path, enc, model_id


def test_round_trip_preserves_embeddings_bit_for_bit(saved: tuple[Path, Encoder, str]) -> None:
    path, enc, model_id = saved
    crops = _crops(6, seed=1)
    before = enc.embed(crops)
    loaded = load_checkpoint(path)
    assert not loaded.encoder.training
    assert loaded.encoder.config == TINY
    assert loaded.model_id == model_id == weights_id(enc.state_dict())
    assert loaded.path == path
    after = loaded.encoder.embed(crops)
    assert after.dtype == np.float32
    assert np.array_equal(before, after)
    for key, value in enc.state_dict().items():
        assert torch.equal(value, loaded.encoder.state_dict()[key]), key


def test_metadata_is_complete(saved: tuple[Path, Encoder, str]) -> None:
    path, _, model_id = saved
    meta = load_checkpoint(path).meta
    assert meta["format"] == "faceapp-checkpoint" and meta["format_version"] == FORMAT_VERSION
    assert meta["model_id"] == model_id
    assert meta["encoder_config"]["backbone"] == "resnet"
    assert meta["encoder_config"]["embedding_dim"] == 16 and meta["encoder_config"]["input_size"] == 32
    assert meta["alignment"] == AlignmentTemplate.for_size(32).to_dict()
    assert meta["normalisation"] == {"mean": 0.5, "std": 0.5, "scale": 255.0}
    assert meta["training"] == {"epochs": 3, "miner": "batch-hard"}
    assert meta["metrics"] == {"val_auc": 0.75}
    assert "created" in meta and "faceapp_version" in meta
    assert not path.with_name(path.name + ".partial").exists()  # atomic write left no temp file


def test_model_id_follows_the_weights() -> None:
    a, b = _encoder(seed=0), _encoder(seed=1)
    sa = a.state_dict()
    assert weights_id(sa) == weights_id(dict(reversed(list(sa.items()))))  # key order does not matter
    assert weights_id(sa) != weights_id(b.state_dict())
    edited = {k: v.clone() for k, v in sa.items()}
    key = next(k for k in edited if k.endswith("weight"))
    edited[key].view(-1)[0] += 1e-6
    assert weights_id(edited) != weights_id(sa)
    assert len(weights_id(sa)) == 16 and int(weights_id(sa), 16) >= 0


def test_create_untrained_model_is_seeded_and_leaves_the_global_rng_alone() -> None:
    state = torch.random.get_rng_state()
    m1 = create_untrained_model(TINY, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    m2 = create_untrained_model(TINY, seed=3)
    m3 = create_untrained_model(TINY, seed=4)
    assert m1.model_id == m2.model_id != m3.model_id
    assert m1.embedding_dim == 16 and m1.template.size == 32


# ---------------------------------------------------------------- damaged / foreign files


def test_truncated_checkpoint(saved: tuple[Path, Encoder, str], tmp_path: Path) -> None:
    path, _, _ = saved
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 10, 100):
        bad = tmp_path / f"cut{cut}.pt"
        bad.write_bytes(data[:cut])
        with pytest.raises(ModelError, match="not a readable faceapp checkpoint") as info:
            load_checkpoint(bad)
        assert str(bad) in str(info.value)


def test_random_empty_text_missing_and_directory(tmp_path: Path) -> None:
    random_file = tmp_path / "random.pt"
    random_file.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    text = tmp_path / "text.pt"
    text.write_text("hello\n")
    for bad in (random_file, empty, text):
        with pytest.raises(ModelError, match="not a readable faceapp checkpoint"):
            load_checkpoint(bad)
    with pytest.raises(ModelError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(ModelError, match="not found"):
        load_checkpoint(tmp_path)


def test_foreign_torch_files(tmp_path: Path) -> None:
    plain_dict = tmp_path / "state_dict.pt"
    torch.save(_encoder().state_dict(), plain_dict)  # weights alone, no faceapp metadata
    with pytest.raises(ModelError, match="not a faceapp checkpoint"):
        load_checkpoint(plain_dict)
    pickled_module = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(3, 2), pickled_module)  # refused by weights_only=True
    with pytest.raises(ModelError, match="not a readable faceapp checkpoint"):
        load_checkpoint(pickled_module)
    a_list = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], a_list)
    with pytest.raises(ModelError, match="not a faceapp checkpoint"):
        load_checkpoint(a_list)


def test_edited_weight_is_a_model_mismatch(saved: tuple[Path, Encoder, str], tmp_path: Path) -> None:
    path, _, model_id = saved
    blob = torch.load(path, weights_only=True)
    key = next(k for k in blob["state_dict"] if k.endswith("conv1.weight"))
    blob["state_dict"][key].view(-1)[0] += 0.01
    edited = tmp_path / "edited.pt"
    torch.save(blob, edited)
    with pytest.raises(ModelMismatch, match="differs from the recorded model_id") as info:
        load_checkpoint(edited)
    assert model_id in str(info.value)


def test_weights_that_do_not_fit_the_architecture(saved: tuple[Path, Encoder, str], tmp_path: Path) -> None:
    path, _, _ = saved
    blob = torch.load(path, weights_only=True)
    blob["encoder_config"]["width"] = 8  # the weights are of width 4
    wrong = tmp_path / "wrong.pt"
    torch.save(blob, wrong)
    with pytest.raises(ModelMismatch, match="do not fit"):
        load_checkpoint(wrong)
    blob = torch.load(path, weights_only=True)
    del blob["state_dict"][next(iter(blob["state_dict"]))]
    missing_key = tmp_path / "missing_key.pt"
    torch.save(blob, missing_key)
    with pytest.raises(ModelMismatch):
        load_checkpoint(missing_key)


def test_unknown_format_version_and_settings(saved: tuple[Path, Encoder, str], tmp_path: Path) -> None:
    path, _, _ = saved
    blob = torch.load(path, weights_only=True)
    blob["format_version"] = FORMAT_VERSION + 1
    future = tmp_path / "future.pt"
    torch.save(blob, future)
    with pytest.raises(ModelError, match="format version"):
        read_checkpoint_dict(future)
    blob = torch.load(path, weights_only=True)
    blob["encoder_config"]["backbone"] = "transformer"
    odd = tmp_path / "odd.pt"
    torch.save(blob, odd)
    with pytest.raises(ModelError, match="unknown backbone"):
        load_checkpoint(odd)


# ---------------------------------------------------------------- heads inside the checkpoint


@pytest.mark.parametrize("mode", ["l1", "chi2"])
def test_add_head_round_trip(saved: tuple[Path, Encoder, str], mode: str) -> None:
    path, enc, model_id = saved
    torch.manual_seed(7)
    head = BinaryVerificationHead(16, mode)  # type: ignore[arg-type]
    with torch.no_grad():
        head.weight.copy_(torch.randn(16))
        head.bias.fill_(0.3)
    add_head(path, head, metrics={"auc": 0.9})
    loaded = load_checkpoint(path)
    assert loaded.model_id == model_id  # a head does not change the encoder's identity
    assert set(loaded.heads) == {f"head_{mode}"}
    got = loaded.heads[f"head_{mode}"]
    assert got.mode == mode and got.dim == 16 and not got.training
    assert torch.equal(got.weight, head.weight) and torch.equal(got.bias, head.bias)
    assert loaded.meta["metrics"][f"head_{mode}"] == {"auc": 0.9}
    assert loaded.meta["metrics"]["val_auc"] == 0.75  # earlier metrics kept
    z = enc.embed(_crops(4, seed=2))
    np.testing.assert_array_equal(
        HeadScorer(got).score_pairs(z[:2], z[2:]), HeadScorer(head).score_pairs(z[:2], z[2:])
    )
    assert sorted(scorers_for(loaded)) == ["distance", f"head_{mode}"]


def test_add_head_replaces_and_keeps_others(saved: tuple[Path, Encoder, str]) -> None:
    path, _, _ = saved
    add_head(path, BinaryVerificationHead(16, "l1"))
    add_head(path, BinaryVerificationHead(16, "chi2"))
    replacement = BinaryVerificationHead(16, "l1")
    with torch.no_grad():
        replacement.bias.fill_(-2.0)
    add_head(path, replacement)
    heads = load_checkpoint(path).heads
    assert sorted(heads) == ["head_chi2", "head_l1"]
    assert float(heads["head_l1"].bias.detach()) == -2.0


def test_add_head_of_wrong_dimension(saved: tuple[Path, Encoder, str]) -> None:
    path, _, _ = saved
    with pytest.raises(ModelMismatch, match="head dim 8"):
        add_head(path, BinaryVerificationHead(8, "l1"))


def test_damaged_head_is_a_model_mismatch(saved: tuple[Path, Encoder, str], tmp_path: Path) -> None:
    path, _, _ = saved
    add_head(path, BinaryVerificationHead(16, "l1"))
    blob = torch.load(path, weights_only=True)
    blob["heads"]["head_l1"]["state_dict"]["weight"] = torch.zeros(5)
    bad = tmp_path / "bad_head.pt"
    torch.save(blob, bad)
    with pytest.raises(ModelMismatch, match="head head_l1"):
        load_checkpoint(bad)
