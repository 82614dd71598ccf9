"""Reranker + first-stage score fusion (issue 3): choose the fusion weight on the dev split, apply it on test.

Needs a trained reranker and the test runs of ``benchmarks/reranker_bm25.py`` (``--runs`` folder: its
``eval-bm25/run.trec`` and ``eval-rerank/run.trec``). On dev (the 100 held-out SciFact train queries of
the recipe, never trained on) it reranks BM25's top ``--depth`` over the full corpus and scores each weight
``w`` of ``w * minmax(reranker) + (1 - w) * minmax(BM25)``; the best dev weight is then applied to the saved
test runs with the same function the reranking stage uses (:func:`uniret.index.rerank.fuse_scores`), as
``uniret eval --retriever bm25 --rerank MODEL --rerank-fusion W`` would.

    python benchmarks/reranker_fusion.py --model runs/reranker/model --runs runs/reranker
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from _common import FUSION_WEIGHTS, save_result
from uniret.data import load_beir
from uniret.eval.metrics import evaluate
from uniret.index.lucene import LuceneBM25Index
from uniret.index.rerank import fuse_scores
from uniret.retriever.reranker import CrossEncoderReranker
from uniret.train.pipeline import holdout_split
from uniret.trec import read_trec_run


def fuse_run(first: dict, reranked: dict, w: float) -> dict:
    return {q: fuse_scores(first[q], hits, w) for q, hits in reranked.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="runs/reranker/model")
    ap.add_argument("--runs", default="runs/reranker")
    ap.add_argument("--depth", type=int, default=100)
    ap.add_argument("--holdout", type=int, default=100)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    dataset = load_beir("scifact")
    _, dev = holdout_split(dataset, "train", args.holdout, 0)
    assert dev is not None
    dev_qrels = dev.qrels("dev").judgements
    queries = {q: dataset.queries[q] for q in dev_qrels}
    bm25 = LuceneBM25Index()
    bm25.index(dataset.corpus)
    first = bm25.search(queries, k=args.depth)
    texts = {d.id: d.full_text() for d in dataset.corpus}
    reranker = CrossEncoderReranker(args.model, batch_size=64)
    scores = reranker.score_pairs([queries[q] for q in first], [[texts[d] for d in hits] for hits in first.values()])
    reranked = {q: dict(zip(hits, s, strict=True)) for (q, hits), s in zip(first.items(), scores, strict=True)}
    dev_ndcg = {w: evaluate(dev_qrels, fuse_run(first, reranked, w), ["ndcg@10"])["ndcg@10"] for w in FUSION_WEIGHTS}
    best = max(FUSION_WEIGHTS, key=lambda w: (dev_ndcg[w], w))
    runs = Path(args.runs)
    test_first = read_trec_run(runs / "eval-bm25" / "run.trec")
    test_reranked = read_trec_run(runs / "eval-rerank" / "run.trec")
    test_qrels = dataset.qrels("test").judgements
    test = {w: evaluate(test_qrels, fuse_run(test_first, test_reranked, w), ["ndcg@10", "recall@100", "mrr@10"])
            for w in (0.0, 1.0, best)}
    result = {"model": args.model, "depth": args.depth, "dev_queries": len(dev_qrels), "dev_ndcg@10": dev_ndcg,
              "best_weight": best, "test": {str(w): m for w, m in test.items()}}
    path = save_result("reranker_fusion", result)
    print(f"dev-chosen weight {best}: test nDCG@10 {test[best]['ndcg@10']:.4f} (BM25 {test[0.0]['ndcg@10']:.4f}, "
          f"reranker alone {test[1.0]['ndcg@10']:.4f}); {path}")


if __name__ == "__main__":
    main()
