"""Index round-trips, manifests and mismatch errors (FAISS with a stand-in encoder; Lucene BM25 with Java)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import HashEncoder
from uniret.data import Corpus, Document
from uniret.errors import IndexMismatchError
from uniret.index import load_index, read_manifest
from uniret.index.faiss_index import FaissIndex, factory_string
from uniret.index.manifest import atomic_directory

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau".split()


def toy_corpus(n: int = 300) -> Corpus:
    rng = np.random.default_rng(0)
    return Corpus.from_documents(
        Document(id=f"d{i}", title=f"title {i}", text=" ".join(rng.choice(WORDS, size=8))) for i in range(n))


@pytest.mark.parametrize("index_type", ["flat", "hnsw", "ivf-pq", "IVF4,Flat"])
def test_faiss_round_trip(tmp_path, index_type):
    corpus = toy_corpus()
    encoder = HashEncoder(dim=16)
    idx = FaissIndex(encoder, index_type, nprobe=4)
    idx.index(corpus)
    queries = {"q1": "alpha beta gamma", "q2": "sigma tau"}
    before = idx.search(queries, k=5)
    idx.save(tmp_path / "idx")
    manifest = read_manifest(tmp_path / "idx")
    assert manifest["kind"] == "faiss" and manifest["num_docs"] == 300 and manifest["dimension"] == 16
    assert manifest["encoder"]["hash"] == encoder.identity["hash"] and manifest["similarity"] == "cosine"
    assert manifest["uniret_version"]
    loaded = load_index(tmp_path / "idx", encoder=HashEncoder(dim=16))
    after = loaded.search(queries, k=5)
    assert after == before
    assert all(len(h) == 5 for h in after.values())
    assert loaded.document("d3") == list(corpus)[3]


def test_flat_search_is_exact(hash_encoder):
    corpus = toy_corpus(50)
    idx = FaissIndex(hash_encoder, "flat")
    idx.index(corpus)
    docs = hash_encoder.encode_documents([d.full_text() for d in corpus])
    q = hash_encoder.encode_queries(["alpha beta"])[0]
    best = np.argsort(-(docs @ q), kind="stable")[:3]
    hits = idx.search({"q": "alpha beta"}, k=3)["q"]
    assert list(hits.values()) == pytest.approx(list((docs @ q)[best]), abs=1e-5)


def test_ivf_pq_factory_fits_small_and_large_corpora():
    assert factory_string("flat", 10, 384) == "Flat"
    assert factory_string("ivf-pq", 5183, 384).startswith("IVF132,PQ96x")
    assert factory_string("ivf-pq", 100, 16).startswith("IVF2,PQ4x")
    assert factory_string("IVF8,Flat", 100, 16) == "IVF8,Flat"


def test_invalid_index_type(hash_encoder):
    with pytest.raises(ValueError, match="invalid index type 'nonsense'"):
        FaissIndex(hash_encoder, "nonsense").index(toy_corpus(20))


def test_mismatched_encoder_hash_is_an_error(tmp_path):
    idx = FaissIndex(HashEncoder(dim=16, name="enc-a"))
    idx.index(toy_corpus(40))
    idx.save(tmp_path / "idx")
    with pytest.raises(IndexMismatchError, match="index built with encoder enc-a .* given encoder is enc-b"):
        FaissIndex.load(tmp_path / "idx", encoder=HashEncoder(dim=16, name="enc-b"))


def test_mismatched_dimension_is_an_error(tmp_path):
    idx = FaissIndex(HashEncoder(dim=16))
    idx.index(toy_corpus(40))
    idx.save(tmp_path / "idx")
    with pytest.raises(IndexMismatchError, match="16-dim encoder .* has dimension 32"):
        FaissIndex.load(tmp_path / "idx", encoder=HashEncoder(dim=32))


def test_wrong_kind_and_damaged_manifest(tmp_path):
    idx = FaissIndex(HashEncoder(dim=16))
    idx.index(toy_corpus(40))
    idx.save(tmp_path / "idx")
    from uniret.index.lucene import LuceneBM25Index

    with pytest.raises(IndexMismatchError, match="holds a 'faiss' index, not a 'lucene-bm25' index"):
        LuceneBM25Index.load(tmp_path / "idx")
    ids = json.loads((tmp_path / "idx" / "docids.json").read_text())
    (tmp_path / "idx" / "docids.json").write_text(json.dumps(ids[:-1]))
    with pytest.raises(ValueError, match="the index is damaged"):
        FaissIndex.load(tmp_path / "idx", encoder=HashEncoder(dim=16))
    (tmp_path / "idx" / "manifest.json").write_text("{not json")
    with pytest.raises(IndexMismatchError, match="corrupt manifest"):
        load_index(tmp_path / "idx")
    with pytest.raises(FileNotFoundError, match="manifest.json is missing"):
        load_index(tmp_path)


def test_failed_write_leaves_nothing_and_keeps_the_old_index(tmp_path):
    dest = tmp_path / "idx"
    with atomic_directory(dest) as tmp:
        (tmp / "a").write_text("old")
    with pytest.raises(RuntimeError, match="boom"), atomic_directory(dest) as tmp:
        (tmp / "a").write_text("half")
        raise RuntimeError("boom")
    assert (dest / "a").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]


def test_save_before_index_is_an_error(hash_encoder, tmp_path):
    with pytest.raises(RuntimeError, match="call index"):
        FaissIndex(hash_encoder).save(tmp_path / "x")
    assert not (tmp_path / "x").exists()


@pytest.mark.java
def test_lucene_bm25_round_trip_on_scifact_slice(tmp_path, scifact_small):
    from uniret.eval.metrics import evaluate
    from uniret.index.lucene import LuceneBM25Index

    queries = scifact_small.split_queries("test")
    idx = LuceneBM25Index()
    idx.index(scifact_small.corpus)
    before = idx.search(queries, k=20)
    idx.save(tmp_path / "bm25")
    manifest = read_manifest(tmp_path / "bm25")
    assert manifest["kind"] == "lucene-bm25" and manifest["num_docs"] == len(scifact_small.corpus)
    assert manifest["settings"] == {"k1": 0.9, "b": 0.4, "fields": "title+text"}
    loaded = load_index(tmp_path / "bm25")
    after = loaded.search(queries, k=20)
    assert after == before and len(after) == len(queries)
    ndcg = evaluate(scifact_small.qrels("test").judgements, after, ["ndcg@10"])["ndcg@10"]
    assert ndcg > 0.7  # 30 queries over 200 documents: BM25 finds most judged documents
    first = next(iter(scifact_small.corpus))
    assert loaded.document(first.id) == first


def test_flat_inner_product_search_equals_faiss():
    """The blocked matrix-product search of CPU flat indexes returns faiss's own top-k, across block edges, for
    k beyond a block, one query, and equal scores (lower row first)."""
    import faiss

    from uniret.index.faiss_index import flat_ip_search

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2500, 24)).astype(np.float32)
    q = rng.standard_normal((7, 24)).astype(np.float32)
    index = faiss.IndexFlatIP(24)
    index.add(x)
    want_scores, want_rows = index.search(q, 50)
    for block, k in ((65_536, 50), (1000, 50), (30, 50), (7, 3)):
        scores, rows = flat_ip_search(index, q, k, block=block)
        np.testing.assert_array_equal(rows, want_rows[:, :k])
        np.testing.assert_allclose(scores, want_scores[:, :k], rtol=1e-5, atol=1e-5)
    scores, rows = flat_ip_search(index, q[:1], 5)
    np.testing.assert_array_equal(rows, want_rows[:1, :5])
    dup = faiss.IndexFlatIP(2)
    dup.add(np.array([[1, 0], [0, 1], [1, 0], [1, 0]], dtype=np.float32))
    _, rows = flat_ip_search(dup, np.array([[1, 0]], dtype=np.float32), 3, block=2)
    assert rows.tolist() == [[0, 2, 3]]
