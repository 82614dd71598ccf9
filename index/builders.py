"""How each registered family builds a fresh backend from a ``RetrieverConfig`` (see :mod:`uniret.families`).

Each builder validates what it can before any document is encoded (an unknown FAISS index type fails here,
not after an hour of encoding) and returns an empty backend whose ``index(corpus)`` does the work.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def build_bm25(cfg: Any, *, scratch: Path | None = None) -> Any:
    from uniret.index.lucene import LuceneBM25Index

    backend = LuceneBM25Index(k1=cfg.k1, b=cfg.b)
    if scratch is not None and hasattr(backend, "workdir"):
        backend.workdir = scratch
    return backend


def dense_encoder(cfg: Any) -> Any:
    """The dense encoder a ``RetrieverConfig`` names (max length: the config's, else the model's own)."""
    from uniret.retriever.dense import DenseEncoder

    return DenseEncoder(cfg.model, device=cfg.device, max_length=cfg.max_length, batch_size=cfg.batch_size,
                        query_prompt=cfg.query_prompt, cache_embeddings=cfg.cache_embeddings,
                        backend=getattr(cfg, "backend", "torch"))


def check_index_type(index_type: str, dimension: int) -> None:
    """Raise ``ValueError`` for an index type faiss cannot build at this dimension (checked before encoding)."""
    from uniret.index.faiss_index import NAMED_TYPES, _faiss, factory_string

    faiss = _faiss()
    factory = factory_string(index_type, 100_000, dimension)
    try:
        faiss.index_factory(dimension, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[-1] if str(e).strip() else str(e)
        raise ValueError(f"invalid --index-type {index_type!r} for {dimension}-dim embeddings (named types: "
                         f"{', '.join(NAMED_TYPES)}, or a faiss factory string such as 'IVF256,Flat'): {first}"
                         ) from None


def build_dense(cfg: Any, *, scratch: Path | None = None) -> Any:
    from uniret.index.faiss_index import FaissIndex

    encoder = dense_encoder(cfg)
    check_index_type(cfg.index_type, int(encoder.identity["dimension"]))
    return FaissIndex(encoder, cfg.index_type, shard_size=getattr(cfg, "shard_size", None),
                      shards_dir=getattr(cfg, "shards_dir", None))


def bm25_analyzer(cfg: Any) -> Any:
    """The text analysis a BM25 index is built with, as an encoder-like identity that ``load`` checks."""
    from uniret.index.lucene import LuceneAnalyzer

    return LuceneAnalyzer()


def sparse_encoder(cfg: Any) -> Any:
    """The sparse encoder a ``RetrieverConfig`` names (SPLADE; max length: the config's, else 256; inference
    backend torch | onnx | onnx-int8; top-k and threshold pruning: the config's, else the model's saved ones)."""
    from uniret.retriever.splade import SpladeEncoder

    return SpladeEncoder(cfg.model, device=cfg.device, batch_size=cfg.batch_size, max_length=cfg.max_length or 256,
                         backend=getattr(cfg, "backend", "torch"), top_k=getattr(cfg, "top_k", None),
                         threshold=getattr(cfg, "threshold", None))


def build_sparse(cfg: Any, *, scratch: Path | None = None) -> Any:
    from uniret.index.sparse import SparseIndex
    from uniret.index.sparse_engines import resolve_engine

    engine = resolve_engine(cfg.engine)  # an unknown or uninstalled engine fails before any encoding
    return SparseIndex(sparse_encoder(cfg), engine, query_scale=getattr(cfg, "query_scale", None),
                       cache_embeddings=cfg.cache_embeddings, workdir=scratch)
