"""Faster training: bf16 mixed precision (the forward pass runs in bfloat16 under autocast, weights and
losses stay float32) and switching off attention-probability dropout (fused attention kernels)."""

from __future__ import annotations

import random

import pytest
import torch

from conftest import TinyEmbedder, make_records
from uniret.train.biencoder import BiEncoderModule, LossConfig
from uniret.train.precision import autocast_forward
from uniret.train.trainer import Trainer, TrainerConfig


def test_autocast_forward_runs_in_bf16_and_returns_float32():
    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 16)
    x = torch.randn(8, 64)
    assert autocast_forward(layer, "no", "cpu") is layer
    mixed = autocast_forward(layer, "bf16", "cpu")(x)
    exact = layer(x)
    assert mixed.dtype == torch.float32
    assert not torch.equal(mixed, exact)  # the matmul really ran in bfloat16 ...
    torch.testing.assert_close(mixed, exact, atol=0.05, rtol=0.02)  # ... to bfloat16 accuracy
    reference = torch.nn.functional.linear(x.bfloat16(), layer.weight.bfloat16(), layer.bias.bfloat16()).float()
    torch.testing.assert_close(mixed, reference)
    with pytest.raises(ValueError, match="mixed_precision must be one of no, bf16"):
        autocast_forward(layer, "fp8", "cpu")


def test_bf16_training_learns_and_keeps_float32_weights(tmp_path):
    emb = TinyEmbedder(dropout=0.0)
    cfg = TrainerConfig(batch_size=4, max_steps=40, learning_rate=0.05, warmup_ratio=0.2, mixed_precision="bf16")
    module = BiEncoderModule(emb, LossConfig(hard_negatives=2))
    result = Trainer(module, make_records(16, 3), cfg, tmp_path).train()
    assert module._forward != emb.forward  # the trainer's config switched the module to autocast
    losses = [h["loss"] for h in result.history]
    assert sum(losses[-8:]) / 8 < 0.7 * sum(losses[:8]) / 8
    assert all(p.dtype == torch.float32 for p in emb.parameters())


def _gradient(embedder, records, mixed_precision):
    embedder.backbone.zero_grad(set_to_none=True)
    module = BiEncoderModule(embedder, LossConfig(hard_negatives=1))
    module.use_mixed_precision(mixed_precision)
    logs = module.step(records, random.Random(0), 0)
    grads = torch.cat([p.grad.flatten() for p in embedder.backbone.parameters() if p.grad is not None])
    return logs["loss"], grads


def test_bf16_step_on_minilm_matches_float32(scifact):
    """One real step (MiniLM, SciFact training claims and their positives, one random SciFact document as negative): the bf16 loss and
    gradient agree with float32 to bfloat16 accuracy."""
    from uniret.retriever.embedder import Embedder
    from uniret.train.records import records_from_beir

    records = list(records_from_beir(scifact, "train"))[:8]
    rng = random.Random(0)
    docs = [d.full_text() for d, _ in zip(scifact.corpus, range(200), strict=False)]
    for r in records:
        r.negatives = rng.sample(docs, 1)
    emb = Embedder.build("all-MiniLM-L6-v2", pooling="mean", max_length=64, device="cpu")
    emb.train(False)  # no dropout: both passes see the same network
    loss32, grad32 = _gradient(emb, records, "no")
    loss16, grad16 = _gradient(emb, records, "bf16")
    assert loss16 != loss32 and loss16 == pytest.approx(loss32, rel=0.05)
    cosine = torch.nn.functional.cosine_similarity(grad16.double(), grad32.double(), dim=0)
    assert cosine > 0.95, float(cosine)
    assert all(p.dtype == torch.float32 for p in emb.backbone.parameters())


def test_set_attention_dropout_names_each_family():
    from transformers import BertConfig, LlamaConfig, T5Config

    from uniret.retriever.embedder import set_attention_dropout

    bert, llama = BertConfig(), LlamaConfig(attention_dropout=0.1)
    set_attention_dropout(bert, 0.0)
    set_attention_dropout(llama, 0.0)
    assert bert.attention_probs_dropout_prob == 0.0 and bert.hidden_dropout_prob == 0.1
    assert llama.attention_dropout == 0.0
    with pytest.raises(ValueError, match="model type 't5' has no attention dropout setting"):
        set_attention_dropout(T5Config(), 0.0)
    with pytest.raises(ValueError, match=r"attention_dropout must be in \[0, 1\)"):
        set_attention_dropout(bert, 1.5)


def test_attention_dropout_off_on_real_minilm_keeps_inference_and_other_dropout():
    from uniret.retriever.embedder import Embedder
    from uniret.retriever.reranker import CrossEncoderReranker

    texts = ["Vitamin D deficiency causes bone loss", "Statins lower LDL cholesterol in adults."]
    default = Embedder.build("all-MiniLM-L6-v2", max_length=64, device="cpu")
    fast = Embedder.build("all-MiniLM-L6-v2", max_length=64, device="cpu", attention_dropout=0.0)
    attention = [m for m in fast.backbone.modules() if type(m).__name__ == "BertSelfAttention"]
    assert len(attention) == 6 and all(m.dropout.p == 0.0 for m in attention)
    assert fast.backbone.config.hidden_dropout_prob == 0.1  # only attention dropout changes
    assert all(m.dropout.p == 0.1 for m in default.backbone.modules() if type(m).__name__ == "BertSelfAttention")
    default.train(False)
    fast.train(False)
    with torch.no_grad():
        torch.testing.assert_close(fast.embed_documents(texts), default.embed_documents(texts))
    reranker = CrossEncoderReranker("all-MiniLM-L6-v2", device="cpu", attention_dropout=0.0)
    assert reranker.model.config.attention_probs_dropout_prob == 0.0
