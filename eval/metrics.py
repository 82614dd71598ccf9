"""Retrieval metrics computed by pytrec_eval, so every number equals trec_eval's.

Metric names are ``<measure>@<k>`` with measure one of ``ndcg``, ``recall``, ``mrr``, ``map``, ``p``
(``ndcg@10``, ``recall@100``, ``mrr@10``, ``map@100``, ``p@10``). They map onto trec_eval measures:

=========  ===========================================================================
ndcg@k     ``ndcg_cut.k`` (gain = the qrels grade, log2 discount, as trec_eval)
recall@k   ``recall.k``
map@k      ``map_cut.k``
p@k        ``P.k``
mrr@k      ``recip_rank`` over the run truncated to its top k
=========  ===========================================================================

Conventions, as in BEIR:

- **Ties** are broken as trec_eval breaks them: by score descending, then by document id in
  *descending* string order (:func:`uniret.scores.ranked`, the one order of every uniret path). The
  truncation for ``mrr@k`` uses the same order.
- **Self-hits**: by default a document whose id equals its query id is dropped from the run
  (``ignore_identical_ids``), as BEIR does for corpora whose queries are also documents.
- **Averaging**: the mean runs over every query in the qrels (trec_eval ``-c``); a judged query that is
  absent from the run scores 0. Queries in the run without judgements are ignored.
- Documents with grade <= 0 are non-relevant (trec_eval's ``relevance_level`` 1).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import pytrec_eval

from uniret.scores import ranked

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_METRICS", "STANDARD_METRICS", "Metric", "drop_self_hits", "evaluate", "ranked", "truncate_run"]

DEFAULT_METRICS = ("ndcg@10", "recall@100", "mrr@10", "map@100")
STANDARD_METRICS = ("ndcg@1", "ndcg@3", "ndcg@5", "ndcg@10", "ndcg@100", "recall@10", "recall@100", "recall@1000",
                    "mrr@10", "map@10", "map@100", "p@1", "p@10")
_TREC = {"ndcg": ("ndcg_cut.{k}", "ndcg_cut_{k}"), "recall": ("recall.{k}", "recall_{k}"),
         "map": ("map_cut.{k}", "map_cut_{k}"), "p": ("P.{k}", "P_{k}")}
_NAME = re.compile(r"^(ndcg|recall|mrr|map|p)@(\d+)$")


@dataclass(frozen=True)
class Metric:
    measure: str
    k: int

    @classmethod
    def parse(cls, name: str) -> Metric:
        m = _NAME.match(name.strip().lower())
        if not m or int(m.group(2)) < 1:
            raise ValueError(f"unknown metric {name!r}; expected <ndcg|recall|mrr|map|p>@<k>, e.g. ndcg@10")
        return cls(m.group(1), int(m.group(2)))

    @property
    def name(self) -> str:
        return f"{self.measure}@{self.k}"


def truncate_run(run: Mapping[str, Mapping[str, float]], k: int) -> dict[str, dict[str, float]]:
    return {qid: dict(ranked(hits)[:k]) for qid, hits in run.items()}


def drop_self_hits(run: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    return {qid: {d: s for d, s in hits.items() if d != qid} for qid, hits in run.items()}


def evaluate(
    qrels: Mapping[str, Mapping[str, int]],
    run: Mapping[str, Mapping[str, float]],
    metrics: Iterable[str] = DEFAULT_METRICS,
    *,
    ignore_identical_ids: bool = True,
    per_query: bool = False,
) -> dict[str, float] | tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Mean of each metric over the judged queries; with ``per_query`` also ``{qid: {metric: value}}``."""
    parsed = [Metric.parse(m) for m in metrics]
    qrels = {q: {d: int(g) for d, g in docs.items()} for q, docs in qrels.items() if docs}
    if not qrels:
        raise ValueError("qrels are empty: nothing to evaluate")
    run = {q: {d: float(s) for d, s in hits.items()} for q, hits in run.items()}
    if ignore_identical_ids:
        run = drop_self_hits(run)
    # pytrec_eval skips queries that have no hits; they score 0 below.
    run_eval = {q: hits for q, hits in run.items() if q in qrels and hits}
    values: dict[str, dict[str, float]] = {q: {} for q in qrels}

    trec_measures = {_TREC[m.measure][0].format(k=m.k) for m in parsed if m.measure in _TREC}
    if trec_measures and run_eval:
        results = pytrec_eval.RelevanceEvaluator(qrels, trec_measures).evaluate(run_eval)
        for m in parsed:
            if m.measure in _TREC:
                key = _TREC[m.measure][1].format(k=m.k)
                for q in qrels:
                    values[q][m.name] = float(results[q][key]) if q in results else 0.0
    for m in parsed:
        if m.measure == "mrr":
            truncated = {q: hits for q, hits in truncate_run(run_eval, m.k).items() if hits}
            rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(truncated) if truncated else {}
            for q in qrels:
                values[q][m.name] = float(rr[q]["recip_rank"]) if q in rr else 0.0
    if not trec_measures and not any(m.measure == "mrr" for m in parsed):
        raise ValueError("no metrics requested")
    missing = len([q for q in qrels if q not in run_eval])
    if missing:
        logger.warning("%d of %d judged queries have no results in the run; they score 0", missing, len(qrels))
    means = {m.name: sum(values[q].get(m.name, 0.0) for q in qrels) / len(qrels) for m in parsed}
    return (means, values) if per_query else means
