"""BM25 on Lucene through pyserini/Anserini.

Documents are indexed as pyserini's BEIR "flat" indexes are: one ``contents`` field holding title and
text joined by a space, Anserini's default analyzer (Porter stemming, English stop words), BM25 with
k1=0.9, b=0.4. Indexing runs Anserini's ``IndexCollection`` in a Java 21 subprocess; searching uses
pyserini's ``LuceneSearcher`` in process.

Robustness:

- The Java indexer dies with its Python parent (``PR_SET_PDEATHSIG`` on Linux), so a ``kill -9`` of a
  build leaves no orphaned JVM; its scratch files (the corpus copy and the fresh index) live in a
  ``uniret-bm25-<pid>-*`` folder under ``workdir`` (default: the system temp folder), and folders left
  there by a process that no longer runs (untouched for 10 minutes) are removed by the next build.
- A damaged index (a truncated, garbled or missing Lucene file) ends in :class:`IndexMismatchError`
  naming the index folder: the reader is opened, and on indexes under :data:`VERIFY_LIMIT_BYTES`
  every file's checksum verified, when the index is loaded; a Java error while searching is converted too.
- Lucene's limit on clauses per query (1024 by default) is raised to :data:`MAX_CLAUSES`; a query with
  still more distinct terms is cut to its first words, with a warning, rather than ending a run.
- An empty (or whitespace-only) query gets no hits, with a warning.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from uniret.data import Corpus, Run
from uniret.errors import IndexMismatchError
from uniret.index.java import anserini_jar, ensure_jvm, java_executable
from uniret.index.manifest import (
    DocStore,
    StoredDocuments,
    atomic_directory,
    corpus_identity,
    read_manifest,
    write_manifest,
)

logger = logging.getLogger(__name__)

LUCENE_DIR = "lucene"
SCRATCH_PREFIX = "uniret-bm25-"
MAX_CLAUSES = 1 << 16
"""Clauses a BM25 query may have (Lucene's default is 1024); longer queries are cut with a warning."""
VERIFY_LIMIT_BYTES = 1 << 30
"""Indexes smaller than this have every file's checksum verified on load (about 1 s per GB)."""


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child receive SIGKILL when its parent dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    parent = os.getpid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:  # pragma: no cover - no libc to call
        return None

    def preexec() -> None:
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def run_anserini_indexer(collection_dir: Path, index_dir: Path, *, threads: int, extra: list[str]) -> None:
    """Run ``io.anserini.index.IndexCollection`` on a folder of JSON files; raise with Java's output.

    On Linux the Java process is killed when this process dies, even by ``kill -9``."""
    cmd = [
        str(java_executable()), "-cp", str(anserini_jar()), "io.anserini.index.IndexCollection",
        "-input", str(collection_dir), "-index", str(index_dir), "-threads", str(threads), *extra,
    ]
    logger.info("indexing with Anserini: %s", " ".join(cmd[3:]))
    proc = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=_die_with_parent())
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-20:])
        raise RuntimeError(f"Anserini IndexCollection failed (exit {proc.returncode}):\n{tail}")


class LuceneAnalyzer:
    """The text analysis of uniret's BM25 indexes, as an encoder-like identity: ``load(encoder=)`` rejects an
    index analysed differently (another analyzer, stemmer, stop words or fields)."""

    def __init__(self, analyzer: str = "DefaultEnglishAnalyzer", stemmer: str = "porter",
                 stopwords: str = "lucene-english", fields: str = "title+text") -> None:
        self.settings = {"analyzer": analyzer, "stemmer": stemmer, "stopwords": stopwords, "fields": fields}

    @property
    def identity(self) -> dict[str, Any]:
        return {"name": "anserini-" + self.settings["analyzer"], "similarity": "bm25", **self.settings}


def check_analyzer(manifest: dict[str, Any], analyzer: LuceneAnalyzer, where: str | Path) -> None:
    from uniret.errors import IndexMismatchError

    built = manifest.get("encoder") or {}
    for key, value in analyzer.identity.items():
        if key in built and built[key] != value:
            raise IndexMismatchError(f"{where}: index built with analyzer setting {key}={built[key]!r}, "
                                     f"given {value!r}; re-index or use the same analysis")
STALE_AFTER_S = 600
"""A scratch folder is swept only when nothing in it changed for this long (a process id from another
PID namespace sharing the folder may look dead while its build runs)."""


def _last_change(folder: Path) -> float:
    times = [folder.stat().st_mtime]
    for child in folder.iterdir():
        times.append(child.stat().st_mtime)
        if child.is_dir():
            times += [grandchild.stat().st_mtime for grandchild in child.iterdir()]
    return max(times)


def _sweep_stale_scratch(parent: Path) -> None:
    """Remove ``uniret-bm25-<pid>-*`` folders under ``parent`` whose process no longer runs and in which
    nothing changed for :data:`STALE_AFTER_S` seconds."""
    pattern = re.compile(rf"^{re.escape(SCRATCH_PREFIX)}(\d+)-")
    try:
        entries = list(parent.iterdir())
    except OSError:
        return
    for entry in entries:
        m = pattern.match(entry.name)
        if not m or int(m.group(1)) == os.getpid() or not entry.is_dir():
            continue
        try:
            os.kill(int(m.group(1)), 0)
        except ProcessLookupError:
            try:
                stale = time.time() - _last_change(entry) > STALE_AFTER_S
            except OSError:
                continue
            if stale:
                logger.info("removing %s, left by a BM25 build that did not finish", entry)
                shutil.rmtree(entry, ignore_errors=True)
        except OSError:  # alive, owned by someone else
            pass


class LuceneBM25Index(StoredDocuments):
    """The search protocol over a Lucene BM25 index.

    ``workdir`` is the folder under which a build keeps its scratch files (a copy of the corpus and the
    fresh Lucene index, until :meth:`save`); default: the system temp folder. A caller that writes the
    index atomically passes a folder inside its own staging directory, so that nothing is left behind.
    """

    kind = "lucene-bm25"

    def __init__(self, k1: float = 0.9, b: float = 0.4, threads: int | None = None, *,
                 workdir: str | Path | None = None) -> None:
        self.k1 = k1
        self.b = b
        self.threads = threads or max(1, os.cpu_count() or 1)
        self.workdir = Path(workdir) if workdir is not None else None
        self._index_dir: Path | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self._docstore: DocStore | None = None
        self._corpus: Corpus | None = None
        self._searcher: Any = None
        self._source_dir: Path | None = None
        self._source_manifest: dict[str, Any] | None = None
        self.num_docs = 0
        self.index_seconds: float | None = None

    # -- building -------------------------------------------------------------------------------
    def index(self, corpus: Corpus, *, workdir: str | Path | None = None) -> None:
        """Index ``corpus``; scratch files go under ``workdir`` (default: the one given to the constructor)."""
        start = time.perf_counter()
        parent = Path(workdir) if workdir is not None else self.workdir
        if parent is not None:
            parent.mkdir(parents=True, exist_ok=True)
        _sweep_stale_scratch(parent if parent is not None else Path(tempfile.gettempdir()))
        if self._workdir is not None:
            self._workdir.cleanup()
        self._workdir = tempfile.TemporaryDirectory(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-", dir=parent)
        work = Path(self._workdir.name)
        collection = work / "collection"
        collection.mkdir()
        try:
            with open(collection / "docs.jsonl", "w", encoding="utf-8") as f:
                for d in tqdm(corpus, total=len(corpus), desc="bm25: writing collection", unit="doc",
                              disable=not logger.isEnabledFor(logging.INFO)):
                    f.write(json.dumps({"id": d.id, "contents": d.full_text()}, ensure_ascii=False) + "\n")
            run_anserini_indexer(collection, work / LUCENE_DIR, threads=self.threads,
                                 extra=["-collection", "JsonCollection", "-generator", "DefaultLuceneDocumentGenerator"])
        except BaseException:
            self._workdir.cleanup()
            self._workdir = None
            raise
        finally:
            shutil.rmtree(collection, ignore_errors=True)
        self._index_dir = work / LUCENE_DIR
        self._corpus = corpus
        self._searcher = None
        self.num_docs = len(corpus)
        self.index_seconds = time.perf_counter() - start
        logger.info("BM25 index of %d documents built in %.1f s", self.num_docs, self.index_seconds)

    def save(self, path: str | Path) -> Path:
        """Write the index to ``path`` (atomically); the build's scratch folder is then removed and the
        saved copy is what this object searches."""
        if self._index_dir is None:
            raise RuntimeError("nothing to save: call index(corpus) first")
        path = Path(path)
        with atomic_directory(path) as tmp:
            shutil.copytree(self._index_dir, tmp / LUCENE_DIR)
            DocStore.persist(tmp, self._corpus, self._source_dir)
            write_manifest(tmp, self.kind, self.num_docs, similarity="bm25", encoder=LuceneAnalyzer().identity,
                           settings={"k1": self.k1, "b": self.b, "fields": "title+text"},
                           corpus=corpus_identity(self._corpus, self._source_manifest))
        logger.info("saved BM25 index to %s", path)
        # From now on search the saved copy, and free the scratch folder of the build.
        self._index_dir = path.resolve() / LUCENE_DIR
        self._searcher = None
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None
        return path

    @classmethod
    def load(cls, path: str | Path, encoder: LuceneAnalyzer | None = None, *, device: str | None = None,
             threads: int | None = None, verify: bool | None = None) -> LuceneBM25Index:
        """Open a saved index; ``encoder``, when given, must be the analysis it was built with (``device`` is
        accepted for the common backend signature and unused). The Lucene reader is opened here, so a damaged
        index fails now with :class:`IndexMismatchError`; ``verify`` also checks every file's checksum (default:
        when the index is smaller than :data:`VERIFY_LIMIT_BYTES`), which catches garbled postings too."""
        manifest = read_manifest(path, expected_kind=cls.kind)
        settings = manifest.get("settings", {})
        self = cls(k1=settings.get("k1", 0.9), b=settings.get("b", 0.4), threads=threads)
        self._source_dir = Path(path)
        self._source_manifest = manifest
        self._index_dir = self._source_dir / LUCENE_DIR
        if not self._index_dir.is_dir():
            hint = " (it holds index.faiss: a dense index with a wrong manifest?)" if (
                self._source_dir / "index.faiss").exists() else ""
            raise IndexMismatchError(f"{self._index_dir}: missing; the manifest says a '{cls.kind}' index, "
                                     f"expected its Lucene folder '{LUCENE_DIR}/'{hint}")
        check_analyzer(manifest, encoder or LuceneAnalyzer(), path)
        self.num_docs = manifest["num_docs"]
        if verify is None:
            verify = sum(f.stat().st_size for f in self._index_dir.iterdir() if f.is_file()) < VERIFY_LIMIT_BYTES
        searcher = self._get_searcher()
        if verify:
            searcher.check_integrity()
        if searcher.num_docs != self.num_docs:
            raise IndexMismatchError(f"{self._index_dir}: the Lucene index holds {searcher.num_docs} documents, "
                                     f"the manifest says {self.num_docs}; the index is damaged")
        return self

    # -- searching ------------------------------------------------------------------------------
    def _get_searcher(self) -> Any:
        if self._searcher is None:
            if self._index_dir is None:
                raise RuntimeError("the index is empty: call index(corpus) or load(path) first")
            self._searcher = _DirectSearcher(self._index_dir, self.k1, self.b)
        return self._searcher

    def search(self, queries: Mapping[str, str], k: int = 10) -> Run:
        """``{qid: {doc_id: score}}``; an empty or whitespace-only query gets ``{}`` (logged as a warning)."""
        searcher = self._get_searcher()
        run: Run = {}
        empty: list[str] = []
        for qid, text in tqdm(queries.items(), total=len(queries), desc="bm25: searching", unit="query",
                              disable=not logger.isEnabledFor(logging.INFO) or len(queries) < 1000):
            if not text.strip():
                empty.append(qid)
                run[qid] = {}
                continue
            run[qid] = searcher.search(text, k)
        warn_empty_queries(empty)
        return run


    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "k1": self.k1, "b": self.b, "fields": "title+text", "num_docs": self.num_docs,
                "index_dir": str(self._index_dir) if self._index_dir else None}


def warn_empty_queries(qids: list[str]) -> None:
    """One warning for the queries that were empty (or whitespace only) and so got no hits."""
    if qids:
        shown = ", ".join(repr(q) for q in qids[:5]) + (", ..." if len(qids) > 5 else "")
        logger.warning("%d empty queries (%s) get no hits", len(qids), shown)


def _java_error(e: Exception) -> str:
    """``Class: first line of the message`` of a ``jnius.JavaException``, on one line."""
    name = getattr(e, "classname", None) or type(e).__name__
    message = getattr(e, "innermessage", None) or str(e)
    first = next((line.strip() for line in str(message).splitlines() if line.strip()), "")
    return f"{name}: {first}" if first else name


class _DirectSearcher:
    """Lucene ``IndexSearcher`` with BM25, Anserini's default English analyzer and query generator.

    Java errors from a damaged index become :class:`IndexMismatchError` naming the index folder."""

    def __init__(self, index_dir: Path, k1: float, b: float) -> None:
        ensure_jvm()
        from jnius import JavaException, autoclass, cast

        self._index_dir = index_dir
        self._java_exception = JavaException
        index_searcher = autoclass("org.apache.lucene.search.IndexSearcher")
        if index_searcher.getMaxClauseCount() < MAX_CLAUSES:  # a JVM-wide setting; only ever raised
            index_searcher.setMaxClauseCount(MAX_CLAUSES)
        try:
            paths = autoclass("java.nio.file.Paths")
            directory = autoclass("org.apache.lucene.store.FSDirectory").open(paths.get(str(index_dir)))
            self._reader = autoclass("org.apache.lucene.index.DirectoryReader").open(directory)
            self._searcher = index_searcher(cast("org.apache.lucene.index.IndexReader", self._reader))
            self._searcher.setSimilarity(
                autoclass("org.apache.lucene.search.similarities.BM25Similarity")(float(k1), float(b)))
            self._analyzer = autoclass("io.anserini.analysis.DefaultEnglishAnalyzer").newDefaultInstance()
            self._generator = autoclass("io.anserini.search.query.BagOfWordsQueryGenerator")()
            stored = self._reader.storedFields()
            self._ids = [stored.document(i).get("id") for i in range(self._reader.maxDoc())]
        except JavaException as e:
            raise self._damaged(e) from None
        self.num_docs = int(self._reader.numDocs())

    def _damaged(self, e: Exception) -> IndexMismatchError:
        return IndexMismatchError(f"{self._index_dir}: the Lucene index is damaged ({_java_error(e)}); "
                                  "expected an intact index: rebuild it with 'uniret index'")

    def check_integrity(self) -> None:
        """Verify the checksum of every file of the index (reads it all once)."""
        try:
            for leaf in self._reader.leaves().toArray():
                leaf.reader().checkIntegrity()
        except self._java_exception as e:
            raise self._damaged(e) from None

    def search(self, text: str, k: int) -> dict[str, float]:
        try:
            return self._search(text, k)
        except self._java_exception as e:
            if "TooManyClauses" not in (getattr(e, "classname", None) or ""):
                raise self._damaged(e) from None
        words = text.split()
        keep = min(len(words) // 2, MAX_CLAUSES)
        while keep >= 1:
            try:
                hits = self._search(" ".join(words[:keep]), k)
            except self._java_exception as e:
                if "TooManyClauses" not in (getattr(e, "classname", None) or ""):
                    raise self._damaged(e) from None
                keep //= 2
                continue
            logger.warning("a query of %d words has more distinct terms than Lucene's limit of %d clauses; "
                           "searched with its first %d words", len(words), MAX_CLAUSES, keep)
            return hits
        return {}  # pragma: no cover - one word is one clause

    def _search(self, text: str, k: int) -> dict[str, float]:
        query = self._generator.buildQuery("contents", self._analyzer, text)
        ids = self._ids
        return {ids[sd.doc]: float(sd.score) for sd in self._searcher.search(query, k).scoreDocs}
