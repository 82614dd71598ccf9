"""``uniret train``: records -> (mining) -> (teacher scores) -> training -> (averaging) -> saved model.

Everything a run used is written under the output directory: ``config.yaml`` (resolved, with library
versions), ``train_records.jsonl``, ``dev_queries.json`` (the held-out dev split), ``train_log.jsonl``,
``checkpoints/``, ``model/`` (sentence-transformers format) and ``train_result.json`` (and
``dev_report.json`` when a dev split is evaluated).
"""

from __future__ import annotations

import json
import logging
import random
import time
from pathlib import Path
from typing import Any

from uniret.config import save_config, to_dict
from uniret.data import BeirDataset, Qrels, load_beir
from uniret.runtime import library_versions, machine_description
from uniret.train.config import TeachersConfig, TrainConfig
from uniret.train.records import TrainingRecord, read_records, records_from_beir, write_records
from uniret.train.trainer import Callback, Trainer, checkpoint_dirs

logger = logging.getLogger(__name__)


def holdout_split(dataset: BeirDataset, split: str, n: int, seed: int) -> tuple[BeirDataset, BeirDataset | None]:
    """Carve ``n`` judged queries of ``split`` into a ``dev`` split. Returns (training view, dev view);
    both share the corpus and queries, and neither sees the other's judgements."""
    qrels = dataset.qrels(split)
    if n <= 0:
        return dataset, None
    qids = sorted(qrels.judgements)
    if n >= len(qids):
        raise ValueError(f"cannot hold out {n} of the {len(qids)} judged queries of split {split!r}")
    dev_qids = set(random.Random(seed).sample(qids, n))
    train_q = Qrels({q: d for q, d in qrels.judgements.items() if q not in dev_qids}, split=split, source=qrels.source)
    dev_q = Qrels({q: d for q, d in qrels.judgements.items() if q in dev_qids}, split="dev", source=qrels.source)
    train_view = BeirDataset(dataset.root, dataset.corpus, dataset.queries, {}, name=dataset.name,
                             qrels={split: train_q})
    dev_view = BeirDataset(dataset.root, dataset.corpus, dataset.queries, {}, name=f"{dataset.name}-dev",
                           qrels={"dev": dev_q})
    return train_view, dev_view


def build_teacher(cfg: TeachersConfig, dataset: BeirDataset, device: str) -> Any:
    """The configured teachers as one :class:`~uniret.train.teachers.EnsembleTeacher` (per-query
    normalisation, weighted mean)."""
    from uniret.train.teachers import EnsembleTeacher
    from uniret.train.teachers import build_teacher as build_one

    members = [build_one(f"{s.kind}:{s.model}" if s.model else s.kind, corpus=dataset.corpus, device=device)
               for s in cfg.teachers]
    return EnsembleTeacher(members, weights=[s.weight for s in cfg.teachers], normalization=cfg.normalization)


def build_records(cfg: TrainConfig, dataset: BeirDataset) -> tuple[list[TrainingRecord], dict[str, Any]]:
    stats: dict[str, Any] = {}
    if cfg.data.train_file:
        records = read_records(cfg.data.train_file)
    elif cfg.mining is not None:
        from uniret.train.mining import mine

        records, stats["mining"] = mine(dataset, cfg.mining, split=cfg.data.split)
    else:
        records = list(records_from_beir(dataset, cfg.data.split))
    if cfg.data.unsupervised_pairs_per_doc > 0:
        from uniret.train.unsupervised import cropping_pairs

        crops = list(cropping_pairs(dataset.corpus, pairs_per_doc=cfg.data.unsupervised_pairs_per_doc,
                                    seed=cfg.trainer.seed))
        stats["unsupervised_pairs"] = len(crops)
        records += crops
    if cfg.teachers is not None and cfg.teachers.teachers:
        from uniret.train.teachers import add_teacher_scores

        start = time.perf_counter()
        teacher = build_teacher(cfg.teachers, dataset, cfg.model.device)
        records = add_teacher_scores(records, teacher)
        stats["teacher_seconds"] = time.perf_counter() - start
    stats["records"] = len(records)
    return records, stats


def build_model(cfg: TrainConfig) -> tuple[Any, Any]:
    """The model and the training module of ``cfg.model.kind``, from its family's training hooks."""
    from uniret import families

    return families.get(cfg.model.kind).hooks().build(cfg)


def search_backend(cfg: TrainConfig, model: Any) -> Any:
    """An empty search backend over the model being trained (dev evaluation, re-mining), or None when its
    family has none."""
    from uniret import families

    make = families.get(cfg.model.kind).hooks().search_backend
    return make(model) if make is not None else None


class ReMining(Callback):
    """Iterative re-mining (ANCE / UDR): every ``every`` epochs, index the corpus with the model being
    trained and mine fresh hard negatives with it (teacher scores are recomputed if configured)."""

    def __init__(self, cfg: TrainConfig, dataset: BeirDataset, every: int) -> None:
        self.cfg = cfg
        self.dataset = dataset
        self.every = every
        self.history: list[dict[str, Any]] = []

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        if epoch == 0 or epoch % self.every:
            return
        from dataclasses import replace

        from uniret.train.mining import mine

        model = trainer.module.embedder  # type: ignore[attr-defined]
        model.train(False)
        backend = search_backend(self.cfg, model)
        backend.index(self.dataset.corpus)
        mining = replace(self.cfg.mining) if self.cfg.mining is not None else None
        if mining is None:
            from uniret.train.mining import MiningConfig

            mining = MiningConfig()
        records, stats = mine(self.dataset, mining, split=self.cfg.data.split, backend=backend)
        if self.cfg.teachers is not None and self.cfg.teachers.teachers:
            from uniret.train.teachers import add_teacher_scores

            records = add_teacher_scores(records, build_teacher(self.cfg.teachers, self.dataset, self.cfg.model.device))
        mined_ids = {r.query_id for r in records}
        kept = [r for r in trainer.records if r.query_id not in mined_ids]  # e.g. cropped pairs, other sources
        logger.info("epoch %d: re-mined %d records with the current model (%d negatives; removed %s); kept %d "
                    "other records", epoch, len(records), stats["negatives"], stats["removed"], len(kept))
        self.history.append({"epoch": epoch, "records": len(records), "negatives": stats["negatives"],
                             "removed": stats["removed"], "kept_other_records": len(kept)})
        trainer.records = records + kept
        model.train(True)


def evaluate_dev(model: Any, dev: BeirDataset, cfg: TrainConfig, output_dir: Path) -> dict[str, Any]:
    from uniret.eval.runner import evaluate_backend

    data = dev
    if cfg.eval.dev_docs > 0:
        data = dev.sample(num_queries=len(dev.qrels("dev")), num_docs=cfg.eval.dev_docs, split="dev",
                          seed=cfg.data.holdout_seed)
    model.train(False)
    result = evaluate_backend(search_backend(cfg, model), data, split="dev", name="dev", output_dir=output_dir / "dev")
    return result.report


def run_training(cfg: TrainConfig, output_dir: str | Path) -> dict[str, Any]:
    """Run the whole recipe; returns the summary written to ``train_result.json``."""
    from uniret.train import distributed

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    owns_group = not distributed.is_distributed() and distributed.init_from_env()
    summary = _run_training(cfg, out)
    if owns_group:  # on success only: after a failure the other ranks may be inside a collective (would hang)
        distributed.shutdown()
    return summary


def _run_training(cfg: TrainConfig, out: Path) -> dict[str, Any]:
    from uniret.train import distributed
    from uniret.train.soup import average_checkpoint_weights

    start = time.perf_counter()
    save_config(cfg, out / "config.yaml", extra={"versions": library_versions(), "machine": machine_description()})
    dataset = load_beir(cfg.data.data)
    train_view, dev_view = holdout_split(dataset, cfg.data.split, cfg.data.holdout_queries, cfg.data.holdout_seed)
    if dev_view is not None:
        (out / "dev_queries.json").write_text(json.dumps(sorted(dev_view.qrels("dev").judgements)), encoding="utf-8")
    records, stats = build_records(cfg, train_view)
    write_records(records, out / "train_records.jsonl")
    prep_seconds = time.perf_counter() - start
    model, module = build_model(cfg)
    callbacks: list[Callback] = []
    remining = None
    if cfg.remine_every_epochs > 0:
        if search_backend(cfg, model) is None:
            raise ValueError(f"re-mining needs a model that can be searched; family {cfg.model.kind!r} has no "
                             "search backend")
        remining = ReMining(cfg, train_view, cfg.remine_every_epochs)
        callbacks.append(remining)
    trainer = Trainer(module, records, cfg.trainer, out, callbacks=callbacks, run_config=to_dict(cfg))
    result = trainer.train()
    averaged: list[str] = []
    if cfg.average_last_checkpoints > 1:
        ckpts = checkpoint_dirs(out)[-cfg.average_last_checkpoints:]
        if len(ckpts) >= 2:
            module.load_state_dict(average_checkpoint_weights(ckpts))
            averaged = [c.name for c in ckpts]
            logger.info("final model = mean of %s", averaged)
        else:
            logger.warning("average_last_checkpoints=%d but only %d checkpoint(s) kept: no averaging (raise "
                           "trainer.keep_checkpoints or save more often)", cfg.average_last_checkpoints, len(ckpts))
    summary: dict[str, Any] = {
        "steps": result.steps, "epochs": result.epochs, "train_seconds": result.seconds,
        "prep_seconds": prep_seconds, "examples_per_second": result.examples_per_second,
        "final_loss": result.history[-1]["loss"] if result.history else None, "stats": stats,
        "averaged_checkpoints": averaged, "remined": remining.history if remining is not None else [],
    }
    if distributed.is_main():
        model.train(False)
        module.save(out / "model")
        if dev_view is not None and cfg.eval.dev and search_backend(cfg, model) is not None:
            summary["dev"] = evaluate_dev(model, dev_view, cfg, out)["metrics"]
        summary["total_seconds"] = time.perf_counter() - start
        (out / "train_result.json").write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    distributed.barrier()
    return summary
