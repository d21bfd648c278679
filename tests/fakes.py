"""Stand-ins shared by several test modules: a fake face pipeline (faces encoded in tiny
images), a fake service factory, and a template detector placing one face where MTCNN puts
it on LFW / ORL images."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from faceapp.config import DetectorConfig
from faceapp.gallery import open_database
from faceapp.nn.calibration import Calibration
from faceapp.nn.scoring import CosineScorer
from faceapp.services import FaceService
from faceapp.types import AlignedFace, Detection, FaceImage
from faceapp.vision.alignment import AlignmentTemplate
from faceapp.vision.quality import FaceQuality

DIM = 16
CROP = 16


@dataclass(frozen=True)
class FakeFace:
    detection: Detection
    aligned: AlignedFace
    embedding: np.ndarray
    quality: FaceQuality
    model_id: str
    face_image: FaceImage


class FakeEncoder:
    input_size = CROP
    embedding_dim = DIM


class FakeModel:
    def __init__(self, model_id: str) -> None:
        self.model_id = model_id
        self.encoder = FakeEncoder()
        self.embedding_dim = DIM
        self.heads: dict = {}


def identity_vector(person: int, variant: int, seed: int) -> np.ndarray:
    base = np.random.default_rng([seed, person]).standard_normal(DIM)
    noise = np.random.default_rng([seed, person, variant]).standard_normal(DIM)
    v = base + 0.25 * noise
    return (v / np.linalg.norm(v)).astype(np.float32)


class FakePipeline:
    """Image row r, column 0 holds face r: (person code, variant, flags); flags: 1 = blurred.
    Column 1, channel 0 is the face size. A row with person code 0 ends the list."""

    def __init__(self, seed: int = 1) -> None:
        self.seed = seed
        self.model = FakeModel(f"fake-model-{seed}")
        self.model_id = self.model.model_id
        self.embedding_dim = DIM
        self.input_size = CROP
        self.template = None  # stored face pictures are this stand-in's crops already
        self.calls = 0

    def embed_crops(self, crops: np.ndarray) -> np.ndarray:
        return np.stack([identity_vector(int(c[0, 0, 0]), int(c[0, 0, 1]), self.seed)
                         for c in crops])

    def analyze(self, image: np.ndarray) -> list[FakeFace]:
        self.calls += 1
        faces = []
        for r in range(image.shape[0]):
            person, variant, flags = (int(v) for v in image[r, 0])
            if person == 0:
                break
            size = float(image[r, 1, 0])
            crop = np.random.default_rng([person, variant]).integers(
                0, 255, (CROP, CROP, 3), dtype=np.uint8)
            crop[0, 0] = (person, variant, 0)
            box = (10.0 * r, 0.0, 10.0 * r + size, size)
            det = Detection(box=box, score=0.99,
                            landmarks=((1, 1), (2, 1), (1.5, 2), (1, 3), (2, 3)))
            blurred = bool(flags & 1)
            quality = FaceQuality(ok=not blurred, reasons=("too blurred",) if blurred else (),
                                  face_px=size, sharpness=5.0 if blurred else 80.0, yaw=0.0,
                                  score=0.99)
            picture = FaceImage(crop, AlignmentTemplate.for_size(CROP).array())  # the crop itself
            faces.append(FakeFace(det, AlignedFace(crop, det, np.eye(2, 3)),
                                  self.embed_crops(crop[None])[0], quality, self.model_id, picture))
        return faces


def img(*faces: tuple[int, int] | tuple[int, int, int] | tuple[int, int, int, int]) -> np.ndarray:
    """An image holding faces (person, variant[, flags[, size]])."""
    a = np.zeros((max(1, len(faces)) + 1, 4, 3), dtype=np.uint8)
    for r, f in enumerate(faces):
        person, variant = f[0], f[1]
        flags = f[2] if len(f) > 2 else 0
        size = f[3] if len(f) > 3 else 100
        a[r, 0] = (person, variant, flags)
        a[r, 1, 0] = size
    return a


def calibration_for(pipeline: FakePipeline, tau: float = 0.6) -> Calibration:
    return Calibration(
        model_id=pipeline.model_id,
        scorers={"distance": {"far_0.01": tau, "far_0.001": tau + 0.1, "eer": tau - 0.1}},
    )


def make_service(db_url, pipeline=None, calibration="auto", **kw) -> FaceService:
    pipeline = pipeline or FakePipeline()
    cal = calibration_for(pipeline) if calibration == "auto" else calibration
    return FaceService(open_database(db_url), pipeline, cal,
                       scorers={"distance": CosineScorer()}, owns_engine=True, **kw)


def enroll_three(svc: FaceService) -> None:
    for person, name in ((1, "Ann"), (2, "Bob"), (3, "Cid")):
        svc.enroll(name, [img((person, 0)), img((person, 1))])


# People of LFW View-1 training (peopleDevTrain.txt) with 6-9 images each, alphabetical.
PEOPLE = (
    "Al_Gore",
    "Al_Sharpton",
    "Amelia_Vega",
    "Ana_Guevara",
    "Angela_Bassett",
    "Arminio_Fraga",
    "Bill_Graham",
    "Billy_Crystal",
)
# One face where MTCNN puts it (median landmarks (x, y) of the real detections) on 16
# LFW-deepfunneled images (every 300th person, 250x250) and on ORL s1..s16/1.pgm (112x92).
TEMPLATE_FACES = {
    (250, 250): Detection(
        (82.0, 64.0, 176.0, 187.0),
        0.99,
        ((104.9, 114.2), (147.3, 112.9), (125.3, 138.5), (108.2, 157.9), (146.4, 157.3)),
    ),
    (112, 92): Detection(
        (8.0, 22.0, 84.0, 108.0),
        0.99,
        ((28.9, 51.5), (63.1, 51.5), (45.8, 68.2), (30.5, 87.0), (61.0, 86.6)),
    ),
}
class TemplateDetector:
    """Stand-in for MTCNN (also used by the evaluation, head-training and CLI tests): one face
    as in :data:`TEMPLATE_FACES` on LFW and ORL images, no face in images of any other size.
    Counts the images it is shown."""

    def __init__(self) -> None:
        self.config = DetectorConfig(min_face_size=40)
        self.images = 0

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        self.images += len(images)
        faces = [TEMPLATE_FACES.get(im.shape[:2]) for im in images]
        return [[f] if f is not None else [] for f in faces]


def make_lfw_tree(lfw_dir: Path, root: Path) -> Path:
    """8 identities of symlinked LFW images, plus one faceless 100x100 image in the first."""
    for name in PEOPLE:
        (root / name).mkdir()
        for f in sorted((lfw_dir / name).glob("*.jpg")):
            os.symlink(f, root / name / f.name)
    Image.new("RGB", (100, 100), (90, 90, 90)).save(root / PEOPLE[0] / "zz_blank.png")
    return root


def raw_connect(path: Path | str):  # type: ignore[no-untyped-def]
    """A plain DB-API connection to a gallery file, as another program holding the key
    would open it (SQLCipher keyed from the key file; a plaintext file in clear)."""
    from faceapp.gallery.database import classify_gallery_file, connect_raw, gallery_key

    path = Path(path)
    encrypted = path.exists() and classify_gallery_file(path, create=False) == "encrypted"
    key = gallery_key(path) if encrypted else b""
    return connect_raw(path, key)


def orl_people_txt(tmp_path: Path, name: str, ids: range) -> Path:
    """A people*.txt naming ORL subjects ``s<i>`` (10 images each) under ``tmp_path``."""
    path = tmp_path / name
    path.write_text(f"{len(ids)}\n" + "".join(f"s{i}\t10\n" for i in ids))
    return path

