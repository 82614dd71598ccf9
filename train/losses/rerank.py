"""Cross-encoder (reranker) losses over (B, M) logits where column 0 is the positive and the rest
negatives (``mask`` hides padding). The UniME-V2 reranker combines the pairwise and listwise losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pointwise_bce(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy of each (query, document) logit against its 0/1 (or soft) label."""
    losses = F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), reduction="none")
    if mask is None:
        return losses.mean()
    keep = ~mask
    return (losses * keep).sum() / keep.sum().clamp_min(1)


def pairwise_logistic(logits: torch.Tensor, mask: torch.Tensor | None = None, margin: float = 0.0) -> torch.Tensor:
    """RankNet: ``log(1 + exp(-(s_pos - s_neg - margin)))`` averaged over every (positive, negative) pair."""
    diff = logits[:, :1] - logits[:, 1:] - margin
    losses = F.softplus(-diff)
    if mask is None:
        return losses.mean()
    keep = ~mask[:, 1:]
    return (losses * keep).sum() / keep.sum().clamp_min(1)


def listwise_ce(logits: torch.Tensor, mask: torch.Tensor | None = None, temperature: float = 1.0) -> torch.Tensor:
    """Softmax cross-entropy of the positive (column 0) against the query's negatives."""
    z = logits / temperature
    if mask is not None:
        z = z.masked_fill(mask, torch.finfo(z.dtype).min)
    return F.cross_entropy(z, torch.zeros(z.shape[0], dtype=torch.long, device=z.device))
