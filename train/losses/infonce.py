"""InfoNCE over a score matrix, with masking of likely false negatives.

``scores[i, j]`` is the similarity of query ``i`` and candidate ``j``; candidates are every document in the
batch (in-batch negatives: the other queries' positives, plus all hard negatives). ``positive[i]`` is the
column of query ``i``'s positive. Masked entries (``mask[i, j]`` True) are left out of the softmax.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(scores: torch.Tensor, positive: torch.Tensor, temperature: float = 0.05,
             mask: torch.Tensor | None = None, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over queries of ``-log softmax(scores / temperature)[positive]``, optionally weighted.

    ``weights`` (B,) multiply each query's loss; the result is ``sum(w * l) / sum(w)``.
    """
    logits = scores / temperature
    if mask is not None:
        if mask.gather(1, positive[:, None]).any():
            raise ValueError("the mask hides a positive")
        logits = logits.masked_fill(mask, torch.finfo(logits.dtype).min)
    losses = F.cross_entropy(logits, positive, reduction="none")
    if weights is None:
        return losses.mean()
    return (weights * losses).sum() / weights.sum().clamp_min(1e-12)


def false_negative_mask(scores: torch.Tensor, positive: torch.Tensor, margin: float | None = None,
                        same_doc: torch.Tensor | None = None) -> torch.Tensor:
    """Which candidates to hide from each query's softmax.

    - ``same_doc[i, j]``: candidate ``j`` is the same document as (or another known positive of) query
      ``i``'s positive, e.g. two queries in a batch sharing a positive;
    - ``margin``: candidate ``j`` scores above the positive by more than ``margin`` (likely unlabelled
      relevant), as in-batch false-negative masking does. ``margin=0`` hides anything above the positive.
    The positive itself is never masked.
    """
    mask = torch.zeros_like(scores, dtype=torch.bool)
    if same_doc is not None:
        mask |= same_doc.to(torch.bool)
    if margin is not None:
        pos_scores = scores.gather(1, positive[:, None])
        mask |= scores.detach() > pos_scores.detach() + margin
    mask.scatter_(1, positive[:, None], False)
    return mask
