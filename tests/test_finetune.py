"""Fine-tuning the dlib ResNet: frozen layers stay, trained ones move, epoch 0 is the base,
resume continues (real checkpoint, real LFW crops, the template detector stand-in)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fakes import PEOPLE, TemplateDetector

from faceapp.config import default_model_path
from faceapp.errors import FaceappError
from faceapp.nn.checkpoint import load_checkpoint
from faceapp.training.finetune import FinetuneConfig, finetune


def _cfg(tmp_path: Path, lfw_tree: Path, **kw) -> FinetuneConfig:
    people = tmp_path / "people.txt"
    people.write_text(f"{len(PEOPLE)}\n" + "".join(f"{p}\t1\n" for p in PEOPLE))
    base = dict(base=str(default_model_path()), data=str(lfw_tree), people=str(people),
                out=str(tmp_path / "ft.pt"), train_blocks=1, epochs=1, p=4, k=2, lr=1e-3,
                val_identities=2, val_pairs=40, cache_dir=str(tmp_path / "cache"), max_steps=2,
                batch_size=8)
    base.update(kw)
    return FinetuneConfig(**base)


def test_finetune_trains_only_the_tail_and_resumes(tmp_path: Path, lfw_tree: Path) -> None:
    det = TemplateDetector()
    cfg = _cfg(tmp_path, lfw_tree)
    result = finetune(cfg, detector=det)
    assert [r["epoch"] for r in result["history"]] == [0, 1]
    base = load_checkpoint(default_model_path())
    out = load_checkpoint(cfg.out)
    assert out.template.name == "dlib150" and "fine_tuned" in out.meta["provenance"]
    assert out.meta["training"]["base_model_id"] == base.model_id
    state = torch.load(Path(cfg.out + ".state"), weights_only=True)
    tail_fc = state["tail"]["fc.weight"]
    assert not torch.equal(tail_fc, base.encoder.backbone.fc.weight)  # trained
    saved = out.encoder.backbone.state_dict()
    for name, value in base.encoder.backbone.state_dict().items():
        if name.startswith("blocks.13.") or name.startswith("fc."):
            continue
        assert torch.equal(saved[name], value), name  # frozen
    # resume: one more epoch, same settings
    more = finetune(_cfg(tmp_path, lfw_tree, epochs=2, max_steps=4), resume=True, detector=det)
    assert [r["epoch"] for r in more["history"]] == [0, 1, 2]
    with pytest.raises(FaceappError, match="settings differ"):
        finetune(_cfg(tmp_path, lfw_tree, epochs=3, lr=5e-4), resume=True, detector=det)


def test_finetune_refuses_a_non_dlib_model(tmp_path: Path, lfw_tree: Path, small_model_path: Path) -> None:
    with pytest.raises(FaceappError, match="dlib ResNet"):
        finetune(_cfg(tmp_path, lfw_tree, base=str(small_model_path)), detector=TemplateDetector())
    with pytest.raises(FaceappError, match="train_blocks"):
        _cfg(tmp_path, lfw_tree, train_blocks=0)
