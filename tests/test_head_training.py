"""Binary verification head training: balanced pairs with hard negatives, the fit, the checkpoint
round trip, and ``faceapp train-head`` in-process on a tiny model (real ORL faces, stand-in
detector from ``test_trainer``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fakes import TemplateDetector

from faceapp.cli import main
from faceapp.errors import FaceappError, ModelMismatch
from faceapp.nn.checkpoint import add_head, create_untrained_model, load_checkpoint, save_checkpoint
from faceapp.nn.encoder import EncoderConfig
from faceapp.nn.heads import BinaryVerificationHead
from faceapp.training import evaluation
from faceapp.training.head_training import balanced_pairs, fit_head

TINY = EncoderConfig(input_size=32, embedding_dim=16, width=8, layers=(1, 1, 1, 1))


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _labels() -> np.ndarray:
    # identities with 6, 4, 3, 2, 1 and 1 images, shuffled
    lab = np.repeat(np.arange(6), [6, 4, 3, 2, 1, 1])
    return np.random.default_rng(5).permutation(lab)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_pairs", [16, 1000])
def test_balanced_pairs_brute_force(dtype: type, n_pairs: int) -> None:
    labels = _labels()
    emb = _unit(np.random.default_rng(1).normal(size=(len(labels), 8))).astype(dtype)
    pairs, target = balanced_pairs(emb, labels, n_pairs, np.random.default_rng(0), hard_fraction=0.5)
    assert pairs.dtype == np.int64 and target.dtype == np.float32
    assert pairs.shape == (len(target), 2)

    all_genuine = {
        (i, j) for i in range(len(labels)) for j in range(i + 1, len(labels)) if labels[i] == labels[j]
    }
    n_gen = min(len(all_genuine), n_pairs // 2)
    assert target.tolist() == [1.0] * n_gen + [0.0] * n_gen  # balanced
    genuine = [tuple(p) for p in pairs[:n_gen].tolist()]
    assert len(set(genuine)) == n_gen and set(genuine) <= all_genuine  # really the same person
    if n_pairs >= 2 * len(all_genuine):
        assert set(genuine) == all_genuine  # every genuine pair used when there are few

    negatives = pairs[n_gen:]
    assert all(labels[a] != labels[b] for a, b in negatives.tolist())
    n_hard = int(n_gen * 0.5)
    sims = emb.astype(np.float64) @ emb.astype(np.float64).T
    for a, b in negatives[:n_hard].tolist():  # hard: the nearest impostor of the anchor
        best = max((sims[a, j], j) for j in range(len(labels)) if labels[j] != labels[a])
        assert b == best[1], (a, b, best)


def test_balanced_pairs_errors() -> None:
    emb = _unit(np.random.default_rng(0).normal(size=(4, 8)))
    with pytest.raises(FaceappError, match="two images"):
        balanced_pairs(emb, np.arange(4), 10, np.random.default_rng(0))
    with pytest.raises(FaceappError, match="one identity"):  # used to loop for ever
        balanced_pairs(emb, np.zeros(4, dtype=np.int64), 10, np.random.default_rng(0))


def _clusters(centres: np.ndarray, per_id: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) float32 unit embeddings scattered around unit ``centres``, and their labels."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(centres)), per_id)
    emb = _unit(centres[labels] + noise * rng.normal(size=(len(labels), centres.shape[1])))
    return emb.astype(np.float32), labels


@pytest.mark.parametrize("mode", ["l1", "chi2"])
def test_fit_head_separable(mode: str) -> None:
    centres = _unit(np.random.default_rng(2).normal(size=(8, 16)))
    emb, labels = _clusters(centres, 6, 0.08, seed=3)
    pairs, target = balanced_pairs(emb, labels, 400, np.random.default_rng(0))
    head0 = BinaryVerificationHead(16, mode)  # type: ignore[arg-type]
    with torch.no_grad():
        e = torch.as_tensor(emb)
        logits0 = head0(e[pairs[:, 0]], e[pairs[:, 1]])
        loss0 = float(F.binary_cross_entropy_with_logits(logits0, torch.as_tensor(target)))
    head, stats = fit_head(emb, pairs, target, mode, max_iter=300)  # type: ignore[arg-type]
    assert head.mode == mode and head.name == f"head_{mode}"
    assert stats["train_pairs"] == len(pairs)
    assert stats["train_accuracy"] >= 0.97
    assert stats["train_loss"] < loss0
    # the fitted head generalises to new samples of the same identities
    emb2, labels2 = _clusters(centres, 6, 0.08, seed=4)
    p2, t2 = balanced_pairs(emb2, labels2, 400, np.random.default_rng(1))
    with torch.no_grad():
        prob = head.probability(torch.as_tensor(emb2[p2[:, 0]]), torch.as_tensor(emb2[p2[:, 1]])).numpy()
    assert ((prob >= 0.5) == (t2 == 1)).mean() >= 0.95


def test_add_head_round_trip(tmp_path: Path) -> None:
    model = create_untrained_model(TINY, seed=1)
    path = tmp_path / "m.pt"
    model_id = save_checkpoint(path, model.encoder)
    emb, labels = _clusters(_unit(np.random.default_rng(0).normal(size=(4, 16))), 4, 0.2, seed=0)
    pairs, target = balanced_pairs(emb, labels, 60, np.random.default_rng(0))
    heads = {}
    for mode in ("l1", "chi2"):
        heads[mode], stats = fit_head(emb, pairs, target, mode, max_iter=20)  # type: ignore[arg-type]
        add_head(path, heads[mode], metrics=stats)
    loaded = load_checkpoint(path)
    assert loaded.model_id == model_id  # heads do not change the encoder's identity
    assert set(loaded.heads) == {"head_l1", "head_chi2"}
    for mode, head in heads.items():
        got = loaded.heads[f"head_{mode}"]
        assert got.mode == mode and not got.training
        for (k, v), (k2, v2) in zip(head.state_dict().items(), got.state_dict().items(), strict=True):
            assert k == k2 and torch.equal(v, v2)
        assert loaded.meta["metrics"][f"head_{mode}"]["train_pairs"] == len(pairs)
    with pytest.raises(ModelMismatch):
        add_head(path, BinaryVerificationHead(8, "l1"))


# ------------------------------------------------------------------------------------ CLI


@pytest.fixture
def orl_people(tmp_path: Path) -> Path:
    path = tmp_path / "peopleORL.txt"
    path.write_text("6\n" + "".join(f"s{i}\t10\n" for i in range(1, 7)))
    return path


def test_train_head_cli(
    tmp_path: Path,
    data_dir: Path,
    orl_people: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    det = TemplateDetector()
    monkeypatch.setattr(evaluation, "detector_for", lambda model: det)
    path = tmp_path / "models" / "tiny.pt"
    model_id = save_checkpoint(path, create_untrained_model(TINY, seed=4).encoder)
    argv = ["train-head", str(data_dir / "orl_faces"), "--model", str(path), "--people", str(orl_people)]
    argv += ["--pairs", "200", "--cache-dir", str(tmp_path / "cache"), "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["head"] == "head_l1" and out["model"] == str(path)
    assert out["train_pairs"] == 200  # 6 x 45 genuine pairs available: 100 + 100 impostors
    assert 0.0 <= out["train_accuracy"] <= 1.0 and out["train_loss"] > 0.0
    assert det.images == 60

    assert main([*argv, "--mode", "chi2"]) == 0
    assert json.loads(capsys.readouterr().out)["head"] == "head_chi2"
    assert det.images == 60  # crops came from the cache the second time
    loaded = load_checkpoint(path)
    assert set(loaded.heads) == {"head_l1", "head_chi2"} and loaded.model_id == model_id
    assert loaded.meta["metrics"]["head_l1"]["train_accuracy"] == out["train_accuracy"]

    missing = tmp_path / "nope.pt"
    assert main(["train-head", str(data_dir / "orl_faces"), "--model", str(missing)]) == 2
    assert "not found" in capsys.readouterr().err
