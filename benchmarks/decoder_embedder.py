"""Decoder embedder (issue 3): SmolLM2-135M trained as a dense embedder with causal attention and
last-token pooling, against bidirectional attention with mean pooling, on the same data and budget.

Both variants train with LoRA (r=16, alpha=32) on the recipe's mined SciFact records (BM25 negatives behind
the relative-margin filter, dev queries held out), InfoNCE with in-batch and one hard negative, and the
same instruction on the query side. CPU-sized: SmolLM2 encodes about 6x slower than MiniLM on 2 cores, so
the test evaluation uses all 300 SciFact test queries against a reduced corpus: every judged document plus
random others up to ``--docs`` (seeded). The zero-shot backbone and MiniLM are evaluated on the same slice.

    python benchmarks/decoder_embedder.py --records runs/ablation/records/bm25_relative.jsonl --out runs/decoder
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from _common import save_result
from uniret.data import load_beir
from uniret.eval.runner import evaluate_backend
from uniret.index.faiss_index import FaissIndex
from uniret.train.biencoder import LossConfig
from uniret.train.config import DataConfig, EvalConfig, ModelConfig, TrainConfig
from uniret.train.trainer import TrainerConfig

INSTRUCTION = "Given a scientific claim, retrieve documents that support or refute the claim"
VARIANTS = {
    "last-token": {"pooling": "last-token", "bidirectional": False},
    "bidirectional-mean": {"pooling": "mean", "bidirectional": True},
}


def evaluate(model: Any, data: Any, out: Path) -> dict[str, float]:
    return evaluate_backend(FaissIndex(model, "flat"), data, split="test", name=out.name, output_dir=out).metrics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", required=True, help="training records (e.g. from benchmarks/train_ablation.py)")
    ap.add_argument("--out", default="runs/decoder")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--docs", type=int, default=1500)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from uniret.retriever.dense import DenseEncoder
    from uniret.retriever.embedder import Embedder
    from uniret.train.pipeline import run_training

    out = Path(args.out)
    test = load_beir("scifact").sample(num_queries=10**6, num_docs=args.docs, split="test", seed=0)
    rows: dict[str, Any] = {}
    minilm = DenseEncoder("all-MiniLM-L6-v2", max_length=256)
    rows["minilm-zero-shot"] = {"test": evaluate(minilm, test, out / "eval-minilm")}
    for name in args.variants.split(","):
        v = VARIANTS[name]
        zero = Embedder.build("smollm2-135m", pooling=v["pooling"], bidirectional=v["bidirectional"],
                              max_length=args.max_length, default_instruction=INSTRUCTION, device="cpu")
        zero_metrics = evaluate(zero, test, out / f"eval-{name}-zero-shot")
        del zero
        cfg = TrainConfig(
            model=ModelConfig(backbone="smollm2-135m", pooling=v["pooling"], bidirectional=v["bidirectional"],
                              max_length=args.max_length, default_instruction=INSTRUCTION,
                              lora={"r": 16, "alpha": 32}, device="cpu"),
            data=DataConfig(train_file=args.records, holdout_queries=100),
            loss=LossConfig(hard_negatives=1, temperature=0.05),
            trainer=TrainerConfig(batch_size=args.batch_size, max_steps=args.steps, learning_rate=args.lr,
                                  warmup_ratio=0.1, log_every=5),
            eval=EvalConfig(dev=False),
        )
        start = time.perf_counter()
        summary = run_training(cfg, out / name)
        trained = Embedder.load(out / name / "model", device="cpu")
        rows[name] = {"zero_shot_test": zero_metrics, "test": evaluate(trained, test, out / f"eval-{name}"),
                      "train_seconds": summary["train_seconds"], "wall_seconds": time.perf_counter() - start,
                      **v}
        logging.info("%s: zero-shot nDCG@10 %.4f, trained %.4f", name, zero_metrics["ndcg@10"],
                     rows[name]["test"]["ndcg@10"])
        save_result("decoder_embedder", {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
                                         "max_length": args.max_length, "lora": {"r": 16, "alpha": 32},
                                         "test_slice": {"queries": len(test.split_queries("test")),
                                                        "docs": len(test.corpus)}, "rows": rows})


if __name__ == "__main__":
    main()
