"""PKBatchSampler invariants."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from faceapp.training.samplers import PKBatchSampler


def make_labels() -> list[int]:
    # identity -> image count; 7, 8 and 9 have a single image (ineligible).
    counts = {0: 10, 1: 2, 2: 3, 3: 5, 4: 4, 5: 2, 6: 7, 7: 1, 8: 1, 9: 1, 10: 6}
    labels = [lab for lab, c in counts.items() for _ in range(c)]
    # Shuffle deterministically so dataset indices are not grouped by label.
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0)).tolist()
    return [labels[i] for i in order]


LABELS = make_labels()
COUNTS = Counter(LABELS)
ELIGIBLE = {lab for lab, c in COUNTS.items() if c >= 2}


def all_batches(sampler: PKBatchSampler) -> list[list[int]]:
    return [list(b) for b in sampler]


@pytest.mark.parametrize(("p", "k"), [(2, 2), (3, 4), (4, 3), (8, 2)])
@pytest.mark.parametrize("seed", [0, 1])
def test_batch_structure(p: int, k: int, seed: int) -> None:
    sampler = PKBatchSampler(LABELS, p, k, batches_per_epoch=25, seed=seed)
    batches = all_batches(sampler)
    assert len(batches) == len(sampler) == 25
    for batch in batches:
        assert len(batch) == p * k
        assert all(isinstance(i, int) and 0 <= i < len(LABELS) for i in batch)
        labels = [LABELS[i] for i in batch]
        per_label = Counter(labels)
        assert len(per_label) == p
        assert set(per_label.values()) == {k}
        assert set(per_label) <= ELIGIBLE
        for c in range(p):  # grouped by identity
            chunk = batch[c * k : (c + 1) * k]
            assert len({LABELS[i] for i in chunk}) == 1
            distinct = len(set(chunk))
            assert distinct >= 2
            if COUNTS[LABELS[chunk[0]]] >= k:
                assert distinct == k
            else:
                assert distinct == COUNTS[LABELS[chunk[0]]]


def test_identities_are_covered_evenly() -> None:
    p, k = 3, 2
    n_ids = len(ELIGIBLE)  # 8
    sampler = PKBatchSampler(LABELS, p, k, batches_per_epoch=n_ids * 5, seed=3)
    seen: Counter[int] = Counter()
    for b, batch in enumerate(sampler, start=1):
        seen.update(LABELS[i] for i in batch[::k])
        assert max(seen.values()) - min(seen[lab] for lab in ELIGIBLE) <= 1
        if (b * p) % n_ids == 0:
            assert set(seen.values()) == {b * p // n_ids}
    assert set(seen) == ELIGIBLE


def test_images_cycle_before_repeating() -> None:
    # Identity 0 has 10 images; with k=5 every two appearances use all 10 once.
    labels = [0] * 10 + [1] * 10
    sampler = PKBatchSampler(labels, 2, 5, batches_per_epoch=6, seed=0)
    zero_chunks = [[i for i in batch if labels[i] == 0] for batch in sampler]
    for first, second in zip(zero_chunks[0::2], zero_chunks[1::2], strict=True):
        assert sorted(first + second) == list(range(10))


def test_deterministic_per_seed_and_epoch() -> None:
    a = PKBatchSampler(LABELS, 3, 2, seed=5)
    b = PKBatchSampler(LABELS, 3, 2, seed=5)
    assert all_batches(a) == all_batches(b)
    assert all_batches(a) == all_batches(a)  # iterating again repeats the epoch
    epoch0 = all_batches(a)
    a.set_epoch(1)
    b.set_epoch(1)
    assert all_batches(a) == all_batches(b)
    assert all_batches(a) != epoch0
    a.set_epoch(0)
    assert all_batches(a) == epoch0
    c = PKBatchSampler(LABELS, 3, 2, seed=6)
    c.set_epoch(2)
    assert all_batches(c) != epoch0


def test_default_length() -> None:
    n_eligible_images = sum(c for c in COUNTS.values() if c >= 2)  # 39
    sampler = PKBatchSampler(LABELS, 3, 4)
    assert len(sampler) == n_eligible_images // 12 == 3
    assert len(all_batches(sampler)) == 3
    assert sampler.n_eligible_images == n_eligible_images


def test_works_as_dataloader_batch_sampler() -> None:
    data = TensorDataset(torch.arange(len(LABELS)), torch.tensor(LABELS))
    sampler = PKBatchSampler(LABELS, 4, 2, batches_per_epoch=3, seed=1)
    loaded = list(DataLoader(data, batch_sampler=sampler))
    assert len(loaded) == 3
    for (idx, lab), batch in zip(loaded, all_batches(sampler), strict=True):
        assert idx.tolist() == batch
        assert lab.tolist() == [LABELS[i] for i in batch]


def test_errors() -> None:
    with pytest.raises(ValueError, match=r"at least p=9 identities with >= 2 images"):
        PKBatchSampler(LABELS, 9, 2)
    with pytest.raises(ValueError, match="p"):
        PKBatchSampler(LABELS, 1, 2)
    with pytest.raises(ValueError, match="k"):
        PKBatchSampler(LABELS, 2, 1)
    with pytest.raises(ValueError, match="batches_per_epoch"):
        PKBatchSampler(LABELS, 2, 2, batches_per_epoch=0)
    with pytest.raises(ValueError, match="integers"):
        PKBatchSampler([0.5, 0.5, 1.0, 1.0], 2, 2)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="identities"):
        PKBatchSampler([], 2, 2)
