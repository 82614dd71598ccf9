"""Damaged or mislabelled index folders end in one IndexMismatchError naming the file or folder, never a
traceback: corrupt docids.json, unreadable index.faiss, damaged Lucene files, a manifest whose kind
does not match the files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from uniret.errors import IndexMismatchError
from uniret.index import load_index


@pytest.fixture(scope="module")
def dense_index(tmp_path_factory, scifact, minilm) -> Path:
    """A flat FAISS index of 40 real SciFact documents encoded by MiniLM."""
    from uniret.index.faiss_index import FaissIndex

    idx = FaissIndex(minilm)
    idx.index(scifact.sample(num_queries=3, num_docs=40).corpus)
    return idx.save(tmp_path_factory.mktemp("dense") / "idx")


@pytest.fixture(scope="module")
def bm25_index(tmp_path_factory, scifact) -> Path:
    """A Lucene BM25 index of 200 real SciFact documents."""
    from uniret.index.lucene import LuceneBM25Index

    idx = LuceneBM25Index(threads=1, workdir=tmp_path_factory.mktemp("scratch"))
    idx.index(scifact.sample(num_queries=5, num_docs=200).corpus)
    return idx.save(tmp_path_factory.mktemp("bm25") / "idx")


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _set_kind(path: Path, kind: str) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["kind"] = kind
    (path / "manifest.json").write_text(json.dumps(manifest))


# -- FAISS --------------------------------------------------------------------------------------------
def test_intact_dense_index_loads(dense_index, minilm):
    assert load_index(dense_index, encoder=minilm).search({"q": "cancer"}, k=3)["q"]


@pytest.mark.parametrize("content", ["[\"a\", \"b\"", "{\"not\": \"a list\"}", "[1, 2, 3]"])
def test_corrupt_docids_json_names_the_file(tmp_path, dense_index, minilm, content):
    idx = _copy(dense_index, tmp_path / "idx")
    (idx / "docids.json").write_text(content)
    with pytest.raises(IndexMismatchError) as e:
        load_index(idx, encoder=minilm)
    assert str(e.value).startswith(f"{idx / 'docids.json'}: corrupt")


@pytest.mark.parametrize("damage", ["truncate", "garble-header", "empty"])
def test_damaged_index_faiss_names_the_file(tmp_path, dense_index, minilm, damage):
    idx = _copy(dense_index, tmp_path / "idx")
    blob = bytearray((idx / "index.faiss").read_bytes())
    if damage == "truncate":
        blob = blob[: len(blob) // 2]
    elif damage == "garble-header":
        blob[:4] = b"XXXX"
    else:
        blob = bytearray()
    (idx / "index.faiss").write_bytes(bytes(blob))
    with pytest.raises(IndexMismatchError) as e:
        load_index(idx, encoder=minilm)
    assert str(e.value).startswith(f"{idx / 'index.faiss'}: damaged")


def test_damaged_index_faiss_via_cli(tmp_path, dense_index, capsys):
    from uniret.cli import main

    idx = _copy(dense_index, tmp_path / "idx")
    (idx / "index.faiss").write_bytes((idx / "index.faiss").read_bytes()[:1000])
    rc = main(["search", "--index", str(idx), "--query", "cancer", "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err
    assert err.startswith(f"uniret search: error: {idx / 'index.faiss'}: damaged")


def test_faiss_manifest_over_a_lucene_folder_names_the_missing_file(tmp_path, dense_index, minilm):
    idx = _copy(dense_index, tmp_path / "idx")
    (idx / "index.faiss").unlink()
    (idx / "docids.json").unlink()
    (idx / "lucene").mkdir()
    with pytest.raises(IndexMismatchError) as e:
        load_index(idx, encoder=minilm)
    assert str(e.value).startswith(f"{idx / 'index.faiss'}: missing")
    assert "a BM25 index with a wrong manifest?" in str(e.value)


def test_bm25_manifest_over_a_faiss_folder_names_the_missing_folder(tmp_path, dense_index, capsys):
    from uniret.cli import main

    idx = _copy(dense_index, tmp_path / "idx")
    _set_kind(idx, "lucene-bm25")
    with pytest.raises(IndexMismatchError) as e:
        load_index(idx)
    assert str(e.value).startswith(f"{idx / 'lucene'}: missing") and "holds index.faiss" in str(e.value)
    assert main(["search", "--index", str(idx), "--query", "cancer"]) == 2
    assert capsys.readouterr().err.startswith(f"uniret search: error: {idx / 'lucene'}: missing")


# -- Lucene -------------------------------------------------------------------------------------------
def _lucene_file(idx: Path, suffix: str) -> Path:
    return next(p for p in sorted((idx / "lucene").iterdir()) if p.name.endswith(suffix))


@pytest.mark.java
def test_intact_bm25_index_loads(bm25_index):
    assert load_index(bm25_index).search({"q": "cancer cells"}, k=3)["q"]


@pytest.mark.java
@pytest.mark.parametrize("target,damage", [
    (".tim", "truncate"),       # terms dictionary cut short: the reader fails to open
    (".si", "garble"),          # segment info with a bad checksum
    ("segments_1", "delete"),   # no commit point
    (".doc", "garble"),         # postings garbled: only the checksum verification on load sees it
])
def test_damaged_lucene_file_names_the_index_folder(tmp_path, bm25_index, target, damage):
    idx = _copy(bm25_index, tmp_path / "idx")
    f = _lucene_file(idx, target)
    blob = bytearray(f.read_bytes())
    if damage == "truncate":
        f.write_bytes(bytes(blob[: len(blob) // 2]))
    elif damage == "garble":
        for i in range(len(blob) // 3, len(blob) // 3 + 16):
            blob[i] ^= 0xA5
        f.write_bytes(bytes(blob))
    else:
        f.unlink()
    with pytest.raises(IndexMismatchError) as e:
        load_index(idx)
    message = str(e.value)
    assert message.startswith(f"{idx / 'lucene'}: the Lucene index is damaged (") and "\n" not in message
    assert "rebuild it" in message


@pytest.mark.java
def test_damaged_lucene_index_via_cli(tmp_path, bm25_index, capsys):
    from uniret.cli import main

    idx = _copy(bm25_index, tmp_path / "idx")
    f = _lucene_file(idx, ".tim")
    f.write_bytes(f.read_bytes()[:100])
    rc = main(["search", "--index", str(idx), "--query", "cancer"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err
    assert err.startswith(f"uniret search: error: {idx / 'lucene'}: the Lucene index is damaged")


@pytest.mark.java
def test_manifest_num_docs_disagreeing_with_lucene_is_an_error(tmp_path, bm25_index):
    idx = _copy(bm25_index, tmp_path / "idx")
    manifest = json.loads((idx / "manifest.json").read_text())
    manifest["num_docs"] += 1
    (idx / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexMismatchError, match="holds 200 documents, the manifest says 201"):
        load_index(idx)
