"""FaceService.pair_scores: calibration scores from a labelled pairs file (LFW format) with a
real model and real LFW photos, checked against scores computed one image at a time."""

from __future__ import annotations

import math

import numpy as np
import pytest

from faceapp.errors import CalibrationError, FaceappError
from faceapp.services import FaceService
from faceapp.training.datasets import pick_central_face
from faceapp.vision.images import load_image

PEOPLE = ("Colin_Powell", "Tony_Blair", "Gerhard_Schroeder")


@pytest.fixture(scope="module")
def service(tmp_path_factory, small_model_path):
    db = tmp_path_factory.mktemp("pairs") / "g.sqlite"
    svc = FaceService.open(f"sqlite:///{db}", model_path=small_model_path)
    yield svc
    svc.close()


def write_pairs(path, genuine, impostor):
    lines = [f"1\t{len(genuine)}"]
    lines += [f"{n}\t{a}\t{b}" for n, a, b in genuine]
    lines += [f"{n}\t{a}\t{m}\t{b}" for n, a, m, b in impostor]
    path.write_text("\n".join(lines) + "\n")
    return path


def one_embedding(svc, path):
    image = load_image(path)
    face = pick_central_face(svc.pipeline.detect(image), image.shape)
    crop = svc.pipeline.align(image, [face])[0].crop
    return svc.pipeline.embed_crops(crop[None])[0]


def test_scores_match_image_by_image_cosines(service, lfw_dir, tmp_path):
    genuine = [(p, 1, i) for p in PEOPLE for i in (2, 3)]
    impostor = [(PEOPLE[0], 1, PEOPLE[1], 1), (PEOPLE[1], 2, PEOPLE[2], 3),
                (PEOPLE[2], 1, PEOPLE[0], 4), ("Nobody_Here", 1, PEOPLE[0], 1)]
    pairs = write_pairs(tmp_path / "pairs.txt", genuine, impostor)
    seen: list[tuple[int, int]] = []
    result = service.pair_scores(pairs, lfw_dir, progress=lambda d, t: seen.append((d, t)), batch_size=4)
    # the pair with a missing image is left out and the image reported
    assert result.skipped == 1 and len(result.problems) == 1 and "Nobody_Here" in result.problems[0][0]
    assert result.same.tolist() == [True] * len(genuine) + [False] * 3
    assert seen[0] == (0, result.images) and seen[-1] == (result.images, result.images)
    for (name_a, ia, *rest), score in zip(genuine + impostor[:3], result.scores, strict=True):
        name_b, ib = (name_a, rest[0]) if len(rest) == 1 else (rest[0], rest[1])
        a = one_embedding(service, lfw_dir / name_a / f"{name_a}_{ia:04d}.jpg")
        b = one_embedding(service, lfw_dir / name_b / f"{name_b}_{ib:04d}.jpg")
        expected = math.fsum(float(x) * float(y) for x, y in zip(a, b, strict=True))
        assert score == pytest.approx(expected, abs=1e-4)


def test_bad_requests_fail_clearly(service, lfw_dir, tmp_path):
    only_genuine = write_pairs(tmp_path / "g.txt", [(PEOPLE[0], 1, 2)], [])
    with pytest.raises(FaceappError, match="both kinds"):
        service.pair_scores(only_genuine, lfw_dir)
    with pytest.raises(FaceappError, match="cannot read pairs file"):
        service.pair_scores(tmp_path / "missing.txt", lfw_dir)
    mixed = write_pairs(tmp_path / "m.txt", [(PEOPLE[0], 1, 2)], [(PEOPLE[0], 1, PEOPLE[1], 1)])
    with pytest.raises(CalibrationError):
        service.pair_scores(mixed, lfw_dir, scorer="no-such-scorer")
    with pytest.raises(FaceappError, match="stopped"):
        service.pair_scores(mixed, lfw_dir, should_stop=lambda: True)
    assert np.isfinite(service.pair_scores(mixed, lfw_dir).scores).all()
