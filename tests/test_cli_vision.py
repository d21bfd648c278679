"""``faceapp detect`` and ``faceapp embed`` run in-process through ``faceapp.cli.main``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceapp.cli import main
from faceapp.config import ENV_MODEL
from faceapp.nn.checkpoint import load_checkpoint
from faceapp.nn.pipeline import FacePipeline
from faceapp.vision.alignment import AlignmentTemplate, align_face
from faceapp.vision.detection import FaceDetector
from faceapp.vision.images import load_image


@pytest.fixture
def bush(lfw_dir: Path) -> Path:
    return lfw_dir / "George_W_Bush" / "George_W_Bush_0001.jpg"


@pytest.fixture
def bad_files(tmp_path: Path, lfw_dir: Path) -> list[Path]:
    """One file per kind of bad input (the last two do not exist as files)."""
    truncated = tmp_path / "truncated.jpg"
    data = (lfw_dir / "Colin_Powell" / "Colin_Powell_0001.jpg").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    noise = tmp_path / "noise.png"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "readme.txt"
    text.write_text("not an image\n")
    folder = tmp_path / "a_folder"
    folder.mkdir()
    return [truncated, noise, empty, text, folder, tmp_path / "missing.jpg"]


def test_detect_json_prints_one_face_for_bush(bush: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["detect", str(bush), "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert captured.err == ""
    assert len(result) == 1
    entry = result[0]
    assert entry["file"] == str(bush) and (entry["width"], entry["height"]) == (250, 250)
    assert len(entry["faces"]) == 1
    face = entry["faces"][0]
    x1, y1, x2, y2 = face["box"]
    assert x1 < 125 < x2 and y1 < 125 < y2
    assert 0.9 < face["score"] <= 1.0
    assert len(face["landmarks"]) == 5 and all(len(p) == 2 for p in face["landmarks"])


def test_detect_text_one_line_per_bad_file_and_carries_on(
    bush: Path, bad_files: list[Path], data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    yale = data_dir / "yalefaces" / "subject01.happy"
    args = [str(bad_files[0]), str(bush), *map(str, bad_files[1:]), str(yale)]
    assert main(["detect", *args]) == 0  # some files were readable
    captured = capsys.readouterr()
    err_lines = captured.err.strip().splitlines()
    assert len(err_lines) == len(bad_files)
    for line, bad in zip(err_lines, bad_files, strict=True):
        assert line.startswith(f"error: {bad}: ")
        assert "Traceback" not in line
    assert f"{bush}: 1 face" in captured.out
    assert f"{yale}: 1 face" in captured.out
    assert captured.out.count("face 0:") == 2


def test_detect_json_reports_errors_as_entries(
    bush: Path, bad_files: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    args = [str(bush), *map(str, bad_files)]
    assert main(["detect", "--json", *args]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    result = json.loads(captured.out)
    assert [e["file"] for e in result] == args
    assert len(result[0]["faces"]) == 1
    reasons = [e["error"] for e in result[1:]]
    assert all(isinstance(r, str) and r for r in reasons)
    assert "truncated" in reasons[0] and "not an image" in reasons[1] and "empty" in reasons[2]
    assert "directory" in reasons[4] and "not found" in reasons[5]


def test_detect_exit_code_1_when_nothing_is_readable(
    bad_files: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["detect", *map(str, bad_files)]) == 1
    assert len(capsys.readouterr().err.strip().splitlines()) == len(bad_files)
    assert main(["detect", "--json", str(bad_files[0])]) == 1
    assert json.loads(capsys.readouterr().out)[0]["file"] == str(bad_files[0])


def test_detect_no_face_is_not_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blank = tmp_path / "blank.png"
    Image.new("RGB", (120, 90), (200, 200, 200)).save(blank)
    assert main(["detect", "--json", str(blank)]) == 0
    assert json.loads(capsys.readouterr().out) == [
        {"file": str(blank), "width": 120, "height": 90, "faces": []}
    ]


def test_detect_save_crops_writes_aligned_pngs(
    bush: Path, data_dir: Path, tmp_path: Path, detector: FaceDetector, capsys: pytest.CaptureFixture[str]
) -> None:
    happy = data_dir / "yalefaces" / "subject01.happy"
    sad = data_dir / "yalefaces" / "subject01.sad"  # same stem as subject01.happy: must not collide
    out = tmp_path / "crops"
    assert main(["detect", str(bush), str(happy), str(sad), "--save-crops", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["George_W_Bush_0001_0.png", "subject01.happy_0.png", "subject01.sad_0.png"]
    assert result[0]["faces"][0]["crop"] == str(out / "George_W_Bush_0001_0.png")
    crop = load_image(out / "George_W_Bush_0001_0.png")
    assert crop.shape == (112, 112, 3)
    image = load_image(bush)
    expected = align_face(image, detector.detect(image)[0], AlignmentTemplate.for_size(112)).crop
    assert np.array_equal(crop, expected)  # same detection and alignment, lossless PNG

    out96 = tmp_path / "crops96"
    assert main(["detect", str(bush), "--save-crops", str(out96), "--crop-size", "96"]) == 0
    assert load_image(out96 / "George_W_Bush_0001_0.png").shape == (96, 96, 3)
    assert "crop " in capsys.readouterr().out


def test_detect_min_face_size_flag(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    orl = data_dir / "orl_faces" / "s1" / "1.pgm"  # 92x112, the face fills the frame
    assert main(["detect", "--json", "--min-face-size", "40", str(orl)]) == 0
    assert len(json.loads(capsys.readouterr().out)[0]["faces"]) == 1
    assert main(["detect", "--json", "--min-face-size", "500", str(orl)]) == 0
    assert json.loads(capsys.readouterr().out)[0]["faces"] == []


# ---------------------------------------------------------------- embed


def test_embed_json_one_embedding_per_face(
    bush: Path,
    lfw_dir: Path,
    small_model_path: Path,
    detector: FaceDetector,
    capsys: pytest.CaptureFixture[str],
) -> None:
    koizumi = lfw_dir / "Junichiro_Koizumi" / "Junichiro_Koizumi_0001.jpg"  # two faces
    assert main(["embed", str(bush), str(koizumi), "--model", str(small_model_path), "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    model = load_checkpoint(small_model_path)
    assert [(r["file"], r["face"]) for r in records] == [(str(bush), 0), (str(koizumi), 0), (str(koizumi), 1)]
    for r in records:
        emb = np.asarray(r["embedding"], dtype=np.float32)
        assert emb.shape == (32,)
        assert np.linalg.norm(emb) == pytest.approx(1.0, abs=1e-5)
        assert r["model_id"] == model.model_id
        assert len(r["box"]) == 4 and 0 < r["score"] <= 1
    expected = FacePipeline(detector, model).analyze(bush)
    np.testing.assert_allclose(records[0]["embedding"], expected[0].embedding, atol=1e-6)
    assert not np.allclose(records[1]["embedding"], records[2]["embedding"])


def test_embed_text_reports_bad_and_faceless_files(
    bush: Path,
    bad_files: list[Path],
    tmp_path: Path,
    small_model_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    blank = tmp_path / "blank.png"
    Image.new("RGB", (64, 64)).save(blank)
    args = [str(bad_files[0]), str(bush), str(blank), str(bad_files[-1])]
    assert main(["embed", *args, "--model", str(small_model_path)]) == 0
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert err[0].startswith(f"error: {bad_files[0]}: ")
    assert err[1] == f"warning: {blank}: no face found"
    assert err[2].startswith(f"error: {bad_files[-1]}: ")
    lines = captured.out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{bush}  face 0")
    values = [float(v) for v in lines[0].split(": ", 1)[1].split()]
    assert len(values) == 32 and "D=32" in lines[0]


def test_embed_nothing_readable(
    bad_files: list[Path], small_model_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["embed", "--json", *map(str, bad_files), "--model", str(small_model_path)]) == 1
    assert [e["file"] for e in json.loads(capsys.readouterr().out)] == list(map(str, bad_files))


def test_embed_missing_default_model_is_one_clear_line(
    bush: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no_model_here.pt"
    monkeypatch.setenv(ENV_MODEL, str(missing))  # the default --model comes from the environment
    assert main(["embed", str(bush)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"error: {missing}: model file not found")
    assert "--model" in err[0]


def test_embed_corrupt_model_is_one_clear_line(
    bush: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"PK\x03\x04 definitely not a checkpoint")
    assert main(["embed", str(bush), "--model", str(corrupt)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {corrupt}: not a readable faceapp checkpoint")
