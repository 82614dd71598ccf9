"""The dense recipe on SciFact against sentence-transformers, in one command (issue 3).

Rows (each is trained from all-MiniLM-L6-v2 on SciFact ``train`` minus the recipe's 100-query dev split, then
evaluated once on SciFact ``test``, full corpus, max length 256, FAISS flat, exactly as
``uniret eval --data scifact --retriever dense --model OUT/ROW/model --max-length 256``):

- ``recipe``: ``uniret train --config configs/scifact-dense.yaml`` (through ``run_training``).
- ``st5e5``: sentence-transformers' ``SentenceTransformerTrainer`` + ``MultipleNegativesRankingLoss`` on
  ``mine_hard_negatives`` triplets (``train_ablation.run_st``) at lr 5e-5, the ``TrainingArguments`` default.
- ``st1e4``: the same at lr 1e-4, the recipe's learning rate.

The sentence-transformers rows use the recipe's budget (steps, batch size, warm-up, max length, seed, 1/τ).

    python benchmarks/dense_recipe.py [--rows recipe,st5e5,st1e4] [--out runs/dense_recipe] [--set KEY=VALUE ...]
    python benchmarks/dense_recipe.py --smoke --out runs/dense_recipe_smoke   # minutes: a slice, 2 steps

Each row writes its own results file as soon as it finishes (``scifact_dense_recipe.json``,
``scifact_dense_st_lr5e5.json``, ``scifact_dense_st_lr1e4.json`` under ``benchmarks/results``), so a partial run
leaves the finished rows usable. ``--smoke`` writes its files under ``OUT/results`` instead, never into
``benchmarks/results``.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import train_ablation  # loaded now: the sentence-transformers rows run the code as it was at the start

from _common import REPO, RESULTS, BenchmarkRun
from uniret.config import load_config, to_dict
from uniret.train.config import TrainConfig

RECIPE = REPO / "configs" / "scifact-dense.yaml"
ST_ROWS = {"st5e5": 5e-5, "st1e4": 1e-4}  # row -> sentence-transformers learning rate
ROWS = ("recipe", *ST_ROWS)
RESULT_NAMES = {"recipe": "scifact_dense_recipe", "st5e5": "scifact_dense_st_lr5e5",
                "st1e4": "scifact_dense_st_lr1e4"}
# --smoke: a slice of SciFact and a 2-step budget; checks the whole path in minutes, measures nothing.
SMOKE_OVERRIDES = ["trainer.max_steps=2", "trainer.batch_size=8", "trainer.log_every=1", "data.holdout_queries=10",
                   "eval.dev_docs=0", "mining.k=20", "loss.curriculum_steps=1", "eval.ood=[]"]
logger = logging.getLogger("dense_recipe")


def smoke_dataset(out: Path, train_queries: int = 40, test_queries: int = 20, extra_docs: int = 200) -> Path:
    """A small BEIR folder cut from SciFact: the first queries of ``train`` and ``test``, their judged
    documents and ``extra_docs`` random others (seed 0)."""
    import random

    from uniret.data import BeirDataset, Qrels, Queries, load_beir, save_beir

    path = (out / "smoke-data").resolve()
    if (path / "corpus.jsonl").is_file():
        return path
    full = load_beir("scifact")
    qrels: dict[str, Qrels] = {}
    for split, n in (("train", train_queries), ("test", test_queries)):
        judged = full.qrels(split).judgements
        qids = sorted(judged)[:n]
        qrels[split] = Qrels({q: dict(judged[q]) for q in qids}, split=split, source=full.qrels(split).source)
    keep = {d for q in qrels.values() for docs in q.judgements.values() for d in docs}
    others = sorted(set(full.corpus.ids) - keep)
    random.Random(0).shuffle(others)
    keep |= set(others[:extra_docs])
    qids = sorted({qid for split_qrels in qrels.values() for qid in split_qrels.judgements})
    queries = Queries({qid: full.queries[qid] for qid in qids})
    save_beir(BeirDataset(full.root, full.corpus.subset(keep), queries, {}, name="scifact-smoke", qrels=qrels), path)
    return path


def evaluate_test(data: str, model_dir: Path, out: Path) -> tuple[dict[str, Any], float]:
    """``uniret eval --data DATA --retriever dense --model MODEL --max-length 256``; (metrics, wall seconds)."""
    from uniret.commands import RetrieverConfig, run_eval

    start = time.perf_counter()
    result = run_eval(data, RetrieverConfig(kind="dense", model=str(model_dir), max_length=256), out,
                      split="test", model_given=True)
    return result.metrics, time.perf_counter() - start


def run_recipe(base: TrainConfig, out: Path) -> dict[str, Any]:
    from uniret.train.pipeline import run_training

    start = time.perf_counter()
    summary = run_training(base, out)
    train_wall = time.perf_counter() - start
    test, eval_wall = evaluate_test(base.data.data, out / "model", out / "test")
    return {
        "trainer": "uniret",
        "learning_rate": base.trainer.learning_rate,
        "train_seconds": summary["train_seconds"],
        "prep_seconds": summary["prep_seconds"],
        "examples_per_second": summary["examples_per_second"],
        "final_loss": summary["final_loss"],
        "train_wall_seconds": train_wall,
        "eval_wall_seconds": eval_wall,
        "mining": summary["stats"].get("mining"),
        "teacher_seconds": summary["stats"].get("teacher_seconds"),
        "dev": summary.get("dev"),
        "ood": summary.get("ood"),  # eval.ood: base vs trained per collection (issue 13)
        "interpolation": summary.get("interpolation"),
        "test": test,
        "config_resolved": to_dict(base),
    }


def run_st_row(base: TrainConfig, lr: float, out: Path) -> dict[str, Any]:
    cfg = replace(base, trainer=replace(base.trainer, learning_rate=lr))
    start = time.perf_counter()
    info = train_ablation.run_st(cfg, out)
    train_wall = time.perf_counter() - start
    test, eval_wall = evaluate_test(cfg.data.data, out / "model", out / "test")
    ood = train_ablation.evaluate_ood(cfg, out / "model", out)  # eval.ood: base vs this model (issue 13)
    return {
        "trainer": "sentence-transformers",
        "ood": ood,
        "learning_rate": lr,
        "mine_seconds": info["mine_seconds"],
        "train_seconds": info["train_seconds"],
        "triplets": info["triplets"],
        "train_wall_seconds": train_wall,
        "eval_wall_seconds": eval_wall,
        "dev": info.get("dev"),
        "test": test,
        "config_resolved": {"trainer": to_dict(cfg.trainer), "model": to_dict(cfg.model), "data": to_dict(cfg.data),
                            "temperature": cfg.loss.temperature},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {','.join(ROWS)}")
    ap.add_argument("--out", default="runs/dense_recipe", help="run folders (one per row)")
    ap.add_argument("--config", default=str(RECIPE))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    ap.add_argument("--smoke", action="store_true",
                    help="a SciFact slice and 2 steps, results under OUT/results (checks the script, measures nothing)")
    ap.add_argument("--results-dir", default=None,
                    help="where the results files go (default benchmarks/results; with --smoke OUT/results)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from uniret.cli import parse_overrides

    names = [n.strip() for n in args.rows.split(",") if n.strip()]
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        ap.error(f"unknown row(s) {', '.join(unknown)}; choose from {', '.join(ROWS)}")
    out = Path(args.out)
    overrides = list(args.set)
    results_dir = Path(args.results_dir) if args.results_dir else None
    if args.smoke:
        overrides = [f"data.data={smoke_dataset(out)}", *SMOKE_OVERRIDES, *overrides]
        results_dir = results_dir or out / "results"
        if results_dir.resolve() == RESULTS.resolve():
            ap.error("--smoke never writes into benchmarks/results")
    base = load_config(args.config, TrainConfig, overrides=parse_overrides(overrides))
    config_shown = Path(args.config).resolve()
    config_shown_str = str(config_shown.relative_to(REPO)) if config_shown.is_relative_to(REPO) else str(config_shown)
    for name in names:
        run = BenchmarkRun(RESULT_NAMES[name] + ("_smoke" if args.smoke else ""), results_dir=results_dir)
        row_dir = out / name
        logger.info("row %s -> %s", name, row_dir)
        info = run_recipe(base, row_dir) if name == "recipe" else run_st_row(base, ST_ROWS[name], row_dir)
        path = run.save({"row": name, "smoke": args.smoke, "config": config_shown_str, "overrides": overrides,
                         "data": base.data.data, "steps": base.trainer.max_steps,
                         "batch_size": base.trainer.batch_size, "run_dir": str(row_dir), **info})
        logger.info("row %s: test nDCG@10 %.4f, dev nDCG@10 %s -> %s", name, info["test"]["ndcg@10"],
                    f"{info['dev']['ndcg@10']:.4f}" if info.get("dev") else "-", path)


if __name__ == "__main__":
    main()
