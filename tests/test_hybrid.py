"""The hybrid family: fusion specs, fusion through the kernel's one function, saving as a manifest of relative
member paths, refusing members of different corpora, and ``uniret eval --retriever hybrid`` on real indexes."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import HashEncoder
from uniret import scores
from uniret.cli import main
from uniret.data import Corpus, Document, save_beir
from uniret.errors import IndexMismatchError
from uniret.index import hybrid, load_index, read_manifest
from uniret.index.faiss_index import FaissIndex
from uniret.index.hybrid import HybridIndex, parse_fusion


@pytest.mark.parametrize("spec, method, weights, rrf_k, norm", [
    ("rrf", "rrf", [1.0, 1.0], 60, "minmax"),
    ("rrf:10", "rrf", [1.0, 1.0], 10, "minmax"),
    ("minmax:0.3", "interpolate", [0.3, 0.7], 60, "minmax"),
    ("zscore:0.8", "interpolate", [0.8, pytest.approx(0.2)], 60, "zscore"),
    ("minmax:2,1", "interpolate", [2.0, 1.0], 60, "minmax"),
    ("minmax", "interpolate", [1.0, 1.0], 60, "minmax"),
])
def test_fusion_specs(spec, method, weights, rrf_k, norm):
    f = parse_fusion(spec)
    assert (f.method, f.weights_for(2), f.rrf_k, f.normalization) == (method, weights, rrf_k, norm)


@pytest.mark.parametrize("spec, match", [
    ("rff", "unknown fusion 'rff'"), ("rrf:0", "positive integer"), ("rrf:x", "positive integer"),
    ("minmax:1.5", r"within \[0, 1\]"), ("minmax:a", "numbers"), ("minmax:-1,2", "non-negative"),
])
def test_bad_fusion_specs_are_clear_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_fusion(spec)


def test_weights_must_match_the_members():
    with pytest.raises(ValueError, match="3 weight"):
        parse_fusion("minmax:1,2,3").weights_for(2)


def _corpus(n: int = 30, salt: str = "") -> Corpus:
    words = ["protein", "cell", "cancer", "vitamin", "bone", "gene", "brain", "heart", "virus", "immune"]
    return Corpus.from_documents(
        Document(id=f"d{i}", title=f"doc {i}{salt}", text=" ".join(words[(i * j) % 10] for j in range(1, 6)))
        for i in range(n))


@pytest.fixture()
def members(tmp_path):
    corpus = _corpus()
    paths = []
    for name, salt in (("a", ""), ("b", "x")):
        idx = FaissIndex(HashEncoder(dim=16, salt=salt))
        idx.index(corpus)
        paths.append(idx.save(tmp_path / name))
    return paths


QUERIES = {"q1": "vitamin bone", "q2": "cancer gene cell", "q3": "heart"}


@pytest.mark.parametrize("spec", ["rrf", "minmax:0.3", "zscore:0.5"])
def test_search_is_the_kernels_fusion_of_the_member_runs(members, spec):
    assert hybrid.fuse_runs is scores.fuse_runs  # the one fusion function, not a copy
    h = HybridIndex.from_paths(members, spec, depth=20, encoders=[HashEncoder(16), HashEncoder(16, salt="x")])
    runs = [m.search(QUERIES, k=20) for m in h.members]
    f = parse_fusion(spec)
    expected = scores.fuse_runs(runs, f.method, f.weights_for(2), rrf_k=f.rrf_k, normalization=f.normalization)
    got = h.search(QUERIES, k=5)
    for q in QUERIES:
        assert list(got[q].items()) == scores.ranked(expected[q])[:5]


def test_saved_hybrid_references_members_relatively_and_moves_with_them(members, tmp_path):
    encoders = [HashEncoder(16), HashEncoder(16, salt="x")]
    h = HybridIndex.from_paths(members, "minmax:0.3", encoders=encoders)
    before = h.search(QUERIES, k=5)
    h.save(tmp_path / "h")
    manifest = read_manifest(tmp_path / "h")
    assert manifest["kind"] == "hybrid" and manifest["num_docs"] == 30
    assert [m["path"] for m in manifest["settings"]["members"]] == ["../a", "../b"]
    assert manifest["settings"]["weights"] == [0.3, 0.7]

    moved = tmp_path / "moved"
    moved.mkdir()
    for name in ("a", "b", "h"):
        shutil.move(tmp_path / name, moved / name)
    again = HybridIndex.load(moved / "h", encoder=encoders)
    assert again.search(QUERIES, k=5) == before
    assert again.document("d3").id == "d3"

    shutil.rmtree(moved / "b")
    with pytest.raises(IndexMismatchError, match=r"member index '../b' .* is missing"):
        HybridIndex.load(moved / "h", encoder=encoders)


def test_members_built_here_are_saved_inside_and_searched_there(tmp_path):
    h = HybridIndex([FaissIndex(HashEncoder(16)), FaissIndex(HashEncoder(16, salt="x"))], "rrf")
    h.index(_corpus())
    before = h.search(QUERIES, k=5)
    h.save(tmp_path / "h")
    assert [m["path"] for m in read_manifest(tmp_path / "h")["settings"]["members"]] == \
        ["members/0-faiss", "members/1-faiss"]
    assert h.search(QUERIES, k=5) == before
    assert load_index(tmp_path / "h", encoder=[HashEncoder(16), HashEncoder(16, salt="x")]).search(QUERIES, k=5) == before
    with pytest.raises(ValueError, match="lives inside it"):
        load_index(tmp_path / "h", encoder=[HashEncoder(16), HashEncoder(16, salt="x")]).save(tmp_path / "h")


def test_members_of_different_corpora_are_refused(members, tmp_path):
    other = FaissIndex(HashEncoder(16))
    other.index(_corpus(n=12, salt="other"))
    other.save(tmp_path / "other")
    with pytest.raises(IndexMismatchError, match="different corpora"):
        HybridIndex.from_paths([members[0], tmp_path / "other"], encoders=[HashEncoder(16), HashEncoder(16)])


def test_a_hybrid_needs_two_members_and_no_nested_hybrid(members, tmp_path):
    with pytest.raises(ValueError, match="two or more"):
        HybridIndex.from_paths(members[:1])
    encoders = [HashEncoder(16), HashEncoder(16, salt="x")]
    HybridIndex.from_paths(members, encoders=encoders).save(tmp_path / "h")
    with pytest.raises(IndexMismatchError, match="itself a hybrid"):
        HybridIndex.from_paths([tmp_path / "h", members[0]])


def test_a_damaged_member_list_names_the_manifest(members, tmp_path):
    HybridIndex.from_paths(members, encoders=[HashEncoder(16), HashEncoder(16, salt="x")]).save(tmp_path / "h")
    m = json.loads((tmp_path / "h" / "manifest.json").read_text())
    m["settings"]["members"] = [{"path": "../a"}]
    (tmp_path / "h" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(IndexMismatchError, match=r"h/manifest.json: settings.members must list two or more"):
        load_index(tmp_path / "h")


# -- real indexes through the CLI ---------------------------------------------------------------------------------

@pytest.mark.java
def test_cli_eval_fuses_saved_bm25_and_dense_indexes(tmp_path, scifact, capsys):
    data = save_beir(scifact.sample(num_queries=8, num_docs=60, split="test", seed=3), tmp_path / "data")
    assert main(["index", "--data", str(data), "--retriever", "bm25", "--output", str(tmp_path / "bm25")]) == 0
    assert main(["index", "--data", str(data), "--retriever", "dense", "--max-length", "64", "--device", "cpu",
                 "--output", str(tmp_path / "dense")]) == 0
    reports = {}
    for name, extra in {"bm25": ["--index", str(tmp_path / "bm25")],
                        "dense": ["--index", str(tmp_path / "dense")],
                        "hybrid": ["--retriever", "hybrid", "--index", str(tmp_path / "bm25"), "--index",
                                   str(tmp_path / "dense"), "--fusion", "minmax:0.3"]}.items():
        assert main(["eval", "--data", str(data), *extra, "--output-dir", str(tmp_path / f"r-{name}")]) == 0
        reports[name] = json.loads((tmp_path / f"r-{name}" / "report.json").read_text())
    hyb = reports["hybrid"]
    assert hyb["config"]["fusion"] == "minmax:0.3" and hyb["config"]["family"] == "hybrid"
    assert 0 < hyb["metrics"]["ndcg@10"] <= 1
    # the fused run really mixes both: it differs from each member's run
    runs = {n: (tmp_path / f"r-{n}" / "run.trec").read_text() for n in reports}
    assert runs["hybrid"] != runs["bm25"] and runs["hybrid"] != runs["dense"]

    assert main(["eval", "--data", str(data), "--retriever", "bm25", "--index", str(tmp_path / "bm25"), "--index",
                 str(tmp_path / "dense"), "--output-dir", str(tmp_path / "bad")]) == 2
    assert "use --retriever hybrid" in capsys.readouterr().err
