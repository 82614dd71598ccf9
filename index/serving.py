"""What the search service does, without the web framework: named indexes, micro-batched search, hits with
their documents, and limits. :mod:`uniret.index.service` puts HTTP in front of this; :mod:`uniret.client` uses
the same hit assembly in process, so a RAG application gets identical hits from either.

Micro-batching
    Each index has one :class:`MicroBatcher`. A request's queries join a queue; the batcher takes the first
    waiting request, waits at most ``max_wait_ms`` for more (up to ``max_batch`` queries), and runs them as one
    ``backend.search`` call (one encoder call for an encoder family) at the largest ``k`` asked, then cuts each
    request's hits to its own ``k``. All backend calls run on one worker thread, so backends need not be thread
    safe (Lucene's searcher, a FAISS index on a GPU). With ``micro_batching=False`` every request is searched
    alone (the baseline the latency benchmark compares against).

Matched terms
    A backend that can say which query terms matched a document (``matched_terms(query, doc_ids) ->
    {doc_id: {term: weight}}``, e.g. a sparse index) gets them reported per hit as ``terms``; the others do not.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uniret.errors import UniretError
from uniret.scores import ranked

logger = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
HYBRID = "hybrid"
FIELDS = ("title", "text", "terms")


class RequestError(UniretError, ValueError):
    """A request the service refuses (a 4xx): ``status`` is the HTTP status, the message says what to fix."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; beyond these a request is refused with a 4xx naming the limit."""

    max_k: int = 1000
    max_queries: int = 64  # queries (or texts) per request
    max_query_chars: int = 4096
    max_body_bytes: int = 1 << 20  # 1 MiB
    max_documents: int = 256  # per /rerank request
    max_document_chars: int = 32768


@dataclass
class ServiceConfig:
    """A service over named saved indexes (``{name: path}``; see :func:`index_names`)."""

    indexes: dict[str, Path] = field(default_factory=dict)
    rerankers: dict[str, Path] = field(default_factory=dict)
    device: str = "auto"
    api_key: str | None = None
    micro_batching: bool = True
    max_wait_ms: float = 2.0
    max_batch: int = 64
    hybrid_fusion: str = "rrf"  # the fusion of index "hybrid" (all loaded indexes fused)
    hybrid_depth: int = 100
    data: str | None = None  # a BEIR data set whose judged queries the page can evaluate
    split: str = "test"
    limits: Limits = field(default_factory=Limits)


def check_name(name: str, what: str = "index") -> str:
    """A plain name (letters, digits, '.', '_', '-'; no path): anything else is a :class:`RequestError`."""
    if not isinstance(name, str) or not NAME_RE.match(name) or ".." in name:
        raise RequestError(f"bad {what} name {name!r}: expected a plain name (letters, digits, '.', '_', '-'; "
                           "no '/' or '..'), as listed by GET /indexes")
    return name


def index_names(specs: Sequence[str]) -> dict[str, Path]:
    """``PATH`` or ``NAME=PATH`` per index; a name defaults to the directory's name. Names must be unique."""
    out: dict[str, Path] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or "/" in name:
            name, path = Path(spec.rstrip("/")).name, spec
        try:
            check_name(name)
        except RequestError as e:
            raise ValueError(f"--index {spec!r}: {e}; give one as NAME=PATH") from None
        if name in out:
            raise ValueError(f"--index {spec!r}: the name {name!r} is taken by {out[name]}; give one as NAME=PATH")
        out[name] = Path(path)
    return out


# -- micro-batching -------------------------------------------------------------------------------------------

@dataclass
class _Pending:
    texts: list[str]
    k: int
    future: asyncio.Future[list[dict[str, float]]]


class MicroBatcher:
    """Batches concurrent searches of one backend into one ``search`` call (see the module docstring)."""

    def __init__(self, backend: Any, executor: ThreadPoolExecutor, *, enabled: bool = True,
                 max_wait_ms: float = 2.0, max_batch: int = 64) -> None:
        self.backend = backend
        self.executor = executor
        self.enabled = enabled
        self.max_wait = max(0.0, max_wait_ms) / 1000.0
        self.max_batch = max(1, max_batch)
        self._queue: asyncio.Queue[_Pending] | None = None
        self._loop_of_queue: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.queries = 0

    async def search(self, texts: list[str], k: int) -> list[dict[str, float]]:
        """Hits of each text, best first (``{doc_id: score}`` in trec_eval's order)."""
        loop = asyncio.get_running_loop()
        if not self.enabled:
            self.batches += 1
            self.queries += len(texts)
            return await loop.run_in_executor(self.executor, self._run, texts, k)
        if self._loop_of_queue is not loop:  # first use, or the app now runs on another event loop
            self._queue, self._loop_of_queue = asyncio.Queue(), loop
            self._task = None
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._loop())
        fut: asyncio.Future[list[dict[str, float]]] = loop.create_future()
        assert self._queue is not None
        await self._queue.put(_Pending(list(texts), k, fut))
        return await fut

    def _run(self, texts: list[str], k: int) -> list[dict[str, float]]:
        run = self.backend.search({str(i): t for i, t in enumerate(texts)}, k=k)
        return [dict(ranked(run.get(str(i), {}))) for i in range(len(texts))]

    async def _loop(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            first = await self._queue.get()
            batch = [first]
            size = len(first.texts)
            deadline = loop.time() + self.max_wait
            while size < self.max_batch:
                timeout = deadline - loop.time()
                try:
                    nxt = self._queue.get_nowait() if timeout <= 0 else await asyncio.wait_for(self._queue.get(),
                                                                                            timeout)
                except (asyncio.TimeoutError, asyncio.QueueEmpty):
                    break
                batch.append(nxt)
                size += len(nxt.texts)
            texts = [t for p in batch for t in p.texts]
            k = max(p.k for p in batch)
            self.batches += 1
            self.queries += len(texts)
            try:
                hits = await loop.run_in_executor(self.executor, self._run, texts, k)
            except Exception as e:  # delivered to every waiting request; the loop goes on
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(e)
                continue
            i = 0
            for p in batch:
                mine = hits[i:i + len(p.texts)]
                i += len(p.texts)
                if not p.future.done():
                    p.future.set_result([dict(list(h.items())[:p.k]) for h in mine])

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None


# -- hits -----------------------------------------------------------------------------------------------------

def assemble_hits(backend: Any, query: str, hits: Mapping[str, float], fields: Sequence[str] = FIELDS,
                  relevance: Mapping[str, int] | None = None) -> list[dict[str, Any]]:
    """``[{id, rank, score, title?, text?, terms?, relevance?}]`` best first: the documents from the index's doc
    store, ``terms`` when the backend reports matched terms, ``relevance`` (the judged grade, 0 when unjudged)
    when qrels are given."""
    order = ranked(hits)
    terms: Mapping[str, Mapping[str, float]] = {}
    explain = getattr(backend, "matched_terms", None)
    if "terms" in fields and callable(explain) and order:
        terms = explain(query, [d for d, _ in order])
    out = []
    for rank, (doc_id, score) in enumerate(order, 1):
        hit: dict[str, Any] = {"id": doc_id, "rank": rank, "score": float(score)}
        if "title" in fields or "text" in fields:
            doc = backend.document(doc_id)
            if "title" in fields:
                hit["title"] = doc.title if doc else ""
            if "text" in fields:
                hit["text"] = doc.text if doc else ""
        if doc_id in terms:
            hit["terms"] = {t: float(w) for t, w in terms[doc_id].items()}
        if relevance is not None:
            hit["relevance"] = int(relevance.get(doc_id, 0))
        out.append(hit)
    return out


def rerank_hits(reranker: Any, query: str, hits: Mapping[str, float], texts: Mapping[str, str], k: int
                ) -> dict[str, float]:
    """Re-score ``hits`` with a :class:`uniret.protocols.PairScorer`; the top ``k`` by its score."""
    ids = [d for d, _ in ranked(hits)]
    if not ids:
        return {}
    scores = reranker.score_pairs([query], [[texts[d] for d in ids]])[0]
    return dict(ranked(dict(zip(ids, (float(s) for s in scores), strict=True)))[:k])


def ndcg_at(qid: str, qrels: Mapping[str, int], hits: Mapping[str, float], k: int) -> float:
    """nDCG@k of one query's hits against its judgements, as trec_eval computes it (via :mod:`uniret.eval`)."""
    from uniret.eval.metrics import evaluate

    if not any(g > 0 for g in qrels.values()):
        return 0.0
    _, per_query = evaluate({qid: dict(qrels)}, {qid: dict(hits)}, [f"ndcg@{k}"], per_query=True)
    return float(per_query[qid][f"ndcg@{k}"])


class Timer:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    @property
    def ms(self) -> float:
        return (time.perf_counter() - self.start) * 1000.0
