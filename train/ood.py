"""The out-of-domain guard of ``uniret train`` (``eval.ood``) and WiSE-FT model selection (``interpolate``).

A recipe names BEIR collections it is never trained on. The base model is evaluated on each before training
and the trained model after, on the full ``eval.ood_split`` at ``eval.ood_max_length`` through the same path
as ``uniret eval --retriever KIND --model FOLDER --max-length L`` (the model is saved to a folder first), so
the numbers are those a user measures. The base model's numbers are cached under ``$UNIRET_CACHE/ood`` keyed
by the saved base folder's content hash, the data set's fingerprint (corpus, queries and judgements of the
split) and the settings, so a rerun does not re-encode the collections.

With ``interpolate`` the trained weights are mixed with the base weights (:mod:`uniret.train.soup`) for each
alpha; every alpha is evaluated on the dev split and the out-of-domain sets, and
:func:`~uniret.train.soup.select_alpha` chooses one. The test split of the training data is never used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from uniret.assets import cache_dir, resolve_dataset
from uniret.data import BeirDataset, load_beir

logger = logging.getLogger(__name__)

CACHE_VERSION = 1
OOD_DIR = "ood"  # reports under the run directory: ood/base/<name>, ood/after/<name>, ood/report.md
INTERPOLATION_DIR = "interpolation"


def resolve_ood(names: list[str], training_data: str | Path, split: str) -> dict[str, BeirDataset]:
    """Load the ``eval.ood`` collections by name (packaged) or path; refuse the training data itself (same
    folder or same corpus), duplicates and collections without judgements for ``split``."""
    train_root = resolve_dataset(training_data).resolve()
    train_fp: str | None = None
    out: dict[str, BeirDataset] = {}
    for i, name in enumerate(names):
        where = f"eval.ood[{i}]"
        try:
            root = resolve_dataset(name).resolve()
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{where}: {e}") from None
        if root == train_root:
            raise ValueError(f"{where}: {name!r} is the training data ({train_root}); out-of-domain sets must be "
                             "collections the model is not trained on")
        label = Path(name).name if Path(name).is_dir() else str(name)
        if label in out:
            raise ValueError(f"{where}: {name!r} is named twice")
        dataset = load_beir(root)
        if split not in dataset.splits:
            raise ValueError(f"{where}: {root} has no qrels for split {split!r} (eval.ood_split); it has "
                             + (", ".join(dataset.splits) or "none"))
        if train_fp is None:
            train_fp = load_beir(train_root).corpus.fingerprint
        if dataset.corpus.fingerprint == train_fp:
            raise ValueError(f"{where}: {root} holds the training corpus (fingerprint {train_fp}); out-of-domain "
                             "sets must be collections the model is not trained on")
        out[label] = dataset
    return out


def dataset_fingerprint(dataset: BeirDataset, split: str) -> str:
    """The corpus fingerprint plus a digest of the split's queries and judgements."""
    qrels = dataset.qrels(split).judgements
    queries = dataset.split_queries(split)
    digest = hashlib.sha256(json.dumps([sorted(queries.items()), sorted((q, sorted(d.items()))
                                                                         for q, d in qrels.items())]).encode())
    return f"{dataset.corpus.fingerprint}-{digest.hexdigest()[:16]}"


def evaluate_folder(kind: str, model_dir: Path, datasets: dict[str, BeirDataset], *, split: str, max_length: int,
                    batch_size: int, device: str, reports: Path) -> dict[str, dict[str, float]]:
    """``uniret eval --retriever KIND --model MODEL_DIR --max-length L`` on each data set; {name: metrics}."""
    from uniret.commands import run_eval
    from uniret.families import RetrieverConfig

    cfg = RetrieverConfig(kind=kind, model=str(model_dir), max_length=max_length, batch_size=batch_size,
                          device=device)
    metrics = {}
    for name, dataset in datasets.items():
        result = run_eval(dataset, cfg, reports / name, split=split, model_given=True, name=f"{kind}:{name}")
        metrics[name] = dict(result.metrics)
        logger.info("out-of-domain %s (%s): %s %.4f", name, model_dir.name, "ndcg@10",
                    metrics[name].get("ndcg@10", float("nan")))
    return metrics


def folder_hash(path: Path) -> str:
    """The saved model folder's content hash (:func:`uniret.assets.content_hash`, which leaves out uniret's
    output marker)."""
    from uniret.assets import content_hash

    return content_hash(path)


def base_metrics(kind: str, base_dir: Path, datasets: dict[str, BeirDataset], *, split: str, max_length: int,
                 batch_size: int, device: str, reports: Path) -> dict[str, dict[str, float]]:
    """The base model's out-of-domain metrics, from the cache when this folder (content hash), data set
    (fingerprint) and settings were evaluated before."""
    model_hash = folder_hash(base_dir)
    out: dict[str, dict[str, float]] = {}
    todo: dict[str, BeirDataset] = {}
    paths: dict[str, Path] = {}
    for name, dataset in datasets.items():
        key = json.dumps({"v": CACHE_VERSION, "kind": kind, "model": model_hash, "data": dataset_fingerprint(dataset,
                          split), "split": split, "max_length": max_length}, sort_keys=True)
        path = cache_dir("ood") / (hashlib.sha256(key.encode()).hexdigest()[:24] + ".json")
        paths[name] = path
        if path.is_file():
            try:
                cached = json.loads(path.read_text(encoding="utf-8"))
                if cached.get("key") == key:
                    out[name] = cached["metrics"]
                    logger.info("out-of-domain %s (base): cached in %s", name, path)
                    continue
            except (json.JSONDecodeError, KeyError):
                logger.warning("ignoring an unreadable out-of-domain cache file %s", path)
        todo[name] = dataset
    if todo:
        fresh = evaluate_folder(kind, base_dir, todo, split=split, max_length=max_length, batch_size=batch_size,
                                device=device, reports=reports)
        from uniret.atomic import write_text_atomic

        for name, metrics in fresh.items():
            key = json.dumps({"v": CACHE_VERSION, "kind": kind, "model": model_hash,
                              "data": dataset_fingerprint(todo[name], split), "split": split,
                              "max_length": max_length}, sort_keys=True)
            write_text_atomic(paths[name], json.dumps({"key": key, "metrics": metrics}, indent=2) + "\n")
            out[name] = metrics
    return {name: out[name] for name in datasets}


def compare(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]],
            metric: str) -> dict[str, dict[str, Any]]:
    """Per data set: ``{metric, before, after, difference (after - before), before_metrics, after_metrics}``."""
    table = {}
    for name in before:
        if metric not in before[name]:
            raise KeyError(f"eval.ood_metric {metric!r} is not among the evaluated metrics "
                           f"({', '.join(sorted(before[name]))})")
        b, a = before[name][metric], after[name][metric]
        table[name] = {"metric": metric, "before": b, "after": a, "difference": a - b,
                       "before_metrics": before[name], "after_metrics": after[name]}
    return table


def report_markdown(table: dict[str, dict[str, Any]], interpolation: dict[str, Any] | None = None) -> str:
    lines = ["# Out-of-domain guard", "", "| collection | metric | base model | trained model | difference |",
             "|---|---|---:|---:|---:|"]
    for name, row in table.items():
        lines.append(f"| {name} | {row['metric']} | {row['before']:.4f} | {row['after']:.4f} | "
                     f"{row['difference']:+.4f} |")
    if interpolation:
        names = list(table)
        lines += ["", f"WiSE-FT: alpha {interpolation['chosen']} chosen: {interpolation['rule']}", "",
                  "| alpha | dev | " + " | ".join(f"{n} drop" for n in names) + " |",
                  "|---:|---:|" + "---:|" * len(names)]
        for c in interpolation["candidates"]:
            dev = "-" if c["dev"] is None else f"{c['dev']:.4f}"
            lines.append(f"| {c['alpha']} | {dev} | "
                         + " | ".join(f"{c['ood_drops'][n]:+.4f}" for n in names) + " |")
    return "\n".join(lines) + "\n"


def sweep_interpolation(module: Any, base_state: dict[str, torch.Tensor], trained_state: dict[str, torch.Tensor],
                        alphas: list[float], *, evaluate_dev: Callable[[Path], dict[str, float] | None],
                        evaluate_ood: Callable[[Path, Path], dict[str, dict[str, float]]],
                        base_ood: dict[str, dict[str, float]], dev_metric: str, ood_metric: str,
                        max_ood_drop: float, workdir: Path) -> dict[str, Any]:
    """For each alpha: load ``alpha * trained + (1 - alpha) * base`` into ``module``, score it on dev
    (``evaluate_dev(alpha_dir)``, reports under ``alpha_dir/dev``) and out of domain
    (``evaluate_ood(model_dir, report_dir)`` on the module saved to a scratch folder), then choose alpha with :func:`~uniret.train.soup.select_alpha` and leave the
    chosen weights loaded. Returns ``{chosen, rule, dev_metric, ood_metric, max_ood_drop, candidates}``;
    each candidate is ``{alpha, dev, ood, ood_drops, dev_metrics, ood_metrics}``."""
    from uniret.train.soup import interpolate_state_dicts, select_alpha

    candidates = []
    for alpha in alphas:
        tag = f"alpha-{alpha:g}"
        module.load_state_dict(interpolate_state_dicts(trained_state, base_state, alpha))
        dev_metrics = evaluate_dev(workdir / tag)
        dev = None if dev_metrics is None else dev_metrics[dev_metric]
        ood: dict[str, dict[str, float]] = {}
        if base_ood:
            scratch = workdir / tag / "model"
            module.save(scratch)
            try:
                ood = evaluate_ood(scratch, workdir / tag / "ood")
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        drops = {n: base_ood[n][ood_metric] - ood[n][ood_metric] for n in base_ood}
        candidates.append({"alpha": alpha, "dev": dev, "ood": {n: ood[n][ood_metric] for n in ood},
                           "ood_drops": drops, "dev_metrics": dev_metrics, "ood_metrics": ood})
        logger.info("WiSE-FT alpha %g: dev %s, out-of-domain drops %s", alpha,
                    "-" if dev is None else f"{dev:.4f}", {n: round(d, 4) for n, d in drops.items()})
    chosen, rule = select_alpha(candidates, max_ood_drop=max_ood_drop)
    module.load_state_dict(interpolate_state_dicts(trained_state, base_state, chosen))
    logger.info("WiSE-FT: alpha %g (%s)", chosen, rule)
    return {"chosen": chosen, "rule": rule, "dev_metric": dev_metric, "ood_metric": ood_metric,
            "max_ood_drop": max_ood_drop,
            "candidates": candidates}


def clone_state(module: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}
