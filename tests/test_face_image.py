"""Model-independent face pictures in the gallery, and re-embedding a gallery for a new model
(real MTCNN, real LFW photos, the real dlib model and a small real checkpoint, real SQLite)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy.orm import Session

from faceapp.config import default_model_path
from faceapp.errors import InvalidImage
from faceapp.gallery import open_database
from faceapp.gallery.repository import GalleryRepository, NewTemplate
from faceapp.nn.checkpoint import load_checkpoint
from faceapp.nn.pipeline import FacePipeline
from faceapp.nn.scoring import CosineScorer
from faceapp.services import FaceService
from faceapp.types import FaceImage
from faceapp.vision.alignment import AlignmentTemplate, align_face, apply_transform, estimate_alignment
from faceapp.vision.face_image import (
    chip_from_face_image,
    decode_face_image,
    encode_face_image,
    extract_face_image,
    face_image_template,
    is_old_crop,
)
from faceapp.vision.images import encode_png, load_image


@pytest.fixture(scope="module")
def photo(lfw_dir: Path, detector):
    image = load_image(lfw_dir / "Colin_Powell" / "Colin_Powell_0001.jpg")
    return image, detector.detect(image)[0]


def test_face_image_template_frames_every_model_inside() -> None:
    t = face_image_template()
    pts = t.array()
    assert t.size == 256 and np.linalg.norm(pts[1] - pts[0]) == pytest.approx(64.0)
    # the dlib 150 chip and the ArcFace 112 crop, mapped into the 256 picture, lie inside it
    for model_template in (AlignmentTemplate.dlib150(), AlignmentTemplate.for_size(112)):
        m = estimate_alignment(model_template.array(), t)  # model crop -> picture
        s = model_template.size - 1
        corners = apply_transform(m, np.array([[0, 0], [s, 0], [0, s], [s, s]], float))
        assert corners.min() >= 0 and corners.max() <= 255, (model_template.name, corners)


def test_extract_maps_landmarks_and_derives_the_direct_chip(photo) -> None:
    image, det = photo
    face = extract_face_image(image, det)
    assert face.image.shape == (256, 256, 3) and face.image.dtype == np.uint8
    # landmarks: the detection's points through the same similarity (loop per point)
    m = estimate_alignment(det.landmarks_array(), face_image_template())
    for (x, y), (u, v) in zip(det.landmarks, face.landmarks, strict=True):
        assert u == pytest.approx(m[0, 0] * x + m[0, 1] * y + m[0, 2], abs=1e-9)
        assert v == pytest.approx(m[1, 0] * x + m[1, 1] * y + m[1, 2], abs=1e-9)
    # a model's chip from the picture is (nearly) the chip aligned from the photo itself
    for template in (AlignmentTemplate.dlib150(), AlignmentTemplate.for_size(96)):
        direct = align_face(image, det, template).crop.astype(float)
        derived = chip_from_face_image(face, template).astype(float)
        assert derived.shape == direct.shape
        assert np.abs(derived - direct).mean() < 4.0  # two bilinear resamplings vs one


def test_png_round_trip_and_old_crops(photo) -> None:
    image, det = photo
    face = extract_face_image(image, det)
    back = decode_face_image(encode_face_image(face))
    np.testing.assert_array_equal(back.image, face.image)
    np.testing.assert_allclose(back.landmarks, face.landmarks, atol=1e-3)
    assert back.framing == "face256" and not is_old_crop(back)
    old = align_face(image, det, AlignmentTemplate.for_size(96)).crop
    legacy = decode_face_image(encode_png(old))
    assert is_old_crop(legacy) and legacy.framing == "arcface96"
    np.testing.assert_array_equal(legacy.landmarks, AlignmentTemplate.for_size(96).array())


def test_malformed_landmarks_are_an_invalid_image() -> None:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("faceapp-face", '{"landmarks": [[1, 2]]}')
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG", pnginfo=info)
    with pytest.raises(InvalidImage, match="landmarks"):
        decode_face_image(buf.getvalue())
    with pytest.raises(InvalidImage):
        decode_face_image(b"not a png")


def test_reembed_old_gallery_for_the_dlib_default(
    tmp_path: Path, lfw_dir: Path, detector, small_model_path: Path
) -> None:
    """A gallery made with another model: one template stored by this version (a face
    picture) and one stored by older versions (its 64-px aligned crop only)."""
    url = f"sqlite:///{tmp_path / 'g.sqlite'}"
    old_pipe = FacePipeline(detector, load_checkpoint(small_model_path))
    svc = FaceService(open_database(url), old_pipe, None, scorers={"distance": CosineScorer()},
                      owns_engine=True)
    first = lfw_dir / "Colin_Powell" / "Colin_Powell_0001.jpg"
    svc.enroll("Colin Powell", [first])
    stored = svc.person_templates("Colin Powell")[0].crop_png
    assert decode_face_image(stored).image.shape == (256, 256, 3)  # model-independent picture
    svc.close()
    # an old-version template: the small model's aligned crop, no landmarks
    second = load_image(lfw_dir / "Colin_Powell" / "Colin_Powell_0002.jpg")
    old_crop = align_face(second, detector.detect(second)[0], old_pipe.template).crop
    engine = open_database(url)
    with Session(engine) as s, s.begin():
        repo = GalleryRepository(s)
        repo.add_templates(repo.get_person("Colin Powell"), [NewTemplate(
            model_id=old_pipe.model_id, embedding=old_pipe.embed_crops(old_crop[None])[0],
            crop_png=encode_png(old_crop))])
    engine.dispose()

    new_pipe = FacePipeline(detector, load_checkpoint(default_model_path()))
    svc = FaceService(open_database(url), new_pipe, None, scorers={"distance": CosineScorer()},
                      owns_engine=True)
    try:
        report = svc.reembed()
        assert (report.recomputed, report.from_old_crops) == (2, 1)
        assert "1 re-derived from old small crops" in str(report)
        templates = svc.person_templates("Colin Powell")
        assert {t.model_id for t in templates} == {new_pipe.model_id}
        # the new template is the dlib embedding of the chip derived from the stored picture
        face = decode_face_image(templates[0].crop_png)
        want = new_pipe.embed_crops(chip_from_face_image(face, new_pipe.template)[None])[0]
        with Session(svc.engine) as s:
            rows = GalleryRepository(s).templates_of(GalleryRepository(s).get_person("Colin Powell"))
            got = [np.asarray(r.embedding) for r in rows]
        np.testing.assert_allclose(got[0], want, atol=1e-5)
        # and it matches the person on another photo far better than the old crop's chip
        probe = load_image(lfw_dir / "Colin_Powell" / "Colin_Powell_0003.jpg")
        probe_emb = new_pipe.analyze(probe)[0].embedding
        assert float(want @ probe_emb) > 0.85
        assert svc.reembed().recomputed == 0
    finally:
        svc.close()


def test_face_image_is_frozen_value() -> None:
    f = FaceImage(np.zeros((4, 4, 3), np.uint8), np.zeros((5, 2)))
    with pytest.raises(AttributeError):
        f.framing = "x"  # type: ignore[misc]
