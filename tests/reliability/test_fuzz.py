"""Property-based tests (hypothesis): bad input is always a clear error, never a crash or a silent wrong result.

- ``load_beir`` on generated corpus / queries / qrels files: either the loaded records are exactly what a small
  reference model of the BEIR format says, or a :class:`DataFormatError` naming the file (and line) is raised;
  arbitrary bytes never raise anything else.
- The service's request schema: any JSON value or byte string sent to ``POST /search`` gets a 2xx or a 4xx with
  an ``error`` message, never a 5xx; a 200 only for a request the reference model accepts.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conftest import HashEncoder
from uniret.data import Corpus, Document, load_beir
from uniret.errors import DataFormatError
from uniret.index.faiss_index import FaissIndex
from uniret.index.service import create_app
from uniret.index.serving import Limits, ServiceConfig

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
WS = re.compile(r"\s")

# -- the data loaders -------------------------------------------------------------------------------------------

ids = st.one_of(st.text(max_size=6), st.integers(-5, 10**12), st.booleans(), st.none(), st.floats(allow_nan=False),
                st.lists(st.integers(), max_size=2))
texts = st.one_of(st.text(max_size=20), st.none(), st.integers(), st.booleans(), st.lists(st.text(max_size=3), max_size=2))
records = st.one_of(
    st.fixed_dictionaries({"_id": ids}, optional={"title": texts, "text": texts, "extra": texts}),
    st.fixed_dictionaries({}, optional={"title": texts, "text": texts}),  # no _id
    st.one_of(st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=2), st.none()),  # not objects
)


class Invalid(Exception):
    pass


def model_id(r: Any) -> str:
    if not isinstance(r, dict):
        raise Invalid("not an object")
    if "_id" not in r:
        raise Invalid("no _id")
    v = r["_id"]
    if isinstance(v, bool) or not isinstance(v, (str, int)) or str(v) == "":
        raise Invalid("bad _id")
    if WS.search(str(v)):
        raise Invalid("whitespace")
    return str(v)


def model_text(r: dict[str, Any], name: str) -> str:
    v = r.get(name, "")
    if v is None:
        return ""
    if not isinstance(v, str):
        raise Invalid(name)
    return v


def model_corpus(rs: list[Any]) -> list[tuple[str, str, str]]:
    out, seen = [], set()
    for r in rs:
        i = model_id(r)
        if i in seen:
            raise Invalid("duplicate")
        seen.add(i)
        out.append((i, model_text(r, "title"), model_text(r, "text")))
    if not out:
        raise Invalid("empty")
    return out


def model_queries(rs: list[Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for r in rs:
        i = model_id(r)
        if i in out:
            raise Invalid("duplicate")
        out[i] = model_text(r, "text")
    if not out:
        raise Invalid("empty")
    return out


GOOD_CORPUS = [{"_id": "d1", "title": "t", "text": "x"}, {"_id": "d2", "text": "y"}]
GOOD_QUERIES = [{"_id": "q1", "text": "x"}]


def _write(root: Path, corpus: list[Any], queries: list[Any], qrels: str) -> Path:
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus), encoding="utf-8")
    (root / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in queries), encoding="utf-8")
    (root / "qrels" / "test.tsv").write_text(qrels, encoding="utf-8")
    return root


@FUZZ
@given(rs=st.lists(records, max_size=6))
@example(rs=[{"_id": True, "text": "x"}])  # found by this model: a JSON boolean id was loaded as the id "True"
@example(rs=[{"_id": 7, "text": "x"}, {"_id": "7"}])
def test_corpus_loads_exactly_or_fails_with_file_and_line(rs):
    with tempfile.TemporaryDirectory() as tmp:
        root = _write(Path(tmp), rs, GOOD_QUERIES, "query-id\tcorpus-id\tscore\n")
        try:
            expected = model_corpus(rs)
        except Invalid:
            with pytest.raises(DataFormatError, match=r"corpus\.jsonl"):
                load_beir(root)
            return
        data = load_beir(root)
        assert [(d.id, d.title, d.text) for d in data.corpus] == expected
        assert data.corpus.fingerprint == Corpus.from_documents(Document(i, x, t) for i, t, x in expected).fingerprint


@FUZZ
@given(rs=st.lists(records, max_size=6))
@example(rs=[{"_id": False, "text": "x"}])
def test_queries_load_exactly_or_fail_with_file_and_line(rs):
    with tempfile.TemporaryDirectory() as tmp:
        root = _write(Path(tmp), GOOD_CORPUS, rs, "query-id\tcorpus-id\tscore\n")
        try:
            expected = model_queries(rs)
        except Invalid:
            with pytest.raises(DataFormatError, match=r"queries\.jsonl"):
                load_beir(root)
            return
        assert dict(load_beir(root).queries) == expected


cells = st.one_of(st.sampled_from(["q1", "q2", "d1", "d2", "d9", "0", "1", "2", "-1", "1.5", "x", "", " ", "q 1"]),
                  st.text(max_size=4))
qrels_lines = st.lists(st.lists(cells, min_size=1, max_size=5).map("\t".join), max_size=6)


def model_qrels(lines: list[str]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for n, line in enumerate(lines, 1):
        line = line.rstrip("\n\r")
        if not line.strip():
            continue
        parts = line.split("\t")
        if n == 1 and parts[0].strip().lower() in {"query-id", "query_id", "qid"}:
            continue
        if len(parts) == 4:
            parts = [parts[0], parts[2], parts[3]]
        if len(parts) != 3:
            raise Invalid("columns")
        q, d, g = (p.strip() for p in parts)
        if WS.search(q) or WS.search(d):
            raise Invalid("whitespace")
        try:
            grade = int(g)
        except ValueError:
            raise Invalid("grade") from None
        if q != "q1" or d not in ("d1", "d2"):
            continue  # unknown query or document: dropped, counted
        out.setdefault(q, {})[d] = grade
    if not out:
        raise Invalid("empty")
    return out


@FUZZ
@given(lines=qrels_lines)
def test_qrels_load_exactly_or_fail_with_file_and_line(lines):
    text = "".join(line + "\n" for line in lines)
    file_lines = text.split("\n")[:-1]  # the loader splits on \n only (other breaks stay inside a line)
    if file_lines:
        file_lines[0] = file_lines[0].removeprefix("\ufeff")  # a byte-order mark is skipped
    with tempfile.TemporaryDirectory() as tmp:
        root = _write(Path(tmp), GOOD_CORPUS, GOOD_QUERIES, text)
        try:
            expected = model_qrels(file_lines)
        except Invalid:
            with pytest.raises(DataFormatError, match=r"test\.tsv"):
                load_beir(root).qrels("test")
            return
        assert load_beir(root).qrels("test").judgements == expected


@FUZZ
@given(blob=st.binary(max_size=300), which=st.sampled_from(["corpus.jsonl", "queries.jsonl", "qrels/test.tsv"]))
def test_arbitrary_bytes_load_or_raise_a_data_format_error(blob, which):
    with tempfile.TemporaryDirectory() as tmp:
        root = _write(Path(tmp), GOOD_CORPUS, GOOD_QUERIES, "q1\td1\t1\n")
        (root / which).write_bytes(blob)
        try:
            data = load_beir(root)
            data.qrels("test")
            list(data.corpus)
        except DataFormatError as e:
            assert Path(which).name in str(e)


# -- the request schema -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def client():
    idx = FaissIndex(HashEncoder(dim=16))  # the schema is under test here, not a model
    idx.index(Corpus.from_documents(Document(id=f"d{i}", title=f"t{i}", text=f"word{i % 7} common") for i in range(30)))
    app = create_app(ServiceConfig(limits=Limits(max_k=20, max_queries=3, max_body_bytes=2048)), backends={"idx": idx})
    with TestClient(app) as c:
        yield c


json_values = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False)
                           | st.text(max_size=10), lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c,
                                                                                                   max_size=4),
                           max_leaves=12)
KEYS = ["query", "queries", "k", "index", "fields", "rerank", "rerank_depth", "qid"]
plausible = st.fixed_dictionaries({}, optional={
    "query": st.one_of(st.text(max_size=30), json_values),
    "queries": st.one_of(st.lists(st.text(max_size=10), max_size=5), json_values),
    "k": st.one_of(st.integers(-3, 30), json_values),
    "index": st.one_of(st.sampled_from(["idx", "nope", "../idx", "idx/..", "", ".", "hybrid"]), json_values),
    "fields": st.one_of(st.lists(st.sampled_from(["title", "text", "terms", "x"]), max_size=3), json_values),
    "extra": json_values,
})


def model_accepts(body: Any) -> bool:
    if not isinstance(body, dict) or set(body) - set(KEYS) or "rerank" in body or "qid" in body:
        return False
    q, qs = body.get("query"), body.get("queries")
    if (q is None) == (qs is None):
        return False
    if q is not None and not isinstance(q, str):
        return False
    if qs is not None and (not isinstance(qs, list) or not qs or len(qs) > 3 or
                           not all(isinstance(x, str) for x in qs)):
        return False
    k = body.get("k", 10)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 20:
        return False
    index = body.get("index", "idx")
    if index is not None and index != "idx":
        return False
    fields = body.get("fields")
    if fields is not None and (not isinstance(fields, list) or
                               not all(isinstance(f, str) and f in ("title", "text", "terms") for f in fields)):
        return False
    return True


@FUZZ
@given(body=st.one_of(plausible, json_values))
def test_any_json_body_is_answered_2xx_or_4xx_never_5xx(client, body):
    raw = json.dumps(body).encode()
    r = client.post("/search", content=raw, headers={"content-type": "application/json"})
    assert r.status_code < 500, r.text
    if len(raw) > 2048:
        assert r.status_code == 413
        return
    if r.status_code == 200:
        assert model_accepts(body), f"accepted a request the schema forbids: {body!r}"
        n = 1 if body.get("query") is not None else len(body["queries"])
        assert len(r.json()["results"]) == n
    else:
        assert 400 <= r.status_code < 500 and r.json()["error"]
        assert not model_accepts(body), f"refused a valid request {body!r}: {r.text}"


@FUZZ
@given(blob=st.binary(max_size=200))
def test_any_byte_body_is_never_a_5xx(client, blob):
    r = client.post("/search", content=blob, headers={"content-type": "application/json"})
    assert r.status_code < 500, r.text
    assert r.status_code == 200 or r.json()["error"]
