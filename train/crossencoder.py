"""Training a cross-encoder reranker with the shared trainer: each record gives its query, one positive
and ``negatives`` hard negatives; the loss mixes pointwise BCE, pairwise (RankNet) and listwise softmax
cross-entropy, as the UniME-V2 reranker combines pairwise and listwise objectives."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from uniret.train.biencoder import LossConfig, make_batch
from uniret.train.losses import listwise_ce, pairwise_logistic, pointwise_bce
from uniret.train.precision import autocast_forward
from uniret.train.records import TrainingRecord


@dataclass
class RerankLossConfig:
    negatives: int = 7  # per query
    negative_sampling: Literal["top", "random"] = "random"
    pointwise_weight: float = 0.0
    pairwise_weight: float = 1.0
    listwise_weight: float = 1.0
    temperature: float = 1.0  # listwise


class CrossEncoderModule:
    def __init__(self, reranker: Any, loss: RerankLossConfig, chunk: int | None = None) -> None:
        self.reranker = reranker
        self.loss = loss
        self.chunk = chunk
        self._forward = reranker.forward
        self._batching = LossConfig(hard_negatives=loss.negatives, negative_sampling=loss.negative_sampling)

    def parameters(self) -> Any:
        return [p for p in self.reranker.parameters() if p.requires_grad]

    def use_mixed_precision(self, mode: str) -> None:
        self._forward = autocast_forward(self.reranker.forward, mode, self.reranker.device_name)

    def train(self, mode: bool = True) -> None:
        self.reranker.model.train(mode)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.reranker.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> Any:
        return self.reranker.load_state_dict(state)

    def step(self, records: Sequence[TrainingRecord], rng: random.Random, step: int) -> dict[str, float]:
        batch = make_batch(records, self._batching, rng)
        b, h = len(records), batch.num_negatives
        # row i: (q_i, positive_i), then (q_i, negative_i1..h); padded negatives are masked out
        queries = [q for q in batch.queries for _ in range(1 + h)]
        docs = [d for i in range(b) for d in [batch.docs[i], *batch.docs[b + i * h : b + (i + 1) * h]]]
        mask = torch.cat([torch.zeros(b, 1, dtype=torch.bool), ~batch.negative_valid], dim=1)
        keep = [j for j, m in enumerate(mask.reshape(-1).tolist()) if not m]
        size = self.chunk or len(keep)
        flat = torch.zeros(b * (1 + h))
        logits_parts = []
        for s in range(0, len(keep), size):
            rows = keep[s : s + size]
            feats = self.reranker.tokenize([queries[j] for j in rows], [docs[j] for j in rows])
            logits_parts.append(self._forward(feats))
        flat = flat.to(logits_parts[0].device).index_put((torch.tensor(keep),), torch.cat(logits_parts))
        logits = flat.reshape(b, 1 + h)
        mask = mask.to(logits.device)
        labels = torch.zeros_like(logits)
        labels[:, 0] = 1.0
        c = self.loss
        loss = logits.new_zeros(())
        logs: dict[str, float] = {}
        if c.pointwise_weight > 0:
            part = pointwise_bce(logits, labels, mask)
            loss = loss + c.pointwise_weight * part
            logs["pointwise"] = float(part.detach())
        if c.pairwise_weight > 0 and h > 0:
            part = pairwise_logistic(logits, mask)
            loss = loss + c.pairwise_weight * part
            logs["pairwise"] = float(part.detach())
        if c.listwise_weight > 0 and h > 0:
            part = listwise_ce(logits, mask, c.temperature)
            loss = loss + c.listwise_weight * part
            logs["listwise"] = float(part.detach())
        loss.backward()
        logs["loss"] = float(loss.detach())
        return logs

    def save(self, path: Any) -> Any:
        return self.reranker.save(path)
