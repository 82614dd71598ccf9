"""Search backends behind one protocol (``index``, ``search``, ``save``, ``load``), each persisted as a
directory with ``manifest.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from uniret.index.manifest import atomic_directory, read_manifest

__all__ = ["BACKENDS", "atomic_directory", "load_index", "read_manifest"]

BACKENDS = {"faiss": "uniret.index.faiss_index:FaissIndex", "lucene-bm25": "uniret.index.lucene:LuceneBM25Index"}


def backend_class(kind: str) -> Any:
    import importlib

    if kind not in BACKENDS:
        raise ValueError(f"unknown index kind {kind!r}; known kinds: {', '.join(sorted(BACKENDS))}")
    module, _, name = BACKENDS[kind].partition(":")
    return getattr(importlib.import_module(module), name)


def load_index(path: str | Path, **kwargs: Any) -> Any:
    """Load any saved index; its manifest says which backend it is. Keyword arguments go to that
    backend's ``load`` (``encoder=`` for dense indexes)."""
    manifest = read_manifest(path)
    return backend_class(manifest["kind"]).load(path, **kwargs)
