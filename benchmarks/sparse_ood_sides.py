"""Which side forgets: a trained sparse model's query encoder and document encoder, each swapped with the base
model's, in domain and out of domain (issue 8, a diagnostic of the out-of-domain drop).

For each collection the documents and the queries are encoded once by each model (max length ``--max-length``,
quantised x100 as the ``sparse`` index does), the documents indexed with PISA (the default engine), and every
query encoder searched against every document encoder: four rows per collection. The two matched rows are what
``uniret eval --retriever sparse --model M`` measures; the crossed ones say whether the drop comes from how the
model weighs queries or how it weighs documents. Both models must share the vocabulary (a SPLADE model trained
from the base does).

    python benchmarks/sparse_ood_sides.py --model runs/selfteach/splade/model \\
        --data scifact,../shared/datasets/cranfield,../shared/datasets/agentset-msmarco-5k
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
from pathlib import Path

from _common import BenchmarkRun, from_repo

logger = logging.getLogger("sparse_ood_sides")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="the trained sparse model (a saved folder)")
    ap.add_argument("--base", default="splade-tiny", help="the model its training started from")
    ap.add_argument("--data", default="scifact,../shared/datasets/cranfield,../shared/datasets/agentset-msmarco-5k",
                    help="comma-separated collections (a packaged name or a BEIR folder; relative paths are tried "
                         "from the working folder, then from the repository)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--name", default="sparse_ood_sides")
    ap.add_argument("--results-dir", default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from uniret.data import load_beir
    from uniret.eval.metrics import evaluate
    from uniret.families import RetrieverConfig
    from uniret.index.builders import sparse_encoder
    from uniret.index.sparse import encode_cached, quantise
    from uniret.index.sparse_engines import PisaEngine

    bench = BenchmarkRun(args.name, results_dir=args.results_dir)
    models = {"base": args.base, "trained": args.model}
    encoders = {side: sparse_encoder(RetrieverConfig(kind="sparse", model=m, device="cpu", max_length=args.max_length,
                                                     cache_embeddings=True)) for side, m in models.items()}
    vocabularies = {side: e.identity.get("vocabulary_hash") for side, e in encoders.items()}
    if len(set(vocabularies.values())) != 1:
        raise SystemExit(f"the models' vocabularies differ ({vocabularies}): their vectors cannot be crossed")
    collections: dict[str, dict] = {}
    work = Path(tempfile.mkdtemp(prefix="sparse-ood-sides-"))
    try:
        for spec in args.data.split(","):
            path = from_repo(spec)
            ds = load_beir(path)
            name = ds.name
            queries = ds.split_queries(args.split)
            qids = list(queries)
            qrels = ds.qrels(args.split).judgements
            doc_ids = [d.id for d in ds.corpus]
            texts = [d.full_text() for d in ds.corpus]
            engines, qvecs = {}, {}
            for side, encoder in encoders.items():
                docs = quantise(encode_cached(encoder, texts, "documents", cache=True))
                folder = work / f"{name}-{side}"
                PisaEngine.build(folder, doc_ids, docs, [])
                engines[side] = PisaEngine.open(folder, doc_ids)
                qvecs[side] = quantise(encoder.encode_queries([queries[q] for q in qids])).as_queries()
            rows = {}
            for q_side in encoders:
                for d_side in encoders:
                    hits = engines[d_side].search(qvecs[q_side], 1000)
                    run = {q: {doc_ids[r]: float(s) for r, s in h} for q, h in zip(qids, hits, strict=True)}
                    metrics = evaluate(qrels, run, ["ndcg@10", "recall@100"])
                    rows[f"queries {q_side}, documents {d_side}"] = {"queries": q_side, "documents": d_side,
                                                                     **metrics}
                    logger.info("%s: queries %s, documents %s: nDCG@10 %.4f", name, q_side, d_side,
                                metrics["ndcg@10"])
            engines.clear()
            collections[name] = {"path": path, "queries": len(qids), "docs": len(doc_ids), "rows": rows}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = bench.save({"models": models, "max_length": args.max_length, "split": args.split,
                      "engine": "pisa (the sparse index's default), quantised x100", "collections": collections})
    logger.info("-> %s", out)


if __name__ == "__main__":
    main()
