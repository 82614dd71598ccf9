"""Dense embedder over a sentence-transformers model.

``DenseEncoder`` loads any sentence-transformers model (a local folder, an alias from
:mod:`uniret.assets`, or a hub name) and encodes texts in batches sorted by their exact token length:
each chunk of texts is tokenised once by the fast tokenizer, sorted longest first, and padded only to
the longest sequence of its batch. The forward pass is the model's own module stack, so embeddings are
those ``SentenceTransformer.encode`` returns, up to floating-point noise.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from uniret.assets import cache_dir, content_hash, resolve_model
from uniret.runtime import resolve_device

logger = logging.getLogger(__name__)


class DenseEncoder:
    """The encoder protocol (``encode_queries`` / ``encode_documents``) for a dense embedder."""

    def __init__(
        self,
        model: str | Path = "all-MiniLM-L6-v2",
        *,
        device: str | None = "auto",
        max_length: int | None = 256,
        batch_size: int = 32,
        query_prompt: str = "",
        document_prompt: str = "",
        normalize: bool | None = None,
        chunk_size: int = 8192,
        cache_embeddings: bool = False,
    ) -> None:
        from sentence_transformers import SentenceTransformer

        self.name = str(model)
        self.path = resolve_model(model)
        self.device = resolve_device(device)
        self.model = SentenceTransformer(self.path, device=self.device)
        self.model.eval()
        if max_length is not None:
            self.model.max_seq_length = max_length
        self.max_length = int(self.model.max_seq_length)
        self.batch_size = batch_size
        self.query_prompt = query_prompt
        self.document_prompt = document_prompt
        has_normalize = any(type(m).__name__ == "Normalize" for m in self.model)
        self.normalize = bool(normalize) and not has_normalize
        self.similarity = "cosine" if (has_normalize or normalize) else "dot"
        self.chunk_size = chunk_size
        self.cache_embeddings = cache_embeddings
        self.tokenizer = self.model.tokenizer
        self._hash: str | None = None
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        dim = get_dim()
        if dim is None:
            raise ValueError(f"{self.path}: cannot tell the embedding dimension of this model")
        self.dimension = int(dim)

    # -- identity ---------------------------------------------------------------------------------
    @property
    def model_hash(self) -> str:
        if self._hash is None:
            self._hash = content_hash(self.path) if Path(self.path).exists() else f"hub:{self.path}"
        return self._hash

    @property
    def identity(self) -> dict[str, Any]:
        return {
            "type": "dense",
            "name": self.name,
            "path": self.path,
            "hash": self.model_hash,
            "dimension": self.dimension,
            "similarity": self.similarity,
            "max_length": self.max_length,
            "query_prompt": self.query_prompt,
            "document_prompt": self.document_prompt,
        }

    # -- encoding ---------------------------------------------------------------------------------
    def encode_queries(self, texts: Sequence[str], show_progress: bool | None = None) -> np.ndarray:
        return self.encode([self.query_prompt + t for t in texts], desc="encoding queries",
                           show_progress=show_progress)

    def encode_documents(self, texts: Sequence[str], show_progress: bool | None = None) -> np.ndarray:
        texts = [self.document_prompt + t for t in texts]
        if not self.cache_embeddings:
            return self.encode(texts, desc="encoding documents", show_progress=show_progress)
        digest = hashlib.sha256(repr(sorted(self.identity.items())).encode())
        for t in texts:
            digest.update(t.encode("utf-8", "surrogatepass") + b"\0")
        cached = cache_dir("embeddings") / f"{digest.hexdigest()[:24]}.npy"
        if cached.is_file():
            logger.info("document embeddings loaded from cache %s", cached)
            return np.load(cached)
        emb = self.encode(texts, desc="encoding documents", show_progress=show_progress)
        tmp = cached.with_suffix(".tmp.npy")
        np.save(tmp, emb)
        tmp.replace(cached)
        return emb

    def _tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        enc = self.tokenizer(list(texts), truncation=True, max_length=self.max_length, padding=False,
                             return_attention_mask=False, return_token_type_ids=False)
        return list(enc["input_ids"])

    def _forward(self, ids: list[list[int]]) -> torch.Tensor:
        longest = max(len(x) for x in ids)
        pad = self.tokenizer.pad_token_id or 0
        input_ids = np.full((len(ids), longest), pad, dtype=np.int64)
        mask = np.zeros((len(ids), longest), dtype=np.int64)
        right = getattr(self.tokenizer, "padding_side", "right") == "right"
        for row, seq in enumerate(ids):
            if right:
                input_ids[row, : len(seq)] = seq
                mask[row, : len(seq)] = 1
            else:
                input_ids[row, longest - len(seq):] = seq
                mask[row, longest - len(seq):] = 1
        features: dict[str, torch.Tensor] = {
            "input_ids": torch.from_numpy(input_ids).to(self.device),
            "attention_mask": torch.from_numpy(mask).to(self.device),
        }
        if "token_type_ids" in getattr(self.tokenizer, "model_input_names", []):
            features["token_type_ids"] = torch.zeros_like(features["input_ids"])
        out = self.model(features)["sentence_embedding"]
        if self.normalize:
            out = torch.nn.functional.normalize(out, p=2, dim=-1)
        return out

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], desc: str = "encoding", show_progress: bool | None = None) -> np.ndarray:
        """Embed ``texts`` in length-sorted batches; returns float32 ``(len(texts), dimension)``."""
        if show_progress is None:
            show_progress = logger.isEnabledFor(logging.INFO) and len(texts) > self.batch_size
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        with tqdm(total=len(texts), desc=desc, unit="text", disable=not show_progress) as bar:
            for start in range(0, len(texts), self.chunk_size):
                chunk_ids = self._tokenize(texts[start : start + self.chunk_size])
                order = np.argsort([-len(x) for x in chunk_ids], kind="stable")
                for b in range(0, len(order), self.batch_size):
                    rows = order[b : b + self.batch_size]
                    emb = self._forward([chunk_ids[i] for i in rows])
                    out[start + rows] = emb.float().cpu().numpy()
                    bar.update(len(rows))
        return out
