"""BM25 on Lucene through pyserini/Anserini.

Documents are indexed as pyserini's BEIR "flat" indexes are: one ``contents`` field holding title and
text joined by a space, Anserini's default analyzer (Porter stemming, English stop words), BM25 with
k1=0.9, b=0.4. Indexing runs Anserini's ``IndexCollection`` in a Java 21 subprocess; searching uses
pyserini's ``LuceneSearcher`` in process.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from uniret.data import Corpus, Document, Run
from uniret.index.java import anserini_jar, ensure_jvm, java_executable
from uniret.index.manifest import DocStore, atomic_directory, corpus_identity, read_manifest, write_manifest

logger = logging.getLogger(__name__)

LUCENE_DIR = "lucene"


def run_anserini_indexer(collection_dir: Path, index_dir: Path, *, threads: int, extra: list[str]) -> None:
    """Run ``io.anserini.index.IndexCollection`` on a folder of JSON files; raise with Java's output."""
    cmd = [
        str(java_executable()), "-cp", str(anserini_jar()), "io.anserini.index.IndexCollection",
        "-input", str(collection_dir), "-index", str(index_dir), "-threads", str(threads), *extra,
    ]
    logger.info("indexing with Anserini: %s", " ".join(cmd[3:]))
    proc = subprocess.run(cmd, capture_output=True, text=True)
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


class LuceneBM25Index:
    """The search protocol over a Lucene BM25 index."""

    kind = "lucene-bm25"

    def __init__(self, k1: float = 0.9, b: float = 0.4, threads: int | None = None) -> None:
        self.k1 = k1
        self.b = b
        self.threads = threads or max(1, os.cpu_count() or 1)
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
    def index(self, corpus: Corpus) -> None:
        start = time.perf_counter()
        self._workdir = tempfile.TemporaryDirectory(prefix="uniret-bm25-")
        work = Path(self._workdir.name)
        collection = work / "collection"
        collection.mkdir()
        with open(collection / "docs.jsonl", "w", encoding="utf-8") as f:
            for d in tqdm(corpus, total=len(corpus), desc="bm25: writing collection", unit="doc",
                          disable=not logger.isEnabledFor(logging.INFO)):
                f.write(json.dumps({"id": d.id, "contents": d.full_text()}, ensure_ascii=False) + "\n")
        run_anserini_indexer(collection, work / LUCENE_DIR, threads=self.threads,
                             extra=["-collection", "JsonCollection", "-generator", "DefaultLuceneDocumentGenerator"])
        shutil.rmtree(collection)
        self._index_dir = work / LUCENE_DIR
        self._corpus = corpus
        self._searcher = None
        self.num_docs = len(corpus)
        self.index_seconds = time.perf_counter() - start
        logger.info("BM25 index of %d documents built in %.1f s", self.num_docs, self.index_seconds)

    def save(self, path: str | Path) -> Path:
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
        return path

    @classmethod
    def load(cls, path: str | Path, encoder: LuceneAnalyzer | None = None, *, device: str | None = None,
             threads: int | None = None) -> LuceneBM25Index:
        """Load a saved index; ``encoder``, when given, must be the analysis it was built with (``device`` is
        accepted for the common backend signature and unused)."""
        manifest = read_manifest(path, expected_kind=cls.kind)
        check_analyzer(manifest, encoder or LuceneAnalyzer(), path)
        settings = manifest.get("settings", {})
        self = cls(k1=settings.get("k1", 0.9), b=settings.get("b", 0.4), threads=threads)
        self._source_dir = Path(path)
        self._source_manifest = manifest
        self._index_dir = self._source_dir / LUCENE_DIR
        if not self._index_dir.is_dir():
            raise FileNotFoundError(f"{path}: the Lucene index folder '{LUCENE_DIR}' is missing")
        self.num_docs = manifest["num_docs"]
        return self

    # -- searching ------------------------------------------------------------------------------
    def _get_searcher(self) -> Any:
        if self._searcher is None:
            if self._index_dir is None:
                raise RuntimeError("the index is empty: call index(corpus) or load(path) first")
            self._searcher = _DirectSearcher(self._index_dir, self.k1, self.b)
        return self._searcher

    def search(self, queries: Mapping[str, str], k: int = 10) -> Run:
        searcher = self._get_searcher()
        run: Run = {}
        for qid, text in tqdm(queries.items(), total=len(queries), desc="bm25: searching", unit="query",
                              disable=not logger.isEnabledFor(logging.INFO) or len(queries) < 1000):
            run[qid] = searcher.search(text, k)
        return run

    def document(self, doc_id: str) -> Document | None:
        """The stored document (from the doc store of a saved index)."""
        if self._docstore is None:
            if self._corpus is not None:
                self._docstore = DocStore({d.id: (d.title, d.text) for d in self._corpus})
            elif self._source_dir is not None:
                self._docstore = DocStore.read(self._source_dir)
        return self._docstore.get(doc_id) if self._docstore else None

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "k1": self.k1, "b": self.b, "fields": "title+text", "num_docs": self.num_docs,
                "index_dir": str(self._index_dir) if self._index_dir else None}


class _DirectSearcher:
    """Lucene ``IndexSearcher`` with BM25, Anserini's default English analyzer and query generator."""

    def __init__(self, index_dir: Path, k1: float, b: float) -> None:
        ensure_jvm()
        from jnius import autoclass, cast

        paths = autoclass("java.nio.file.Paths")
        directory = autoclass("org.apache.lucene.store.FSDirectory").open(paths.get(str(index_dir)))
        self._reader = autoclass("org.apache.lucene.index.DirectoryReader").open(directory)
        self._searcher = autoclass("org.apache.lucene.search.IndexSearcher")(
            cast("org.apache.lucene.index.IndexReader", self._reader))
        self._searcher.setSimilarity(autoclass("org.apache.lucene.search.similarities.BM25Similarity")(float(k1), float(b)))
        self._analyzer = autoclass("io.anserini.analysis.DefaultEnglishAnalyzer").newDefaultInstance()
        self._generator = autoclass("io.anserini.search.query.BagOfWordsQueryGenerator")()
        stored = self._reader.storedFields()
        self._ids = [stored.document(i).get("id") for i in range(self._reader.maxDoc())]

    def search(self, text: str, k: int) -> dict[str, float]:
        query = self._generator.buildQuery("contents", self._analyzer, text)
        ids = self._ids
        return {ids[sd.doc]: float(sd.score) for sd in self._searcher.search(query, k).scoreDocs}
