"""Pooling of token states into one vector, and Matryoshka truncation: pure tensor cores of the embedder."""

from __future__ import annotations

import torch

POOLINGS = ("cls", "mean", "last-token", "weighted-mean")
_POOLING_ALIASES = {"lasttoken": "last-token", "last_token": "last-token", "eos": "last-token",
                    "weightedmean": "weighted-mean", "weighted_mean": "weighted-mean",
                    "position-weighted-mean": "weighted-mean"}
_ST_POOLING = {"cls": "cls", "mean": "mean", "last-token": "lasttoken", "weighted-mean": "weightedmean"}

def canonical_pooling(name: str) -> str:
    pooling = _POOLING_ALIASES.get(name.lower(), name.lower())
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {name!r}; choose one of {', '.join(POOLINGS)}")
    return pooling


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Pool token states ``(B, L, H)`` under a 0/1 ``attention_mask`` ``(B, L)`` padded on either side.

    ``cls``: the first real token; ``mean``: the mean of real tokens; ``last-token``: the last real token;
    ``weighted-mean``: real tokens weighted 1, 2, 3, ... by their position in the text (SGPT).
    """
    pooling = canonical_pooling(pooling)
    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
    if pooling == "mean":
        return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    first = attention_mask.long().argmax(1)
    if pooling == "cls":
        return hidden[rows, first]
    if pooling == "last-token":
        last = attention_mask.shape[1] - 1 - attention_mask.long().flip(1).argmax(1)
        return hidden[rows, last]
    positions = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
    weights = (positions - first.unsqueeze(1) + 1).clamp_min(0).to(hidden.dtype).unsqueeze(-1) * mask
    return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1e-9)


def matryoshka(embeddings: torch.Tensor, dim: int | None, normalize: bool) -> torch.Tensor:
    """Keep the first ``dim`` coordinates (all when None), then L2-normalise if asked."""
    if dim is not None:
        embeddings = embeddings[:, :dim]
    return torch.nn.functional.normalize(embeddings, p=2, dim=-1) if normalize else embeddings
