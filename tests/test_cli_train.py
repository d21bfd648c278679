"""``faceapp train`` and ``faceapp import-pretrained`` in-process through ``faceapp.cli.main``.

A tiny model on the 8-identity LFW tree of ``test_trainer`` (symlinks in a temp folder), with
the stand-in detector in place of MTCNN.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakes import PEOPLE, TemplateDetector

from faceapp.cli import main
from faceapp.nn.checkpoint import load_checkpoint
from faceapp.nn.encoder import EncoderConfig
from faceapp.training import trainer


@pytest.fixture
def stub_detector(monkeypatch: pytest.MonkeyPatch) -> TemplateDetector:
    det = TemplateDetector()
    monkeypatch.setattr(trainer, "FaceDetector", lambda config: det)
    return det


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _train_argv(lfw_tree: Path, tmp_path: Path, *extra: str) -> list[str]:
    people = tmp_path / "peopleTiny.txt"
    if not people.exists():
        people.write_text(f"{len(PEOPLE)}\n" + "".join(f"{n}\t9\n" for n in PEOPLE))
    return [
        "train",
        str(lfw_tree),
        "--people",
        str(people),
        "--out",
        str(tmp_path / "models" / "tiny.pt"),
        "--input-size",
        "32",
        "--dim",
        "16",
        "--width",
        "8",
        "--layers",
        "1,1,1,1",
        "--p",
        "4",
        "--k",
        "4",
        "--val-identities",
        "2",
        "--warmup-epochs",
        "1",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--threads",
        "1",
        *extra,
    ]


def test_train_resume_and_refusals(
    lfw_tree: Path,
    tmp_path: Path,
    stub_detector: TemplateDetector,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "models" / "tiny.pt"
    assert main(_train_argv(lfw_tree, tmp_path, "--max-steps", "4")) == 0
    captured = capsys.readouterr()
    last = json.loads(captured.out.strip().splitlines()[-1])
    assert last["out"] == str(out) and last["step"] == 4 and last["epoch"] == 1
    assert "loss=" in captured.err and "epoch" in captured.err  # the progress bar (stderr)
    assert stub_detector.images == len(list(lfw_tree.glob("*/*")))  # the blank image is tried too
    assert (tmp_path / "cache").is_dir() and list((tmp_path / "cache").glob("peopletiny-*.npz"))

    model = load_checkpoint(out)
    assert model.encoder.config == EncoderConfig(
        input_size=32, embedding_dim=16, width=8, layers=(1, 1, 1, 1)
    )
    cfg = model.meta["training"]["config"]
    assert (cfg["miner"], cfg["warmup_miner"], cfg["margin"], cfg["max_steps"]) == (
        "batch-hard",
        "batch-all",
        0.2,
        4,
    )
    assert model.meta["training"]["data"]["identities"] == len(PEOPLE)
    rows = _rows(out.with_name("tiny.pt.log.jsonl"))
    assert [(r["epoch"], r["miner"], r["step"]) for r in rows] == [(0, "batch-all", 2), (1, "batch-hard", 4)]

    # a second run without --resume must not overwrite the first
    assert main(_train_argv(lfw_tree, tmp_path, "--max-steps", "6", "--no-progress")) == 2
    assert "--resume" in capsys.readouterr().err
    # resuming with other training settings is refused
    assert main(_train_argv(lfw_tree, tmp_path, "--max-steps", "6", "--resume", "--margin", "0.5")) == 2
    assert "settings differ (margin)" in capsys.readouterr().err
    # resuming with a higher step limit continues where the run stopped
    assert main(_train_argv(lfw_tree, tmp_path, "--max-steps", "6", "--resume", "--no-progress")) == 0
    captured = capsys.readouterr()
    assert "loss=" not in captured.err  # --no-progress: no bar
    assert json.loads(captured.out)["step"] == 6
    rows = _rows(out.with_name("tiny.pt.log.jsonl"))
    assert [(r["epoch"], r["step"]) for r in rows] == [(0, 2), (1, 4), (2, 6)]
    assert len(out.with_name("tiny.pt.log.csv").read_text().splitlines()) == 4


def test_train_argument_errors(
    lfw_tree: Path,
    tmp_path: Path,
    stub_detector: TemplateDetector,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # more identities per batch than the training split has: a one-line error
    assert main(_train_argv(lfw_tree, tmp_path, "--max-steps", "2", "--p", "20", "--no-progress")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "P x K" in err
    with pytest.raises(SystemExit):
        main(_train_argv(lfw_tree, tmp_path, "--miner", "hardest"))
    assert main(["train", str(tmp_path / "nowhere"), "--out", str(tmp_path / "m.pt")]) == 2
    assert "not found" in capsys.readouterr().err


def test_import_pretrained_refuses_bad_sources(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Offline: a missing file or a file that is not weights gives one error line, no checkpoint."""
    out = tmp_path / "inc.pt"
    assert main(["import-pretrained", str(tmp_path / "missing.pt"), "--out", str(out)]) == 2
    assert "no such weights file" in capsys.readouterr().err
    junk = tmp_path / "junk.pt"
    junk.write_text("not weights")
    assert main(["import-pretrained", str(junk), "--out", str(out)]) == 2
    assert "not a readable weights file" in capsys.readouterr().err
    assert not out.exists()
