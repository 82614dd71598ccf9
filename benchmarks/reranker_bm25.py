"""The cross-encoder reranker (issue 3): train it from all-MiniLM-L6-v2 on SciFact train with
``configs/scifact-reranker.yaml``, then rerank BM25's top 100 on SciFact test.

    python benchmarks/reranker_bm25.py --out runs/reranker

Equivalent CLI: ``uniret train --config configs/scifact-reranker.yaml --output-dir OUT`` then
``uniret eval --data scifact --retriever bm25 --rerank OUT/model --rerank-depth 100 --output-dir EV``.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from _common import save_result
from uniret.commands import RetrieverConfig, run_eval
from uniret.config import load_config
from uniret.train.config import TrainConfig
from uniret.train.pipeline import run_training

RECIPE = Path(__file__).resolve().parent.parent / "configs" / "scifact-reranker.yaml"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/reranker")
    ap.add_argument("--config", default=str(RECIPE))
    ap.add_argument("--depth", type=int, default=100)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    start = time.perf_counter()
    summary = run_training(load_config(args.config, TrainConfig), out)
    train_wall = time.perf_counter() - start
    bm25 = run_eval("scifact", RetrieverConfig(kind="bm25"), out / "eval-bm25", split="test")
    start = time.perf_counter()
    reranked = run_eval("scifact", RetrieverConfig(kind="bm25", batch_size=64), out / "eval-rerank", split="test",
                        rerank=out / "model", rerank_depth=args.depth)
    rerank_wall = time.perf_counter() - start
    result = {"config": args.config, "depth": args.depth, "train_steps": summary["steps"],
              "train_seconds": summary["train_seconds"], "train_wall_seconds": train_wall,
              "rerank_wall_seconds": rerank_wall, "bm25": bm25.metrics, "bm25+rerank": reranked.metrics}
    path = save_result("reranker_bm25", result)
    print(f"BM25 nDCG@10 {bm25.metrics['ndcg@10']:.4f}; reranked top {args.depth}: "
          f"{reranked.metrics['ndcg@10']:.4f} ({path})")


if __name__ == "__main__":
    main()
