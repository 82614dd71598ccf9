"""Search backends behind one protocol (``index``, ``search``, ``save``, ``load``), each persisted as a
directory with ``manifest.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from uniret.index.manifest import atomic_directory, read_manifest

__all__ = ["atomic_directory", "backend_class", "load_index", "read_manifest"]


def backend_class(kind: str) -> Any:
    """The backend class that loads indexes of manifest kind ``kind`` (looked up in the family registry)."""
    from uniret import families

    return families.for_index_kind(kind).backend_class()


def load_index(path: str | Path, **kwargs: Any) -> Any:
    """Load any saved index; its manifest's kind names the family (:mod:`uniret.families`). Keyword arguments
    go to that backend's ``load`` (``encoder=`` for encoder-based families)."""
    manifest = read_manifest(path)
    return backend_class(manifest["kind"]).load(path, **kwargs)
