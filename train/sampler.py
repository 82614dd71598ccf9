"""Batching of training records.

- No duplicates: a batch never holds the same query text twice, nor two records sharing a positive
  (by id when known, else by text). Otherwise a positive of one query turns into an in-batch negative of
  another (SciFact's 919 training pairs share 565 documents). Clashing records wait for a later batch.
- Same-task batches (LLM-Embedder): every batch draws from one task, so in-batch negatives are
  homogeneous.
- Deterministic: the order is a function of (seed, epoch), so training resumes mid-epoch exactly.
- Distributed: a global batch of ``batch_size * world_size`` records is built, and each rank takes its
  contiguous slice.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterator, Sequence

from uniret.train.records import TrainingRecord


def _keys(record: TrainingRecord) -> set[str]:
    keys = {"q:" + record.query}
    if record.positive_ids:
        keys |= {"d:" + d for d in record.positive_ids}
    else:
        keys |= {"t:" + t for t in record.positives}
    return keys


class BatchSampler:
    def __init__(self, records: Sequence[TrainingRecord], batch_size: int, *, seed: int = 0,
                 same_task: bool = False, drop_last: bool = True, world_size: int = 1, rank: int = 0) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.records = records
        self.batch_size = batch_size
        self.seed = seed
        self.same_task = same_task
        self.drop_last = drop_last
        self.world_size = world_size
        self.rank = rank
        self._keys = [_keys(r) for r in records]

    def global_batches(self, epoch: int) -> list[list[int]]:
        """Every global batch of the epoch, as record indices."""
        rng = random.Random(self.seed * 1_000_003 + epoch)
        size = self.batch_size * self.world_size
        groups: dict[str | None, list[int]] = defaultdict(list)
        for i, r in enumerate(self.records):
            groups[r.task if self.same_task else None].append(i)
        batches: list[list[int]] = []
        for task in sorted(groups, key=lambda t: (t is None, t or "")):
            order = groups[task]
            rng.shuffle(order)
            batches.extend(self._pack(order, size))
        if self.same_task:
            rng.shuffle(batches)
        return batches

    def _pack(self, order: list[int], size: int) -> list[list[int]]:
        batches: list[list[int]] = []
        pending = list(order)
        while pending:
            batch: list[int] = []
            used: set[str] = set()
            deferred: list[int] = []
            for i in pending:
                if len(batch) < size and not (self._keys[i] & used):
                    batch.append(i)
                    used |= self._keys[i]
                else:
                    deferred.append(i)
            if len(batch) < size and self.drop_last:
                break  # what is left cannot fill a batch without duplicates
            batches.append(batch)
            pending = deferred
        return batches

    def batches(self, epoch: int) -> Iterator[list[int]]:
        """This rank's batches for ``epoch``."""
        for batch in self.global_batches(epoch):
            yield batch[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]

    def __len__(self) -> int:
        return len(self.global_batches(0))
