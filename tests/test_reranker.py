"""The cross-encoder reranker on the real MiniLM backbone: sentence-transformers format, scoring,
reranking, and a few training steps with the shared trainer."""

from __future__ import annotations

import numpy as np
import pytest

from uniret.retriever.reranker import CrossEncoderReranker
from uniret.train.crossencoder import CrossEncoderModule, RerankLossConfig
from uniret.train.records import TrainingRecord
from uniret.train.sampler import BatchSampler
from uniret.train.trainer import Trainer, TrainerConfig


@pytest.fixture(scope="module")
def reranker():
    import torch

    torch.manual_seed(0)
    return CrossEncoderReranker("all-MiniLM-L6-v2", max_length=64, device="cpu", batch_size=8)


def test_saved_reranker_loads_as_sentence_transformers_cross_encoder(reranker, tmp_path):
    from sentence_transformers import CrossEncoder

    q = ["vitamin d and bone health", "dna repair"]
    d = ["Vitamin D deficiency weakens bones.", "Double-strand breaks are repaired by homologous recombination."]
    ours = [s for (s,) in reranker.score_pairs(q, [[x] for x in d])]
    reranker.save(tmp_path / "ce")
    ce = CrossEncoder(str(tmp_path / "ce"), device="cpu", max_length=64)
    theirs = ce.predict(list(zip(q, d, strict=True)), activation_fn=lambda x: x)
    np.testing.assert_allclose(ours, np.asarray(theirs).reshape(-1), atol=1e-4)
    again = CrossEncoderReranker(tmp_path / "ce", device="cpu")
    assert again.max_length == 64
    np.testing.assert_allclose([s for (s,) in again.score_pairs(q, [[x] for x in d])], ours, atol=1e-5)
    assert reranker.score(q[0], d) == pytest.approx(reranker.score_pairs([q[0]], [d])[0], abs=1e-5)


def test_reranker_is_a_pair_scorer_grouped_by_query(reranker):
    from uniret.protocols import PairScorer

    q = ["vitamin d and bone health", "dna repair", "empty"]
    docs = [["Vitamin D deficiency weakens bones.", "Statins lower LDL."], ["Double-strand breaks."], []]
    assert isinstance(reranker, PairScorer)
    grouped = reranker.score_pairs(q, docs)
    assert [len(g) for g in grouped] == [2, 1, 0] and all(isinstance(s, float) for g in grouped for s in g)
    one_by_one = [reranker.score(query, ds) for query, ds in zip(q, docs, strict=True)]
    assert grouped == [pytest.approx(x, abs=1e-5) for x in one_by_one]
    with pytest.raises(ValueError, match="one list of documents per query"):
        reranker.score_pairs(q, docs[:2])


def test_rerank_reorders_a_run(reranker, scifact_small):
    docs = scifact_small.corpus.to_dict()
    qid, text = next(iter(scifact_small.split_queries("test").items()))
    ids = scifact_small.corpus.ids[:6]
    run = {qid: {d: float(i) for i, d in enumerate(ids)}}
    out = reranker.rerank(run, {qid: text}, docs, k=4)
    assert set(out[qid]) == set(ids[2:])  # the top 4 of the input run
    expected = reranker.score(text, [docs[d].full_text() for d in out[qid]])
    assert list(out[qid].values()) == pytest.approx(expected, abs=1e-5)


def test_training_separates_positives_from_negatives(scifact, tmp_path):
    import torch

    torch.manual_seed(0)
    model = CrossEncoderReranker("all-MiniLM-L6-v2", max_length=48, device="cpu", batch_size=16)
    small = scifact.sample(num_queries=24, num_docs=120, split="train")
    docs = small.corpus.to_dict()
    qrels = small.qrels("train")
    pool = [d for d in small.corpus.ids if all(d not in qrels[q] for q in qrels)]
    records = []
    for i, qid in enumerate(qrels):
        negs = pool[i * 3 : i * 3 + 3]
        records.append(TrainingRecord(query=small.queries[qid], positives=[docs[d].full_text() for d in qrels.relevant(qid)],
                                      positive_ids=qrels.relevant(qid), negatives=[docs[d].full_text() for d in negs],
                                      negative_ids=negs))

    def margin() -> float:
        scores = model.score_pairs([r.query for r in records], [[r.positives[0], r.negatives[0]] for r in records])
        return float(np.mean([pos - neg for pos, neg in scores]))

    before = margin()
    module = CrossEncoderModule(model, RerankLossConfig(negatives=3, pointwise_weight=0.5))
    result = Trainer(module, records, TrainerConfig(batch_size=8, epochs=4, learning_rate=3e-4, warmup_ratio=0.0,
                                                    save_every=None), tmp_path).train()
    assert result.steps == 4 * len(BatchSampler(records, 8))
    assert {"pairwise", "listwise", "pointwise"} <= set(result.history[0])
    after = margin()
    assert after > before + 0.5


@pytest.mark.java
def test_reranking_stage_over_bm25_from_the_cli(reranker, scifact, tmp_path):
    """``uniret eval --retriever bm25 --rerank DIR``: the reranker re-scores exactly BM25's top hits."""
    import json

    from uniret.cli import main
    from uniret.data import load_beir, save_beir

    data = save_beir(scifact.sample(num_queries=8, num_docs=80), tmp_path / "data")
    reranker.save(tmp_path / "ce")
    assert main(["-q", "eval", "--data", str(data), "--retriever", "bm25", "--output-dir", str(tmp_path / "bm25")]) == 0
    assert main(["-q", "eval", "--data", str(data), "--retriever", "bm25", "--rerank", str(tmp_path / "ce"),
                 "--rerank-depth", "5", "--output-dir", str(tmp_path / "rr")]) == 0

    from uniret.scores import ranked
    from uniret.trec import read_trec_run

    def run(path):
        return read_trec_run(path / "run.trec")

    first, reranked = run(tmp_path / "bm25"), run(tmp_path / "rr")
    dataset = load_beir(data)
    docs = dataset.corpus.to_dict()
    queries = dataset.split_queries("test")
    for qid, hits in reranked.items():
        top5 = ranked(first[qid])[:5]
        assert set(hits) == {d for d, _ in top5}
        expected = reranker.score(queries[qid], [docs[d].full_text() for d in hits])
        assert list(hits.values()) == pytest.approx(expected, abs=1e-4)
    report = json.loads((tmp_path / "rr" / "report.json").read_text())
    assert report["retriever"]["kind"] == "lucene-bm25+rerank" and report["retriever"]["depth"] == 5

    from uniret.index.rerank import fuse_scores

    assert main(["-q", "eval", "--data", str(data), "--retriever", "bm25", "--rerank", str(tmp_path / "ce"),
                 "--rerank-depth", "5", "--rerank-fusion", "0.3", "--output-dir", str(tmp_path / "fused")]) == 0
    fused = run(tmp_path / "fused")
    for qid, hits in fused.items():
        assert hits == pytest.approx(fuse_scores(first[qid], reranked[qid], 0.3), abs=1e-4)
    assert json.loads((tmp_path / "fused" / "report.json").read_text())["retriever"]["fusion_weight"] == 0.3


def test_fusion_of_reranker_and_first_stage_scores():
    from uniret.data import Document
    from uniret.index.rerank import RerankedBackend, fuse_scores

    first = {"a": 10.0, "b": 6.0, "c": 2.0, "z": 1.0}
    reranked = {"a": -1.0, "b": 3.0, "c": 1.0}
    # min-max over the reranked documents: first a 1, b .5, c 0; reranker a 0, b 1, c .5
    assert fuse_scores(first, reranked, 1.0) == {"a": 0.0, "b": 1.0, "c": 0.5}
    assert fuse_scores(first, reranked, 0.0) == {"a": 1.0, "b": 0.5, "c": 0.0}
    assert fuse_scores(first, reranked, 0.25) == pytest.approx({"a": 0.75, "b": 0.625, "c": 0.125})
    with pytest.raises(ValueError, match="no first-stage score"):
        fuse_scores({"a": 1.0}, reranked, 0.5)
    with pytest.raises(ValueError, match="within"):
        fuse_scores(first, reranked, 1.5)

    class First:
        kind = "fake"

        def search(self, queries, k=10):
            return {q: dict(list(first.items())[:k]) for q in queries}

    class Scorer:
        def score_pairs(self, queries, docs_per_query):
            return [[reranked.get(d.split()[0], 0.0) for d in docs] for docs in docs_per_query]

    corpus = [Document(id=d, title="", text=f"{d} text") for d in first]
    stage = RerankedBackend(First(), Scorer(), depth=3, fusion_weight=0.25)
    stage.set_corpus(corpus)
    assert list(stage.search({"q": "x"}, k=3)["q"]) == ["a", "b", "c"]  # fused order
    stage.fusion_weight = None
    assert list(stage.search({"q": "x"}, k=3)["q"]) == ["b", "c", "a"]  # reranker order
    with pytest.raises(ValueError, match="within"):
        RerankedBackend(First(), Scorer(), fusion_weight=-0.1)

    class OldStyle:
        def score(self, query, docs):
            return [0.0 for _ in docs]

    with pytest.raises(TypeError, match="PairScorer"):
        RerankedBackend(First(), OldStyle())
