"""Evaluation through MTEB (``mteb`` >= 2, the ``eval`` extra), offline.

- :func:`beir_task`: any local BEIR data set (a :class:`~uniret.data.BeirDataset`) as an mteb retrieval task; its
  ``load_data`` hands mteb the corpus, queries and qrels already in memory, so nothing is downloaded.
- :class:`BackendSearch`: any uniret search backend (any registered family: BM25, dense, sparse, ...) as an mteb
  ``SearchProtocol`` model: mteb passes the corpus to ``index`` and the queries to ``search``; uniret's backend
  does the work and mteb computes the metrics.
- :class:`DenseEncoderModel`: a dense encoder (``encode_queries`` / ``encode_documents`` -> arrays) as an mteb
  encoder, so that mteb also does the search itself (exact cosine or dot product): an evaluation independent of
  uniret's search and metrics.
- :func:`evaluate_with_mteb`: runs ``mteb.evaluate`` (no result cache written) and returns uniret's metric keys
  (``ndcg@10``, ``recall@100``, ``mrr@10``, ``map@100``, ...) next to mteb's raw scores.

This module imports only the kernel and mteb: backends and encoders are duck-typed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from uniret.data import BeirDataset, Corpus, Document
from uniret.errors import MissingExtraError

logger = logging.getLogger(__name__)

# uniret metric key -> mteb score key
METRIC_KEYS = {
    "ndcg@1": "ndcg_at_1", "ndcg@3": "ndcg_at_3", "ndcg@5": "ndcg_at_5", "ndcg@10": "ndcg_at_10",
    "ndcg@100": "ndcg_at_100", "recall@10": "recall_at_10", "recall@100": "recall_at_100",
    "recall@1000": "recall_at_1000", "mrr@10": "mrr_at_10", "map@10": "map_at_10", "map@100": "map_at_100",
    "p@1": "precision_at_1", "p@10": "precision_at_10",
}


def _mteb() -> Any:
    try:
        import mteb
    except ImportError as e:
        raise MissingExtraError("mteb", "eval") from e
    return mteb


def _model_meta(name: str, similarity: str | None = None) -> Any:
    from mteb.models import ModelMeta

    return ModelMeta.create_empty({"name": f"uniret/{name}", "revision": "local", "similarity_fn_name": similarity,
                                   "framework": ["PyTorch"]})


def beir_task(dataset: BeirDataset, split: str = "test", name: str | None = None) -> Any:
    """An mteb retrieval task over ``dataset``'s ``split`` (judged queries only, as mteb keeps them)."""
    _mteb()
    from datasets import Dataset
    from mteb.abstasks import AbsTaskRetrieval
    from mteb.abstasks.task_metadata import TaskMetadata

    task_name = name or f"UniretLocal{''.join(p.capitalize() for p in dataset.name.replace('_', '-').split('-'))}"
    judgements = dataset.qrels(split).judgements
    queries = dataset.split_queries(split)
    metadata = TaskMetadata(
        name=task_name, description=f"local BEIR directory {dataset.root} ({split})",
        dataset={"path": str(dataset.root), "revision": "local"}, type="Retrieval", category="t2t",
        eval_splits=[split], eval_langs=["eng-Latn"], main_score="ndcg_at_10",
    )

    class LocalBeirTask(AbsTaskRetrieval):
        def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
            if self.data_loaded:
                return
            docs = list(dataset.corpus)
            corpus = Dataset.from_dict({"id": [d.id for d in docs], "title": [d.title for d in docs],
                                        "text": [d.text for d in docs]})
            qids = [q for q in queries if judgements.get(q)]
            qs = Dataset.from_dict({"id": qids, "text": [queries[q] for q in qids]})
            rel = {q: {d: int(g) for d, g in judgements[q].items()} for q in qids}
            self.dataset = {"default": {split: {"corpus": corpus, "queries": qs, "relevant_docs": rel,
                                                "top_ranked": None}}}
            self.data_loaded = True

    LocalBeirTask.metadata = metadata
    return LocalBeirTask()


class BackendSearch:
    """A uniret search backend as an mteb ``SearchProtocol`` model."""

    def __init__(self, backend: Any, name: str | None = None) -> None:
        self.backend = backend
        self.name = name or str(getattr(backend, "kind", "backend"))
        self.last_run: dict[str, dict[str, float]] = {}

    @property
    def mteb_model_meta(self) -> Any:
        return _model_meta(self.name)

    def index(self, corpus: Any, *, task_metadata: Any = None, hf_split: str = "", hf_subset: str = "",
              encode_kwargs: Any = None, num_proc: int | None = None, **kwargs: Any) -> None:
        titles = corpus["title"] if "title" in corpus.column_names else [""] * len(corpus)
        docs = [Document(id=str(i), text=t or "", title=ti or "")
                for i, t, ti in zip(corpus["id"], corpus["text"], titles, strict=True)]
        self.backend.index(Corpus.from_documents(docs, source=f"mteb:{getattr(task_metadata, 'name', '')}"))

    def search(self, queries: Any, *, task_metadata: Any = None, hf_split: str = "", hf_subset: str = "",
               top_k: int = 1000, encode_kwargs: Any = None, top_ranked: Any = None, num_proc: int | None = None,
               **kwargs: Any) -> dict[str, dict[str, float]]:
        qs = {str(q): str(t) for q, t in zip(queries["id"], queries["text"], strict=True)}
        run = self.backend.search(qs, k=top_k)
        self.last_run = {q: {d: float(s) for d, s in hits.items()} for q, hits in run.items()}
        return self.last_run


class DenseEncoderModel:
    """A dense encoder as an mteb encoder: mteb embeds through it and searches itself. ``similarity`` is read
    from the encoder's identity (cosine or dot)."""

    def __init__(self, encoder: Any, name: str | None = None) -> None:
        self.encoder = encoder
        ident = dict(getattr(encoder, "identity", {}) or {})
        self.name = name or str(ident.get("name", "dense"))
        self.similarity_fn = "dot" if ident.get("similarity") == "dot" else "cosine"

    @property
    def mteb_model_meta(self) -> Any:
        return _model_meta(self.name, self.similarity_fn)

    def encode(self, inputs: Any, *, task_metadata: Any = None, hf_split: str = "", hf_subset: str = "",
               prompt_type: Any = None, **kwargs: Any) -> np.ndarray:
        texts = [t for batch in inputs for t in batch["text"]]
        is_query = prompt_type is not None and getattr(prompt_type, "value", prompt_type) == "query"
        out = self.encoder.encode_queries(texts) if is_query else self.encoder.encode_documents(texts)
        return np.asarray(out, dtype=np.float32)

    def similarity(self, a: Any, b: Any) -> Any:
        import torch

        a, b = torch.as_tensor(np.asarray(a)), torch.as_tensor(np.asarray(b))
        if self.similarity_fn == "cosine":
            a, b = torch.nn.functional.normalize(a, dim=-1), torch.nn.functional.normalize(b, dim=-1)
        return a @ b.T

    def similarity_pairwise(self, a: Any, b: Any) -> Any:
        import torch

        a, b = torch.as_tensor(np.asarray(a)), torch.as_tensor(np.asarray(b))
        if self.similarity_fn == "cosine":
            a, b = torch.nn.functional.normalize(a, dim=-1), torch.nn.functional.normalize(b, dim=-1)
        return (a * b).sum(-1)


def to_uniret_metrics(scores: Mapping[str, Any]) -> dict[str, float]:
    """mteb's score dict in uniret's metric keys (only the metrics both compute)."""
    return {ours: float(scores[theirs]) for ours, theirs in METRIC_KEYS.items() if theirs in scores}


def evaluate_with_mteb(model: Any, dataset: BeirDataset, *, split: str = "test",
                       encode_kwargs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Run ``mteb.evaluate`` with ``model`` (a :class:`BackendSearch`, :class:`DenseEncoderModel` or any mteb
    model) on ``dataset``'s ``split``; returns ``{"metrics": uniret keys, "mteb_scores": raw, "task": name}``.
    No mteb result cache is written."""
    mteb = _mteb()
    task = beir_task(dataset, split)
    result = mteb.evaluate(model, task, cache=None, encode_kwargs=dict(encode_kwargs or {}),
                           show_progress_bar=logger.isEnabledFor(logging.INFO), co2_tracker=False)
    task_results = list(result.task_results)
    if len(task_results) != 1:
        raise RuntimeError(f"mteb returned {len(task_results)} task results; expected 1")
    scores: Sequence[Mapping[str, Any]] = task_results[0].scores[split]
    raw = dict(scores[0])
    return {"metrics": to_uniret_metrics(raw), "mteb_scores": raw, "task": task.metadata.name,
            "depth": getattr(task, "_top_k", None),
            "mteb_version": mteb.__version__}


def evaluate_backend_mteb(backend: Any, dataset: BeirDataset, *, split: str = "test", name: str | None = None,
                          output_dir: str | Path | None = None,
                          config: dict[str, Any] | None = None) -> Any:
    """Like :func:`uniret.eval.runner.evaluate_backend`, with mteb indexing, searching (through the backend) and
    scoring: the same ``report.json`` keys (``evaluator`` says ``mteb``), ``report.md`` and ``run.trec``; mteb
    computes no per-query table, so there is no ``per_query.json``."""
    import time

    from uniret.eval.runner import EvalResult, make_report, write_report_files

    name = str(name or getattr(backend, "kind", "run"))
    model = BackendSearch(backend, name)
    start = time.perf_counter()
    result = evaluate_with_mteb(model, dataset, split=split)
    seconds = time.perf_counter() - start
    report = make_report(name, dataset, split, len(dataset.split_queries(split)), result["metrics"],
                         backend.describe(),
                         timings={"index_seconds": None, "search_seconds": None, "total_seconds": seconds,
                                  "qps": None},
                         settings={"depth": result["depth"], "evaluator": f"mteb {result['mteb_version']}",
                                   "task": result["task"]},
                         config=config, mteb_scores=result["mteb_scores"])
    if output_dir is not None:
        write_report_files(report, model.last_run, output_dir)
    logger.info("%s on %s/%s through mteb: ndcg@10=%.4f", name, dataset.name, split,
                result["metrics"].get("ndcg@10", float("nan")))
    return EvalResult(name=name, metrics=result["metrics"], per_query={}, run=model.last_run, report=report)
