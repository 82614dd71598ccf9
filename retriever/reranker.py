"""Cross-encoder reranker: query and document through one encoder, a one-logit score head.

Built from any encoder backbone (the packaged all-MiniLM-L6-v2 by default; a fresh head is initialised)
or loaded from a saved reranker. It saves as a Hugging Face sequence-classification folder with one
label, the format sentence-transformers' ``CrossEncoder(path)`` loads. Scores are the raw logits
(``CrossEncoder.predict`` applies a sigmoid on top, which keeps the order).

Used as a teacher (``score``) and as a reranking stage (``rerank`` over a run).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from uniret.assets import content_hash, resolve_model
from uniret.atomic import atomic_directory
from uniret.data import Document, Run
from uniret.retriever.embedder import set_attention_dropout
from uniret.runtime import resolve_device

logger = logging.getLogger(__name__)

EXTRA = "uniret_reranker.json"


class CrossEncoderReranker(torch.nn.Module):
    def __init__(self, model: str | Path = "all-MiniLM-L6-v2", *, max_length: int = 256, batch_size: int = 32,
                 device: str | None = "auto", attention_dropout: float | None = None) -> None:
        super().__init__()
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
                "max_length": self.max_length}

    def tokenize(self, queries: Sequence[str], docs: Sequence[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(list(queries), list(docs), truncation="longest_first", max_length=self.max_length,
                             padding=True, return_tensors="pt")
        return {k: v.to(self.device_name) for k, v in enc.items()}

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits (N,) for tokenised (query, document) pairs, with gradients when enabled."""
        return self.model(**features).logits.squeeze(-1).float()

    @torch.inference_mode()
    def score_pairs(self, queries: Sequence[str], docs: Sequence[str], show_progress: bool | None = None) -> np.ndarray:
        """Scores for aligned (query, document) pairs, batched longest first."""
        if len(queries) != len(docs):
            raise ValueError(f"{len(queries)} queries for {len(docs)} documents")
        was_training = self.model.training
        self.model.eval()
        order = np.argsort([-(len(q) + len(d)) for q, d in zip(queries, docs, strict=True)], kind="stable")
        out = np.empty(len(queries), dtype=np.float32)
        if show_progress is None:
            show_progress = logger.isEnabledFor(logging.INFO) and len(queries) > 10 * self.batch_size
        for start in tqdm(range(0, len(order), self.batch_size), desc="reranking", unit="batch",
                          disable=not show_progress):
            rows = order[start : start + self.batch_size]
            feats = self.tokenize([queries[i] for i in rows], [docs[i] for i in rows])
            out[rows] = self.forward(feats).cpu().numpy()
        self.model.train(was_training)
        return out

    def score(self, query: str, docs: Sequence[str]) -> list[float]:
        """The teacher protocol: one query against its candidate documents."""
        return self.score_pairs([query] * len(docs), list(docs), show_progress=False).tolist()

    def rerank(self, run: Run, queries: Mapping[str, str], documents: Mapping[str, Document], k: int = 100) -> Run:
        """Re-score each query's top ``k`` hits of ``run``; hits below ``k`` are dropped."""
        from uniret.eval.metrics import ranked

        pairs_q, pairs_d, owners = [], [], []
        for qid, hits in run.items():
            for doc_id, _ in ranked(hits)[:k]:
                pairs_q.append(queries[qid])
                pairs_d.append(documents[doc_id].full_text())
                owners.append((qid, doc_id))
        scores = self.score_pairs(pairs_q, pairs_d)
        out: Run = {qid: {} for qid in run}
        for (qid, doc_id), s in zip(owners, scores, strict=True):
            out[qid][doc_id] = float(s)
        return out

    def save(self, path: str | Path) -> Path:
        with atomic_directory(path, kind="model") as tmp:
            self.model.save_pretrained(tmp, safe_serialization=True)
            self.tokenizer.save_pretrained(tmp)
            (tmp / EXTRA).write_text(json.dumps({"type": "cross-encoder", "max_length": self.max_length,
                                                 "base": self.name}, indent=2), encoding="utf-8")
        logger.info("saved reranker to %s", path)
        return Path(path)
