"""The ``sparse`` family's index: learned sparse vectors (SPLADE and kin), quantised once, served by an engine.

Documents are encoded by a sparse encoder (``encode_documents`` -> :class:`~uniret.protocols.SparseVectors`)
and **quantised**: each weight is multiplied by :data:`SCALE` (100) and rounded to the nearest integer; weights
that round to 0 are dropped. Queries are quantised the same way, at ``query_scale`` (by default the same 100;
a smaller one makes PISA faster: its binding passes a term of weight w as w copies of it). The quantised vectors are stored with the
index (``vectors/``: CSR arrays as ``.npy``, the document ids and the vocabulary as JSON), so every engine
sees identical integers and the exact engines (PISA, Lucene) return the same top-k up to ties; see
:mod:`uniret.index.sparse_engines`. A hit's score is the integer dot product divided by ``scale x query_scale``, which
approximates the float dot product of the unquantised vectors.

Layout of a saved index::

    manifest.json           kind "sparse"; encoder identity, vocabulary hash, scale, query_scale, engine
    vectors/docids.json     document ids, row order
    vectors/indptr.npy      (n + 1,) int64
    vectors/indices.npy     (nnz,) int32 term ids
    vectors/values.npy      (nnz,) int32 quantised weights (> 0)
    vectors/vocabulary.json term id -> token
    engine/<name>/          the engine's own files (Lucene index folder, PISA files, Seismic file)
    docs.jsonl.gz           the documents, for display

``load(path, encoder=...)`` rejects an encoder whose identity (weights hash, max length, pooling) or vocabulary
differs from the one the index was built with (:class:`~uniret.errors.IndexMismatchError`). A missing or damaged
file fails the load with an error naming it. An empty document gets an empty vector: it is kept (and counted),
and matches no query.

Each hit can be explained: :meth:`SparseIndex.explain` gives the terms a query and a document share, with their
contributions ``q_weight * d_weight`` to the score, largest first (``uniret search`` prints them).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from uniret.data import Corpus, Run
from uniret.errors import IndexMismatchError
from uniret.index.manifest import (
    DocStore,
    StoredDocuments,
    atomic_directory,
    check_encoder,
    corpus_identity,
    read_manifest,
    write_manifest,
)
from uniret.index.sparse_engines import (
    ENGINES,
    ImpactVectors,
    Query,
    default_threads,
    escape_terms,
    resolve_engine,
)
from uniret.protocols import SparseVectors

logger = logging.getLogger(__name__)

SCALE = 100
"""Quantisation: integer weight = round(weight x SCALE); weights that round to 0 are dropped."""
VECTORS = "vectors"
ENGINE_DIR = "engine"


def quantise(vectors: SparseVectors, scale: float = SCALE) -> ImpactVectors:
    """Integer impacts ``round(w * scale)`` (half to even, as numpy rounds), zeros dropped, row order kept."""
    indptr = np.asarray(vectors.indptr, dtype=np.int64)
    data = np.asarray(vectors.data, dtype=np.float64)
    if len(data) and (not np.all(np.isfinite(data)) or data.min() < 0):
        raise ValueError("sparse weights must be finite and non-negative to be quantised")
    values = np.rint(data * scale).astype(np.int64)
    keep = values > 0
    rows = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    new_indptr = np.zeros_like(indptr)
    np.cumsum(np.bincount(rows[keep], minlength=len(indptr) - 1), out=new_indptr[1:])
    if len(values) and values.max() > np.iinfo(np.int32).max:
        raise ValueError(f"a weight of {data.max()} overflows int32 once scaled by {scale}")
    return ImpactVectors(new_indptr, np.asarray(vectors.indices)[keep].astype(np.int32), values[keep].astype(np.int32))


def vocabulary_hash(vocabulary: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(vocabulary).encode("utf-8", "surrogatepass")).hexdigest()[:16]


def encode_cached(encoder: Any, texts: Sequence[str], side: str, *, cache: bool) -> SparseVectors:
    """``encoder.encode_documents`` (``side="documents"``) or ``encode_queries``; with ``cache``, the vectors
    are kept as ``.npy`` under ``$UNIRET_CACHE/sparse-vectors/<hash of encoder identity and texts>/``."""
    encode = encoder.encode_documents if side == "documents" else encoder.encode_queries
    if not cache:
        return encode(list(texts))
    from uniret.assets import cached_arrays

    def compute() -> dict[str, Any]:
        v = encode(list(texts))
        return {"indptr": v.indptr, "indices": v.indices, "data": v.data}

    arrays = cached_arrays("sparse-vectors", [side, encoder.identity], texts, compute)
    return SparseVectors(arrays["indptr"], arrays["indices"], arrays["data"], encoder.vocabulary)


ENCODE_BLOCK = 10_000
"""Documents encoded per call when a sparse index streams its corpus."""


def concat_sparse(parts: Sequence[SparseVectors]) -> SparseVectors:
    """Stack CSR batches over one vocabulary into one."""
    if len(parts) == 1:
        return parts[0]
    offsets = np.cumsum([0] + [int(p.indptr[-1]) for p in parts[:-1]])
    indptr = np.concatenate([parts[0].indptr[:1]] + [p.indptr[1:] + o for p, o in zip(parts, offsets, strict=True)])
    return SparseVectors(indptr.astype(np.int64), np.concatenate([p.indices for p in parts]),
                         np.concatenate([p.data for p in parts]), parts[0].vocabulary)


class SparseIndex(StoredDocuments):
    """The search protocol over quantised sparse vectors, served by one engine (``lucene``, ``pisa``,
    ``seismic``; ``auto``: the fastest exact engine installed). ``threads`` (default: the usable cores) build the
    engine and answer a batch of queries (see :mod:`uniret.index.sparse_engines` for the engines' threading)."""

    kind = "sparse"

    def __init__(self, encoder: Any, engine: str = "auto", *, scale: float = SCALE, query_scale: float | None = None,
                 cache_embeddings: bool = False, threads: int | None = None,
                 workdir: str | Path | None = None) -> None:
        self.encoder = encoder
        self.engine_name = resolve_engine(engine)
        self.scale = scale
        self.query_scale = scale if query_scale is None else query_scale
        if not (self.scale > 0 and self.query_scale > 0):
            raise ValueError(f"the quantisation scales must be positive, got scale={scale!r}, "
                             f"query_scale={query_scale!r}")
        self.cache_embeddings = cache_embeddings
        self.threads = threads or default_threads()
        self.workdir = Path(workdir) if workdir is not None else None
        self._ids: list[str] = []
        self._vectors: ImpactVectors | None = None
        self._vocabulary: list[str] = []
        self._terms: list[str] = []
        self._engine: Any = None
        self._scratch: Any = None  # TemporaryDirectory holding a freshly built engine until save()
        self._corpus: Corpus | None = None
        self._docstore: DocStore | None = None
        self._source_dir: Path | None = None
        self._source_manifest: dict[str, Any] | None = None
        self._query_cache: dict[str, Query] = {}
        self._rows: dict[str, int] = {}
        self.index_seconds: float | None = None

    # -- building -------------------------------------------------------------------------------
    def index(self, corpus: Corpus) -> None:
        """Encode and index ``corpus``. Without the vector cache, documents are encoded in blocks of
        :data:`ENCODE_BLOCK` as the corpus streams from its file, so no more than one block of texts is held."""
        start = time.perf_counter()
        ids: list[str] = []
        if self.cache_embeddings:
            texts: list[str] = []
            for d in corpus:
                ids.append(d.id)
                texts.append(d.full_text())
            vectors = encode_cached(self.encoder, texts, "documents", cache=True)
        else:
            parts = []
            for block in corpus.batches(ENCODE_BLOCK):
                ids.extend(d.id for d in block)
                parts.append(self.encoder.encode_documents([d.full_text() for d in block]))
            vectors = concat_sparse(parts)
            del parts
        quantised, vocabulary = self._quantised(ids, vectors)
        del vectors  # the float vectors are not needed while the engine builds
        self._add_quantised(ids, quantised, vocabulary)
        self._corpus = corpus
        self.index_seconds = time.perf_counter() - start
        logger.info("sparse index (%s) of %d documents built in %.1f s", self.engine_name, len(ids),
                    self.index_seconds)

    def add_vectors(self, ids: Sequence[str], vectors: SparseVectors) -> None:
        """Build the index from encoded documents (rows in the order of ``ids``)."""
        self._add_quantised(ids, *self._quantised(ids, vectors))

    def _quantised(self, ids: Sequence[str], vectors: SparseVectors) -> tuple[ImpactVectors, Sequence[str]]:
        if len(vectors) != len(ids):
            raise ValueError(f"expected {len(ids)} sparse vectors, got {len(vectors)}")
        self._check_vocabulary(vectors.vocabulary)
        return quantise(vectors, self.scale), vectors.vocabulary

    def _add_quantised(self, ids: Sequence[str], quantised: ImpactVectors, vocabulary: Sequence[str]) -> None:
        import tempfile

        self._ids = list(ids)
        self._vectors = quantised
        self._vocabulary = list(vocabulary)
        self._terms = escape_terms(self._vocabulary)
        empty = int(np.sum(np.diff(self._vectors.indptr) == 0))
        if empty:
            logger.warning("%d of %d documents have an empty sparse vector (no weight >= %.3f): they are indexed "
                           "and match no query", empty, len(ids), 0.5 / self.scale)
        if self.workdir is not None:
            self.workdir.mkdir(parents=True, exist_ok=True)
        if self._scratch is not None:
            self._scratch.cleanup()
        self._scratch = tempfile.TemporaryDirectory(prefix="uniret-sparse-", dir=self.workdir)
        folder = Path(self._scratch.name) / self.engine_name
        engine = ENGINES[self.engine_name]
        engine.build(folder, self._ids, self._vectors, self._terms, threads=self.threads)
        self._engine = engine.open(folder, self._ids, self._terms)
        self._query_cache, self._rows = {}, {}

    def _check_vocabulary(self, vocabulary: Sequence[str]) -> None:
        expected = getattr(self.encoder, "vocabulary", None)
        if expected is not None and list(vocabulary) != list(expected):
            raise IndexMismatchError("the sparse vectors' vocabulary differs from the encoder's "
                                     f"({len(vocabulary)} vs {len(expected)} terms)")

    # -- searching ------------------------------------------------------------------------------
    @property
    def _denominator(self) -> float:
        """What an integer dot product of a document (x scale) and a query (x query_scale) is divided by."""
        return float(self.scale) * float(self.query_scale)

    def _quantised_queries(self, texts: Sequence[str]) -> list[Query]:
        return quantise(encode_cached(self.encoder, texts, "queries", cache=False), self.query_scale).as_queries()

    def search(self, queries: Mapping[str, str], k: int = 10) -> Run:
        """``{qid: {doc_id: score}}`` (score: the integer dot product / (scale x query_scale)). An empty or whitespace-only
        query gets no hits (``{}``, with a warning), as in the other families."""
        from uniret.index.lucene import warn_empty_queries

        if self._engine is None:
            raise RuntimeError("the index is empty: call index(corpus) or load(path) first")
        qids = [q for q in queries if queries[q].strip()]
        warn_empty_queries([q for q in queries if not queries[q].strip()])
        encoded = self._quantised_queries([queries[q] for q in qids]) if qids else []
        self._query_cache = {queries[q]: v for q, v in zip(qids[-64:], encoded[-64:], strict=True)}
        return self.search_vectors(qids, encoded, k, queries)

    def search_vectors(self, qids: Sequence[str], encoded: Sequence[Query], k: int,
                       all_queries: Mapping[str, str] | None = None) -> Run:
        """Search with quantised query vectors (``{term id: integer weight}``), e.g. cached ones."""
        hits = self._engine.search(list(encoded), k, threads=self.threads) if encoded else []
        denominator = self._denominator
        run: Run = {q: {self._ids[row]: score / denominator for row, score in h} for q, h in
                    zip(qids, hits, strict=True)}
        return {q: run.get(q, {}) for q in (all_queries if all_queries is not None else qids)}

    def explain(self, query: str, doc_id: str, top: int = 5) -> dict[str, float]:
        """The terms ``query`` and document ``doc_id`` share, with their contributions to the score
        (``q_weight * d_weight / (scale x query_scale)``), largest first, at most ``top``."""
        if self._vectors is None:
            raise RuntimeError("the index is empty: call index(corpus) or load(path) first")
        q = self._query_cache.get(query)
        if q is None:
            q = self._quantised_queries([query])[0]
            self._query_cache[query] = q
        row = self._row_of().get(doc_id)
        if row is None:
            raise KeyError(f"document {doc_id!r} is not in this index")
        idx, val = self._vectors.row(row)
        shared = [(self._vocabulary[int(t)], q[int(t)] * int(w)) for t, w in zip(idx, val, strict=True)
                  if int(t) in q]
        shared.sort(key=lambda x: (-x[1], x[0]))
        return {term: c / self._denominator for term, c in shared[:top]}

    def matched_terms(self, query: str, doc_ids: Sequence[str], top: int = 5) -> dict[str, dict[str, float]]:
        """:meth:`explain` for several documents (what the search service and page show per hit); unknown ids are
        left out."""
        rows = self._row_of()
        return {d: self.explain(query, d, top) for d in doc_ids if d in rows}

    def _row_of(self) -> dict[str, int]:
        if len(self._rows) != len(self._ids):
            self._rows = {d: i for i, d in enumerate(self._ids)}
        return self._rows

    def stored_vectors(self) -> tuple[list[str], ImpactVectors] | None:
        """The document ids and their quantised vectors."""
        return (list(self._ids), self._vectors) if self._vectors is not None else None

    def sparsity(self) -> dict[str, float]:
        """Mean number of non-zero (quantised) weights per document."""
        if self._vectors is None:
            return {}
        return {"mean_nnz_per_doc": float(np.mean(np.diff(self._vectors.indptr))) if len(self._ids) else 0.0}

    # -- persistence ----------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        import shutil

        if self._vectors is None or self._engine is None:
            raise RuntimeError("nothing to save: call index(corpus) first")
        path = Path(path)
        with atomic_directory(path) as tmp:
            vec = tmp / VECTORS
            vec.mkdir()
            np.save(vec / "indptr.npy", self._vectors.indptr)
            np.save(vec / "indices.npy", self._vectors.indices)
            np.save(vec / "values.npy", self._vectors.values)
            (vec / "docids.json").write_text(json.dumps(self._ids, ensure_ascii=False), encoding="utf-8")
            (vec / "vocabulary.json").write_text(json.dumps(self._vocabulary, ensure_ascii=False), encoding="utf-8")
            (tmp / ENGINE_DIR).mkdir()
            shutil.copytree(self._engine.directory, tmp / ENGINE_DIR / self.engine_name)
            DocStore.persist(tmp, self._corpus, self._source_dir)
            identity = self.encoder.identity
            write_manifest(tmp, self.kind, len(self._ids), encoder=identity, dimension=identity.get("dimension"),
                           similarity="dot",
                           settings={"engine": self.engine_name, "scale": self.scale,
                                     "query_scale": self.query_scale,
                                     "vocabulary_size": len(self._vocabulary),
                                     "vocabulary_hash": vocabulary_hash(self._vocabulary),
                                     "nnz": int(len(self._vectors.values))},
                           corpus=corpus_identity(self._corpus, self._source_manifest))
        logger.info("saved sparse index (%s) to %s", self.engine_name, path)
        # search the saved copy from now on and free the build's scratch folder
        folder = path.resolve() / ENGINE_DIR / self.engine_name
        self._engine = ENGINES[self.engine_name].open(folder, self._ids, self._terms)
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None
        return path

    @classmethod
    def load(cls, path: str | Path, encoder: Any = None, *, device: str | None = "auto",
             engine: str | None = None, query_scale: float | None = None) -> SparseIndex:
        """Open a saved index. Without ``encoder`` the one the manifest records is loaded; with one, it must be
        the encoder the index was built with (same weights hash, settings and vocabulary). ``engine``: another
        engine than the saved one, built now from the stored vectors into a temporary folder. ``query_scale``:
        quantise queries at another scale than the saved one (the documents' impacts stay as built)."""
        path = Path(path)
        manifest = read_manifest(path, expected_kind=cls.kind)
        settings = manifest.get("settings", {})
        ids, vectors, vocabulary = cls._read_vectors(path, manifest)
        built = manifest.get("encoder") or {}
        if encoder is None:
            from uniret.retriever.splade import SpladeEncoder

            source = built.get("path") if built.get("path") and Path(built["path"]).exists() else built.get("name")
            encoder = SpladeEncoder(source, device=device, max_length=built.get("max_length") or 256,
                                    pooling=built.get("pooling", "max"), backend=built.get("backend", "torch"),
                                    top_k=built.get("top_k"), threshold=built.get("threshold"))
        check_encoder(manifest, encoder.identity, path)
        for key in ("pooling", "type"):
            if key in built and key in encoder.identity and built[key] != encoder.identity[key]:
                raise IndexMismatchError(f"{path}: index built with encoder setting {key}={built[key]!r}, given "
                                         f"{encoder.identity[key]!r}")
        given = list(getattr(encoder, "vocabulary", vocabulary))
        if vocabulary_hash(given) != settings.get("vocabulary_hash") or given != vocabulary:
            raise IndexMismatchError(
                f"{path}: the encoder's vocabulary ({len(given)} terms, hash {vocabulary_hash(given)}) differs from "
                f"the index's ({len(vocabulary)} terms, hash {settings.get('vocabulary_hash')}); "
                "re-index with this encoder or pass the one the index was built with")
        saved_engine = settings.get("engine", "lucene")
        self = cls(encoder, engine or saved_engine, scale=settings.get("scale", SCALE),
                   query_scale=query_scale or settings.get("query_scale"))
        self._ids, self._vectors, self._vocabulary = ids, vectors, vocabulary
        self._terms = escape_terms(vocabulary)
        self._source_dir = path
        self._source_manifest = manifest
        if self.engine_name == saved_engine:
            self._engine = ENGINES[saved_engine].open(path / ENGINE_DIR / saved_engine, ids, self._terms)
        else:
            import tempfile

            self._scratch = tempfile.TemporaryDirectory(prefix="uniret-sparse-")
            folder = Path(self._scratch.name) / self.engine_name
            ENGINES[self.engine_name].build(folder, ids, vectors, self._terms, threads=self.threads)
            self._engine = ENGINES[self.engine_name].open(folder, ids, self._terms)
        return self

    @staticmethod
    def _read_vectors(path: Path, manifest: dict[str, Any]) -> tuple[list[str], ImpactVectors, list[str]]:
        vec = path / VECTORS
        arrays = {}
        for name, dtype in (("indptr", np.int64), ("indices", np.int32), ("values", np.int32)):
            file = vec / f"{name}.npy"
            if not file.is_file():
                raise IndexMismatchError(f"{file}: missing; the manifest says a 'sparse' index, expected its "
                                         f"stored vectors ({VECTORS}/indptr.npy, indices.npy, values.npy)")
            try:
                arrays[name] = np.load(file, allow_pickle=False)
            except (ValueError, OSError, EOFError) as e:
                raise IndexMismatchError(f"{file}: corrupt ({e}); expected a .npy array of {np.dtype(dtype).name}; "
                                         "rebuild the index with 'uniret index'") from None
            if arrays[name].dtype != dtype or arrays[name].ndim != 1:
                raise IndexMismatchError(f"{file}: corrupt; expected a 1-d {np.dtype(dtype).name} array, found "
                                         f"{arrays[name].dtype} of shape {arrays[name].shape}")
        lists = {}
        for name in ("docids", "vocabulary"):
            file = vec / f"{name}.json"
            try:
                lists[name] = json.loads(file.read_text(encoding="utf-8"))
            except FileNotFoundError:
                raise IndexMismatchError(f"{file}: missing; expected the index's {name} (a JSON list)") from None
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise IndexMismatchError(f"{file}: corrupt ({e}); expected a JSON list of strings") from None
            if not isinstance(lists[name], list) or not all(isinstance(x, str) for x in lists[name]):
                raise IndexMismatchError(f"{file}: corrupt; expected a JSON list of strings")
        ids, vocabulary = lists["docids"], lists["vocabulary"]
        indptr, indices, values = arrays["indptr"], arrays["indices"], arrays["values"]
        consistent = (len(indptr) == len(ids) + 1 and len(ids) == manifest["num_docs"] and indptr[0] == 0
                      and indptr[-1] == len(indices) == len(values) and np.all(np.diff(indptr) >= 0)
                      and (len(indices) == 0 or (indices.min() >= 0 and indices.max() < len(vocabulary)))
                      and (len(values) == 0 or values.min() > 0))
        if not consistent:
            raise IndexMismatchError(f"{vec}: the stored vectors are inconsistent ({len(ids)} ids, manifest "
                                     f"{manifest['num_docs']} documents, {len(indptr)} row offsets, {len(indices)} "
                                     "term ids); the index is damaged: rebuild it with 'uniret index'")
        return ids, ImpactVectors(indptr, indices, values), vocabulary


    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "engine": self.engine_name, "scale": self.scale,
                "query_scale": self.query_scale, "num_docs": len(self._ids),
                "similarity": "dot", "encoder": self.encoder.identity, **self.sparsity()}
