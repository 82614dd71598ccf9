"""Metrics against hand computations (and, through pytrec_eval, trec_eval's conventions)."""

from __future__ import annotations

import math

import pytest

from uniret.eval.metrics import Metric, evaluate, ranked, truncate_run
from uniret.eval.report import metrics_table, read_trec_run, write_trec_run

ALL = ["ndcg@3", "ndcg@2", "recall@2", "recall@3", "mrr@10", "mrr@1", "p@2", "map@3", "map@2"]


def test_binary_case_by_hand():
    qrels = {"q1": {"d1": 1, "d2": 1}}
    run = {"q1": {"d1": 0.9, "d3": 0.8, "d2": 0.7}}
    m = evaluate(qrels, run, ALL)
    idcg = 1 + 1 / math.log2(3)
    assert m["ndcg@3"] == pytest.approx((1 + 1 / math.log2(4)) / idcg, abs=1e-6)
    assert m["ndcg@2"] == pytest.approx(1 / idcg, abs=1e-6)
    assert m["recall@2"] == pytest.approx(0.5)
    assert m["recall@3"] == pytest.approx(1.0)
    assert m["mrr@10"] == pytest.approx(1.0)
    assert m["p@2"] == pytest.approx(0.5)
    assert m["map@3"] == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert m["map@2"] == pytest.approx((1 / 1) / 2)  # map_cut divides by all relevant documents


def test_graded_gains_are_linear_as_in_trec_eval():
    qrels = {"q": {"a": 3, "b": 1, "c": 0}}
    run = {"q": {"c": 5.0, "b": 2.0, "a": 1.0}}
    dcg = 0 + 1 / math.log2(3) + 3 / math.log2(4)
    idcg = 3 + 1 / math.log2(3)
    assert evaluate(qrels, run, ["ndcg@3"])["ndcg@3"] == pytest.approx(dcg / idcg, abs=1e-6)
    assert evaluate(qrels, run, ["p@1"])["p@1"] == 0.0  # grade 0 is not relevant


def test_mrr_at_k_cuts_the_ranking():
    qrels = {"q": {"x": 1}}
    run = {"q": {"a": 3.0, "b": 2.0, "x": 1.0}}
    m = evaluate(qrels, run, ["mrr@2", "mrr@3", "mrr@10"])
    assert m == {"mrr@2": 0.0, "mrr@3": pytest.approx(1 / 3), "mrr@10": pytest.approx(1 / 3)}


def test_ties_break_by_doc_id_descending():
    qrels = {"q": {"a": 1}}
    run = {"q": {"a": 1.0, "b": 1.0}}
    assert [d for d, _ in ranked(run["q"])] == ["b", "a"]
    m = evaluate(qrels, run, ["p@1", "mrr@10", "mrr@1"])
    assert m == {"p@1": 0.0, "mrr@10": 0.5, "mrr@1": 0.0}  # pytrec_eval and our truncation agree


def test_self_hits_are_ignored_by_default():
    qrels = {"q1": {"d1": 1}}
    run = {"q1": {"q1": 9.0, "d1": 1.0}}
    assert evaluate(qrels, run, ["p@1"])["p@1"] == 1.0
    assert evaluate(qrels, run, ["p@1"], ignore_identical_ids=False)["p@1"] == 0.0


def test_mean_over_all_judged_queries_missing_scores_zero():
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}}
    run = {"q1": {"d1": 1.0}, "q3": {"d3": 1.0}}  # q2 missing, q3 unjudged
    means, per_query = evaluate(qrels, run, ["ndcg@10"], per_query=True)
    assert means["ndcg@10"] == pytest.approx(0.5)
    assert per_query == {"q1": {"ndcg@10": 1.0}, "q2": {"ndcg@10": 0.0}}


def test_bad_metric_names():
    with pytest.raises(ValueError, match="unknown metric 'ndcg10'"):
        Metric.parse("ndcg10")
    with pytest.raises(ValueError, match="unknown metric"):
        evaluate({"q": {"a": 1}}, {"q": {"a": 1.0}}, ["bleu@4"])
    with pytest.raises(ValueError, match="qrels are empty"):
        evaluate({}, {"q": {"a": 1.0}}, ["ndcg@10"])


def test_truncate_run_keeps_top_k_in_trec_order():
    run = {"q": {"a": 1.0, "b": 3.0, "c": 1.0, "d": 0.5}}
    assert list(truncate_run(run, 3)["q"]) == ["b", "c", "a"]


def test_trec_run_round_trip_and_table(tmp_path):
    run = {"q1": {"d1": 0.5, "d2": 1.5}, "q2": {"d3": 1.0}}
    write_trec_run(run, tmp_path / "run.trec", tag="t")
    lines = (tmp_path / "run.trec").read_text().splitlines()
    assert lines[0] == "q1 Q0 d2 1 1.500000 t"
    assert read_trec_run(tmp_path / "run.trec") == run
    table = metrics_table({"bm25": {"ndcg@10": 0.5}, "dense": {"ndcg@10": 0.25}})
    assert "| bm25   |     0.5000 |" in table and table.count("\n") == 3
