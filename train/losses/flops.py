"""Sparsity regularisers for learned sparse representations (SPLADE).

FLOPS (Paria et al., 2020; SPLADE): ``sum_j (mean_i |w_ij|)^2`` over a batch of vocabulary-sized vectors ``w``,
a smooth proxy of the number of floating-point operations an inverted index spends on them: it pushes down
terms that are heavy across many texts. IDF-aware FLOPS (Geng et al., 2024, for inference-free retrievers,
whose query side weighs each token by its IDF): each dimension's penalty is scaled by ``1 / idf_j`` (normalised
to mean 1 over the vocabulary), so frequent, uninformative tokens pay more and rare, informative ones less.

:class:`FlopsRegularizer` is the bi-encoder module's regulariser term, weighted separately for queries and
documents; :class:`FlopsWarmup` is the trainer callback that raises both weights quadratically over the
first steps (the SPLADE schedule). The weight at a step is a function of the step alone, so a resumed run
gets the same schedule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


def flops(reps: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """``sum_j weights_j * (mean_i |reps_ij|)^2`` for ``reps`` ``(N, V)`` (``weights`` ``(V,)``, default 1)."""
    per_term = reps.abs().mean(dim=0).pow(2)
    return (per_term * weights).sum() if weights is not None else per_term.sum()


def idf_penalty_weights(idf: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """IDF-aware FLOPS weights: ``1 / idf`` normalised to mean 1 (low-IDF tokens are penalised more)."""
    w = 1.0 / idf.float().clamp(min=eps)
    return w / w.mean()


def quadratic_warmup(step: int, warmup_steps: int) -> float:
    """``min(1, (step / warmup_steps)^2)``; 1 when there is no warm-up."""
    if warmup_steps <= 0:
        return 1.0
    return min(1.0, (step / warmup_steps) ** 2)


@dataclass
class FlopsConfig:
    """The FLOPS regulariser of sparse models (``flops:`` in a training config)."""

    query_weight: float = 0.0  # lambda_q; ignored for an inference-free model (its queries have no parameters)
    document_weight: float = 0.0  # lambda_d
    warmup_steps: int = 0  # quadratic warm-up of both weights over this many steps (0: full weight at once)
    idf_aware: bool = False  # scale each term's penalty by 1/idf (needs an inference-free model's IDF)

    def __post_init__(self) -> None:
        for name in ("query_weight", "document_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"flops.{name} must be >= 0, got {getattr(self, name)}")
        if self.warmup_steps < 0:
            raise ValueError(f"flops.warmup_steps must be >= 0, got {self.warmup_steps}")


class FlopsRegularizer:
    """The regulariser term of the bi-encoder module: ``scale * (lambda_q FLOPS(q) + lambda_d FLOPS(d))``
    over the batch's queries and real documents (padding negatives left out)."""

    def __init__(self, cfg: FlopsConfig, idf: torch.Tensor | None = None, *, queries_trainable: bool = True) -> None:
        if cfg.idf_aware and idf is None:
            raise ValueError("flops.idf_aware needs IDF weights: train an inference-free model "
                             "(model.inference_free: true)")
        self.cfg = cfg
        self.weights = idf_penalty_weights(idf) if cfg.idf_aware and idf is not None else None
        self.scale = quadratic_warmup(0, cfg.warmup_steps)
        self.queries_trainable = queries_trainable

    def __call__(self, q: torch.Tensor, d: torch.Tensor, doc_valid: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        weights = self.weights.to(d.device) if self.weights is not None else None
        docs = d[doc_valid.to(d.device)]
        loss = d.new_zeros(())
        logs: dict[str, float] = {"flops_scale": self.scale, "nnz_d": float((docs > 0).sum(1).float().mean())}
        if self.cfg.document_weight > 0:
            fd = flops(docs, weights)
            loss = loss + self.cfg.document_weight * fd
            logs["flops_d"] = float(fd.detach())
        if self.queries_trainable:
            logs["nnz_q"] = float((q > 0).sum(1).float().mean())
            if self.cfg.query_weight > 0:
                fq = flops(q, weights)
                loss = loss + self.cfg.query_weight * fq
                logs["flops_q"] = float(fq.detach())
        return self.scale * loss, logs


class FlopsWarmup:
    """Trainer callback: sets the regulariser's scale to the quadratic warm-up of the next step."""

    def __init__(self, regularizer: FlopsRegularizer) -> None:
        self.regularizer = regularizer

    def _set(self, step: int) -> None:
        self.regularizer.scale = quadratic_warmup(step, self.regularizer.cfg.warmup_steps)

    def on_train_start(self, trainer: Any) -> None:
        self._set(trainer.step)

    def on_epoch_start(self, trainer: Any, epoch: int) -> None: ...

    def on_step_end(self, trainer: Any, step: int, logs: dict[str, float]) -> None:
        self._set(step)

    def on_train_end(self, trainer: Any) -> None: ...
