"""TripletMarginLoss against a brute-force loop; hand-computed values; gradients; spread."""

from __future__ import annotations

import math

import pytest
import torch

from faceapp.training.losses import TripletMarginLoss, embedding_spread, is_collapsed
from faceapp.training.miners import BatchAllMiner, BatchHardMiner, SemiHardMiner


def brute_d(a: list[float], b: list[float], metric: str) -> float:
    if metric == "squared_l2":
        return sum((x - y) ** 2 for x, y in zip(a, b, strict=True))
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return 1.0 - dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def brute_all_triplets(labels: list[int]) -> list[tuple[int, int, int]]:
    n = len(labels)
    return [
        (a, p, q)
        for a in range(n)
        for p in range(n)
        for q in range(n)
        if a != p and labels[a] == labels[p] and labels[q] != labels[a]
    ]


def brute_loss(
    emb: torch.Tensor,
    triplets: list[tuple[int, int, int]],
    metric: str,
    margin: float,
    soft: bool,
    reduction: str,
) -> tuple[float, float, float, float]:
    """(loss, active_fraction, mean_pos, mean_neg) by a plain loop, in float64."""
    rows = emb.double().tolist()
    losses, dps, dns = [], [], []
    for a, p, q in triplets:
        dp, dn = brute_d(rows[a], rows[p], metric), brute_d(rows[a], rows[q], metric)
        dps.append(dp)
        dns.append(dn)
        losses.append(math.log1p(math.exp(dp - dn)) if soft else max(0.0, dp - dn + margin))
    active = [x for x in losses if x > 0]
    kept = losses if reduction == "mean" else active
    loss = sum(kept) / len(kept) if kept else 0.0
    n = len(triplets)
    return loss, len(active) / n, sum(dps) / n, sum(dns) / n


def make_batch(seed: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    n = 6 + seed % 7
    labels = torch.randint(0, 3, (n,), generator=g)
    labels[:3] = torch.tensor([0, 0, 1])
    emb = torch.randn(n, 2 + seed % 3, generator=g, dtype=torch.float64) * 0.7
    return emb.to(dtype), labels


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("metric", ["squared_l2", "cosine"])
@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "mean_active"])
def test_batch_all_loss_matches_brute_force(
    dtype: torch.dtype, metric: str, soft: bool, reduction: str
) -> None:
    margin = 0.5 if metric == "squared_l2" else 0.1
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    fractions = []
    for seed in range(6):
        emb, labels = make_batch(seed, dtype)
        loss_fn = TripletMarginLoss(
            BatchAllMiner(metric),  # type: ignore[arg-type]
            margin=margin,
            metric=metric,  # type: ignore[arg-type]
            soft=soft,
            reduction=reduction,  # type: ignore[arg-type]
        )
        out = loss_fn(emb, labels)
        triplets = brute_all_triplets(labels.tolist())
        exp_loss, exp_frac, exp_pos, exp_neg = brute_loss(emb, triplets, metric, margin, soft, reduction)
        assert out.loss.dtype == dtype
        assert out.loss.shape == ()
        assert out.n_triplets == len(triplets)
        assert out.loss.item() == pytest.approx(exp_loss, rel=tol, abs=tol)
        assert out.active_fraction == pytest.approx(exp_frac)
        assert out.mean_pos_dist == pytest.approx(exp_pos, rel=tol, abs=tol)
        assert out.mean_neg_dist == pytest.approx(exp_neg, rel=tol, abs=tol)
        fractions.append(out.active_fraction)
    if not soft:  # the cases include partly-active batches, so the two reductions differ
        assert any(0.0 < f < 1.0 for f in fractions)


@pytest.mark.parametrize("metric", ["squared_l2", "cosine"])
@pytest.mark.parametrize("miner_name", ["hard", "semi"])
def test_mined_loss_matches_brute_force_on_mined_triplets(metric: str, miner_name: str) -> None:
    margin = 0.5 if metric == "squared_l2" else 0.1
    for seed in range(6):
        emb, labels = make_batch(seed, torch.float64)
        miner = (
            BatchHardMiner(metric)  # type: ignore[arg-type]
            if miner_name == "hard"
            else SemiHardMiner(margin, metric)  # type: ignore[arg-type]
        )
        t = miner(emb, labels)
        triplets = list(zip(t.anchors.tolist(), t.positives.tolist(), t.negatives.tolist(), strict=True))
        out = TripletMarginLoss(miner, margin=margin, metric=metric)(emb, labels)  # type: ignore[arg-type]
        exp = brute_loss(emb, triplets, metric, margin, False, "mean")
        assert out.loss.item() == pytest.approx(exp[0], rel=1e-10, abs=1e-12)
        assert out.n_triplets == len(triplets)


def test_hand_computed_batch_hard_1d() -> None:
    # labels [0,0,1,1] on a line; squared distances d01=1, d02=2.25, d03=16, d12=.25, d13=9,
    # d23=6.25. Batch-hard triplets (0,1,2) (1,0,2) (2,3,1) (3,2,1), margin 0.2:
    # losses 0, 1-.25+.2=.95, 6.25-.25+.2=6.2, 0.
    emb = torch.tensor([[0.0], [1.0], [1.5], [4.0]], requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1])
    out = TripletMarginLoss(BatchHardMiner(), margin=0.2)(emb, labels)
    assert out.loss.item() == pytest.approx(7.15 / 4)
    assert out.active_fraction == 0.5
    assert out.n_triplets == 4
    assert out.mean_pos_dist == pytest.approx((1 + 1 + 6.25 + 6.25) / 4)
    assert out.mean_neg_dist == pytest.approx((2.25 + 0.25 + 0.25 + 9) / 4)
    out.loss.backward()
    # d/dx of [(x1-x0)^2 - (x1-x2)^2 + (x2-x3)^2 - (x2-x1)^2] / 4 at x = (0, 1, 1.5, 4)
    assert emb.grad is not None
    assert emb.grad.squeeze(1).tolist() == pytest.approx([-0.5, 1.0, -1.75, 1.25])

    active = TripletMarginLoss(BatchHardMiner(), margin=0.2, reduction="mean_active")
    assert active(emb, labels).loss.item() == pytest.approx(7.15 / 2)


def test_hand_computed_batch_all_1d() -> None:
    emb = torch.tensor([[0.0], [1.0], [1.5], [4.0]])
    labels = torch.tensor([0, 0, 1, 1])
    # 8 triplets; active ones: (1,0,2) .95, (2,3,0) 4.2, (2,3,1) 6.2 -> sum 11.35
    out = TripletMarginLoss(BatchAllMiner(), margin=0.2)(emb, labels)
    assert out.n_triplets == 8
    assert out.loss.item() == pytest.approx(11.35 / 8)
    assert out.active_fraction == pytest.approx(3 / 8)
    out = TripletMarginLoss(BatchAllMiner(), margin=0.2, reduction="mean_active")(emb, labels)
    assert out.loss.item() == pytest.approx(11.35 / 3)
    soft = TripletMarginLoss(BatchHardMiner(), soft=True)(emb, labels)
    expected = sum(math.log1p(math.exp(x)) for x in (1 - 2.25, 1 - 0.25, 6.25 - 0.25, 6.25 - 9))
    assert soft.loss.item() == pytest.approx(expected / 4)


@pytest.mark.parametrize("metric", ["squared_l2", "cosine"])
@pytest.mark.parametrize("reduction", ["mean", "mean_active"])
def test_gradient_flows_when_active(metric: str, reduction: str) -> None:
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(8, 4, generator=g, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    loss_fn = TripletMarginLoss(BatchHardMiner(metric), margin=1.0, metric=metric)  # type: ignore[arg-type]
    loss_fn.reduction = reduction  # type: ignore[assignment]
    out = loss_fn(emb, labels)
    assert out.active_fraction > 0
    out.loss.backward()
    assert emb.grad is not None
    assert float(emb.grad.abs().sum()) > 0
    assert bool(torch.isfinite(emb.grad).all())


def test_gradcheck_batch_all() -> None:
    emb0, labels = make_batch(2, torch.float64)
    emb = emb0.clone().requires_grad_(True)
    loss_fn = TripletMarginLoss(BatchAllMiner(), margin=0.5)
    assert torch.autograd.gradcheck(lambda x: loss_fn(x, labels).loss, (emb,))


@pytest.mark.parametrize("labels", [[0, 0, 0, 0], [0, 1, 2, 3]])
def test_no_triplet_gives_attached_zero(labels: list[int]) -> None:
    emb = torch.randn(4, 3, requires_grad=True)
    out = TripletMarginLoss(BatchHardMiner())(emb, torch.tensor(labels))
    assert out.n_triplets == 0
    assert out.loss.item() == 0.0
    assert out.loss.grad_fn is not None
    out.loss.backward()
    assert emb.grad is not None
    assert float(emb.grad.abs().sum()) == 0.0


def test_mean_active_with_nothing_active_is_attached_zero() -> None:
    # Classes far apart: every triplet satisfied by the margin.
    emb = torch.tensor([[0.0], [0.1], [10.0], [10.1]], requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1])
    out = TripletMarginLoss(BatchAllMiner(), margin=0.2, reduction="mean_active")(emb, labels)
    assert out.n_triplets == 8
    assert out.active_fraction == 0.0
    assert out.loss.item() == 0.0
    assert out.loss.grad_fn is not None
    out.loss.backward()


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="reduction"):
        TripletMarginLoss(BatchHardMiner(), reduction="sum")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="metric"):
        TripletMarginLoss(BatchHardMiner(), metric="l1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="margin"):
        TripletMarginLoss(BatchHardMiner(), margin=-1.0)


def brute_spread(emb: torch.Tensor) -> float:
    rows = emb.double().tolist()
    n = len(rows)
    total = 0.0
    for i in range(n):
        for j in range(n):
            if i != j:
                total += math.sqrt(sum((x - y) ** 2 for x, y in zip(rows[i], rows[j], strict=True)))
    return total / (n * (n - 1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_embedding_spread(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(1)
    emb = torch.randn(9, 3, generator=g, dtype=torch.float64).to(dtype)
    assert embedding_spread(emb) == pytest.approx(brute_spread(emb), rel=1e-6)
    point = torch.ones(16, 8, dtype=dtype)
    assert embedding_spread(point) == 0.0
    assert is_collapsed(point)
    assert embedding_spread(torch.zeros(1, 4)) == 0.0


def test_spread_of_random_unit_vectors_is_about_sqrt2() -> None:
    g = torch.Generator().manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(64, 512, generator=g), dim=1)
    assert embedding_spread(emb) == pytest.approx(math.sqrt(2.0), abs=0.02)
    assert not is_collapsed(emb)
    near = torch.nn.functional.normalize(torch.ones(64, 512) + 1e-4 * emb, dim=1)
    assert is_collapsed(near)
