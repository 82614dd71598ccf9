"""Data errors end in one DataFormatError naming the file (and line), never a traceback or a silently
wrong number: ids with whitespace, negative grades, cut or garbled gzip files, bytes that are not UTF-8."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import pytest

from uniret.data import Corpus, Qrels, Queries, load_beir, save_beir
from uniret.errors import DataFormatError


@pytest.fixture(scope="module")
def slice_dir(tmp_path_factory, scifact) -> Path:
    """A real SciFact slice (5 queries, 40 documents) written as a BEIR directory."""
    return save_beir(scifact.sample(num_queries=5, num_docs=40), tmp_path_factory.mktemp("slice"))


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _rewrite_line(path: Path, lineno: int, edit) -> None:  # type: ignore[no-untyped-def]
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[lineno - 1] = edit(lines[lineno - 1])
    path.write_text("".join(lines), encoding="utf-8")


# -- ids with whitespace ----------------------------------------------------------------------------------
def _space_in_json_id(line: str) -> str:
    record = json.loads(line)
    record["_id"] = f"{record['_id']} x"
    return json.dumps(record) + "\n"


@pytest.mark.parametrize("name", ["corpus.jsonl", "queries.jsonl"])
def test_whitespace_id_in_corpus_or_queries_names_file_and_line(tmp_path, slice_dir, name):
    data = _copy(slice_dir, tmp_path / "data")
    _rewrite_line(data / name, 3, _space_in_json_id)
    with pytest.raises(DataFormatError) as e:
        load_beir(data)
    assert (e.value.path, e.value.line, e.value.field) == (str(data / name), 3, "_id")
    assert "whitespace" in str(e.value) and "expected an id without whitespace" in str(e.value)


@pytest.mark.parametrize("column,field", [(0, "query-id"), (1, "corpus-id")])
def test_space_in_qrels_id_names_line_and_column(tmp_path, slice_dir, column, field):
    data = _copy(slice_dir, tmp_path / "data")

    def edit(line: str) -> str:
        parts = line.rstrip("\n").split("\t")
        parts[column] = "x " + parts[column]
        return "\t".join(parts) + "\n"

    _rewrite_line(data / "qrels" / "test.tsv", 4, edit)
    ds = load_beir(data)
    with pytest.raises(DataFormatError) as e:
        ds.qrels("test")
    assert (e.value.line, e.value.field) == (4, field)
    assert str(e.value).startswith(f"{data / 'qrels' / 'test.tsv'}:4: field '{field}'")


def test_whitespace_id_error_via_cli(tmp_path, slice_dir, capsys):
    from uniret.cli import main

    data = _copy(slice_dir, tmp_path / "data")
    _rewrite_line(data / "corpus.jsonl", 2, _space_in_json_id)
    rc = main(["index", "--data", str(data), "--retriever", "bm25", "--output", str(tmp_path / "idx")])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith(f"uniret index: error: {data / 'corpus.jsonl'}:2: field '_id'") and "\n" not in err
    assert "expected an id without whitespace" in err


def test_whitespace_ids_allowed_on_request_with_a_warning(shared_dataset, caplog):
    """The LIMIT data set's document ids are person names: they load only when allowed, with a warning."""
    path = shared_dataset("limit-small")
    with pytest.raises(DataFormatError, match=r"corpus\.jsonl:1: field '_id'"):
        load_beir(path)
    with caplog.at_level(logging.WARNING, logger="uniret.data"):
        ds = load_beir(path, allow_whitespace_ids=True)
        assert len(ds.corpus) == 46 and len(ds.qrels("test")) > 0
    assert "hold an id with whitespace" in caplog.text


def test_in_memory_corpus_checks_ids_when_asked():
    from uniret.data import Document

    docs = [Document("a", "x"), Document("b c", "y")]
    assert len(Corpus.from_documents(docs)) == 2
    with pytest.raises(DataFormatError, match=r"<memory>:2: field '_id'"):
        Corpus.from_documents(docs, allow_whitespace_ids=False)


# -- negative grades --------------------------------------------------------------------------------------
def test_negative_grades_are_counted_warned_and_kept_as_non_relevant(tmp_path, slice_dir, caplog):
    from uniret.eval.metrics import evaluate

    data = _copy(slice_dir, tmp_path / "data")
    ds = load_beir(data)
    qrels_file = data / "qrels" / "test.tsv"
    lines = qrels_file.read_text().splitlines()
    qid, did, _ = lines[1].split("\t")
    extra = sorted(set(ds.corpus.ids) - set(ds.qrels("test")[qid]))[:2]
    with open(qrels_file, "a") as f:
        f.write(f"{qid}\t{extra[0]}\t-1\n{qid}\t{extra[1]}\t0\n")
    with caplog.at_level(logging.WARNING, logger="uniret.data"):
        qrels = Qrels.from_tsv(qrels_file, "test", ds.queries, ds.corpus)
    assert qrels.negative_grades == 1
    assert qrels[qid][extra[0]] == -1 and qrels[qid][extra[1]] == 0  # kept as they are
    assert f"1 qrels lines have a negative grade (first: line {len(lines) + 1})" in caplog.text
    # trec_eval counts grade -1 as grade 0: the same numbers either way
    run = {qid: {extra[0]: 3.0, did: 2.0, extra[1]: 1.0}}
    as_zero = {q: {d: max(g, 0) for d, g in docs.items()} for q, docs in qrels.judgements.items()}
    metrics = ("ndcg@10", "map@10", "recall@10", "mrr@10", "p@1")
    assert evaluate(qrels.judgements, run, metrics) == evaluate(as_zero, run, metrics)


# -- cut or garbled gzip files ----------------------------------------------------------------------------
def _gzip_dir(src: Path, dst: Path) -> Path:
    dst.mkdir()
    (dst / "qrels").mkdir()
    for rel in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv"):
        with open(src / rel, "rb") as f, gzip.open(dst / f"{rel}.gz", "wb") as g:
            g.write(f.read())
    return dst


@pytest.mark.parametrize("rel", ["corpus.jsonl.gz", "queries.jsonl.gz", "qrels/test.tsv.gz"])
def test_truncated_gzip_names_the_file(tmp_path, slice_dir, rel):
    data = _gzip_dir(slice_dir, tmp_path / "gz")
    assert len(load_beir(data).qrels("test")) == 5  # whole, it loads
    target = data / rel
    blob = target.read_bytes()
    target.write_bytes(blob[: len(blob) * 2 // 3])
    with pytest.raises(DataFormatError) as e:
        load_beir(data).qrels("test")
    assert e.value.path == str(target)
    assert "cut short" in str(e.value) and "expected a complete gzip file" in str(e.value)


def test_garbled_gzip_names_the_file(tmp_path, slice_dir):
    data = _gzip_dir(slice_dir, tmp_path / "gz")
    target = data / "corpus.jsonl.gz"
    blob = bytearray(target.read_bytes())
    for i in range(len(blob) // 2, len(blob) // 2 + 64):
        blob[i] ^= 0x5A
    target.write_bytes(bytes(blob))
    with pytest.raises(DataFormatError) as e:
        load_beir(data)
    assert e.value.path == str(target)


def test_truncated_gzip_via_cli(tmp_path, slice_dir, capsys):
    from uniret.cli import main

    data = _gzip_dir(slice_dir, tmp_path / "gz")
    target = data / "corpus.jsonl.gz"
    target.write_bytes(target.read_bytes()[:-200])
    rc = main(["index", "--data", str(data), "--retriever", "bm25", "--output", str(tmp_path / "idx")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err
    assert err.startswith(f"uniret index: error: {target}: ") and "cut short" in err


# -- bytes that are not UTF-8 -----------------------------------------------------------------------------
@pytest.mark.parametrize("rel,lineno", [("corpus.jsonl", 7), ("queries.jsonl", 2), ("qrels/test.tsv", 3)])
def test_non_utf8_byte_names_file_and_line(tmp_path, slice_dir, rel, lineno):
    data = _copy(slice_dir, tmp_path / "data")
    target = data / rel
    lines = target.read_bytes().split(b"\n")
    lines[lineno - 1] = lines[lineno - 1][:5] + b"\xff" + lines[lineno - 1][5:]
    target.write_bytes(b"\n".join(lines))
    with pytest.raises(DataFormatError) as e:
        load_beir(data).qrels("test")
    assert (e.value.path, e.value.line) == (str(target), lineno)
    assert "0xff at byte 6 of the line is not UTF-8" in str(e.value) and "expected UTF-8 text" in str(e.value)


def test_non_utf8_byte_in_gzip_file_names_the_line(tmp_path, slice_dir):
    target = tmp_path / "queries.jsonl.gz"
    with gzip.open(target, "wb") as g:
        g.write(b'{"_id": "q1", "text": "fine"}\n{"_id": "q2", "text": "caf\xe9"}\n')
    with pytest.raises(DataFormatError) as e:
        Queries.from_jsonl(target)
    assert (e.value.path, e.value.line) == (str(target), 2)


def test_byte_order_mark_is_accepted(tmp_path):
    target = tmp_path / "queries.jsonl"
    target.write_bytes(b'\xef\xbb\xbf{"_id": "q1", "text": "caf\xc3\xa9"}\n')
    assert Queries.from_jsonl(target) == {"q1": "café"}
