"""FAISS dense index: flat, HNSW or IVF-PQ by name, or any faiss factory string.

Inner product is used for ``cosine`` and ``dot`` encoders (cosine encoders normalise their outputs),
L2 for ``l2``. On a machine with a CUDA GPU and faiss-gpu, flat and IVF indexes are searched on the
GPU; the saved file is always the CPU index, so it loads anywhere.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from uniret.data import Corpus, Run
from uniret.errors import IndexMismatchError, MissingExtraError
from uniret.index.manifest import (
    DocStore,
    StoredDocuments,
    atomic_directory,
    check_encoder,
    corpus_identity,
    read_manifest,
    write_manifest,
)
from uniret.protocols import Encoder

logger = logging.getLogger(__name__)

INDEX_FILE = "index.faiss"
IDS_FILE = "docids.json"
NAMED_TYPES = ("flat", "hnsw", "ivf-pq")


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as e:
        raise MissingExtraError("faiss", "cpu") from e
    return faiss


def factory_string(index_type: str, num_docs: int, dim: int) -> str:
    """Map a named index type to a faiss factory string; other strings pass through unchanged."""
    if index_type == "flat":
        return "Flat"
    if index_type == "hnsw":
        return "HNSW32,Flat"
    if index_type == "ivf-pq":
        nlist = max(1, min(int(4 * math.sqrt(num_docs)), num_docs // 39 or 1))
        m = next(m for m in (dim // 4, dim // 8, 16, 8, 4, 2, 1) if m >= 1 and dim % m == 0)
        nbits = 8 if num_docs >= 256 * 39 else max(4, min(8, int(math.log2(max(num_docs // 39, 16)))))
        return f"IVF{nlist},PQ{m}x{nbits}"
    return index_type


def _is_cpu_flat_ip(index: Any) -> bool:
    faiss = _faiss()
    return type(index) in (faiss.IndexFlat, faiss.IndexFlatIP) and index.metric_type == faiss.METRIC_INNER_PRODUCT


def flat_ip_search(index: Any, queries: np.ndarray, k: int, block: int = 65_536) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` inner-product search over a CPU flat index's stored vectors (read in place, not copied), by
    blocked matrix products through numpy's BLAS; same results as ``index.search`` (ties aside).

    faiss-cpu 1.15's flat search scans without BLAS below 128,000 queries (``distance_compute_blas_threshold``)
    and its BLAS path is slower still on small query batches; on 2 cores a 200-query search of 100k vectors took
    ~8 s there against ~0.5 s for the matrix product (measured while writing this)."""
    faiss = _faiss()
    n, d = index.ntotal, index.d
    stored = faiss.rev_swig_ptr(index.get_xb(), n * d).reshape(n, d)
    nq = queries.shape[0]
    best_scores = np.full((nq, 0), -np.inf, dtype=np.float32)
    best_rows = np.zeros((nq, 0), dtype=np.int64)
    for start in range(0, n, block):
        scores = queries @ stored[start : start + block].T
        take = min(k, scores.shape[1])
        part = np.argpartition(-scores, take - 1, axis=1)[:, :take]
        best_scores = np.concatenate([best_scores, np.take_along_axis(scores, part, axis=1)], axis=1)
        best_rows = np.concatenate([best_rows, part + start], axis=1)
        if best_scores.shape[1] > k:
            keep = np.argpartition(-best_scores, k - 1, axis=1)[:, :k]
            best_scores = np.take_along_axis(best_scores, keep, axis=1)
            best_rows = np.take_along_axis(best_rows, keep, axis=1)
    order = np.lexsort((best_rows, -best_scores), axis=1) if nq else np.zeros((0, 0), dtype=np.int64)
    return np.take_along_axis(best_scores, order, axis=1), np.take_along_axis(best_rows, order, axis=1)


class FaissIndex(StoredDocuments):
    """The search protocol over a FAISS index of dense document embeddings."""

    kind = "faiss"

    def __init__(self, encoder: Encoder, index_type: str = "flat", *, use_gpu: bool | str = "auto",
                 hnsw_ef_search: int = 128, nprobe: int = 32, shard_size: int | None = None,
                 shards_dir: str | Path | None = None) -> None:
        self.encoder = encoder
        self.shard_size = shard_size  # set: index() streams the corpus through shards on disk (uniret.index.shards)
        self.shards_dir = shards_dir
        self.index_type = index_type
        self.use_gpu = use_gpu
        self.hnsw_ef_search = hnsw_ef_search
        self.nprobe = nprobe
        self.similarity = encoder.identity.get("similarity", "cosine")
        self._index: Any = None
        self._search_index: Any = None
        self._ids: list[str] = []
        self._corpus: Corpus | None = None
        self._docstore: DocStore | None = None
        self._source_dir: Path | None = None
        self._source_manifest: dict[str, Any] | None = None
        self.factory: str | None = None
        self.index_seconds: float | None = None

    @property
    def metric(self) -> int:
        faiss = _faiss()
        return faiss.METRIC_L2 if self.similarity == "l2" else faiss.METRIC_INNER_PRODUCT

    def _dense(self, embeddings: Any) -> np.ndarray:
        if not isinstance(embeddings, np.ndarray):
            raise TypeError(f"a FAISS index needs dense embeddings; encoder {self.encoder.identity.get('name')} "
                            f"returned {type(embeddings).__name__}")
        return embeddings

    # -- building -------------------------------------------------------------------------------
    def index(self, corpus: Corpus) -> None:
        """Encode and index ``corpus``. With ``shard_size``, the corpus is streamed into shards under
        ``shards_dir`` (a restart skips finished shards; under torchrun each rank encodes its share) and only
        the main rank builds the index from them; other ranks return with no index."""
        start = time.perf_counter()
        if self.shard_size is not None:
            from uniret import distributed
            from uniret.index.shards import encode_shards

            if self.shards_dir is None:
                raise ValueError("sharded encoding (shard_size) needs a shards_dir")
            shards = encode_shards(self.encoder, corpus, self.shards_dir, shard_size=self.shard_size)
            if distributed.is_main():
                self.add_shards(shards, corpus)
            self.index_seconds = time.perf_counter() - start
            return
        ids, texts = [], []
        for d in corpus:
            ids.append(d.id)
            texts.append(d.full_text())
        self.add_embeddings(ids, self._dense(self.encoder.encode_documents(texts)))
        self._corpus = corpus
        self.index_seconds = time.perf_counter() - start
        logger.info("FAISS %s index of %d documents built in %.1f s", self.factory, len(ids), self.index_seconds)

    def add_embeddings(self, ids: list[str], embeddings: np.ndarray) -> None:
        """Build the index from precomputed document embeddings (rows in the order of ``ids``)."""
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or embeddings.shape[0] != len(ids):
            raise ValueError(f"expected {len(ids)} embeddings, got an array of shape {embeddings.shape}")
        index = self._new_index(len(ids), embeddings.shape[1], embeddings)
        index.add(embeddings)
        self._index = index
        self._search_index = None
        self._ids = list(ids)

    def add_shards(self, shards: Any, corpus: Corpus | None = None, *, train_rows: int = 100_000) -> None:
        """Build the index from a :class:`uniret.index.shards.ShardSet`, adding one memory-mapped shard at a time
        (a quantised index is trained on the first ``train_rows`` vectors), so the embeddings of the whole
        corpus are never held in memory beside the index. ``corpus``: the encoded corpus, for the doc store."""
        if corpus is not None and corpus.fingerprint != shards.plan["corpus"]["fingerprint"]:
            raise IndexMismatchError(f"{shards.directory}: the shards encode another corpus "
                                     f"({shards.plan['corpus']['source']}) than {corpus.source}")
        index = self._new_index(shards.num_docs, int(shards.dimension), None,
                                sample=lambda: shards.head(train_rows))
        faiss = _faiss()
        ids: list[str] = []
        if type(index) in (faiss.IndexFlat, faiss.IndexFlatIP, faiss.IndexFlatL2):
            # a flat index's storage is sized once and filled in place: adding shard after shard would grow
            # it by doubling and briefly hold old and new buffers (2.5 GB instead of 1.5 at 1M x 384)
            n, d = shards.num_docs, index.d
            index.codes.resize(n * d * 4)
            index.ntotal = n
            stored = faiss.rev_swig_ptr(index.get_xb(), n * d).reshape(n, d)
            for shard_ids, array in shards:
                if len(ids) + len(shard_ids) > n:
                    break
                stored[len(ids) : len(ids) + len(shard_ids)] = array
                ids.extend(shard_ids)
            if len(ids) != n:
                raise IndexMismatchError(f"{shards.directory}: the shards hold {len(ids)} documents, the plan says {n}")
        else:
            for shard_ids, array in shards:
                index.add(np.ascontiguousarray(array, dtype=np.float32))
                ids.extend(shard_ids)
        self._index, self._search_index, self._ids = index, None, ids
        self._corpus = corpus

    def _new_index(self, num_docs: int, dim: int, embeddings: np.ndarray | None, *, sample: Any = None) -> Any:
        """An empty faiss index for ``num_docs`` vectors, trained (when its type needs it) on ``embeddings`` or
        on ``sample()``."""
        faiss = _faiss()
        self.factory = factory_string(self.index_type, num_docs, dim)
        try:
            index = faiss.index_factory(dim, self.factory, self.metric)
        except RuntimeError as e:
            raise ValueError(f"invalid index type {self.index_type!r} (named types: {', '.join(NAMED_TYPES)}, "
                             f"or a faiss factory string): {e}") from None
        if not index.is_trained:
            train = embeddings if embeddings is not None else sample()
            logger.info("training %s on %d vectors", self.factory, len(train))
            index.train(train)
        return index

    def _prepare_search(self) -> Any:
        if self._search_index is not None:
            return self._search_index
        if self._index is None:
            raise RuntimeError("the index is empty: call index(corpus) or load(path) first")
        faiss = _faiss()
        index = self._index
        if hasattr(index, "hnsw"):
            index.hnsw.efSearch = max(self.hnsw_ef_search, 1)
        ivf = faiss.try_extract_index_ivf(index) if hasattr(faiss, "try_extract_index_ivf") else None
        if ivf is not None:
            ivf.nprobe = min(self.nprobe, ivf.nlist)
        want_gpu = self.use_gpu is True or (self.use_gpu == "auto" and hasattr(faiss, "StandardGpuResources")
                                             and faiss.get_num_gpus() > 0)
        if want_gpu and not hasattr(index, "hnsw"):
            if not hasattr(faiss, "StandardGpuResources"):
                raise MissingExtraError("faiss-gpu", "gpu")
            self._gpu_resources = faiss.StandardGpuResources()
            index = faiss.index_cpu_to_gpu(self._gpu_resources, 0, index)
            logger.info("searching on the GPU")
        self._search_index = index
        return index

    def stored_vectors(self) -> tuple[list[str], np.ndarray] | None:
        """The indexed document ids and their exact vectors, when the index keeps them (flat indexes); None
        for compressed or graph indexes."""
        if self._index is None or "Flat" != (self.factory or ""):
            return None
        return list(self._ids), self._index.reconstruct_n(0, self._index.ntotal)

    # -- searching ------------------------------------------------------------------------------
    def search(self, queries: Mapping[str, str], k: int = 10) -> Run:
        """``{qid: {doc_id: score}}``. An empty or whitespace-only query gets no hits (``{}``, logged as a
        warning, as the BM25 index does): its embedding would be that of the prompt or special tokens
        alone, and its nearest documents arbitrary."""
        empty = [q for q in queries if not queries[q].strip()]
        qids = [q for q in queries if queries[q].strip()]
        if empty:
            logger.warning("%d empty queries (%s) get no hits", len(empty),
                           ", ".join(repr(q) for q in empty[:5]) + (", ..." if len(empty) > 5 else ""))
        run: Run = {}
        if qids:
            q_emb = self._dense(self.encoder.encode_queries([queries[q] for q in qids]))
            run = self.search_embeddings(qids, q_emb, k)
        return {q: run.get(q, {}) for q in queries}

    def search_embeddings(self, qids: list[str], embeddings: np.ndarray, k: int) -> Run:
        index = self._prepare_search()
        queries = np.ascontiguousarray(embeddings, dtype=np.float32)
        if _is_cpu_flat_ip(index):
            scores, rows = flat_ip_search(index, queries, min(k, len(self._ids)))
        else:
            scores, rows = index.search(queries, min(k, len(self._ids)))
        run: Run = {}
        for qid, srow, irow in zip(qids, scores, rows, strict=True):
            hits = {self._ids[i]: float(-s if self.similarity == "l2" else s) for s, i in zip(srow, irow, strict=True)
                    if i >= 0}
            run[qid] = hits
        return run

    # -- persistence ----------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        if self._index is None:
            raise RuntimeError("nothing to save: call index(corpus) first")
        faiss = _faiss()
        path = Path(path)
        with atomic_directory(path) as tmp:
            faiss.write_index(self._index, str(tmp / INDEX_FILE))
            (tmp / IDS_FILE).write_text(json.dumps(self._ids), encoding="utf-8")
            DocStore.persist(tmp, self._corpus, self._source_dir)
            identity = self.encoder.identity
            write_manifest(tmp, self.kind, len(self._ids), encoder=identity, dimension=identity.get("dimension"),
                           similarity=self.similarity,
                           settings={"index_type": self.index_type, "factory": self.factory,
                                     "hnsw_ef_search": self.hnsw_ef_search, "nprobe": self.nprobe},
                           corpus=corpus_identity(self._corpus, self._source_manifest))
        logger.info("saved FAISS index to %s", path)
        return path

    @classmethod
    def load(cls, path: str | Path, encoder: Encoder | None = None, *, device: str | None = "auto",
             use_gpu: bool | str = "auto") -> FaissIndex:
        """Load a saved index. Without ``encoder`` the one recorded in the manifest is loaded; with one,
        it must be the encoder the index was built with (same weights hash and dimension)."""
        faiss = _faiss()
        path = Path(path)
        manifest = read_manifest(path, expected_kind=cls.kind)
        index, ids = cls._read_files(path, faiss)
        built = manifest.get("encoder") or {}
        if encoder is None:
            from uniret.retriever.dense import DenseEncoder

            source = built.get("path") if built.get("path") and Path(built["path"]).exists() else built.get("name")
            encoder = DenseEncoder(source, device=device, max_length=built.get("max_length"),
                                   query_prompt=built.get("query_prompt", ""),
                                   document_prompt=built.get("document_prompt", ""),
                                   backend=built.get("backend", "torch"))
        check_encoder(manifest, encoder.identity, path)
        settings = manifest.get("settings", {})
        self = cls(encoder, settings.get("index_type", "flat"), use_gpu=use_gpu,
                   hnsw_ef_search=settings.get("hnsw_ef_search", 128), nprobe=settings.get("nprobe", 32))
        self._index, self._ids = index, ids
        self.factory = settings.get("factory")
        self._source_dir = path
        self._source_manifest = manifest
        if self._index.ntotal != len(self._ids) or len(self._ids) != manifest["num_docs"]:
            raise IndexMismatchError(f"{path}: the index holds {self._index.ntotal} vectors and {len(self._ids)} ids, "
                             f"the manifest says {manifest['num_docs']} documents; the index is damaged")
        if self._index.d != manifest.get("dimension"):
            raise IndexMismatchError(f"{path}: index dimension {self._index.d} differs from the manifest's "
                             f"{manifest.get('dimension')}")
        return self

    @staticmethod
    def _read_files(path: Path, faiss: Any) -> tuple[Any, list[str]]:
        """``index.faiss`` and ``docids.json`` of a saved index; a missing, damaged or corrupt one raises
        :class:`IndexMismatchError` naming the file."""
        for name in (INDEX_FILE, IDS_FILE):
            if not (path / name).is_file():
                hint = (" (it holds a Lucene folder 'lucene/': a BM25 index with a wrong manifest?)"
                        if (path / "lucene").is_dir() else "")
                raise IndexMismatchError(f"{path / name}: missing; the manifest says a 'faiss' index, expected "
                                         f"its files {INDEX_FILE} and {IDS_FILE}{hint}")
        try:
            ids = json.loads((path / IDS_FILE).read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise IndexMismatchError(f"{path / IDS_FILE}: corrupt ({e}); expected a JSON list of document ids; "
                                     "the index is damaged") from None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise IndexMismatchError(f"{path / IDS_FILE}: corrupt; expected a JSON list of document ids (strings)")
        try:
            index = faiss.read_index(str(path / INDEX_FILE))
        except RuntimeError as e:
            first = next((line for line in str(e).splitlines() if line.strip()), "unreadable")
            raise IndexMismatchError(f"{path / INDEX_FILE}: damaged, faiss cannot read it ({first.strip()}); "
                                     "expected an intact index: rebuild it with 'uniret index'") from None
        return index, ids


    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "index_type": self.index_type, "factory": self.factory,
                "num_docs": len(self._ids), "similarity": self.similarity, "encoder": self.encoder.identity}
