"""Adaptive symmetric s-norm (faceapp.nn.score_norm) against brute-force loops, and its use
by identification evaluation (``--cohort``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fakes import TemplateDetector, orl_people_txt

from faceapp.cli import main
from faceapp.errors import FaceappError
from faceapp.nn.checkpoint import LoadedModel, create_untrained_model, load_checkpoint, save_checkpoint
from faceapp.nn.encoder import EncoderConfig
from faceapp.nn.score_norm import MIN_STD, Cohort, CohortStats, s_norm_matrix, s_norm_pairs
from faceapp.training import evaluation
from faceapp.training.identification import evaluate_identification
from faceapp.training.metrics import identification_report, identification_report_from_scores


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _brute_stats(x: np.ndarray, cohort: np.ndarray, k: int) -> tuple[list[float], list[float]]:
    means, stds = [], []
    for row in x:
        r64 = row.astype(np.float64)
        scores = sorted((float(np.dot(r64, c.astype(np.float64))) for c in cohort), reverse=True)
        top = scores[:k]
        mu = sum(top) / k
        means.append(mu)
        stds.append(max((sum((t - mu) ** 2 for t in top) / k) ** 0.5, MIN_STD))
    return means, stds


@pytest.mark.parametrize("k", [2, 3, 7, None])
def test_stats_match_brute_force(k: int | None) -> None:
    rng = np.random.default_rng(0)
    cohort, x = _unit(rng, 7, 5), _unit(rng, 6, 5)
    st = Cohort(cohort, top_k=k).stats(x, chunk=4)  # chunks of 4 rows: 4 + 2
    means, stds = _brute_stats(x, cohort, 7 if k is None else k)
    np.testing.assert_allclose(st.mean, means, atol=1e-6)
    np.testing.assert_allclose(st.std, stds, atol=1e-6)
    one = Cohort(cohort, top_k=k).stats(x[2])  # a single (D,) vector
    np.testing.assert_allclose([one.mean[0], one.std[0]], [means[2], stds[2]], atol=1e-6)


def test_hand_built_cohort() -> None:
    """Cohort e1, e2, -e1 in 2-D; probe e1: scores (1, 0, -1); top-2 -> (1, 0): mean 0.5, std 0.5."""
    cohort = np.array([[1, 0], [0, 1], [-1, 0]], dtype=np.float32)
    st = Cohort(cohort, top_k=2).stats(np.array([[1, 0], [0, 1]], dtype=np.float32))
    np.testing.assert_allclose(st.mean, [0.5, 0.5])
    np.testing.assert_allclose(st.std, [0.5, 0.5])
    all3 = Cohort(cohort, top_k=None).stats(np.array([[1.0, 0.0]]))
    np.testing.assert_allclose([all3.mean[0], all3.std[0]], [0.0, np.sqrt(2 / 3)], atol=1e-7)
    # s-norm of a score 0.8 between two faces with (mean 0.5, std 0.5) and (0.2, 0.1): ½(0.6 + 6)
    a = CohortStats(np.array([0.5]), np.array([0.5]))
    out = s_norm_pairs(np.array([0.8]), a, CohortStats(np.array([0.2]), np.array([0.1])))
    np.testing.assert_allclose(out, [3.3])


def test_s_norm_matrix_and_pairs_match_loops() -> None:
    rng = np.random.default_rng(1)
    cohort, gal, prb = _unit(rng, 9, 4), _unit(rng, 3, 4), _unit(rng, 5, 4)
    c = Cohort(cohort, top_k=4)
    gs, ps = c.stats(gal), c.stats(prb)
    raw = prb @ gal.T
    out = s_norm_matrix(raw, ps, gs)
    for i in range(5):
        for j in range(3):
            want = 0.5 * ((raw[i, j] - gs.mean[j]) / gs.std[j] + (raw[i, j] - ps.mean[i]) / ps.std[i])
            assert out[i, j] == pytest.approx(want, abs=1e-9)
    # pairs: the same numbers, and symmetric in the two sides
    ii, jj = np.array([0, 4, 2]), np.array([1, 0, 2])
    pairs = s_norm_pairs(raw[ii, jj], ps.take(ii), gs.take(jj))
    np.testing.assert_allclose(pairs, out[ii, jj], atol=1e-12)
    np.testing.assert_allclose(s_norm_matrix(raw.T, gs, ps), out.T, atol=1e-12)


def test_constant_cohort_scores_use_the_std_floor() -> None:
    cohort = np.array([[1, 0], [1, 0], [0, 1]], dtype=np.float32)
    st = Cohort(cohort, top_k=2).stats(np.array([[1, 0]], dtype=np.float32))
    assert st.std[0] == MIN_STD and np.isfinite(s_norm_pairs(np.array([0.5]), st, st)).all()


def test_bad_inputs() -> None:
    rng = np.random.default_rng(2)
    cohort = _unit(rng, 5, 3)
    for k in (1, 6):
        with pytest.raises(ValueError, match="top_k"):
            Cohort(cohort, top_k=k)
    with pytest.raises(ValueError, match="C >= 2"):
        Cohort(cohort[:1], top_k=None)
    with pytest.raises(ValueError, match="NaN"):
        Cohort(np.full((3, 3), np.nan), top_k=2)
    with pytest.raises(ValueError, match="expected"):
        Cohort(cohort, top_k=2).stats(np.zeros((2, 4)))
    st = Cohort(cohort, top_k=2).stats(cohort[:2])
    with pytest.raises(ValueError):
        s_norm_matrix(np.zeros((3, 2)), st, st)
    with pytest.raises(ValueError):
        s_norm_pairs(np.zeros(3), st, st)


def test_report_from_scores_equals_report_from_embeddings() -> None:
    rng = np.random.default_rng(3)
    gal, prb = _unit(rng, 6, 8), _unit(rng, 40, 8)
    g_lab = np.array([0, 0, 1, 2, 3, 3])
    p_lab = rng.integers(0, 8, size=40)
    a = identification_report(gal, g_lab, prb, p_lab)
    b = identification_report_from_scores(prb.astype(np.float64) @ gal.T.astype(np.float64), g_lab, p_lab)
    assert a == b


# ---------------------------------------------------------------------- evaluation with a cohort
TINY = EncoderConfig(input_size=32, embedding_dim=16, width=8, layers=(1, 1, 1, 1))


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.pt"
    save_checkpoint(path, create_untrained_model(TINY, seed=3).encoder)
    return path


def orl_with_cohort(model_path: Path, tmp_path: Path) -> tuple[LoadedModel, Path, Path, dict]:
    """The model, ORL subjects 1-8 (evaluated) and 9-14 (cohort) and the face stand-in."""
    people = orl_people_txt(tmp_path, "p.txt", range(1, 9))
    cohort_people = orl_people_txt(tmp_path, "c.txt", range(9, 15))
    kw = {"cache_dir": tmp_path / "cache", "detector": TemplateDetector()}
    return load_checkpoint(model_path), people, cohort_people, kw


def test_identification_with_a_cohort_is_s_norm_of_the_plain_scores(
    model_path: Path, data_dir: Path, tmp_path: Path
) -> None:
    model, people, cohort_people, kw = orl_with_cohort(model_path, tmp_path)
    plain = evaluate_identification(model, data_dir / "orl_faces", people, **kw)
    normed = evaluate_identification(
        model, data_dir / "orl_faces", people, cohort_people=cohort_people, cohort_top_k=5, **kw
    )
    assert normed["n_gallery"] == plain["n_gallery"] and normed["n_known_probes"] == plain["n_known_probes"]
    assert (normed["score_norm"], normed["cohort_images"], normed["cohort_identities"]) == ("asnorm", 60, 6)
    assert normed["cohort_top_k"] == 5 and "score_norm" not in plain
    # the same numbers by hand: embeddings of the cached crops, s-norm by loops
    from faceapp.training.datasets import read_people, scan_identity_folders

    def embed(people_file: Path) -> tuple[np.ndarray, np.ndarray]:
        images = scan_identity_folders(data_dir / "orl_faces", list(read_people(people_file)))
        paths = list(images.paths)
        crops = evaluation.crops_for(model, paths, tmp_path / "cache", people_file.stem, kw["detector"])
        return model.encoder.embed(crops.crops), images.labels

    emb, lab = embed(people)
    cohort, _ = embed(cohort_people)
    rng = np.random.default_rng(0)
    multi = np.unique(lab)
    distract = set(rng.choice(multi, size=round(len(multi) * 0.5), replace=False).tolist())
    g_rows = [int(np.flatnonzero(lab == c)[0]) for c in multi if c not in distract]
    p_rows = [r for r in range(len(lab)) if r not in g_rows]
    g_mean, g_std = _brute_stats(emb[g_rows], cohort, 5)
    p_mean, p_std = _brute_stats(emb[p_rows], cohort, 5)
    s = emb[p_rows].astype(np.float64) @ emb[g_rows].T.astype(np.float64)
    want = np.empty_like(s)
    for i in range(s.shape[0]):
        for j in range(s.shape[1]):
            want[i, j] = 0.5 * ((s[i, j] - g_mean[j]) / g_std[j] + (s[i, j] - p_mean[i]) / p_std[i])
    expect = identification_report_from_scores(want, lab[g_rows], lab[p_rows])
    for key in ("rank1", "rank5", "dir_at_fpir_0.01"):
        assert normed[key] == pytest.approx(expect[key])
    assert normed["threshold_fpir_0.01"] == pytest.approx(expect["threshold_fpir_0.01"], abs=1e-4)


def test_cohort_must_be_other_people(
    model_path: Path, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    people = orl_people_txt(tmp_path, "p.txt", range(1, 9))
    overlap = orl_people_txt(tmp_path, "c.txt", range(8, 12))
    with pytest.raises(FaceappError, match="cohort identities are also evaluated"):
        evaluate_identification(
            load_checkpoint(model_path), data_dir / "orl_faces", people, cohort_people=overlap,
            cache_dir=tmp_path / "cache", detector=TemplateDetector(),
        )
    det = TemplateDetector()
    monkeypatch.setattr(evaluation, "detector_for", lambda model: det)
    argv = ["evaluate-identification", "--model", str(model_path), "--data", str(data_dir / "orl_faces")]
    argv += ["--people", str(people), "--cache-dir", str(tmp_path / "cache"), "--json"]
    assert main([*argv, "--cohort", str(overlap)]) == 2
    assert "also evaluated" in capsys.readouterr().err
    cohort = orl_people_txt(tmp_path, "c2.txt", range(9, 12))
    assert main([*argv, "--cohort", str(cohort), "--cohort-top-k", "4"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["score_norm"] == "asnorm" and out["cohort_top_k"] == 4 and out["cohort_images"] == 30


def _brute_open_set(rank_s: np.ndarray, acc_s: np.ndarray, g_lab: np.ndarray, p_lab: np.ndarray) -> float:
    """DIR at FPIR 1e-2 by loops: top-1 identity by ``rank_s``, accepted by its ``acc_s``."""
    ids = sorted(set(g_lab.tolist()))
    top_id, top_acc = [], []
    for i in range(rank_s.shape[0]):
        best = {c: max(rank_s[i, j] for j in range(len(g_lab)) if g_lab[j] == c) for c in ids}
        c_top = max(ids, key=lambda c: (best[c], -ids.index(c)))
        top_id.append(c_top)
        top_acc.append(max(acc_s[i, j] for j in range(len(g_lab)) if g_lab[j] == c_top))
    known = [c in ids for c in p_lab.tolist()]
    distractor_acc = sorted((a for a, k in zip(top_acc, known, strict=True) if not k), reverse=True)
    allowed = int(0.01 * len(distractor_acc))
    t = distractor_acc[allowed]
    hits = [
        top_id[i] == p_lab[i] and top_acc[i] > t and sorted(
            [max(rank_s[i, j] for j in range(len(g_lab)) if g_lab[j] == c) for c in ids], reverse=True
        ).count(max(rank_s[i])) == 1
        for i in range(len(p_lab))
        if known[i]
    ]
    return sum(hits) / len(hits)


def test_accept_scores_rank_by_one_matrix_and_accept_by_another() -> None:
    rng = np.random.default_rng(4)
    rank_s, acc_s = rng.normal(size=(150, 5)), rng.normal(size=(150, 5))
    g_lab = np.array([0, 1, 1, 2, 3])
    p_lab = rng.integers(0, 7, size=150)  # labels 4-6: distractors
    rep = identification_report_from_scores(rank_s, g_lab, p_lab, accept_scores=acc_s)
    plain = identification_report_from_scores(rank_s, g_lab, p_lab)
    assert rep["rank1"] == plain["rank1"] and rep["rank5"] == plain["rank5"]
    assert rep["dir_at_fpir_0.01"] == pytest.approx(_brute_open_set(rank_s, acc_s, g_lab, p_lab))
    assert identification_report_from_scores(rank_s, g_lab, p_lab, accept_scores=rank_s) == plain
    with pytest.raises(ValueError, match="accept_scores"):
        identification_report_from_scores(rank_s, g_lab, p_lab, accept_scores=acc_s[:, :4])


def test_snorm_scope_accept_keeps_the_cosine_ranking(
    model_path: Path, data_dir: Path, tmp_path: Path
) -> None:
    model, people, cohort_people, kw = orl_with_cohort(model_path, tmp_path)
    plain = evaluate_identification(model, data_dir / "orl_faces", people, **kw)
    acc = evaluate_identification(
        model, data_dir / "orl_faces", people, cohort_people=cohort_people, cohort_top_k=5,
        snorm_scope="accept", **kw,
    )
    assert acc["snorm_scope"] == "accept"
    assert (acc["rank1"], acc["rank5"]) == (plain["rank1"], plain["rank5"])
    with pytest.raises(FaceappError, match="scope"):
        evaluate_identification(model, data_dir / "orl_faces", people, snorm_scope="some", **kw)


def test_cohort_file_round_trip_and_model_check(
    model_path: Path, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    det = TemplateDetector()
    monkeypatch.setattr(evaluation, "detector_for", lambda model: det)
    people = orl_people_txt(tmp_path, "c.txt", range(9, 12))
    out = tmp_path / "models" / "cohort.npz"
    argv = ["make-cohort", "--model", str(model_path), "--data", str(data_dir / "orl_faces")]
    argv += ["--people", str(people), "--out", str(out), "--top-k", "7"]
    argv += ["--cache-dir", str(tmp_path / "cache")]
    assert main([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    model = load_checkpoint(model_path)
    assert report["model_id"] == model.model_id and report["cohort_images"] == 30
    cohort, meta = Cohort.load(out, model.model_id)
    assert cohort.top_k == 7 and meta["source"]["cohort"] == "c.txt" and meta["source"]["data"] == "orl_faces"
    made, _ = evaluation.cohort_from_people(
        model, data_dir / "orl_faces", people, exclude=set(), top_k=7, cache_dir=tmp_path / "cache",
        detector=det,
    )
    np.testing.assert_array_equal(cohort.embeddings, made.embeddings)
    from faceapp.errors import ModelError

    with pytest.raises(ModelError, match="made by model"):
        Cohort.load(out, "another-model")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ModelError, match="not a faceapp cohort file"):
        Cohort.load(bad, model.model_id)
