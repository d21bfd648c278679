"""The learned open-set score normaliser (faceapp.nn.open_set, faceapp.training.open_set) against
brute-force loops on small hand-built inputs, its file checks and the shipped file."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest

from faceapp.errors import FaceappError, ModelError
from faceapp.nn.open_set import (
    LAYERS,
    MIN_STD,
    NORMALISER_FILE,
    RAW_SCORES,
    LearnedNormaliser,
    normaliser_for,
    normaliser_path_for,
)
from faceapp.training.metrics import tar_at_far
from faceapp.training.open_set import (
    ANCHOR_FARS,
    NormaliserConfig,
    anchor_to_cosine,
    cohort_targets,
    fit_normaliser,
)

REPO = Path(__file__).resolve().parents[1]
SCALE = {"mu_mean": 0.3, "mu_scale": 0.05, "logstd_mean": -2.5, "logstd_scale": 0.2}


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _layers(rng: np.random.Generator, d: int, h: int) -> dict[str, np.ndarray]:
    shapes = {"w1": (d, h), "b1": (h,), "w2": (h, h), "b2": (h,), "w3": (h, 2), "b3": (2,)}
    return {k: rng.normal(scale=0.7, size=s).astype(np.float32) for k, s in shapes.items()}


def _normaliser(seed: int = 0, d: int = 5, h: int = 3, **meta: float | str) -> LearnedNormaliser:
    base = {"model_id": "m-test", "alpha": 1.0, "beta": 0.0, **SCALE}
    return LearnedNormaliser(_layers(np.random.default_rng(seed), d, h), {**base, **meta})


def _mlp_loop(x: np.ndarray, w: dict[str, np.ndarray]) -> tuple[list[float], list[float]]:
    """μ, σ of each row by explicit sums over the weights (tanh, tanh, linear, de-standardise)."""
    d, h = w["w1"].shape
    means, stds = [], []
    for row in x.astype(np.float64):
        h1 = [math.tanh(sum(row[i] * float(w["w1"][i, j]) for i in range(d)) + float(w["b1"][j]))
              for j in range(h)]
        h2 = [math.tanh(sum(h1[i] * float(w["w2"][i, j]) for i in range(h)) + float(w["b2"][j]))
              for j in range(h)]
        o = [sum(h2[i] * float(w["w3"][i, j]) for i in range(h)) + float(w["b3"][j]) for j in range(2)]
        means.append(o[0] * SCALE["mu_scale"] + SCALE["mu_mean"])
        stds.append(max(math.exp(o[1] * SCALE["logstd_scale"] + SCALE["logstd_mean"]), MIN_STD))
    return means, stds


# ---------------------------------------------------------------------- cohort targets
@pytest.mark.parametrize("chunk", [5, 1024])
def test_cohort_targets_match_a_loop(chunk: int) -> None:
    rng = np.random.default_rng(0)
    emb = _unit(rng, 12, 5)
    labels = np.array([0, 1, 2, 3] * 3)
    k = 4
    mu, sd = cohort_targets(emb, labels, k, chunk=chunk)
    for i in range(12):
        others = sorted(
            (float(np.dot(emb[i].astype(np.float64), emb[j].astype(np.float64)))
             for j in range(12) if labels[j] != labels[i]),
            reverse=True,
        )[:k]
        m = sum(others) / k
        assert mu[i] == pytest.approx(m, abs=1e-6)
        assert sd[i] == pytest.approx((sum((t - m) ** 2 for t in others) / k) ** 0.5, abs=1e-6)


def test_cohort_targets_hand_built() -> None:
    """e1, e1 (person 0), e2, -e1 (persons 1, 2): row 0's other-person scores (0, -1) -> μ -½, σ ½."""
    emb = np.array([[1, 0], [1, 0], [0, 1], [-1, 0]], dtype=np.float32)
    mu, sd = cohort_targets(emb, np.array([0, 0, 1, 2]), 2)
    np.testing.assert_allclose(mu[:2], [-0.5, -0.5])
    np.testing.assert_allclose(sd[:2], [0.5, 0.5])


def test_cohort_targets_refuse_too_few_other_faces() -> None:
    emb = _unit(np.random.default_rng(1), 12, 5)
    labels = np.array([0, 1, 2, 3] * 3)  # 9 faces of other people each
    cohort_targets(emb, labels, 9)
    for k in (1, 10):
        with pytest.raises(ValueError, match="top_k"):
            cohort_targets(emb, labels, k)


# ---------------------------------------------------------------------- inference
def test_stats_match_a_loop_of_the_network() -> None:
    norm = _normaliser(seed=2)
    x = _unit(np.random.default_rng(3), 6, 5)
    st = norm.stats(x)
    means, stds = _mlp_loop(x, norm._w)
    np.testing.assert_allclose(st.mean, means, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(st.std, stds, rtol=1e-5, atol=1e-9)
    one = norm.stats(x[4])  # a single (D,) vector
    assert one.mean[0] == pytest.approx(means[4], abs=1e-6)
    with pytest.raises(ValueError, match="expected"):
        norm.stats(np.zeros((2, 4)))


def test_std_floor() -> None:
    norm = _normaliser(seed=2, logstd_mean=-100.0)
    assert (norm.stats(_unit(np.random.default_rng(3), 4, 5)).std == MIN_STD).all()


def test_normalise_pairs_and_z_scores_follow_the_formula() -> None:
    norm = _normaliser(seed=4, alpha=0.02, beta=0.9)
    rng = np.random.default_rng(5)
    prb, tpl = _unit(rng, 3, 5), _unit(rng, 4, 5)
    s = prb.astype(np.float64) @ tpl.T.astype(np.float64)
    mp, sp = _mlp_loop(prb, norm._w)
    mt, st = _mlp_loop(tpl, norm._w)
    z = norm.z_scores(prb, tpl, s)
    out = norm.normalise(prb, tpl, s)
    assert z.shape == out.shape == (3, 4) and out.dtype == np.float64
    for i in range(3):
        for j in range(4):
            want = 0.5 * ((s[i, j] - mt[j]) / st[j] + (s[i, j] - mp[i]) / sp[i])
            assert z[i, j] == pytest.approx(want, rel=1e-4, abs=1e-6)
            assert out[i, j] == pytest.approx(0.02 * want + 0.9, rel=1e-6, abs=1e-7)
    ii, jj = np.array([0, 2, 1, 2]), np.array([3, 0, 1, 1])
    pairs = norm.normalise_pairs(prb[ii], tpl[jj], s[ii, jj])
    np.testing.assert_allclose(pairs, out[ii, jj], rtol=1e-12)
    np.testing.assert_allclose(norm.normalise(tpl, prb, s.T), out.T, rtol=1e-12)  # symmetric
    with pytest.raises(ValueError, match="scores of shape"):
        norm.z_scores(prb, tpl, s.T)


def test_raw_scores_are_the_identity() -> None:
    s = np.array([[0.1, 0.9]], dtype=np.float32)
    out = RAW_SCORES.normalise(np.zeros((1, 3)), np.zeros((2, 3)), s)
    assert out.dtype == np.float64 and (out == s).all()
    assert RAW_SCORES.name == "cosine" and not RAW_SCORES.active
    norm = _normaliser()
    assert norm.name == "learned-snorm" and norm.active


# ---------------------------------------------------------------------- anchor
def _synthetic_pairs(n_gen: int, n_imp: int, d: int = 5, seed: int = 6):
    rng = np.random.default_rng(seed)
    a = _unit(rng, n_gen + n_imp, d)
    b = _unit(rng, n_gen + n_imp, d)
    near = a[:n_gen] + 0.35 * rng.normal(size=(n_gen, d)).astype(np.float32)
    b[:n_gen] = near / np.linalg.norm(near, axis=1, keepdims=True)
    same = np.zeros(n_gen + n_imp, dtype=bool)
    same[:n_gen] = True
    return a, b, same


def test_anchor_makes_both_taus_those_of_cosine() -> None:
    a, b, same = _synthetic_pairs(400, 5000)
    norm, anchor = anchor_to_cosine(_normaliser(seed=7), a, b, same)
    cos = np.sum(a.astype(np.float64) * b.astype(np.float64), axis=1)
    mapped = norm.normalise_pairs(a, b, cos)
    assert norm.alpha > 0 and anchor["far"] == list(ANCHOR_FARS)
    assert anchor["pairs"] == same.size and anchor["impostor_pairs"] == 5000
    for far, tau in zip(ANCHOR_FARS, anchor["cosine_tau"], strict=True):
        assert tar_at_far(cos, same, far)[1] == pytest.approx(tau, abs=1e-12)
        assert tar_at_far(mapped, same, far)[1] == pytest.approx(tau, abs=1e-9)
    assert norm.meta["anchor"] == anchor
    # the network is the same: only the map changed
    np.testing.assert_allclose(norm.z_scores(a[:3], b[:3], cos[None, :3].repeat(3, 0)),
                               _normaliser(seed=7).z_scores(a[:3], b[:3], cos[None, :3].repeat(3, 0)))


def test_anchor_refuses_pairs_that_cannot_tell_the_two_fars_apart() -> None:
    a, b, same = _synthetic_pairs(50, 60)  # 60 impostors: FAR 1e-2 and 1e-3 both accept none
    with pytest.raises(FaceappError, match="too few"):
        anchor_to_cosine(_normaliser(seed=7), a, b, same)


# ---------------------------------------------------------------------- file
def test_save_load_round_trip(tmp_path: Path) -> None:
    norm = _normaliser(seed=8, alpha=0.006, beta=0.92, extra="kept")
    path = norm.save(tmp_path / "sub" / NORMALISER_FILE)
    assert path.exists() and not list(path.parent.glob("*.partial*"))
    back = LearnedNormaliser.load(path, "m-test")
    x = _unit(np.random.default_rng(9), 4, 5)
    np.testing.assert_array_equal(back.stats(x).mean, norm.stats(x).mean)
    np.testing.assert_array_equal(back.stats(x).std, norm.stats(x).std)
    assert (back.alpha, back.beta, back.model_id) == (0.006, 0.92, "m-test")
    assert back.meta["extra"] == "kept" and back.meta["format"] == 1
    with pytest.raises(ModelError, match="score normaliser of model 'm-test', not 'other'"):
        LearnedNormaliser.load(path, "other")


def test_garbage_and_foreign_files_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip at all")
    with pytest.raises(ModelError, match="not a faceapp score normaliser"):
        LearnedNormaliser.load(bad, "m-test")
    np.savez(tmp_path / "other.npz", w1=np.zeros((2, 2)))  # an npz without the layers
    with pytest.raises(ModelError, match="not a faceapp score normaliser"):
        LearnedNormaliser.load(tmp_path / "other.npz", "m-test")
    layers = _layers(np.random.default_rng(0), 5, 3)
    meta = {"model_id": "m-test", "alpha": 1.0, "beta": 0.0, **SCALE, "format": 99}
    np.savez(tmp_path / "future.npz", **layers, meta=np.asarray(json.dumps(meta)))
    with pytest.raises(ModelError, match="unknown format"):
        LearnedNormaliser.load(tmp_path / "future.npz", "m-test")


def test_truncated_file_is_refused(tmp_path: Path) -> None:
    path = _normaliser(seed=8).save(tmp_path / NORMALISER_FILE)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError):
        LearnedNormaliser.load(path, "m-test")


def test_bad_weights_and_maps_are_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(10)
    meta = {"model_id": "m-test", "alpha": 1.0, "beta": 0.0, **SCALE}
    for key in ("w2", "b3"):
        layers = _layers(rng, 5, 3)
        layers[key] = layers[key].copy()
        layers[key].flat[0] = np.nan if key == "w2" else np.inf
        with pytest.raises(ModelError, match="NaN or inf"):
            LearnedNormaliser(layers, meta)
    with pytest.raises(ModelError, match="NaN or inf"):
        LearnedNormaliser(_layers(rng, 5, 3), {**meta, "beta": float("nan")})
    for alpha in (0.0, -0.5):
        with pytest.raises(ModelError, match="must increase"):
            LearnedNormaliser(_layers(rng, 5, 3), {**meta, "alpha": alpha})
    layers = _layers(rng, 5, 3)
    layers["w2"] = np.zeros((3, 4), np.float32)
    with pytest.raises(ModelError, match="wrong shape: w2"):
        LearnedNormaliser(layers, meta)
    with pytest.raises(ModelError, match="malformed"):
        LearnedNormaliser(_layers(rng, 5, 3), {"model_id": "m-test", "alpha": 1.0})
    # the same checks when the values come from a file
    layers = _layers(rng, 5, 3)
    layers["b1"] = layers["b1"].copy()
    layers["b1"][0] = np.nan
    np.savez(tmp_path / "nan.npz", **layers, meta=np.asarray(json.dumps({**meta, "format": 1})))
    with pytest.raises(ModelError, match=r"nan\.npz: score normaliser holds NaN"):
        LearnedNormaliser.load(tmp_path / "nan.npz", "m-test")
    np.savez(tmp_path / "neg.npz", **_layers(rng, 5, 3),
             meta=np.asarray(json.dumps({**meta, "format": 1, "alpha": -1.0})))
    with pytest.raises(ModelError, match="must increase"):
        LearnedNormaliser.load(tmp_path / "neg.npz", "m-test")


def test_normaliser_for(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model = tmp_path / "m.pt"
    assert normaliser_path_for(model) == tmp_path / NORMALISER_FILE
    with caplog.at_level(logging.INFO, logger="faceapp.nn.open_set"):
        assert normaliser_for(model, "m-test") is RAW_SCORES
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    _normaliser(seed=11).save(tmp_path / NORMALISER_FILE)
    found = normaliser_for(model, "m-test")
    assert isinstance(found, LearnedNormaliser) and found.model_id == "m-test"
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="faceapp.nn.open_set"):
        assert normaliser_for(model, "another-model") is RAW_SCORES
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "not used" in caplog.records[0].getMessage()
    (tmp_path / NORMALISER_FILE).write_bytes(b"garbage")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="faceapp.nn.open_set"):
        assert normaliser_for(model, "m-test") is RAW_SCORES
    assert len(caplog.records) == 1 and caplog.records[0].levelno == logging.WARNING
    good = _normaliser(seed=11).save(tmp_path / NORMALISER_FILE).read_bytes()
    (tmp_path / NORMALISER_FILE).write_bytes(good[: len(good) // 2])  # a truncated download/copy
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="faceapp.nn.open_set"):
        assert normaliser_for(model, "m-test") is RAW_SCORES
    assert len(caplog.records) == 1 and "not used" in caplog.records[0].getMessage()


# ---------------------------------------------------------------------- training
def _synthetic_cohort(rng: np.random.Generator, n_id: int, per_id: int, d: int = 16):
    """Identity centres from two clusters of different spread (crowded and sparse regions of the
    face space, so μ varies with the embedding), ``per_id`` noisy unit vectors around each."""
    axis = np.zeros(d)
    axis[0] = 1.0
    spread = np.where(np.arange(n_id) % 2 == 0, 0.25, 1.5)[:, None]
    centres = axis + spread * rng.normal(size=(n_id, d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = np.repeat(centres, per_id, axis=0) + 0.15 * rng.normal(size=(n_id * per_id, d))
    labels = np.repeat(np.arange(n_id), per_id)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels


def test_fit_normaliser_predicts_cohort_means_better_than_a_constant() -> None:
    rng = np.random.default_rng(12)
    emb, labels = _synthetic_cohort(rng, 40, 4)
    train = np.arange(emb.shape[0]) % 4 != 3  # 3 faces per identity train, the 4th is held out
    cfg = NormaliserConfig(top_k=10, hidden=16, epochs=60, batch=32, seed=0)
    norm = fit_normaliser(emb[train], labels[train], model_id="m-fit", config=cfg,
                          provenance={"data": "synthetic"})
    assert (norm.alpha, norm.beta, norm.model_id) == (1.0, 0.0, "m-fit")
    assert norm.meta["top_k"] == 10 and norm.meta["source"] == {"data": "synthetic"}
    # held-out faces: the target is μ of their top 10 against the training faces of others
    held = emb[~train]
    s = held.astype(np.float64) @ emb[train].T.astype(np.float64)
    s[labels[~train][:, None] == labels[train][None, :]] = -np.inf
    mu_true = np.sort(s, axis=1)[:, -10:].mean(axis=1)
    mu_train, _ = cohort_targets(emb[train], labels[train], 10)
    constant = float(np.mean((mu_true - mu_train.mean()) ** 2))
    learned = float(np.mean((norm.stats(held).mean - mu_true) ** 2))
    assert learned < 0.5 * constant, (learned, constant)


# ---------------------------------------------------------------------- the shipped file
def test_shipped_normaliser_is_for_the_shipped_model() -> None:
    model, path = REPO / "models" / "default.pt", REPO / "models" / NORMALISER_FILE
    if not (model.exists() and path.exists()):
        pytest.skip("models/default.pt or models/score_norm.npz not shipped in this checkout")
    from faceapp.nn.checkpoint import read_checkpoint_dict

    model_id = read_checkpoint_dict(model)["model_id"]
    norm = normaliser_for(model, model_id)
    assert isinstance(norm, LearnedNormaliser) and norm.model_id == model_id
    assert set(LAYERS) <= set(norm._w) and norm.dim == 128 and norm.alpha > 0
    x = _unit(np.random.default_rng(13), 8, 128)
    st = norm.stats(x)
    assert np.isfinite(st.mean).all() and (st.std > 0).all()


def test_make_normaliser_cli_on_orl(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    """`faceapp make-normaliser` end to end (tiny model, the face stand-in instead of MTCNN):
    the file lands beside the model, holds only the network, and the app's loader takes it."""
    from fakes import TemplateDetector, orl_people_txt

    from faceapp.cli import main
    from faceapp.nn.checkpoint import create_untrained_model, save_checkpoint
    from faceapp.nn.encoder import EncoderConfig
    from faceapp.training import evaluation

    monkeypatch.setattr(evaluation, "detector_for", lambda model: TemplateDetector())
    model_path = tmp_path / "m" / "tiny.pt"
    model = create_untrained_model(EncoderConfig(input_size=32, embedding_dim=16, width=4,
                                                 layers=(1, 1, 1, 1)), seed=1)
    save_checkpoint(model_path, model.encoder)
    people = orl_people_txt(tmp_path, "peopleOrl.txt", range(1, 41))
    argv = ["make-normaliser", "--model", str(model_path), "--data", str(data_dir / "orl_faces"),
            "--people", str(people), "--cache-dir", str(tmp_path / "c"), "--top-k", "10",
            "--epochs", "20", "--impostor-pairs", "20000", "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    path = normaliser_path_for(model_path)
    assert report["normaliser"] == str(path) and path.is_file()
    assert report["source"]["identities"] == 40 and report["source"]["images"] == 400
    assert report["anchor"]["impostor_pairs"] == 20000
    with np.load(path, allow_pickle=False) as z:
        assert sorted(z.files) == sorted([*LAYERS, "meta"])  # weights only: no embedding, no face
        assert z["w1"].shape == (16, 64)
    loaded = normaliser_for(model_path, model.model_id)
    assert isinstance(loaded, LearnedNormaliser) and loaded.alpha == report["alpha"]
    # too few identities for a cohort: a clear error, no file
    few = orl_people_txt(tmp_path, "peopleFew.txt", range(1, 6))
    out = tmp_path / "few.npz"
    assert main([*argv[:6], str(few), "--out", str(out), "--cache-dir", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "identities" in err and not out.exists()
