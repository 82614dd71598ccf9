"""The CLI contract: index, search and eval, on real SciFact slices (the demo: tests/test_demo.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from uniret.cli import main
from uniret.data import save_beir
from uniret.eval.metrics import DEFAULT_METRICS


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory, scifact):
    return save_beir(scifact.sample(num_queries=20, num_docs=120), tmp_path_factory.mktemp("data") / "scifact-small")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.java
def test_bm25_index_search_eval(tmp_path, small_dir, capsys):
    assert main(["-q", "index", "--data", str(small_dir), "--retriever", "bm25", "--output", str(tmp_path / "idx")]) == 0
    assert (tmp_path / "idx" / "manifest.json").is_file()
    capsys.readouterr()
    assert main(["-q", "search", "--index", str(tmp_path / "idx"), "--query", "vitamin D deficiency", "-k", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and lines[0].split()[0] == "1"  # rank, score, id, title
    assert main(["-q", "eval", "--data", str(small_dir), "--retriever", "bm25", "--index", str(tmp_path / "idx"),
                 "--output-dir", str(tmp_path / "ev")]) == 0
    out = capsys.readouterr().out
    assert "ndcg@10" in out
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert set(DEFAULT_METRICS) <= set(report["metrics"])
    assert report["timings"]["search_seconds"] > 0 and report["timings"]["qps"] > 0
    assert report["retriever"]["kind"] == "lucene-bm25" and "pyserini" in report["versions"]
    assert (tmp_path / "ev" / "report.md").is_file()
    trec = (tmp_path / "ev" / "run.trec").read_text().splitlines()
    assert trec[0].split()[1] == "Q0" and trec[0].split()[3] == "1"


def test_dense_eval_via_python_m_and_mismatch(tmp_path, small_dir):
    proc = run_cli("uniret.eval", "-q", "--data", str(small_dir), "--retriever", "dense", "--max-length", "128",
                   "--output-dir", str(tmp_path / "ev"))
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert report["metrics"]["ndcg@10"] > 0.5
    assert report["retriever"]["encoder"]["name"] == "all-MiniLM-L6-v2"
    assert report["timings"]["index_seconds"] > 0 and report["dataset"]["num_queries"] == 20
    # an index built with max length 128 cannot be searched with a 256-token encoder
    proc = run_cli("uniret.index", "-q", "--data", str(small_dir), "--retriever", "dense", "--max-length", "128",
                   "--output", str(tmp_path / "idx"))
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("uniret", "eval", "--data", str(small_dir), "--retriever", "dense", "--model", "all-MiniLM-L6-v2",
                   "--index", str(tmp_path / "idx"), "--output-dir", str(tmp_path / "ev2"))
    assert proc.returncode == 2 and "max_length=128" in proc.stderr
    proc = run_cli("uniret", "eval", "--data", str(small_dir), "--retriever", "bm25", "--index", str(tmp_path / "idx"),
                   "--output-dir", str(tmp_path / "ev3"))
    assert proc.returncode == 2 and "holds a 'dense' index (faiss), but --retriever bm25" in proc.stderr
    # the manifest decides the family: no --retriever needed; the index's own max length is used and reported
    proc = run_cli("uniret", "eval", "--data", str(small_dir), "--index", str(tmp_path / "idx"),
                   "--output-dir", str(tmp_path / "ev4"))
    assert proc.returncode == 0, proc.stderr
    assert "max length: 128 tokens" in proc.stdout
    report = json.loads((tmp_path / "ev4" / "report.json").read_text())
    assert report["config"]["family"] == "dense" and report["config"]["corpus_check"] == "ok"
    assert report["retriever"]["encoder"]["max_length"] == 128


def test_bad_input_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad"
    (bad / "qrels").mkdir(parents=True)
    (bad / "corpus.jsonl").write_text('{"_id": "a", "text": "x"}\n{"_id": "a", "text": "y"}\n')
    (bad / "queries.jsonl").write_text('{"_id": "q", "text": "x"}\n')
    assert main(["index", "--data", str(bad), "--retriever", "bm25", "--output", str(tmp_path / "idx")]) == 2
    err = capsys.readouterr().err
    assert "corpus.jsonl:2: field '_id': duplicate id 'a'" in err
    assert not (tmp_path / "idx").exists()
