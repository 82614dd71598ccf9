"""One search function for a RAG application, whether uniret runs as a service or in process.

    from uniret.client import connect

    retriever = connect("http://127.0.0.1:8000", api_key="...")   # the service (uniret serve)
    retriever = connect("idx/scifact-bm25")                        # the same, in process
    for hit in retriever.search("vitamin D and bone density", k=5):
        print(hit.score, hit.title, hit.text[:80])

Both return the same :class:`Hit` lists: in process the hits are assembled by the service's own code
(:func:`uniret.index.serving.assemble_hits`), so switching between the two changes no result. The HTTP
client uses only the standard library.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from uniret.errors import UniretError


class ServiceError(UniretError, RuntimeError):
    """The service refused a request (``status``: the HTTP status) or could not be reached (``status`` 0)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Hit:
    id: str
    score: float
    rank: int
    title: str = ""
    text: str = ""
    terms: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_json(cls, h: dict[str, Any]) -> Hit:
        return cls(id=h["id"], score=float(h["score"]), rank=int(h["rank"]), title=h.get("title", ""),
                   text=h.get("text", ""), terms=dict(h.get("terms") or {}))


class Retriever(Protocol):
    def search(self, query: str, k: int = 10, *, index: str | None = None) -> list[Hit]: ...

    def search_many(self, queries: Sequence[str], k: int = 10, *, index: str | None = None) -> list[list[Hit]]: ...


class HTTPRetriever:
    """Calls ``POST /search`` of a running service."""

    def __init__(self, url: str, *, api_key: str | None = None, timeout: float = 30.0, index: str | None = None
                 ) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.index = index

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["X-API-Key"] = self.api_key
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode("utf-8"), headers=headers,
                                     method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                data: dict[str, Any] = json.loads(r.read().decode("utf-8"))
                return data
        except urllib.error.HTTPError as e:
            try:
                message = json.loads(e.read().decode("utf-8")).get("error", e.reason)
            except (ValueError, AttributeError):
                message = e.reason
            raise ServiceError(f"{self.url}{path}: {e.code} {message}", status=e.code) from None
        except urllib.error.URLError as e:
            raise ServiceError(f"{self.url}{path}: cannot reach the service ({e.reason})") from None

    def search_many(self, queries: Sequence[str], k: int = 10, *, index: str | None = None) -> list[list[Hit]]:
        body: dict[str, Any] = {"queries": list(queries), "k": k}
        if index or self.index:
            body["index"] = index or self.index
        data = self._post("/search", body)
        return [[Hit.from_json(h) for h in r["hits"]] for r in data["results"]]

    def search(self, query: str, k: int = 10, *, index: str | None = None) -> list[Hit]:
        return self.search_many([query], k, index=index)[0]


class LocalRetriever:
    """Searches saved indexes in this process (``{name: backend}``); the first is the default."""

    def __init__(self, backends: dict[str, Any]) -> None:
        if not backends:
            raise ValueError("no index given")
        self.backends = backends

    def search_many(self, queries: Sequence[str], k: int = 10, *, index: str | None = None) -> list[list[Hit]]:
        from uniret.index.serving import assemble_hits

        name = index or next(iter(self.backends))
        if name not in self.backends:
            raise ValueError(f"unknown index {name!r}; loaded: {', '.join(self.backends)}")
        backend = self.backends[name]
        run = backend.search({str(i): q for i, q in enumerate(queries)}, k=k)
        return [[Hit.from_json(h) for h in assemble_hits(backend, q, run.get(str(i), {}))]
                for i, q in enumerate(queries)]

    def search(self, query: str, k: int = 10, *, index: str | None = None) -> list[Hit]:
        return self.search_many([query], k, index=index)[0]


def connect(target: str | Path | Sequence[str | Path], *, api_key: str | None = None, timeout: float = 30.0,
            device: str = "auto", index: str | None = None) -> HTTPRetriever | LocalRetriever:
    """A :class:`Retriever`: an ``http(s)://`` URL calls the service; one or more index directories are loaded
    in process (named by their directory names, as the service names them)."""
    if isinstance(target, str) and target.startswith(("http://", "https://")):
        return HTTPRetriever(target, api_key=api_key, timeout=timeout, index=index)
    from uniret.index import load_index
    from uniret.index.serving import index_names

    paths = [target] if isinstance(target, (str, Path)) else list(target)
    named = index_names([str(p) for p in paths])
    return LocalRetriever({n: load_index(p, device=device) for n, p in named.items()})
