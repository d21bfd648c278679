"""The app's decisions with the shipped model: FaceService.open loads the model's score
normaliser, and recognition (1:K), verification (1:1) and the gallery's calibration pairs are
scored by it (checked by hand from the faces' embeddings); a model without ``score_norm.npz``
decides on cosine similarity."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from faceapp.nn.open_set import LearnedNormaliser, normaliser_path_for
from faceapp.services import FaceService

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "default.pt"
PEOPLE = ("Jacques_Chirac", "Kofi_Annan", "Gloria_Macapagal_Arroyo")


def image(lfw: Path, person: str, i: int) -> str:
    return str(lfw / person / f"{person}_{i:04d}.jpg")


def by_hand(service: FaceService, lfw_dir: Path, probe_path: str,
            norm: LearnedNormaliser | None) -> dict[str, float]:
    """Each enrolled person's best template score for the probe: cosine, or normalised."""
    probe = max(service.analyze(probe_path), key=lambda f: f.detection.area).embedding
    out = {}
    for person in PEOPLE:
        templates = np.stack([max(service.analyze(image(lfw_dir, person, i)),
                                  key=lambda f: f.detection.area).embedding for i in (1, 2)])
        cos = (probe[None] @ templates.T)
        scores = cos if norm is None else norm.normalise(probe[None], templates, cos)
        out[person.replace("_", " ")] = float(scores.max())
    return out


@pytest.fixture(scope="module")
def lfw(lfw_dir):
    return lfw_dir


@pytest.mark.parametrize("with_normaliser", [True, False, "damaged"])
def test_recognition_scores_are_the_models_normalised_scores(lfw, tmp_path, with_normaliser):
    if not MODEL.is_file():
        pytest.skip("models/default.pt is not in this checkout")
    model = MODEL
    if with_normaliser is not True:  # the same model in a folder without score_norm.npz, or
        model = tmp_path / "m" / "default.pt"  # with a damaged one: 1:K on cosine, nothing fails
        model.parent.mkdir()
        shutil.copy(MODEL, model)
        shutil.copy(MODEL.with_name("calibration.json"), model.parent)
        if with_normaliser == "damaged":
            data = normaliser_path_for(MODEL).read_bytes()
            normaliser_path_for(model).write_bytes(data[: len(data) // 3])
    service = FaceService.open(f"sqlite:///{tmp_path / 'g.sqlite'}", model_path=model)
    try:
        for person in PEOPLE:
            report = service.enroll(person.replace("_", " "),
                                    [image(lfw, person, i) for i in (1, 2)], largest=True)
            assert report.templates_added == 2, report
        norm = LearnedNormaliser.load(normaliser_path_for(MODEL), service.model_id)
        probe = image(lfw, "Kofi_Annan", 5)
        face = max(service.recognize(probe),
                   key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
        want = by_hand(service, lfw, probe, norm if with_normaliser is True else None)
        got = dict(face.candidates)
        assert set(got) == set(want)
        for name, score in want.items():
            assert got[name] == pytest.approx(score, abs=2e-5)
        assert [n for n, _ in face.candidates] == sorted(want, key=lambda n: -want[n])
        assert face.person == "Kofi Annan"
        # 1:1 decides on the same normalised scores (cosine without the normaliser)
        for name, score in want.items():
            v = service.verify(name, probe, largest=True)
            assert v.score == pytest.approx(score, abs=2e-5)
            assert v.match == (score >= v.threshold)
        # and the Calibrate page's gallery pairs are scored as verify scores them
        templates = np.stack([max(service.analyze(image(lfw, p, i)), key=lambda f: f.detection.area)
                              .embedding for p in PEOPLE for i in (1, 2)])
        cos = templates @ templates.T
        full = cos if with_normaliser is not True else norm.normalise(templates, templates, cos)
        iu = np.triu_indices(len(templates), k=1)
        scores, same = service.gallery_scores()
        np.testing.assert_allclose(np.sort(scores), np.sort(full[iu]), atol=2e-5)
        assert int(same.sum()) == len(PEOPLE)
        # a labelled pairs file (the Calibrate page's other source) likewise
        pairs = tmp_path / "pairs.txt"
        pairs.write_text(f"1\n{PEOPLE[0]}\t1\t2\n{PEOPLE[0]}\t1\t{PEOPLE[1]}\t2\n")
        got_pairs = service.pair_scores(pairs, lfw)
        a, b, c = templates[0], templates[1], templates[3]
        want_pairs = np.array([a @ b, a @ c])
        if with_normaliser is True:
            want_pairs = norm.normalise_pairs(np.stack([a, a]), np.stack([b, c]), want_pairs)
        np.testing.assert_allclose(got_pairs.scores, want_pairs, atol=2e-5)
        if with_normaliser is True:  # not the cosine scores (the normaliser did something)
            cos = by_hand(service, lfw, probe, None)
            assert max(abs(cos[n] - want[n]) for n in want) > 1e-3
    finally:
        service.close()
