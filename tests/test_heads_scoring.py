"""Binary verification head formulas and scorers, against brute-force loops on hand-made vectors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from faceapp.nn.heads import CHI2_EPS, BinaryVerificationHead, pair_features
from faceapp.nn.scoring import DISTANCE, CosineScorer, HeadScorer, scorers_for

# Hand-made embeddings (not normalised on purpose for the formula checks), negative parts included.
A = [[0.5, -0.5, 0.25, -0.75], [1.0, 0.0, 0.0, 0.0], [-0.1, -0.2, -0.3, -0.4]]
B = [[-0.5, 0.5, 0.25, 0.0], [0.0, 1.0, 0.0, 0.0], [-0.1, 0.2, -0.9, 0.4]]
W = [0.5, -1.0, 2.0, -0.25]
BIAS = 0.125


def _loop_l1(a: list[float], b: list[float], w: list[float], bias: float) -> float:
    return sum(w[k] * abs(a[k] - b[k]) for k in range(len(a))) + bias


def _loop_chi2(a: list[float], b: list[float], w: list[float], bias: float) -> float:
    total = 0.0
    for k in range(len(a)):
        u, v = (a[k] + 1.0) / 2.0, (b[k] + 1.0) / 2.0
        total += w[k] * (u - v) ** 2 / (u + v + CHI2_EPS)
    return total + bias


def _head(mode: str, dim: int = 4) -> BinaryVerificationHead:
    head = BinaryVerificationHead(dim, mode)  # type: ignore[arg-type]
    with torch.no_grad():
        head.weight.copy_(torch.tensor(W[:dim]))
        head.bias.fill_(BIAS)
    return head


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("mode", "loop"), [("l1", _loop_l1), ("chi2", _loop_chi2)])
def test_pair_features_match_the_formula(dtype: torch.dtype, mode: str, loop: object) -> None:
    a, b = torch.tensor(A, dtype=dtype), torch.tensor(B, dtype=dtype)
    feats = pair_features(a, b, mode)  # type: ignore[arg-type]
    assert feats.shape == (3, 4) and feats.dtype == dtype
    for n in range(3):
        for k in range(4):
            one_hot = [1.0 if j == k else 0.0 for j in range(4)]
            expected = loop(A[n], B[n], one_hot, 0.0)  # type: ignore[operator]
            assert float(feats[n, k]) == pytest.approx(expected, rel=1e-6, abs=1e-7)


@pytest.mark.parametrize(("mode", "loop"), [("l1", _loop_l1), ("chi2", _loop_chi2)])
def test_head_logits_and_probability_match_a_loop(mode: str, loop: object) -> None:
    head = _head(mode)
    a, b = torch.tensor(A), torch.tensor(B)
    with torch.no_grad():
        logits = head(a, b)
        prob = head.probability(a, b)
    assert logits.shape == (3,) and prob.shape == (3,)
    for n in range(3):
        expected = loop(A[n], B[n], W, BIAS)  # type: ignore[operator]
        assert float(logits[n]) == pytest.approx(expected, rel=1e-5, abs=1e-6)
        assert float(prob[n]) == pytest.approx(1.0 / (1.0 + math.exp(-expected)), rel=1e-5)


@pytest.mark.parametrize("mode", ["l1", "chi2"])
def test_head_is_symmetric(mode: str) -> None:
    head = _head(mode)
    a, b = torch.tensor(A), torch.tensor(B)
    with torch.no_grad():
        torch.testing.assert_close(head(a, b), head(b, a))


def test_chi2_denominator_stays_positive_with_negative_components() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(size=(64, 8))
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    z[0] = 0.0
    z[0, 0] = -1.0  # the most negative component a unit vector can have
    z[1] = z[0]
    assert (z < 0).any()
    a = torch.tensor(z, dtype=torch.float32)
    feats = pair_features(a[:, None, :], a[None, :, :], "chi2")  # every pair, (64, 64, 8)
    assert torch.isfinite(feats).all() and (feats >= 0).all()
    # brute force: the smallest denominator over all pairs and components is > 0
    smallest = min(
        (z[i, k] + 1) / 2 + (z[j, k] + 1) / 2 + CHI2_EPS
        for i in range(64)
        for j in range(64)
        for k in range(8)
    )
    assert smallest > 0
    assert float(feats[0, 1].sum()) == 0.0  # identical vectors at -1: 0/eps, not NaN
    # the raw (unshifted) chi-square denominator would have been zero or negative here
    assert (z[0] + z[1]).min() < 0


def test_initial_head_prefers_close_pairs() -> None:
    """The untrained head starts as 'closer is more alike' (negative weights)."""
    head = BinaryVerificationHead(4, "l1")
    a = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    near = torch.tensor([[0.9, 0.1, 0.0, 0.0]])
    far = torch.tensor([[-1.0, 0.0, 0.0, 0.0]])
    with torch.no_grad():
        assert float(head.probability(a, near)) > float(head.probability(a, far))


def test_unknown_mode() -> None:
    with pytest.raises(ValueError, match="unknown head mode"):
        BinaryVerificationHead(4, "l2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown head mode"):
        pair_features(torch.zeros(1, 4), torch.zeros(1, 4), "cosine")  # type: ignore[arg-type]


# ---------------------------------------------------------------- scorers


def _unit(n: int, d: int, seed: int) -> np.ndarray:
    z = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return z / np.linalg.norm(z, axis=1, keepdims=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cosine_scorer_matrix_equals_pairs_and_brute_force(dtype: type) -> None:
    probes, gallery = _unit(3, 6, 1).astype(dtype), _unit(5, 6, 2).astype(dtype)
    scorer = CosineScorer()
    assert scorer.name == DISTANCE
    m = scorer.score_matrix(probes, gallery)
    assert m.shape == (3, 5) and m.dtype == np.float32
    for i in range(3):
        row = scorer.score_pairs(np.repeat(probes[i : i + 1], 5, axis=0), gallery)
        np.testing.assert_allclose(m[i], row, atol=1e-6)
        for j in range(5):
            dot = sum(float(probes[i, k]) * float(gallery[j, k]) for k in range(6))
            assert m[i, j] == pytest.approx(dot, abs=1e-6)
            # the same similarity from the squared Euclidean distance of unit vectors
            sq = sum((float(probes[i, k]) - float(gallery[j, k])) ** 2 for k in range(6))
            assert m[i, j] == pytest.approx(1.0 - sq / 2.0, abs=1e-5)
    assert scorer.score_matrix(probes[:1], probes[:1])[0, 0] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("mode", ["l1", "chi2"])
@pytest.mark.parametrize("chunk", [1, 3, 4096])
def test_head_scorer_matrix_equals_a_loop_of_pairs(mode: str, chunk: int) -> None:
    torch.manual_seed(0)
    head = BinaryVerificationHead(6, mode)  # type: ignore[arg-type]
    with torch.no_grad():
        head.weight.copy_(torch.randn(6))
        head.bias.fill_(0.5)
    scorer = HeadScorer(head, chunk=chunk)
    assert scorer.name == f"head_{mode}"
    probes, gallery = _unit(4, 6, 3), _unit(7, 6, 4)
    m = scorer.score_matrix(probes, gallery)
    assert m.shape == (4, 7) and m.dtype == np.float32
    assert np.all((m > 0) & (m < 1))
    for i in range(4):
        for j in range(7):
            pair = scorer.score_pairs(probes[i : i + 1], gallery[j : j + 1])
            assert pair.shape == (1,) and pair.dtype == np.float32
            assert m[i, j] == pytest.approx(float(pair[0]), abs=1e-6)
    empty = scorer.score_matrix(probes, np.zeros((0, 6), np.float32))
    assert empty.shape == (4, 0)


def test_scorers_for_a_model_with_heads() -> None:
    from faceapp.nn.checkpoint import create_untrained_model
    from faceapp.nn.encoder import EncoderConfig

    model = create_untrained_model(
        EncoderConfig(input_size=32, embedding_dim=6, width=4, layers=(1, 1, 1, 1))
    )
    assert list(scorers_for(model)) == [DISTANCE]
    model.heads["head_chi2"] = BinaryVerificationHead(6, "chi2")
    model.heads["head_l1"] = BinaryVerificationHead(6, "l1")
    scorers = scorers_for(model)
    assert list(scorers) == [DISTANCE, "head_chi2", "head_l1"]
    z = _unit(2, 6, 5)
    for scorer in scorers.values():  # every scorer: a similarity, higher for the identical pair
        same = scorer.score_pairs(z[:1], z[:1])[0]
        other = scorer.score_pairs(z[:1], z[1:2])[0]
        assert same > other
