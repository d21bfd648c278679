"""Identification templates: the normalised mean of a person's embeddings, and evaluation with
several gallery images per person (``--gallery-images``, ``--aggregate``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fakes import TemplateDetector

from faceapp.errors import FaceappError
from faceapp.nn.checkpoint import create_untrained_model, load_checkpoint, save_checkpoint
from faceapp.nn.encoder import EncoderConfig
from faceapp.nn.templates import mean_templates
from faceapp.training import evaluation
from faceapp.training.datasets import read_people, scan_identity_folders
from faceapp.training.identification import evaluate_identification
from faceapp.training.metrics import identification_report


def test_mean_templates_match_a_loop() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 4))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = np.array([5, 2, 5, 9, 2, 5, 9])
    ids, t = mean_templates(x, labels)
    assert ids.tolist() == [2, 5, 9] and t.dtype == np.float32
    for i, c in enumerate(ids):
        m = sum(x[j] for j in range(7) if labels[j] == c)
        np.testing.assert_allclose(t[i], m / np.sqrt(sum(v * v for v in m)), atol=1e-6)
    # one embedding: itself; two orthogonal unit vectors: their bisector
    ids, t = mean_templates(np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]), np.array([0, 0, 1]))
    np.testing.assert_allclose(t, [[2**-0.5, 2**-0.5], [0.6, 0.8]], atol=1e-7)
    with pytest.raises(ValueError, match="cancel"):
        mean_templates(np.array([[1.0, 0.0], [-1.0, 0.0]]), np.array([3, 3]))
    with pytest.raises(ValueError, match="do not match"):
        mean_templates(np.zeros((2, 2)), np.zeros(3, int))


TINY = EncoderConfig(input_size=32, embedding_dim=16, width=8, layers=(1, 1, 1, 1))


def test_several_gallery_images_and_mean_aggregate(data_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "tiny.pt"
    save_checkpoint(path, create_untrained_model(TINY, seed=3).encoder)
    model = load_checkpoint(path)
    people = tmp_path / "p.txt"
    people.write_text("8\n" + "".join(f"s{i}\t10\n" for i in range(1, 9)))
    det = TemplateDetector()
    kw = {"cache_dir": tmp_path / "cache", "detector": det}
    orl = data_dir / "orl_faces"
    default = evaluate_identification(model, orl, people, **kw)
    assert evaluate_identification(model, orl, people, gallery_images=1, aggregate="max", **kw) == default
    two_max = evaluate_identification(model, orl, people, gallery_images=2, **kw)
    two_mean = evaluate_identification(model, orl, people, gallery_images=2, aggregate="mean", **kw)
    for rep in (two_max, two_mean):  # 4 enrolled people with 2 images each: 4 x 8 known probes
        assert (rep["n_gallery"], rep["n_known_probes"], rep["n_distractor_probes"]) == (4, 32, 40)
        assert rep["gallery_images"] == 2
    assert (two_max["aggregate"], two_mean["aggregate"]) == ("max", "mean")
    # by hand: the first two images of each known identity, averaged
    images = scan_identity_folders(orl, list(read_people(people)))
    crops = evaluation.crops_for(model, list(images.paths), kw["cache_dir"], "p", det)
    emb = model.encoder.embed(crops.crops)
    lab = images.labels
    rng = np.random.default_rng(0)
    distract = set(rng.choice(np.unique(lab), size=4, replace=False).tolist())
    known = [c for c in np.unique(lab) if c not in distract]
    g_rows = [int(r) for c in known for r in np.flatnonzero(lab == c)[:2]]
    p_rows = [r for r in range(len(lab)) if r not in g_rows]
    means = np.stack([emb[lab == c][:2].sum(0) / np.linalg.norm(emb[lab == c][:2].sum(0)) for c in known])
    want = identification_report(means, np.asarray(known), emb[p_rows], lab[p_rows])
    for key in ("rank1", "rank5", "dir_at_fpir_0.01"):
        assert two_mean[key] == pytest.approx(want[key])
    want_max = identification_report(emb[g_rows], lab[g_rows], emb[p_rows], lab[p_rows])
    assert two_max["rank1"] == pytest.approx(want_max["rank1"])
    with pytest.raises(FaceappError, match="gallery-images"):
        evaluate_identification(model, orl, people, gallery_images=0, **kw)
    with pytest.raises(FaceappError, match="aggregate"):
        evaluate_identification(model, orl, people, aggregate="median", **kw)
