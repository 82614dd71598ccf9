"""Ablation of the dense training recipe on SciFact (issue 3), all rows at the same steps and batch size.

Every row starts from all-MiniLM-L6-v2, trains on SciFact ``train`` minus a dev split of 100 held-out
queries (seed 0, the recipe's ``data.holdout_queries``), reports nDCG@10 on that dev split (dev queries
against their judged documents plus random others, 1,000 documents) and is evaluated once on SciFact
``test`` (full corpus, max length 256), exactly as ``uniret eval --retriever dense --model OUT/model``, and
on the recipe's ``eval.ood`` collections (base model vs the row's model, as ``uniret train`` reports them).

Rows (base: ``configs/scifact-dense.yaml``; each row changes only what its name says):

- ``inbatch``: InfoNCE, in-batch negatives only (training pairs from the qrels).
- ``bm25``: + BM25 hard negatives, unfiltered (top 8 of BM25's top 100 minus the positives).
- ``margin``: + NV-Retriever relative-margin filter (drop negatives above 0.95 x the positive's score).
- ``distill``: + KL distillation to the BM25 + MiniLM ensemble (min-max per query, mean).
- ``full``: + focal reweighting, online hard-negative mixing and curriculum (= configs/scifact-dense.yaml).
- ``st``: sentence-transformers' ``SentenceTransformerTrainer`` + ``MultipleNegativesRankingLoss``
  on triplets from ``mine_hard_negatives`` with its defaults (3 negatives, top) over the same corpus.

    python benchmarks/train_ablation.py --out runs/ablation [--rows inbatch,bm25,...] [--set KEY=VALUE ...]

Results accumulate in ``benchmarks/results/train_ablation.json`` (a row already there is kept unless
``--rerun``). Mined records are cached under ``--out/records``.

Both caches are tied to the configuration that made them: ``records/config.json`` holds the hash of the
settings the records depend on (data, dev split, mining, teachers) and each result row the hash of its
configuration. A cache made by a different configuration is refused with an error naming what differs;
``--recompute-records`` re-mines the records, ``--rerun`` re-measures the rows.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from _common import RESULTS, save_result
from uniret.config import load_config, to_dict
from uniret.data import load_beir
from uniret.train.config import TrainConfig
from uniret.train.mining import mine
from uniret.train.pipeline import build_teacher, holdout_split
from uniret.train.records import records_from_beir, write_records

ROWS = ("inbatch", "bm25", "margin", "distill", "full", "st")
RECIPE = Path(__file__).resolve().parent.parent / "configs" / "scifact-dense.yaml"
logger = logging.getLogger("ablation")


class StaleCacheError(RuntimeError):
    """A cached record file or result row was made by a different configuration than this run's."""


def config_hash(settings: Any) -> str:
    """A stable hash of a JSON-able configuration (key order does not matter)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def config_diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two configurations, as ``key: old -> new``."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in old:
                out.append(f"{name}: (absent) -> {new[key]!r}")
            elif key not in new:
                out.append(f"{name}: {old[key]!r} -> (absent)")
            else:
                out.extend(config_diff(old[key], new[key], name))
        return out
    return [] if old == new else [f"{prefix or '(value)'}: {old!r} -> {new!r}"]


def records_settings(base: TrainConfig) -> dict[str, Any]:
    """What the cached records depend on: data set, split and dev split, mining and teachers."""
    data = to_dict(base.data)
    return {"data": {k: data[k] for k in ("data", "split", "holdout_queries", "holdout_seed")},
            "mining": to_dict(base.mining) if base.mining is not None else None,
            "teachers": to_dict(base.teachers) if base.teachers is not None else None}


def check_cache(kind: str, where: Path | str, stored: dict[str, Any] | None, settings: dict[str, Any],
                flag: str) -> None:
    """Raise :class:`StaleCacheError` unless ``stored`` (``{"hash", "settings"}``) matches ``settings``."""
    if stored is None or "hash" not in stored:
        raise StaleCacheError(f"{kind} in {where} carry no configuration hash, so they may come from another "
                              f"configuration; pass {flag} to recompute them")
    if stored["hash"] == config_hash(settings):
        return
    diff = config_diff(stored.get("settings"), settings) or ["(settings not stored; hashes differ)"]
    raise StaleCacheError(f"{kind} in {where} were made by a different configuration ({'; '.join(diff)}); "
                          f"pass {flag} to recompute them, or use another --out / --result")


def prepare(base: TrainConfig, out: Path, recompute: bool = False) -> dict[str, Path]:
    """Training records of each kind, mined once on the training view (dev queries removed). Cached under
    ``out/records`` with the hash of the settings they depend on; a cache from other settings is an error
    (``recompute``: mine again and overwrite it)."""
    rec_dir = out / "records"
    rec_dir.mkdir(parents=True, exist_ok=True)
    paths = {"pairs": rec_dir / "pairs.jsonl", "unfiltered": rec_dir / "bm25_unfiltered.jsonl",
             "filtered": rec_dir / "bm25_relative.jsonl", "scored": rec_dir / "bm25_relative_scored.jsonl"}
    settings = records_settings(base)
    stamp = rec_dir / "config.json"
    if not recompute and any(p.is_file() for p in paths.values()):
        stored = json.loads(stamp.read_text(encoding="utf-8")) if stamp.is_file() else None
        check_cache("cached training records", rec_dir, stored, settings, "--recompute-records")
        if all(p.is_file() for p in paths.values()):
            return paths
    stamp.unlink(missing_ok=True)  # written again only once every record file is complete
    dataset = load_beir(base.data.data)
    train_view, _ = holdout_split(dataset, base.data.split, base.data.holdout_queries, base.data.holdout_seed)
    stats: dict[str, Any] = {}
    write_records(list(records_from_beir(train_view, base.data.split)), paths["pairs"])
    assert base.mining is not None and base.teachers is not None
    records, stats["unfiltered"] = mine(train_view, replace(base.mining, filter="none"), split=base.data.split)
    write_records(records, paths["unfiltered"])
    records, stats["filtered"] = mine(train_view, base.mining, split=base.data.split)
    write_records(records, paths["filtered"])
    from uniret.train.teachers import add_teacher_scores

    start = time.perf_counter()
    add_teacher_scores(records, build_teacher(base.teachers, train_view, base.model.device))
    stats["teacher_seconds"] = time.perf_counter() - start
    write_records(records, paths["scored"])
    (rec_dir / "stats.json").write_text(json.dumps(stats, indent=2, default=str) + "\n", encoding="utf-8")
    stamp.write_text(json.dumps({"hash": config_hash(settings), "settings": settings}, indent=2, default=str) + "\n",
                     encoding="utf-8")
    return paths


def row_config(name: str, base: TrainConfig, paths: dict[str, Path]) -> TrainConfig:
    loss = replace(base.loss, focal_gamma=0.0, mixing=0, curriculum_steps=0, distill_weight=0.0)
    train_file = {"inbatch": "pairs", "bm25": "unfiltered", "margin": "filtered", "distill": "scored",
                  "full": "scored"}[name]
    if name == "inbatch":
        loss = replace(loss, hard_negatives=0)
    if name == "distill":
        loss = replace(loss, distill_weight=base.loss.distill_weight)
    if name == "full":
        loss = base.loss
    data = replace(base.data, train_file=str(paths[train_file]))
    return replace(base, data=data, loss=loss, mining=None, teachers=None)


def row_settings(name: str, base: TrainConfig, paths: dict[str, Path]) -> dict[str, Any]:
    """Everything a row's result depends on (for the st row: its budget, model and data; for the others the
    whole row configuration, with the records' own settings in place of their file path)."""
    if name == "st":
        data = to_dict(base.data)
        return {"row": name, "trainer": to_dict(base.trainer), "model": to_dict(base.model),
                "temperature": base.loss.temperature, "eval": to_dict(base.eval),
                "data": {k: data[k] for k in ("data", "split", "holdout_queries", "holdout_seed")}}
    cfg = to_dict(row_config(name, base, paths))
    cfg["data"].pop("train_file", None)  # the run folder; the records are identified by their settings
    return {"row": name, "config": cfg, "records": records_settings(base)}


def evaluate_test(model_dir: Path, out: Path) -> dict[str, Any]:
    from uniret.commands import RetrieverConfig, run_eval

    result = run_eval("scifact", RetrieverConfig(kind="dense", model=str(model_dir), max_length=256), out,
                      split="test", model_given=True)
    return {"metrics": result.metrics, "eval_seconds": result.report["timings"]}


def run_st(base: TrainConfig, out: Path) -> dict[str, Any]:
    """The sentence-transformers baseline at the same budget: batch size, steps, lr, warm-up, max length."""
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.training_args import BatchSamplers
    from sentence_transformers.util import mine_hard_negatives

    from uniret.assets import resolve_model

    dataset = load_beir(base.data.data)
    train_view, dev_view = holdout_split(dataset, base.data.split, base.data.holdout_queries, base.data.holdout_seed)
    pairs = [(r.query, p) for r in records_from_beir(train_view, base.data.split) for p in r.positives]
    model = SentenceTransformer(resolve_model(base.model.backbone), device="cpu")
    model.max_seq_length = base.model.max_length
    start = time.perf_counter()
    ds = Dataset.from_dict({"anchor": [q for q, _ in pairs], "positive": [p for _, p in pairs]})
    corpus = [d.full_text() for d in dataset.corpus]
    triplets = mine_hard_negatives(ds, model, corpus=corpus, batch_size=64)
    mine_seconds = time.perf_counter() - start
    t = base.trainer
    args = SentenceTransformerTrainingArguments(
        output_dir=str(out / "st-checkpoints"), per_device_train_batch_size=t.batch_size, max_steps=t.max_steps or 0,
        learning_rate=t.learning_rate, warmup_ratio=t.warmup_ratio, weight_decay=t.weight_decay,
        logging_steps=10, save_strategy="no", report_to=[], batch_sampler=BatchSamplers.NO_DUPLICATES,
        dataloader_num_workers=0, use_cpu=True, seed=t.seed)
    start = time.perf_counter()
    SentenceTransformerTrainer(model=model, args=args, train_dataset=triplets,
                               loss=MultipleNegativesRankingLoss(model, scale=1.0 / base.loss.temperature)).train()
    train_seconds = time.perf_counter() - start
    model.save(str(out / "model"))
    info: dict[str, Any] = {"mine_seconds": mine_seconds, "train_seconds": train_seconds, "triplets": len(triplets)}
    if dev_view is not None:  # the same dev split and corpus as uniret's rows, through the saved model
        from uniret.retriever.embedder import Embedder
        from uniret.train.pipeline import evaluate_dev

        model_st = Embedder.build(str(out / "model"), pooling="mean", normalize=True, max_length=base.model.max_length,
                                  device="cpu")
        info["dev"] = evaluate_dev(model_st, dev_view, base, out)["metrics"]
    return info


def evaluate_ood(base: TrainConfig, model_dir: Path, out: Path) -> dict[str, Any] | None:
    """The config's ``eval.ood`` collections: base model (cached) vs ``model_dir``, as ``uniret train`` reports
    them (for rows trained outside ``run_training``, e.g. sentence-transformers)."""
    if not base.eval.ood:
        return None
    from uniret.train.ood import compare, evaluate_folder, resolve_ood
    from uniret.train.pipeline import build_model, ood_before

    sets = resolve_ood(base.eval.ood, base.data.data, base.eval.ood_split)
    model, module = build_model(base)
    model.train(False)
    before = ood_before(base, module, sets, out)
    after = evaluate_folder(base.model.kind, model_dir, sets, split=base.eval.ood_split,
                            max_length=base.eval.ood_max_length, batch_size=base.eval.batch_size,
                            device=base.model.device, reports=out / "ood" / "after")
    return compare(before, after, base.eval.ood_metric)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/ablation")
    ap.add_argument("--config", default=str(RECIPE))
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--rerun", action="store_true", help="re-measure rows already in the results file")
    ap.add_argument("--recompute-records", action="store_true",
                    help="mine the cached records under OUT/records again (e.g. after a config change)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a recipe value for every row, e.g. --set trainer.max_steps=40")
    ap.add_argument("--result", default="train_ablation",
                    help="results file name under benchmarks/results (one file per budget)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from uniret.cli import parse_overrides
    from uniret.train.pipeline import run_training

    base = load_config(args.config, TrainConfig, overrides=parse_overrides(args.set))
    out = Path(args.out)
    prior = RESULTS / f"{args.result}.json"
    rows: dict[str, Any] = json.loads(prior.read_text())["rows"] if prior.is_file() else {}
    names = args.rows.split(",")
    paths = prepare(base, out, recompute=args.recompute_records) if any(n != "st" for n in names) else {}
    for name in names:
        settings = row_settings(name, base, paths)
        if name in rows and not args.rerun:
            stored = rows[name].get("config_hash")
            check_cache(f"result row {name!r}", prior, None if stored is None else
                        {"hash": stored, "settings": rows[name].get("settings")}, settings, "--rerun")
            logger.info("row %s already measured with this configuration; skipping", name)
            continue
        row_dir = out / name
        start = time.perf_counter()
        if name == "st":
            info = run_st(base, row_dir)
            info["ood"] = evaluate_ood(base, row_dir / "model", row_dir)
            cfg_dict: Any = {"trainer": to_dict(base.trainer), "model": to_dict(base.model)}
        else:
            cfg = row_config(name, base, paths)
            summary = run_training(cfg, row_dir)
            info = {"train_seconds": summary["train_seconds"], "dev": summary.get("dev"),
                    "final_loss": summary["final_loss"], "ood": summary.get("ood")}
            cfg_dict = {"loss": to_dict(cfg.loss), "train_file": cfg.data.train_file}
        test = evaluate_test(row_dir / "model", row_dir / "test")
        rows[name] = {**info, "test": test["metrics"], "wall_seconds": time.perf_counter() - start, "config": cfg_dict,
                      "config_hash": config_hash(settings), "settings": settings}
        logger.info("row %s: test nDCG@10 %.4f", name, test["metrics"]["ndcg@10"])
        save_result(args.result, {"recipe": str(args.config), "overrides": args.set, "steps": base.trainer.max_steps,
                                       "batch_size": base.trainer.batch_size, "rows": rows})


if __name__ == "__main__":
    main()
