"""MTCNN detection on real data: LFW, ORL (grey PGM), Yale (GIF, no extension), a real video clip.

Samples are fixed and chosen by a rule, not by outcome:

- LFW: the first image (``<Name>_0001.jpg``) of the first ten people, in alphabetical order, of
  those with at least 20 images. On all 62 such people, 55 first images give exactly one face;
  the others show genuine background faces (Hans_Blix, Igor_Ivanov, Jeremy_Greenstock,
  Junichiro_Koizumi, Megawati_Sukarnoputri, Jean_Chretien) or a low-score false positive
  (Jennifer_Capriati_0001, score 0.73; Jean_Chretien_0001, 0.86 on a camera). Two background-face
  images are tested separately: every face is returned and the central one is among them.
- ORL: one image per seventh subject. Faces fill the 92x112 frame (about 70 px wide), well above the
  default ``min_face_size`` of 20 px, so the default detector is used (all 80 images
  s1..s40/{1,5}.pgm give exactly one face with it).
- Yale: one image per third subject, several expressions/lightings.
- Video: frames 100-200 of the Hamilton clip (the singer in close-up) decoded with PyAV.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from faceapp.errors import CameraError
from faceapp.types import Detection
from faceapp.vision.detection import FaceDetector
from faceapp.vision.images import load_image
from faceapp.vision.video import iter_video_frames, read_video_frames

LFW_SAMPLE = (
    "Alejandro_Toledo",
    "Alvaro_Uribe",
    "Amelie_Mauresmo",
    "Andre_Agassi",
    "Angelina_Jolie",
    "Ariel_Sharon",
    "Arnold_Schwarzenegger",
    "Atal_Bihari_Vajpayee",
    "Bill_Clinton",
    "Carlos_Menem",
)
ORL_SAMPLE = ("s1/1.pgm", "s8/2.pgm", "s15/3.pgm", "s22/4.pgm", "s29/5.pgm", "s36/6.pgm", "s40/10.pgm")
YALE_SAMPLE = (
    "subject01.happy",
    "subject04.glasses",
    "subject07.leftlight",
    "subject10.sad",
    "subject13.normal",
    "subject15.wink",
)
HAMILTON_FRAMES = (100, 125, 150, 175, 200)


def _contains(d: Detection, x: float, y: float) -> bool:
    return d.box[0] <= x <= d.box[2] and d.box[1] <= y <= d.box[3]


def _check_face(d: Detection, image: np.ndarray) -> None:
    """A plausible upright face: landmarks inside the box, eyes above the mouth, left eye left."""
    h, w = image.shape[:2]
    assert 0.0 <= d.score <= 1.0
    assert d.width > 10 and d.height > 10
    assert d.box[0] < w and d.box[1] < h and d.box[2] > 0 and d.box[3] > 0
    pts = d.landmarks_array()
    assert pts.shape == (5, 2)
    margin = 0.1 * max(d.width, d.height)
    assert np.all(pts[:, 0] >= d.box[0] - margin) and np.all(pts[:, 0] <= d.box[2] + margin)
    assert np.all(pts[:, 1] >= d.box[1] - margin) and np.all(pts[:, 1] <= d.box[3] + margin)
    left_eye, right_eye, nose, mouth_l, mouth_r = pts
    assert left_eye[0] < right_eye[0] and mouth_l[0] < mouth_r[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_l[1], mouth_r[1])


def test_lfw_sample_one_face_each(detector: FaceDetector, lfw_dir: Path) -> None:
    images = [load_image(lfw_dir / name / f"{name}_0001.jpg") for name in LFW_SAMPLE]
    results = detector.detect_batch(images)  # all 250x250: one MTCNN batch
    assert len(results) == len(images)
    for name, image, dets in zip(LFW_SAMPLE, images, results, strict=True):
        assert len(dets) == 1, f"{name}: {[(round(d.score, 3), d.box) for d in dets]}"
        face = dets[0]
        assert _contains(face, 125, 125), f"{name}: the face is not the central one: {face.box}"
        assert face.score > 0.95
        assert 60 < face.width < 160  # deep-funneled faces are about 90-110 px wide
        _check_face(face, image)
    # batch and single-image detection agree
    single = detector.detect(images[0])
    assert len(single) == 1
    np.testing.assert_allclose(single[0].box, results[0][0].box, atol=1e-3)
    np.testing.assert_allclose(single[0].landmarks_array(), results[0][0].landmarks_array(), atol=1e-3)


@pytest.mark.parametrize("name", ["Junichiro_Koizumi", "Hans_Blix"])
def test_lfw_background_faces_are_all_returned_sorted_by_score(
    detector: FaceDetector, lfw_dir: Path, name: str
) -> None:
    image = load_image(lfw_dir / name / f"{name}_0001.jpg")
    dets = detector.detect(image)
    assert len(dets) == 2  # the subject and a genuine second person at the image side
    scores = [d.score for d in dets]
    assert scores == sorted(scores, reverse=True)
    central = [d for d in dets if _contains(d, 125, 125)]
    assert len(central) == 1
    _check_face(central[0], image)


def test_orl_grey_pgm_one_face_each(detector: FaceDetector, data_dir: Path) -> None:
    assert detector.config.min_face_size <= 20  # ORL faces are about 70 px wide
    images = [load_image(data_dir / "orl_faces" / rel) for rel in ORL_SAMPLE]
    for rel, image, dets in zip(ORL_SAMPLE, images, detector.detect_batch(images), strict=True):
        assert image.shape == (112, 92, 3)
        assert len(dets) == 1, f"{rel}: {[(round(d.score, 3), d.box) for d in dets]}"
        assert dets[0].score > 0.9
        assert dets[0].width > 50  # the face fills the frame
        _check_face(dets[0], image)


def test_yale_gif_without_extension_one_face_each(detector: FaceDetector, data_dir: Path) -> None:
    images = [load_image(data_dir / "yalefaces" / name) for name in YALE_SAMPLE]
    for name, image, dets in zip(YALE_SAMPLE, images, detector.detect_batch(images), strict=True):
        assert image.shape == (243, 320, 3)
        assert len(dets) == 1, f"{name}: {[(round(d.score, 3), d.box) for d in dets]}"
        assert dets[0].score > 0.9
        _check_face(dets[0], image)


def test_faces_in_video_frames(detector: FaceDetector, hamilton_clip: Path) -> None:
    frames = read_video_frames(hamilton_clip, max_side=320, max_frames=max(HAMILTON_FRAMES) + 1)
    assert len(frames) == max(HAMILTON_FRAMES) + 1
    assert all(f.shape == (180, 320, 3) and f.dtype == np.uint8 for f in frames)
    chosen = [frames[i] for i in HAMILTON_FRAMES]
    results = detector.detect_batch(chosen)
    for i, frame, dets in zip(HAMILTON_FRAMES, chosen, results, strict=True):
        assert len(dets) == 1, f"frame {i}: {[(round(d.score, 3), d.box) for d in dets]}"
        assert dets[0].score > 0.95
        _check_face(dets[0], frame)


def test_video_decoding_stops_early_and_is_full_resolution_by_default(hamilton_clip: Path) -> None:
    frames = list(iter_video_frames(hamilton_clip, max_frames=3))
    assert len(frames) == 3
    assert frames[0].shape == (360, 640, 3) and frames[0].dtype == np.uint8
    assert not np.array_equal(frames[0], np.zeros_like(frames[0]))


def test_unreadable_videos_raise_camera_error(tmp_path: Path, hamilton_clip: Path) -> None:
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(hamilton_clip.read_bytes()[:200_000])  # the index (moov) is at the end: lost
    text = tmp_path / "clip.mp4"
    text.write_text("no video here\n")
    for bad in (tmp_path / "missing.mp4", text, cut):
        with pytest.raises(CameraError, match="cannot open video"):
            read_video_frames(bad)


def test_downscaled_detection_maps_back_to_source_pixels(hamilton_clip: Path, detector: FaceDetector) -> None:
    """A 640x360 frame analysed at max_side=320 gives the coordinates of the half-size frame x 2."""
    full = read_video_frames(hamilton_clip, max_frames=151)[150]
    half = read_video_frames(hamilton_clip, max_side=320, max_frames=151)[150]
    small_detector = FaceDetector(replace(detector.config, max_side=320))
    on_full = small_detector.detect(full)
    on_half = detector.detect(half)
    assert len(on_full) == len(on_half) == 1
    np.testing.assert_allclose(on_full[0].box, np.array(on_half[0].box) * 2.0, atol=2.0)
    np.testing.assert_allclose(on_full[0].landmarks_array(), on_half[0].landmarks_array() * 2.0, atol=2.0)


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((200, 200, 3), np.uint8),
        np.full((120, 160, 3), 255, np.uint8),
        np.full((64, 64, 3), 128, np.uint8),
        np.zeros((5, 5, 3), np.uint8),  # below MTCNN's 12-px receptive field
        np.zeros((15, 15, 3), np.uint8),  # below min_face_size (20): no scale at all
        np.zeros((19, 300, 3), np.uint8),
    ],
    ids=["black", "white", "grey", "5px", "15px", "19x300"],
)
def test_no_face_gives_empty_list(detector: FaceDetector, image: np.ndarray) -> None:
    assert detector.detect(image) == []


def test_batch_keeps_input_order_across_sizes(detector: FaceDetector, lfw_dir: Path) -> None:
    face = load_image(lfw_dir / "Bill_Clinton" / "Bill_Clinton_0001.jpg")
    blank = np.zeros((100, 130, 3), np.uint8)
    tiny = np.zeros((8, 8, 3), np.uint8)
    results = detector.detect_batch([blank, face, tiny, blank])
    assert [len(r) for r in results] == [0, 1, 0, 0]
    assert detector.detect_batch([]) == []


def test_min_face_size_bounds_the_search(detector: FaceDetector, hamilton_clip: Path) -> None:
    """``min_face_size`` sets MTCNN's finest pyramid scale: smaller faces are not searched.

    It is a search bound, not a filter on the output: the box regression can return a box
    somewhat smaller than ``min_face_size`` for a face found at a coarser scale.
    """
    frame = read_video_frames(hamilton_clip, max_frames=1)[0]  # 640x360: singer + pianist (~25 px)
    default = detector.detect(frame)
    assert any(d.width < 30 for d in default)  # the pianist, far back on the left
    coarse = FaceDetector(replace(detector.config, min_face_size=60)).detect(frame)
    assert coarse and all(d.width >= 30 for d in coarse)
    larger_than_image = FaceDetector(replace(detector.config, min_face_size=400))
    assert larger_than_image.detect(frame) == []


def test_rejects_non_rgb_arrays(detector: FaceDetector) -> None:
    with pytest.raises(TypeError, match="uint8"):
        detector.detect(np.zeros((50, 50, 3), np.float32))
    with pytest.raises(TypeError):
        detector.detect(np.zeros((50, 50), np.uint8))
