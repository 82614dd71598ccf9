"""One protocol per role. Backends, encoders and teachers are duck-typed against these."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from uniret.data import Corpus, Document, Run


@dataclass
class SparseVectors:
    """A batch of sparse vectors over a vocabulary, in CSR layout: row ``i`` holds the weights
    ``data[indptr[i]:indptr[i+1]]`` of the terms ``indices[indptr[i]:indptr[i+1]]`` (ids into ``vocabulary``)."""

    indptr: np.ndarray  # (n + 1,) int64
    indices: np.ndarray  # (nnz,) int32 term ids
    data: np.ndarray  # (nnz,) float32 weights
    vocabulary: Sequence[str]  # term id -> term

    def __len__(self) -> int:
        return len(self.indptr) - 1

    def row(self, i: int) -> dict[str, float]:
        """Row ``i`` as readable ``{term: weight}``, heaviest first."""
        lo, hi = int(self.indptr[i]), int(self.indptr[i + 1])
        pairs = sorted(zip(self.indices[lo:hi], self.data[lo:hi], strict=True), key=lambda x: (-x[1], x[0]))
        return {self.vocabulary[int(t)]: float(w) for t, w in pairs}


Embeddings = np.ndarray | SparseVectors


@runtime_checkable
class Encoder(Protocol):
    """Turns texts into vectors: dense encoders return a float32 array ``(n, dim)``, sparse encoders
    :class:`SparseVectors`. ``identity["similarity"]`` says how vectors are compared (cosine, dot, l2)."""

    @property
    def identity(self) -> dict[str, Any]:
        """What the encoder is: name or path, content hash, dimension, similarity, settings."""

    def encode_queries(self, texts: Sequence[str]) -> Embeddings: ...

    def encode_documents(self, texts: Sequence[str]) -> Embeddings: ...


@runtime_checkable
class SearchBackend(Protocol):
    """A search index over a corpus, one per registered family (:mod:`uniret.families`). ``kind`` is the
    manifest kind it writes. Every saved directory holds ``manifest.json``; ``load`` checks it, and rejects
    an ``encoder`` (or analyzer) other than the one the index was built with."""

    kind: str

    def index(self, corpus: Corpus) -> None: ...

    def search(self, queries: Mapping[str, str], k: int = 10) -> Run: ...

    def save(self, path: str | Path) -> Path: ...

    @classmethod
    def load(cls, path: str | Path, *, encoder: Any = None, device: str = "auto") -> SearchBackend: ...

    def document(self, doc_id: str) -> Document | None:
        """The stored document (title and text), for display and RAG; None when unknown."""

    def describe(self) -> dict[str, Any]:
        """The identity written into reports: kind, encoder, settings."""


# -- pair scorers (teachers, rerankers) -------------------------------------------------------------------------

@runtime_checkable
class PairScorer(Protocol):
    """Scores (query, document) pairs grouped by query; higher means more relevant.

    ``docs_per_query[i]`` are the documents of ``queries[i]``; the result holds one list of scores per
    query, in the order of its documents. Grouping lets an ensemble normalise per query, and lets the
    scorer batch all pairs of all queries at once (a cross-encoder sorts them by length). Every teacher
    (:mod:`uniret.train.teachers`) and the cross-encoder reranker implement exactly this, and the
    reranking stage (:class:`uniret.index.rerank.RerankedBackend`) calls nothing else.
    """

    def score_pairs(self, queries: Sequence[str], docs_per_query: Sequence[Sequence[str]]) -> list[list[float]]: ...
