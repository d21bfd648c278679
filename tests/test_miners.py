"""Miners against brute-force loops over all (a, p, n)."""

from __future__ import annotations

import math

import pytest
import torch

from faceapp.training.miners import (
    BatchAllMiner,
    BatchHardMiner,
    MinedTriplets,
    SemiHardMiner,
)

DTYPES = [torch.float32, torch.float64]
METRICS = ["squared_l2", "cosine"]


def brute_dist(emb: torch.Tensor, metric: str) -> list[list[float]]:
    rows = emb.double().tolist()
    n = len(rows)
    out = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            a, b = rows[i], rows[j]
            if metric == "squared_l2":
                out[i][j] = sum((x - y) ** 2 for x, y in zip(a, b, strict=True))
            else:
                dot = sum(x * y for x, y in zip(a, b, strict=True))
                na = math.sqrt(sum(x * x for x in a))
                nb = math.sqrt(sum(y * y for y in b))
                out[i][j] = 1.0 - dot / (na * nb)
    return out


def brute_all(labels: list[int]) -> list[tuple[int, int, int]]:
    n = len(labels)
    return [
        (a, p, q)
        for a in range(n)
        for p in range(n)
        for q in range(n)
        if a != p and labels[a] == labels[p] and labels[q] != labels[a]
    ]


def brute_hard(d: list[list[float]], labels: list[int]) -> list[tuple[int, int, int]]:
    out = []
    n = len(labels)
    for a in range(n):
        best_p, best_n = None, None
        for j in range(n):
            if j != a and labels[j] == labels[a] and (best_p is None or d[a][j] > d[a][best_p]):
                best_p = j
            if labels[j] != labels[a] and (best_n is None or d[a][j] < d[a][best_n]):
                best_n = j
        if best_p is not None and best_n is not None:
            out.append((a, best_p, best_n))
    return out


def brute_semi(
    d: list[list[float]], labels: list[int], margin: float
) -> tuple[list[tuple[int, int, int]], list[int]]:
    """Triplets and which rule (1 semi-hard, 2 beyond, 3 farthest) chose each negative."""
    out, rules = [], []
    n = len(labels)
    for a in range(n):
        negs = [j for j in range(n) if labels[j] != labels[a]]
        if not negs:
            continue
        for p in range(n):
            if p == a or labels[p] != labels[a]:
                continue
            dap = d[a][p]
            semi = [j for j in negs if dap < d[a][j] < dap + margin]
            beyond = [j for j in negs if d[a][j] > dap]
            for rule, cands in ((1, semi), (2, beyond), (3, negs)):
                if cands:
                    # min()/max() return the first extremum: lowest index on ties.
                    pick = max if rule == 3 else min
                    out.append((a, p, pick(cands, key=lambda j: d[a][j])))
                    rules.append(rule)
                    break
    return out, rules


def as_list(t: MinedTriplets) -> list[tuple[int, int, int]]:
    for x in (t.anchors, t.positives, t.negatives):
        assert x.dtype == torch.int64
        assert x.shape == (len(t),)
    return list(zip(t.anchors.tolist(), t.positives.tolist(), t.negatives.tolist(), strict=True))


def make_batch(seed: int, dtype: torch.dtype, metric: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Small batch. For squared L2 the coordinates are small integers: distances are exact
    in float32 and ties are frequent (exercises the lowest-index rule)."""
    g = torch.Generator().manual_seed(seed)
    n = 6 + seed % 7  # 6..12
    dim = 2 + seed % 3  # 2..4
    n_classes = 2 + seed % 3
    labels = torch.randint(0, n_classes, (n,), generator=g)
    labels[:2] = torch.tensor([0, 0])  # at least one positive pair
    labels[2] = 1  # at least two classes
    if metric == "squared_l2":
        emb = torch.randint(-2, 3, (n, dim), generator=g).to(dtype)
    else:
        emb = torch.randn(n, dim, generator=g, dtype=torch.float64).to(dtype)
    return emb, labels


SEEDS = list(range(12))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("seed", SEEDS)
def test_batch_all_matches_brute_force(dtype: torch.dtype, metric: str, seed: int) -> None:
    emb, labels = make_batch(seed, dtype, metric)
    got = as_list(BatchAllMiner(metric)(emb, labels))  # type: ignore[arg-type]
    assert got == brute_all(labels.tolist())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("seed", SEEDS)
def test_batch_hard_matches_brute_force(dtype: torch.dtype, metric: str, seed: int) -> None:
    emb, labels = make_batch(seed, dtype, metric)
    got = as_list(BatchHardMiner(metric)(emb, labels))  # type: ignore[arg-type]
    assert got == brute_hard(brute_dist(emb, metric), labels.tolist())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("metric", METRICS)
def test_semi_hard_matches_brute_force(dtype: torch.dtype, metric: str) -> None:
    margin = 3.0 if metric == "squared_l2" else 0.3
    seen_rules: set[int] = set()
    for seed in SEEDS:
        emb, labels = make_batch(seed, dtype, metric)
        miner = SemiHardMiner(margin, metric)  # type: ignore[arg-type]
        expected, rules = brute_semi(brute_dist(emb, metric), labels.tolist(), margin)
        got = miner(emb, labels)
        assert as_list(got) == expected, f"seed {seed}"
        assert miner.semi_hard_mask(emb, labels).tolist() == [r == 1 for r in rules]
        seen_rules.update(rules)
    # The cases must exercise all three preference levels, or the test proves little.
    assert seen_rules == {1, 2, 3}


def test_hand_computed_1d() -> None:
    # Points on a line, labels [0, 0, 1, 1]; squared distances:
    # d01=1, d02=2.25, d03=16, d12=0.25, d13=9, d23=6.25
    emb = torch.tensor([[0.0], [1.0], [1.5], [4.0]])
    labels = torch.tensor([0, 0, 1, 1])
    assert as_list(BatchHardMiner()(emb, labels)) == [(0, 1, 2), (1, 0, 2), (2, 3, 1), (3, 2, 1)]
    assert as_list(BatchAllMiner()(emb, labels)) == [
        (0, 1, 2),
        (0, 1, 3),
        (1, 0, 2),
        (1, 0, 3),
        (2, 3, 0),
        (2, 3, 1),
        (3, 2, 0),
        (3, 2, 1),
    ]
    semi = SemiHardMiner(margin=1.5)
    # (0,1): band (1, 2.5) holds n=2 (2.25)       -> semi-hard
    # (1,0): band (1, 2.5) empty; beyond 1: n=3   -> easiest farther negative
    # (2,3): no negative beyond 6.25: farthest n=0 (2.25) -> fallback
    # (3,2): band (6.25, 7.75) empty; beyond: n=1 (9)
    assert as_list(semi(emb, labels)) == [(0, 1, 2), (1, 0, 3), (2, 3, 0), (3, 2, 1)]
    assert semi.semi_hard_mask(emb, labels).tolist() == [True, False, False, False]


def test_batch_hard_ties_go_to_lowest_index() -> None:
    # Anchor 0 at the origin; positives 1, 2 both at distance 1; negatives 3, 4 both at 4.
    emb = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [0.0, -2.0]])
    labels = torch.tensor([0, 0, 0, 1, 1])
    got = BatchHardMiner()(emb, labels)
    assert (got.anchors[0].item(), got.positives[0].item(), got.negatives[0].item()) == (0, 1, 3)


@pytest.mark.parametrize("miner", [BatchAllMiner(), BatchHardMiner("cosine"), SemiHardMiner(0.2)], ids=repr)
@pytest.mark.parametrize("labels", [[0, 0, 0, 0], [0, 1, 2, 3], [5]])
def test_no_valid_triplet(miner: object, labels: list[int]) -> None:
    emb = torch.randn(len(labels), 3)
    out = miner(emb, torch.tensor(labels))  # type: ignore[operator]
    assert len(out) == 0
    assert out.anchors.dtype == torch.int64


def test_anchor_without_positive_is_skipped() -> None:
    emb = torch.tensor([[0.0], [1.0], [5.0]])
    labels = torch.tensor([0, 0, 1])  # anchor 2 has no positive
    assert as_list(BatchHardMiner()(emb, labels)) == [(0, 1, 2), (1, 0, 2)]


def test_miners_do_not_build_a_graph() -> None:
    emb = torch.randn(8, 3, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    for miner in (BatchAllMiner(), BatchHardMiner(), SemiHardMiner(0.2)):
        out = miner(emb, labels)
        assert not out.anchors.requires_grad
    assert emb.grad is None


def test_batch_of_256_is_vectorised_and_consistent() -> None:
    g = torch.Generator().manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(256, 16, generator=g), dim=1)
    labels = torch.arange(32).repeat_interleave(8)
    hard = BatchHardMiner()(emb, labels)
    assert len(hard) == 256
    assert bool((labels[hard.positives] == labels[hard.anchors]).all())
    assert bool((labels[hard.negatives] != labels[hard.anchors]).all())
    semi = SemiHardMiner(0.2)(emb, labels)
    assert len(semi) == 256 * 7
    assert len(BatchAllMiner()(emb, labels)) == 256 * 7 * 248


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="metric"):
        BatchHardMiner("euclid")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="margin"):
        SemiHardMiner(0.0)
    with pytest.raises(ValueError, match="labels"):
        BatchHardMiner()(torch.zeros(3, 2), torch.zeros(4, dtype=torch.int64))
