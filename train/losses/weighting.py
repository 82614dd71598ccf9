"""Per-example weights: focal-style reweighting of hard examples and a curriculum that starts easy.

Both return detached (B,) weights to pass to :func:`uniret.train.losses.info_nce`.
"""

from __future__ import annotations

import torch


def positive_probability(scores: torch.Tensor, positive: torch.Tensor, temperature: float,
                         mask: torch.Tensor | None = None) -> torch.Tensor:
    logits = scores.detach() / temperature
    if mask is not None:
        logits = logits.masked_fill(mask, torch.finfo(logits.dtype).min)
    return torch.softmax(logits, dim=-1).gather(1, positive[:, None]).squeeze(1)


def focal_weights(p_positive: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """KaLM-V2's focal-style reweighting: ``(1 - p)^gamma``, normalised to mean 1 over the batch, where
    ``p`` is the model's probability of the positive. Easy examples (p near 1) fade; hard ones count."""
    w = (1.0 - p_positive.detach()).clamp_min(0.0) ** gamma
    return w * (w.numel() / w.sum().clamp_min(1e-12))


def curriculum_weights(difficulty: torch.Tensor, step: int, end_step: int) -> torch.Tensor:
    """A curriculum over training (MacAvaney et al., "Training Curricula for Open Domain Answer Re-Ranking"):
    ``w = (1 - a) * (1 - difficulty) + a`` with ``a = min(1, step / end_step)``. At step 0 an example's weight
    is its easiness; by ``end_step`` every weight is 1. ``difficulty`` lies in [0, 1]."""
    a = 1.0 if end_step <= 0 else min(1.0, max(0.0, step / end_step))
    d = difficulty.detach().clamp(0.0, 1.0)
    return (1.0 - a) * (1.0 - d) + a
