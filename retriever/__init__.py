"""Retrievers: encoders behind the encoder protocol (``encode_queries`` / ``encode_documents``)."""

from __future__ import annotations

from typing import Any

__all__ = ["CrossEncoderReranker", "DenseEncoder", "Embedder"]

_LAZY = {
    "DenseEncoder": "uniret.retriever.dense",
    "Embedder": "uniret.retriever.embedder",
    "CrossEncoderReranker": "uniret.retriever.reranker",
}


def __getattr__(name: str) -> Any:  # lazy: importing the package does not import torch
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)
