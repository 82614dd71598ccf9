"""Teachers: soft relevance labels for (query, document) pairs, and their per-query ensembles.

A teacher scores the documents of one query (``score(query, docs) -> list[float]``) or of many queries
at once (``score_pairs(queries, docs_lists)``, which batches the model calls). Teachers here:

- :class:`BM25Teacher`: BM25 with corpus statistics for any (query, document) pair, in Python. It follows
  Lucene/Anserini as ``uniret.index.lucene`` searches: k1=0.9, b=0.4, Lucene's idf
  ``log(1 + (N - df + 0.5) / (df + 0.5))``, no ``(k1 + 1)`` factor, document lengths through Lucene's
  lossy one-byte norm, query terms weighted by their count (Anserini's bag-of-words query). Text goes
  through :func:`analyze`, a Python copy of Anserini's default English analyzer; on SciFact it yields the
  same tokens as Lucene for 5,139 of 5,183 documents (the rest differ on super/subscripts and symbols).
- :class:`DenseTeacher`: the dot product (cosine for normalising models) of a dense embedder.
- :class:`SpladeTeacher`: SPLADE (``splade-tiny`` by default): max-pooled ``log(1 + relu(MLM logits))``
  vectors over the vocabulary, scored by their dot product.
- :class:`CrossEncoderTeacher`: the raw logit of a sentence-transformers ``CrossEncoder``.
- :class:`EnsembleTeacher`: normalises each teacher's scores per query (min-max or z-score) and takes
  their weighted mean, as the heterogeneous teacher ensemble of inference-free learned sparse retrieval
  (Geng et al., 2024) does.

:func:`add_teacher_scores` fills ``positive_scores`` / ``negative_scores`` of training records.
"""

from __future__ import annotations

import logging
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from uniret.data import Corpus
from uniret.errors import MissingExtraError
from uniret.runtime import resolve_device
from uniret.train.records import TrainingRecord

logger = logging.getLogger(__name__)

NORMALIZATIONS = ("minmax", "zscore", "none")


@runtime_checkable
class Teacher(Protocol):
    """Scores documents for a query; higher means more relevant."""

    name: str

    def score(self, query: str, docs: Sequence[str]) -> list[float]: ...

    def score_pairs(self, queries: Sequence[str], docs_lists: Sequence[Sequence[str]]) -> list[list[float]]: ...


def _progress(total: int, desc: str, unit: str = "query", minimum: int = 2) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not logger.isEnabledFor(logging.INFO) or total < minimum)


class BaseTeacher:
    """``score`` in terms of ``score_pairs``, and a ``describe`` for reports."""

    name = "teacher"

    def score(self, query: str, docs: Sequence[str]) -> list[float]:
        return self.score_pairs([query], [docs])[0]

    def score_pairs(self, queries: Sequence[str], docs_lists: Sequence[Sequence[str]]) -> list[list[float]]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}


def _check_pairs(queries: Sequence[str], docs_lists: Sequence[Sequence[str]]) -> None:
    if len(queries) != len(docs_lists):
        raise ValueError(f"score_pairs got {len(queries)} queries but {len(docs_lists)} document lists; "
                         "expected one list of documents per query")


# -- BM25 -----------------------------------------------------------------------------------------------

LUCENE_STOPWORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then there these "
    "they this to was will with".split()
)
_LETTER = r"[^\W\d_]"
# Unicode word segmentation (UAX #29) as Lucene's StandardTokenizer applies it: runs of word characters,
# joined across '.', apostrophes, ':' and '·' between letters and across '.', ',', ';' between digits.
_TOKEN = re.compile(rf"\w+(?:(?:(?<={_LETTER})[.'’:·](?={_LETTER})|(?<=\d)[.,;'’](?=\d))\w+)*")


@lru_cache(maxsize=1)
def _drop_other_numbers() -> dict[int, str]:
    """Superscripts, subscripts and vulgar fractions (category No) are word characters to Python's
    regex but separators to Lucene's tokenizer."""
    return {c: " " for c in range(0x10000) if unicodedata.category(chr(c)) == "No"}


def _consonant(word: str, i: int) -> bool:
    c = word[i]
    if c in "aeiou":
        return False
    if c == "y":
        return i == 0 or not _consonant(word, i - 1)
    return True


def _measure(word: str) -> int:
    """Porter's m: the number of vowel-consonant sequences in ``word``."""
    n, i, length = 0, 0, len(word)
    while i < length and _consonant(word, i):
        i += 1
    while i < length:
        while i < length and not _consonant(word, i):
            i += 1
        if i >= length:
            break
        n += 1
        while i < length and _consonant(word, i):
            i += 1
    return n


def _lucene_porter_fix(stem: str) -> str:
    """Lucene's Porter stemmer is Martin Porter's own version, which departs from the published algorithm
    (Snowball's ``porter``) in step 2: ``bli -> ble`` replaces ``abli -> able`` and ``logi -> log`` is added."""
    if stem.endswith("logi") and _measure(stem[:-4]) > 0:
        return stem[:-1]
    if stem.endswith("bli") and not stem.endswith("abli") and _measure(stem[:-3]) > 0:
        base = stem[:-3]
        if base.endswith("i") and _measure(base[:-1]) > 1:  # step 4 then removes -ible
            return base[:-1]
        return base + "bl"  # step 5 removes the final e
    return stem


@lru_cache(maxsize=1)
def _stemmer() -> Any:
    try:
        import Stemmer
    except ImportError as e:
        raise MissingExtraError("PyStemmer", "dev") from e
    return Stemmer.Stemmer("porter")


@lru_cache(maxsize=200_000)
def _stem(word: str) -> str:
    return word if len(word) <= 2 else _lucene_porter_fix(_stemmer().stemWord(word))


def analyze(text: str) -> list[str]:
    """Tokens as Anserini's ``DefaultEnglishAnalyzer`` makes them: Unicode word segmentation, English
    possessives removed, lower case, Lucene's English stop words removed, Porter stemming (words of one or
    two letters are not stemmed, as in Lucene)."""
    out = []
    for match in _TOKEN.finditer(text.lower().translate(_drop_other_numbers())):
        token = match.group()
        if token.endswith(("'s", "’s")):
            token = token[:-2]
        if token and token not in LUCENE_STOPWORDS:
            out.append(_stem(token))
    return out


def _long_to_int4(i: int) -> int:
    bits = i.bit_length()
    if bits < 4:
        return i
    shift = bits - 4
    return ((i >> shift) & 0x07) | ((shift + 1) << 3)


def _int4_to_long(i: int) -> int:
    bits, shift = i & 0x07, (i >> 3) - 1
    return bits if shift == -1 else (bits | 0x08) << shift


_NUM_FREE_VALUES = 255 - _long_to_int4(2**31 - 1)


def lucene_length(num_tokens: int) -> int:
    """A document length after Lucene's one-byte norm (``SmallFloat.intToByte4`` and back): exact below 24,
    then rounded down to 4 significant bits."""
    if num_tokens < _NUM_FREE_VALUES:
        return num_tokens
    return _NUM_FREE_VALUES + _int4_to_long(_long_to_int4(num_tokens - _NUM_FREE_VALUES))


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

    def score_pairs(self, queries: Sequence[str], docs_lists: Sequence[Sequence[str]]) -> list[list[float]]:
        _check_pairs(queries, docs_lists)
        return [self.score(q, docs) for q, docs in zip(queries, docs_lists, strict=True)]

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

    def score_pairs(self, queries: Sequence[str], docs_lists: Sequence[Sequence[str]]) -> list[list[float]]:
        _check_pairs(queries, docs_lists)
        uq, qpos = _unique(queries)
        ud, dpos = _unique(t for docs in docs_lists for t in docs)
        if not ud:
            return [[] for _ in queries]
        q = np.asarray(self.encoder.encode_queries(uq), dtype=np.float32)
        d = np.asarray(self.encoder.encode_documents(ud), dtype=np.float32)
        out = []
        for query, docs in zip(queries, docs_lists, strict=True):
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
    """SPLADE scores: ``max_t log(1 + relu(logits_t))`` over the MLM logits of every token, masked by the
    attention mask, gives one vocabulary-sized vector per text; the score is the dot product."""

    def __init__(self, model: str | Path = "splade-tiny", *, device: str | None = "auto", batch_size: int = 16,
                 max_length: int = 256) -> None:
        from transformers import AutoModelForMaskedLM, AutoTokenizer

        from uniret.assets import resolve_model

        self.path = resolve_model(model)
        self.device = resolve_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        self.model = AutoModelForMaskedLM.from_pretrained(self.path).to(self.device).eval()
        self.batch_size = batch_size
        self.max_length = max_length
        self.name = f"splade:{model}"

    def encode(self, texts: Sequence[str], desc: str = "splade teacher: encoding") -> list[tuple[np.ndarray, np.ndarray]]:
        """Sparse vectors as ``(term ids, weights)`` per text."""
        import torch

        out: list[tuple[np.ndarray, np.ndarray]] = [(np.zeros(0, np.int64), np.zeros(0, np.float32))] * len(texts)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        with torch.inference_mode(), _progress(len(texts), desc, unit="text", minimum=self.batch_size + 1) as bar:
            for start in range(0, len(order), self.batch_size):
                rows = order[start:start + self.batch_size]
                enc = self.tokenizer([texts[i] for i in rows], truncation=True, max_length=self.max_length,
                                     padding=True, return_tensors="pt").to(self.device)
                logits = self.model(**enc).logits
                weights = torch.log1p(torch.relu(logits)) * enc["attention_mask"].unsqueeze(-1)
                reps = weights.amax(dim=1).float().cpu()
                for row, rep in zip(rows, reps, strict=True):
                    idx = torch.nonzero(rep, as_tuple=True)[0]
                    out[row] = (idx.numpy(), rep[idx].numpy())
                bar.update(len(rows))
        return out

    def score_pairs(self, queries: Sequence[str], docs_lists: Sequence[Sequence[str]]) -> list[list[float]]:
        _check_pairs(queries, docs_lists)
        uq, qpos = _unique(queries)
        ud, dpos = _unique(t for docs in docs_lists for t in docs)
        qv = self.encode(uq, desc="splade teacher: queries")
        dv = self.encode(ud, desc="splade teacher: documents")
        vocab = int(self.model.config.vocab_size)
        out = []
        for query, docs in zip(queries, docs_lists, strict=True):
            dense_q = np.zeros(vocab, dtype=np.float32)
            idx, val = qv[qpos[query]]
            dense_q[idx] = val
            out.append([float(np.dot(dense_q[dv[dpos[t]][0]], dv[dpos[t]][1])) for t in docs])
        return out

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "max_length": self.max_length}


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

    def score_pairs(self, queries: Sequence[str], docs_lists: Sequence[Sequence[str]]) -> list[list[float]]:
        import torch

        _check_pairs(queries, docs_lists)
        pairs = [(q, d) for q, docs in zip(queries, docs_lists, strict=True) for d in docs]
        if not pairs:
            return [[] for _ in queries]
        show = logger.isEnabledFor(logging.INFO) and len(pairs) > self.batch_size
        logits = np.asarray(self.model.predict(pairs, batch_size=self.batch_size, show_progress_bar=show,
                                               activation_fn=torch.nn.Identity()), dtype=np.float64)
        flat = logits[:, 1] - logits[:, 0] if logits.ndim == 2 and logits.shape[1] == 2 else logits.reshape(-1)
        out, start = [], 0
        for docs in docs_lists:
            out.append(flat[start:start + len(docs)].tolist())
            start += len(docs)
        return out


# -- ensembles ----------------------------------------------------------------------------------------------

def normalize_scores(scores: Sequence[float], method: str = "minmax") -> list[float]:
    """Normalise one query's scores. ``minmax``: ``(s - min) / (max - min)``, 0.5 for every score when all
    are equal; ``zscore``: ``(s - mean) / std`` with the population std, 0 when all are equal; ``none``."""
    if method not in NORMALIZATIONS:
        raise ValueError(f"unknown normalisation {method!r}; expected one of {', '.join(NORMALIZATIONS)}")
    values = np.asarray(scores, dtype=np.float64)
    if method == "none" or values.size == 0:
        return values.tolist()
    if method == "minmax":
        lo, hi = values.min(), values.max()
        return ((values - lo) / (hi - lo)).tolist() if hi > lo else [0.5] * len(values)
    std = values.std()
    return ((values - values.mean()) / std).tolist() if std > 0 else [0.0] * len(values)


class EnsembleTeacher(BaseTeacher):
    """Weighted mean of per-query normalised teacher scores, times ``scale``."""

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

    def score_pairs(self, queries: Sequence[str], docs_lists: Sequence[Sequence[str]]) -> list[list[float]]:
        _check_pairs(queries, docs_lists)
        total = sum(self.weights)
        combined = [np.zeros(len(docs)) for docs in docs_lists]
        for teacher, weight in zip(self.teachers, self.weights, strict=True):
            raw = teacher.score_pairs(queries, docs_lists)
            for acc, scores in zip(combined, raw, strict=True):
                acc += weight * np.asarray(normalize_scores(scores, self.normalization))
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

    def score_pairs(self, queries: Sequence[str], docs_lists: Sequence[Sequence[str]]) -> list[list[float]]:
        _check_pairs(queries, docs_lists)
        missing: dict[str, dict[str, None]] = {}
        for q, docs in zip(queries, docs_lists, strict=True):
            for d in docs:
                if (q, d) not in self._scores:
                    missing.setdefault(q, {})[d] = None
        todo = [(q, list(docs)) for q, docs in missing.items()]
        if todo:
            scores = self.teacher.score_pairs([q for q, _ in todo], [docs for _, docs in todo])
            for (q, docs), values in zip(todo, scores, strict=True):
                self._scores.update(((q, d), float(s)) for d, s in zip(docs, values, strict=True))
        return [[self._scores[(q, d)] for d in docs] for q, docs in zip(queries, docs_lists, strict=True)]

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
