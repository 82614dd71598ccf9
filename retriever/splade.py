"""Learned sparse retrieval (SPLADE): a language model's vocabulary head plus SPLADE pooling, on an MLM
encoder or on a decoder-only causal LM, with an optional inference-free query side.

For every token position the LM logits over the vocabulary pass through ``log(1 + relu(.))``, are masked
by the attention mask, and are pooled over positions by ``max`` (SPLADE v2 / SPLADE++) or ``sum`` (the
first SPLADE). A text becomes one vocabulary-sized vector whose few non-zero weights name terms; the score
of a query and a document is the dot product.

The model is composed from sentence-transformers' sparse modules, so that ``SparseEncoder(path)`` loads
what :meth:`SparseModel.save` writes:

- **MLM encoder** (``variant="mlm"``, e.g. SPLADE-tiny): ``Transformer(transformer_task="fill-mask")`` +
  ``SpladePooling``.
- **Decoder-only LM** (SmolLM2): :class:`DecoderSpladeTransformer` (written in uniret: sentence-transformers has
  no causal-LM input for SPLADE) + ``SpladePooling``, in one of two variants, switches on the same class:
  ``echo`` (the input is repeated and only the second copy's logits are pooled, so every pooled position
  has seen the whole text; Mistral-SPLADE) and ``bidirectional`` (non-causal attention,
  :mod:`uniret.retriever.bidirectional`), in :mod:`uniret.retriever.splade_decoder`. Loading these with
  sentence-transformers needs ``SparseEncoder(path, trust_remote_code=True)`` and uniret installed.
- **Inference-free** (``idf`` given): a ``Router`` whose query route is ``SparseStaticEmbedding`` holding
  per-token IDF weights (tokenizer + lookup, no model at query time) and whose document route is the SPLADE
  model.

:class:`SparseModel` is the trainable module (``tokenize`` / ``tokenize_queries`` / ``forward`` for the
bi-encoder trainer); :class:`SpladeEncoder` is the encoder protocol over it, returning
:class:`~uniret.protocols.SparseVectors`, with top-k pruning and a weight threshold at inference.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from sentence_transformers.base.modules.transformer import Transformer

from uniret.protocols import SparseVectors
from uniret.retriever.batching import map_sorted, progress_bar
from uniret.retriever.splade_decoder import (  # re-exported: saved models name splade.DecoderSpladeTransformer
    DECODER_VARIANTS,
    DecoderSpladeTransformer,
    logit_background,
)
from uniret.runtime import ONNX_BACKENDS, check_backend, inference_autocast

logger = logging.getLogger(__name__)

POOLINGS = ("max", "sum")
VARIANTS = ("mlm", "echo", "bidirectional")
CONFIG_FILE = "uniret_sparse.json"


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


def prune(rep: torch.Tensor, *, top_k: int | None = None, threshold: float = 0.0) -> SparseVector:
    """The non-zero entries of one vocabulary-sized vector above ``threshold``, keeping the ``top_k`` largest."""
    idx = torch.nonzero(rep > threshold, as_tuple=True)[0]
    if top_k is not None and idx.numel() > top_k:
        keep = torch.topk(rep[idx], top_k).indices
        idx = torch.sort(idx[keep]).values
    return SparseVector(idx.numpy().astype(np.int64), rep[idx].numpy().astype(np.float32))


def compute_idf(tokenizer: Any, texts: Sequence[str], vocab_size: int, *, batch_size: int = 1000) -> torch.Tensor:
    """BM25's IDF per vocabulary token over ``texts``: ``log(1 + (N - df + 0.5) / (df + 0.5))``; tokens that
    never occur get the largest value. Special tokens are not counted."""
    df = np.zeros(vocab_size, dtype=np.int64)
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(list(texts[start : start + batch_size]), add_special_tokens=False)["input_ids"]
        for ids in enc:
            df[np.unique(np.asarray(ids, dtype=np.int64))] += 1
    n = len(texts)
    return torch.tensor(np.log1p((n - df + 0.5) / (df + 0.5)), dtype=torch.float32)


# -- pooling -------------------------------------------------------------------------------------------------

def _pool_max_first(module: Any, features: dict[str, Any]) -> dict[str, Any]:
    """sentence-transformers' ``SpladePooling.forward`` for max pooling at inference, computed max-first.

    ``log1p(relu(x))`` is non-decreasing, so its maximum over tokens is ``log1p(relu(max over tokens of x))``,
    with masked positions counted as 0 as ``SpladePooling`` counts them: the same numbers, with the transform
    applied to ``(batch, vocab)`` instead of ``(batch, length, vocab)``. Training, sum pooling and flattened
    inputs go through ``SpladePooling`` itself (its gradient picks one maximum among ties)."""
    if module.training or module.pooling_strategy != "max" or "cu_seq_lens_q" in features:
        return type(module).forward(module, features)
    logits = features["token_embeddings"]
    mask = features["attention_mask"].unsqueeze(-1).to(torch.bool)
    pooled = torch.log1p(torch.relu(torch.where(mask, logits, torch.zeros((), dtype=logits.dtype)).amax(dim=1)))
    if module.activation_function == "log1p_relu":
        pooled = torch.log1p(pooled)
    if module.embedding_dimension is None:
        module.embedding_dimension = pooled.shape[1]
    features["sentence_embedding"] = pooled
    return features


# -- the trainable model -------------------------------------------------------------------------------------

def _is_decoder(path: str) -> bool:
    from transformers import AutoConfig

    from uniret.retriever.embedder import backbone_kind

    return backbone_kind(AutoConfig.from_pretrained(path)) == "decoder"


class SparseModel(torch.nn.Module):
    """A SPLADE model (sentence-transformers ``SparseEncoder`` inside) with the bi-encoder trainer's API:
    ``format_queries``, ``tokenize``, ``tokenize_queries``, ``forward`` (``(B, vocab)`` float32), ``save``."""

    def __init__(self, st_model: Any, *, name: str, variant: str, pooling: str, max_length: int,
                 path: str | None = None, top_k: int | None = None, threshold: float = 0.0,
                 history: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.st = st_model
        self.name = name
        self.variant = variant
        self.pooling = pooling
        self.max_length = max_length
        self.path = path
        self.top_k = top_k
        self.threshold = threshold
        self.history = history or {}
        self._weights_version = self._parameter_version()
        self._hash: str | None = None
        self._vocabulary: list[str] | None = None
        for module in self.st.modules():
            if type(module).__name__ == "SpladePooling":
                module.forward = types.MethodType(_pool_max_first, module)  # saved as SpladePooling all the same

    # -- building and loading -----------------------------------------------------------------------
    @classmethod
    def build(cls, backbone: str | Path = "splade-tiny", *, variant: str | None = None, pooling: str = "max",
              max_length: int = 256, idf: torch.Tensor | Sequence[str] | None = None, lora: dict[str, Any] | None = None,
              gradient_checkpointing: bool = False, device: str | None = "auto", top_k: int | None = None,
              threshold: float = 0.0, learn_query_weights: bool = False,
              background: Sequence[str] | None = None, background_sd: float = 0.25,
              background_max_length: int | None = None, freeze_query_encoder: bool = False) -> SparseModel:
        """A fresh model on ``backbone``'s weights. ``variant``: ``mlm`` for masked-LM encoders (the default for
        them); ``echo`` or ``bidirectional`` for decoder-only LMs (required for them). ``idf``: a per-token
        weight vector, or the corpus texts to compute it from (:func:`compute_idf`), makes the model
        inference-free (queries: tokenizer + these weights); ``learn_query_weights`` makes those weights a
        trainable parameter (initialised from ``idf``; the query is still a lookup, with no model).
        ``background`` (decoder variants): corpus texts to compute the LM head's per-token background level
        from (:func:`logit_background`, ``background_sd`` standard deviations above the mean, texts cut at
        ``background_max_length``, default ``max_length``: the length the model will encode at), subtracted
        from the logits from then on and saved with the model. ``freeze_query_encoder``: queries get their own
        copy of the backbone, frozen (a ``Router``: query and document routes), so only the document side trains
        and the model's queries stay the backbone's."""
        from sentence_transformers import SparseEncoder
        from sentence_transformers.sparse_encoder.modules import SpladePooling

        from uniret.assets import resolve_model
        from uniret.runtime import resolve_device

        if pooling not in POOLINGS:
            raise ValueError(f"unknown SPLADE pooling {pooling!r}; expected one of {', '.join(POOLINGS)}")
        path = resolve_model(backbone)
        decoder = _is_decoder(path)
        if variant is None:
            if decoder:
                raise ValueError(f"{backbone} is a decoder-only LM: choose variant 'echo' or 'bidirectional'")
            variant = "mlm"
        if variant not in VARIANTS:
            raise ValueError(f"unknown sparse variant {variant!r}; expected one of {', '.join(VARIANTS)}")
        if decoder != (variant in DECODER_VARIANTS):
            kind = "a decoder-only LM" if decoder else "a masked-LM encoder"
            raise ValueError(f"variant {variant!r} does not fit {backbone}, which is {kind}")
        device = resolve_device(device)
        if variant == "mlm":
            lm: Any = Transformer(path, transformer_task="fill-mask", max_seq_length=max_length)
        else:
            lm = DecoderSpladeTransformer(path, variant=variant, max_seq_length=max_length)
        if background is not None:
            if variant == "mlm":
                raise ValueError("a logit background is for decoder-only LMs (variant echo or bidirectional); "
                                 f"{backbone} is a masked-LM encoder")
            lm.to(device)
            lm.max_seq_length = background_max_length or max_length
            lm.set_logit_offset(logit_background(lm, background, sd=background_sd))
            lm.max_seq_length = max_length
        doc_modules = [lm, SpladePooling(pooling_strategy=pooling)]  # type: ignore[arg-type]
        if learn_query_weights and idf is None:
            raise ValueError("learn_query_weights needs an inference-free model: pass idf (weights or corpus texts)")
        if freeze_query_encoder and idf is not None:
            raise ValueError("freeze_query_encoder is for a model with a query encoder; an inference-free model "
                             "(idf) has none")
        if freeze_query_encoder:
            from sentence_transformers.base.modules import Router

            query_lm = copy.deepcopy(lm)  # the same weights (and logit background), trained no further
            query_lm.requires_grad_(False)
            modules: list[Any] = [Router.for_query_document(
                query_modules=[query_lm, copy.deepcopy(doc_modules[1])], document_modules=doc_modules)]
        elif idf is not None:
            from sentence_transformers.base.modules import Router
            from sentence_transformers.sparse_encoder.modules import SparseStaticEmbedding

            if not isinstance(idf, torch.Tensor):
                idf = compute_idf(lm.tokenizer, list(idf), lm.auto_model.config.vocab_size)
            if idf.shape != (lm.auto_model.config.vocab_size,):
                raise ValueError(f"idf has shape {tuple(idf.shape)}; expected ({lm.auto_model.config.vocab_size},)")
            query = SparseStaticEmbedding(tokenizer=lm.tokenizer, weight=idf.float().clone(),
                                          frozen=not learn_query_weights)
            modules = [Router.for_query_document(query_modules=[query], document_modules=doc_modules)]
        else:
            modules = doc_modules
        st = SparseEncoder(modules=modules, device=device)
        model = cls(st, name=str(backbone), variant=variant, pooling=pooling, max_length=max_length,
                    top_k=top_k, threshold=threshold,
                    history={"base_model": str(backbone), "variant": variant,
                             **({"query_encoder": "frozen"} if freeze_query_encoder else {}),
                             **({"logit_background": {"texts": len(background), "sd": background_sd}}
                                if background is not None else {})})
        if lora:
            model.add_lora(lora)
        if gradient_checkpointing:
            model.enable_gradient_checkpointing()
        return model

    @classmethod
    def load(cls, path: str | Path, *, device: str | None = "auto", max_length: int | None = None,
             top_k: int | None = None, threshold: float | None = None) -> SparseModel:
        """A model saved by :meth:`save` (any variant), a sentence-transformers ``SparseEncoder`` folder, or
        the weights of a masked-LM (SPLADE pooling ``max`` added)."""
        from uniret.assets import resolve_model

        folder = Path(resolve_model(path))
        cfg_file = folder / CONFIG_FILE
        if cfg_file.is_file():
            from sentence_transformers import SparseEncoder

            from uniret.runtime import resolve_device

            cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
            st = SparseEncoder(str(folder), device=resolve_device(device), trust_remote_code=True)
            model = cls(st, name=str(path), variant=cfg["variant"], pooling=cfg["pooling"],
                        max_length=int(cfg["max_length"]), path=str(folder),
                        top_k=cfg.get("top_k") if top_k is None else top_k,
                        threshold=cfg.get("threshold", 0.0) if threshold is None else threshold,
                        history=cfg.get("history"))
            if model.frozen_query_encoder:
                model._query_lm().requires_grad_(False)
            if max_length is not None and max_length != model.max_length:
                model.set_max_length(max_length)
            return model
        if (folder / "modules.json").is_file():
            logger.info("%s: a sentence-transformers folder without %s; reading its modules", folder, CONFIG_FILE)
        model = cls.build(folder, max_length=max_length or 256, device=device, top_k=top_k,
                          threshold=threshold or 0.0)
        model.name, model.path = str(path), str(folder)
        model._weights_version = model._parameter_version()
        return model

    def set_max_length(self, max_length: int) -> None:
        """Encode (and save) at ``max_length`` tokens from now on."""
        self.max_length = int(max_length)
        self._lm().max_seq_length = max_length
        if self.frozen_query_encoder:
            self._query_lm().max_seq_length = max_length

    # -- parts -------------------------------------------------------------------------------------------
    @property
    def routed(self) -> bool:
        """Queries and documents take different routes (inference-free, or a frozen query encoder)."""
        from sentence_transformers.base.modules import Router

        return isinstance(self.st[0], Router)

    @property
    def inference_free(self) -> bool:
        from sentence_transformers.sparse_encoder.modules import SparseStaticEmbedding

        return self.routed and isinstance(self.st[0].sub_modules["query"][0], SparseStaticEmbedding)

    @property
    def frozen_query_encoder(self) -> bool:
        """Queries have their own SPLADE encoder, kept at the backbone's weights (``freeze_query_encoder``)."""
        return self.routed and not self.inference_free

    def _doc_modules(self) -> list[Any]:
        if self.routed:
            return list(self.st[0].sub_modules["document"])
        return list(self.st)

    def _query_lm(self) -> Any:
        return self.st[0].sub_modules["query"][0]

    def _lm(self) -> Any:
        return self._doc_modules()[0]

    @property
    def idf(self) -> torch.Tensor | None:
        if not self.inference_free:
            return None
        return self.st[0].sub_modules["query"][0].weight.detach()

    @property
    def trainable_query_weights(self) -> torch.nn.Parameter | None:
        """The query side's per-token weights when they train (``learn_query_weights``); else None."""
        if not self.inference_free:
            return None
        weight = self.st[0].sub_modules["query"][0].weight
        return weight if weight.requires_grad else None

    @property
    def tokenizer(self) -> Any:
        return self._lm().tokenizer

    @property
    def vocab_size(self) -> int:
        return int(self._lm().auto_model.config.vocab_size)

    @property
    def vocabulary(self) -> list[str]:
        """Term id -> token string, in id order."""
        if self._vocabulary is None:
            self._vocabulary = [str(t) for t in self.tokenizer.convert_ids_to_tokens(list(range(self.vocab_size)))]
        return self._vocabulary

    @property
    def device(self) -> str:
        return str(next(self.parameters()).device)

    def add_lora(self, lora: dict[str, Any]) -> None:
        """LoRA adapters on the LM; only they train (the vocabulary head stays tied and frozen)."""
        from peft import get_peft_model

        from uniret.retriever.embedder import _lora_config

        lm = self._lm()
        config = _lora_config(lora, "decoder" if self.variant in DECODER_VARIANTS else "encoder")
        lm.model = get_peft_model(lm.model, config)  # ``auto_model`` is a read-only alias of ``model``
        self.history["lora"] = {"r": config.r, "target_modules": sorted(config.target_modules or [])}
        self._weights_version = self._parameter_version()

    def enable_gradient_checkpointing(self) -> None:
        model = self._lm().auto_model
        enable = getattr(model, "activation_checkpointing_enable", None)
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    # -- the trainer's API ------------------------------------------------------------------------------
    def format_queries(self, queries: list[str], tasks: list[str | None] | None = None,
                       instructions: list[str | None] | None = None) -> list[str]:
        return list(queries)

    def _features(self, texts: Sequence[str], task: str) -> dict[str, Any]:
        kwargs = {"task": task} if self.routed else {}
        features = self.st.preprocess(list(texts), **kwargs)
        device = self.device
        out = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in features.items()}
        if self.routed:
            out["task"] = task
        return out

    def tokenize(self, texts: Sequence[str]) -> dict[str, Any]:
        """Document features (the SPLADE side)."""
        return self._features(texts, "document")

    def tokenize_queries(self, texts: Sequence[str]) -> dict[str, Any]:
        """Query features (the IDF lookup side when inference-free, the frozen copy with a frozen query encoder,
        else the SPLADE side)."""
        return self._features(texts, "query")

    def forward(self, features: dict[str, Any]) -> torch.Tensor:
        """Sparse representations ``(B, vocab)`` in float32 (differentiable on the SPLADE side)."""
        kwargs = {"task": features["task"]} if "task" in features else {}
        return self.st(dict(features), **kwargs)["sentence_embedding"].float()

    # -- identity and saving ------------------------------------------------------------------------------
    def _parameter_version(self) -> int:
        return sum(p._version for p in self.parameters())

    def settings(self) -> dict[str, Any]:
        return {"format": 1, "variant": self.variant, "pooling": self.pooling, "max_length": self.max_length,
                "inference_free": self.inference_free, "vocab_size": self.vocab_size, "top_k": self.top_k,
                "threshold": self.threshold, **({"query_encoder": "frozen"} if self.frozen_query_encoder else {})}

    @property
    def identity(self) -> dict[str, Any]:
        from uniret.assets import content_hash

        saved = self.path is not None and self._parameter_version() == self._weights_version
        if saved:
            if self._hash is None:
                self._hash = content_hash(self.path)  # type: ignore[arg-type]
            digest = self._hash
        else:
            digest = "unsaved-" + hashlib.sha256(json.dumps([self.name, self.history, self.settings(), id(self),
                                                             self._parameter_version()]).encode()).hexdigest()[:16]
        vocab_hash = hashlib.sha256("\n".join(self.vocabulary).encode()).hexdigest()[:16]
        return {"type": "splade", "name": self.name, "path": self.path if saved else None, "hash": digest,
                "dimension": self.vocab_size, "similarity": "dot", "vocabulary_hash": vocab_hash,
                **{k: v for k, v in self.settings().items() if k != "format"}}

    def save(self, path: str | Path) -> Path:
        """A sentence-transformers ``SparseEncoder`` folder plus ``uniret_sparse.json``, written atomically;
        LoRA adapters are merged."""
        from uniret import __version__
        from uniret.atomic import atomic_directory

        path = Path(path).resolve()
        lm = self._lm()
        live = lm.model
        if hasattr(live, "merge_and_unload"):
            lm.model = copy.deepcopy(live).merge_and_unload()
        try:
            with atomic_directory(path, kind="model") as tmp:
                self.st.save(str(tmp))
                (tmp / CONFIG_FILE).write_text(json.dumps({**self.settings(), "uniret_version": __version__,
                                                           "history": self.history}, indent=2) + "\n",
                                               encoding="utf-8")
        finally:
            lm.model = live
        self.path, self._hash = str(path), None
        self._weights_version = self._parameter_version()
        logger.info("saved sparse model (%s, %s pooling%s) to %s", self.variant, self.pooling,
                    ", inference-free" if self.inference_free else "", path)
        return path

    # -- inference -------------------------------------------------------------------------------------------
    def encode(self, texts: Sequence[str], *, queries: bool = False, batch_size: int = 16,
               show_progress: bool | None = None, desc: str | None = None,
               forward: Any = None) -> list[SparseVector]:
        """One pruned sparse vector per text, in length-sorted batches (by characters). ``forward``: what
        turns a batch's features into ``(B, vocab)`` weights (default the module's own; an ONNX session's)."""
        forward = forward or self.forward
        tokenize = self.tokenize_queries if queries else self.tokenize
        if show_progress is None:
            show_progress = logger.isEnabledFor(logging.INFO) and len(texts) > batch_size
        desc = desc or ("splade: queries" if queries else "splade: documents")

        def batch(rows: list[int]) -> list[SparseVector]:
            reps = forward(tokenize([texts[i] for i in rows])).cpu()
            return [prune(r, top_k=self.top_k, threshold=self.threshold) for r in reps]

        was_training = self.training
        self.train(False)
        try:
            with torch.inference_mode(), progress_bar(len(texts), desc, unit="text", show=show_progress) as bar:
                return map_sorted(batch, [len(t) for t in texts], batch_size, bar=bar)
        finally:
            self.train(was_training)


class SpladeEncoder:
    """The encoder protocol (``encode_queries`` / ``encode_documents`` -> :class:`SparseVectors`) over a
    :class:`SparseModel`: a saved folder, an alias (``splade-tiny``), masked-LM weights, or a live model."""

    def __init__(self, model: str | Path | SparseModel = "splade-tiny", *, device: str | None = "auto",
                 batch_size: int = 16, max_length: int | None = None, pooling: str | None = None,
                 top_k: int | None = None, threshold: float | None = None, backend: str = "torch",
                 threads: int | None = None) -> None:
        self.backend = check_backend(backend)
        self.threads = threads
        self._sessions: dict[str, Any] = {}
        if pooling is not None and pooling not in POOLINGS:
            raise ValueError(f"unknown SPLADE pooling {pooling!r}; expected one of {', '.join(POOLINGS)}")
        if isinstance(model, SparseModel):
            self.model = model
        else:
            self.model = SparseModel.load(model, device=device, max_length=max_length, top_k=top_k,
                                          threshold=threshold)
        if pooling is not None and pooling != self.model.pooling:
            self.model.pooling = pooling
            self.model._doc_modules()[1].pooling_strategy = pooling
        if max_length is not None and max_length != self.model.max_length:
            self.model.set_max_length(max_length)
        self.name = self.model.name
        self.batch_size = batch_size
        if self.backend in ONNX_BACKENDS and self.model.variant in DECODER_VARIANTS:
            raise ValueError(f"the {self.backend} backend exports encoder SPLADE models; the decoder variant "
                             f"{self.model.variant!r} runs on the torch backend")

    @property
    def path(self) -> str | None:
        return self.model.path

    @property
    def max_length(self) -> int:
        return self.model.max_length

    @property
    def pooling(self) -> str:
        return self.model.pooling

    @property
    def vocab_size(self) -> int:
        return self.model.vocab_size

    @property
    def vocabulary(self) -> list[str]:
        return self.model.vocabulary

    @property
    def identity(self) -> dict[str, Any]:
        return {**self.model.identity, "backend": self.backend}

    def _backend_forward(self, queries: bool) -> Any:
        """The ONNX Runtime forward of one side (exported on first use, cached under ``$UNIRET_CACHE/onnx`` by
        model hash and settings); the module's own forward under bfloat16 autocast for ``bf16``; None on the torch
        backend and for the inference-free query side (a lookup)."""
        if self.backend == "torch" or (queries and self.model.inference_free):
            return None
        if self.backend not in ONNX_BACKENDS:
            model = self.model

            def autocast_forward(features: dict[str, Any]) -> torch.Tensor:
                with inference_autocast(self.backend, model.device):
                    return model.forward(features)

            return autocast_forward
        side = "queries" if queries else "documents"
        if side not in self._sessions:
            from uniret.retriever import onnx

            model = self.model
            tokenize = model.tokenize_queries if queries else model.tokenize
            fixed = {k: v for k, v in tokenize(["x"]).items() if not isinstance(v, torch.Tensor)}  # e.g. the task
            with torch.inference_mode(False):
                example = {k: v for k, v in tokenize(
                    ["a short query", "a longer passage, padded to nothing: rows of different lengths keep the "
                     "attention mask in the exported graph"]).items() if isinstance(v, torch.Tensor)}
                config = model._lm().auto_model.config
                settings = {"kind": "sparse", "hash": model.identity["hash"], "backend": self.backend, "side": side,
                            "inputs": sorted(example), "settings": model.settings()}

                def build(folder: Path) -> None:
                    onnx.build_model(folder, lambda f: model.forward({**f, **fixed}), example, modules=[model],
                                     backend=self.backend, config=config, output_name="weights")

                path = onnx.cached_model(settings, build)
            session = onnx.OnnxSession(path, threads=self.threads, device=model.device)
            self._sessions[side] = lambda features: torch.from_numpy(session.run(
                {k: v for k, v in features.items() if isinstance(v, torch.Tensor)}))
        return self._sessions[side]

    def batch(self, vectors: Sequence[SparseVector]) -> SparseVectors:
        indptr, indices, values = to_csr(vectors)
        return SparseVectors(indptr, indices.astype(np.int32), values, self.vocabulary)

    def encode(self, texts: Sequence[str], desc: str = "splade: encoding", show_progress: bool | None = None,
               *, queries: bool = False) -> list[SparseVector]:
        """One sparse vector per text (the document side unless ``queries``)."""
        return self.model.encode(texts, queries=queries, batch_size=self.batch_size, show_progress=show_progress,
                                 desc=desc, forward=self._backend_forward(queries))

    def encode_queries(self, texts: Sequence[str], show_progress: bool | None = None) -> SparseVectors:
        return self.batch(self.encode(texts, "splade: queries", show_progress, queries=True))

    def encode_documents(self, texts: Sequence[str], show_progress: bool | None = None) -> SparseVectors:
        return self.batch(self.encode(texts, "splade: documents", show_progress))

    def to_terms(self, vector: SparseVector) -> dict[str, float]:
        """The vector as ``{token: weight}``, by weight descending."""
        vocab = self.vocabulary
        pairs = sorted(zip(vector.indices.tolist(), vector.values.tolist(), strict=True), key=lambda x: (-x[1], x[0]))
        return {vocab[i]: w for i, w in pairs}


def prune_vectors(vectors: SparseVectors, *, top_k: int | None = None, threshold: float = 0.0) -> SparseVectors:
    """:func:`prune` applied to already encoded vectors: each row keeps its weights above ``threshold``, at most
    the ``top_k`` largest, in term-id order (what encoding with ``top_k`` / ``threshold`` gives, without encoding
    again)."""
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be a positive integer or None, got {top_k!r}")
    indptr, indices, data = [0], [], []
    for i in range(len(vectors)):
        lo, hi = int(vectors.indptr[i]), int(vectors.indptr[i + 1])
        idx, val = np.asarray(vectors.indices[lo:hi]), np.asarray(vectors.data[lo:hi])
        keep = val > threshold
        idx, val = idx[keep], val[keep]
        if top_k is not None and idx.size > top_k:
            top = np.argpartition(-val, top_k - 1)[:top_k]
            top = top[np.argsort(idx[top], kind="stable")]
            idx, val = idx[top], val[top]
        indices.append(idx)
        data.append(val)
        indptr.append(indptr[-1] + idx.size)
    return SparseVectors(np.asarray(indptr, dtype=vectors.indptr.dtype),
                         np.concatenate(indices).astype(vectors.indices.dtype) if indices
                         else np.zeros(0, vectors.indices.dtype),
                         np.concatenate(data).astype(vectors.data.dtype) if data else np.zeros(0, vectors.data.dtype),
                         vectors.vocabulary)


def mean_nonzeros(vectors: SparseVectors) -> float:
    """Mean number of non-zero weights per row."""
    return float(np.diff(vectors.indptr).mean()) if len(vectors) else math.nan
