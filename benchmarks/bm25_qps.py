"""BM25 search throughput (queries/s) on SciFact: uniret's Lucene backend (pyserini) against bm25s,
same corpus (title + text) and queries, top 1000, after a warm-up pass. Index time and nDCG@10 on the
test split are reported too, as a check that both do the same job.

    python benchmarks/bm25_qps.py --repeat 3
"""

from __future__ import annotations

import argparse
import os
import time

from _common import save_result
from uniret.data import load_beir
from uniret.eval.metrics import evaluate
from uniret.index.lucene import LuceneBM25Index


def timed_qps(search, n_queries: int, repeat: int) -> tuple[float, dict]:
    run = search()  # warm-up
    start = time.perf_counter()
    for _ in range(repeat):
        run = search()
    return n_queries * repeat / (time.perf_counter() - start), run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default="scifact")
    ap.add_argument("--k", type=int, nargs="+", default=[10, 100, 1000])
    ap.add_argument("--repeat", type=int, default=3, help="passes over all queries (after one warm-up pass)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="bm25s threads and Lucene indexing")
    args = ap.parse_args()

    ds = load_beir(args.data)
    queries = dict(ds.queries)  # every query (test + train)
    qids = list(queries)
    qrels = ds.qrels("test").judgements
    docs = list(ds.corpus)

    start = time.perf_counter()
    lucene = LuceneBM25Index(threads=args.threads)
    lucene.index(ds.corpus)
    lucene_index_s = time.perf_counter() - start

    import bm25s  # same k1/b as Lucene; its own tokenizer, English stop words, Snowball stemmer if present

    try:
        import Stemmer

        stemmer = Stemmer.Stemmer("english")
    except ImportError:
        stemmer = None
    start = time.perf_counter()
    retriever = bm25s.BM25(k1=0.9, b=0.4)
    retriever.index(bm25s.tokenize([d.full_text() for d in docs], stopwords="en", stemmer=stemmer,
                                   show_progress=False), show_progress=False)
    bm25s_index_s = time.perf_counter() - start

    def bm25s_search(k: int) -> dict:
        qtok = bm25s.tokenize([queries[q] for q in qids], stopwords="en", stemmer=stemmer, show_progress=False)
        idx, scores = retriever.retrieve(qtok, k=k, show_progress=False, n_threads=args.threads)
        return {q: {docs[i].id: float(s) for i, s in zip(idx[n], scores[n], strict=True)} for n, q in enumerate(qids)}

    per_k = {}
    for k in args.k:
        lucene_qps, lucene_run = timed_qps(lambda k=k: lucene.search(queries, k=k), len(qids), args.repeat)
        bm25s_qps, bm25s_run = timed_qps(lambda k=k: bm25s_search(k), len(qids), args.repeat)
        per_k[str(k)] = {
            "uniret_lucene_qps": lucene_qps, "bm25s_qps": bm25s_qps, "ratio_uniret_over_bm25s": lucene_qps / bm25s_qps,
            "uniret_lucene_ndcg@10": evaluate(qrels, {q: lucene_run[q] for q in qrels}, ["ndcg@10"])["ndcg@10"],
            "bm25s_ndcg@10": evaluate(qrels, {q: bm25s_run[q] for q in qrels}, ["ndcg@10"])["ndcg@10"],
        }
        r = per_k[str(k)]
        print(f"k={k}: uniret/Lucene {lucene_qps:.0f} q/s (nDCG@10 {r['uniret_lucene_ndcg@10']:.4f}), bm25s "
              f"{bm25s_qps:.0f} q/s (nDCG@10 {r['bm25s_ndcg@10']:.4f}), ratio {r['ratio_uniret_over_bm25s']:.2f}",
              flush=True)
    result = {"data": args.data, "queries": len(qids), "repeat": args.repeat, "threads": args.threads,
              "search_threads": {"uniret_lucene": 1, "bm25s": args.threads},
              "index_seconds": {"uniret_lucene": lucene_index_s, "bm25s": bm25s_index_s},
              "bm25s_stemmer": "snowball-english" if stemmer else "none", "per_k": per_k}
    print(f"written to {save_result('bm25_qps', result)}")


if __name__ == "__main__":
    main()
