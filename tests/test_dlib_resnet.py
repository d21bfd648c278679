"""dlib's face ResNet in PyTorch: the padded add against loops, the import, and equivalence
with dlib itself (``dlib-bin``, a test-only dependency) on real aligned LFW chips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from faceapp.cli import main
from faceapp.config import default_model_path
from faceapp.nn.checkpoint import load_checkpoint
from faceapp.nn.dlib_resnet import DlibBlock, DlibResNet, add_zero_padded
from faceapp.nn.pretrained import dlib_encoder, locate_dlib_model
from faceapp.vision.alignment import AlignmentTemplate, align_face
from faceapp.vision.images import load_image

PEOPLE = ("Aaron_Peirsol", "Colin_Powell", "Serena_Williams", "Tony_Blair")


def test_add_zero_padded_matches_loops() -> None:
    rng = np.random.default_rng(1)
    a = rng.standard_normal((2, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal((2, 2, 4, 4)).astype(np.float32)
    want = np.zeros((2, 3, 4, 4), np.float32)
    for n in range(2):
        for c in range(3):
            for y in range(4):
                for x in range(4):
                    if c < 3 and y < 3 and x < 3:
                        want[n, c, y, x] += a[n, c, y, x]
                    if c < 2:
                        want[n, c, y, x] += b[n, c, y, x]
    got = add_zero_padded(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    same = add_zero_padded(torch.from_numpy(a), torch.from_numpy(a)).numpy()
    np.testing.assert_allclose(same, 2 * a, rtol=0, atol=1e-6)


def test_feature_map_sizes_follow_dlib() -> None:
    net = DlibResNet().eval()
    sizes: list[tuple[int, ...]] = []
    for block in net.blocks:
        block.register_forward_hook(lambda _m, _i, out: sizes.append(tuple(out.shape[1:])))
    with torch.no_grad():
        out = net(torch.zeros(1, 3, 150, 150))
    assert out.shape == (1, 128)
    assert sizes[0] == (32, 35, 35) and sizes[3] == (64, 17, 17) and sizes[7] == (128, 8, 8)
    # first 256 down block: conv path 3x3, pooled skip 4x4 -> zero-padded to 4x4
    assert sizes[10] == (256, 4, 4) and sizes[-1] == (256, 2, 2)
    assert sum(isinstance(b, DlibBlock) and b.down for b in net.blocks) == 4
    assert sum(p.numel() for p in net.parameters()) == 5_614_592


@pytest.fixture(scope="module")
def chips(lfw_dir: Path, detector) -> np.ndarray:
    """(8, 150, 150, 3) uint8: MTCNN + the dlib150 template on real LFW photos."""
    out = []
    for person in PEOPLE:
        for path in sorted((lfw_dir / person).glob("*.jpg"))[:2]:
            image = load_image(path)
            face = detector.detect(image)[0]
            out.append(align_face(image, face, AlignmentTemplate.dlib150()).crop)
    return np.stack(out)


def test_descriptors_equal_dlibs_own(chips: np.ndarray) -> None:
    import dlib

    net = dlib.face_recognition_model_v1(str(locate_dlib_model()))
    ref = np.stack([np.asarray(net.compute_face_descriptor(c), dtype=np.float64) for c in chips])
    enc = dlib_encoder()
    with torch.inference_mode():
        ours = enc.raw(enc.preprocess(chips)).double().numpy()
    assert np.abs(ours - ref).max() < 1e-5
    assert np.linalg.norm(ref, axis=1).min() > 1.0  # dlib's descriptors are not unit length
    # the app's embedding is the same descriptor, L2-normalised
    emb = enc.embed(chips)
    np.testing.assert_allclose(emb, ref / np.linalg.norm(ref, axis=1, keepdims=True), atol=1e-5)
    # and it separates people as dlib does: same person closer than any other
    d = np.linalg.norm(emb[:, None] - emb[None], axis=2)
    for i in range(0, len(chips), 2):
        others = [j for j in range(len(chips)) if j // 2 != i // 2]
        assert d[i, i + 1] < d[i, others].min()


def test_bgr_order_breaks_equivalence(chips: np.ndarray) -> None:
    """The details the port depends on are observable: swapping channels changes the output."""
    enc = dlib_encoder()
    with torch.inference_mode():
        rgb = enc.raw(enc.preprocess(chips[:2]))
        bgr = enc.raw(enc.preprocess(np.ascontiguousarray(chips[:2, :, :, ::-1])))
    assert (rgb - bgr).abs().max() > 1e-2


def test_import_pretrained_cli_writes_a_full_checkpoint(tmp_path: Path, capsys) -> None:
    out = tmp_path / "dlib.pt"
    assert main(["import-pretrained", "dlib", "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    model = load_checkpoint(out)
    assert summary["model_id"] == model.model_id and summary["input_size"] == 150
    assert model.encoder.input_size == 150 and model.embedding_dim == 128
    assert model.template.name == "dlib150" and model.template.size == 150
    assert model.meta["alignment"]["points"][0] == [47.73, 46.24]
    assert model.meta["normalisation"] == {"mean": [122.782, 117.001, 104.298], "std": 256.0, "scale": 1.0}
    assert "public domain" in model.meta["provenance"]["licence"]
    # the shipped default is exactly this import
    assert load_checkpoint(default_model_path()).model_id == model.model_id


def test_import_pretrained_refuses_a_foreign_dat(tmp_path: Path, capsys) -> None:
    junk = tmp_path / "junk.dat"
    junk.write_bytes(b"\x01\x01\x05hello")
    out = tmp_path / "x.pt"
    assert main(["import-pretrained", "dlib", "--dat", str(junk), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Traceback" not in err
    assert not out.exists()
