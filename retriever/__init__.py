"""Retrievers: encoders behind the encoder protocol (``encode_queries`` / ``encode_documents``)."""

from __future__ import annotations

from typing import Any

__all__ = ["DenseEncoder"]


def __getattr__(name: str) -> Any:  # lazy: importing the package does not import torch
    if name == "DenseEncoder":
        from uniret.retriever.dense import DenseEncoder

        return DenseEncoder
    raise AttributeError(name)
