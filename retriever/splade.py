"""SPLADE encoding: a masked-language-model backbone plus the log-saturation pooling of SPLADE (Formal et
al., 2021), giving one sparse vocabulary-sized vector per text.

For every token position the MLM logits over the vocabulary pass through ``log(1 + relu(.))``, are masked
by the attention mask, and are pooled over positions by ``max`` (SPLADE v2 / SPLADE++) or ``sum`` (the
first SPLADE). Only non-zero weights are kept: a vector is a :class:`SparseVector` of term ids and
weights (scipy-free; :func:`to_csr` stacks several into CSR arrays). The score of a query and a document
is the dot product of their vectors (:func:`sparse_dot`).

The default backbone is ``splade-tiny`` (packaged weights, see :mod:`uniret.assets`); any folder or hub
name of a masked-LM works. Texts are encoded in length-sorted batches (:mod:`uniret.retriever.batching`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from uniret.protocols import SparseVectors
from uniret.retriever.batching import map_sorted, progress_bar

logger = logging.getLogger(__name__)

POOLINGS = ("max", "sum")


class SparseVector(NamedTuple):
    """Non-zero entries of a vocabulary-sized vector: term ids (int64, ascending) and their weights
    (float32)."""

    indices: np.ndarray
    values: np.ndarray


def sparse_dot(a: SparseVector, b: SparseVector) -> float:
    """Dot product of two sparse vectors."""
    common, ia, ib = np.intersect1d(a.indices, b.indices, assume_unique=True, return_indices=True)
    if common.size == 0:
        return 0.0
    return float(np.dot(a.values[ia], b.values[ib]))


def to_csr(vectors: Sequence[SparseVector]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(indptr, indices, values)`` CSR arrays of ``vectors`` (row ``i`` spans
    ``indptr[i]:indptr[i + 1]``)."""
    indptr = np.zeros(len(vectors) + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([len(v.indices) for v in vectors])
    if not vectors:
        return indptr, np.zeros(0, np.int64), np.zeros(0, np.float32)
    return (indptr, np.concatenate([v.indices for v in vectors]).astype(np.int64),
            np.concatenate([v.values for v in vectors]).astype(np.float32))


class SpladeEncoder:
    """The encoder protocol (``encode_queries`` / ``encode_documents``) for a SPLADE model, returning
    :class:`SparseVector` lists instead of dense arrays."""

    def __init__(self, model: str | Path = "splade-tiny", *, device: str | None = "auto", batch_size: int = 16,
                 max_length: int = 256, pooling: str = "max") -> None:
        from transformers import AutoModelForMaskedLM, AutoTokenizer

        from uniret.assets import resolve_model
        from uniret.runtime import resolve_device

        if pooling not in POOLINGS:
            raise ValueError(f"unknown SPLADE pooling {pooling!r}; expected one of {', '.join(POOLINGS)}")
        self.name = str(model)
        self.path = resolve_model(model)
        self.device = resolve_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        self.model = AutoModelForMaskedLM.from_pretrained(self.path).to(self.device).eval()
        self.batch_size = batch_size
        self.max_length = max_length
        self.pooling = pooling
        self._hash: str | None = None
        self._vocabulary: list[str] | None = None

    @property
    def vocab_size(self) -> int:
        return int(self.model.config.vocab_size)

    @property
    def identity(self) -> dict[str, Any]:
        from uniret.assets import content_hash

        if self._hash is None:
            self._hash = content_hash(self.path) if Path(self.path).exists() else f"hub:{self.path}"
        return {"type": "splade", "name": self.name, "path": self.path, "hash": self._hash,
                "dimension": self.vocab_size, "similarity": "dot", "max_length": self.max_length,
                "pooling": self.pooling}

    def _encode_batch(self, texts: Sequence[str]) -> list[SparseVector]:
        import torch

        enc = self.tokenizer(list(texts), truncation=True, max_length=self.max_length, padding=True,
                             return_tensors="pt").to(self.device)
        logits = self.model(**enc).logits
        weights = torch.log1p(torch.relu(logits)) * enc["attention_mask"].unsqueeze(-1)
        reps = (weights.amax(dim=1) if self.pooling == "max" else weights.sum(dim=1)).float().cpu()
        out = []
        for rep in reps:
            idx = torch.nonzero(rep, as_tuple=True)[0]
            out.append(SparseVector(idx.numpy(), rep[idx].numpy()))
        return out

    def encode(self, texts: Sequence[str], desc: str = "splade: encoding",
               show_progress: bool | None = None) -> list[SparseVector]:
        """One sparse vector per text, in length-sorted batches (by characters)."""
        import torch

        if show_progress is None:
            show_progress = logger.isEnabledFor(logging.INFO) and len(texts) > self.batch_size
        with torch.inference_mode(), progress_bar(len(texts), desc, unit="text", show=show_progress) as bar:
            return map_sorted(lambda rows: self._encode_batch([texts[i] for i in rows]), [len(t) for t in texts],
                              self.batch_size, bar=bar)

    @property
    def vocabulary(self) -> list[str]:
        """Term id -> token string (the model's vocabulary, in id order)."""
        if self._vocabulary is None:
            self._vocabulary = self.tokenizer.convert_ids_to_tokens(list(range(self.vocab_size)))
        return self._vocabulary

    def batch(self, vectors: Sequence[SparseVector]) -> SparseVectors:
        indptr, indices, values = to_csr(vectors)
        return SparseVectors(indptr, indices.astype(np.int32), values, self.vocabulary)

    def encode_queries(self, texts: Sequence[str], show_progress: bool | None = None) -> SparseVectors:
        return self.batch(self.encode(texts, desc="splade: queries", show_progress=show_progress))

    def encode_documents(self, texts: Sequence[str], show_progress: bool | None = None) -> SparseVectors:
        return self.batch(self.encode(texts, desc="splade: documents", show_progress=show_progress))

    def to_terms(self, vector: SparseVector) -> dict[str, float]:
        """The vector as ``{token: weight}``, by weight descending."""
        tokens = self.tokenizer.convert_ids_to_tokens(vector.indices.tolist())
        pairs = sorted(zip(tokens, vector.values.tolist(), strict=True), key=lambda x: -x[1])
        return dict(pairs)
