"""Training a bi-encoder (dense embedder): batches from records, the combined loss, one optimisation step.

A batch of B records becomes B queries and ``B * (1 + H)`` documents: the B positives first, then H hard
negatives per query. Every query is scored against every document in the batch (and, under
torch.distributed, against every rank's documents): in-batch negatives for free. The loss is

    infonce_weight * InfoNCE(scores, masks, per-example weights, + mixed synthetic negatives)
  + distill_weight * KL or rank-aware distillation over each query's own (positive, negatives)

with masks for padding, for documents that are another positive of the same query, and optionally for
likely false negatives (scoring above the positive by a margin).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from uniret import distributed
from uniret.train.gradcache import cached_step, plain_step
from uniret.train.losses import (
    curriculum_weights,
    false_negative_mask,
    focal_weights,
    info_nce,
    kl_distillation,
    mix_hard_negatives,
    rank_aware_distillation,
)
from uniret.train.losses.weighting import positive_probability
from uniret.train.precision import autocast_forward
from uniret.train.records import TrainingRecord

logger = logging.getLogger(__name__)


@dataclass
class LossConfig:
    """The bi-encoder objective. Defaults: InfoNCE with in-batch and one hard negative per query."""

    temperature: float = 0.05
    hard_negatives: int = 1  # per query, sampled from each record's negatives
    negative_sampling: Literal["top", "random"] = "random"  # which of a record's negatives to take
    in_batch_negatives: bool = True
    false_negative_margin: float | None = None  # mask candidates scoring above the positive + margin
    infonce_weight: float = 1.0
    distill_weight: float = 0.0  # > 0 needs positive_scores / negative_scores in the records
    distill: Literal["kl", "rank"] = "kl"
    teacher_temperature: float = 1.0
    student_temperature: float | None = None  # None: the InfoNCE temperature
    focal_gamma: float = 0.0  # 0: off
    mixing: int = 0  # synthetic negatives per query (0: off)
    mixing_hardest: int = 8
    curriculum_steps: int = 0  # 0: off; else weights reach uniform at this step


# (queries (B, dim), documents (B*(1+H), dim), which documents are real (not padding)) -> (loss, logs)
Regularizer = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict[str, float]]]


@dataclass
class BiEncoderBatch:
    queries: list[str]
    docs: list[str]  # B positives, then B * H negatives (padding: "")
    doc_keys: list[str]
    positive_keys: list[set[str]]
    negative_valid: torch.Tensor  # (B, H) bool
    teacher: torch.Tensor | None  # (B, 1 + H) or None
    num_negatives: int


def _key(doc_id: str | None, text: str) -> str:
    return f"id:{doc_id}" if doc_id is not None else f"text:{text}"


def make_batch(records: Sequence[TrainingRecord], cfg: LossConfig, rng: random.Random,
               format_queries: Any = None) -> BiEncoderBatch:
    """Pick one positive and ``cfg.hard_negatives`` negatives per record."""
    h = cfg.hard_negatives
    want_teacher = cfg.distill_weight > 0
    queries = [r.query for r in records]
    if format_queries is not None:
        queries = format_queries(queries, [r.task for r in records], [r.instruction for r in records])
    positives, pos_keys, all_pos_keys = [], [], []
    negatives, neg_keys = [], []
    valid = torch.zeros((len(records), h), dtype=torch.bool)
    teacher = torch.zeros((len(records), 1 + h)) if want_teacher else None
    for i, r in enumerate(records):
        p = rng.randrange(len(r.positives))
        positives.append(r.positives[p])
        pid = r.positive_ids[p] if r.positive_ids else None
        pos_keys.append(_key(pid, r.positives[p]))
        all_pos_keys.append({_key(r.positive_ids[j] if r.positive_ids else None, t) for j, t in enumerate(r.positives)})
        if want_teacher:
            if r.positive_scores is None or (h and r.negatives and r.negative_scores is None):
                raise ValueError(f"distillation needs teacher scores, but the record for query {r.query[:60]!r} "
                                 "has none: run the teachers first (positive_scores / negative_scores)")
            assert teacher is not None
            teacher[i, 0] = r.positive_scores[p]
        n = len(r.negatives)
        if h and n:
            chosen = list(range(min(h, n))) if cfg.negative_sampling == "top" else rng.sample(range(n), min(h, n))
        else:
            chosen = []
        for slot in range(h):
            if slot < len(chosen):
                j = chosen[slot]
                negatives.append(r.negatives[j])
                neg_keys.append(_key(r.negative_ids[j] if r.negative_ids else None, r.negatives[j]))
                valid[i, slot] = True
                if teacher is not None and r.negative_scores is not None:
                    teacher[i, 1 + slot] = r.negative_scores[j]
            else:
                negatives.append("")
                neg_keys.append(f"pad:{i}:{slot}")
    return BiEncoderBatch(queries=queries, docs=positives + negatives, doc_keys=pos_keys + neg_keys,
                          positive_keys=all_pos_keys, negative_valid=valid, teacher=teacher, num_negatives=h)


def batch_loss(q: torch.Tensor, d: torch.Tensor, batch: BiEncoderBatch, cfg: LossConfig, step: int = 0,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """The objective for local queries ``q`` (B, dim) and local documents ``d`` (B*(1+H), dim), gathering
    documents across ranks when distributed."""
    b, h = q.shape[0], batch.num_negatives
    n_local = d.shape[0]
    rank = distributed.rank()
    all_d = distributed.gather_with_grad(d)
    keys = [k for ks in distributed.gather_objects(batch.doc_keys) for k in ks]
    valid_all = torch.cat(distributed.gather_objects(batch.negative_valid))  # (W*B, H)
    scores = q @ all_d.T  # (B, W * n_local)
    device = scores.device
    pos = torch.arange(b, device=device) + rank * n_local
    n_total = all_d.shape[0]

    # padding negatives, other positives of the same query, and (optionally) foreign candidates
    pad = torch.zeros(n_total, dtype=torch.bool)
    for r_ in range(valid_all.shape[0] // b):
        pad[r_ * n_local + b : (r_ + 1) * n_local] = ~valid_all[r_ * b : (r_ + 1) * b].reshape(-1)
    same = torch.tensor([[k in pk for k in keys] for pk in batch.positive_keys], dtype=torch.bool)
    structural = same | pad[None, :]
    if not cfg.in_batch_negatives:
        own = torch.zeros_like(structural)
        for i in range(b):
            own[i, rank * n_local + i] = True
            start = rank * n_local + b + i * h
            own[i, start : start + h] = True
        structural |= ~own
    mask = false_negative_mask(scores, pos, margin=cfg.false_negative_margin, same_doc=structural.to(device))

    logs: dict[str, float] = {}
    weights = None
    if cfg.focal_gamma > 0 or cfg.curriculum_steps > 0:
        p_pos = positive_probability(scores, pos, cfg.temperature, mask)
        weights = torch.ones(b, device=device)
        if cfg.focal_gamma > 0:
            weights = weights * focal_weights(p_pos, cfg.focal_gamma)
        if cfg.curriculum_steps > 0:
            weights = weights * curriculum_weights(1.0 - p_pos, step, cfg.curriculum_steps)
        logs["p_pos"] = float(p_pos.mean())
    nce_scores, nce_mask = scores, mask
    if cfg.mixing > 0:
        extra = mix_hard_negatives(q, all_d, scores, pos, mask, num_mixed=cfg.mixing, hardest=cfg.mixing_hardest,
                                   generator=generator)
        nce_scores = torch.cat([scores, extra], dim=1)
        nce_mask = torch.cat([mask, torch.zeros_like(extra, dtype=torch.bool)], dim=1)
    loss = scores.new_zeros(())
    if cfg.infonce_weight > 0:
        nce = info_nce(nce_scores, pos, cfg.temperature, nce_mask, weights)
        loss = loss + cfg.infonce_weight * nce
        logs["infonce"] = float(nce.detach())
    if cfg.distill_weight > 0:
        if batch.teacher is None:
            raise ValueError("distill_weight > 0 but the batch has no teacher scores")
        cols = torch.stack([torch.cat([torch.tensor([rank * n_local + i]),
                                       rank * n_local + b + i * h + torch.arange(h)]) for i in range(b)]).to(device)
        student = scores.gather(1, cols)
        cand_mask = torch.cat([torch.zeros(b, 1, dtype=torch.bool), ~batch.negative_valid], dim=1).to(device)
        teacher = batch.teacher.to(device)
        tau_s = cfg.student_temperature or cfg.temperature
        if cfg.distill == "kl":
            kd = kl_distillation(student, teacher, tau_s, cfg.teacher_temperature, cand_mask)
        else:
            kd = rank_aware_distillation(student, teacher, tau_s, cand_mask)
        loss = loss + cfg.distill_weight * kd
        logs["distill"] = float(kd.detach())
    logs["loss"] = float(loss.detach())
    return loss, logs


class BiEncoderModule:
    """What the trainer needs from a bi-encoder: parameters, one optimisation step's forward/backward,
    saving. ``embedder`` follows :class:`uniret.retriever.embedder.Embedder` (``format_queries``,
    ``tokenize``, ``forward``, ``save``)."""

    def __init__(self, embedder: Any, loss: LossConfig, grad_cache_chunk: int | None = None,
                 regularizer: Regularizer | None = None) -> None:
        self.embedder = embedder
        self.loss = loss
        self.grad_cache_chunk = grad_cache_chunk
        self.regularizer = regularizer
        self._forward = embedder.forward

    def use_mixed_precision(self, mode: str) -> None:
        self._forward = autocast_forward(self.embedder.forward, mode, getattr(self.embedder, "device", "cpu"))

    def parameters(self) -> Any:
        return [p for p in self.embedder.parameters() if p.requires_grad]

    def named_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        """The trainable parameters with the embedder's names (``trainer.learning_rate_mapping`` matches them)."""
        named = getattr(self.embedder, "named_parameters", None)
        if named is None:
            raise ValueError(f"{type(self.embedder).__name__} does not name its parameters (no named_parameters()), "
                             "so trainer.learning_rate_mapping cannot match them")
        return [(n, p) for n, p in named() if p.requires_grad]

    def train(self, mode: bool = True) -> None:
        self.embedder.train(mode)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.embedder.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> Any:
        return self.embedder.load_state_dict(state)

    def _chunks(self, texts: list[str], queries: bool = False) -> list[dict[str, torch.Tensor]]:
        size = self.grad_cache_chunk or len(texts)
        # an embedder whose queries take another path (an inference-free sparse model) has tokenize_queries
        tokenize = getattr(self.embedder, "tokenize_queries", self.embedder.tokenize) if queries else \
            self.embedder.tokenize
        return [tokenize(texts[i : i + size]) for i in range(0, len(texts), size)]

    def step(self, records: Sequence[TrainingRecord], rng: random.Random, step: int) -> dict[str, float]:
        batch = make_batch(records, self.loss, rng, self.embedder.format_queries)
        generator = torch.Generator().manual_seed(rng.randrange(2**31))  # mixing: resumable, per step
        logs: dict[str, float] = {}

        def loss_fn(q: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
            loss, out = batch_loss(q, d, batch, self.loss, step, generator)
            if self.regularizer is not None:
                valid = torch.cat([torch.ones(len(records), dtype=torch.bool), batch.negative_valid.reshape(-1)])
                reg, reg_logs = self.regularizer(q, d, valid)
                loss = loss + reg
                out = {**out, **reg_logs, "loss": float(loss.detach())}
            logs.update(out)
            return loss

        runner = cached_step if self.grad_cache_chunk else plain_step
        runner(self._forward, self._chunks(batch.queries, queries=True), self._chunks(batch.docs), loss_fn)
        return logs

    def save(self, path: Any) -> Any:
        return self.embedder.save(path)
