"""Load on a running service (uvicorn on loopback): 1,000 concurrent search requests, each a different real
SciFact query, all answered 200 with their own query's hits (no error, no lost or crossed response), with
micro-batching on and off. Latency is measured by ``benchmarks/serve_latency.py``, never asserted here."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from uniret.index.faiss_index import FaissIndex
from uniret.index.service import background_server, create_app
from uniret.index.serving import ServiceConfig

N = 1000


@pytest.fixture(scope="module", params=[pytest.param("bm25", marks=pytest.mark.java),
                                        pytest.param("dense", marks=pytest.mark.slow)])
def backend(request, scifact):
    """BM25 (fast: the default suite) or MiniLM over a SciFact slice (1,000 query encodings: slow on a CPU)."""
    corpus = scifact.sample(num_queries=20, num_docs=300, split="test", seed=7).corpus
    if request.param == "bm25":
        from uniret.index.lucene import LuceneBM25Index

        idx = LuceneBM25Index(threads=1)
    else:
        idx = FaissIndex(request.getfixturevalue("minilm"))
    idx.index(corpus)
    return idx


@pytest.fixture(scope="module")
def queries(scifact):
    texts = list(dict.fromkeys(scifact.queries.values()))[:N]
    assert len(texts) == N
    return texts


@pytest.fixture(scope="module")
def expected(backend, queries):
    return backend.search({str(i): q for i, q in enumerate(queries)}, k=20)


async def _fire(url: str, queries: list[str]) -> list[httpx.Response | BaseException]:
    limits = httpx.Limits(max_connections=N, max_keepalive_connections=N)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=httpx.Timeout(300.0)) as client:
        return await asyncio.gather(*(client.post("/search", json={"query": q, "k": 10}) for q in queries),
                                    return_exceptions=True)


@pytest.mark.parametrize("micro_batching", [True, False], ids=["batched", "alone"])
def test_1000_concurrent_searches_all_answered_with_their_own_hits(backend, queries, expected, micro_batching):
    app = create_app(ServiceConfig(micro_batching=micro_batching), backends={"d": backend})
    with background_server(app) as url:
        responses = asyncio.run(_fire(url, queries))
        stats = httpx.get(url + "/stats").json()["batchers"]["d"]
    failures = [r for r in responses if isinstance(r, BaseException) or r.status_code != 200]
    assert failures == [], f"{len(failures)} of {N} failed, e.g. {failures[0]!r}"
    assert len(responses) == N and stats["queries"] == N
    if micro_batching:
        assert stats["batches"] < N
    else:
        assert stats["batches"] == N
    for i, (q, r) in enumerate(zip(queries, responses, strict=True)):
        assert isinstance(r, httpx.Response)
        result = r.json()["results"][0]
        assert result["query"] == q  # its own query's answer, not a neighbour's
        hits = result["hits"]
        mine = expected[str(i)]
        assert len(hits) == min(10, len(mine))
        for h in hits:  # every hit is one of the query's own top 20, with its own score (near-ties may reorder)
            assert h["id"] in mine and h["score"] == pytest.approx(mine[h["id"]], abs=1e-4)
