"""Cross-encoder reranker: query and document through one encoder, a one-logit score head.

Built from any encoder backbone (the packaged all-MiniLM-L6-v2 by default; a fresh head is initialised)
or loaded from a saved reranker. It saves as a Hugging Face sequence-classification folder with one
label, the format sentence-transformers' ``CrossEncoder(path)`` loads. Scores are the raw logits
(``CrossEncoder.predict`` applies a sigmoid on top, which keeps the order).

A :class:`~uniret.protocols.PairScorer` (``score_pairs(queries, docs_per_query)``, as every teacher), so
it serves as a teacher and as the reranking stage of :class:`uniret.index.rerank.RerankedBackend`;
``rerank`` re-scores a run directly.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from uniret.assets import content_hash, resolve_model
from uniret.atomic import atomic_directory
from uniret.data import Document, Run
from uniret.retriever.batching import map_sorted_array, progress_bar
from uniret.retriever.embedder import set_attention_dropout
from uniret.runtime import ONNX_BACKENDS, check_backend, inference_autocast, resolve_device
from uniret.scores import ranked

logger = logging.getLogger(__name__)

EXTRA = "uniret_reranker.json"


class CrossEncoderReranker(torch.nn.Module):
    def __init__(self, model: str | Path = "all-MiniLM-L6-v2", *, max_length: int = 256, batch_size: int = 32,
                 device: str | None = "auto", attention_dropout: float | None = None, backend: str = "torch",
                 threads: int | None = None) -> None:
        """``backend``: ``torch``, ``bf16`` (bfloat16 autocast), ``onnx`` or ``onnx-int8`` for scoring (see :mod:`uniret.retriever.onnx`;
        the export is cached by a hash of the weights, so a reranker in training is re-exported after updates);
        training always runs on torch."""
        super().__init__()
        self.backend = check_backend(backend)
        self.threads = threads
        self._session: Any = None
        self._session_key: str | None = None
        from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer
        from transformers.utils import logging as hf_logging

        self.name = str(model)
        self.path = resolve_model(model)
        extra_file = Path(self.path) / EXTRA
        extra = json.loads(extra_file.read_text(encoding="utf-8")) if extra_file.is_file() else {}
        self.max_length = int(extra.get("max_length", max_length))
        self.batch_size = batch_size
        self.device_name = resolve_device(device)
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # a fresh score head is expected when starting from an encoder
        try:
            config = AutoConfig.from_pretrained(self.path, num_labels=1)
            if attention_dropout is not None:
                set_attention_dropout(config, attention_dropout)
            self.model = AutoModelForSequenceClassification.from_pretrained(self.path, config=config)
        finally:
            hf_logging.set_verbosity(verbosity)
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        self.model.to(self.device_name)
        self.model.eval()

    @property
    def identity(self) -> dict[str, Any]:
        return {"type": "cross-encoder", "name": self.name, "path": self.path,
                "hash": content_hash(self.path) if Path(self.path).exists() else f"hub:{self.path}",
                "max_length": self.max_length, "backend": self.backend}

    def tokenize(self, queries: Sequence[str], docs: Sequence[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(list(queries), list(docs), truncation="longest_first", max_length=self.max_length,
                             padding=True, return_tensors="pt")
        return {k: v.to(self.device_name) for k, v in enc.items()}

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits (N,) for tokenised (query, document) pairs, with gradients when enabled."""
        return self.model(**features).logits.squeeze(-1).float()

    @torch.inference_mode()
    def _score_flat(self, queries: Sequence[str], docs: Sequence[str], show_progress: bool | None) -> np.ndarray:
        """Logits for aligned (query, document) pairs, in length-sorted batches (by characters)."""
        was_training = self.model.training
        self.model.eval()
        if show_progress is None:
            show_progress = logger.isEnabledFor(logging.INFO) and len(queries) > 10 * self.batch_size

        session = self.session if self.backend in ONNX_BACKENDS else None  # weights hashed once per call

        def score(rows: list[int]) -> np.ndarray:
            features = self.tokenize([queries[i] for i in rows], [docs[i] for i in rows])
            if session is not None:
                return session.run(features)
            with inference_autocast(self.backend, self.device_name):
                return self.forward(features).cpu().numpy()

        try:
            with progress_bar(len(queries), "reranking", unit="pair", show=show_progress) as bar:
                return map_sorted_array(score, [len(q) + len(d) for q, d in zip(queries, docs, strict=True)],
                                        self.batch_size, bar=bar)
        finally:
            self.model.train(was_training)

    def weights_hash(self) -> str:
        """A short sha256 over the current parameters (a fresh score head is random: the folder is not enough)."""
        digest = hashlib.sha256()
        for name, tensor in self.model.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()[:16]

    @property
    def session(self) -> Any:
        """The ONNX Runtime session of an ``onnx`` / ``onnx-int8`` backend, exported for the current weights."""
        from uniret.retriever import onnx

        key = self.weights_hash()
        if self._session is None or self._session_key != key:
            with torch.inference_mode(False):
                example = self.tokenize(["a query", "another, longer query"],
                                        ["a document", "a longer document, so that the first pair is padded"])
                settings = {"kind": "cross-encoder", "hash": key, "backend": self.backend, "inputs": sorted(example)}

                def build(folder: Path) -> None:
                    onnx.build_model(folder, self.forward, example, modules=[self.model], backend=self.backend,
                                     config=self.model.config, output_name="logits")

                path = onnx.cached_model(settings, build)
            self._session = onnx.OnnxSession(path, threads=self.threads, device=self.device_name)
            self._session_key = key
        return self._session

    def score_pairs(self, queries: Sequence[str], docs_per_query: Sequence[Sequence[str]], *,
                    show_progress: bool | None = None) -> list[list[float]]:
        """The :class:`~uniret.protocols.PairScorer` protocol: ``docs_per_query[i]`` are the documents of
        ``queries[i]``; returns their logits, one list per query. All pairs of all queries are scored in
        one length-sorted loop."""
        if len(queries) != len(docs_per_query):
            raise ValueError(f"score_pairs got {len(queries)} queries but {len(docs_per_query)} document lists; "
                             "expected one list of documents per query")
        flat_q = [q for q, docs in zip(queries, docs_per_query, strict=True) for _ in docs]
        flat_d = [d for docs in docs_per_query for d in docs]
        flat = self._score_flat(flat_q, flat_d, show_progress).tolist()
        out, start = [], 0
        for docs in docs_per_query:
            out.append(flat[start : start + len(docs)])
            start += len(docs)
        return out

    def score(self, query: str, docs: Sequence[str]) -> list[float]:
        """One query against its candidate documents."""
        return self.score_pairs([query], [docs], show_progress=False)[0]

    def rerank(self, run: Run, queries: Mapping[str, str], documents: Mapping[str, Document], k: int = 100) -> Run:
        """Re-score each query's top ``k`` hits of ``run`` (trec_eval order); hits below ``k`` are dropped."""
        tops = {qid: [d for d, _ in ranked(hits)[:k]] for qid, hits in run.items()}
        scores = self.score_pairs([queries[qid] for qid in tops],
                                  [[documents[d].full_text() for d in ids] for ids in tops.values()])
        return {qid: dict(zip(ids, s, strict=True)) for (qid, ids), s in zip(tops.items(), scores, strict=True)}

    def save(self, path: str | Path) -> Path:
        with atomic_directory(path, kind="model") as tmp:
            self.model.save_pretrained(tmp, safe_serialization=True)
            self.tokenizer.save_pretrained(tmp)
            (tmp / EXTRA).write_text(json.dumps({"type": "cross-encoder", "max_length": self.max_length,
                                                 "base": self.name}, indent=2), encoding="utf-8")
        logger.info("saved reranker to %s", path)
        return Path(path)
