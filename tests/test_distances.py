"""pairwise_distances against a Python double loop."""

from __future__ import annotations

import math

import pytest
import torch

from faceapp.training import distances
from faceapp.training.distances import pairwise_distances


@pytest.fixture(params=["direct", "matmul"])
def sq_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test through both squared-L2 code paths (explicit differences / expansion)."""
    if request.param == "matmul":
        monkeypatch.setattr(distances, "DIRECT_MAX_ELEMENTS", 0)
    return str(request.param)


def brute_distance(a: list[float], b: list[float], metric: str) -> float:
    if metric == "squared_l2":
        return sum((x - y) ** 2 for x, y in zip(a, b, strict=True))
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    return 1.0 - dot / (na * nb)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("metric", ["squared_l2", "cosine"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_double_loop(dtype: torch.dtype, metric: str, seed: int, sq_path: str) -> None:
    g = torch.Generator().manual_seed(seed)
    n, d = 4 + 3 * seed, 2 + seed
    emb = torch.randn(n, d, generator=g, dtype=torch.float64).to(dtype)
    out = pairwise_distances(emb, metric)  # type: ignore[arg-type]
    assert out.shape == (n, n)
    assert out.dtype == dtype
    rows = emb.double().tolist()
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    for i in range(n):
        assert out[i, i].item() == 0.0
        for j in range(n):
            if i != j:
                expected = brute_distance(rows[i], rows[j], metric)
                assert out[i, j].item() == pytest.approx(expected, abs=tol, rel=tol)
    assert torch.equal(out, out.T)
    assert bool((out >= 0).all())


def test_hand_computed_values() -> None:
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [2.0, 0.0], [1.0, 1.0]])
    sq = pairwise_distances(emb, "squared_l2")
    assert sq[0, 1].item() == pytest.approx(2.0)
    assert sq[0, 2].item() == pytest.approx(4.0)
    assert sq[0, 3].item() == pytest.approx(1.0)
    assert sq[2, 3].item() == pytest.approx(9.0)
    cos = pairwise_distances(emb, "cosine")
    assert cos[0, 1].item() == pytest.approx(1.0)
    assert cos[0, 2].item() == pytest.approx(2.0)
    assert cos[0, 3].item() == pytest.approx(0.0, abs=1e-7)
    assert cos[0, 4].item() == pytest.approx(1.0 - 1.0 / math.sqrt(2.0))


def test_duplicate_rows_give_zero_not_negative(sq_path: str) -> None:
    # Large, nearly equal rows: the |a|^2 + |b|^2 - 2ab expansion cancels catastrophically.
    g = torch.Generator().manual_seed(0)
    base = 1000.0 + torch.randn(1, 8, generator=g)
    emb = torch.cat([base, base, base + 1e-3, -base])
    out = pairwise_distances(emb, "squared_l2")
    assert bool((out >= 0).all())
    assert torch.equal(out, out.T)
    if sq_path == "direct":
        assert out[0, 1].item() == 0.0
        assert out[0, 2].item() > 0.0


@pytest.mark.parametrize("metric", ["squared_l2", "cosine"])
def test_gradcheck(metric: str, sq_path: str) -> None:
    g = torch.Generator().manual_seed(3)
    emb = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: pairwise_distances(x, metric), (emb,))  # type: ignore[arg-type]


@pytest.mark.parametrize("metric", ["squared_l2", "cosine"])
def test_gradient_is_finite_with_duplicates(metric: str, sq_path: str) -> None:
    emb = torch.tensor([[1.0, 2.0], [1.0, 2.0], [0.5, -1.0]], requires_grad=True)
    pairwise_distances(emb, metric).sum().backward()  # type: ignore[arg-type]
    assert emb.grad is not None
    assert bool(torch.isfinite(emb.grad).all())


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="metric"):
        pairwise_distances(torch.zeros(3, 2), "l1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="N, D"):
        pairwise_distances(torch.zeros(3), "cosine")
    with pytest.raises(ValueError, match="floating"):
        pairwise_distances(torch.zeros(3, 2, dtype=torch.int64), "cosine")
