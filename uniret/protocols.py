"""One protocol per role. Backends, encoders and teachers are duck-typed against these."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from uniret.data import Corpus, Run


@runtime_checkable
class Encoder(Protocol):
    """Turns texts into vectors. Dense encoders return a float32 array ``(n, dim)``."""

    @property
    def identity(self) -> dict[str, Any]:
        """What the encoder is: name or path, content hash, dimension, similarity, settings."""

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray: ...

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray: ...


@runtime_checkable
class SearchBackend(Protocol):
    """A search index over a corpus. Every saved directory holds ``manifest.json``."""

    kind: str

    def index(self, corpus: Corpus) -> None: ...

    def search(self, queries: Mapping[str, str], k: int = 10) -> Run: ...

    def save(self, path: str | Path) -> Path: ...

    def describe(self) -> dict[str, Any]:
        """The identity written into reports: kind, encoder, settings."""
