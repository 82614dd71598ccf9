"""Loss cores: pure functions of score tensors (and teacher scores, weights), each unit-testable alone."""

from uniret.train.losses.distill import kl_distillation, rank_aware_distillation
from uniret.train.losses.flops import flops, idf_penalty_weights, quadratic_warmup
from uniret.train.losses.infonce import false_negative_mask, info_nce
from uniret.train.losses.mixing import mix_hard_negatives
from uniret.train.losses.rerank import listwise_ce, pairwise_logistic, pointwise_bce
from uniret.train.losses.weighting import curriculum_weights, focal_weights

__all__ = [
    "curriculum_weights", "false_negative_mask", "flops", "idf_penalty_weights", "quadratic_warmup", "focal_weights", "info_nce", "kl_distillation", "listwise_ce",
    "mix_hard_negatives", "pairwise_logistic", "pointwise_bce", "rank_aware_distillation",
]
