"""The Siamese encoder: shapes, dtype, unit norm, eval-mode determinism, flip TTA, backbones."""

from __future__ import annotations

import socket
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from faceapp.errors import ModelError, WeightsUnavailable
from faceapp.nn.encoder import Encoder, EncoderConfig, load_pretrained_inception

TINY = EncoderConfig(input_size=32, embedding_dim=16, width=4, layers=(1, 1, 1, 1))


def _crops(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def _trained_stats_encoder(config: EncoderConfig = TINY, seed: int = 0) -> Encoder:
    """A seeded encoder whose BatchNorm running statistics are not the initial (0, 1)."""
    torch.manual_seed(seed)
    enc = Encoder(config)
    enc.train()
    with torch.no_grad():
        for i in range(3):
            enc(enc.preprocess(_crops(8, config.input_size, seed=100 + i)))
    return enc.eval()


def test_embed_shape_dtype_unit_norm() -> None:
    enc = _trained_stats_encoder()
    z = enc.embed(_crops(5, 32))
    assert z.shape == (5, 16) and z.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(z[0], z[1])  # different crops, different embeddings
    assert enc.embed(_crops(1, 32)[0]).shape == (1, 16)  # a single (S, S, 3) crop
    empty = enc.embed(np.zeros((0, 32, 32, 3), np.uint8))
    assert empty.shape == (0, 16) and empty.dtype == np.float32


def test_forward_is_unit_norm_for_float_batches() -> None:
    enc = _trained_stats_encoder()
    with torch.no_grad():
        out = enc(torch.randn(4, 3, 32, 32))
    assert out.shape == (4, 16) and out.dtype == torch.float32
    torch.testing.assert_close(out.norm(dim=1), torch.ones(4), atol=1e-5, rtol=0)


def test_embed_is_deterministic_and_independent_of_the_batch() -> None:
    enc = _trained_stats_encoder()
    crops = _crops(7, 32, seed=3)
    first = enc.embed(crops)
    assert np.array_equal(first, enc.embed(crops))  # same call, same bits
    np.testing.assert_allclose(enc.embed(crops, batch_size=2), first, atol=1e-5)
    for i in (0, 4):  # eval-mode BatchNorm: a crop's embedding does not depend on its batch mates
        np.testing.assert_allclose(enc.embed(crops[i : i + 1])[0], first[i], atol=1e-5)
    frozen = crops.copy()
    frozen.flags.writeable = False  # e.g. a crop kept in a frozen dataclass
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.array_equal(enc.embed(frozen), first)


def test_embed_uses_eval_mode_and_restores_the_training_flag() -> None:
    enc = _trained_stats_encoder()
    crops = _crops(4, 32, seed=5)
    reference = enc.embed(crops)
    enc.train()
    np.testing.assert_allclose(enc.embed(crops), reference, atol=1e-6)  # not batch statistics
    assert enc.training  # put back as it was
    enc.eval()
    enc.embed(crops)
    assert not enc.training


def test_preprocess_normalises_and_never_modifies_the_input() -> None:
    enc = _trained_stats_encoder()
    crops = _crops(2, 32, seed=6)
    x = enc.preprocess(crops)
    assert x.shape == (2, 3, 32, 32) and x.dtype == torch.float32
    r, c = 3, 7
    for ch in range(3):  # brute force: (v / 255 - mean) / std
        expected = (crops[1, r, c, ch] / 255.0 - TINY.mean) / TINY.std
        assert float(x[1, ch, r, c]) == pytest.approx(expected, abs=1e-6)
    as_float = crops.astype(np.float32)
    enc.preprocess(as_float)
    assert np.array_equal(as_float, crops.astype(np.float32))  # no in-place division of the caller's data
    as_tensor = torch.as_tensor(as_float.copy())
    enc.preprocess(as_tensor)
    assert torch.equal(as_tensor, torch.as_tensor(as_float))


@pytest.mark.parametrize("shape", [(2, 32, 32), (2, 31, 32, 3), (2, 32, 32, 1), (2, 3, 32, 32)])
def test_wrong_crop_shapes_raise_model_error(shape: tuple[int, ...]) -> None:
    enc = _trained_stats_encoder()
    with pytest.raises(ModelError, match="expected crops"):
        enc.embed(np.zeros(shape, np.uint8) if len(shape) == 4 else np.zeros((5, *shape), np.uint8))


def test_flip_tta_averages_crop_and_mirror() -> None:
    plain = _trained_stats_encoder()
    tta = Encoder(EncoderConfig(**{**TINY.to_dict(), "layers": TINY.layers, "flip_tta": True}))
    tta.load_state_dict(plain.state_dict())
    tta.eval()
    crops = _crops(3, 32, seed=8)
    z = tta.embed(crops)
    with torch.no_grad():
        x = plain.preprocess(crops)
        expected = F.normalize(plain(x) + plain(torch.flip(x, dims=[3])), dim=1).numpy()
    np.testing.assert_allclose(z, expected, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-5)
    # a mirrored face gets the same embedding, which the plain encoder does not give
    mirrored = np.ascontiguousarray(crops[:, :, ::-1])
    np.testing.assert_allclose(tta.embed(mirrored), z, atol=1e-5)
    assert not np.allclose(plain.embed(mirrored), plain.embed(crops), atol=1e-3)


def test_config_validation_and_dict_round_trip() -> None:
    d = TINY.to_dict()
    assert d["layers"] == [1, 1, 1, 1]
    assert EncoderConfig.from_dict(d) == TINY
    with pytest.raises(ModelError, match="unknown backbone"):
        EncoderConfig(backbone="vgg")
    with pytest.raises(ModelError, match="multiple of 16"):
        EncoderConfig(input_size=100)
    with pytest.raises(ModelError, match="unknown encoder settings"):
        EncoderConfig.from_dict({**d, "colour": "blue"})


def test_width_and_dimension_are_configurable() -> None:
    small = Encoder(EncoderConfig(input_size=48, embedding_dim=24, width=4, layers=(1, 1, 1, 1)))
    wide = Encoder(EncoderConfig(input_size=48, embedding_dim=24, width=8, layers=(1, 1, 1, 1)))
    count = [sum(p.numel() for p in m.parameters()) for m in (small, wide)]
    assert count[1] > 2 * count[0]
    assert small.eval().embed(_crops(2, 48)).shape == (2, 24)


# ---------------------------------------------------------------- facenet-pytorch backbone


@pytest.fixture(scope="module")
def inception() -> Encoder:
    torch.manual_seed(0)
    return Encoder(EncoderConfig(backbone="inception_resnet_v1", input_size=160, embedding_dim=512)).eval()


def test_inception_backbone_builds_with_identity_head(inception: Encoder) -> None:
    assert isinstance(inception.head, torch.nn.Identity)
    z = inception.embed(_crops(1, 160, seed=9))
    assert z.shape == (1, 512) and z.dtype == np.float32
    assert np.linalg.norm(z[0]) == pytest.approx(1.0, abs=1e-5)
    projected = Encoder(EncoderConfig(backbone="inception_resnet_v1", input_size=160, embedding_dim=128))
    assert isinstance(projected.head, torch.nn.Linear) and projected.head.in_features == 512


def test_inception_weights_from_a_local_file(inception: Encoder, tmp_path: Path) -> None:
    path = tmp_path / "inception.pt"
    # facenet-pytorch's files hold the classifier too: it must be ignored
    state = dict(inception.backbone.state_dict())
    state["logits.weight"] = torch.zeros(10, 512)
    state["logits.bias"] = torch.zeros(10)
    torch.save(state, path)
    torch.manual_seed(1)
    other = Encoder(EncoderConfig(backbone="inception_resnet_v1", input_size=160, embedding_dim=512)).eval()
    crops = _crops(1, 160, seed=10)
    assert not np.allclose(other.embed(crops), inception.embed(crops))
    load_pretrained_inception(other, str(path))
    np.testing.assert_array_equal(other.embed(crops), inception.embed(crops))

    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not torch at all")
    with pytest.raises(WeightsUnavailable, match="not a readable weights file"):
        load_pretrained_inception(other, str(bad))
    foreign = tmp_path / "foreign.pt"
    torch.save({"conv.weight": torch.zeros(3, 3)}, foreign)
    with pytest.raises(WeightsUnavailable, match="not InceptionResnetV1 weights"):
        load_pretrained_inception(other, str(foreign))
    with pytest.raises(WeightsUnavailable, match="no such weights file"):
        load_pretrained_inception(other, str(tmp_path / "missing.pt"))


def test_pretrained_weights_need_the_inception_backbone() -> None:
    with pytest.raises(ModelError, match="inception_resnet_v1"):
        load_pretrained_inception(Encoder(TINY), "vggface2")


def _online(host: str = "github.com", timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def test_pretrained_download_offline_is_a_clear_error(inception: Encoder) -> None:
    """The machine running the tests is offline: no weights, a WeightsUnavailable with a message."""
    from facenet_pytorch.models.inception_resnet_v1 import get_torch_home

    cached = Path(get_torch_home()) / "checkpoints" / "20180402-114759-vggface2.pt"
    if _online() or cached.exists():
        pytest.skip("network or cached weights available: this test checks the offline failure")
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(5.0)  # never hang on a half-open network
    try:
        with pytest.raises(WeightsUnavailable) as info:
            load_pretrained_inception(inception, "vggface2")
    finally:
        socket.setdefaulttimeout(previous)
    message = str(info.value)
    assert "vggface2" in message and "offline" in message and "path" in message
    assert "\n" not in message
