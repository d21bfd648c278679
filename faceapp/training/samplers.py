"""P x K batch sampling for triplet training (Hermans et al. 2017).

Each batch holds ``p`` distinct identities with ``k`` images each, so that every anchor has
``k - 1`` positives and ``(p - 1) k`` negatives in the batch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

__all__ = ["PKBatchSampler"]

logger = logging.getLogger(__name__)


class PKBatchSampler(Sampler[list[int]]):
    """Yield batches of ``p * k`` dataset indices: ``p`` identities x ``k`` images.

    Use as ``DataLoader(dataset, batch_sampler=PKBatchSampler(labels, p, k))``.

    * Only identities with at least 2 images are eligible (others cannot form a positive pair).
    * Identities are visited in a shuffled cycle: each epoch walks a random permutation of the
      eligible identities, ``p`` at a time, and starts a fresh permutation when it runs out
      (never repeating an identity within a batch). The identities consumed so far always
      form a concatenation of permutations, so per-identity counts differ by at most 1.
    * Images of an identity also cycle through a random permutation. An identity with
      ``>= k`` images gives ``k`` distinct images; one with ``m < k`` images gives all ``m``
      (so at least 2 distinct) plus ``k - m`` drawn with replacement.
    * Within a batch the indices are grouped by identity: ``batch[i*k:(i+1)*k]`` share a label.
    * Randomness comes from ``numpy.random.default_rng(seed + epoch)``: iterating twice
      without :meth:`set_epoch` yields the same batches; a new epoch yields new ones.

    Args:
        labels: identity label of each dataset item (length = dataset size), integers.
        p: identities per batch (``>= 2``).
        k: images per identity (``>= 2``).
        batches_per_epoch: batches per iteration; default ``max(1, n_eligible_images // (p*k))``.
        seed: base seed.

    Raises:
        ValueError: bad ``p``/``k``/``batches_per_epoch``, or fewer than ``p`` eligible
            identities.
    """

    def __init__(
        self,
        labels: Sequence[int],
        p: int,
        k: int,
        *,
        batches_per_epoch: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if p < 2:
            raise ValueError(f"p (identities per batch) must be >= 2, got {p}")
        if k < 2:
            raise ValueError(f"k (images per identity) must be >= 2, got {k}")
        arr = np.asarray(labels)
        if arr.ndim != 1:
            raise ValueError(f"labels must be one-dimensional, got shape {arr.shape}")
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"labels must be integers, got dtype {arr.dtype}")
        arr = arr.astype(np.int64, copy=False)
        uniq, inverse, counts = np.unique(arr, return_inverse=True, return_counts=True)
        order = np.argsort(inverse, kind="stable")
        groups = np.split(order, np.cumsum(counts)[:-1]) if arr.size else []
        self._groups: list[np.ndarray] = [g for g, c in zip(groups, counts, strict=True) if c >= 2]
        self.eligible_labels: tuple[int, ...] = tuple(
            int(lab) for lab, c in zip(uniq, counts, strict=True) if c >= 2
        )
        if len(self._groups) < p:
            raise ValueError(
                f"PK sampling needs at least p={p} identities with >= 2 images each, "
                f"but the labels have only {len(self._groups)} such identities "
                f"(out of {len(uniq)} identities, {arr.size} items)"
            )
        self.n_eligible_images = int(sum(len(g) for g in self._groups))
        if batches_per_epoch is None:
            batches_per_epoch = max(1, self.n_eligible_images // (p * k))
        elif batches_per_epoch < 1:
            raise ValueError(f"batches_per_epoch must be >= 1, got {batches_per_epoch}")
        self.p = int(p)
        self.k = int(k)
        self.batches_per_epoch = int(batches_per_epoch)
        self.seed = int(seed)
        self.epoch = 0
        n_short = sum(1 for g in self._groups if len(g) < k)
        if n_short:
            logger.debug(
                "%d of %d eligible identities have fewer than k=%d images (sampled with replacement)",
                n_short,
                len(self._groups),
                k,
            )

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffle of epoch ``epoch`` (seeded with ``seed + epoch``)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng(self.seed + self.epoch)
        n_ids = len(self._groups)
        id_queue: list[int] = rng.permutation(n_ids).tolist()
        img_perm: dict[int, list[int]] = {}

        def next_identities() -> list[int]:
            nonlocal id_queue
            taken = id_queue[: self.p]
            id_queue = id_queue[self.p :]
            if len(taken) < self.p:
                # Next cycle: a fresh permutation in which the identities already in this batch
                # come last, so the consumed sequence stays a concatenation of permutations.
                taken_set = set(taken)
                perm = rng.permutation(n_ids).tolist()
                fresh = [i for i in perm if i not in taken_set] + [i for i in perm if i in taken_set]
                need = self.p - len(taken)
                taken += fresh[:need]
                id_queue = fresh[need:]
            return taken

        def images_of(ident: int) -> list[int]:
            group = self._groups[ident]
            m = len(group)
            if m < self.k:
                picks = rng.permutation(m).tolist() + rng.integers(0, m, self.k - m).tolist()
            else:
                queue = img_perm.get(ident, [])
                if len(queue) < self.k:
                    queue = rng.permutation(m).tolist()
                picks, img_perm[ident] = queue[: self.k], queue[self.k :]
            return [int(group[j]) for j in picks]

        for _ in range(self.batches_per_epoch):
            batch: list[int] = []
            for ident in next_identities():
                batch.extend(images_of(ident))
            yield batch
