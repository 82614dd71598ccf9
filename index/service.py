"""The HTTP search service (FastAPI): ``uniret serve --index IDX [--index IDX2 ...]``.

Endpoints
    - ``POST /search``: ``{"query": str | "queries": [str], "k": int, "index": name | "hybrid", "rerank": name?,
      "fields": ["title", "text", "terms"]?, "qid": judged query id?}`` -> hits with id, rank, score, title,
      text, and the matched ``terms`` where the index reports them;
    - ``POST /encode``: ``{"texts": [str], "index": name, "as": "query" | "document"}`` -> dense vectors or
      sparse ``{term: weight}`` maps, from the index's own encoder;
    - ``POST /rerank``: ``{"query": str, "documents": [{"id": str?, "text": str}], "reranker": name, "k": int?}``;
    - ``GET /health``, ``GET /indexes``, ``GET /queries`` (the judged queries of ``--data``), ``GET /`` (the search
      page), ``GET /docs`` and ``GET /openapi.json`` (OpenAPI).

Index ``hybrid`` fuses every loaded index (unless one is named so) with :mod:`uniret.index.hybrid`'s fusion; each
member's search is micro-batched on its own (:mod:`uniret.index.serving`).

Every refusal is a 4xx with ``{"error": message}``: malformed JSON 400, wrong types or unknown fields 422, an
unknown index 404, an index name holding a path 400, ``k`` or batch over the limit 422, an oversized body 413,
a missing or wrong API key (header ``X-API-Key``) 401.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from importlib import resources
from typing import Any, Literal

import numpy as np

from uniret.errors import MissingExtraError
from uniret.index.serving import (
    FIELDS,
    HYBRID,
    Limits,
    MicroBatcher,
    RequestError,
    ServiceConfig,
    Timer,
    assemble_hits,
    check_name,
    ndcg_at,
    rerank_hits,
)

try:
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse
    from pydantic import BaseModel, ConfigDict, Field
    from starlette.exceptions import HTTPException as StarletteHTTPException
except ImportError as e:  # pragma: no cover - the serve extra is missing
    raise MissingExtraError("fastapi", "serve") from e

logger = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"
OPEN_PATHS = frozenset({"/", "/health", "/docs", "/openapi.json", "/docs/oauth2-redirect", "/redoc"})

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


# -- request schema ---------------------------------------------------------------------------------------------

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class SearchRequest(_Strict):
    query: str | None = Field(None, description="one query (or give `queries`)")
    queries: list[str] | None = Field(None, description="several queries, searched as one batch")
    k: int = Field(10, ge=1, description="hits per query")
    index: str | None = Field(None, description="an index name from GET /indexes, or 'hybrid'; default: the first")
    rerank: str | None = Field(None, description="a reranker loaded with --reranker NAME=FOLDER")
    rerank_depth: int = Field(100, ge=1, description="first-stage hits the reranker re-scores")
    fields: list[Literal["title", "text", "terms"]] | None = Field(None, description="hit fields (default all)")
    qid: str | None = Field(None, description="a judged query id of --data: hits get their grade and nDCG@k")


class Document(_Strict):
    id: str | None = None
    text: str


class RerankRequest(_Strict):
    query: str
    documents: list[Document]
    reranker: str | None = None
    k: int | None = Field(None, ge=1)


class EncodeRequest(_Strict):
    texts: list[str]
    index: str | None = None
    as_: Literal["query", "document"] = Field("query", alias="as")


# -- the service state ----------------------------------------------------------------------------------------

class Service:
    """Loaded indexes, their batchers, rerankers and the judged queries of an eval run."""

    def __init__(self, config: ServiceConfig, *, backends: dict[str, Any] | None = None,
                 rerankers: dict[str, Any] | None = None) -> None:
        self.config = config
        self.limits = config.limits
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="uniret-search")
        self.backends: dict[str, Any] = dict(backends or {})
        for name, path in config.indexes.items():
            if name not in self.backends:
                from uniret.index import load_index

                logger.info("loading index %s from %s", name, path)
                self.backends[name] = load_index(path, device=config.device)
        if not self.backends:
            raise ValueError("no index to serve: pass --index PATH (repeatable)")
        self.paths = {n: str(p) for n, p in config.indexes.items()}
        self.rerankers: dict[str, Any] = dict(rerankers or {})
        for name, path in config.rerankers.items():
            if name not in self.rerankers:
                from uniret.retriever.reranker import CrossEncoderReranker

                self.rerankers[name] = CrossEncoderReranker(path, device=config.device)
        self.batchers = {n: MicroBatcher(b, self.executor, enabled=config.micro_batching,
                                         max_wait_ms=config.max_wait_ms, max_batch=config.max_batch)
                         for n, b in self.backends.items()}
        self.hybrid = None
        if HYBRID not in self.backends and len(self.backends) >= 2:
            from uniret.index.hybrid import HybridIndex

            self.hybrid = HybridIndex(list(self.backends.values()), config.hybrid_fusion, depth=config.hybrid_depth)
        self.qrels: dict[str, dict[str, int]] = {}
        self.judged: dict[str, str] = {}
        if config.data:
            from uniret.data import load_beir

            dataset = load_beir(config.data)
            self.qrels = {q: dict(d) for q, d in dataset.qrels(config.split).judgements.items()}
            self.judged = {q: t for q, t in dataset.split_queries(config.split).items() if q in self.qrels}

    def backend(self, name: str | None) -> tuple[str, Any]:
        if name is None:
            name = next(iter(self.backends))
        check_name(name)
        if name == HYBRID and self.hybrid is not None:
            return name, self.hybrid
        if name not in self.backends:
            known = ", ".join([*self.backends, *([HYBRID] if self.hybrid is not None else [])])
            raise RequestError(f"unknown index {name!r}; served: {known}", status=404)
        return name, self.backends[name]

    async def search(self, name: str, backend: Any, texts: list[str], k: int) -> list[dict[str, float]]:
        if backend is self.hybrid:
            depth = max(k, self.hybrid.depth)
            per_member = await asyncio.gather(*(self.batchers[n].search(texts, depth) for n in self.batchers))
            runs = [{str(i): hits for i, hits in enumerate(member)} for member in per_member]
            fused = self.hybrid.fuse(runs, k)
            return [fused.get(str(i), {}) for i in range(len(texts))]
        return await self.batchers[name].search(texts, k)

    def describe(self) -> list[dict[str, Any]]:
        out = []
        for name, b in self.backends.items():
            d = b.describe()
            out.append({"name": name, "kind": b.kind, "num_docs": d.get("num_docs"), "path": self.paths.get(name),
                        "terms": callable(getattr(b, "matched_terms", None)),
                        "encoder": callable(getattr(getattr(b, "encoder", None), "encode_queries", None)),
                        "describe": d})
        if self.hybrid is not None:
            out.append({"name": HYBRID, "kind": HYBRID, "num_docs": self.hybrid.num_docs, "path": None,
                        "terms": any(i["terms"] for i in out), "encoder": False,
                        "describe": {"fusion": self.hybrid.fusion.spec, "members": list(self.backends)}})
        return out

    def stats(self) -> dict[str, Any]:
        return {n: {"batches": b.batches, "queries": b.queries} for n, b in self.batchers.items()}

    async def close(self) -> None:
        for b in self.batchers.values():
            await b.close()
        self.executor.shutdown(wait=False, cancel_futures=True)


# -- ASGI middleware: the body limit ----------------------------------------------------------------------------

class BodyLimit:
    """Refuse a request body over ``limit`` bytes with 413 before the app parses it (Content-Length or counted)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def _refuse(self, send: Send, size: str) -> None:
        body = json.dumps({"error": f"request body of {size} bytes is over the limit of {self.limit} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope.get("headers", []):
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.limit:
                    await self._refuse(send, str(declared))
                    return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._refuse(send, f"more than {self.limit}")
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


# -- the app ---------------------------------------------------------------------------------------------------

def _validation_message(exc: RequestValidationError) -> tuple[int, str]:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        e = next(e for e in errors if e.get("type") == "json_invalid")
        where = e.get("ctx", {}).get("error", "")
        return 400, f"malformed JSON body{': ' + str(where) if where else ''}"
    parts = []
    for e in errors[:5]:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
        parts.append(f"{loc}: {e.get('msg')}" + (f" (got {e['input']!r})" if "input" in e and
                                                 not isinstance(e["input"], (dict, list)) else ""))
    return 422, "invalid request: " + "; ".join(parts)


def create_app(config: ServiceConfig | None = None, *, backends: dict[str, Any] | None = None,
               rerankers: dict[str, Any] | None = None) -> Any:
    """The FastAPI app over ``config.indexes`` (loaded now) and/or already loaded ``backends`` ({name: backend})."""
    config = config or ServiceConfig()
    limits: Limits = config.limits
    service = Service(config, backends=backends, rerankers=rerankers)

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        yield
        await service.close()

    app = FastAPI(title="uniret search", version=_version(), lifespan=lifespan,
                  description="Search, encode and rerank over saved uniret indexes. Refusals are 4xx with "
                              '{"error": message}.')
    app.state.service = service

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 400 and "parsing the body" in detail:
            detail = "malformed request body: expected UTF-8 JSON"
        return JSONResponse({"error": detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        status, message = _validation_message(exc)
        return JSONResponse({"error": message}, status_code=status)

    @app.middleware("http")
    async def _api_key(request: Request, call_next: Any) -> Any:
        if config.api_key and request.url.path not in OPEN_PATHS:
            given = request.headers.get(API_KEY_HEADER, "")
            if not hmac.compare_digest(given.encode(), config.api_key.encode()):
                what = "missing" if not given else "wrong"
                return JSONResponse({"error": f"{what} API key: send it in the {API_KEY_HEADER} header"},
                                    status_code=401)
        return await call_next(request)

    def check_count(n: int, what: str, limit: int) -> None:
        if n > limit:
            raise RequestError(f"{n} {what} in one request; the limit is {limit}", status=422)

    def check_texts(texts: list[str], what: str, limit: int) -> None:
        for i, t in enumerate(texts):
            if len(t) > limit:
                raise RequestError(f"{what}[{i}] has {len(t)} characters; the limit is {limit}", status=422)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "indexes": len(service.backends), "micro_batching": config.micro_batching,
                "api_key": bool(config.api_key), "judged_queries": len(service.judged)}

    @app.get("/indexes")
    async def indexes() -> dict[str, Any]:
        return {"indexes": service.describe(), "rerankers": list(service.rerankers),
                "limits": limits.__dict__}

    @app.get("/stats")
    async def stats() -> dict[str, Any]:
        return {"batchers": service.stats()}

    @app.get("/queries")
    async def queries() -> dict[str, Any]:
        return {"data": config.data, "split": config.split,
                "queries": [{"qid": q, "text": t, "judged": len(service.qrels.get(q, {}))}
                            for q, t in service.judged.items()]}

    @app.post("/search")
    async def search(req: SearchRequest) -> dict[str, Any]:
        timer = Timer()
        if (req.query is None) == (req.queries is None):
            raise RequestError("give exactly one of 'query' (a string) or 'queries' (a list of strings)", status=422)
        texts = [req.query] if req.query is not None else list(req.queries or [])
        if not texts:
            raise RequestError("'queries' is empty", status=422)
        check_count(len(texts), "queries", limits.max_queries)
        check_texts(texts, "query" if req.query is not None else "queries", limits.max_query_chars)
        if req.k > limits.max_k:
            raise RequestError(f"k={req.k} is over the limit of {limits.max_k}", status=422)
        name, backend = service.backend(req.index)
        reranker = None
        if req.rerank is not None:
            check_name(req.rerank, "reranker")
            if req.rerank not in service.rerankers:
                raise RequestError(f"unknown reranker {req.rerank!r}; loaded: "
                                   f"{', '.join(service.rerankers) or 'none (start with --reranker NAME=FOLDER)'}",
                                   status=404)
            reranker = service.rerankers[req.rerank]
            if req.rerank_depth > limits.max_k:
                raise RequestError(f"rerank_depth={req.rerank_depth} is over the limit of {limits.max_k}", status=422)
        judged = None
        if req.qid is not None:
            if req.qid not in service.qrels:
                raise RequestError(f"unknown judged query {req.qid!r}" + (
                    f" in {config.data} ({config.split})" if config.data else ": start the service with --data"),
                    status=404)
            judged = service.qrels[req.qid]
        fields = list(req.fields) if req.fields is not None else list(FIELDS)
        depth = max(req.k, req.rerank_depth) if reranker is not None else req.k
        try:
            runs = await service.search(name, backend, texts, depth)
        except (ValueError, UnicodeError) as e:
            raise RequestError(f"the index refused the query: {e}", status=422) from None
        results = []
        for text, hits in zip(texts, runs, strict=True):
            if reranker is not None:
                docs = {d: (lambda doc: doc.full_text() if doc else "")(backend.document(d)) for d in hits}
                loop = asyncio.get_running_loop()
                hits = await loop.run_in_executor(service.executor, rerank_hits, reranker, text, hits, docs, req.k)
            one: dict[str, Any] = {"query": text, "hits": assemble_hits(backend, text, hits, fields, judged)}
            if judged is not None:
                one["ndcg@k"] = ndcg_at(req.qid or "q", judged, hits, req.k)
                one["judged"] = {d: g for d, g in judged.items() if g > 0}
            results.append(one)
        return {"index": name, "k": req.k, "results": results, "took_ms": round(timer.ms, 3)}

    @app.post("/encode")
    async def encode(req: EncodeRequest) -> dict[str, Any]:
        check_count(len(req.texts), "texts", limits.max_queries)
        check_texts(req.texts, "texts", limits.max_query_chars)
        name, backend = service.backend(req.index)
        encoder = getattr(backend, "encoder", None)
        fn = getattr(encoder, "encode_queries" if req.as_ == "query" else "encode_documents", None)
        if not callable(fn):
            raise RequestError(f"index {name!r} ({backend.kind}) has no encoder to encode with; pick an index of "
                               "an encoder family (GET /indexes says which have one)")
        loop = asyncio.get_running_loop()
        vectors = await loop.run_in_executor(service.executor, fn, list(req.texts))
        if isinstance(vectors, np.ndarray):
            return {"index": name, "type": "dense", "dimension": int(vectors.shape[1]) if vectors.ndim == 2 else 0,
                    "vectors": np.asarray(vectors, dtype=np.float32).tolist()}
        rows = getattr(vectors, "row", None)
        if callable(rows):
            return {"index": name, "type": "sparse", "vectors": [vectors.row(i) for i in range(len(vectors))]}
        raise RequestError(f"index {name!r}'s encoder returned {type(vectors).__name__}, which cannot be sent")

    @app.post("/rerank")
    async def rerank(req: RerankRequest) -> dict[str, Any]:
        if not service.rerankers:
            raise RequestError("no reranker is loaded: start the service with --reranker NAME=FOLDER", status=404)
        name = req.reranker or next(iter(service.rerankers))
        check_name(name, "reranker")
        if name not in service.rerankers:
            raise RequestError(f"unknown reranker {name!r}; loaded: {', '.join(service.rerankers)}", status=404)
        check_count(len(req.documents), "documents", limits.max_documents)
        check_texts([req.query], "query", limits.max_query_chars)
        check_texts([d.text for d in req.documents], "documents", limits.max_document_chars)
        ids = [d.id if d.id is not None else str(i) for i, d in enumerate(req.documents)]
        if len(set(ids)) != len(ids):
            raise RequestError("document ids must be unique", status=422)
        texts = dict(zip(ids, (d.text for d in req.documents), strict=True))
        loop = asyncio.get_running_loop()
        hits = await loop.run_in_executor(service.executor, rerank_hits, service.rerankers[name], req.query,
                                          dict.fromkeys(ids, 0.0), texts, req.k or len(ids))
        return {"reranker": name, "hits": [{"id": d, "rank": r, "score": s} for r, (d, s) in
                                           enumerate(hits.items(), 1)]}

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(_page())

    return BodyLimit(app, limits.max_body_bytes)


def _version() -> str:
    from uniret import __version__

    return __version__


def _page() -> str:
    return resources.files("uniret.index").joinpath("static/search.html").read_text(encoding="utf-8")


def serve(config: ServiceConfig, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Load the indexes and serve until interrupted."""
    try:
        import uvicorn
    except ImportError as e:
        raise MissingExtraError("uvicorn", "serve") from e
    app = create_app(config)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)


@contextmanager
def background_server(app: Any, host: str = "127.0.0.1", port: int = 0, *, timeout: float = 60.0) -> Iterator[str]:
    """Run ``app`` with uvicorn on a thread (loopback, a free port by default) and yield its base URL; the server
    stops when the block ends. For tests, benchmarks and notebooks."""
    import threading

    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                                           lifespan="on", backlog=4096, timeout_keep_alive=30))
    thread = threading.Thread(target=server.run, name="uniret-service", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the service did not start on {host}:{port}")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout)


def app_from_env() -> Any:  # pragma: no cover - for `uvicorn uniret.index.service:app_from_env --factory`
    import os

    from uniret.index.serving import index_names

    specs = [s for s in os.environ.get("UNIRET_INDEXES", "").split(",") if s]
    return create_app(ServiceConfig(indexes=index_names(specs), api_key=os.environ.get("UNIRET_API_KEY") or None))


__all__ = ["API_KEY_HEADER", "ServiceConfig", "background_server", "create_app", "serve"]
