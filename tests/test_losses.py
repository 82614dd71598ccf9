"""Each loss core against a hand computation."""

from __future__ import annotations

import math

import pytest
import torch

from uniret.train.losses import (
    curriculum_weights,
    false_negative_mask,
    focal_weights,
    info_nce,
    kl_distillation,
    listwise_ce,
    mix_hard_negatives,
    pairwise_logistic,
    pointwise_bce,
    rank_aware_distillation,
)
from uniret.train.losses.weighting import positive_probability


def lse(xs):
    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs))


def test_info_nce_by_hand():
    scores = torch.tensor([[0.9, 0.1, 0.3], [0.2, 0.8, 0.5]])
    pos = torch.tensor([0, 1])
    t = 0.1
    expected = ((lse([9, 1, 3]) - 9) + (lse([2, 8, 5]) - 8)) / 2
    assert info_nce(scores, pos, t).item() == pytest.approx(expected, rel=1e-5)
    w = torch.tensor([1.0, 3.0])
    expected_w = (1 * (lse([9, 1, 3]) - 9) + 3 * (lse([2, 8, 5]) - 8)) / 4
    assert info_nce(scores, pos, t, weights=w).item() == pytest.approx(expected_w, rel=1e-5)


def test_masked_candidates_leave_the_softmax():
    scores = torch.tensor([[0.5, 0.9, 0.1]])
    pos = torch.tensor([0])
    mask = false_negative_mask(scores, pos, margin=0.2)
    assert mask.tolist() == [[False, True, False]]  # 0.9 > 0.5 + 0.2
    assert info_nce(scores, pos, 1.0, mask=mask).item() == pytest.approx(lse([0.5, 0.1]) - 0.5, rel=1e-6)
    assert false_negative_mask(scores, pos, margin=0.5).tolist() == [[False, False, False]]
    same = torch.tensor([[True, False, True]])
    assert false_negative_mask(scores, pos, same_doc=same).tolist() == [[False, False, True]]  # never the positive
    with pytest.raises(ValueError, match="hides a positive"):
        info_nce(scores, pos, 1.0, mask=torch.tensor([[True, False, False]]))


def test_kl_distillation_by_hand():
    s = torch.tensor([[1.0, 0.0, -1.0]])
    t = torch.tensor([[2.0, 1.0, 0.0]])
    ps = torch.softmax(s / 0.5, -1)[0].tolist()
    pt = torch.softmax(t / 2.0, -1)[0].tolist()
    expected = sum(a * (math.log(a) - math.log(b)) for a, b in zip(pt, ps, strict=True))
    got = kl_distillation(s, t, student_temperature=0.5, teacher_temperature=2.0)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    assert kl_distillation(t, t, 1.0, 1.0).item() == pytest.approx(0.0, abs=1e-6)
    # a masked (padding) candidate changes nothing
    s2 = torch.tensor([[1.0, 0.0, -1.0, 5.0]])
    t2 = torch.tensor([[2.0, 1.0, 0.0, 9.0]])
    m = torch.tensor([[False, False, False, True]])
    assert kl_distillation(s2, t2, 0.5, 2.0, mask=m).item() == pytest.approx(expected, rel=1e-5)


def test_kl_gradient_pushes_student_towards_teacher():
    s = torch.zeros(1, 3, requires_grad=True)
    kl_distillation(s, torch.tensor([[3.0, 0.0, 0.0]]), 1.0, 1.0).backward()
    assert s.grad[0, 0] < 0 < s.grad[0, 1]


def test_rank_aware_distillation_by_hand():
    s = torch.tensor([[0.2, 0.5, 0.1]])
    t = torch.tensor([[0.9, 0.1, 0.5]])  # teacher order: 0, 2, 1
    # rank 1: cand 0 vs {0,2,1}; rank 2: cand 2 vs {2,1}; rank 3: cand 1 vs {1} (zero)
    l1 = lse([0.2, 0.1, 0.5]) - 0.2
    l2 = lse([0.1, 0.5]) - 0.1
    expected = (1 * l1 + 0.5 * l2 + (1 / 3) * 0.0) / (1 + 0.5 + 1 / 3)
    assert rank_aware_distillation(s, t, 1.0).item() == pytest.approx(expected, rel=1e-5)
    # only the teacher's order matters, not its scale
    assert rank_aware_distillation(s, t * 100, 1.0).item() == pytest.approx(expected, rel=1e-5)
    m = torch.tensor([[False, False, True]])  # drop candidate 2: order 0, 1
    expected_m = (1 * (lse([0.2, 0.5]) - 0.2) + 0.5 * 0.0) / 1.5
    assert rank_aware_distillation(s, t, 1.0, mask=m).item() == pytest.approx(expected_m, rel=1e-5)


def test_focal_and_curriculum_weights():
    p = torch.tensor([0.9, 0.5, 0.1])
    raw = torch.tensor([0.1, 0.5, 0.9]) ** 2
    assert focal_weights(p, 2.0).tolist() == pytest.approx((raw * 3 / raw.sum()).tolist(), rel=1e-5)
    d = torch.tensor([0.0, 0.5, 1.0])
    assert curriculum_weights(d, 0, 100).tolist() == pytest.approx([1.0, 0.5, 0.0])
    assert curriculum_weights(d, 50, 100).tolist() == pytest.approx([1.0, 0.75, 0.5])
    assert curriculum_weights(d, 100, 100).tolist() == pytest.approx([1.0, 1.0, 1.0])
    assert curriculum_weights(d, 500, 100).tolist() == pytest.approx([1.0, 1.0, 1.0])
    scores = torch.tensor([[2.0, 0.0]])
    assert positive_probability(scores, torch.tensor([0]), 1.0).item() == pytest.approx(
        math.exp(2) / (math.exp(2) + 1), rel=1e-6)


def test_hard_negative_mixing_interpolates_the_hardest():
    torch.manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(2, 8), dim=-1)
    d = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1)
    scores = q @ d.T
    pos = torch.tensor([0, 1])
    g = torch.Generator().manual_seed(1)
    mixed = mix_hard_negatives(q, d, scores, pos, num_mixed=5, hardest=1, generator=g)
    assert mixed.shape == (2, 5)
    # with hardest=1 every synthetic negative is the hardest negative itself
    hardest = scores.clone()
    hardest[0, 0] = hardest[1, 1] = float("-inf")
    top = hardest.max(dim=1).values
    assert torch.allclose(mixed, top[:, None].expand(2, 5), atol=1e-5)
    assert mix_hard_negatives(q, d, scores, pos, num_mixed=0).shape == (2, 0)
    # gradients flow to the queries, not to the documents
    qg = q.clone().requires_grad_()
    dg = d.clone().requires_grad_()
    mix_hard_negatives(qg, dg, qg @ dg.T, pos, num_mixed=3, hardest=3, generator=g).sum().backward()
    assert qg.grad is not None and dg.grad is None


def test_reranker_losses_by_hand():
    logits = torch.tensor([[2.0, 0.0, 1.0]])
    labels = torch.tensor([[1.0, 0.0, 0.0]])
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    bce = -(math.log(sig(2.0)) + math.log(1 - sig(0.0)) + math.log(1 - sig(1.0))) / 3
    assert pointwise_bce(logits, labels).item() == pytest.approx(bce, rel=1e-5)
    rank = (math.log(1 + math.exp(-2.0)) + math.log(1 + math.exp(-1.0))) / 2
    assert pairwise_logistic(logits).item() == pytest.approx(rank, rel=1e-5)
    assert listwise_ce(logits).item() == pytest.approx(lse([2.0, 0.0, 1.0]) - 2.0, rel=1e-5)
    m = torch.tensor([[False, False, True]])
    assert listwise_ce(logits, m).item() == pytest.approx(lse([2.0, 0.0]) - 2.0, rel=1e-5)
    assert pairwise_logistic(logits, m).item() == pytest.approx(math.log(1 + math.exp(-2.0)), rel=1e-5)
