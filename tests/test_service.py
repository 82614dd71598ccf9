"""The search service on real indexes of a SciFact slice (MiniLM dense; BM25 where Java is present): search,
encode, rerank, hybrid, micro-batching, every refusal a 4xx with a clear message, the API key, the judged-query
nDCG, the Python client (HTTP and in process give the same hits), and the search page in a headless Chromium."""

from __future__ import annotations

import asyncio
import json
import shutil

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from uniret.client import HTTPRetriever, ServiceError, connect
from uniret.data import save_beir
from uniret.index import load_index
from uniret.index.faiss_index import FaissIndex
from uniret.index.service import background_server, create_app
from uniret.index.serving import Limits, ServiceConfig, index_names, ndcg_at


@pytest.fixture(scope="module")
def sample(scifact):
    return scifact.sample(num_queries=10, num_docs=80, split="test", seed=5)


@pytest.fixture(scope="module")
def data_dir(sample, tmp_path_factory):
    return save_beir(sample, tmp_path_factory.mktemp("svc") / "data")


@pytest.fixture(scope="module")
def dense_path(sample, minilm, tmp_path_factory):
    idx = FaissIndex(minilm)
    idx.index(sample.corpus)
    return idx.save(tmp_path_factory.mktemp("svc") / "scifact-dense")


@pytest.fixture(scope="module")
def dense(dense_path, minilm):
    return load_index(dense_path, encoder=minilm)


@pytest.fixture(scope="module")
def client(dense, data_dir):
    app = create_app(ServiceConfig(data=str(data_dir), limits=Limits(max_k=50, max_queries=4, max_body_bytes=4096)),
                     backends={"scifact-dense": dense}, rerankers={"cosine": CosineScorer(dense.encoder)})
    with TestClient(app) as c:
        yield c


class CosineScorer:
    """A real-model pair scorer for /rerank (MiniLM cosine); the service takes any PairScorer."""

    def __init__(self, encoder) -> None:  # type: ignore[no-untyped-def]
        self.encoder = encoder

    def score_pairs(self, queries, docs_per_query):  # type: ignore[no-untyped-def]
        out = []
        for q, docs in zip(queries, docs_per_query, strict=True):
            qv = self.encoder.encode_queries([q])[0]
            out.append([float(v) for v in self.encoder.encode_documents(list(docs)) @ qv])
        return out


def _queries(sample, n=4):
    return list(sample.split_queries("test").values())[:n]


def test_search_returns_the_indexs_hits_with_their_documents(client, dense, sample):
    q = _queries(sample, 1)[0]
    r = client.post("/search", json={"query": q, "k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["index"] == "scifact-dense" and body["k"] == 5
    hits = body["results"][0]["hits"]
    expected = dense.search({"q": q}, k=5)["q"]
    assert [h["id"] for h in hits] == list(expected) and [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
    assert [h["score"] for h in hits] == pytest.approx(list(expected.values()), abs=1e-5)
    doc = dense.document(hits[0]["id"])
    assert hits[0]["title"] == doc.title and hits[0]["text"] == doc.text
    assert "terms" not in hits[0]  # a dense index reports no matched terms

    only = client.post("/search", json={"query": q, "k": 2, "fields": ["title"]}).json()["results"][0]["hits"][0]
    assert set(only) == {"id", "rank", "score", "title"}


def test_batch_of_queries_keeps_their_order(client, dense, sample):
    qs = _queries(sample, 3)
    body = client.post("/search", json={"queries": qs, "k": 3}).json()
    assert [r["query"] for r in body["results"]] == qs
    run = dense.search({str(i): q for i, q in enumerate(qs)}, k=3)
    assert [[h["id"] for h in r["hits"]] for r in body["results"]] == [list(run[str(i)]) for i in range(3)]


ERRORS = [
    # (body, status, message fragment)
    (b"{not json", 400, "malformed JSON"),
    (b'{"query": "x",', 400, "malformed JSON"),
    (b"[1, 2]", 422, "valid dictionary"),
    (b'{"query": 5}', 422, "query: Input should be a valid string"),
    (b'{"query": "x", "k": "10"}', 422, "k: Input should be a valid integer"),
    (b'{"query": "x", "k": 1.5}', 422, "k: Input should be a valid integer"),
    (b'{"query": "x", "k": 0}', 422, "k: Input should be greater than or equal to 1"),
    (b'{"query": "x", "k": 51}', 422, "k=51 is over the limit of 50"),
    (b'{"queries": ["a", "b", "c", "d", "e"]}', 422, "5 queries in one request; the limit is 4"),
    (b'{"queries": []}', 422, "'queries' is empty"),
    (b'{}', 422, "exactly one of 'query'"),
    (b'{"query": "x", "queries": ["y"]}', 422, "exactly one of 'query'"),
    (b'{"query": "x", "index": "nope"}', 404, "unknown index 'nope'; served: scifact-dense"),
    (b'{"query": "x", "index": "../scifact-dense"}', 400, "bad index name '../scifact-dense'"),
    (b'{"query": "x", "index": "/etc/passwd"}', 400, "no '/' or '..'"),
    (b'{"query": "x", "index": ".."}', 400, "bad index name"),
    (b'{"query": "x", "rerank": "nope"}', 404, "unknown reranker 'nope'; loaded: cosine"),
    (b'{"query": "x", "qid": "nope"}', 404, "unknown judged query 'nope'"),
    (b'{"query": "x", "fields": ["nope"]}', 422, "fields.0"),
    (b'{"query": "x", "extra": 1}', 422, "extra: Extra inputs are not permitted"),
    (b'{"query": "' + b"x" * 5000 + b'"}', 413, "over the limit of 4096 bytes"),
]


@pytest.mark.parametrize("body, status, message", ERRORS, ids=[m for _, _, m in ERRORS])
def test_bad_requests_are_4xx_with_a_clear_message(client, body, status, message):
    r = client.post("/search", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert message in r.json()["error"]


def test_an_oversized_chunked_body_is_refused_without_content_length(client):
    def chunks():
        for _ in range(10):
            yield b" " * 1000

    r = client.post("/search", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "over the limit" in r.json()["error"]


def test_api_key(dense):
    app = create_app(ServiceConfig(api_key="s3cret"), backends={"d": dense})
    with TestClient(app) as c:
        assert c.get("/health").json()["api_key"] is True  # open: a load balancer probes it
        assert c.get("/").status_code == 200
        for headers, status in (({}, 401), ({"X-API-Key": "wrong"}, 401), ({"X-API-Key": "s3cret"}, 200)):
            r = c.post("/search", json={"query": "cells", "k": 2}, headers=headers)
            assert r.status_code == status
            assert c.get("/indexes", headers=headers).status_code == status
        assert "X-API-Key header" in c.post("/search", json={"query": "x"}).json()["error"]


def test_indexes_health_and_openapi(client):
    idx = client.get("/indexes").json()
    assert [i["name"] for i in idx["indexes"]] == ["scifact-dense"]
    assert idx["indexes"][0]["kind"] == "faiss" and idx["indexes"][0]["num_docs"] == 80
    assert idx["limits"]["max_k"] == 50 and idx["rerankers"] == ["cosine"]
    assert client.get("/health").json()["status"] == "ok"
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/search", "/encode", "/rerank", "/health", "/indexes"} <= set(paths)


def test_encode_gives_the_indexs_encoder_vectors(client, dense):
    body = client.post("/encode", json={"texts": ["vitamin D", "bone density"], "as": "document"}).json()
    assert body["type"] == "dense" and body["dimension"] == 384
    assert np.allclose(body["vectors"], dense.encoder.encode_documents(["vitamin D", "bone density"]), atol=1e-5)
    assert client.post("/encode", json={"texts": ["a"] * 5}).status_code == 422
    assert client.post("/encode", json={"texts": ["a"], "as": "both"}).status_code == 422


def test_rerank_endpoint_and_search_with_rerank(client, dense, sample):
    q = _queries(sample, 1)[0]
    hits = client.post("/search", json={"query": q, "k": 5}).json()["results"][0]["hits"]
    docs = [{"id": h["id"], "text": dense.document(h["id"]).full_text()[:500]} for h in reversed(hits)]  # < 4 KiB
    body = client.post("/rerank", json={"query": q, "documents": docs, "k": 3}).json()
    scorer = CosineScorer(dense.encoder)
    expected = scorer.score_pairs([q], [[d["text"] for d in docs]])[0]
    order = sorted(zip([d["id"] for d in docs], expected, strict=True), key=lambda x: -x[1])[:3]
    assert [h["id"] for h in body["hits"]] == [d for d, _ in order]
    assert [h["score"] for h in body["hits"]] == pytest.approx([s for _, s in order], abs=1e-5)

    r = client.post("/search", json={"query": q, "k": 3, "rerank": "cosine", "rerank_depth": 10}).json()
    assert len(r["results"][0]["hits"]) == 3
    assert client.post("/rerank", json={"query": q, "documents": [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]}
                       ).status_code == 422


def test_judged_query_gets_grades_and_ndcg(client, sample):
    qid, text = next(iter(sample.split_queries("test").items()))
    res = client.post("/search", json={"query": text, "k": 10, "qid": qid}).json()["results"][0]
    qrels = sample.qrels("test").judgements[qid]
    assert {h["id"]: h["relevance"] for h in res["hits"]} == {h["id"]: qrels.get(h["id"], 0) for h in res["hits"]}
    run = {h["id"]: h["score"] for h in res["hits"]}
    assert res["ndcg@k"] == pytest.approx(ndcg_at(qid, qrels, run, 10))
    from uniret.eval.metrics import evaluate

    assert res["ndcg@k"] == pytest.approx(evaluate({qid: qrels}, {qid: run}, ["ndcg@10"])["ndcg@10"])
    judged = client.get("/queries").json()["queries"]
    assert len(judged) == 10 and {"qid", "text", "judged"} <= set(judged[0])


def test_concurrent_requests_are_micro_batched_with_the_same_results(dense, sample):
    qs = _queries(sample, 10)

    async def fire(app, ks):  # type: ignore[no-untyped-def]
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            rs = await asyncio.gather(*(c.post("/search", json={"query": q, "k": k}) for q, k in zip(qs, ks,
                                                                                                  strict=True)))
            stats = (await c.get("/stats")).json()["batchers"]["d"]
        return [r.json()["results"][0]["hits"] for r in rs], stats

    ks = [3, 7] * 5
    outs = {}
    for on in (True, False):
        app = create_app(ServiceConfig(micro_batching=on, max_wait_ms=50), backends={"d": dense})
        outs[on] = asyncio.run(fire(app, ks))
    (batched, stats_on), (alone, stats_off) = outs[True], outs[False]
    assert stats_off == {"batches": 10, "queries": 10}
    assert stats_on["queries"] == 10 and stats_on["batches"] < 10  # several requests shared an encoder call
    assert [[h["id"] for h in hits] for hits in batched] == [[h["id"] for h in hits] for hits in alone]
    assert [len(h) for h in batched] == ks
    for a, b in zip(batched, alone, strict=True):
        assert [h["score"] for h in a] == pytest.approx([h["score"] for h in b], abs=1e-4)


def test_index_names_default_to_the_directory(tmp_path):
    assert index_names(["idx/scifact-bm25", "d=idx/other/"]) == {"scifact-bm25": tmp_path.__class__(
        "idx/scifact-bm25"), "d": tmp_path.__class__("idx/other/")}
    with pytest.raises(ValueError, match="taken by"):
        index_names(["a/x", "b/x"])
    with pytest.raises(ValueError, match="bad index name"):
        index_names(["..=x"])


def test_http_and_in_process_clients_give_the_same_hits(dense_path, dense, sample):
    qs = _queries(sample, 3)
    local = connect(dense_path, device="cpu")
    app = create_app(ServiceConfig(api_key="k"), backends={"scifact-dense": dense})
    with background_server(app) as url:
        remote = connect(url, api_key="k")
        for a, b in zip(remote.search_many(qs, k=4), local.search_many(qs, k=4), strict=True):
            assert [(h.id, h.rank, h.title, h.text) for h in a] == [(h.id, h.rank, h.title, h.text) for h in b]
            assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-5)
        assert remote.search(qs[0], k=2)[0].title
        with pytest.raises(ServiceError, match="401 wrong API key"):
            HTTPRetriever(url, api_key="bad").search("x")
        with pytest.raises(ServiceError, match="404 unknown index 'nope'"):
            remote.search("x", index="nope")
    with pytest.raises(ServiceError, match="cannot reach the service"):
        HTTPRetriever(url, timeout=2).search("x")


# -- BM25 and the hybrid (Java) ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bm25(sample, tmp_path_factory):
    from uniret.index.lucene import LuceneBM25Index

    idx = LuceneBM25Index(threads=1)
    idx.index(sample.corpus)
    path = idx.save(tmp_path_factory.mktemp("svc") / "scifact-bm25")
    return load_index(path)


@pytest.mark.java
def test_hybrid_index_fuses_every_served_index(bm25, dense, sample):
    from uniret.index.hybrid import HybridIndex

    qs = _queries(sample, 3)
    app = create_app(ServiceConfig(hybrid_fusion="minmax:0.4"), backends={"bm25": bm25, "dense": dense})
    with TestClient(app) as c:
        assert [i["name"] for i in c.get("/indexes").json()["indexes"]] == ["bm25", "dense", "hybrid"]
        body = c.post("/search", json={"queries": qs, "k": 5, "index": "hybrid"}).json()
        expected = HybridIndex([bm25, dense], "minmax:0.4").search({str(i): q for i, q in enumerate(qs)}, k=5)
        for i, r in enumerate(body["results"]):
            assert [h["id"] for h in r["hits"]] == list(expected[str(i)])
            assert [h["score"] for h in r["hits"]] == pytest.approx(list(expected[str(i)].values()), abs=1e-6)
        r = c.post("/encode", json={"texts": ["x"], "index": "bm25"})
        assert r.status_code == 400 and "has no encoder" in r.json()["error"]


@pytest.mark.java
def test_cli_serve_starts_on_saved_indexes(tmp_path, bm25, dense_path):
    import os
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bm25_dir = shutil.copytree(bm25._source_dir, tmp_path / "bm25")
    proc = subprocess.Popen([sys.executable, "-m", "uniret", "serve", "--index", str(bm25_dir), "--index",
                             f"dense={dense_path}", "--port", str(port), "--device", "cpu", "--api-key-env", "KEY"],
                            env={**os.environ, "KEY": "abc"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.HTTPError:
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                time.sleep(0.3)
        hits = HTTPRetriever(url, api_key="abc", index="hybrid").search("vitamin D", k=3)
        assert len(hits) == 3 and all(h.text for h in hits)
        names = [i["name"] for i in httpx.get(url + "/indexes", headers={"X-API-Key": "abc"}).json()["indexes"]]
        assert names == ["bm25", "dense", "hybrid"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# -- the search page in a real browser ---------------------------------------------------------------------------

def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def test_search_page_in_headless_chromium(dense, sample, data_dir, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api", reason="needs playwright (the dev extra)")
    browser_path = _chromium()
    if browser_path is None:
        pytest.skip("no Chromium on this machine (apt-get install chromium)")
    qid, text = next(iter(sample.split_queries("test").items()))
    app = create_app(ServiceConfig(data=str(data_dir)), backends={"scifact-dense": dense})
    with background_server(app) as url, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url + "/")
            page.wait_for_selector("#index option", state="attached")
            assert page.locator("#index option").first.inner_text().startswith("scifact-dense (faiss, 80 docs)")
            page.fill("#q", "vitamin D and bone density")
            page.fill("#k", "5")
            page.click("#go")
            page.wait_for_selector("li.hit")
            assert page.locator("li.hit").count() == 5
            first = page.locator("li.hit").first
            api = dense.search({"q": "vitamin D and bone density"}, k=5)["q"]
            assert first.locator(".docid").inner_text() == next(iter(api))
            assert float(first.locator(".score").inner_text()) == pytest.approx(next(iter(api.values())), abs=1e-4)
            # an eval run: pick a judged query; the page shows its nDCG and the grades of the hits
            page.select_option("#judged", qid)
            page.wait_for_selector("#ndcg")
            shown = float(page.locator("#ndcg").inner_text())
            qrels = sample.qrels("test").judgements[qid]
            expected = ndcg_at(qid, qrels, dense.search({qid: text}, k=5)[qid], 5)
            assert shown == pytest.approx(expected, abs=1e-4)
            assert page.locator(".rel.pos").count() == sum(1 for d in dense.search({qid: text}, k=5)[qid]
                                                           if qrels.get(d, 0) > 0)
            page.screenshot(path=str(tmp_path / "search-page.png"), full_page=False)
            assert (tmp_path / "search-page.png").stat().st_size > 10_000
            # an error from the service is shown, not swallowed
            page.fill("#k", "5000")
            page.click("#go")
            page.wait_for_selector("#status.error")
            assert "over the limit" in page.locator("#status").inner_text()
            assert errors == []
        finally:
            browser.close()


def test_page_is_package_data(client):
    html = client.get("/").text
    assert '<input id="q"' in html and 'id="index"' in html and "X-API-Key" in html and "terms" in html
    assert json.loads(json.dumps(client.get("/health").json()))["judged_queries"] == 10


def test_one_app_serves_from_a_second_event_loop(dense):
    """The batcher's queue follows the running loop (a TestClient or server restarted on the same app)."""
    app = create_app(ServiceConfig(), backends={"d": dense})

    async def one():  # type: ignore[no-untyped-def]
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            return (await asyncio.wait_for(c.post("/search", json={"query": "cells", "k": 2}), 60)).status_code

    assert [asyncio.run(one()), asyncio.run(one())] == [200, 200]
