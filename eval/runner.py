"""Evaluation runner: data set + search backend -> run -> metrics -> report directory.

The runner takes any object with the search protocol (``index(corpus)``, ``search(queries, k)``,
``describe()``); it never builds models or indexes itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uniret.data import BeirDataset, Run
from uniret.eval.metrics import DEFAULT_METRICS, STANDARD_METRICS, evaluate
from uniret.eval.report import write_json, write_markdown_report
from uniret.protocols import SearchBackend
from uniret.runtime import library_versions, machine_description
from uniret.scores import TIE_BREAKING
from uniret.trec import write_trec_run

logger = logging.getLogger(__name__)


@dataclass
class EvalResult:
    name: str
    metrics: dict[str, float]
    per_query: dict[str, dict[str, float]]
    run: Run
    report: dict[str, Any] = field(default_factory=dict)


def evaluate_backend(
    backend: SearchBackend,
    dataset: BeirDataset,
    *,
    split: str = "test",
    name: str | None = None,
    build_index: bool = True,
    depth: int = 1000,
    metrics: Sequence[str] = STANDARD_METRICS,
    ignore_identical_ids: bool = True,
    output_dir: str | Path | None = None,
    config: dict[str, Any] | None = None,
) -> EvalResult:
    """Index the corpus (unless ``build_index`` is False), search the split's queries to ``depth``,
    score the run, and write ``report.json``, ``report.md`` and ``run.trec`` to ``output_dir``."""
    missing = [m for m in DEFAULT_METRICS if m not in metrics]
    metrics = [*metrics, *missing]
    queries = dataset.split_queries(split)
    qrels = dataset.qrels(split)
    name = str(name or getattr(backend, "kind", "run"))
    index_seconds = None
    if build_index:
        start = time.perf_counter()
        backend.index(dataset.corpus)
        index_seconds = time.perf_counter() - start
    start = time.perf_counter()
    run = backend.search(queries, k=depth)
    search_seconds = time.perf_counter() - start
    means, per_query = evaluate(qrels.judgements, run, metrics, ignore_identical_ids=ignore_identical_ids,
                                per_query=True)
    report = make_report(name, dataset, split, len(queries), means, backend.describe(),
                         timings={"index_seconds": index_seconds, "search_seconds": search_seconds,
                                  "qps": len(queries) / search_seconds if search_seconds > 0 else None},
                         settings={"depth": depth, "ignore_identical_ids": ignore_identical_ids,
                                   "tie_breaking": TIE_BREAKING}, config=config)
    if output_dir is not None:
        write_report_files(report, run, output_dir, per_query=per_query)
    logger.info("%s on %s/%s: %s", name, dataset.name, split,
                ", ".join(f"{k}={means[k]:.4f}" for k in DEFAULT_METRICS))
    return EvalResult(name=name, metrics=means, per_query=per_query, run=run, report=report)


def make_report(name: str, dataset: BeirDataset, split: str, num_queries: int, metrics: dict[str, float],
                retriever: dict[str, Any], *, timings: dict[str, Any], settings: dict[str, Any],
                config: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """The ``report.json`` of one evaluation (every evaluator writes these keys)."""
    return {
        "name": name,
        "dataset": {"name": dataset.name, "path": str(dataset.root), "split": split, "num_queries": num_queries,
                    "num_docs": len(dataset.corpus), "corpus_fingerprint": dataset.corpus.fingerprint},
        "metrics": metrics,
        "timings": timings,
        "retriever": retriever,
        "settings": settings,
        **extra,
        "config": config or {},
        "versions": library_versions(),
        "machine": machine_description(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_report_files(report: dict[str, Any], run: Mapping[str, Mapping[str, float]], output_dir: str | Path, *,
                       per_query: Mapping[str, Any] | None = None) -> None:
    """``report.json``, ``report.md``, ``run.trec`` and (when given) ``per_query.json`` in ``output_dir``."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(report, out / "report.json")
    write_markdown_report(report, out / "report.md")
    write_trec_run(run, out / "run.trec", tag=report["name"])
    if per_query is not None:
        write_json(per_query, out / "per_query.json")
    logger.info("wrote report to %s", out)
