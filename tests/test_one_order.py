"""A document's rank, and its normalised score, do not depend on the path it came through: evaluation,
the reranking stage, mining and fusion all use the kernel's :func:`uniret.scores.ranked` (trec_eval's
order) and :func:`uniret.scores.normalize`."""

from __future__ import annotations

import pytest

from uniret.data import Document
from uniret.eval.metrics import evaluate, truncate_run
from uniret.index.rerank import RerankedBackend, fuse_scores
from uniret.scores import fuse_runs, ranked
from uniret.train.mining import rank_candidates
from uniret.train.teachers import BaseTeacher, EnsembleTeacher
from uniret.trec import format_trec_run

# ties everywhere: three documents at 1.0, two at 0.5
HITS = {"d10": 1.0, "d2": 0.5, "d3": 1.0, "d1": 1.0, "d20": 0.5, "top": 2.0}
TREC_ORDER = ["top", "d3", "d10", "d1", "d20", "d2"]  # score desc, then id desc as strings


class Flat:
    """A first stage returning HITS, and a reranker that gives every document the same score."""

    kind = "flat"

    def search(self, queries, k=10):
        return {q: dict(HITS) for q in queries}  # every hit: the cut at the rerank depth is the stage's

    def score_pairs(self, queries, docs_per_query):
        return [[0.0] * len(docs) for docs in docs_per_query]


def reranking_stage(depth: int, fusion_weight: float | None = None) -> RerankedBackend:
    stage = RerankedBackend(Flat(), Flat(), depth=depth, fusion_weight=fusion_weight)
    stage.set_corpus([Document(id=d, title="", text=d) for d in HITS])
    return stage


def test_eval_rerank_and_mining_order_ties_identically():
    assert [d for d, _ in ranked(HITS)] == TREC_ORDER
    eval_order = list(truncate_run({"q": HITS}, len(HITS))["q"])
    trec_order = [line.split()[2] for line in format_trec_run({"q": HITS})]
    rerank_order = list(reranking_stage(depth=len(HITS), fusion_weight=0.0).search({"q": "x"}, k=len(HITS))["q"])
    mining_order = [c.doc_id for c in rank_candidates(HITS)]
    rrf_order = [d for d, _ in ranked(fuse_runs([{"q": HITS}], "rrf")["q"])]
    assert eval_order == trec_order == rerank_order == mining_order == rrf_order == TREC_ORDER
    # the tie order decides the metrics too: pytrec_eval ranks d3 (1.0) above d10 and d1
    assert evaluate({"q": {"d3": 1}}, {"q": HITS}, ["mrr@10"])["mrr@10"] == pytest.approx(1 / 2)


def test_cuts_at_a_tie_keep_the_same_documents_on_every_path():
    # depth 3 cuts inside the 1.0 tie: eval truncation, the rerank depth and mining ranks agree
    kept = list(truncate_run({"q": HITS}, 3)["q"])
    reranked = reranking_stage(depth=3).search({"q": "x"}, k=3)["q"]
    assert set(reranked) == set(kept) == {"top", "d3", "d10"}
    assert list(reranked) == ["top", "d3", "d10"]  # all reranker scores tie: trec_eval order again
    assert [c.doc_id for c in rank_candidates(HITS)][:3] == kept


def test_constant_scores_normalise_alike_in_rerank_fusion_mining_fusion_and_teacher_ensembles():
    # all-equal scores -> 1.0 under minmax on every path (one convention, uniret.scores.normalize)
    same = {"a": 3.0, "b": 3.0}
    assert fuse_scores(same, {"a": 0.0, "b": 0.0}, 0.25) == {"a": 1.0, "b": 1.0}
    assert fuse_runs([{"q": same}], "interpolate")["q"] == {"a": 1.0, "b": 1.0}

    class Constant(BaseTeacher):
        def score_pairs(self, queries, docs_per_query):
            return [[3.0] * len(docs) for docs in docs_per_query]

    assert EnsembleTeacher([Constant()]).score("q", ["a", "b"]) == [1.0, 1.0]
    assert EnsembleTeacher([Constant()], normalization="zscore").score("q", ["a", "b"]) == [0.0, 0.0]
