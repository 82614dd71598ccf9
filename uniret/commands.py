"""The functions behind the CLI commands, importable on their own.

Each command takes typed configuration and explicit keyword arguments, builds the backend it needs and
returns a result; the CLI only parses arguments into these. Like the CLI, this module imports the
wings lazily, inside each function.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from uniret.data import BeirDataset, Document, load_beir

logger = logging.getLogger(__name__)

RETRIEVERS = ("bm25", "dense")


@dataclass
class RetrieverConfig:
    """Which retriever to build and how."""

    kind: str = "bm25"  # bm25 | dense
    model: str = "all-MiniLM-L6-v2"  # dense: alias, local folder or hub name
    index_type: str = "flat"  # dense: flat | hnsw | ivf-pq | a faiss factory string
    device: str = "auto"
    batch_size: int = 32
    max_length: int = 256
    query_prompt: str = ""
    k1: float = 0.9  # bm25
    b: float = 0.4  # bm25
    cache_embeddings: bool = False

    def __post_init__(self) -> None:
        if self.kind not in RETRIEVERS:
            raise ValueError(f"unknown retriever {self.kind!r}; choose one of {', '.join(RETRIEVERS)}")


def build_backend(cfg: RetrieverConfig) -> Any:
    """A fresh, empty search backend for ``cfg``."""
    if cfg.kind == "bm25":
        from uniret.index.lucene import LuceneBM25Index

        return LuceneBM25Index(k1=cfg.k1, b=cfg.b)
    from uniret.index.faiss_index import FaissIndex

    return FaissIndex(build_encoder(cfg), cfg.index_type)


def build_encoder(cfg: RetrieverConfig) -> Any:
    from uniret.retriever.dense import DenseEncoder

    return DenseEncoder(cfg.model, device=cfg.device, max_length=cfg.max_length, batch_size=cfg.batch_size,
                        query_prompt=cfg.query_prompt, cache_embeddings=cfg.cache_embeddings)


def load_backend(index_dir: str | Path, *, retriever: str | None = None, encoder_cfg: RetrieverConfig | None = None,
                 device: str = "auto") -> Any:
    """Load a saved index. ``retriever`` (bm25|dense), when given, must match the index's kind; an
    ``encoder_cfg`` names the model the user expects, which must be the one the index was built with."""
    from uniret.errors import IndexMismatchError
    from uniret.index import load_index, read_manifest

    manifest = read_manifest(index_dir)
    kind = "dense" if manifest["kind"] == "faiss" else "bm25"
    if retriever is not None and retriever != kind:
        raise IndexMismatchError(f"{index_dir} holds a '{manifest['kind']}' index, but --retriever {retriever} was given")
    if kind == "dense":
        encoder = build_encoder(encoder_cfg) if encoder_cfg is not None else None
        return load_index(index_dir, encoder=encoder, device=device)
    return load_index(index_dir)


def build_index(data: str | Path, cfg: RetrieverConfig, output: str | Path) -> dict[str, Any]:
    """Index a BEIR corpus and save it to ``output``; returns the manifest."""
    from uniret.index import read_manifest

    dataset = load_beir(data)
    backend = build_backend(cfg)
    start = time.perf_counter()
    backend.index(dataset.corpus)
    logger.info("indexed %d documents in %.1f s", len(dataset.corpus), time.perf_counter() - start)
    backend.save(output)
    return read_manifest(output)


def search_index(index_dir: str | Path, query: str, k: int = 10, device: str = "auto") -> list[tuple[Document, float]]:
    """Search a saved index for one query; returns ``(document, score)`` best first."""
    from uniret.eval.metrics import ranked

    backend = load_backend(index_dir, device=device)
    hits = ranked(backend.search({"q": query}, k=k).get("q", {}))
    out = []
    for doc_id, score in hits:
        doc = backend.document(doc_id) or Document(id=doc_id, text="")
        out.append((doc, score))
    return out


def run_eval(data: str | Path | BeirDataset, cfg: RetrieverConfig, output_dir: str | Path, *, split: str = "test",
             index_dir: str | Path | None = None, model_given: bool = False, name: str | None = None,
             depth: int = 1000, rerank: str | Path | None = None, rerank_depth: int = 100,
             rerank_fusion: float | None = None) -> Any:
    """Evaluate a retriever on a BEIR split and write the report directory; returns the EvalResult.
    ``rerank``: a cross-encoder reranker (folder or name) re-scoring the top ``rerank_depth`` hits."""
    from uniret.eval.runner import evaluate_backend

    dataset = data if isinstance(data, BeirDataset) else load_beir(data)
    if index_dir is not None:
        backend = load_backend(index_dir, retriever=cfg.kind, encoder_cfg=cfg if model_given else None,
                               device=cfg.device)
        built = False
    else:
        backend = build_backend(cfg)
        built = True
    if rerank is not None:
        from uniret.index.rerank import RerankedBackend
        from uniret.retriever.reranker import CrossEncoderReranker

        backend = RerankedBackend(backend, CrossEncoderReranker(rerank, device=cfg.device, batch_size=cfg.batch_size),
                                  depth=rerank_depth, fusion_weight=rerank_fusion)
        if not built:
            backend.set_corpus(dataset.corpus)
        depth = min(depth, rerank_depth)
    return evaluate_backend(backend, dataset, split=split, name=name or cfg.kind + ("+rerank" if rerank else ""),
                            build_index=built, depth=depth, output_dir=output_dir,
                            config={"retriever": asdict(cfg), "split": split,
                                    "index": str(index_dir) if index_dir else None,
                                    "rerank": str(rerank) if rerank else None, "rerank_depth": rerank_depth,
                                    "rerank_fusion": rerank_fusion})


@dataclass
class DemoResult:
    rows: dict[str, dict[str, float]]
    output_dir: Path
    seconds: float
    table: str


def run_demo(output_dir: str | Path = "reports/demo", *, data: str | Path = "scifact", quick: bool = False,
             model: str = "all-MiniLM-L6-v2", device: str = "auto", batch_size: int = 32,
             cache_embeddings: bool = False) -> DemoResult:
    """The main job: BM25 and a dense embedder on a real BEIR data set, a comparison table and a chart."""
    from uniret.eval.metrics import DEFAULT_METRICS
    from uniret.eval.report import metrics_table, plot_metrics, write_json

    start = time.perf_counter()
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    dataset = load_beir(data)
    if quick:
        dataset = dataset.sample(num_queries=50, num_docs=400, split="test")
    logger.info("demo on %s: %d documents, %d test queries", dataset.name, len(dataset.corpus),
                len(dataset.split_queries("test")))
    systems = {
        "bm25": RetrieverConfig(kind="bm25"),
        f"dense ({model})": RetrieverConfig(kind="dense", model=model, device=device, batch_size=batch_size,
                                            cache_embeddings=cache_embeddings),
    }
    rows: dict[str, dict[str, float]] = {}
    timings: dict[str, dict[str, Any]] = {}
    for name, cfg in systems.items():
        result = run_eval(dataset, cfg, out / cfg.kind, name=name)
        rows[name] = {m: result.metrics[m] for m in DEFAULT_METRICS}
        timings[name] = result.report["timings"]
    table = metrics_table(rows, DEFAULT_METRICS)
    plot_metrics(rows, out / "metrics.png", title=f"{dataset.name} test")
    seconds = time.perf_counter() - start
    write_json({"dataset": dataset.name, "quick": quick, "metrics": rows, "timings": timings,
                "total_seconds": seconds}, out / "summary.json")
    (out / "summary.md").write_text(f"# uniret demo on {dataset.name} (test)\n\n{table}\n\n"
                                    f"Total time: {seconds:.0f} s.\n", encoding="utf-8")
    return DemoResult(rows=rows, output_dir=out, seconds=seconds, table=table)
