"""Datasets: LFW protocol files, identity folders and the on-disk cache of aligned crops.

Real files only: the LFW protocol files and images, ORL's folders (``../shared/data``). The crop
cache runs the real MTCNN behind a counting proxy, so the tests see exactly which images were
(re)detected. Its ``min_face_size`` is 60 px (the faces used are about 95 px wide in LFW and 70 px
in ORL): a shorter image pyramid than the default 20 px keeps the module fast on a shared CPU.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceapp.config import DetectorConfig
from faceapp.errors import FaceappError
from faceapp.training.datasets import (
    STATUS_DETECTED,
    STATUS_FAILED,
    STATUS_FALLBACK,
    CropSet,
    build_crop_cache,
    pick_central_face,
    read_pairs,
    read_people,
    scan_identity_folders,
)
from faceapp.types import Detection
from faceapp.vision.alignment import AlignmentTemplate, align_face
from faceapp.vision.detection import FaceDetector
from faceapp.vision.images import load_image

# First images of people whose first image shows exactly one face (see tests/test_detection.py).
LFW_PEOPLE = (
    "Alejandro_Toledo",
    "Alvaro_Uribe",
    "Amelie_Mauresmo",
    "Andre_Agassi",
    "Angelina_Jolie",
    "Ariel_Sharon",
)
ORL_IMAGES = ("s1/1.pgm", "s22/4.pgm")
CROP = 48


# ----------------------------------------------------------------------------- people files


def _parse_people_by_hand(path: Path) -> tuple[list[str], list[int], list[int]]:
    """(names in order, their counts, the per-fold count lines) by an independent parse."""
    names, counts, folds = [], [], []
    for line in path.read_text().splitlines()[1:]:
        parts = line.split("\t") if "\t" in line else line.split()
        if len(parts) == 2:
            names.append(parts[0])
            counts.append(int(parts[1]))
        elif len(parts) == 1 and parts[0].strip():
            folds.append(int(parts[0]))
    return names, counts, folds


def test_read_people_dev_train(data_dir: Path, lfw_dir: Path) -> None:
    path = data_dir / "lfw" / "peopleDevTrain.txt"
    people = read_people(path)
    names, counts, _ = _parse_people_by_hand(path)
    assert len(people) == 4038 == int(path.read_text().split()[0])
    assert list(people) == names  # file order kept
    assert list(people.values()) == counts
    # the counts are the real number of images in each identity folder (sampled every 400th)
    for name in names[::400]:
        assert people[name] == len(list((lfw_dir / name).glob("*.jpg"))), name


def test_read_people_view2_merges_folds(data_dir: Path) -> None:
    path = data_dir / "lfw" / "people.txt"
    people = read_people(path)
    names, counts, folds = _parse_people_by_hand(path)
    assert len(folds) == 10  # one count line per fold ...
    assert len(people) == sum(folds) == len(names)  # ... and every fold read, counts skipped
    assert not any(name.isdigit() for name in people)
    assert dict(zip(names, counts, strict=True)) == people


def test_read_people_errors(tmp_path: Path) -> None:
    bad = tmp_path / "people.txt"
    bad.write_text("2\nAl_Gore\t8\nthis line has three\n")
    with pytest.raises(FaceappError, match="unexpected line"):
        read_people(bad)
    with pytest.raises(FaceappError, match="cannot read"):
        read_people(tmp_path / "missing.txt")


# ------------------------------------------------------------------------------ pairs files


def test_read_pairs_dev_test(data_dir: Path, lfw_dir: Path) -> None:
    pairs = read_pairs(data_dir / "lfw" / "pairsDevTest.txt", lfw_dir)
    assert len(pairs) == 1000
    assert [p.same for p in pairs] == [True] * 500 + [False] * 500
    for p in pairs:
        assert p.a.is_file() and p.b.is_file(), p
        if p.same:
            assert p.a.parent == p.b.parent and p.a != p.b
        else:
            assert p.a.parent.name != p.b.parent.name


def test_read_pairs_hand_written(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    f = tmp_path / "pairs.txt"
    f.write_text("1\t2\nAl_Gore\t1\t3\n\nAl_Gore\t2\tBill_Graham\t9\nAmelia_Vega 7 12\n")
    pairs = read_pairs(f, root)
    assert [(p.a, p.b, p.same) for p in pairs] == [
        (root / "Al_Gore" / "Al_Gore_0001.jpg", root / "Al_Gore" / "Al_Gore_0003.jpg", True),
        (root / "Al_Gore" / "Al_Gore_0002.jpg", root / "Bill_Graham" / "Bill_Graham_0009.jpg", False),
        (root / "Amelia_Vega" / "Amelia_Vega_0007.jpg", root / "Amelia_Vega" / "Amelia_Vega_0012.jpg", True),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [("1\nAl_Gore 1\n", "unexpected line"), ("1\nA 1 B 2 C\n", "unexpected line"), ("0\n", "no pairs")],
)
def test_read_pairs_errors(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "pairs.txt"
    f.write_text(text)
    with pytest.raises(FaceappError, match=message):
        read_pairs(f, tmp_path)
    with pytest.raises(FaceappError, match="cannot read"):
        read_pairs(tmp_path / "missing.txt", tmp_path)


# ----------------------------------------------------------------------- identity folders


def test_scan_orl(data_dir: Path) -> None:
    root = data_dir / "orl_faces"
    images = scan_identity_folders(root)
    assert len(images.names) == 40 and len(images.paths) == 400
    assert list(images.names) == sorted(f"s{i}" for i in range(1, 41))  # README etc. are not people
    assert images.labels.dtype == np.int64
    assert np.bincount(images.labels).tolist() == [10] * 40
    for path, label in zip(images.paths, images.labels, strict=True):
        assert path.parent.name == images.names[label]
        assert path.suffix == ".pgm"


def test_scan_tmp_tree(tmp_path: Path) -> None:
    for rel in ("bob/a.jpg", "bob/b.PNG", "bob/notes.txt", "alice/photo", "alice/x.pgm"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    (tmp_path / "bob" / "sub").mkdir()  # a folder inside an identity is not an image
    (tmp_path / "empty").mkdir()
    (tmp_path / "README").write_text("not a person")
    images = scan_identity_folders(tmp_path)
    assert images.names == ("alice", "bob")  # the empty folder is dropped, labels stay contiguous
    rel = [p.relative_to(tmp_path).as_posix() for p in images.paths]
    assert rel == ["alice/photo", "alice/x.pgm", "bob/a.jpg", "bob/b.PNG"]  # no ending: tried
    assert images.labels.tolist() == [0, 0, 1, 1]

    only_bob = scan_identity_folders(tmp_path, ["bob"])
    assert only_bob.names == ("bob",) and only_bob.labels.tolist() == [0, 0]
    with pytest.raises(FaceappError, match="missing"):
        scan_identity_folders(tmp_path, ["bob", "carol"])
    with pytest.raises(FaceappError, match="not found"):
        scan_identity_folders(tmp_path / "nowhere")


# ---------------------------------------------------------------------- pick_central_face


def _det(x1: float, y1: float, x2: float, y2: float) -> Detection:
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return Detection(
        (x1, y1, x2, y2), 0.99, ((cx - 5, cy), (cx + 5, cy), (cx, cy + 3), (cx - 4, cy + 8), (cx + 4, cy + 8))
    )


def test_pick_central_face() -> None:
    shape = (200, 300, 3)
    big_corner = _det(0, 0, 100, 100)
    central = _det(110, 60, 190, 140)
    tiny_centre = _det(145, 95, 155, 105)  # 10 px < 20% of 200: a background face
    assert pick_central_face([big_corner, tiny_centre, central], shape) == central
    assert pick_central_face([big_corner, tiny_centre], shape) == big_corner
    assert pick_central_face([tiny_centre], shape) is None
    assert pick_central_face([], shape) is None


# -------------------------------------------------------------------------------- crop cache


class CountingDetector:
    """Proxy around the real detector: counts calls and images, records what it returned."""

    def __init__(self, inner: FaceDetector) -> None:
        self.inner = inner
        self.config = inner.config
        self.calls = 0
        self.seen: list[tuple[np.ndarray, list[Detection]]] = []

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        self.calls += 1
        out = self.inner.detect_batch(images)
        self.seen.extend(zip(images, out, strict=True))
        return out

    @property
    def images(self) -> int:
        return len(self.seen)

    def detections_of(self, image: np.ndarray) -> list[Detection]:
        found = [d for im, d in self.seen if im.shape == image.shape and np.array_equal(im, image)]
        assert len(found) == 1
        return found[0]


@pytest.fixture(scope="module")
def crop_files(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """6 LFW + 2 ORL real images, then a blank PNG, a corrupt JPEG, an empty and a missing file."""
    lfw = data_dir / "lfw" / "lfw-deepfunneled"
    real = [lfw / n / f"{n}_0001.jpg" for n in LFW_PEOPLE] + [data_dir / "orl_faces" / r for r in ORL_IMAGES]
    odd = tmp_path_factory.mktemp("odd")
    Image.new("RGB", (250, 250), (128, 128, 128)).save(odd / "blank.png")
    (odd / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg" * 10)
    (odd / "empty.jpg").write_bytes(b"")
    return [*real, odd / "blank.png", odd / "broken.jpg", odd / "empty.jpg", odd / "missing.jpg"]


@pytest.fixture(scope="module")
def mtcnn() -> FaceDetector:
    return FaceDetector(DetectorConfig(min_face_size=60))


@pytest.fixture(scope="module")
def first_run(mtcnn: FaceDetector, crop_files: list[Path], tmp_path_factory: pytest.TempPathFactory):
    cache = tmp_path_factory.mktemp("crop-cache")
    proxy = CountingDetector(mtcnn)
    crops = build_crop_cache(crop_files, AlignmentTemplate.for_size(CROP), proxy, cache, name="mix")
    return crops, proxy, cache


def test_crop_cache_first_run(first_run, crop_files: list[Path]) -> None:
    crops, proxy, cache = first_run
    assert isinstance(crops, CropSet)
    assert crops.paths == tuple(crop_files)
    assert crops.crops.shape == (len(crop_files), CROP, CROP, 3) and crops.crops.dtype == np.uint8
    assert crops.status.dtype == np.int8
    assert crops.status.tolist() == [STATUS_DETECTED] * 8 + [STATUS_FALLBACK] + [STATUS_FAILED] * 3
    assert crops.counts() == {"detected": 8, "fallback": 1, "failed": 3}
    assert proxy.images == 9  # the unreadable files never reach the detector
    assert len(list(cache.glob("mix-*.npz"))) == 1
    assert crops.index()[crop_files[3]] == 3

    template = AlignmentTemplate.for_size(CROP)
    landmarks = []
    for i, path in enumerate(crop_files[:8]):
        image = load_image(path)
        face = pick_central_face(proxy.detections_of(image), image.shape)
        assert face is not None
        landmarks.append(face.landmarks_array())
        np.testing.assert_array_equal(crops.crops[i], align_face(image, face, template).crop)
        assert crops.crops[i].std() > 10  # a real face, not a flat patch

    # the blank image has no face: aligned with the median landmarks of the detected images
    # that fit inside it (all eight here), a stated centre crop
    blank = load_image(crop_files[8])
    assert proxy.detections_of(blank) == []
    med = np.median(np.stack(landmarks), axis=0)
    fallback = Detection((0.0, 0.0, 250.0, 250.0), 0.0, tuple(map(tuple, med.tolist())))  # type: ignore[arg-type]
    np.testing.assert_array_equal(crops.crops[8], align_face(blank, fallback, template).crop)
    # unreadable, empty and missing files: black crops, reported as failed
    assert not crops.crops[9:].any()


def test_crop_cache_second_run_uses_cache(first_run, crop_files: list[Path]) -> None:
    crops, first_proxy, cache = first_run
    before = {f: f.stat().st_mtime_ns for f in cache.iterdir()}
    proxy = CountingDetector(first_proxy.inner)
    again = build_crop_cache(crop_files, AlignmentTemplate.for_size(CROP), proxy, cache, name="mix")
    assert proxy.calls == 0 and proxy.images == 0
    np.testing.assert_array_equal(again.crops, crops.crops)
    np.testing.assert_array_equal(again.status, crops.status)
    assert {f: f.stat().st_mtime_ns for f in cache.iterdir()} == before  # nothing rewritten

    # another list made of some of the same files, in another order, under another name
    subset = [crop_files[5], crop_files[0], crop_files[8]]
    other = build_crop_cache(subset, AlignmentTemplate.for_size(CROP), proxy, cache, name="other")
    assert proxy.images == 0
    np.testing.assert_array_equal(other.crops, crops.crops[[5, 0, 8]])
    assert other.status.tolist() == [STATUS_DETECTED, STATUS_DETECTED, STATUS_FALLBACK]


def test_crop_cache_changed_file_is_redone(
    first_run, crop_files: list[Path], data_dir: Path, tmp_path: Path
) -> None:
    crops, first_proxy, cache = first_run
    cache_copy = tmp_path / "cache"
    shutil.copytree(cache, cache_copy)
    files = tmp_path / "files"
    files.mkdir()
    paths = []
    for i, src in enumerate(crop_files[:3]):
        paths.append(files / f"{i}{src.suffix}")
        shutil.copyfile(src, paths[-1])
    # same file name, new content: another person's photo
    shutil.copyfile(data_dir / "lfw" / "lfw-deepfunneled" / "Al_Gore" / "Al_Gore_0001.jpg", paths[1])
    proxy = CountingDetector(first_proxy.inner)
    out = build_crop_cache(paths, AlignmentTemplate.for_size(CROP), proxy, cache_copy, name="mix")
    assert proxy.images == 1
    assert np.array_equal(proxy.seen[0][0], load_image(paths[1]))
    np.testing.assert_array_equal(out.crops[[0, 2]], crops.crops[[0, 2]])  # copies: same content key
    assert out.status[1] == STATUS_DETECTED
    assert not np.array_equal(out.crops[1], crops.crops[1])


def test_crop_cache_settings_are_part_of_the_key(first_run, crop_files: list[Path]) -> None:
    _, first_proxy, cache = first_run
    proxy = CountingDetector(first_proxy.inner)
    orl = [crop_files[6]]
    small = build_crop_cache(orl, AlignmentTemplate.for_size(32), proxy, cache, name="mix")
    assert proxy.images == 1  # another crop size: not taken from the 48-px cache
    assert small.crops.shape == (1, 32, 32, 3) and small.status.tolist() == [STATUS_DETECTED]


def test_crop_cache_ignores_a_damaged_cache_file(
    first_run, crop_files: list[Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    crops, first_proxy, cache = first_run
    cache_copy = tmp_path / "cache"
    shutil.copytree(cache, cache_copy)
    good = next(cache_copy.glob("mix-*.npz"))
    settings = good.name.rsplit("-", 1)[1]
    (cache_copy / f"aaa-{settings}").write_bytes(b"not an npz file")  # read first (sorted)
    proxy = CountingDetector(first_proxy.inner)
    with caplog.at_level(logging.WARNING, logger="faceapp.training.datasets"):
        again = build_crop_cache(
            crop_files[:2], AlignmentTemplate.for_size(CROP), proxy, cache_copy, name="x"
        )
    assert proxy.images == 0
    np.testing.assert_array_equal(again.crops, crops.crops[:2])
    assert any("unreadable crop cache" in r.getMessage() for r in caplog.records)


def test_crop_cache_unreadable_only(
    first_run, crop_files: list[Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A list of unreadable files (and a faceless image with nothing to borrow landmarks from)."""
    _, first_proxy, _ = first_run
    proxy = CountingDetector(first_proxy.inner)
    with caplog.at_level(logging.WARNING, logger="faceapp.training.datasets"):
        out = build_crop_cache(
            crop_files[8:], AlignmentTemplate.for_size(CROP), proxy, tmp_path / "fresh", name="odd"
        )
    assert proxy.images == 1  # only the blank image could be decoded
    assert out.status.tolist() == [STATUS_FAILED] * 4
    assert out.counts() == {"detected": 0, "fallback": 0, "failed": 4}
    assert not out.crops.any()
    messages = " ".join(r.getMessage() for r in caplog.records)
    for name in ("broken.jpg", "empty.jpg", "missing.jpg"):
        assert name in messages
