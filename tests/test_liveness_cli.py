"""``faceapp liveness`` and ``faceapp verify --camera --liveness`` end to end on real clips
(real MTCNN, the committed models/liveness.json, real video decoding) and on a generated
print attack written as an H.264 file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from faceapp.cli import main
from faceapp.config import PROJECT_ROOT

RESULT_KEYS = {"live", "passive_score", "threshold", "challenge", "completed", "reasons", "frames"}


@pytest.fixture(scope="module")
def clips(data_dir: Path) -> Path:
    return data_dir / "liveness"


def run(capsys, *argv: str) -> tuple[int, dict]:
    code = main([*argv, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else {}


def write_video(path: Path, frames: list[np.ndarray], fps: int = 30) -> Path:
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "yuv420p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


@pytest.mark.slow
def test_the_genuine_selfie_clip_is_live(capsys, clips: Path) -> None:
    code, data = run(capsys, "liveness", str(clips / "tvl_live_replay" / "real.mp4"), "--challenge", "none")
    assert set(data) >= RESULT_KEYS
    assert code == 0 and data["live"] is True, data
    assert data["passive_score"] >= data["threshold"]
    assert data["frames"] == 621 and data["challenge"] == [] and data["reasons"] == []


@pytest.mark.slow
def test_the_screen_replay_of_that_clip_is_not_live(capsys, clips: Path) -> None:
    code, data = run(capsys, "liveness", str(clips / "tvl_live_replay" / "fake.mp4"), "--challenge", "none")
    assert code == 1 and data["live"] is False
    assert data["passive_score"] < data["threshold"]
    assert any(r.startswith("passive_score") for r in data["reasons"])


@pytest.mark.slow
def test_a_generated_print_attack_is_not_live(capsys, tmp_path: Path, lfw_dir: Path) -> None:
    from faceapp.liveness import attacks
    from faceapp.liveness.calibrate import CalibrationConfig, drawn_people
    from faceapp.vision.images import load_image

    # a person the calibration did not draw (the same seeded draw as the committed model's)
    prov = json.loads((PROJECT_ROOT / "models" / "liveness.json").read_text())["provenance"]
    cfg = CalibrationConfig(**{k: v for k, v in prov["config"].items()})
    assert "Kofi_Annan" not in drawn_people(lfw_dir, cfg)
    photo = load_image(lfw_dir / "Kofi_Annan" / "Kofi_Annan_0003.jpg")
    frames = attacks.print_attack(photo, np.random.default_rng(2026), 90)
    video = write_video(tmp_path / "print.mp4", frames)
    code, data = run(capsys, "liveness", str(video), "--challenge", "none")
    assert code == 1 and data["live"] is False, data
    assert data["frames"] == 90


@pytest.mark.slow
def test_a_challenge_matching_the_clip_passes_and_the_wrong_order_fails(capsys, clips: Path) -> None:
    real = str(clips / "tvl_live_replay" / "real.mp4")
    # the clip turns to the man's left (~2-5 s), then to his right (~7.5-10.5 s)
    code, data = run(capsys, "liveness", real, "--challenge", "turn_left,turn_right", "--action-timeout", "7")
    assert data["completed"] == ["turn_left", "turn_right"], data
    assert code == 0 and data["live"] is True
    assert data["frames"] < 621  # stops once the challenge is done
    code, data = run(capsys, "liveness", real, "--challenge", "turn_right,turn_left", "--action-timeout", "7")
    assert code == 1 and data["completed"] == []
    assert "challenge: wrong_action:turn_left" in data["reasons"]
    # he does not blink in the first 1.5 s (his head turn starts at ~2 s)
    code, data = run(capsys, "liveness", real, "--challenge", "blink", "--action-timeout", "1.5")
    assert code == 1 and "challenge: timeout:blink" in data["reasons"]
    # asked to blink for longer, the head turn counts as the wrong action
    code, data = run(capsys, "liveness", real, "--challenge", "blink", "--action-timeout", "4")
    assert code == 1 and "challenge: wrong_action:turn_left" in data["reasons"]


def test_liveness_errors_exit_2(capsys, tmp_path: Path) -> None:
    assert main(["liveness", str(tmp_path / "none.mp4")]) == 2
    assert "error:" in capsys.readouterr().err
    assert main(["liveness", str(tmp_path), "--challenge", "nod"]) == 2
    assert "nod" in capsys.readouterr().err
    bad = tmp_path / "model.json"
    bad.write_text("{}")
    (tmp_path / "clip.mp4").write_bytes(b"not a video")
    assert main(["liveness", str(tmp_path / "clip.mp4"), "--liveness-model", str(bad)]) == 2
    assert "liveness" in capsys.readouterr().err


# ---------------------------------------------------------------------- verify --liveness
@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory, clips: Path, lfw_dir: Path) -> Path:
    """A gallery with the man of real.mp4 (enrolled from two frontal frames of the clip)
    and one LFW person, made with the shipped default model."""
    from PIL import Image

    from faceapp.vision.video import read_video_frames

    if not (PROJECT_ROOT / "models" / "default.pt").exists():
        pytest.skip("models/default.pt is not shipped in this checkout")
    root = tmp_path_factory.mktemp("live_gallery")
    frames = read_video_frames(clips / "tvl_live_replay" / "real.mp4", max_frames=40)
    paths = []
    for i in (5, 35):
        p = root / f"selfie_{i}.png"
        Image.fromarray(frames[i]).save(p)
        paths.append(str(p))
    db = root / "g.sqlite"
    assert main(["enroll", "selfie", *paths, "--db", str(db)]) == 0
    other = str(lfw_dir / "Kofi_Annan" / "Kofi_Annan_0001.jpg")
    assert main(["enroll", "other", other, "--db", str(db)]) == 0
    return db


@pytest.mark.slow
def test_verify_with_liveness_accepts_only_identity_and_liveness_together(capsys, gallery: Path,
                                                                          clips: Path) -> None:
    capsys.readouterr()
    real = str(clips / "tvl_live_replay" / "real.mp4")
    common = ["--challenge", "turn_left,turn_right", "--action-timeout", "7", "--db", str(gallery)]
    code, data = run(capsys, "verify", "selfie", "--camera", real, "--liveness", *common)
    assert code == 0 and data["decision"] == "ACCEPT", data
    assert data["identity_ok"] and data["live"] and data["identity_matches"] >= 1
    code, data = run(capsys, "verify", "other", "--camera", real, "--liveness", *common)
    assert code == 1 and data["decision"] == "REJECT"
    assert data["identity_ok"] is False and any(r.startswith("identity") for r in data["reasons"])
    fake = str(clips / "tvl_live_replay" / "fake.mp4")
    code, data = run(capsys, "verify", "selfie", "--camera", fake, "--liveness", "--challenge", "none",
                     "--db", str(gallery))
    assert code == 1 and data["live"] is False
    assert any(r.startswith("liveness") for r in data["reasons"])


def test_verify_camera_needs_liveness_and_one_probe(capsys, tmp_path: Path) -> None:
    db = str(tmp_path / "g.sqlite")
    assert main(["verify", "x", "--camera", "clip.mp4", "--db", db]) == 2
    assert "--liveness" in capsys.readouterr().err
    assert main(["verify", "x", "--db", db]) == 2
    assert "IMAGE" in capsys.readouterr().err


@pytest.mark.slow
def test_a_second_face_appearing_mid_challenge_fails_it(capsys, tmp_path: Path, clips: Path,
                                                      lfw_dir: Path) -> None:
    from faceapp.vision.images import load_image
    from faceapp.vision.video import read_video_frames

    frames = read_video_frames(clips / "tvl_live_replay" / "real.mp4", max_frames=60)
    from PIL import Image

    face = load_image(lfw_dir / "Kofi_Annan" / "Kofi_Annan_0001.jpg")[30:220, 50:200]
    other = np.asarray(Image.fromarray(face).resize((210, 266)))  # about as large as his face
    for f in frames[20:]:
        f[-266:, :210] = other  # someone steps in at the bottom left from 0.67 s on
    video = write_video(tmp_path / "two.mp4", frames)
    code, data = run(capsys, "liveness", str(video), "--challenge", "turn_left")
    assert code == 1 and "challenge: second_face" in data["reasons"], data


@pytest.mark.slow
def test_a_face_swapped_mid_challenge_fails_it(capsys, tmp_path: Path, clips: Path) -> None:
    from PIL import Image

    from faceapp.vision.video import read_video_frames

    first = read_video_frames(clips / "tvl_live_replay" / "real.mp4", max_frames=30)
    h, w = first[0].shape[:2]
    other = read_video_frames(clips / "sadtalker_hdtf_blink" / "WDA_AlexandriaOcasioCortez_000.mp4",
                              max_frames=40)
    # the man leaves and another person shows up elsewhere in the view (top left). A swap
    # at the same place keeps the box track; that one is caught by the identity checks of
    # `verify --liveness` (test above), not by geometry
    swapped = []
    for f in other:
        canvas = np.zeros((h, w, 3), dtype=np.uint8)
        canvas[:256, :256] = np.asarray(Image.fromarray(f).resize((256, 256)))
        swapped.append(canvas)
    video = write_video(tmp_path / "swap.mp4", first + swapped)
    code, data = run(capsys, "liveness", str(video), "--challenge", "turn_left,turn_right")
    assert code == 1 and "challenge: face_swapped" in data["reasons"], data


@pytest.mark.slow
def test_the_same_face_check_tells_the_man_from_another_person(clips: Path, lfw_dir: Path) -> None:
    """What catches a face swapped in at the same place (the box track continues): the
    subject's embedding against the first one of the challenge, at the model's τ."""
    from faceapp.liveness.session import FaceFollower
    from faceapp.services.liveness import SameFaceChecker
    from faceapp.vision.images import load_image
    from faceapp.vision.video import read_video_frames

    if not (PROJECT_ROOT / "models" / "default.pt").exists():
        pytest.skip("models/default.pt is not shipped in this checkout")
    checker = SameFaceChecker.from_model()
    follower = FaceFollower.create()
    frames = read_video_frames(clips / "tvl_live_replay" / "real.mp4", max_frames=200)
    stranger = load_image(lfw_dir / "Kofi_Annan" / "Kofi_Annan_0001.jpg")

    def first_face(img: np.ndarray):
        follower.reset()
        return follower.step(img)[0][1]

    assert checker(frames[5], first_face(frames[5])) == "match"  # the reference
    assert checker(frames[190], first_face(frames[190])) == "match"  # him, 6 s later
    assert checker(stranger, first_face(stranger)) == "mismatch"
    assert checker.similarities[0] >= checker.tau > checker.similarities[1]
