from __future__ import annotations

import gzip
import json
import logging
import os
from pathlib import Path

import pytest

from uniret.data import Corpus, Document, Qrels, Queries, load_beir
from uniret.errors import DataFormatError


def write_beir(root: Path, docs=None, queries=None, qrels=None, gz: bool = False) -> Path:
    docs = docs if docs is not None else [{"_id": "d1", "title": "T1", "text": "alpha beta"},
                                          {"_id": "d2", "title": "", "text": "gamma delta"},
                                          {"_id": "d3", "title": "T3", "text": "alpha gamma"}]
    queries = queries if queries is not None else [{"_id": "q1", "text": "alpha"}, {"_id": "q2", "text": "gamma"}]
    qrels = qrels if qrels is not None else "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td3\t2\nq2\td2\t1\n"
    root.mkdir(parents=True, exist_ok=True)
    (root / "qrels").mkdir(exist_ok=True)
    opener = (lambda p: gzip.open(str(p) + ".gz", "wt", encoding="utf-8")) if gz else (
        lambda p: open(p, "w", encoding="utf-8"))
    with opener(root / "corpus.jsonl") as f:
        for d in docs:
            f.write((d if isinstance(d, str) else json.dumps(d)) + "\n")
    with opener(root / "queries.jsonl") as f:
        for q in queries:
            f.write(json.dumps(q) + "\n")
    (root / "qrels" / "test.tsv").write_text(qrels, encoding="utf-8")
    return root


@pytest.mark.parametrize("gz", [False, True])
def test_load_beir_plain_and_gz(tmp_path, gz):
    ds = load_beir(write_beir(tmp_path / "ds", gz=gz))
    assert len(ds.corpus) == 3
    assert ds.corpus.ids == ["d1", "d2", "d3"]
    docs = list(ds.corpus)
    assert docs[0] == Document(id="d1", title="T1", text="alpha beta")
    assert docs[0].full_text() == "T1 alpha beta" and docs[1].full_text() == "gamma delta"
    assert ds.queries == {"q1": "alpha", "q2": "gamma"}
    assert ds.splits == ["test"]
    assert ds.qrels("test").judgements == {"q1": {"d1": 1, "d3": 2}, "q2": {"d2": 1}}
    assert ds.qrels("test").relevant("q1", min_grade=2) == ["d3"]


def test_corpus_iterates_lazily_from_disk(tmp_path):
    root = write_beir(tmp_path / "ds")
    corpus = Corpus.from_jsonl(root / "corpus.jsonl")
    it = iter(corpus)
    assert next(it).id == "d1"  # a generator, not a list built up front
    assert not isinstance(corpus._iterate(), list)
    assert [d.id for d in corpus] == [d.id for d in corpus]  # re-iterable
    assert [len(b) for b in corpus.batches(2)] == [2, 1]


def test_malformed_json_line(tmp_path):
    root = write_beir(tmp_path / "ds", docs=[{"_id": "d1", "text": "x"}, '{"_id": "d2", "text": "oops'])
    with pytest.raises(DataFormatError, match=r"corpus\.jsonl:2: malformed JSON"):
        load_beir(root)


def test_missing_id(tmp_path):
    root = write_beir(tmp_path / "ds", docs=[{"_id": "d1", "text": "x"}, {"title": "no id", "text": "y"}])
    with pytest.raises(DataFormatError, match=r"corpus\.jsonl:2: field '_id': missing"):
        load_beir(root)


def test_duplicate_ids(tmp_path):
    root = write_beir(tmp_path / "ds", docs=[{"_id": "d1", "text": "x"}, {"_id": "d2", "text": "y"},
                                              {"_id": "d1", "text": "z"}])
    with pytest.raises(DataFormatError, match=r"corpus\.jsonl:3: field '_id': duplicate id 'd1' \(first seen on line 1\)"):
        load_beir(root)


def test_duplicate_query_ids(tmp_path):
    root = write_beir(tmp_path / "ds", queries=[{"_id": "q1", "text": "a"}, {"_id": "q1", "text": "b"}])
    with pytest.raises(DataFormatError, match=r"queries\.jsonl:2: field '_id': duplicate id 'q1'"):
        load_beir(root)


def test_non_integer_grade(tmp_path):
    root = write_beir(tmp_path / "ds", qrels="query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\thigh\n")
    ds = load_beir(root)
    with pytest.raises(DataFormatError, match=r"test\.tsv:3: field 'score': non-integer grade 'high'"):
        ds.qrels("test")


def test_qrels_wrong_column_count(tmp_path):
    root = write_beir(tmp_path / "ds", qrels="query-id\tcorpus-id\tscore\nq1 d1 1\n")
    with pytest.raises(DataFormatError, match=r"test\.tsv:2: 1 tab-separated columns"):
        load_beir(root).qrels("test")


def test_qrels_unknown_queries_and_docs_warn_and_count(tmp_path, caplog):
    root = write_beir(tmp_path / "ds", qrels="query-id\tcorpus-id\tscore\nq1\td1\t1\nq9\td1\t1\nq2\tdX\t1\n"
                                             "q8\td2\t1\n")
    with caplog.at_level(logging.WARNING):
        qrels = load_beir(root).qrels("test")
    assert qrels.judgements == {"q1": {"d1": 1}}
    assert qrels.unknown_queries == 2 and qrels.unknown_documents == 1
    assert qrels.dropped_lines == [3, 4, 5]
    assert "dropped 2 qrels lines naming unknown queries and 1 naming unknown documents" in caplog.text


def test_empty_corpus(tmp_path):
    root = write_beir(tmp_path / "ds", docs=[])
    with pytest.raises(DataFormatError, match=r"corpus\.jsonl: the corpus is empty"):
        load_beir(root)


def test_missing_split(tmp_path):
    ds = load_beir(write_beir(tmp_path / "ds"))
    with pytest.raises(DataFormatError, match=r"split 'dev' not found \(available: test\)"):
        ds.qrels("dev")


def test_missing_files_are_named(tmp_path):
    root = write_beir(tmp_path / "ds")
    (root / "queries.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match="no queries.jsonl"):
        load_beir(root)
    with pytest.raises(FileNotFoundError, match="neither a directory nor a packaged data set"):
        load_beir(tmp_path / "nowhere")


def test_non_string_text_field(tmp_path):
    root = write_beir(tmp_path / "ds", docs=[{"_id": "d1", "text": ["a", "list"]}])
    with pytest.raises(DataFormatError, match=r"corpus\.jsonl:1: field 'text': got list; expected a string"):
        load_beir(root)


def test_in_memory_corpus_and_subset():
    corpus = Corpus.from_documents([Document("a", "x"), Document("b", "y"), Document("c", "z")])
    assert len(corpus.subset(["c", "a"])) == 2 and corpus.subset(["c", "a"]).ids == ["a", "c"]
    with pytest.raises(DataFormatError, match="duplicate id 'a'"):
        Corpus.from_documents([Document("a", "x"), Document("a", "y")])
    with pytest.raises(DataFormatError, match="empty"):
        Corpus.from_documents([])


def test_packaged_scifact_matches_beir_counts(scifact):
    assert len(scifact.corpus) == 5183
    assert len(scifact.queries) == 1109
    assert len(scifact.qrels("test")) == 300 and len(scifact.qrels("train")) == 809
    assert scifact.qrels("test").unknown_documents == 0


def test_packaged_scifact_equals_shared_copy(scifact, shared_dataset):
    shared = load_beir(shared_dataset("scifact"))
    assert shared.corpus.ids == scifact.corpus.ids
    assert shared.qrels("test").judgements == scifact.qrels("test").judgements


def test_sample_keeps_judged_documents(scifact):
    small = scifact.sample(num_queries=10, num_docs=60)
    qrels = small.qrels("test")
    assert len(small.split_queries("test")) == 10 and len(small.corpus) == 60
    assert all(d in small.corpus for q in qrels for d in qrels[q])
    assert small.sample(5, 20).corpus.ids == small.sample(5, 20).corpus.ids  # seeded


def test_real_shared_datasets_load(shared_dataset):
    for name, docs in (("cranfield", 1400), ("agentset-msmarco-5k", 5000)):
        ds = load_beir(shared_dataset(name))
        assert len(ds.corpus) == docs
        assert len(ds.qrels("test")) > 0
    # LIMIT's document ids are person names: refused by default (a TREC run cannot carry them), loaded on request
    with pytest.raises(DataFormatError, match="expected an id without whitespace"):
        load_beir(shared_dataset("limit-small"))
    ds = load_beir(shared_dataset("limit-small"), allow_whitespace_ids=True)
    assert len(ds.corpus) == 46 and len(ds.qrels("test")) == 1000


def test_hf_datasets_round_trip(tmp_path, scifact):
    from uniret.hf import load_hf, save_hf

    small = scifact.sample(num_queries=5, num_docs=30)
    save_hf(small, tmp_path / "hf")
    loaded = load_hf(tmp_path / "hf")
    assert loaded.corpus.ids == small.corpus.ids
    assert list(loaded.corpus)[3] == list(small.corpus)[3]
    assert dict(loaded.queries) == dict(small.queries)
    assert loaded.qrels("test").judgements == small.qrels("test").judgements


def test_hf_folder_missing_part(tmp_path):
    from uniret.hf import load_hf

    (tmp_path / "hf" / "corpus").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="missing sub-folder 'queries'"):
        load_hf(tmp_path / "hf")


def test_queries_and_qrels_in_memory():
    q = Queries({"1": "x"})
    assert q["1"] == "x"
    qrels = Qrels({"1": {"a": 1, "b": 0}}, split="test")
    assert qrels.relevant("1") == ["a"]


def test_save_beir_replaces_a_data_set_atomically_and_refuses_a_folder_with_other_files(tmp_path):
    from uniret.atomic import OutputPathError
    from uniret.data import BeirDataset, save_beir

    def toy(n):
        docs = Corpus.from_documents([Document(f"d{i}", f"text {i}") for i in range(n)])
        return BeirDataset("/nonexistent/toy", docs, Queries({"q1": "a query"}), {}, name="toy",
                           qrels={"test": Qrels({"q1": {"d0": 1}}, split="test")})

    out = save_beir(toy(3), tmp_path / "toy")
    assert len(load_beir(out).corpus) == 3
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask  # not the temporary folder's private 0700
    save_beir(toy(5), out)  # a folder uniret wrote: replaced whole
    assert len(load_beir(out).corpus) == 5
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".toy")]  # no temporary left behind
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(OutputPathError, match="more than a BEIR data set"):
        save_beir(toy(2), foreign)
    assert (foreign / "notes.txt").read_text() == "keep me" and not (foreign / "corpus.jsonl").exists()
    (out / "qrels" / "mine.txt").write_text("keep me too")  # a user's file inside the data set's qrels/
    with pytest.raises(OutputPathError, match="more than a BEIR data set"):
        save_beir(toy(2), out)
    assert (out / "qrels" / "mine.txt").is_file() and len(load_beir(out).corpus) == 5
    with pytest.raises(OutputPathError, match="not a folder"):
        save_beir(toy(2), foreign / "notes.txt")


def test_save_beir_from_two_writers_at_once_leaves_one_whole_data_set(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from uniret.data import BeirDataset, save_beir

    docs = Corpus.from_documents([Document(f"d{i}", "word " * 200) for i in range(300)])
    ds = BeirDataset("/nonexistent/toy", docs, Queries({"q1": "a query"}), {}, name="toy",
                     qrels={"test": Qrels({"q1": {"d0": 1}}, split="test")})
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: save_beir(ds, tmp_path / "toy"), range(8)))
    assert len(load_beir(tmp_path / "toy").corpus) == 300  # every line parses: no interleaved writes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy"]
