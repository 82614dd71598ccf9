"""Gradient caching gives the plain step's loss and gradients (dropout on)."""

from __future__ import annotations

import random

import pytest
import torch

from conftest import TinyEmbedder, make_records
from uniret.train.biencoder import BiEncoderModule, LossConfig


def grads_after_step(chunk, cfg, seed=0):
    emb = TinyEmbedder(dropout=0.2)
    emb.train(True)
    module = BiEncoderModule(emb, cfg, grad_cache_chunk=chunk)
    torch.manual_seed(123)
    logs = module.step(make_records(8, 3, with_scores=True), random.Random(seed), step=5)
    return logs["loss"], {n: p.grad.clone() for n, p in emb.net.named_parameters()}


@pytest.mark.parametrize("cfg", [
    LossConfig(hard_negatives=2),
    LossConfig(hard_negatives=3, false_negative_margin=0.1, focal_gamma=2.0, curriculum_steps=10),
    LossConfig(hard_negatives=2, distill_weight=0.5, distill="rank", mixing=3),
], ids=["infonce", "masks-focal-curriculum", "distill-mixing"])
def test_cached_step_equals_plain_step(cfg):
    loss_plain, g_plain = grads_after_step(None, cfg)
    loss_cached, g_cached = grads_after_step(3, cfg)
    assert loss_cached == pytest.approx(loss_plain, rel=1e-6)
    for name in g_plain:
        torch.testing.assert_close(g_cached[name], g_plain[name], rtol=1e-4, atol=1e-6)
    assert any(g.abs().sum() > 0 for g in g_plain.values())


def test_dropout_really_differs_between_calls():
    """The equality above is not vacuous: without RNG replay, dropout masks would differ."""
    emb = TinyEmbedder(dropout=0.5)
    emb.train(True)
    feats = emb.tokenize(["apple banana cherry"])
    assert not torch.allclose(emb.forward(feats), emb.forward(feats))
