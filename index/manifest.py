"""Persisted index directories: a JSON manifest, atomic writes, a document store, and loading by kind.

Every index directory holds ``manifest.json``::

    {"kind": "faiss", "uniret_version": "0.1.0", "created": "...", "num_docs": 5183,
     "encoder": {"name": ..., "path": ..., "hash": ..., "dimension": 384, "similarity": "cosine"},
     "dimension": 384, "similarity": "cosine", "settings": {...}}

A directory is written through :func:`uniret.atomic.atomic_directory` (a temporary name beside its destination,
swapped in when complete, locked, never replacing anything but a uniret directory).
"""

from __future__ import annotations

import gzip
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from uniret import __version__
from uniret.atomic import atomic_directory  # noqa: F401  (re-exported: uniret.index.manifest.atomic_directory)
from uniret.data import Corpus, Document
from uniret.errors import IndexMismatchError

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
DOCSTORE = "docs.jsonl.gz"


def write_manifest(directory: Path, kind: str, num_docs: int, *, encoder: dict[str, Any] | None = None,
                   dimension: int | None = None, similarity: str | None = None,
                   settings: dict[str, Any] | None = None, corpus: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``manifest.json``. ``corpus``: the indexed corpus's identity (``fingerprint``, ``source``), which
    evaluation checks against the data it is given (:func:`corpus_identity`)."""
    manifest = {
        "kind": kind,
        "uniret_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "num_docs": num_docs,
        "encoder": encoder,
        "dimension": dimension,
        "similarity": similarity,
        "settings": settings or {},
        "corpus": corpus,
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def corpus_identity(corpus: Corpus | None, source_manifest: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """What a manifest records of the indexed corpus: its fingerprint (document ids and texts), size and source.
    An index loaded from disk and saved again keeps its source manifest's record."""
    if corpus is not None:
        return {"fingerprint": corpus.fingerprint, "num_docs": len(corpus), "source": corpus.source}
    return (source_manifest or {}).get("corpus")


def read_manifest(directory: str | Path, expected_kind: str | None = None) -> dict[str, Any]:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{directory} is not a uniret index: {MANIFEST} is missing")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise IndexMismatchError(f"{path}: corrupt manifest ({e.msg} at line {e.lineno})") from None
    for key in ("kind", "num_docs"):
        if key not in manifest:
            raise IndexMismatchError(f"{path}: manifest lacks '{key}'")
    if expected_kind is not None and manifest["kind"] != expected_kind:
        raise IndexMismatchError(
            f"{directory} holds a '{manifest['kind']}' index, not a '{expected_kind}' index"
        )
    return manifest


def check_encoder(manifest: dict[str, Any], encoder_identity: dict[str, Any], where: str | Path) -> None:
    """Raise :class:`IndexMismatchError` when an encoder differs from the one the index was built with."""
    built = manifest.get("encoder") or {}
    if built.get("dimension") is not None and encoder_identity.get("dimension") != built.get("dimension"):
        raise IndexMismatchError(
            f"{where}: index built with a {built.get('dimension')}-dim encoder ({built.get('name')}), "
            f"but the given encoder {encoder_identity.get('name')} has dimension {encoder_identity.get('dimension')}"
        )
    if built.get("hash") and encoder_identity.get("hash") and built["hash"] != encoder_identity["hash"]:
        raise IndexMismatchError(
            f"{where}: index built with encoder {built.get('name')} (hash {built['hash']}), but the given "
            f"encoder is {encoder_identity.get('name')} (hash {encoder_identity['hash']}); re-index or pass "
            "the same model"
        )
    for key in ("max_length", "query_prompt", "normalize"):
        if key in built and key in encoder_identity and built[key] != encoder_identity[key]:
            raise IndexMismatchError(
                f"{where}: index built with encoder setting {key}={built[key]!r}, given {encoder_identity[key]!r}"
            )


class DocStore:
    """Titles and texts of the indexed documents, kept beside an index for display and RAG serving."""

    def __init__(self, docs: dict[str, tuple[str, str]]) -> None:
        self._docs = docs

    @staticmethod
    def write(directory: Path, corpus: Corpus) -> list[str]:
        """Write every document to ``docs.jsonl.gz``; return the ids in corpus order."""
        ids: list[str] = []
        with gzip.open(directory / DOCSTORE, "wt", encoding="utf-8", compresslevel=1) as f:  # level 9 cost minutes at 1M docs
            for d in corpus:
                f.write(json.dumps({"_id": d.id, "title": d.title, "text": d.text}, ensure_ascii=False) + "\n")
                ids.append(d.id)
        return ids

    @staticmethod
    def persist(directory: Path, corpus: Corpus | None, source_dir: Path | None) -> None:
        """Write the doc store of a freshly built index, or copy the one of the index it was loaded from."""
        if corpus is not None:
            DocStore.write(directory, corpus)
        elif source_dir is not None and (source_dir / DOCSTORE).is_file():
            shutil.copy(source_dir / DOCSTORE, directory / DOCSTORE)

    @classmethod
    def read(cls, directory: str | Path) -> DocStore:
        path = Path(directory) / DOCSTORE
        docs: dict[str, tuple[str, str]] = {}
        if path.is_file():
            with gzip.open(path, "rt", encoding="utf-8") as f:
                for line in f:
                    r = json.loads(line)
                    docs[r["_id"]] = (r.get("title", ""), r.get("text", ""))
        return cls(docs)

    def get(self, doc_id: str) -> Document | None:
        if doc_id not in self._docs:
            return None
        title, text = self._docs[doc_id]
        return Document(id=doc_id, title=title, text=text)

    def __len__(self) -> int:
        return len(self._docs)


class StoredDocuments:
    """The ``document(doc_id)`` of the search protocol for backends that keep ``_corpus`` (the corpus they
    indexed) or ``_source_dir`` (the saved index they were loaded from): the doc store is built or read on first
    use."""

    _corpus: Corpus | None = None
    _source_dir: Path | None = None
    _docstore: DocStore | None = None

    def document(self, doc_id: str) -> Document | None:
        """The stored document (title and text), for display and RAG; None when unknown."""
        if self._docstore is None:
            if self._corpus is not None:
                self._docstore = DocStore({d.id: (d.title, d.text) for d in self._corpus})
            elif self._source_dir is not None:
                self._docstore = DocStore.read(self._source_dir)
        return self._docstore.get(doc_id) if self._docstore else None
