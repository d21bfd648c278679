"""`faceapp watch` (the live loop on video / image folders) and `faceapp calibrate` (τ for a
target FAR from gallery pairs or a pairs file), with the real detector, a real (small)
model, a real SQLite file, real LFW photos and the real Hamilton clip."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from faceapp.cli import main
from faceapp.errors import CalibrationError
from faceapp.services import FaceService
from faceapp.vision.video import read_video_frames

PEOPLE = ("Colin_Powell", "Tony_Blair", "Gerhard_Schroeder")


@pytest.fixture(scope="module")
def gallery(tmp_path_factory, small_model_path, lfw_dir):
    """A gallery of 3 LFW people (3 photos each) made through the CLI."""
    db = tmp_path_factory.mktemp("cli-live") / "g.sqlite"
    for p in PEOPLE:
        images = [str(lfw_dir / p / f"{p}_{i:04d}.jpg") for i in (1, 2, 3)]
        assert main(["enroll", p.replace("_", " "), *images, "--largest", "--db", str(db),
                     "--model", str(small_model_path)]) == 0
    return db


def common(gallery, small_model_path):
    return ["--db", str(gallery), "--model", str(small_model_path)]


def test_watch_video_prints_one_json_line_per_frame(gallery, small_model_path, hamilton_clip, capsys):
    capsys.readouterr()
    code = main(["watch", str(hamilton_clip), "--max-frames", "8", "--json", "--threshold", "0.5",
                 *common(gallery, small_model_path)])
    lines = capsys.readouterr().out.splitlines()
    assert code == 0 and len(lines) == 8
    frames = [json.loads(line) for line in lines]
    assert [f["index"] for f in frames] == list(range(1, 9))
    assert any(f["faces"] for f in frames)
    for f in frames:
        for face in f["faces"]:
            x0, y0, x1, y1 = face["box"]
            assert 0 <= x0 < x1 <= 640 and 0 <= y0 < y1 <= 360
            names = [c["person"] for c in face["candidates"]]
            assert set(names) <= {p.replace("_", " ") for p in PEOPLE} and len(names) == 3


def test_watch_image_folder_and_text_summary(gallery, small_model_path, hamilton_clip, tmp_path, capsys):
    for i, frame in enumerate(read_video_frames(hamilton_clip, max_frames=3)):
        Image.fromarray(frame).save(tmp_path / f"f{i}.png")
    capsys.readouterr()
    assert main(["watch", str(tmp_path), "--all-frames", "--threshold", "0.5",
                 *common(gallery, small_model_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in out[:3]] == ["frame 1", "frame 2", "frame 3"]
    assert out[-1].startswith("3 frames, ")


def test_watch_closed_camera_is_one_error_line(gallery, small_model_path, capsys):
    capsys.readouterr()
    assert main(["watch", "/dev/video97", *common(gallery, small_model_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: /dev/video97: cannot open video")


def brute_force_tau(scores, same, far):
    """The smallest distinct score whose FAR (impostors >= it) is <= far, with plain loops."""
    impostors = [s for s, g in zip(scores, same, strict=True) if not g]
    genuine = [s for s, g in zip(scores, same, strict=True) if g]
    for t in sorted(set(scores)):
        if sum(1 for s in impostors if s >= t) / len(impostors) <= far:
            return t, sum(1 for s in genuine if s >= t) / len(genuine)
    return math.inf, 0.0


def test_calibrate_from_gallery_apply_and_reset(gallery, small_model_path, capsys):
    args = common(gallery, small_model_path)
    capsys.readouterr()
    assert main(["calibrate", "--far", "0.2", "--json", *args]) == 0
    report = json.loads(capsys.readouterr().out)
    with FaceService.open(f"sqlite:///{gallery}", small_model_path) as svc:
        scores, same = svc.gallery_scores()
    tau, tar = brute_force_tau(scores.astype(np.float64).tolist(), same.tolist(), 0.2)
    assert report["genuine_pairs"] == 9 and report["impostor_pairs"] == 27
    assert report["threshold"] == pytest.approx(tau) and report["tar"] == pytest.approx(tar)
    assert report["far"] <= 0.2 and report["applied"] is False
    assert main(["calibrate", "--far", "0.2", "--apply", "--json", *args]) == 0
    capsys.readouterr()
    with FaceService.open(f"sqlite:///{gallery}", small_model_path) as svc:
        assert svc.threshold("distance") == pytest.approx(tau)
    assert main(["calibrate", "--reset", *args]) == 0
    assert "removed" in capsys.readouterr().out
    with FaceService.open(f"sqlite:///{gallery}", small_model_path) as svc, \
            pytest.raises(CalibrationError):
        svc.threshold("distance")  # no stored τ, and this model has no calibration file


def test_calibrate_from_pairs_file_and_bad_options(gallery, small_model_path, lfw_dir, tmp_path, capsys):
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("1\t3\n" + "".join(f"{p}\t1\t2\n" for p in PEOPLE)
                     + f"{PEOPLE[0]}\t1\t{PEOPLE[1]}\t1\n{PEOPLE[1]}\t2\t{PEOPLE[2]}\t2\n")
    args = common(gallery, small_model_path)
    capsys.readouterr()
    assert main(["calibrate", "--pairs", str(pairs), "--images", str(lfw_dir), "--far", "0.5",
                 "--json", *args]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["genuine_pairs"], report["impostor_pairs"]) == (3, 2)
    assert report["origin"] == "pairs file pairs.txt"
    assert main(["calibrate", "--pairs", str(pairs), *args]) == 2
    assert "go together" in capsys.readouterr().err
    assert main(["calibrate", "--far", "1.5", *args]) == 2
