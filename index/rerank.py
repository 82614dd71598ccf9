"""A reranking stage over any search backend: the first stage retrieves ``depth`` hits per query and a
reranker (anything with ``score(query, docs) -> scores``, e.g.
:class:`uniret.retriever.reranker.CrossEncoderReranker`) re-scores them. With ``fusion_weight`` w the final
score is ``w * minmax(reranker) + (1 - w) * minmax(first stage)`` per query (:func:`fuse_scores`)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from uniret.data import Corpus, Run
from uniret.protocols import SearchBackend

logger = logging.getLogger(__name__)


def _minmax(hits: Mapping[str, float]) -> dict[str, float]:
    lo, hi = min(hits.values()), max(hits.values())
    span = hi - lo
    return {d: (s - lo) / span if span > 0 else 1.0 for d, s in hits.items()}


def fuse_scores(first: Mapping[str, float], reranked: Mapping[str, float], weight: float) -> dict[str, float]:
    """One query's reranked hits, re-scored ``weight * minmax(reranked) + (1 - weight) * minmax(first)``.
    Only documents in ``reranked`` are returned; each must be in ``first``."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"fusion weight must be within [0, 1], got {weight}")
    if not reranked:
        return {}
    missing = set(reranked) - set(first)
    if missing:
        raise ValueError(f"{len(missing)} reranked document(s) have no first-stage score, e.g. {sorted(missing)[0]!r}")
    r = _minmax(reranked)
    f = _minmax({d: first[d] for d in reranked})
    return {d: weight * r[d] + (1.0 - weight) * f[d] for d in reranked}


class RerankedBackend:
    """``first`` then ``reranker`` on its top ``depth`` hits. Search returns the reranked hits (the top
    ``k`` of them by the reranker's score, or by the fused score with ``fusion_weight``); hits beyond ``depth``
    are not returned."""

    def __init__(self, first: SearchBackend, reranker: Any, depth: int = 100,
                 fusion_weight: float | None = None) -> None:
        if depth < 1:
            raise ValueError(f"rerank depth must be >= 1, got {depth}")
        if fusion_weight is not None and not 0.0 <= fusion_weight <= 1.0:
            raise ValueError(f"fusion weight must be within [0, 1], got {fusion_weight}")
        self.fusion_weight = fusion_weight
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
            scores = dict(zip(ids, flat[pos:pos + len(ids)], strict=True))
            if self.fusion_weight is not None:
                scores = fuse_scores(first[qid], scores, self.fusion_weight)
            scored = sorted(scores.items(), key=lambda x: (-x[1], x[0]))
            out[qid] = dict(scored[:k])
            pos += len(ids)
        return out

    def save(self, path: str | Path) -> Path:
        raise NotImplementedError("save the first-stage index and the reranker separately")

    def describe(self) -> dict[str, Any]:
        reranker = getattr(self.reranker, "identity", None)
        return {"kind": self.kind, "first_stage": self.first.describe(), "depth": self.depth,
                "fusion_weight": self.fusion_weight,
                "reranker": reranker() if callable(reranker) else reranker}
