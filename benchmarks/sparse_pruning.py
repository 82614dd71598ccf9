"""What top-k pruning at inference (``--top-k``) costs and buys on SciFact (issue 8).

``uniret index/eval --retriever sparse --top-k K`` keeps the K largest weights of every document and query
vector. This script encodes SciFact's corpus and its 300 test queries once, unpruned, with the model (default
SPLADE-tiny, through the ``sparse`` family's encoder at its max length, 256), then for each K prunes both sides
the same way (``uniret.retriever.splade.prune_vectors``, equal to encoding with ``top_k``: tested), quantises
them x100 as the index does, builds PISA (the default engine, ``ranked_or_taat``) and reports per K:

- nDCG@10 and recall@100 over the full corpus (top 1000), and the share of queries whose top-10 set equals the
  unpruned one;
- the mean number of terms per document (as indexed, after quantisation) and per query;
- PISA's queries/s at top 10 (one thread, queries already encoded, interleaved rounds after a warm-up, so a
  slow spell of the machine falls on every K) and its index size.

    python benchmarks/sparse_pruning.py [--model splade-tiny] [--top-k 0,256,128,64,32] [--repeat 5]

A model saved with its own ``top_k`` (the decoder SPLADE configs save 256) encodes at most that many terms;
``--encode-top-k N`` encodes with N instead, so that the reference (K 0) and the larger Ks see what the cap
cut. ``--device`` (default cpu) is where the model encodes (``device_decoder.py run --pruning`` passes auto).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np
from pisa_algorithms import interleaved_seconds

from _common import BenchmarkRun

logger = logging.getLogger("sparse_pruning")


def folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="splade-tiny", help="a sparse model: alias or saved folder")
    ap.add_argument("--data", default="scifact")
    ap.add_argument("--top-k", default="0,256,128,64,32", help="comma-separated; 0: no pruning (the reference)")
    ap.add_argument("--repeat", type=int, default=5, help="timed rounds (each: one pass of every K)")
    ap.add_argument("--encode-top-k", type=int, default=None,
                    help="encode with this top_k instead of the model's saved one (K 0 is then this cap)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--name", default="sparse_pruning")
    ap.add_argument("--results-dir", default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from uniret.data import load_beir
    from uniret.eval.metrics import evaluate
    from uniret.families import RetrieverConfig
    from uniret.index.builders import sparse_encoder
    from uniret.index.sparse import encode_cached, quantise
    from uniret.index.sparse_engines import PISA_ALGORITHM, PisaEngine
    from uniret.retriever.splade import mean_nonzeros, prune_vectors

    tops = [int(k) for k in args.top_k.split(",")]
    if 0 not in tops:
        tops.insert(0, 0)
    bench = BenchmarkRun(args.name, results_dir=args.results_dir)
    ds = load_beir(args.data)
    queries = ds.split_queries("test")
    qids = list(queries)
    qrels = ds.qrels("test").judgements
    doc_ids = [d.id for d in ds.corpus]
    encoder = sparse_encoder(RetrieverConfig(kind="sparse", model=args.model, device=args.device,
                                             cache_embeddings=True, top_k=args.encode_top_k))
    raw_docs = encode_cached(encoder, [d.full_text() for d in ds.corpus], "documents", cache=True)
    raw_queries = encoder.encode_queries([queries[q] for q in qids])
    work = Path(tempfile.mkdtemp(prefix="sparse-pruning-"))
    rows, engines = [], {}
    try:
        reference: list[set[str]] | None = None
        for k in tops:
            top_k = k or None
            docs = quantise(prune_vectors(raw_docs, top_k=top_k))
            pruned_queries = prune_vectors(raw_queries, top_k=top_k)
            qvecs = quantise(pruned_queries).as_queries()
            folder = work / f"k{k}"
            PisaEngine.build(folder, doc_ids, docs, [])
            engine = PisaEngine.open(folder, doc_ids)
            hits = engine.search(qvecs, 1000)
            run = {q: {doc_ids[r]: float(s) for r, s in h} for q, h in zip(qids, hits, strict=True)}
            metrics = evaluate(qrels, run, ["ndcg@10", "recall@100"])
            top10 = [set(doc_ids[r] for r, _ in h[:10]) for h in hits]
            reference = reference or top10
            rows.append({"top_k": top_k, "ndcg@10": metrics["ndcg@10"], "recall@100": metrics["recall@100"],
                         "same_top10_set_as_unpruned": float(np.mean([a == b for a, b in
                                                                      zip(top10, reference, strict=True)])),
                         "terms_per_document": float(np.mean(np.diff(docs.indptr))),
                         "terms_per_query": mean_nonzeros(pruned_queries), "index_mb": folder_mb(folder)})
            engines[k] = (engine, qvecs)
            logger.info("top_k %s: nDCG@10 %.4f, %.1f terms/doc", top_k, metrics["ndcg@10"],
                        rows[-1]["terms_per_document"])
        for engine, qvecs in engines.values():
            engine.search(qvecs, 10)  # warm-up
        seconds = interleaved_seconds(engines, 10, args.repeat)
        for row, k in zip(rows, tops, strict=True):
            row["qps"] = len(qids) * args.repeat / seconds[k]
            row["qps_vs_unpruned"] = row["qps"] / (len(qids) * args.repeat / seconds[tops[0]])
    finally:
        engines.clear()
        shutil.rmtree(work, ignore_errors=True)
    path = bench.save({"data": args.data, "model": args.model, "max_length": encoder.max_length,
                       "encoded_top_k": encoder.model.top_k, "device": str(encoder.model.device),
                       "queries": len(qids), "docs": len(doc_ids), "engine": {"pisa": PISA_ALGORITHM, "threads": 1,
                                                                              "k": 10, "repeat": args.repeat},
                       "pruned": "documents and queries alike (as --top-k)", "rows": rows})
    logger.info("-> %s", path)


if __name__ == "__main__":
    main()
