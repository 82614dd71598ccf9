"""LIMIT-small ("On the Theoretical Limitations of Embedding-Based Retrieval", Weller et al., 2025) through every
registered retriever family that runs here, plus hybrid fusion (issue 11).

LIMIT asks for documents by combinations of attributes that single-vector embedders cannot represent at small
dimension; lexical and sparse models do well. Reported: recall@2, recall@10, recall@100 and nDCG@10 on the 1,000
queries over 46 documents, for BM25, the dense all-MiniLM-L6-v2, the sparse SPLADE-tiny, and the fusion of
BM25 + dense and sparse + dense (RRF, the one fusion function of :mod:`uniret.scores`).

    python benchmarks/limit.py [--data ../shared/datasets/limit-small]
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from _common import REPO, BenchmarkRun

logger = logging.getLogger("limit")
METRICS = ("recall@2", "recall@10", "recall@100", "ndcg@10")
SYSTEMS = {  # name -> RetrieverConfig fields
    "bm25": {"kind": "bm25"},
    "dense all-MiniLM-L6-v2": {"kind": "dense", "model": "all-MiniLM-L6-v2"},
    "sparse splade-tiny": {"kind": "sparse", "model": "splade-tiny"},
}
FUSIONS = {"rrf(bm25 + dense)": ("bm25", "dense all-MiniLM-L6-v2"),
           "rrf(sparse + dense)": ("sparse splade-tiny", "dense all-MiniLM-L6-v2")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "datasets" / "limit-small"))
    ap.add_argument("--split", default="test")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from uniret import families
    from uniret.data import load_beir
    from uniret.eval.metrics import evaluate
    from uniret.families import RetrieverConfig
    from uniret.scores import fuse_runs

    run_record = BenchmarkRun("limit_small")
    dataset = load_beir(args.data, allow_whitespace_ids=True)  # LIMIT ids are names ("Geneva Durben")
    queries = dataset.split_queries(args.split)
    qrels = dataset.qrels(args.split).judgements
    runs: dict[str, Any] = {}
    rows: dict[str, dict[str, Any]] = {}
    for name, fields in SYSTEMS.items():
        family = families.get(fields["kind"])
        if family.missing():
            logger.warning("%s skipped: %s", name, family.missing())
            continue
        backend = family.build_backend(RetrieverConfig(**fields, device="cpu"))
        start = time.perf_counter()
        backend.index(dataset.corpus)
        runs[name] = backend.search(queries, k=100)
        seconds = time.perf_counter() - start
        rows[name] = {**evaluate(qrels, runs[name], METRICS), "seconds": seconds,  # type: ignore[dict-item]
                      "retriever": backend.describe()}
    for name, (a, b) in FUSIONS.items():
        if a in runs and b in runs:
            rows[name] = dict(evaluate(qrels, fuse_runs([runs[a], runs[b]], "rrf"), METRICS))  # type: ignore[arg-type]
    path = run_record.save({"data": str(Path(args.data)), "split": args.split, "queries": len(queries),
                            "documents": len(dataset.corpus), "rows": rows})
    for name, row in rows.items():
        logger.info("%-26s %s", name, "  ".join(f"{m} {row[m]:.4f}" for m in METRICS))
    logger.info("-> %s", path)


if __name__ == "__main__":
    main()
