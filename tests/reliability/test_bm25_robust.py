"""BM25 robustness: a query longer than Lucene's clause limit never ends an evaluation, an empty query
gets no hits with a warning, and a ``kill -9`` of a build leaves neither a Java process nor scratch
files outside the folder the caller chose."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from uniret.data import save_beir

pytestmark = pytest.mark.java


@pytest.fixture(scope="module")
def sample(scifact):
    return scifact.sample(num_queries=10, num_docs=300)


@pytest.fixture(scope="module")
def bm25(tmp_path_factory, sample):
    from uniret.index.lucene import LuceneBM25Index

    idx = LuceneBM25Index(threads=1, workdir=tmp_path_factory.mktemp("scratch"))
    idx.index(sample.corpus)
    return idx


def _long_query(words: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    made_up = {"".join(rng.choice("bcdfghjklmnpqrstvwxz") for _ in range(9)) for _ in range(words)}
    return " ".join(sorted(made_up)) + " cancer cells tumour"


def test_query_over_the_default_clause_limit_is_searched(bm25, sample, caplog):
    queries = dict(sample.split_queries("test"))
    queries["long"] = _long_query(3000)
    with caplog.at_level(logging.WARNING, logger="uniret.index.lucene"):
        run = bm25.search(queries, k=10)
    assert set(run) == set(queries) and all(run[q] for q in queries)
    assert run["long"] == bm25.search({"short": "cancer cells tumour"}, k=10)["short"]  # made-up words match nothing
    assert "Lucene's limit" not in caplog.text  # 3000 clauses fit the raised limit: nothing was cut


def test_query_over_the_raised_limit_is_cut_with_a_warning(bm25, caplog):
    from uniret.index.lucene import MAX_CLAUSES

    text = "cancer cells tumour " + _long_query(MAX_CLAUSES + 5000)
    with caplog.at_level(logging.WARNING, logger="uniret.index.lucene"):
        run = bm25.search({"huge": text, "normal": "cancer cells"}, k=10)
    assert run["huge"] and run["normal"]
    assert f"more distinct terms than Lucene's limit of {MAX_CLAUSES} clauses" in caplog.text


def test_long_query_does_not_end_an_evaluation_via_cli(tmp_path, sample, capsys):
    from uniret.cli import main

    data = save_beir(sample, tmp_path / "data")
    qid = next(iter(sample.split_queries("test")))
    lines = (data / "queries.jsonl").read_text().splitlines()
    lines = [json.dumps({"_id": qid, "text": _long_query(3000) + " " + sample.queries[qid]})
             if json.loads(line)["_id"] == qid else line for line in lines]
    (data / "queries.jsonl").write_text("\n".join(lines) + "\n")
    rc = main(["eval", "--data", str(data), "--retriever", "bm25", "--output-dir", str(tmp_path / "out")])
    assert rc == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["metrics"]["ndcg@10"] > 0.3


def test_empty_query_gets_no_hits_with_a_warning(bm25, caplog):
    with caplog.at_level(logging.WARNING, logger="uniret.index.lucene"):
        run = bm25.search({"e1": "", "e2": "  \t ", "ok": "cancer"}, k=5)
    assert run["e1"] == {} and run["e2"] == {} and len(run["ok"]) == 5
    assert "2 empty queries ('e1', 'e2') get no hits" in caplog.text


# -- kill -9 of a build -----------------------------------------------------------------------------
BUILD = """
import sys
from uniret.data import load_beir
from uniret.index.lucene import LuceneBM25Index
corpus = load_beir("scifact").corpus
docs = [d for d in corpus]
from uniret.data import Corpus, Document
big = Corpus.from_documents(docs + [Document(f"x{i}-{d.id}", d.text, d.title) for i in range(3) for d in docs])
LuceneBM25Index(threads=1, workdir=sys.argv[1]).index(big)
"""


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            out += [int(x) for x in task.read_text().split()]
        except OSError:
            pass
    return out


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status  # a zombie has exited


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_kill_9_of_a_build_leaves_no_java_and_no_scratch_outside_workdir(tmp_path):
    import tempfile

    from uniret.index.lucene import LuceneBM25Index

    scratch = tmp_path / "scratch"
    before_tmp = set(Path(tempfile.gettempdir()).glob("uniret-bm25-*"))
    proc = subprocess.Popen([sys.executable, "-c", BUILD, str(scratch)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        java: list[int] = []
        deadline = time.monotonic() + 120
        while not java and time.monotonic() < deadline and proc.poll() is None:
            java = [c for c in _children(proc.pid) if "java" in Path(f"/proc/{c}/comm").read_text(errors="replace")]
            time.sleep(0.05)
        assert java, "the build never started Java (or finished before it could be seen)"
        time.sleep(0.5)  # Java is indexing
        assert proc.poll() is None, "the build finished too fast to be killed mid-way"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in java) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(p) for p in java), "the Java indexer outlived its parent"
    finally:
        if proc.poll() is None:
            proc.kill()
    leftovers = list(scratch.iterdir())
    assert [p.name.startswith(f"uniret-bm25-{proc.pid}-") for p in leftovers] == [True]
    assert set(Path(tempfile.gettempdir()).glob("uniret-bm25-*")) <= before_tmp  # nothing new in /tmp
    # the next build under the same workdir removes what the killed one left, once it is old enough
    from uniret.data import Corpus, Document
    from uniret.index.lucene import STALE_AFTER_S

    corpus = Corpus.from_documents([Document("a", "alpha beta"), Document("b", "beta gamma")])
    idx = LuceneBM25Index(threads=1, workdir=scratch)
    idx.index(corpus)
    assert leftovers[0].exists()  # too recent: it could be a live build seen from another PID namespace
    old = time.time() - STALE_AFTER_S - 60
    for p in [leftovers[0], *leftovers[0].rglob("*")]:
        os.utime(p, (old, old))
    idx.index(corpus)
    assert [p.name.startswith(f"uniret-bm25-{os.getpid()}-") for p in scratch.iterdir()] == [True]
    assert idx.search({"q": "gamma"}, k=2)["q"].keys() == {"b"}


def test_save_frees_the_scratch_folder_and_searches_the_saved_copy(tmp_path):
    from uniret.data import Corpus, Document
    from uniret.index.lucene import LuceneBM25Index

    scratch = tmp_path / "scratch"
    idx = LuceneBM25Index(threads=1, workdir=scratch)
    idx.index(Corpus.from_documents([Document("a", "alpha beta"), Document("b", "beta gamma")]))
    assert len(list(scratch.iterdir())) == 1
    before = idx.search({"q": "gamma"}, k=2)
    idx.save(tmp_path / "idx")
    assert list(scratch.iterdir()) == []
    assert idx.search({"q": "gamma"}, k=2) == before
    assert idx.describe()["index_dir"] == str((tmp_path / "idx" / "lucene").resolve())
