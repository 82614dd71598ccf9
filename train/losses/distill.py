"""Soft-label distillation from continuous teacher scores.

``kl_distillation``: KL(softmax(teacher / tau_t) || softmax(student / tau_s)) over each query's candidates
(its positives and negatives), averaged over queries.

``rank_aware_distillation``: LLM-Embedder's stabilised distillation. Raw teacher scores of different
queries live on different scales and a small teacher gap can become a large target gap; instead the
teacher only *orders* the candidates, and the student is trained listwise (Plackett-Luce) so that each
candidate outscores every candidate the teacher ranks below it, with weight 1/rank so the top of the
teacher's list matters most.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kl_distillation(student: torch.Tensor, teacher: torch.Tensor, student_temperature: float = 0.05,
                    teacher_temperature: float = 1.0, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``student`` and ``teacher`` are (B, M) scores of the same candidates; ``mask`` (B, M) hides padding."""
    s = student / student_temperature
    t = teacher.detach() / teacher_temperature
    if mask is not None:
        s = s.masked_fill(mask, torch.finfo(s.dtype).min)
        t = t.masked_fill(mask, torch.finfo(t.dtype).min)
    log_p_student = F.log_softmax(s, dim=-1)
    p_teacher = F.softmax(t, dim=-1)
    kl = p_teacher * (torch.log(p_teacher.clamp_min(1e-30)) - log_p_student)
    if mask is not None:
        kl = kl.masked_fill(mask, 0.0)
    return kl.sum(-1).mean()


def rank_aware_distillation(student: torch.Tensor, teacher: torch.Tensor, student_temperature: float = 0.05,
                            mask: torch.Tensor | None = None) -> torch.Tensor:
    """Listwise loss over the teacher's order: for the candidate at teacher rank r (1-based),
    ``-(1/r) * log(exp(s_r) / sum_{r' >= r} exp(s_r'))``, summed and normalised by ``sum 1/r`` per query."""
    s = student / student_temperature
    big = torch.finfo(s.dtype).max / 4
    t = teacher.detach()
    if mask is not None:
        t = t.masked_fill(mask, -big)  # masked candidates go to the bottom and are dropped below
    order = torch.argsort(t, dim=-1, descending=True, stable=True)
    s_sorted = s.gather(1, order)
    valid = torch.ones_like(s_sorted, dtype=torch.bool) if mask is None else ~mask.gather(1, order)
    s_sorted = s_sorted.masked_fill(~valid, torch.finfo(s.dtype).min)
    # log sum_{r' >= r} exp(s_r'): a reversed cumulative logsumexp
    tail = torch.logcumsumexp(s_sorted.flip(-1), dim=-1).flip(-1)
    nll = tail - s_sorted
    ranks = torch.arange(1, s.shape[-1] + 1, device=s.device, dtype=s.dtype).expand_as(s_sorted)
    w = (1.0 / ranks) * valid
    # the last candidate's term is always 0 (it is compared with itself only)
    per_query = (w * nll.masked_fill(~valid, 0.0)).sum(-1) / w.sum(-1).clamp_min(1e-12)
    return per_query.mean()
