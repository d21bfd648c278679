"""Evaluation: the LFW pair protocol, calibration.json, the evaluate CLI and identification.

Real LFW / ORL images, a tiny randomly initialised (seeded) encoder saved to a temp file, and
the stand-in detector of ``test_trainer`` (MTCNN is too slow on the shared CPU for these tests;
the crop cache lives in ``tmp_path``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from fakes import TEMPLATE_FACES, TemplateDetector
from PIL import Image

from faceapp.cli import main
from faceapp.errors import FaceappError
from faceapp.nn.calibration import CALIBRATION_FILE, Calibration, calibration_path_for
from faceapp.nn.checkpoint import add_head, create_untrained_model, load_checkpoint, save_checkpoint
from faceapp.nn.encoder import EncoderConfig
from faceapp.nn.heads import BinaryVerificationHead
from faceapp.training import evaluation
from faceapp.training.evaluation import (
    evaluate_pairs,
    evaluate_pairs_cli,
    update_calibration,
)
from faceapp.training.identification import evaluate_identification
from faceapp.vision.alignment import AlignmentTemplate, align_face
from faceapp.vision.images import load_image

TINY = EncoderConfig(input_size=32, embedding_dim=16, width=8, layers=(1, 1, 1, 1))
PROTOCOL_KEYS = {
    "accuracy",
    "accuracy_std",
    "auc",
    "eer",
    "tar_at_far_0.01",
    "tar_at_far_0.001",
    "threshold",
    "pairs",
    "scorer",
}
REPORT_KEYS = PROTOCOL_KEYS | {
    "threshold_far_0.01",
    "threshold_far_0.001",
    "threshold_eer",
    "model_id",
    "score_normaliser",
    "pairs_file",
    "images",
    "images_without_detected_face",
}


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    model = create_untrained_model(TINY, seed=3)
    path = tmp_path / "models" / "tiny.pt"
    save_checkpoint(path, model.encoder)
    return path


@pytest.fixture(scope="module")
def small_pairs(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 20 matched and the first 20 mismatched lines of pairsDevTest.txt."""
    lines = (data_dir / "lfw" / "pairsDevTest.txt").read_text().splitlines()
    same = [ln for ln in lines[1:] if len(ln.split()) == 3][:20]
    diff = [ln for ln in lines[1:] if len(ln.split()) == 4][:20]
    path = tmp_path_factory.mktemp("pairs") / "pairsSmall.txt"
    path.write_text("\n".join(["20", *same, *diff]) + "\n")
    return path


@pytest.fixture
def no_mtcnn(monkeypatch: pytest.MonkeyPatch) -> TemplateDetector:
    """Every model-derived detector (CLI paths) is the stand-in."""
    det = TemplateDetector()
    monkeypatch.setattr(evaluation, "detector_for", lambda model: det)
    return det


def _brute_auc(scores: np.ndarray, same: np.ndarray) -> float:
    gen, imp = scores[same], scores[~same]
    total = 0.0
    for g in gen:
        for i in imp:
            total += 1.0 if g > i else 0.5 if g == i else 0.0
    return total / (len(gen) * len(imp))


def _embed_pair_images(model_path: Path, a: Path, b: Path) -> tuple[np.ndarray, np.ndarray]:
    model = load_checkpoint(model_path)
    template = AlignmentTemplate.for_size(TINY.input_size)
    crops = []
    for p in (a, b):
        im = load_image(p)
        crops.append(align_face(im, TEMPLATE_FACES[im.shape[:2]], template).crop)
    emb = model.encoder.embed(np.stack(crops))
    return emb[0], emb[1]


def test_evaluate_pairs_report(model_path: Path, small_pairs: Path, lfw_dir: Path, tmp_path: Path) -> None:
    model = load_checkpoint(model_path)
    det = TemplateDetector()
    reports, raw = evaluate_pairs(model, lfw_dir, small_pairs, cache_dir=tmp_path / "cache", detector=det)
    assert len(reports) == 1
    rep = reports[0]
    assert set(rep) == REPORT_KEYS
    lines = [ln.split() for ln in small_pairs.read_text().splitlines()[1:]]
    files = {(p[0], int(p[1])) for p in lines} | {
        (p[0], int(p[2])) if len(p) == 3 else (p[2], int(p[3])) for p in lines
    }
    assert rep["pairs"] == 40 and rep["images"] == len(files) == det.images
    assert rep["scorer"] == "distance" and rep["model_id"] == model.model_id
    assert rep["pairs_file"] == "pairsSmall.txt" and rep["images_without_detected_face"] == 0

    scores, same = raw["distance"]
    assert same.tolist() == [True] * 20 + [False] * 20
    # the score of a pair is the cosine of the embeddings of its two aligned images
    for k in (0, 7, 20, 39):
        p = lines[k]
        a = lfw_dir / p[0] / f"{p[0]}_{int(p[1]):04d}.jpg"
        b = (
            lfw_dir / p[0] / f"{p[0]}_{int(p[2]):04d}.jpg"
            if len(p) == 3
            else lfw_dir / p[2] / f"{p[2]}_{int(p[3]):04d}.jpg"
        )
        ea, eb = _embed_pair_images(model_path, a, b)
        assert scores[k] == pytest.approx(float(ea @ eb), abs=1e-5)

    assert rep["auc"] == pytest.approx(_brute_auc(scores, same), abs=1e-12)
    # the reported threshold is a best-accuracy threshold over all pairs (brute force)
    acc_at = [np.mean((scores >= t) == same) for t in [*scores, np.inf]]
    assert np.mean((scores >= rep["threshold"]) == same) == pytest.approx(max(acc_at))
    # with 20 impostors, FAR <= 1% means no impostor accepted: TAR = genuine above every impostor
    tar = float(np.mean(scores[same] > scores[~same].max()))
    assert rep["tar_at_far_0.01"] == pytest.approx(tar) == rep["tar_at_far_0.001"]
    assert 0.0 <= rep["accuracy"] <= 1.0 and rep["accuracy_std"] >= 0.0
    assert 0.0 <= rep["eer"] <= 1.0

    # second evaluation: every crop from the cache
    det2 = TemplateDetector()
    again, _ = evaluate_pairs(model, lfw_dir, small_pairs, cache_dir=tmp_path / "cache", detector=det2)
    assert det2.images == 0 and again == reports


def test_calibration_written_beside_the_model(
    model_path: Path, small_pairs: Path, lfw_dir: Path, tmp_path: Path, no_mtcnn: TemplateDetector
) -> None:
    reports = evaluate_pairs_cli(
        model_path,
        str(lfw_dir),
        str(small_pairs),
        scorer="distance",
        plots=None,
        write_calibration=True,
        cache_dir=str(tmp_path / "cache"),
    )
    rep = reports[0]
    path = model_path.parent / CALIBRATION_FILE
    assert path == calibration_path_for(model_path) and path.is_file()
    raw = json.loads(path.read_text())
    model_id = load_checkpoint(model_path).model_id
    assert raw["model_id"] == model_id
    assert raw["source"] == {"pairs": "pairsSmall.txt", "n_pairs": 40, "score_normaliser": "cosine"}
    entry = raw["scorers"]["distance"]
    assert entry["far_0.01"] == rep["threshold_far_0.01"]
    assert entry["far_0.001"] == rep["threshold_far_0.001"]
    assert entry["eer"] == rep["threshold_eer"]
    assert entry["accuracy"] == rep["threshold"]
    assert entry["metrics"]["auc"] == rep["auc"]
    cal = Calibration.load_for(model_path, model_id)
    assert cal.threshold("distance") == rep["threshold_far_0.01"]
    assert cal.threshold("distance", "eer") == rep["threshold_eer"]

    # a user override survives re-evaluation of the same model ...
    cal.overrides["distance"] = 0.42
    cal.save(path)
    model = load_checkpoint(model_path)
    update_calibration(model, reports, {"pairs": "again"})
    again = Calibration.load(path)
    assert again.overrides == {"distance": 0.42} and again.source == {"pairs": "again"}
    # ... but a calibration made for other weights is replaced, not merged
    other = Calibration(
        model_id="0" * 16, scorers={"head_l1": {"far_0.01": 0.5}}, overrides={"distance": 0.1}
    )
    other.save(path)
    update_calibration(model, reports, {})
    fresh = Calibration.load(path)
    assert fresh.model_id == model_id and set(fresh.scorers) == {"distance"} and fresh.overrides == {}


def test_evaluate_cli_json_and_plots(
    model_path: Path,
    small_pairs: Path,
    lfw_dir: Path,
    tmp_path: Path,
    no_mtcnn: TemplateDetector,
    capsys: pytest.CaptureFixture[str],
) -> None:
    plots = tmp_path / "plots"
    argv = ["evaluate", "--model", str(model_path), "--data", str(lfw_dir), "--pairs", str(small_pairs)]
    argv += ["--cache-dir", str(tmp_path / "cache"), "--json", "--plots", str(plots)]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= PROTOCOL_KEYS and out["pairs"] == 40 and out["scorer"] == "distance"
    model = load_checkpoint(model_path)
    expected, _ = evaluate_pairs(model, lfw_dir, small_pairs, cache_dir=tmp_path / "cache")
    assert out == json.loads(json.dumps(expected[0]))
    assert not (model_path.parent / CALIBRATION_FILE).exists()  # evaluation is read-only
    assert main([*argv, "--write-calibration"]) == 0
    capsys.readouterr()
    assert (model_path.parent / CALIBRATION_FILE).is_file()  # written only when asked
    assert sorted(p.name for p in plots.iterdir()) == ["hist_distance.png", "roc_distance.png"]
    for name, colour in (("roc_distance.png", (200, 30, 30)), ("hist_distance.png", (30, 160, 30))):
        img = np.asarray(Image.open(plots / name).convert("RGB"))
        assert img.shape == (480, 640, 3)
        assert (img == colour).all(axis=2).sum() > 50  # the curve is drawn

    # plain text output
    assert main([*argv[:-3], "--no-calibration"]) == 0
    text = capsys.readouterr().out
    assert "accuracy" in text and "tar_at_far_0.01" in text


def test_evaluate_cli_scorers(
    model_path: Path,
    small_pairs: Path,
    lfw_dir: Path,
    tmp_path: Path,
    no_mtcnn: TemplateDetector,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["evaluate", "--model", str(model_path), "--data", str(lfw_dir), "--pairs", str(small_pairs)]
    argv += ["--cache-dir", str(tmp_path / "cache"), "--json"]
    assert main([*argv, "--scorer", "head"]) == 2  # no head trained yet: one clear line
    err = capsys.readouterr().err
    assert err.startswith("error:") and "train-head" in err and len(err.strip().splitlines()) == 1
    assert not (model_path.parent / CALIBRATION_FILE).exists()
    assert no_mtcnn.images == 0  # refused before any image was processed

    add_head(model_path, BinaryVerificationHead(TINY.embedding_dim, "l1"))
    assert main([*argv, "--scorer", "all", "--write-calibration"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["scorer"] for r in out] == ["distance", "head_l1"]
    for r in out:
        assert set(r) >= PROTOCOL_KEYS
    assert 0.0 < out[1]["threshold"] < 1.0  # a probability threshold
    cal = json.loads((model_path.parent / CALIBRATION_FILE).read_text())
    assert set(cal["scorers"]) == {"distance", "head_l1"}


def test_too_few_pairs_for_ten_folds(model_path: Path, lfw_dir: Path, tmp_path: Path) -> None:
    f = tmp_path / "pairsTiny.txt"
    f.write_text("9\n" + "".join(f"Al_Gore\t1\t{i}\n" for i in range(2, 9)) + "Al_Gore\t1\tBill_Graham\t1\n")
    det = TemplateDetector()
    with pytest.raises(FaceappError, match="too few pairs"):
        evaluate_pairs(load_checkpoint(model_path), lfw_dir, f, cache_dir=tmp_path / "c", detector=det)
    assert det.images == 0


# ---------------------------------------------------------------------------- identification

IDENT_KEYS = {"rank1", "rank5", "dir_at_fpir_0.01"}


@pytest.fixture(scope="module")
def orl_people(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """people file with 8 ORL subjects (10 images each)."""
    path = tmp_path_factory.mktemp("orl") / "peopleORL.txt"
    path.write_text("8\n" + "".join(f"s{i}\t10\n" for i in range(1, 9)))
    return path


def test_evaluate_identification_orl(
    model_path: Path, data_dir: Path, orl_people: Path, tmp_path: Path
) -> None:
    model = load_checkpoint(model_path)
    det = TemplateDetector()
    rep = evaluate_identification(
        model, data_dir / "orl_faces", orl_people, cache_dir=tmp_path / "cache", detector=det
    )
    assert det.images == 80  # only the 8 listed subjects
    assert set(rep) >= IDENT_KEYS
    # half of the 8 identities are distractors: 4 enrolled (one image each), 4 x 9 known probes,
    # 4 x 10 distractor probes
    assert (rep["n_gallery"], rep["n_known_probes"], rep["n_distractor_probes"]) == (4, 36, 40)
    for k in IDENT_KEYS:
        assert 0.0 <= rep[k] <= 1.0
    assert rep["rank1"] <= rep["rank5"] == 1.0  # only 4 gallery identities: the truth is in the top 5
    assert rep["dir_at_fpir_0.01"] <= rep["rank1"]
    assert rep["model_id"] == model.model_id and rep["images_without_detected_face"] == 0


def test_evaluate_identification_exact_on_duplicates(
    model_path: Path, data_dir: Path, tmp_path: Path
) -> None:
    """Every probe of an enrolled identity is the very image enrolled: rank-1 must be exact."""
    root = tmp_path / "dups"
    for i in range(1, 7):
        (root / f"s{i}").mkdir(parents=True)
        for j in range(3):
            os.symlink(data_dir / "orl_faces" / f"s{i}" / "1.pgm", root / f"s{i}" / f"{j}.pgm")
    rep = evaluate_identification(
        load_checkpoint(model_path), root, None, cache_dir=tmp_path / "cache", detector=TemplateDetector()
    )
    assert (rep["n_gallery"], rep["n_known_probes"], rep["n_distractor_probes"]) == (3, 6, 9)
    assert rep["rank1"] == 1.0


def test_evaluate_identification_cli(
    model_path: Path,
    data_dir: Path,
    orl_people: Path,
    tmp_path: Path,
    no_mtcnn: TemplateDetector,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["evaluate-identification", "--model", str(model_path), "--data", str(data_dir / "orl_faces")]
    argv += ["--people", str(orl_people), "--cache-dir", str(tmp_path / "cache"), "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= IDENT_KEYS and out["n_gallery"] == 4
    # no identity left to enrol: a clear error, not a traceback
    assert main([*argv, "--distractor-fraction", "1.0"]) == 2
    assert "no identity left for the gallery" in capsys.readouterr().err
    with pytest.raises(FaceappError):
        evaluate_identification(
            load_checkpoint(model_path),
            data_dir / "orl_faces",
            orl_people,
            distractor_fraction=1.0,
            cache_dir=tmp_path / "cache",
            detector=TemplateDetector(),
        )


# ---------------------------------------------------------------------- calibrate-model
def test_calibration_pairs_invariants() -> None:
    labels = np.array([0, 0, 0, 1, 1, 2, 3, 3, 3, 3])
    a, b, same = evaluation.sample_calibration_pairs(labels, impostor_pairs=25, genuine_per_person=4, seed=1)
    gen = {(int(x), int(y)) for x, y, s in zip(a, b, same, strict=True) if s}
    imp = [(int(x), int(y)) for x, y, s in zip(a, b, same, strict=True) if not s]
    # brute force: every same-label pair, capped per identity (3 + 1 + 0 + min(6, 4))
    all_gen = {(i, j) for i in range(10) for j in range(i + 1, 10) if labels[i] == labels[j]}
    assert gen <= all_gen and len(gen) == 3 + 1 + 4
    assert len(imp) == 25 == len(set(imp))
    assert all(i < j and labels[i] != labels[j] for i, j in imp)
    with pytest.raises(FaceappError, match="impostor pairs exist"):
        evaluation.sample_calibration_pairs(labels, impostor_pairs=1000, genuine_per_person=4)


def test_calibration_entry_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    same = np.r_[np.ones(300, bool), np.zeros(20_000, bool)]
    scores = np.r_[rng.normal(0.8, 0.1, 300), rng.normal(0.2, 0.15, 20_000)]
    entry = evaluation.calibration_entry(scores, same)
    imp, gen = scores[~same], scores[same]
    for far in (0.01, 0.001, 0.0001):
        tau = entry[f"far_{far:g}"]
        # the smallest distinct score whose FAR is <= far (loop over candidates)
        want = min(t for t in np.unique(scores) if (imp >= t).mean() <= far)
        assert tau == want
        assert entry["metrics"][f"measured_far_{far:g}"] == (imp >= tau).mean() <= far
        assert entry["metrics"][f"tar_at_far_{far:g}"] == (gen >= tau).mean()
    assert entry["far_0.01"] <= entry["far_0.001"] <= entry["far_0.0001"]
    assert "far_1e-05" not in entry  # 20,000 impostor pairs cannot measure FAR 1e-5


def test_calibration_entry_strict_point_from_a_million_impostor_pairs() -> None:
    rng = np.random.default_rng(1)
    n_imp = evaluation.STRICT_FAR_MIN_IMPOSTORS
    scores = np.r_[rng.normal(3.0, 1.0, 2_000), rng.normal(0.0, 1.0, n_imp)]
    same = np.r_[np.ones(2_000, bool), np.zeros(n_imp, bool)]
    entry = evaluation.calibration_entry(scores, same)
    imp, gen = scores[~same], scores[same]
    tau = entry["far_1e-05"]
    # brute force over the candidates near the top of the impostors (τ is one of the scores)
    floor = np.sort(imp)[-40]
    candidates = np.unique(scores[scores >= floor])
    want = min(t for t in candidates if (imp >= t).mean() <= 1e-5)
    assert tau == want and (imp >= tau).sum() <= 10
    assert entry["metrics"]["tar_at_far_1e-05"] == (gen >= tau).mean()
    assert entry["far_0.0001"] <= tau
    fewer = evaluation.calibration_entry(scores[:-1], same[:-1])  # one impostor pair short
    assert "far_1e-05" not in fewer and "far_0.0001" in fewer


def tiny_people_file(tmp_path: Path) -> Path:
    """A people file of the fake LFW tree's identities (``lfw_tree``)."""
    from fakes import PEOPLE

    people = tmp_path / "peopleTiny.txt"
    people.write_text(f"{len(PEOPLE)}\n" + "".join(f"{p}\t1\n" for p in PEOPLE))
    return people


def test_calibrate_model_writes_source_and_counts(
    model_path: Path, lfw_tree: Path, tmp_path: Path, no_mtcnn: TemplateDetector
) -> None:
    people = tiny_people_file(tmp_path)
    model = load_checkpoint(model_path)
    with pytest.raises(FaceappError, match="at least 100000"):
        evaluation.calibrate(model, lfw_tree, people, impostor_pairs=500, cache_dir=tmp_path / "c")
    report = evaluation.calibrate(
        model, lfw_tree, people, impostor_pairs=500, cache_dir=tmp_path / "c", min_impostor_pairs=100,
        detector=no_mtcnn,
    )
    cal = Calibration.load(calibration_path_for(model_path))
    assert cal.model_id == model.model_id
    assert cal.source["impostor_pairs"] == 500 and cal.source["people"] == "peopleTiny.txt"
    assert cal.source["genuine_pairs"] > 0 and cal.source["images_without_detected_face"] == 1  # the blank
    assert cal.threshold("distance", "far_0.0001") == report["scorers"]["distance"]["far_0.0001"]
    assert cal.threshold("distance", "far_0.01") <= cal.threshold("distance", "far_0.001")


def test_calibrate_model_cli_refuses_too_few_impostor_pairs(
    model_path: Path, lfw_tree: Path, tmp_path: Path, no_mtcnn: TemplateDetector, capsys
) -> None:
    people = tmp_path / "p.txt"
    people.write_text("1\nAl_Gore\t1\n")
    argv = ["calibrate-model", "--model", str(model_path), "--data", str(lfw_tree), "--people", str(people),
            "--impostor-pairs", "500", "--cache-dir", str(tmp_path / "c")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "100000" in err and "Traceback" not in err
    assert not calibration_path_for(model_path).exists() and no_mtcnn.images == 0


class AffineNormaliser:
    """A stand-in for the model's score normaliser with a known effect: 2 s − 1 on pairs."""

    name = "test-affine"
    active = True

    def normalise(self, probes: np.ndarray, templates: np.ndarray, scores: np.ndarray) -> np.ndarray:
        return 2.0 * np.asarray(scores, dtype=np.float64) - 1.0

    def normalise_pairs(self, a: np.ndarray, b: np.ndarray, scores: np.ndarray) -> np.ndarray:
        assert a.shape == b.shape and a.shape[0] == scores.shape[0]
        return 2.0 * np.asarray(scores, dtype=np.float64) - 1.0


def test_evaluate_pairs_scores_as_the_app_with_its_normaliser(
    model_path: Path, small_pairs: Path, lfw_dir: Path, tmp_path: Path
) -> None:
    model = load_checkpoint(model_path)
    det = TemplateDetector()
    kw = {"cache_dir": tmp_path / "cache", "detector": det}
    (plain,), raw = evaluate_pairs(model, lfw_dir, small_pairs, **kw)
    (normed,), got = evaluate_pairs(model, lfw_dir, small_pairs, normaliser=AffineNormaliser(), **kw)
    np.testing.assert_allclose(got["distance"][0], 2 * raw["distance"][0] - 1)
    assert plain["score_normaliser"] == "cosine" and normed["score_normaliser"] == "test-affine"
    assert normed["auc"] == plain["auc"]  # a monotone map: same ranking
    assert normed["threshold_far_0.01"] == pytest.approx(2 * plain["threshold_far_0.01"] - 1)
    with pytest.raises(FaceappError, match="--normaliser none"):
        evaluate_pairs(model, lfw_dir, small_pairs, normaliser=AffineNormaliser(),
                       cohort_people=tmp_path / "cohort.txt", **kw)


def test_calibrate_model_measures_the_normalised_scores(
    model_path: Path, lfw_tree: Path, tmp_path: Path, no_mtcnn: TemplateDetector
) -> None:
    people = tiny_people_file(tmp_path)
    model = load_checkpoint(model_path)
    kw = {"impostor_pairs": 500, "cache_dir": tmp_path / "c", "min_impostor_pairs": 100, "detector": no_mtcnn}
    plain = evaluation.calibrate(model, lfw_tree, people, **kw)["scorers"]["distance"]
    report = evaluation.calibrate(model, lfw_tree, people, normaliser=AffineNormaliser(), **kw)
    normed = report["scorers"]["distance"]
    for point in ("far_0.01", "far_0.001", "far_0.0001"):
        assert normed[point] == pytest.approx(2 * plain[point] - 1)
    cal = Calibration.load(calibration_path_for(model_path))
    assert cal.source["score_normaliser"] == "test-affine"
    assert cal.threshold("distance", "far_0.01") == normed["far_0.01"]
