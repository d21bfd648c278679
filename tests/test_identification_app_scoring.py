"""``faceapp evaluate-identification`` scores as the app does by default (GalleryIndex.identify
with the model's learned open-set normaliser, faceapp.cli.identification_scoring); ``--normaliser
none`` is the raw cosine evaluation it always was."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from fakes import TemplateDetector, orl_people_txt

from faceapp.cli import main
from faceapp.cli.identification_scoring import IDENTIFY_K, AppScoring
from faceapp.errors import FaceappError
from faceapp.gallery.matching.normalised import NORMALISED_SHORTLIST
from faceapp.nn.checkpoint import create_untrained_model, load_checkpoint, save_checkpoint
from faceapp.nn.encoder import EncoderConfig
from faceapp.nn.open_set import NORMALISER_FILE, RAW_SCORES, LearnedNormaliser
from faceapp.training import evaluation
from faceapp.training.evaluation import app_normaliser
from faceapp.training.identification import evaluate_identification
from faceapp.training.metrics import identification_report_from_scores

TINY = EncoderConfig(input_size=32, embedding_dim=16, width=8, layers=(1, 1, 1, 1))
KEYS = ("rank1", "rank5", "dir_at_fpir_0.01", "n_gallery", "n_known_probes", "n_distractor_probes")


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    path = tmp_path / "models" / "tiny.pt"
    path.parent.mkdir()
    save_checkpoint(path, create_untrained_model(TINY, seed=3).encoder)
    return path


def _normaliser(model_id: str, seed: int = 0, d: int = 16, h: int = 8) -> LearnedNormaliser:
    rng = np.random.default_rng(seed)
    shapes = {"w1": (d, h), "b1": (h,), "w2": (h, h), "b2": (h,), "w3": (h, 2), "b3": (2,)}
    layers = {k: rng.normal(scale=0.8, size=s).astype(np.float32) for k, s in shapes.items()}
    meta = {"model_id": model_id, "alpha": 0.01, "beta": 0.9, "mu_mean": 0.4, "mu_scale": 0.1,
            "logstd_mean": -2.0, "logstd_scale": 0.3}
    return LearnedNormaliser(layers, meta)


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


class _Bonus:
    """A stand-in normaliser: cosine plus a bonus per template (re-orders the shortlist)."""

    name = "bonus"
    active = True

    def __init__(self, templates: np.ndarray, bonus: np.ndarray) -> None:
        self._t, self._b = templates, bonus

    def normalise(self, probes: np.ndarray, templates: np.ndarray, scores: np.ndarray) -> np.ndarray:
        rows = [int(np.argmax(self._t @ t)) for t in templates]
        return np.asarray(scores, np.float64) + self._b[rows][None, :]


def test_app_scoring_fills_the_shortlist_and_floors_the_rest() -> None:
    rng = np.random.default_rng(0)
    gallery, probes = _unit(rng, 24, 8), _unit(rng, 5, 8)
    labels = np.repeat(np.arange(100, 112), 2)  # 12 people, 2 templates each
    bonus = rng.uniform(0, 0.3, size=24)
    out = AppScoring("m", _Bonus(gallery, bonus)).scores(gallery, labels, probes)
    assert out.shape == (5, 12) and np.isfinite(out).all()
    normed = probes.astype(np.float64) @ gallery.T.astype(np.float64) + bonus[None, :]
    per_person = normed.reshape(5, 12, 2).max(axis=2)
    cos = (probes.astype(np.float64) @ gallery.T.astype(np.float64)).reshape(5, 12, 2).max(axis=2)
    shortlist = max(IDENTIFY_K, NORMALISED_SHORTLIST)
    for i in range(5):
        found = out[i] > out.min()
        assert found.sum() == IDENTIFY_K  # the app's candidates, the rest below all of them
        assert set(np.flatnonzero(found)) <= set(np.argsort(-cos[i])[:shortlist])
        np.testing.assert_allclose(out[i, found], per_person[i, found], atol=1e-5)
        assert out[i, ~found].max() < out[i, found].min()
    # without a normaliser: the cosine scores of the best people, the same top 5 as brute force
    raw = AppScoring("m", RAW_SCORES).scores(gallery, labels, probes)
    for i in range(5):
        assert list(np.argsort(-raw[i])[:5]) == list(np.argsort(-cos[i])[:5])


def test_app_normaliser(model_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model = load_checkpoint(model_path)
    assert app_normaliser(model) is RAW_SCORES  # no file beside the model
    assert app_normaliser(create_untrained_model(TINY, seed=3)) is RAW_SCORES  # no path at all
    path = _normaliser(model.model_id).save(model_path.with_name(NORMALISER_FILE))
    assert isinstance(app_normaliser(model), LearnedNormaliser)
    assert app_normaliser(model, "none") is RAW_SCORES  # --normaliser none
    path.write_bytes(path.read_bytes()[:500])  # truncated: BadZipFile inside normaliser_for
    with caplog.at_level(logging.WARNING):
        assert app_normaliser(model) is RAW_SCORES
    assert any("not used" in r.getMessage() for r in caplog.records)


def test_app_scoring_without_normaliser_reproduces_the_cosine_figures(
    model_path: Path, data_dir: Path, tmp_path: Path
) -> None:
    """40 ORL people (20 enrolled, more than the search returns): the app's search, cosine only,
    gives the full-matrix cosine figures."""
    model = load_checkpoint(model_path)
    people = orl_people_txt(tmp_path, "p.txt", range(1, 41))
    kw = {"cache_dir": tmp_path / "cache", "detector": TemplateDetector()}
    plain = evaluate_identification(model, data_dir / "orl_faces", people, **kw)
    app = evaluate_identification(model, data_dir / "orl_faces", people,
                                  scoring=AppScoring.for_model(model), **kw)
    assert plain["n_gallery"] == 20 > IDENTIFY_K
    for key in KEYS:
        assert app[key] == pytest.approx(plain[key]), key
    assert app["threshold_fpir_0.01"] == pytest.approx(plain["threshold_fpir_0.01"], abs=1e-5)
    assert plain["open_set_normaliser"] == app["open_set_normaliser"] == "cosine"
    for agg in ("max", "mean"):
        kw2 = {**kw, "gallery_images": 2, "aggregate": agg}
        a = evaluate_identification(model, data_dir / "orl_faces", people, **kw2)
        b = evaluate_identification(model, data_dir / "orl_faces", people,
                                    scoring=AppScoring.for_model(model), **kw2)
        for key in KEYS:
            assert b[key] == pytest.approx(a[key]), (agg, key)


def orl_identification_argv(model_path: Path, data_dir: Path, tmp_path: Path,
                            monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], Path, TemplateDetector]:
    """`evaluate-identification --json` on ORL subjects 1-8 with the face stand-in for MTCNN:
    (argv, the people file, the stand-in)."""
    det = TemplateDetector()
    monkeypatch.setattr(evaluation, "detector_for", lambda model: det)
    people = orl_people_txt(tmp_path, "p.txt", range(1, 9))
    argv = ["evaluate-identification", "--model", str(model_path), "--data", str(data_dir / "orl_faces")]
    return [*argv, "--people", str(people), "--cache-dir", str(tmp_path / "cache"), "--json"], people, det


def test_default_uses_the_models_normaliser(
    model_path: Path, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv, people, det = orl_identification_argv(model_path, data_dir, tmp_path, monkeypatch)

    def run(*extra: str) -> dict:
        assert main([*argv, *extra]) == 0
        return json.loads(capsys.readouterr().out)

    before = run()  # no score_norm.npz: the app decides on cosine
    model = load_checkpoint(model_path)
    plain = evaluate_identification(model, data_dir / "orl_faces", people,
                                    cache_dir=tmp_path / "cache", detector=det)
    norm = _normaliser(model.model_id)
    norm.save(model_path.with_name(NORMALISER_FILE))
    after, none = run(), run("--normaliser", "none")
    assert before["open_set_normaliser"] == none["open_set_normaliser"] == "cosine"
    assert after["open_set_normaliser"] == "learned-snorm"
    for key in KEYS:  # --normaliser none: the old (raw cosine) figures, file or not
        assert none[key] == pytest.approx(plain[key]) and before[key] == pytest.approx(plain[key])
    # the default by hand: 4 enrolled people (all within the shortlist), normalised scores
    from faceapp.training.datasets import read_people, scan_identity_folders

    images = scan_identity_folders(data_dir / "orl_faces", list(read_people(people)))
    crops = evaluation.crops_for(model, list(images.paths), tmp_path / "cache", people.stem, det)
    emb, lab = model.encoder.embed(crops.crops), images.labels
    rng = np.random.default_rng(0)
    ids = np.unique(lab)
    distract = set(rng.choice(ids, size=round(len(ids) * 0.5), replace=False).tolist())
    g_rows = [int(np.flatnonzero(lab == c)[0]) for c in ids if c not in distract]
    p_rows = [r for r in range(len(lab)) if r not in g_rows]
    gal, prb = emb[g_rows], emb[p_rows]
    want = norm.normalise(prb, gal, prb.astype(np.float64) @ gal.T.astype(np.float64))
    expect = identification_report_from_scores(want, lab[g_rows], lab[p_rows])
    for key in KEYS:
        assert after[key] == pytest.approx(expect[key]), key
    assert after["threshold_fpir_0.01"] == pytest.approx(expect["threshold_fpir_0.01"], abs=1e-4)
    assert after["threshold_fpir_0.01"] != pytest.approx(plain["threshold_fpir_0.01"], abs=1e-4)
    agg = run("--gallery-images", "2", "--aggregate", "mean")
    assert agg["open_set_normaliser"] == "learned-snorm" and agg["aggregate"] == "mean"


def test_cohort_needs_normaliser_none_with_a_learned_normaliser(
    model_path: Path, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv, people, det = orl_identification_argv(model_path, data_dir, tmp_path, monkeypatch)
    cohort = orl_people_txt(tmp_path, "c.txt", range(9, 15))
    argv += ["--cohort", str(cohort), "--cohort-top-k", "5"]
    assert main(argv) == 0  # no learned normaliser: the cohort alone normalises
    first = json.loads(capsys.readouterr().out)
    assert first["open_set_normaliser"] == "cohort-asnorm" and first["score_norm"] == "asnorm"
    model = load_checkpoint(model_path)
    _normaliser(model.model_id).save(model_path.with_name(NORMALISER_FILE))
    assert main(argv) == 2
    assert "--normaliser none" in capsys.readouterr().err
    assert main([*argv, "--normaliser", "none"]) == 0
    again = json.loads(capsys.readouterr().out)
    for key in KEYS:
        assert again[key] == pytest.approx(first[key])
    with pytest.raises(FaceappError, match="already normalised"):
        evaluate_identification(model, data_dir / "orl_faces", people, cohort_people=cohort,
                                cache_dir=tmp_path / "cache", detector=det,
                                scoring=AppScoring.for_model(model))
