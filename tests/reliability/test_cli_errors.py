"""The first minutes of a user: every option has help, bad arguments are one-line errors before any work,
an index is never evaluated against another corpus without a word, and a model's own max length wins."""

from __future__ import annotations

import argparse
import json

import pytest

from uniret.cli import build_parser, main
from uniret.data import save_beir


def all_parsers():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return [("uniret", parser), *sub.choices.items()]


def test_every_option_has_a_help_line():
    for name, parser in all_parsers():
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
    top = build_parser().format_help()
    assert ":mod:" not in top and "Start here" in top and "retriever families:" in top


@pytest.mark.parametrize("argv", [
    ["search", "--index", "x", "--query", "q", "-k", "0"],
    ["eval", "--data", "scifact", "--retriever", "bm25", "--depth", "-1", "--output-dir", "o"],
    ["index", "--data", "scifact", "--retriever", "dense", "--batch-size", "0", "--output", "o"],
    ["eval", "--data", "scifact", "--retriever", "dense", "--max-length", "zero", "--output-dir", "o"],
])
def test_non_positive_numbers_are_rejected_before_work(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert "expected a positive integer" in capsys.readouterr().err


def test_unknown_index_type_fails_before_encoding(tmp_path, scifact, monkeypatch, capsys):
    from uniret.retriever.dense import DenseEncoder

    data = save_beir(scifact.sample(num_queries=3, num_docs=20, split="test"), tmp_path / "data")

    def never(*args, **kwargs):
        raise AssertionError("the corpus was encoded before the index type was checked")

    monkeypatch.setattr(DenseEncoder, "encode_documents", never)
    rc = main(["index", "--data", str(data), "--retriever", "dense", "--index-type", "IVFnonsense",
               "--output", str(tmp_path / "idx")])
    assert rc == 2
    assert "invalid --index-type 'IVFnonsense'" in capsys.readouterr().err
    assert not (tmp_path / "idx").exists()


def test_eval_needs_a_retriever_or_an_index(capsys):
    assert main(["eval", "--data", "scifact", "--output-dir", "o"]) == 2
    assert "--retriever is needed when no --index is given" in capsys.readouterr().err


@pytest.mark.java
def test_an_index_of_another_corpus_is_refused_unless_allowed(tmp_path, scifact, capsys):
    a = save_beir(scifact.sample(num_queries=5, num_docs=40, split="test", seed=1), tmp_path / "a")
    b = save_beir(scifact.sample(num_queries=5, num_docs=40, split="test", seed=2), tmp_path / "b")
    assert main(["-q", "index", "--data", str(a), "--retriever", "bm25", "--output", str(tmp_path / "idx")]) == 0
    capsys.readouterr()
    rc = main(["eval", "--data", str(b), "--index", str(tmp_path / "idx"), "--output-dir", str(tmp_path / "ev")])
    err = capsys.readouterr().err
    assert rc == 2 and "was built from a different corpus" in err and "--allow-corpus-mismatch" in err
    assert not (tmp_path / "ev" / "report.json").exists()
    rc = main(["-q", "eval", "--data", str(b), "--index", str(tmp_path / "idx"), "--output-dir", str(tmp_path / "ev"),
               "--allow-corpus-mismatch"])
    assert rc == 0
    config = json.loads((tmp_path / "ev" / "report.json").read_text())["config"]
    assert config["allow_corpus_mismatch"] is True and config["corpus_check"].startswith("mismatch allowed")
    assert main(["-q", "eval", "--data", str(a), "--index", str(tmp_path / "idx"),
                 "--output-dir", str(tmp_path / "ok")]) == 0
    assert json.loads((tmp_path / "ok" / "report.json").read_text())["config"]["corpus_check"] == "ok"


def test_a_models_own_max_length_wins_over_the_cli_default(tmp_path, scifact, capsys):
    from uniret.retriever.embedder import Embedder

    model = Embedder.build("all-MiniLM-L6-v2", max_length=48, device="cpu").save(tmp_path / "m48")
    data = save_beir(scifact.sample(num_queries=4, num_docs=20, split="test"), tmp_path / "data")
    assert main(["-q", "eval", "--data", str(data), "--retriever", "dense", "--model", str(model),
                 "--output-dir", str(tmp_path / "ev")]) == 0
    assert "max length: 48 tokens" in capsys.readouterr().out
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert report["retriever"]["encoder"]["max_length"] == 48
    assert main(["-q", "eval", "--data", str(data), "--retriever", "dense", "--model", str(model), "--max-length",
                 "32", "--output-dir", str(tmp_path / "ev32")]) == 0
    assert json.loads((tmp_path / "ev32" / "report.json").read_text())["retriever"]["encoder"]["max_length"] == 32


def test_one_corpus_has_one_fingerprint_however_it_is_loaded(tmp_path, scifact):
    from uniret.data import load_beir
    from uniret.hf import load_hf, save_hf

    sample = scifact.sample(num_queries=3, num_docs=20, split="test")
    from_file = load_beir(save_beir(sample, tmp_path / "beir")).corpus.fingerprint
    from_hf = load_hf(save_hf(sample, tmp_path / "hf")).corpus.fingerprint
    assert sample.corpus.fingerprint == from_file == from_hf
    other = scifact.sample(num_queries=3, num_docs=21, split="test")
    assert other.corpus.fingerprint != sample.corpus.fingerprint
