"""One protocol per role. Backends, encoders and teachers are duck-typed against these."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from uniret.data import Corpus, Run


@runtime_checkable
class Encoder(Protocol):
    """Turns texts into vectors. Dense encoders return a float32 array ``(n, dim)``."""

    @property
    def identity(self) -> dict[str, Any]:
        """What the encoder is: name or path, content hash, dimension, similarity, settings."""

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray: ...

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray: ...


@runtime_checkable
class SearchBackend(Protocol):
    """A search index over a corpus. Every saved directory holds ``manifest.json``."""

    kind: str

    def index(self, corpus: Corpus) -> None: ...

    def search(self, queries: Mapping[str, str], k: int = 10) -> Run: ...

    def save(self, path: str | Path) -> Path: ...

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
