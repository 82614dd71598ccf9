"""``uniret train``: records -> (mining) -> (teacher scores) -> training -> (averaging) -> saved model.

Everything a run used is written under the output directory: ``config.yaml`` (resolved, with library
versions), ``train_records.jsonl``, ``dev_queries.json`` (the held-out dev split), ``train_log.jsonl``,
``checkpoints/``, ``model/`` (sentence-transformers format), ``train_result.json`` (and ``dev/`` with the
dev report when a dev split is evaluated, ``ood/`` with the out-of-domain reports of ``eval.ood`` before and
after training, ``interpolation/`` with each WiSE-FT alpha's reports) and ``run_state.json`` (the resolved config and the SHA-256 of the
training records, which a rerun checks before it resumes).

A rerun into the same directory resumes from the last checkpoint, or returns the saved summary of a
finished run, but only when the resolved config and the training records are those of the run that is
there; otherwise it stops with :class:`~uniret.train.trainer.ResumeMismatchError` before writing anything.
``overwrite=True`` removes the earlier run's outputs (only the files and folders listed in
:data:`RUN_OUTPUTS`; anything else in the directory is left alone) and starts afresh.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
import time
from pathlib import Path
from typing import Any

from uniret.config import save_config, to_dict
from uniret.data import BeirDataset, Qrels, load_beir
from uniret.runtime import library_versions, machine_description
from uniret.train.config import TeachersConfig, TrainConfig
from uniret.train.profiling import PROFILE
from uniret.train.records import TrainingRecord, read_records, records_from_beir, write_records
from uniret.train.trainer import (
    CHECKPOINTS,
    TRAIN_LOG,
    Callback,
    ResumeMismatchError,
    Trainer,
    checkpoint_dirs,
    config_differences,
    records_digest,
)

logger = logging.getLogger(__name__)

__all__ = ["ResumeMismatchError", "run_training", "RUN_OUTPUTS"]

RUN_STATE = "run_state.json"
RESULT = "train_result.json"
# Everything run_training writes into an output directory; overwrite=True removes these and nothing else
# (plus the leftovers of an interrupted atomic write of model/: .model.tmp-*, .model.old-*).
RUN_OUTPUTS = (RUN_STATE, "config.yaml", "dev_queries.json", "train_records.jsonl", "train_records.jsonl.tmp",
               TRAIN_LOG, CHECKPOINTS, "model", "dev", RESULT, "ood", "interpolation", PROFILE)


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


def dev_corpus(dev: BeirDataset, docs: int, seed: int) -> BeirDataset:
    """The dev split searched over ``docs`` documents (its judged ones plus random others, ``seed``), or over
    the whole corpus when ``docs`` <= 0 (``eval.dev_docs``)."""
    if docs <= 0:
        return dev
    return dev.sample(num_queries=len(dev.qrels("dev")), num_docs=docs, split="dev", seed=seed)


def evaluate_dev(model: Any, dev: BeirDataset, cfg: TrainConfig, output_dir: Path) -> dict[str, Any]:
    from uniret.eval.runner import evaluate_backend

    data = dev_corpus(dev, cfg.eval.dev_docs, cfg.data.holdout_seed)
    model.train(False)
    result = evaluate_backend(search_backend(cfg, model), data, split="dev", name="dev", output_dir=output_dir / "dev")
    return result.report


def check_guard_config(cfg: TrainConfig, has_dev: bool) -> None:
    """``eval.ood`` and ``interpolate`` need a searchable family; a list of alphas needs something to choose
    by (a dev split or ``eval.ood``). Checked before any mining or training."""
    from uniret import families

    if (cfg.eval.ood or cfg.interpolate is not None) and not families.get(cfg.model.kind).searchable:
        raise ValueError(f"eval.ood / interpolate evaluate retrieval, but model.kind {cfg.model.kind!r} is not a "
                         "searchable family: " + ", ".join(families.names(searchable=True)))
    if cfg.interpolate is not None and len(cfg.interpolate.alphas) > 1 and not (has_dev or cfg.eval.ood):
        raise ValueError(f"interpolate.alpha lists {len(cfg.interpolate.alphas)} alphas but there is nothing to "
                         "choose by: set data.holdout_queries (with eval.dev) or eval.ood")


def ood_folder_eval(cfg: TrainConfig, sets: dict[str, BeirDataset]) -> Any:
    from uniret.train.ood import evaluate_folder

    def run(model_dir: Path, reports: Path) -> dict[str, dict[str, float]]:
        return evaluate_folder(cfg.model.kind, model_dir, sets, split=cfg.eval.ood_split,
                               max_length=cfg.eval.ood_max_length, batch_size=cfg.eval.batch_size,
                               device=cfg.model.device, reports=reports)
    return run


def ood_before(cfg: TrainConfig, module: Any, sets: dict[str, BeirDataset], out: Path) -> dict[str, dict[str, float]]:
    """The base model (``module`` before any step) on the ``eval.ood`` sets, cached by content hash."""
    from uniret.train.ood import OOD_DIR, base_metrics

    scratch = out / OOD_DIR / "base-model"
    module.save(scratch)
    try:
        return base_metrics(cfg.model.kind, scratch, sets, split=cfg.eval.ood_split,
                            max_length=cfg.eval.ood_max_length, batch_size=cfg.eval.batch_size,
                            device=cfg.model.device, reports=out / OOD_DIR / "base")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def guard_after(cfg: TrainConfig, module: Any, model: Any, base_state: dict[str, Any] | None,
                sets: dict[str, BeirDataset], base_ood: dict[str, dict[str, float]], dev_view: BeirDataset | None,
                out: Path) -> dict[str, Any]:
    """After training: the WiSE-FT sweep (``interpolate``; leaves the chosen weights in ``module``) and the
    out-of-domain comparison. Returns the summary entries: ``interpolation``, ``ood``, ``dev`` (when the
    sweep already evaluated the final model on dev)."""
    from uniret.train.ood import (
        INTERPOLATION_DIR,
        OOD_DIR,
        clone_state,
        compare,
        report_markdown,
        sweep_interpolation,
    )

    entries: dict[str, Any] = {}
    after = None

    def dev_metrics(report_dir: Path) -> dict[str, float] | None:
        if dev_view is None or not cfg.eval.dev:
            return None
        metrics: dict[str, float] = evaluate_dev(model, dev_view, cfg, report_dir)["metrics"]
        return metrics

    if cfg.interpolate is not None:
        assert base_state is not None
        sweep = sweep_interpolation(
            module, base_state, clone_state(module), cfg.interpolate.alphas,
            evaluate_dev=dev_metrics,
            evaluate_ood=ood_folder_eval(cfg, sets), base_ood=base_ood, dev_metric=cfg.interpolate.metric,
            ood_metric=cfg.eval.ood_metric, max_ood_drop=cfg.interpolate.max_ood_drop, workdir=out / INTERPOLATION_DIR)
        chosen = next(c for c in sweep["candidates"] if c["alpha"] == sweep["chosen"])
        after = chosen["ood_metrics"] if sets else None
        if chosen["dev_metrics"] is not None:  # the final model's dev report is the chosen alpha's
            entries["dev"] = chosen["dev_metrics"]
            shutil.copytree(out / INTERPOLATION_DIR / f"alpha-{chosen['alpha']:g}" / "dev", out / "dev",
                            dirs_exist_ok=True)
        entries["interpolation"] = {k: v for k, v in sweep.items() if k != "candidates"} | {
            "candidates": [{k: v for k, v in c.items() if k not in ("dev_metrics", "ood_metrics")}
                           for c in sweep["candidates"]]}
    if sets:
        if after is None:
            model.train(False)
            scratch = out / OOD_DIR / "after-model"
            module.save(scratch)
            try:
                after = ood_folder_eval(cfg, sets)(scratch, out / OOD_DIR / "after")
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        table = compare(base_ood, after, cfg.eval.ood_metric)
        entries["ood"] = table
        from uniret.atomic import write_text_atomic

        (out / OOD_DIR).mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / OOD_DIR / "report.json", json.dumps(
            {"ood": table, "interpolation": entries.get("interpolation")}, indent=2) + "\n")
        write_text_atomic(out / OOD_DIR / "report.md", report_markdown(table, entries.get("interpolation")))
        for name, row in table.items():
            logger.info("out-of-domain %s: %s %.4f (base) -> %.4f (trained), %+.4f", name, row["metric"],
                        row["before"], row["after"], row["difference"])
    return entries


def run_training(cfg: TrainConfig, output_dir: str | Path, *, overwrite: bool = False) -> dict[str, Any]:
    """Run the whole recipe; returns the summary written to ``train_result.json``.

    Rerun into the same ``output_dir``, it resumes from the last checkpoint (or returns the saved summary of
    a finished run) if the resolved config and the training records match the earlier run's, and raises
    :class:`ResumeMismatchError` naming the differences otherwise. ``overwrite=True`` removes the earlier
    run's outputs first (see :data:`RUN_OUTPUTS`)."""
    import contextlib

    from uniret import distributed
    from uniret.atomic import check_output, output_lock

    out = Path(output_dir)
    if not (out.is_dir() and _earlier_run(out) is not None):  # an earlier run's directory is checked below
        data = Path(cfg.data.data)
        check_output(out, protect=[data] if data.exists() else [], what="--output-dir")
    owns_group = not distributed.is_distributed() and distributed.init_from_env()
    with output_lock(out) if distributed.is_main() else contextlib.nullcontext():
        out.mkdir(parents=True, exist_ok=True)
        summary = _run_training(cfg, out, overwrite=overwrite)
    if owns_group:  # on success only: after a failure the other ranks may be inside a collective (would hang)
        distributed.shutdown()
    return summary


def _normalised(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _file_sha256(path: Path) -> str | None:
    if not path.is_file():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _earlier_run(out: Path) -> dict[str, Any] | None:
    """The config and records hash of the run that trained in ``out`` (None: nothing was trained there)."""
    trained = bool(checkpoint_dirs(out)) or (out / RESULT).is_file() or (out / "model").exists()
    if not trained:
        return None
    if (out / RUN_STATE).is_file():
        return json.loads((out / RUN_STATE).read_text(encoding="utf-8"))
    if ckpts := checkpoint_dirs(out):  # written before run_state.json existed
        state = json.loads((ckpts[-1] / "trainer_state.json").read_text(encoding="utf-8"))
        if state.get("config"):
            return {"config": state["config"],
                    "records_sha256": state.get("records_sha256") or _file_sha256(out / "train_records.jsonl")}
    return {"config": None, "records_sha256": None}


def _mismatch(out: Path, problems: list[str]) -> ResumeMismatchError:
    return ResumeMismatchError(
        f"{out} holds another run, so it was neither resumed nor changed; what differs:\n  "
        + "\n  ".join(problems)
        + "\nTo train anyway, rerun with --overwrite (run_training(..., overwrite=True)), which removes that "
          "run's outputs, or choose a new --output-dir.")


def _check_config(out: Path, earlier: dict[str, Any] | None, config: dict[str, Any]) -> None:
    if earlier is None:
        return
    if earlier.get("config") is None:
        raise _mismatch(out, ["an earlier run's outputs (train_result.json / model/) with no run_state.json "
                              "or checkpoint to check the config and training records against"])
    if problems := config_differences(_with_current_defaults(earlier["config"]), config):
        raise _mismatch(out, problems)


def _with_current_defaults(old: dict[str, Any]) -> dict[str, Any]:
    """An earlier run's resolved config read through today's :class:`TrainConfig`, so that a setting added to
    uniret since then (absent there) takes its default, and only real differences stop a resume. A config that
    no longer parses is compared as it was written."""
    from uniret.config import from_dict

    try:
        return _normalised(to_dict(from_dict(TrainConfig, old)))
    except (TypeError, ValueError, KeyError):
        return old


def _check_records(out: Path, earlier: dict[str, Any] | None, digest: str) -> None:
    if earlier is None:
        return
    before = earlier.get("records_sha256")
    if before != digest:
        raise _mismatch(out, [f"training records (train_records.jsonl): sha256 {before or 'unknown'} != {digest} "
                              "(the data or the mining gave other records)"])


def remove_run_outputs(out: Path) -> list[str]:
    """Delete what an earlier run wrote into ``out`` (the names in :data:`RUN_OUTPUTS` and interrupted
    atomic writes of ``model/``); unknown files are kept. Returns the names removed."""
    removed = []
    names = list(RUN_OUTPUTS) + sorted(p.name for p in out.glob(".model.tmp-*")) \
        + sorted(p.name for p in out.glob(".model.old-*"))
    for name in names:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        else:
            continue
        removed.append(name)
    return removed


def _run_training(cfg: TrainConfig, out: Path, *, overwrite: bool = False) -> dict[str, Any]:
    from uniret import distributed
    from uniret.atomic import write_marker
    from uniret.train.soup import average_checkpoint_weights

    start = time.perf_counter()
    run_config = _normalised(to_dict(cfg))
    # Nothing is written before the earlier run (if any) is checked: a mismatch leaves the directory as it was.
    earlier = None if overwrite else _earlier_run(out)
    _check_config(out, earlier, run_config)
    dataset = load_beir(cfg.data.data)
    train_view, dev_view = holdout_split(dataset, cfg.data.split, cfg.data.holdout_queries, cfg.data.holdout_seed)
    check_guard_config(cfg, has_dev=dev_view is not None and cfg.eval.dev)
    ood_sets: dict[str, BeirDataset] = {}
    if cfg.eval.ood:
        from uniret.train.ood import resolve_ood

        ood_sets = resolve_ood(cfg.eval.ood, cfg.data.data, cfg.eval.ood_split)
    records, stats = build_records(cfg, train_view)
    digest = records_digest(records)
    _check_records(out, earlier, digest)
    if earlier is not None and cfg.trainer.resume and (out / RESULT).is_file():
        finished: dict[str, Any] = json.loads((out / RESULT).read_text(encoding="utf-8"))
        if not finished.get("time_limited"):
            logger.info("%s holds this run, finished (%s steps): returning its saved result without training; "
                        "pass overwrite (--overwrite) to train again", out, finished.get("steps"))
            return finished
        logger.info("%s holds this run, stopped by trainer.max_seconds after %s steps: resuming it from its last "
                    "checkpoint", out, finished.get("steps"))
    distributed.barrier()  # every rank has read the directory before it changes
    if distributed.is_main():
        if overwrite or (earlier is not None and not cfg.trainer.resume):
            if removed := remove_run_outputs(out):
                logger.info("removed the earlier run's outputs from %s: %s", out, ", ".join(removed))
        elif earlier is not None:
            logger.info("%s holds this run (same config and training records): resuming it", out)
        write_marker(out, "training-run")
        (out / RUN_STATE).write_text(json.dumps({"config": run_config, "records_sha256": digest,
                                                 "num_records": len(records)}, indent=2) + "\n",
                                     encoding="utf-8")
        save_config(cfg, out / "config.yaml",
                    extra={"versions": library_versions(), "machine": machine_description()})
        if dev_view is not None:
            (out / "dev_queries.json").write_text(json.dumps(sorted(dev_view.qrels("dev").judgements)),
                                                  encoding="utf-8")
        write_records(records, out / "train_records.jsonl")
    distributed.barrier()
    prep_seconds = time.perf_counter() - start
    model, module = build_model(cfg)
    base_state = None
    base_ood: dict[str, dict[str, float]] = {}
    if distributed.is_main():
        if cfg.interpolate is not None:
            from uniret.train.ood import clone_state

            base_state = clone_state(module)
        if ood_sets:
            model.train(False)
            base_ood = ood_before(cfg, module, ood_sets, out)
            model.train(True)
    distributed.barrier()
    from uniret import families

    extra = families.get(cfg.model.kind).hooks().callbacks
    callbacks: list[Callback] = list(extra(cfg, module)) if extra is not None else []
    remining = None
    if cfg.remine_every_epochs > 0:
        if search_backend(cfg, model) is None:
            raise ValueError(f"re-mining needs a model that can be searched; family {cfg.model.kind!r} has no "
                             "search backend")
        remining = ReMining(cfg, train_view, cfg.remine_every_epochs)
        callbacks.append(remining)
    trainer = Trainer(module, records, cfg.trainer, out, callbacks=callbacks, run_config=run_config)
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
    if cfg.model.inference_max_length is not None:  # dev, WiSE-FT and the saved model: the inference length
        model.set_max_length(cfg.model.inference_max_length)
        logger.info("trained at %d tokens; evaluated and saved at %d", cfg.model.max_length,
                    cfg.model.inference_max_length)
    summary: dict[str, Any] = {
        "steps": result.steps, "epochs": result.epochs, "train_seconds": result.seconds,
        "time_limited": result.time_limited,
        "prep_seconds": prep_seconds, "examples_per_second": result.examples_per_second,
        "final_loss": result.history[-1]["loss"] if result.history else _last_logged_loss(out), "stats": stats,
        "averaged_checkpoints": averaged, "remined": remining.history if remining is not None else [],
    }
    if distributed.is_main():
        model.train(False)
        guard = guard_after(cfg, module, model, base_state, ood_sets, base_ood, dev_view, out) \
            if (ood_sets or cfg.interpolate is not None) else {}
        module.save(out / "model")
        if "dev" in guard:
            summary["dev"] = guard.pop("dev")
        elif dev_view is not None and cfg.eval.dev and search_backend(cfg, model) is not None:
            summary["dev"] = evaluate_dev(model, dev_view, cfg, out)["metrics"]
        summary.update(guard)
        summary["total_seconds"] = time.perf_counter() - start
        (out / "train_result.json").write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    distributed.barrier()
    return summary


def _last_logged_loss(out: Path) -> float | None:
    """The last step's loss from ``train_log.jsonl`` (a run resumed from its final checkpoint trains no step)."""
    path = out / TRAIN_LOG
    if not path.is_file():
        return None
    lines = path.read_text(encoding="utf-8").splitlines()
    return json.loads(lines[-1]).get("loss") if lines else None
