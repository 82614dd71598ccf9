"""Dense embedder over a sentence-transformers model.

``DenseEncoder`` loads any sentence-transformers model (a local folder, an alias from
:mod:`uniret.assets`, or a hub name) and encodes texts in batches sorted by their exact token length:
each chunk of texts is tokenised once by the fast tokenizer, sorted longest first, and padded only to
the longest sequence of its batch. The forward pass is the model's own module stack, so embeddings are
those ``SentenceTransformer.encode`` returns, up to floating-point noise.

A folder saved by :class:`uniret.retriever.embedder.Embedder` (it holds ``uniret_embedder.json``), or an
``Embedder`` object itself, is encoded through that embedder instead, with its pooling, attention,
query instructions and Matryoshka dimension restored. Both paths share one loop:
:func:`token_ids` -> length-sorted batches (:mod:`uniret.retriever.batching`) -> :func:`pad_token_ids`
-> forward.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from uniret.assets import cached_arrays, content_hash, resolve_model
from uniret.retriever.batching import map_sorted_array, progress_bar
from uniret.runtime import ONNX_BACKENDS, check_backend, inference_autocast, resolve_device

if TYPE_CHECKING:
    from uniret.retriever.embedder import Embedder

logger = logging.getLogger(__name__)


CHARS_PER_TOKEN = 12
"""Characters of a text kept per token of ``max_length`` before tokenising (see :func:`clip_text`). The
first 32 to 512 MiniLM (WordPiece) tokens of every document of SciFact, Cranfield and MS MARCO (5k)
span at most 7.3 characters per token, so 12 leaves a wide margin; a text that still comes up short
is tokenised again with 4 times as many characters, so the ids never change, only the memory does."""


def clip_text(text: str, chars: int, *, from_end: bool = False) -> str:
    """At most ``chars`` characters from the start of ``text`` (the end with ``from_end``), cut at a
    whitespace within the last 256 of them so that no word is split (whitespace-splitting tokenizers:
    WordPiece, byte-level BPE, SentencePiece's Metaspace, then give the kept words the same tokens)."""
    if len(text) <= chars:
        return text
    piece = text[len(text) - chars:] if from_end else text[:chars]
    span = range(min(256, len(piece))) if from_end else range(len(piece) - 1, max(len(piece) - 256, 0) - 1, -1)
    for i in span:
        if piece[i].isspace():
            return piece[i + 1:] if from_end else piece[:i]
    return piece


def _clipped_token_ids(tokenizer: Any, texts: list[str], limit: int) -> list[list[int]]:
    """Token ids truncated to ``limit``, computed from at most ``limit * CHARS_PER_TOKEN`` characters of
    each text (a 50 MB document is never tokenised whole). A clipped text whose tokens do not reach
    ``limit`` is clipped again 4 times longer, until it reaches the limit or is whole."""
    from_end = getattr(tokenizer, "truncation_side", "right") == "left"
    chars = limit * CHARS_PER_TOKEN
    todo = list(range(len(texts)))
    ids: list[list[int]] = [[] for _ in texts]
    while todo:
        pieces = [clip_text(texts[i], chars, from_end=from_end) for i in todo]
        enc = tokenizer(pieces, truncation=True, max_length=limit, padding=False,
                        return_attention_mask=False, return_token_type_ids=False)
        again = []
        for i, piece, row in zip(todo, pieces, enc["input_ids"], strict=True):
            ids[i] = list(row)
            if len(row) < limit and len(piece) < len(texts[i]):
                again.append(i)
        todo, chars = again, chars * 4
    return ids


def token_ids(tokenizer: Any, texts: Sequence[str], max_length: int | None, *, append_eos: bool = False) -> list[list[int]]:
    """Token ids of ``texts`` (the tokenizer's own special tokens included), truncated to ``max_length``.

    With ``append_eos`` the tokenizer's EOS token ends every sequence (decoder embedders pool it): texts
    are truncated one token shorter and EOS is added unless the tokenizer already put it last. With a
    ``max_length``, long texts are clipped to a few characters per token before tokenising (see
    :func:`_clipped_token_ids`), so memory stays bounded whatever a document's size.
    """
    limit = max_length - 1 if append_eos and max_length is not None else max_length
    if limit is not None:
        ids = _clipped_token_ids(tokenizer, list(texts), limit)
    else:
        enc = tokenizer(list(texts), truncation=False, padding=False,
                        return_attention_mask=False, return_token_type_ids=False)
        ids = [list(x) for x in enc["input_ids"]]
    if append_eos:
        eos = tokenizer.eos_token_id
        if eos is None:
            raise ValueError(f"{type(tokenizer).__name__} has no EOS token; set tokenizer.eos_token to append one")
        for seq in ids:
            if not seq or seq[-1] != eos:
                seq.append(eos)
    return ids


def pad_token_ids(ids: Sequence[Sequence[int]], *, pad_id: int, padding_side: str = "right", device: str | torch.device = "cpu",
                  token_type_ids: bool = False) -> dict[str, torch.Tensor]:
    """Pad ``ids`` to the longest sequence on ``padding_side``; returns ``input_ids`` and ``attention_mask``
    (and zero ``token_type_ids`` when asked) on ``device``."""
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    longest = max(len(x) for x in ids)
    input_ids = np.full((len(ids), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(ids), longest), dtype=np.int64)
    for row, seq in enumerate(ids):
        cols = slice(0, len(seq)) if padding_side == "right" else slice(longest - len(seq), longest)
        input_ids[row, cols] = seq
        mask[row, cols] = 1
    features: dict[str, torch.Tensor] = {
        "input_ids": torch.from_numpy(input_ids).to(device),
        "attention_mask": torch.from_numpy(mask).to(device),
    }
    if token_type_ids:
        features["token_type_ids"] = torch.zeros_like(features["input_ids"])
    return features


class DenseEncoder:
    """The encoder protocol (``encode_queries`` / ``encode_documents``) for a dense embedder.

    ``model`` is a sentence-transformers model (folder, alias or hub name), a folder saved by
    :class:`~uniret.retriever.embedder.Embedder`, or an ``Embedder`` object (encoded as it is, on its device).

    ``backend``: ``torch`` (the module), ``bf16`` (the module under bfloat16 autocast), ``onnx`` (ONNX Runtime,
    fp32, graph-optimised) or ``onnx-int8`` (dynamic int8 quantisation); the ONNX model is exported on first use and cached by the model's content
    hash (:mod:`uniret.retriever.onnx`). ``threads``: ONNX Runtime intra-op threads (default
    ``$UNIRET_ONNX_THREADS``, else torch's thread count).
    """

    def __init__(
        self,
        model: str | Path | Embedder = "all-MiniLM-L6-v2",
        *,
        device: str | None = "auto",
        max_length: int | None = 256,
        batch_size: int = 32,
        query_prompt: str = "",
        document_prompt: str = "",
        normalize: bool | None = None,
        chunk_size: int = 8192,
        cache_embeddings: bool = False,
        backend: str = "torch",
        threads: int | None = None,
    ) -> None:
        from uniret.retriever.embedder import CONFIG_FILE, Embedder

        self.backend = check_backend(backend)
        self.threads = threads
        self._session: Any = None

        self.embedder: Embedder | None = None
        if isinstance(model, Embedder):
            self.embedder = model
            self.name, self.path, self.device = model.name, model.path, model.device
        else:
            self.name = str(model)
            self.path = resolve_model(model)
            self.device = resolve_device(device)
            if (Path(self.path) / CONFIG_FILE).is_file():
                self.embedder = Embedder.load(self.path, device=self.device)
        self.batch_size = batch_size
        self.query_prompt = query_prompt
        self.document_prompt = document_prompt
        self.chunk_size = chunk_size
        self.cache_embeddings = cache_embeddings
        self._hash: str | None = None
        if self.embedder is not None:
            self.model: Any = self.embedder
            self.max_length = int(max_length) if max_length is not None else self.embedder.max_length
            has_normalize = self.embedder.normalize
            dim: int | None = self.embedder.dimension
        else:
            from sentence_transformers import SentenceTransformer

            self.model = SentenceTransformer(self.path, device=self.device)
            self.model.eval()
            if max_length is not None:
                self.model.max_seq_length = max_length
            self.max_length = int(self.model.max_seq_length or 0)
            has_normalize = any(type(m).__name__ == "Normalize" for m in self.model)
            get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
            dim = get_dim()
        self.normalize = bool(normalize) and not has_normalize
        self.similarity = "cosine" if (has_normalize or normalize) else "dot"
        self.tokenizer = self.model.tokenizer
        if dim is None:
            raise ValueError(f"{self.path}: cannot tell the embedding dimension of this model")
        self.dimension = int(dim)

    # -- identity ---------------------------------------------------------------------------------
    @property
    def model_hash(self) -> str:
        if self.embedder is not None:
            return str(self.embedder.identity["hash"])  # follows the embedder's training and saving
        if self._hash is None:
            self._hash = content_hash(self.path) if Path(self.path).exists() else f"hub:{self.path}"
        return self._hash

    @property
    def identity(self) -> dict[str, Any]:
        extra = dict(self.embedder.identity) if self.embedder is not None else {}
        return {
            **extra,
            "type": "dense",
            "name": self.name,
            "path": extra.get("path", self.path),
            "hash": self.model_hash,
            "dimension": self.dimension,
            "similarity": self.similarity,
            "max_length": self.max_length,
            "query_prompt": self.query_prompt,
            "document_prompt": self.document_prompt,
            "backend": self.backend,
        }

    # -- encoding ---------------------------------------------------------------------------------
    def encode_queries(self, texts: Sequence[str], show_progress: bool | None = None) -> np.ndarray:
        queries = [self.query_prompt + t for t in texts]
        if self.embedder is not None:
            queries = self.embedder.format_queries(queries)
        return self.encode(queries, desc="encoding queries", show_progress=show_progress)

    def encode_documents(self, texts: Sequence[str], show_progress: bool | None = None) -> np.ndarray:
        texts = [self.document_prompt + t for t in texts]
        if not self.cache_embeddings:
            return self.encode(texts, desc="encoding documents", show_progress=show_progress)
        return cached_arrays("embeddings", self.identity, texts, lambda: {"embeddings": self.encode(
            texts, desc="encoding documents", show_progress=show_progress)})["embeddings"]

    def _tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        append_eos = self.embedder.append_eos if self.embedder is not None else False
        return token_ids(self.tokenizer, texts, self.max_length, append_eos=append_eos)

    def _features(self, ids: list[list[int]]) -> dict[str, torch.Tensor]:
        if self.embedder is not None:
            return self.embedder.collate(ids)
        return pad_token_ids(
            ids, pad_id=self.tokenizer.pad_token_id or 0, device=self.device,
            padding_side=getattr(self.tokenizer, "padding_side", "right"),
            token_type_ids="token_type_ids" in getattr(self.tokenizer, "model_input_names", []))

    def _backbone_config(self) -> Any:
        """The Hugging Face config of the transformer inside the model (None when there is none)."""
        for sub in self.model.modules():
            config = getattr(sub, "config", None)
            if config is not None and hasattr(config, "model_type") and hasattr(sub, "set_attn_implementation"):
                return config
        return None

    def _module_forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.embedder is not None:
            return self.embedder(features)
        return self.model(features)["sentence_embedding"]

    @property
    def session(self) -> Any:
        """The ONNX Runtime session of an ``onnx`` / ``onnx-int8`` backend: exported on first use and cached
        under ``$UNIRET_CACHE/onnx`` by model hash and settings (see :mod:`uniret.retriever.onnx`)."""
        if self.backend not in ONNX_BACKENDS:
            raise ValueError(f"the {self.backend} backend has no ONNX session")
        if self._session is None:
            from uniret.retriever import onnx

            with torch.inference_mode(False):  # encode() runs in inference mode; the export traces
                example = self._features(self._tokenize(
                    ["a short query", "a longer passage, padded to nothing: rows of different lengths keep the "
                     "attention mask in the exported graph"]))
                settings = {"kind": "dense", "hash": self.model_hash, "backend": self.backend,
                            "inputs": sorted(example)}

                def build(folder: Path) -> None:
                    onnx.build_model(folder, self._module_forward, example, modules=[self.model],
                                     backend=self.backend, config=self._backbone_config(), output_name="embedding")

                path = onnx.cached_model(settings, build)
            self._session = onnx.OnnxSession(path, threads=self.threads, device=str(self.device))
        return self._session

    def _forward(self, ids: list[list[int]]) -> torch.Tensor:
        if self.backend in ONNX_BACKENDS:
            out = torch.from_numpy(self.session.run(self._features(ids)))
        else:
            with inference_autocast(self.backend, str(self.device)):
                out = self._module_forward(self._features(ids))
            out = out.float()
        if self.normalize:
            out = torch.nn.functional.normalize(out, p=2, dim=-1)
        return out

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], desc: str = "encoding", show_progress: bool | None = None) -> np.ndarray:
        """Embed ``texts`` in length-sorted batches; returns float32 ``(len(texts), dimension)``."""
        if show_progress is None:
            show_progress = logger.isEnabledFor(logging.INFO) and len(texts) > self.batch_size
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        was_training = self.model.training  # an Embedder may be in the middle of training
        self.model.eval()
        try:
            with progress_bar(len(texts), desc, unit="text", show=show_progress) as bar:
                for start in range(0, len(texts), self.chunk_size):
                    chunk_ids = self._tokenize(texts[start : start + self.chunk_size])

                    def embed(rows: list[int], chunk_ids: list[list[int]] = chunk_ids) -> np.ndarray:
                        return self._forward([chunk_ids[i] for i in rows]).float().cpu().numpy()

                    map_sorted_array(embed, [len(x) for x in chunk_ids], self.batch_size,
                                     out=out[start : start + len(chunk_ids)], bar=bar)
        finally:
            self.model.train(was_training)
        return out
