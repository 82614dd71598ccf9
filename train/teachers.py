"""Teachers: soft relevance labels for (query, document) pairs, and their per-query ensembles.

Every teacher is a :class:`uniret.protocols.PairScorer`: ``score_pairs(queries, docs)`` scores the
documents ``docs[i]`` of each query ``queries[i]`` at once (batching the model calls) and returns one list
of scores per query; ``score(query, docs)`` is the one-query shortcut. Teachers here:

- :class:`BM25Teacher`: BM25 with corpus statistics for any (query, document) pair, in Python. It follows
  Lucene/Anserini as ``uniret.index.lucene`` searches: k1=0.9, b=0.4, Lucene's idf
  ``log(1 + (N - df + 0.5) / (df + 0.5))``, no ``(k1 + 1)`` factor, document lengths through Lucene's
  lossy one-byte norm, query terms weighted by their count (Anserini's bag-of-words query). Text goes
  through :func:`uniret.train.analyzer.analyze`, a Python port of Anserini's default English analyzer.
- :class:`DenseTeacher`: the dot product (cosine for normalising models) of a dense embedder.
- :class:`SpladeTeacher`: the dot product of SPLADE vectors (:class:`uniret.retriever.splade.SpladeEncoder`,
  ``splade-tiny`` by default).
- :class:`CrossEncoderTeacher`: the raw logit of a sentence-transformers ``CrossEncoder``, over
  length-sorted batches (:mod:`uniret.retriever.batching`).
- :class:`EnsembleTeacher`: normalises each teacher's scores per query (:func:`uniret.scores.normalize`,
  min-max or z-score) and takes their weighted mean, as the heterogeneous teacher ensemble of
  inference-free learned sparse retrieval (Geng et al., 2024) does.

:func:`add_teacher_scores` fills ``positive_scores`` / ``negative_scores`` of training records.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from uniret.data import Corpus
from uniret.protocols import PairScorer
from uniret.retriever.batching import map_sorted_array, progress_bar
from uniret.runtime import resolve_device
from uniret.scores import NORMALIZATIONS, normalize
from uniret.train.analyzer import analyze, lucene_length
from uniret.train.records import TrainingRecord

logger = logging.getLogger(__name__)


@runtime_checkable
class Teacher(PairScorer, Protocol):
    """A :class:`~uniret.protocols.PairScorer` with a name (for reports) and a one-query ``score``."""

    name: str

    def score(self, query: str, docs: Sequence[str]) -> list[float]: ...


def _progress(total: int, desc: str, unit: str = "query", minimum: int = 2) -> Any:
    return progress_bar(total, desc, unit, show=logger.isEnabledFor(logging.INFO) and total >= minimum)


class BaseTeacher:
    """``score`` in terms of ``score_pairs``, and a ``describe`` for reports."""

    name = "teacher"

    def score(self, query: str, docs: Sequence[str]) -> list[float]:
        return self.score_pairs([query], [docs])[0]

    def score_pairs(self, queries: Sequence[str], docs_per_query: Sequence[Sequence[str]]) -> list[list[float]]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}


def _check_pairs(queries: Sequence[str], docs_per_query: Sequence[Sequence[str]]) -> None:
    if len(queries) != len(docs_per_query):
        raise ValueError(f"score_pairs got {len(queries)} queries but {len(docs_per_query)} document lists; "
                         "expected one list of documents per query")


# -- BM25 -----------------------------------------------------------------------------------------------

class BM25Teacher(BaseTeacher):
    """BM25 for arbitrary (query, document text) pairs with the statistics of ``corpus``.

    Documents need not be in the corpus: their term frequencies come from their own text, document
    frequencies from the corpus (a term the corpus lacks gets the largest idf).
    """

    name = "bm25"

    def __init__(self, corpus: Corpus | Iterable[str], k1: float = 0.9, b: float = 0.4,
                 cache_size: int = 100_000) -> None:
        self.k1 = k1
        self.b = b
        self._df: Counter[str] = Counter()
        total, num_docs = 0, 0
        texts: Iterable[str] = (d.full_text() for d in corpus) if isinstance(corpus, Corpus) else corpus
        size = len(corpus) if isinstance(corpus, Corpus) else None
        from tqdm.auto import tqdm

        for text in tqdm(texts, total=size, desc="bm25 teacher: corpus statistics", unit="doc",
                         disable=not logger.isEnabledFor(logging.INFO)):
            tokens = analyze(text)
            if tokens:
                num_docs += 1
                total += len(tokens)
                self._df.update(set(tokens))
        if num_docs == 0:
            raise ValueError("BM25Teacher: the corpus has no indexable text; expected at least one document "
                             "with words")
        self.num_docs = num_docs
        self.avgdl = total / num_docs
        self._cache: dict[str, tuple[Counter[str], int]] = {}
        self._cache_size = cache_size

    def idf(self, term: str) -> float:
        df = self._df.get(term, 0)
        return math.log(1.0 + (self.num_docs - df + 0.5) / (df + 0.5))

    def _doc(self, text: str) -> tuple[Counter[str], int]:
        hit = self._cache.get(text)
        if hit is None:
            tokens = analyze(text)
            hit = (Counter(tokens), lucene_length(len(tokens)))
            if len(self._cache) >= self._cache_size:
                self._cache.pop(next(iter(self._cache)))
            self._cache[text] = hit
        return hit

    def score(self, query: str, docs: Sequence[str]) -> list[float]:
        weights = [(t, n * self.idf(t)) for t, n in Counter(analyze(query)).items()]
        out = []
        for text in docs:
            tf, length = self._doc(text)
            norm = self.k1 * (1.0 - self.b + self.b * length / self.avgdl)
            out.append(float(sum(w * tf[t] / (tf[t] + norm) for t, w in weights if t in tf)))
        return out

    def score_pairs(self, queries: Sequence[str], docs_per_query: Sequence[Sequence[str]]) -> list[list[float]]:
        _check_pairs(queries, docs_per_query)
        return [self.score(q, docs) for q, docs in zip(queries, docs_per_query, strict=True)]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "k1": self.k1, "b": self.b, "num_docs": self.num_docs,
                "analyzer": "python copy of Anserini DefaultEnglishAnalyzer"}


# -- neural teachers --------------------------------------------------------------------------------------

def _unique(texts: Iterable[str]) -> tuple[list[str], dict[str, int]]:
    index: dict[str, int] = {}
    for t in texts:
        index.setdefault(t, len(index))
    return list(index), index


class DenseTeacher(BaseTeacher):
    """Dot product of query and document embeddings (cosine for models that normalise). ``model`` is a
    model name, alias or folder for :class:`uniret.retriever.dense.DenseEncoder`, or an encoder object
    with ``encode_queries`` / ``encode_documents``."""

    def __init__(self, model: Any = "all-MiniLM-L6-v2", *, device: str | None = "auto", batch_size: int = 32,
                 max_length: int | None = 256) -> None:
        if isinstance(model, (str, Path)):
            from uniret.retriever.dense import DenseEncoder

            model = DenseEncoder(model, device=device, max_length=max_length, batch_size=batch_size)
        self.encoder = model
        identity = getattr(model, "identity", {}) or {}
        self.similarity = identity.get("similarity", "dot")
        self.name = f"dense:{identity.get('name', type(model).__name__)}"

    def score_pairs(self, queries: Sequence[str], docs_per_query: Sequence[Sequence[str]]) -> list[list[float]]:
        _check_pairs(queries, docs_per_query)
        uq, qpos = _unique(queries)
        ud, dpos = _unique(t for docs in docs_per_query for t in docs)
        if not ud:
            return [[] for _ in queries]
        q = np.asarray(self.encoder.encode_queries(uq), dtype=np.float32)
        d = np.asarray(self.encoder.encode_documents(ud), dtype=np.float32)
        out = []
        for query, docs in zip(queries, docs_per_query, strict=True):
            rows = d[[dpos[t] for t in docs]] if docs else np.zeros((0, d.shape[1]), dtype=np.float32)
            qv = q[qpos[query]]
            if self.similarity == "l2":
                out.append([float(-np.sum((qv - r) ** 2)) for r in rows])
            else:
                out.append((rows @ qv).astype(float).tolist())
        return out

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "similarity": self.similarity}


class SpladeTeacher(BaseTeacher):
    """The dot product of SPLADE vectors (:class:`uniret.retriever.splade.SpladeEncoder`: max-pooled
    ``log(1 + relu(MLM logits))`` over the vocabulary). ``model`` is a name, alias or folder, or a
    ``SpladeEncoder``."""

    def __init__(self, model: Any = "splade-tiny", *, device: str | None = "auto", batch_size: int = 16,
                 max_length: int = 256) -> None:
        if isinstance(model, (str, Path)):
            from uniret.retriever.splade import SpladeEncoder

            self.name = f"splade:{model}"
            model = SpladeEncoder(model, device=device, batch_size=batch_size, max_length=max_length)
        else:
            self.name = f"splade:{getattr(model, 'name', type(model).__name__)}"
        self.encoder = model

    def score_pairs(self, queries: Sequence[str], docs_per_query: Sequence[Sequence[str]]) -> list[list[float]]:
        _check_pairs(queries, docs_per_query)
        uq, qpos = _unique(queries)
        ud, dpos = _unique(t for docs in docs_per_query for t in docs)
        qv = self.encoder.encode(uq, desc="splade teacher: queries")
        dv = self.encoder.encode(ud, desc="splade teacher: documents")
        dense_q = np.zeros(self.encoder.vocab_size, dtype=np.float32)
        out = []
        for query, docs in zip(queries, docs_per_query, strict=True):
            idx, val = qv[qpos[query]]
            dense_q[idx] = val
            out.append([float(np.dot(dense_q[dv[dpos[t]][0]], dv[dpos[t]][1])) for t in docs])
            dense_q[idx] = 0.0
        return out

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.encoder.path, "max_length": self.encoder.max_length}


class CrossEncoderTeacher(BaseTeacher):
    """The raw logit of a sentence-transformers ``CrossEncoder`` (one label; with two labels, the log-odds
    of label 1). ``model`` is a folder or name, or a loaded ``CrossEncoder``."""

    def __init__(self, model: Any, *, device: str | None = "auto", batch_size: int = 32,
                 max_length: int | None = 512) -> None:
        if isinstance(model, (str, Path)):
            from sentence_transformers import CrossEncoder

            from uniret.assets import resolve_model

            self.name = f"cross-encoder:{model}"
            model = CrossEncoder(resolve_model(model), device=resolve_device(device), max_length=max_length)
        else:
            self.name = f"cross-encoder:{type(model).__name__}"
        self.model = model
        self.batch_size = batch_size
        num_labels = getattr(getattr(getattr(model, "model", None), "config", None), "num_labels", 1)
        if num_labels not in (1, 2):
            raise ValueError(f"{self.name}: a cross-encoder teacher needs 1 or 2 output labels, the model has "
                             f"{num_labels}")

    def score_pairs(self, queries: Sequence[str], docs_per_query: Sequence[Sequence[str]]) -> list[list[float]]:
        import torch

        _check_pairs(queries, docs_per_query)
        pairs = [(q, d) for q, docs in zip(queries, docs_per_query, strict=True) for d in docs]

        def logits(rows: list[int]) -> np.ndarray:
            batch = [pairs[i] for i in rows]
            raw = np.asarray(self.model.predict(batch, batch_size=len(batch), show_progress_bar=False,
                                                activation_fn=torch.nn.Identity()), dtype=np.float64)
            return raw[:, 1] - raw[:, 0] if raw.ndim == 2 and raw.shape[1] == 2 else raw.reshape(-1)

        with _progress(len(pairs), f"teacher {self.name}: scoring", unit="pair", minimum=self.batch_size + 1) as bar:
            flat = map_sorted_array(logits, [len(q) + len(d) for q, d in pairs], self.batch_size, dtype=np.float64,
                                    bar=bar).tolist()
        out, start = [], 0
        for docs in docs_per_query:
            out.append(flat[start:start + len(docs)])
            start += len(docs)
        return out


# -- ensembles ----------------------------------------------------------------------------------------------

class EnsembleTeacher(BaseTeacher):
    """Weighted mean of per-query normalised teacher scores (:func:`uniret.scores.normalize`), times
    ``scale``. A teacher that gives all documents of a query the same score adds ``weight * 1.0`` to each
    under ``minmax`` (0 under ``zscore``): a constant, so it leaves that query's order and margins alone."""

    def __init__(self, teachers: Sequence[Teacher], weights: Sequence[float] | None = None,
                 normalization: str = "minmax", scale: float = 1.0) -> None:
        if not teachers:
            raise ValueError("EnsembleTeacher needs at least one teacher")
        weights = list(weights) if weights is not None else [1.0] * len(teachers)
        if len(weights) != len(teachers):
            raise ValueError(f"EnsembleTeacher: {len(weights)} weights for {len(teachers)} teachers; expected one "
                             "weight per teacher")
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"EnsembleTeacher: weights {weights} must be >= 0 with a positive sum")
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"unknown normalisation {normalization!r}; expected one of {', '.join(NORMALIZATIONS)}")
        self.teachers = list(teachers)
        self.weights = [float(w) for w in weights]
        self.normalization = normalization
        self.scale = scale
        self.name = "ensemble(" + ",".join(getattr(t, "name", type(t).__name__) for t in teachers) + ")"

    def score_pairs(self, queries: Sequence[str], docs_per_query: Sequence[Sequence[str]]) -> list[list[float]]:
        _check_pairs(queries, docs_per_query)
        total = sum(self.weights)
        combined = [np.zeros(len(docs)) for docs in docs_per_query]
        for teacher, weight in zip(self.teachers, self.weights, strict=True):
            raw = teacher.score_pairs(queries, docs_per_query)
            for acc, scores in zip(combined, raw, strict=True):
                acc += weight * np.asarray(normalize(scores, self.normalization))
        return [(self.scale * acc / total).tolist() for acc in combined]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "weights": self.weights, "normalization": self.normalization, "scale": self.scale,
                "teachers": [t.describe() if hasattr(t, "describe") else {"name": getattr(t, "name", "?")}
                             for t in self.teachers]}


class CachedTeacher(BaseTeacher):
    """Remembers the raw score of every (query, document) pair it has seen, so mining can filter with a
    teacher and then write its scores without running the model twice."""

    def __init__(self, teacher: Teacher) -> None:
        self.teacher = teacher
        self.name = getattr(teacher, "name", type(teacher).__name__)
        self._scores: dict[tuple[str, str], float] = {}

    def score_pairs(self, queries: Sequence[str], docs_per_query: Sequence[Sequence[str]]) -> list[list[float]]:
        _check_pairs(queries, docs_per_query)
        missing: dict[str, dict[str, None]] = {}
        for q, docs in zip(queries, docs_per_query, strict=True):
            for d in docs:
                if (q, d) not in self._scores:
                    missing.setdefault(q, {})[d] = None
        todo = [(q, list(docs)) for q, docs in missing.items()]
        if todo:
            scores = self.teacher.score_pairs([q for q, _ in todo], [docs for _, docs in todo])
            for (q, docs), values in zip(todo, scores, strict=True):
                self._scores.update(((q, d), float(s)) for d, s in zip(docs, values, strict=True))
        return [[self._scores[(q, d)] for d in docs] for q, docs in zip(queries, docs_per_query, strict=True)]

    def describe(self) -> dict[str, Any]:
        inner = self.teacher.describe() if hasattr(self.teacher, "describe") else {"name": self.name}
        return dict(inner)


def cached(teacher: Teacher) -> Teacher:
    """Wrap ``teacher`` in :class:`CachedTeacher`; for an ensemble, wrap its members (normalisation then
    still runs on whichever candidate set is scored)."""
    if isinstance(teacher, CachedTeacher):
        return teacher
    if isinstance(teacher, EnsembleTeacher):
        return EnsembleTeacher([cached(t) for t in teacher.teachers], teacher.weights, teacher.normalization,
                               teacher.scale)
    return CachedTeacher(teacher)


# -- building and applying ----------------------------------------------------------------------------------

TEACHER_KINDS = ("bm25", "dense", "splade", "cross-encoder")


def build_teacher(spec: str, *, corpus: Corpus | None = None, device: str | None = "auto", batch_size: int = 32,
                  max_length: int = 256) -> Teacher:
    """A teacher from ``<kind>[:<model>]``: ``bm25`` (needs ``corpus``), ``dense[:<model>]`` (default
    all-MiniLM-L6-v2), ``splade[:<model>]`` or ``splade-tiny``, ``cross-encoder:<folder>``."""
    kind, _, model = spec.partition(":")
    kind = kind.strip().lower()
    if kind == "bm25":
        if corpus is None:
            raise ValueError("teacher 'bm25' needs the corpus for its statistics")
        return BM25Teacher(corpus)
    if kind == "dense":
        return DenseTeacher(model or "all-MiniLM-L6-v2", device=device, batch_size=batch_size, max_length=max_length)
    if kind in ("splade", "splade-tiny"):
        return SpladeTeacher(model or "splade-tiny", device=device, batch_size=min(batch_size, 16),
                             max_length=max_length)
    if kind in ("cross-encoder", "cross", "crossencoder"):
        if not model:
            raise ValueError(f"teacher {spec!r}: name the model, e.g. 'cross-encoder:path/to/folder'")
        return CrossEncoderTeacher(model, device=device, batch_size=batch_size, max_length=max_length)
    raise ValueError(f"unknown teacher {spec!r}; expected <kind>[:<model>] with kind one of {', '.join(TEACHER_KINDS)}")


def build_teachers(specs: Sequence[str], weights: Sequence[float] | None = None, normalization: str = "minmax", *,
                   corpus: Corpus | None = None, device: str | None = "auto", batch_size: int = 32,
                   max_length: int = 256) -> Teacher | None:
    """None for no specs, the teacher itself for one spec without weights, else an :class:`EnsembleTeacher`."""
    teachers = [build_teacher(s, corpus=corpus, device=device, batch_size=batch_size, max_length=max_length)
                for s in specs]
    if not teachers:
        return None
    if len(teachers) == 1 and weights is None:
        return teachers[0]
    return EnsembleTeacher(teachers, weights, normalization)


def add_teacher_scores(records: Sequence[TrainingRecord], teacher: Teacher,
                       chunk_size: int = 256) -> Sequence[TrainingRecord]:
    """Fill ``positive_scores`` and ``negative_scores`` of each record (in place) with the teacher's scores
    of its positives and negatives, scored together (an ensemble normalises over that set)."""
    with _progress(len(records), f"teacher {getattr(teacher, 'name', '')}: scoring", unit="record",
                   minimum=chunk_size + 1) as bar:
        for start in range(0, len(records), chunk_size):
            chunk = records[start:start + chunk_size]
            scores = teacher.score_pairs([r.query for r in chunk], [r.positives + r.negatives for r in chunk])
            for r, values in zip(chunk, scores, strict=True):
                if len(values) != len(r.positives) + len(r.negatives):
                    raise ValueError(f"teacher {getattr(teacher, 'name', teacher)!r} returned {len(values)} scores "
                                     f"for {len(r.positives) + len(r.negatives)} documents of query {r.query[:60]!r}")
                r.positive_scores = [float(s) for s in values[:len(r.positives)]]
                r.negative_scores = [float(s) for s in values[len(r.positives):]]
            bar.update(len(chunk))
    return records
