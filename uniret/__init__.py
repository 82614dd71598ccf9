"""uniret: train retrievers, build search indexes, serve retrieval and benchmark embeddings."""

from __future__ import annotations

from uniret.data import BeirDataset, Corpus, Document, Qrels, Queries, Run, load_beir
from uniret.errors import DataFormatError, IndexMismatchError, MissingExtraError, UniretError

__version__ = "0.1.0"

__all__ = [
    "BeirDataset", "Corpus", "DataFormatError", "Document", "IndexMismatchError", "MissingExtraError",
    "Qrels", "Queries", "Run", "UniretError", "__version__", "load_beir",
]
