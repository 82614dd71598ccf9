"""Resources: a huge document is clipped before tokenising (bounded memory, unchanged token ids), and an
empty query on a dense index gets no hits instead of arbitrary ones."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import numpy as np
import pytest

from uniret.retriever.dense import CHARS_PER_TOKEN, token_ids


@pytest.fixture(scope="module")
def tokenizer(minilm):
    return minilm.tokenizer


def _plain(tokenizer, texts, max_length):  # type: ignore[no-untyped-def]
    """What tokenising the whole text and then truncating gives (the behaviour before clipping)."""
    return [list(x) for x in tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]]


@pytest.mark.parametrize("max_length", [32, 128, 256])
def test_clipping_leaves_every_scifact_document_unchanged(scifact, tokenizer, max_length):
    """Every SciFact document that clipping shortens (the others are tokenised as they are)."""
    texts = [t for t in (d.full_text() for d in scifact.corpus) if len(t) > max_length * CHARS_PER_TOKEN]
    assert len(texts) >= 50  # 5180, 2182 and 58 documents at 32, 128 and 256 tokens
    assert token_ids(tokenizer, texts, max_length) == _plain(tokenizer, texts, max_length)


def test_clipping_retries_texts_with_few_tokens_per_character(tokenizer):
    spaced = (" " * 40).join(["cancer", "cells", "protein"] * 40)  # 43 characters per word
    punct = "α" + "\u200b" * 5000 + " tumour suppressor gene " * 50  # zero-width spaces vanish in the tokenizer
    texts = [spaced, punct, "short text"]
    assert len(spaced) > 32 * CHARS_PER_TOKEN
    assert token_ids(tokenizer, texts, 32) == _plain(tokenizer, texts, 32)
    assert len(token_ids(tokenizer, [spaced], 32)[0]) == 32


def test_clipping_keeps_the_end_for_left_truncating_tokenizers(scifact):
    from transformers import AutoTokenizer

    from uniret.assets import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model("all-MiniLM-L6-v2"), truncation_side="left")
    texts = [d.full_text() + " " + "x" * 20 + " final words" for d in list(scifact.corpus)[:200]]
    ids = token_ids(tok, texts, 24)
    assert ids == _plain(tok, texts, 24)
    assert tok.decode(ids[0][1:-1]).endswith("final words")


def test_a_huge_document_embeds_as_its_beginning(scifact, minilm):
    docs = [d.full_text() for d in list(scifact.corpus)[:8]]
    huge = [d + " " + ("filler words of no consequence " * 40_000) for d in docs]  # ~1.2 MB each
    assert np.array_equal(minilm.encode_documents([d[:5000] for d in huge]), minilm.encode_documents(huge))


MEMORY_PROBE = """
import json, resource, sys
from uniret.data import load_beir
from uniret.retriever.dense import DenseEncoder
enc = DenseEncoder("all-MiniLM-L6-v2", device="cpu", max_length=32)
docs = [d.full_text() for d in load_beir("scifact").corpus]
text = " ".join(docs)
text = (text + " ") * (50_000_000 // len(text) + 1)
text = text[:50_000_000]
enc.encode_documents(["warm up"])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
emb = enc.encode_documents([text])
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
ids = enc._tokenize([text])[0]
head = enc.tokenizer([text[:2000]], truncation=True, max_length=32)["input_ids"][0]
print(json.dumps({"growth_mb": (after - before) / 1024, "ids_equal": ids == list(head),
                  "emb_equal": bool((emb == enc.encode_documents([text[:2000]])).all())}))
"""


def test_a_50mb_document_costs_little_memory():
    out = subprocess.run([sys.executable, "-c", MEMORY_PROBE], capture_output=True, text=True, timeout=300,
                         env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["ids_equal"] and result["emb_equal"]
    assert result["growth_mb"] < 1024, result  # tokenising all 50 MB took 7.6 GB


# -- empty queries on a dense index ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def dense(tmp_path_factory, scifact, minilm):
    from uniret.index.faiss_index import FaissIndex

    idx = FaissIndex(minilm)
    idx.index(scifact.sample(num_queries=3, num_docs=40).corpus)
    return idx, idx.save(tmp_path_factory.mktemp("dense") / "idx")


def test_empty_dense_query_gets_no_hits_with_a_warning(dense, caplog):
    dense, _ = dense
    with caplog.at_level(logging.WARNING, logger="uniret.index.faiss_index"):
        run = dense.search({"e": "", "w": " \n\t", "ok": "vitamin D deficiency"}, k=5)
    assert list(run) == ["e", "w", "ok"]
    assert run["e"] == {} and run["w"] == {} and len(run["ok"]) == 5
    assert "2 empty queries ('e', 'w') get no hits" in caplog.text
    assert dense.search({"ok": "vitamin D deficiency"}, k=5) == {"ok": run["ok"]}


def test_empty_dense_query_via_cli(dense, capsys):
    from uniret.cli import main

    rc = main(["search", "--index", str(dense[1]), "--query", "  ", "--device", "cpu"])
    assert rc == 0 and capsys.readouterr().out.strip() == "no hits"
