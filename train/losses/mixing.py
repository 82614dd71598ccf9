"""Online hard-negative mixing in embedding space (MoCHi; KaLM-Embedding-V2's online mixing).

For each query, take its ``hardest`` highest-scoring negatives and synthesise ``num_mixed`` new ones as
normalised convex combinations of random pairs of them; their scores join that query's row of the score
matrix as extra columns. Synthetic negatives are detached (as in MoCHi): they sharpen the query side
without pulling documents towards each other.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mix_hard_negatives(queries: torch.Tensor, docs: torch.Tensor, scores: torch.Tensor, positive: torch.Tensor,
                       mask: torch.Tensor | None = None, num_mixed: int = 4, hardest: int = 8,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Return (B, num_mixed) scores of synthetic negatives, to concatenate to ``scores`` (B, N).

    ``queries`` (B, d) and ``docs`` (N, d) are the embeddings behind ``scores = queries @ docs.T``."""
    b, n = scores.shape
    if num_mixed <= 0 or n < 2:
        return scores.new_zeros((b, 0))
    excluded = torch.zeros_like(scores, dtype=torch.bool) if mask is None else mask.clone()
    excluded.scatter_(1, positive[:, None], True)
    ranked = scores.detach().masked_fill(excluded, float("-inf"))
    h = max(1, min(hardest, n - 1))
    top_scores, top = ranked.topk(h, dim=1)  # (B, h)
    available = torch.isfinite(top_scores)
    i = torch.randint(0, h, (b, num_mixed), generator=generator, device=scores.device)
    j = torch.randint(0, h, (b, num_mixed), generator=generator, device=scores.device)
    alpha = torch.rand((b, num_mixed, 1), generator=generator, device=scores.device)
    d = docs.detach()
    mixed = alpha * d[top.gather(1, i)] + (1 - alpha) * d[top.gather(1, j)]  # (B, m, d)
    mixed = F.normalize(mixed, dim=-1) * d.norm(dim=-1).mean()
    mixed_scores = torch.einsum("bd,bmd->bm", queries, mixed)
    ok = available.gather(1, i) & available.gather(1, j)
    return mixed_scores.masked_fill(~ok, torch.finfo(scores.dtype).min)
