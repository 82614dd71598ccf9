"""A reranking stage over any search backend: the first stage retrieves ``depth`` hits per query and a
reranker (anything with ``score(query, docs) -> scores``, e.g.
:class:`uniret.retriever.reranker.CrossEncoderReranker`) re-scores them."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from uniret.data import Corpus, Run
from uniret.protocols import SearchBackend

logger = logging.getLogger(__name__)


class RerankedBackend:
    """``first`` then ``reranker`` on its top ``depth`` hits. Search returns the reranked hits (the top
    ``k`` of them by the reranker's score); hits beyond ``depth`` are not returned."""

    def __init__(self, first: SearchBackend, reranker: Any, depth: int = 100) -> None:
        if depth < 1:
            raise ValueError(f"rerank depth must be >= 1, got {depth}")
        self.first = first
        self.reranker = reranker
        self.depth = depth
        self.kind = f"{first.kind}+rerank"
        self._texts: dict[str, str] = {}

    def index(self, corpus: Corpus) -> None:
        self.first.index(corpus)
        self.set_corpus(corpus)

    def set_corpus(self, corpus: Corpus) -> None:
        """The document texts to rerank (needed when the first stage was loaded from disk)."""
        self._texts = {d.id: d.full_text() for d in corpus}

    def search(self, queries: Mapping[str, str], k: int = 10) -> Run:
        if not self._texts:
            raise RuntimeError("RerankedBackend has no document texts: call index(corpus) or set_corpus(corpus)")
        first = self.first.search(queries, k=self.depth)
        tops = {qid: [d for d, _ in sorted(hits.items(), key=lambda x: (-x[1], x[0]))[:self.depth]]
                for qid, hits in first.items()}
        if hasattr(self.reranker, "score_pairs"):  # one call: the reranker batches all pairs by length
            pair_q = [queries[qid] for qid, ids in tops.items() for _ in ids]
            pair_d = [self._texts[d] for ids in tops.values() for d in ids]
            flat = [float(s) for s in self.reranker.score_pairs(pair_q, pair_d)]
        else:
            flat = [float(s) for qid, ids in tops.items()
                    for s in self.reranker.score(queries[qid], [self._texts[d] for d in ids])]
        out: Run = {}
        pos = 0
        for qid, ids in tops.items():
            scored = sorted(zip(ids, flat[pos:pos + len(ids)], strict=True), key=lambda x: (-x[1], x[0]))
            out[qid] = dict(scored[:k])
            pos += len(ids)
        return out

    def save(self, path: str | Path) -> Path:
        raise NotImplementedError("save the first-stage index and the reranker separately")

    def describe(self) -> dict[str, Any]:
        reranker = getattr(self.reranker, "identity", None)
        return {"kind": self.kind, "first_stage": self.first.describe(), "depth": self.depth,
                "reranker": reranker() if callable(reranker) else reranker}
