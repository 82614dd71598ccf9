"""Untrained SPLADE on SmolLM2-135M with a logit background subtracted (issue 8), on the zero-shot slice of
``sparse_decoder_cost.py``.

A causal LM's head scores most of its 49,152 tokens above zero in every context, so untrained decoder SPLADE
is dense and its top terms are tokens that are likely everywhere. ``model.background_docs`` subtracts a
per-token background level (the mean plus ``model.background_sd`` standard deviations of each token's
max-pooled logit over a seeded sample of corpus documents; ``uniret.retriever.splade_decoder.logit_background``).
This script builds each decoder variant that way through ``SparseModel.build(background=...)``, exactly as the
sparse family builds it from a config, and scores it zero-shot on the same slice as
``sparse_decoder_cost.py --slice-queries 60 --slice-docs 300`` (first 60 test queries, their judged documents
plus seeded random others, max length 256, top 256 terms, exact sparse dot products). The rows without a
background are in ``sparse_decoder_zero_shot.json``; ``--baseline`` measures them again in this run.

    python benchmarks/sparse_decoder_background.py [--background-docs 128] [--sd 0.25] [--baseline]
"""

from __future__ import annotations

import argparse
import logging
import random
import time
from typing import Any

from sparse_decoder_cost import _slice_ndcg, test_slice

from _common import BenchmarkRun

logger = logging.getLogger("sparse_decoder_background")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--background-docs", type=int, default=128, help="corpus documents the background is computed over")
    ap.add_argument("--sd", type=float, default=0.25, help="standard deviations above the mean (model.background_sd)")
    ap.add_argument("--variants", default="echo,bidirectional")
    ap.add_argument("--slice-queries", type=int, default=60)
    ap.add_argument("--slice-docs", type=int, default=300)
    ap.add_argument("--baseline", action="store_true", help="also score each variant without a background")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch

    from uniret.data import load_beir
    from uniret.retriever.splade import SparseModel

    run = BenchmarkRun("sparse_decoder_background")
    data = load_beir("scifact")
    qids, doc_ids = test_slice(data, args.slice_queries, args.slice_docs)
    corpus = list(data.corpus)
    sample = sorted(random.Random(0).sample(range(len(corpus)), args.background_docs))
    background = [corpus[i].full_text() for i in sample]
    torch.manual_seed(0)
    rows: dict[str, dict[str, Any]] = {}
    for variant in [v.strip() for v in args.variants.split(",") if v.strip()]:
        settings = [("none", None)] if args.baseline else []
        for label, texts in [*settings, (f"background {args.background_docs} docs, sd {args.sd:g}", background)]:
            start = time.perf_counter()
            model = SparseModel.build("smollm2-135m", variant=variant, max_length=256, device="cpu", top_k=256,
                                      background=texts, background_sd=args.sd)
            built = time.perf_counter() - start
            metrics = _slice_ndcg(model, data, qids, doc_ids)
            rows[f"smollm2 {variant}, {label}"] = {
                "variant": variant, "background_docs": len(texts) if texts else 0,
                "background_sd": args.sd if texts else None, "build_seconds": built,
                "slice_seconds": time.perf_counter() - start - built, "zero_shot_slice": metrics}
            logger.info("%s %s: nDCG@10 %.4f R@100 %.4f", variant, label, metrics["ndcg@10"], metrics["recall@100"])
            del model
    path = run.save({"rows": rows, "background_sample_seed": 0, "top_k": 256, "threads": torch.get_num_threads(),
                     "zero_shot_slice": {"split": "test", "queries": len(qids), "documents": len(doc_ids), "seed": 0,
                                         "max_length": 256}})
    logger.info("-> %s", path)


if __name__ == "__main__":
    main()
