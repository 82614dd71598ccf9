"""A reranking stage over any search backend: the first stage retrieves ``depth`` hits per query and a
reranker (any :class:`uniret.protocols.PairScorer`, e.g.
:class:`uniret.retriever.reranker.CrossEncoderReranker` or a teacher) re-scores them in one
``score_pairs`` call. With ``fusion_weight`` w the final score is
``w * minmax(reranker) + (1 - w) * minmax(first stage)`` per query (:func:`fuse_scores`, the kernel's
interpolation). Hits are cut and ordered in trec_eval's order (:func:`uniret.scores.ranked`)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from uniret.data import Corpus, Run
from uniret.protocols import PairScorer, SearchBackend
from uniret.scores import fuse_hits, ranked

logger = logging.getLogger(__name__)


def fuse_scores(first: Mapping[str, float], reranked: Mapping[str, float], weight: float) -> dict[str, float]:
    """One query's reranked hits, re-scored ``weight * minmax(reranked) + (1 - weight) * minmax(first)``
    (:func:`uniret.scores.fuse_hits` interpolation; all-equal scores normalise to 1). Only documents in
    ``reranked`` are returned; each must be in ``first``."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"fusion weight must be within [0, 1], got {weight}")
    if not reranked:
        return {}
    missing = set(reranked) - set(first)
    if missing:
        raise ValueError(f"{len(missing)} reranked document(s) have no first-stage score, e.g. {sorted(missing)[0]!r}")
    fused = fuse_hits([{d: first[d] for d in reranked}, reranked], "interpolate", [1.0 - weight, weight])
    return {d: fused[d] for d in reranked}


class RerankedBackend:
    """``first`` then ``reranker`` on its top ``depth`` hits. Search returns the reranked hits (the top
    ``k`` of them by the reranker's score, or by the fused score with ``fusion_weight``); hits beyond ``depth``
    are not returned."""

    def __init__(self, first: SearchBackend, reranker: PairScorer, depth: int = 100,
                 fusion_weight: float | None = None) -> None:
        if not isinstance(reranker, PairScorer):
            raise TypeError(f"the reranker must implement score_pairs(queries, docs_per_query) (the PairScorer "
                            f"protocol); got {type(reranker).__name__}")
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
        tops = {qid: [d for d, _ in ranked(hits)[:self.depth]] for qid, hits in first.items()}
        # one call: the scorer batches all pairs of all queries (a cross-encoder by length)
        scores = self.reranker.score_pairs([queries[qid] for qid in tops],
                                           [[self._texts[d] for d in ids] for ids in tops.values()])
        if len(scores) != len(tops):
            raise ValueError(f"reranker returned {len(scores)} score lists for {len(tops)} queries")
        out: Run = {}
        for (qid, ids), values in zip(tops.items(), scores, strict=True):
            hits = dict(zip(ids, (float(s) for s in values), strict=True))
            if self.fusion_weight is not None:
                hits = fuse_scores(first[qid], hits, self.fusion_weight)
            out[qid] = dict(ranked(hits)[:k])
        return out

    def save(self, path: str | Path) -> Path:
        raise NotImplementedError("save the first-stage index and the reranker separately")

    def describe(self) -> dict[str, Any]:
        reranker = getattr(self.reranker, "identity", None)
        return {"kind": self.kind, "first_stage": self.first.describe(), "depth": self.depth,
                "fusion_weight": self.fusion_weight,
                "reranker": reranker() if callable(reranker) else reranker}
