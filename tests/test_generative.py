"""Generative retrieval: identifier structures against brute force, constrained decoding never leaving the
identifier set (hypothesis), SEAL-style n-gram scoring against a hand computation, save/load, the training
module's pairs, and a fast end-to-end run (tiny random Llama on a real SciFact slice) through ``uniret train``
and ``uniret eval --retriever generative``. The real SmolLM2 run is in ``test_generative_smollm.py``."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from uniret.data import Document
from uniret.errors import IndexMismatchError
from uniret.index.generative import (
    GenerativeIndex,
    KeySet,
    candidate_ngrams,
    ngram_document_scores,
    ngram_weight,
    query_keys,
    unigram_weights,
)
from uniret.retriever.generative import GenerativeRetriever, GenerativeSettings, Hypothesis
from uniret.retriever.identifiers import NgramIndex, TitleTrie, suffix_array

WORDS = ("the a of and to in is was for on with as by at from protein cell gene vitamin study claim patients "
         "risk cancer blood heart drug trial dose effect mice brain").split()
EOS = 3


# -- tiny models ---------------------------------------------------------------------------------------
def word_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<unk>": 1, "<s>": 2, "</s>": 3, **{w: i + 4 for i, w in enumerate(WORDS)}}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", pad_token="<pad>", eos_token="</s>",
                                   bos_token="<s>")


def tiny_llama(tokenizer, seed: int = 0):
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model("llama", hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                               num_key_value_heads=2, intermediate_size=64, head_dim=8, vocab_size=len(tokenizer),
                               pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                               bos_token_id=tokenizer.bos_token_id, tie_word_embeddings=True)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(cfg)


def tiny_retriever(scheme: str = "ngram", prompt_length: int = 2, seed: int = 0) -> GenerativeRetriever:
    tok = word_tokenizer()
    s = GenerativeSettings(scheme=scheme, prompt_length=prompt_length, template="{text}", max_new_tokens=4)
    return GenerativeRetriever(tiny_llama(tok, seed), tok, s, name="tiny-llama")


def tiny_bert_vocab_folder(folder):
    """A tiny random Llama with MiniLM's WordPiece tokenizer (real text tokenises sensibly), saved."""
    from transformers import AutoTokenizer

    from uniret.assets import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model("all-MiniLM-L6-v2"))
    tok.eos_token, tok.bos_token = "[SEP]", "[CLS]"
    tiny_llama(tok).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def docs_of(token_lists):
    return [Document(id=f"d{i}", title=" ".join(WORDS[t - 4] for t in toks[:2]),
                     text=" ".join(WORDS[t - 4] for t in toks)) for i, toks in enumerate(token_lists)]


# -- identifier structures against brute force -----------------------------------------------------------
def brute_next(seqs, prefix):
    n = len(prefix)
    return sorted({s[n] for s in seqs if len(s) > n and list(s[:n]) == list(prefix)})


def test_suffix_array_matches_sorted_suffixes():
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 50, 300):
        t = rng.integers(-1, 4, n)
        expected = sorted(range(n), key=lambda i: list(t[i:]))
        assert suffix_array(t).tolist() == expected


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(0, 5), min_size=0, max_size=6), min_size=1, max_size=12), st.data())
def test_title_trie_matches_brute_force(seqs, data):
    trie = TitleTrie.build(seqs)
    keys = {tuple(s) for s in seqs if s}
    assert len(trie) == len(keys) and sorted(map(tuple, trie.identifiers())) == sorted(keys)
    prefixes = [s[:i] for s in seqs for i in range(len(s) + 1)]
    prefixes += [data.draw(st.lists(st.integers(0, 6), max_size=4)) for _ in range(5)]
    for p in prefixes:
        assert list(trie.next_tokens(p)) == brute_next([s for s in seqs if s], p)
        assert trie.is_identifier(p) == (tuple(p) in keys)
        assert trie.owners(p) == [i for i, s in enumerate(seqs) if s and list(s) == list(p)]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(0, 4), min_size=0, max_size=15), min_size=1, max_size=8), st.data())
def test_ngram_index_matches_brute_force(docs, data):
    index = NgramIndex.build(docs)
    patterns = [d[i:j] for d in docs for i in range(len(d)) for j in range(i + 1, min(len(d), i + 4) + 1)]
    patterns += [data.draw(st.lists(st.integers(0, 5), min_size=1, max_size=4)) for _ in range(8)]
    for p in patterns:
        occ = {i: sum(1 for s in range(len(d) - len(p) + 1) if d[s : s + len(p)] == p) for i, d in enumerate(docs)}
        occ = {i: c for i, c in occ.items() if c}
        assert index.count(p) == sum(occ.values())
        assert index.documents(p) == occ
        follow = sorted({d[s + len(p)] for d in docs for s in range(len(d) - len(p))
                         if d[s : s + len(p)] == p})
        assert list(index.next_tokens(p)) == follow
    assert list(index.next_tokens([])) == sorted({t for d in docs for t in d})
    assert index.num_tokens == sum(map(len, docs))
    for i, d in enumerate(docs):
        assert index.document_tokens(i).tolist() == d


def test_ngram_index_and_trie_save_and_load(tmp_path):
    rng = random.Random(0)
    docs = [[rng.randrange(50) for _ in range(rng.randrange(1, 30))] for _ in range(20)]
    NgramIndex.build(docs).save(tmp_path)
    TitleTrie.build([d[:3] for d in docs]).save(tmp_path)
    ngrams, trie = NgramIndex.load(tmp_path), TitleTrie.load(tmp_path)
    for d in docs:
        assert ngrams.count(d[1:4]) >= 1 and list(ngrams.next_tokens(d[:2])) == brute_next(
            [x[s:] for x in docs for s in range(len(x))], d[:2])
        assert trie.is_identifier(d[:3])
    (tmp_path / "ngram_sa.npy").write_bytes(b"junk")
    with pytest.raises(IndexMismatchError, match="ngram_"):
        NgramIndex.load(tmp_path)


# -- constrained decoding never leaves the identifier set -------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    return {"ngram": tiny_retriever("ngram"), "title": tiny_retriever("title", prompt_length=0, seed=1)}


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(docs=st.lists(st.lists(st.integers(4, 4 + len(WORDS) - 1), min_size=1, max_size=12), min_size=1, max_size=6),
       scheme=st.sampled_from(["ngram", "title"]), beams=st.integers(1, 6),
       query=st.lists(st.sampled_from(WORDS), min_size=1, max_size=5))
@example(docs=[[4, 4]], scheme="title", beams=2, query=["the"])  # a spare beam cut off inside the only title
@example(docs=[[4, 4]], scheme="title", beams=3, query=["the"])  # spare beams repeating the only title
def test_constrained_decoding_never_leaves_the_identifier_set(tiny, docs, scheme, beams, query):
    model = tiny[scheme]
    backend = GenerativeIndex(model, num_beams=beams)
    from uniret.data import Corpus

    corpus = Corpus.from_documents(docs_of(docs))
    backend.index(corpus)
    hyps = model.generate([" ".join(query), "the"], constraint=backend.constraint(), num_beams=beams,
                          max_new_tokens=model.settings.max_new_tokens if scheme == "ngram"
                          else backend._max_title_tokens + 1)
    for per_query in hyps:
        assert 1 <= len(per_query) <= beams
        assert len({tuple(h.tokens) for h in per_query}) == len(per_query)  # no identifier twice
        for h in per_query:
            assert h.tokens and backend.is_valid(h.tokens), (scheme, h)
            assert math.isclose(sum(h.token_scores), h.score, abs_tol=1e-3) or h.score < sum(h.token_scores)
    run = backend.search({"q": " ".join(query)}, k=5)
    assert run["q"] and set(run["q"]) <= {d.id for d in corpus}
    assert backend.stats["valid"] == backend.stats["generated"]


def test_unconstrained_decoding_leaves_the_identifier_set(tiny):
    """The ablation really is unconstrained: a random LM generates n-grams the corpus does not hold."""
    from uniret.data import Corpus

    backend = GenerativeIndex(tiny["ngram"], num_beams=4, constrained=False)
    backend.index(Corpus.from_documents(docs_of([[4, 5, 6], [7, 8]])))
    backend.search({f"q{i}": w for i, w in enumerate(WORDS[:6])}, k=3)
    assert backend.stats["valid"] < backend.stats["generated"]


# -- SEAL-style scoring against a hand computation --------------------------------------------------------
def test_ngram_weight_and_document_scores_by_hand():
    # docs: 0 = [1 2 3 1 2], 1 = [2 3 4], 2 = [5]; 9 tokens in all
    index = NgramIndex.build([[1, 2, 3, 1, 2], [2, 3, 4], [5]])
    assert index.num_tokens == 9
    # "1 2": twice in doc 0 -> P(n) = 2/9; P(n|q) = 0.5 -> w = log(0.5 * 7/9 / (2/9 * 0.5)) = log(3.5)
    assert ngram_weight(math.log(0.5), 2, 9) == pytest.approx(math.log(3.5))
    # "2 3": in docs 0 and 1 -> P(n) = 2/9; P(n|q) = 0.25 -> w = log(0.25 * 7/9 / (2/9 * 0.75)) = log(7/6)
    # "3": P(n) = 2/9; P(n|q) = 0.1 -> w = max(0, log(0.1 * 7/9 / (2/9 * 0.9))) = 0
    # "9" does not occur: ignored
    ngrams = {(1, 2): math.log(0.5), (2, 3): math.log(0.25), (3,): math.log(0.1), (9,): 0.0}
    w12, w23 = math.log(3.5), math.log(7 / 6)
    scores = ngram_document_scores(ngrams, index, alpha=2.0)
    # doc 0: "1 2" first (2 fresh tokens of 2) then "2 3" (token 2 covered: 1 of 2 fresh) then "3" (weight 0)
    assert scores[0] == pytest.approx(w12**2 + w23**2 * 0.5)
    assert scores[1] == pytest.approx(w23**2)  # "2 3" fresh, "3" weighs 0
    assert 2 not in scores
    assert ngram_document_scores(ngrams, index, alpha=1.0)[0] == pytest.approx(w12 + w23 * 0.5)


def test_candidate_ngrams_are_every_prefix_with_its_best_log_probability():
    hyps = [Hypothesis([1, 2, 3], -1.0, [-0.1, -0.2, -0.3]), Hypothesis([1, 4], -1.0, [-0.05, -0.5])]
    got = candidate_ngrams(hyps)
    assert got == pytest.approx({(1,): -0.05, (1, 2): -0.3, (1, 2, 3): -0.6, (1, 4): -0.55})


def test_smoothing_and_beta_by_hand():
    index = NgramIndex.build([[1, 2, 3, 1, 2], [2, 3, 4], [5]])
    # smoothing 5: P(n) = (2 + 5) / (9 + 5) = 1/2; P(n|q) = 0.75 -> w = log(0.75 * 0.5 / (0.5 * 0.25)) = log 3
    assert ngram_weight(math.log(0.75), 2, 9, smoothing=5.0) == pytest.approx(math.log(3))
    ngrams = {(1, 2): math.log(0.5), (2, 3): math.log(0.25)}
    w12, w23 = ngram_weight(math.log(0.5), 2, 9), ngram_weight(math.log(0.25), 2, 9)
    # beta 0.8: doc 0 gets "2 3" with half its tokens fresh -> coefficient 1 - 0.8 + 0.8 * 0.5 = 0.6
    got = ngram_document_scores(ngrams, index, alpha=1.0, beta=0.8)
    assert got[0] == pytest.approx(w12 + 0.6 * w23) and got[1] == pytest.approx(w23)
    # weights known beforehand join the ranking (zero weights left out); a generated n-gram keeps its own
    got = ngram_document_scores(ngrams, index, alpha=1.0, weights={(5,): 2.0, (4,): 0.0, (1, 2): 99.0})
    assert got[2] == pytest.approx(2.0) and got[0] == pytest.approx(w12 + 0.5 * w23) and set(got) == {0, 1, 2}


def test_tf_saturation_by_hand():
    """``tf_k1``: a key's share in a document times ``tf (k1 + 1) / (tf + k1)`` (BM25's saturation of its
    occurrences); 0 leaves SEAL's presence-only ranking."""
    index = NgramIndex.build([[1, 2, 3, 1, 2], [2, 3, 4], [5]])
    ngrams = {(1, 2): math.log(0.5), (2, 3): math.log(0.25), (2,): math.log(0.9)}
    w12, w23, w2 = (ngram_weight(lp, index.count(t), 9) for t, lp in ngrams.items())
    assert w2 > w12 > w23 > 0  # "2" first: it covers token 2 in docs 0 and 1
    plain = ngram_document_scores(ngrams, index, alpha=1.0)
    assert plain[0] == pytest.approx(w2 + w12 * 0.5 + w23 * 0.5) and plain[1] == pytest.approx(w2 + w23 * 0.5)
    # k1 1.2: doc 0 holds "2" and "1 2" twice each -> 2 * 2.2 / 3.2; "2 3" once -> 1
    sat = 2 * 2.2 / 3.2
    got = ngram_document_scores(ngrams, index, alpha=1.0, tf_k1=1.2)
    assert got[0] == pytest.approx(w2 * sat + w12 * 0.5 * sat + w23 * 0.5)
    assert got[1] == pytest.approx(plain[1])  # every key once: unchanged
    assert got[0] - plain[0] > 0  # repeated keys count more


def test_unigram_weights_equal_the_scalar_weight():
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 5, 40)
    logprobs = np.log(rng.dirichlet(np.ones(40)))
    for smoothing in (0.0, 5.0):
        got = unigram_weights(logprobs, counts, int(counts.sum()), smoothing)
        want = [ngram_weight(float(lp), int(c), int(counts.sum()), smoothing) for lp, c in zip(logprobs, counts, strict=True)]
        assert got == pytest.approx(want, abs=1e-9)
    assert unigram_weights(logprobs, counts[:10], int(counts.sum())).shape == (10,)  # tokens past the corpus's


def test_query_keys_are_the_query_word_ngrams_the_corpus_holds():
    tok = word_tokenizer()
    ids = {w: i + 4 for i, w in enumerate(WORDS)}
    index = NgramIndex.build([[ids["protein"], ids["cell"], ids["gene"]], [ids["cell"], ids["blood"]]])
    got = set(query_keys("Protein cell, blood-gene!", tok, index, max_words=2))
    # words: protein cell blood gene; "Protein" lower-cased is "protein"; "blood gene" is in no document
    assert got == {(ids["protein"],), (ids["cell"],), (ids["blood"],), (ids["gene"],),
                   (ids["protein"], ids["cell"]), (ids["cell"], ids["blood"])}
    assert query_keys("vitamin", tok, index) == [] and query_keys("", tok, index) == []


def test_score_keys_equals_a_full_forward_pass():
    """The shared input cache gives each key the log-probability a plain forward pass over input + key gives,
    across chunks and for one-token keys (read off the first step)."""
    model = tiny_retriever("ngram", prompt_length=2)
    text, keys = "protein cell gene", [[5], [5, 6, 7], [8, 9], [10, 11, 12, 13], []]
    first, got = model.score_keys(text, keys, chunk=2)
    inputs = model.encode_inputs([text])[0]
    for key, score in zip(keys[:-1], got[:-1], strict=True):
        emb, mask = model._embed([inputs + key], ["retrieval"], left_pad=False)
        with torch.no_grad():
            logprobs = model.model(inputs_embeds=emb, attention_mask=mask).logits[0].float().log_softmax(-1)
        at = emb.shape[1] - len(key) - 1  # the position predicting the key's first token
        assert score == pytest.approx(sum(float(logprobs[at + j, t]) for j, t in enumerate(key)), abs=1e-4)
        assert first[key[0]].item() == pytest.approx(float(logprobs[at, key[0]]), abs=1e-4)
    assert got[-1] == 0.0 and first.shape == (len(model.tokenizer),)
    model.add_lora({})  # LoRA starts as the identity: the wrapped model scores the keys alike
    first_lora, got_lora = model.score_keys(text, keys, chunk=3)
    assert got_lora == pytest.approx(got, abs=1e-4) and torch.allclose(first_lora, first, atol=1e-4)


def test_search_keys_add_query_ngrams_and_unigrams(tiny, tmp_path):
    """Query keys rank a document no beam names, unigram keys one only the LM's first step points at; the
    setting travels with the model and the index."""
    from uniret.data import Corpus

    ids = {w: i + 4 for i, w in enumerate(WORDS)}
    rng = random.Random(0)  # filler documents of common words make the query's words rare, as in a real corpus
    filler = [[rng.randrange(4, 20) for _ in range(12)] for _ in range(30)]
    trial = ids["trial"]
    corpus = Corpus.from_documents(docs_of([[4, 5, 6], [27, 28, 29], [23, trial], *filler]))  # d1: cancer blood heart
    model = tiny["ngram"]
    full = GenerativeIndex(model, num_beams=2, keys=("beams", "query", "unigrams"))
    full.index(corpus)
    # no beams at all: a beams-only search ranks nothing, the query's n-grams (scored by the LM) find d1
    assert full.rank(KeySet({}), 3) == {}
    keys = full.key_set("cancer blood heart", [])
    assert set(keys.query) == {(27,), (28,), (29,), (27, 28), (28, 29), (27, 28, 29)} and keys.beams == {}
    first, scores = model.score_keys("cancer blood heart", list(keys.query))
    assert list(keys.query.values()) == pytest.approx(scores)
    assert keys.first == pytest.approx(first.numpy())
    ranked = full.rank(keys, 3, ("beams", "query"))
    assert next(iter(ranked)) == "d1" and ranked["d1"] > 0 and all(v == 0 for d, v in ranked.items() if d != "d1")
    # a first step that puts its mass on "trial" (only in d2) makes it a key: as many unigrams as other keys
    assert trial in corpus_tokens(full, 2)
    peaked = np.full(len(model.tokenizer), -30.0)
    peaked[trial] = -0.01
    absent = (ids["vitamin"],)  # one generated key the corpus lacks: it weighs nothing, but makes room for one unigram
    assert full.rank(KeySet({absent: -1.0}, first=peaked), 3).keys() == {"d2"}
    assert full.rank(KeySet({absent: -1.0}, first=None), 3) == {}
    # the setting: the model's saved default, an explicit choice, the manifest
    assert GenerativeIndex(model).keys == ("beams",)
    with_query = GenerativeRetriever(model.model, model.tokenizer, GenerativeSettings(search_keys=["beams", "query"]),
                                     name="q")
    assert GenerativeIndex(with_query).keys == ("beams", "query")
    tuned = GenerativeIndex(model, keys=("beams", "query", "unigrams"), smoothing=5.0, beta=0.8)
    tuned.index(corpus)
    loaded = GenerativeIndex.load(tuned.save(tmp_path / "idx"), encoder=model)
    assert (loaded.keys, loaded.smoothing, loaded.beta) == (("beams", "query", "unigrams"), 5.0, 0.8)
    with pytest.raises(ValueError, match="must include 'beams'"):
        GenerativeIndex(model, keys=("query",))
    with pytest.raises(ValueError, match="search_keys"):
        GenerativeSettings(search_keys=["beams", "bm25"])
    with pytest.raises(ValueError, match="must be a list"):
        GenerativeSettings(search_keys="beams,query")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n-gram scheme"):
        GenerativeSettings(scheme="title", search_keys=["beams", "query"])
    with pytest.raises(ValueError, match="n-gram scheme"):
        GenerativeIndex(tiny["title"], keys=("beams", "unigrams"))


def test_search_options_length_norm_and_query_words(tiny, tmp_path):
    """The ranking options: a length normalisation divides each document's score by ``1 - b + b * length /
    mean length`` (by hand); ``query_words`` caps the query keys; the model's ``search_options`` are the
    index's defaults, an explicit argument wins, a saved index keeps its own; bad options are refused."""
    from uniret.data import Corpus

    ids = {w: i + 4 for i, w in enumerate(WORDS)}
    cancer, blood = ids["cancer"], ids["blood"]
    long_, short = [cancer, blood, 5, 6, 7, 8, 9, 10], [cancer, blood]  # title (2 words) + text: 10 and 4 tokens
    corpus = Corpus.from_documents(docs_of([long_, short, [11, 12, 13, 14, 15]]))
    model = tiny["ngram"]
    plain = GenerativeIndex(model, keys=("beams",))
    plain.index(corpus)
    assert isinstance(plain.structure, NgramIndex) and plain.structure.lengths().tolist() == [10, 4, 7]
    keys = KeySet({(cancer, blood): -0.5})
    raw = plain.rank(keys, 3)
    assert raw["d0"] == pytest.approx(raw["d1"]) and raw["d0"] > 0  # SEAL: length plays no part
    assert list(raw)[0] == "d0"  # a tie: the smaller id first
    normed = GenerativeIndex(model, keys=("beams",), length_norm=0.5)
    normed.index(corpus)
    got = normed.rank(keys, 3)
    assert got["d0"] == pytest.approx(raw["d0"] / (0.5 + 0.5 * 10 / 7))  # mean length 7
    assert got["d1"] == pytest.approx(raw["d1"] / (0.5 + 0.5 * 4 / 7))
    assert list(got)[0] == "d1"  # the shorter document moves ahead
    normed.index(Corpus.from_documents(docs_of([short, long_])))  # indexed again: the lengths are the new ones
    assert list(normed.rank(keys, 2)) == ["d0", "d1"] and normed.rank(keys, 2)["d1"] < raw["d0"]
    # tf_k1 reaches the ranking: d0 holds "cancer blood" twice (title and text), d1 once
    twice, once = [cancer, blood, 5, 6], [5, 6, cancer, blood]
    tf_corpus = Corpus.from_documents(docs_of([twice, once]))
    presence, saturated = GenerativeIndex(model, keys=("beams",)), GenerativeIndex(model, keys=("beams",), tf_k1=1.2)
    for backend in (presence, saturated):
        backend.index(tf_corpus)
    flat, tf_ranked = presence.rank(keys, 2), saturated.rank(keys, 2)
    assert flat["d0"] == pytest.approx(flat["d1"])
    assert tf_ranked["d0"] == pytest.approx(flat["d0"] * 2 * 2.2 / 3.2) and tf_ranked["d1"] == pytest.approx(flat["d1"])
    # query_words caps the query's n-grams (1: single words only)
    one = GenerativeIndex(model, keys=("beams", "query"), query_words=1)
    one.index(corpus)
    assert set(one.key_set("cancer blood", []).query) == {(cancer,), (blood,)}
    # the model's options are the defaults; an argument wins; the manifest keeps the index's own
    tuned_model = GenerativeRetriever(model.model, model.tokenizer,
                                      GenerativeSettings(search_options={"length_norm": 0.25, "alpha": 1}), name="t")
    tuned = GenerativeIndex(tuned_model)
    assert (tuned.length_norm, tuned.alpha, tuned.query_words, tuned.beta) == (0.25, 1, 3, 1.0)
    assert GenerativeIndex(tuned_model, alpha=3.0).alpha == 3.0
    tuned.index(corpus)
    loaded = GenerativeIndex.load(tuned.save(tmp_path / "idx"), encoder=model)
    assert (loaded.length_norm, loaded.alpha, loaded.query_words) == (0.25, 1, 3)
    assert loaded.rank(keys, 3) == tuned.rank(keys, 3)
    saved = tuned_model.save(tmp_path / "model")
    assert GenerativeRetriever.load(saved).settings.search_options == {"length_norm": 0.25, "alpha": 1}
    assert GenerativeSettings(search_options={"query_words": 4.0}).search_options == {"query_words": 4}
    for bad, match in (({"lenght_norm": 0.5}, "unknown option"), ({"length_norm": 2}, "length_norm must be a number in"),
                       ({"query_words": 0}, "query_words must be a positive integer"),
                       ({"tf_k1": -1}, "tf_k1 must be a number >= 0"),
                       ({"alpha": "2"}, "alpha must be a number > 0"), ([("alpha", 1)], "mapping")):
        with pytest.raises(ValueError, match=match):
            GenerativeSettings(search_options=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="beta must be a number in"):
        GenerativeIndex(model, beta=1.5)
    with pytest.raises(ValueError, match="title scheme"):
        GenerativeSettings(scheme="title", search_options={"alpha": 1.0})
    with pytest.raises(ValueError, match="title scheme"):
        GenerativeIndex(tiny["title"], length_norm=0.5)
    # an index saved before these options (no query_words / length_norm in its manifest) ranks as it did, even
    # under a model whose own options differ
    manifest_file = tmp_path / "idx" / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    for name in ("query_words", "length_norm", "tf_k1"):
        manifest["settings"].pop(name)
    manifest_file.write_text(json.dumps(manifest))
    old = GenerativeIndex.load(tmp_path / "idx", encoder=tuned_model)
    assert (old.query_words, old.length_norm, old.alpha) == (3, 0.0, 1)
    tf_model = GenerativeRetriever(model.model, model.tokenizer, GenerativeSettings(search_options={"tf_k1": 1.2}),
                                   name="t")
    assert GenerativeIndex.load(tmp_path / "idx", encoder=tf_model).tf_k1 == 0.0  # the manifest's, not the model's
    # tf_k1 through the model's options, the argument, the manifest and describe()
    tf_index = GenerativeIndex(tf_model)
    assert tf_index.tf_k1 == 1.2 and GenerativeIndex(tf_model, tf_k1=0.0).tf_k1 == 0.0
    tf_index.index(corpus)
    reloaded = GenerativeIndex.load(tf_index.save(tmp_path / "tf"), encoder=model)
    assert reloaded.tf_k1 == 1.2 and reloaded.describe()["tf_k1"] == 1.2


def corpus_tokens(index: GenerativeIndex, row: int) -> list[int]:
    assert isinstance(index.structure, NgramIndex)
    return index.structure.document_tokens(row).tolist()


# -- save / load --------------------------------------------------------------------------------------------
def test_retriever_save_load_keeps_generation_and_soft_prompts(tmp_path):
    model = tiny_retriever("ngram", prompt_length=3)
    model.add_lora({"r": 4})
    with torch.no_grad():
        for n, p in model.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)  # make the adapters matter
        model.soft_prompts.normal_()
    model.train(False)  # no LoRA dropout
    before = model.generate(["the protein cell"], num_beams=3)
    with torch.no_grad():
        loss_before = float(model.loss(["gene study"], ["indexing"], [[5, 6]]))
    model.save(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "uniret_generative.json").read_text())
    assert saved["settings"]["prompt_length"] == 3 and saved["model_type"] == "llama"
    loaded = GenerativeRetriever.load(tmp_path / "m", device="cpu")
    loaded.train(False)
    assert not hasattr(loaded.model, "peft_config")  # LoRA merged
    after = loaded.generate(["the protein cell"], num_beams=3)
    assert [h.tokens for h in after[0]] == [h.tokens for h in before[0]]
    assert [h.score for h in after[0]] == pytest.approx([h.score for h in before[0]], abs=1e-4)
    with torch.no_grad():
        assert float(loaded.loss(["gene study"], ["indexing"], [[5, 6]])) == pytest.approx(loss_before, abs=1e-4)
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        loaded.loss(["x"], ["nope"], [[5]])


def test_index_save_load_same_results_and_tokenizer_mismatch(tmp_path, scifact):
    data = scifact.sample(num_queries=4, num_docs=30, split="test", seed=2)
    folder = tiny_bert_vocab_folder(tmp_path / "tiny")
    model = GenerativeRetriever.load(folder, device="cpu")
    backend = GenerativeIndex(model, num_beams=4)
    backend.index(data.corpus)
    queries = data.split_queries("test")
    before = backend.search(queries, k=10)
    assert all(before.values()) and backend.stats["valid"] == backend.stats["generated"] > 0
    path = backend.save(tmp_path / "idx")
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["settings"]["tokenizer"]["vocab_size"] == len(model.tokenizer)
    loaded = GenerativeIndex.load(path, device="cpu")
    after = loaded.search(queries, k=10)
    assert {q: list(h) for q, h in after.items()} == {q: list(h) for q, h in before.items()}
    assert all(list(after[q].values()) == pytest.approx(list(before[q].values())) for q in before)
    assert loaded.document(data.corpus.ids[0]) == next(iter(data.corpus))
    with pytest.raises(IndexMismatchError, match="tokenizer"):
        GenerativeIndex.load(path, encoder=tiny_retriever())
    titles = GenerativeRetriever(model.model, model.tokenizer, GenerativeSettings(scheme="title"), name="t")
    with pytest.raises(IndexMismatchError, match="'ngram' identifier index"):
        GenerativeIndex.load(path, encoder=titles)


# -- training ---------------------------------------------------------------------------------------------
def test_training_pairs_are_identifiers_of_their_documents(scifact):
    from uniret.train.generative import GenerativeConfig, GenerativeModule
    from uniret.train.records import records_from_beir

    data = scifact.sample(num_queries=10, num_docs=40, split="train", seed=3)
    model = tiny_retriever()
    from transformers import AutoTokenizer

    from uniret.assets import resolve_model

    model.tokenizer = AutoTokenizer.from_pretrained(resolve_model("all-MiniLM-L6-v2"))  # real text
    cfg = GenerativeConfig(ngram_length=5, indexing_per_record=2, pseudo_queries="first-sentence")
    module = GenerativeModule(model, cfg, data.corpus)
    index = NgramIndex.build(module.tokens)
    records = list(records_from_beir(data, "train"))
    examples = module.examples(records, random.Random(0))
    assert len(examples) == 4 * len(records)
    assert [t for _, t, _ in examples].count("indexing") == 2 * len(records)
    for i, r in enumerate(records):
        text, task, target = examples[4 * i]
        assert text == r.query and task == "retrieval" and len(target) == 5
        assert set(index.documents(target)) & {module.rows[d] for d in r.positive_ids}
    assert all(index.count(t) > 0 for _, _, t in examples)
    bad = records[0].__class__(query="q", positives=["x"], positive_ids=["not-in-corpus"])
    with pytest.raises(ValueError, match="positive_ids"):
        module.examples([bad], random.Random(0))


def test_query_tasks_cut_title_and_text_targets_for_their_own_prompts(scifact):
    """UGR's granularities: with ``query_tasks`` every record gives one pair per task, the ``title`` task's target
    lying inside the title's tokens of a relevant document and the ``text`` task's anywhere in it."""
    from transformers import AutoTokenizer

    from uniret.assets import resolve_model
    from uniret.train.generative import GenerativeConfig, GenerativeModule
    from uniret.train.records import records_from_beir

    data = scifact.sample(num_queries=10, num_docs=40, split="train", seed=3)
    model = tiny_retriever()
    model.tokenizer = AutoTokenizer.from_pretrained(resolve_model("all-MiniLM-L6-v2"))  # real text
    cfg = GenerativeConfig(tasks=["retrieval", "title", "indexing"], ngram_length=4, indexing_per_record=1,
                           query_tasks={"retrieval": "text", "title": "title"})
    module = GenerativeModule(model, cfg, data.corpus)
    assert all(0 < n <= len(t) for n, t in zip(module.title_length, module.tokens, strict=True))
    records = list(records_from_beir(data, "train"))
    examples = module.examples(records, random.Random(0))
    assert [t for _, t, _ in examples] == ["retrieval", "title", "indexing"] * len(records)

    def inside(target, toks):
        return any(toks[s : s + len(target)] == target for s in range(len(toks) - len(target) + 1))

    text_only = 0
    for i, r in enumerate(records):
        rows = [module.rows[d] for d in r.positive_ids]
        (q1, _, text_target), (q2, _, title_target) = examples[3 * i], examples[3 * i + 1]
        assert q1 == q2 == r.query
        assert any(len(title_target) == min(4, module.title_length[w])
                   and inside(title_target, module.tokens[w][: module.title_length[w]]) for w in rows)
        assert any(inside(text_target, module.tokens[w]) for w in rows)
        text_only += not any(inside(text_target, module.tokens[w][: module.title_length[w]]) for w in rows)
    assert text_only > 0  # text targets are not confined to titles


def test_query_tasks_are_checked():
    from uniret.train.generative import GenerativeConfig

    with pytest.raises(ValueError, match="not in generative.tasks"):
        GenerativeConfig(query_tasks={"title": "title"})
    with pytest.raises(ValueError, match="text, title"):
        GenerativeConfig(tasks=["retrieval", "indexing"], query_tasks={"retrieval": "abstract"})
    with pytest.raises(ValueError, match="scheme 'ngram'"):
        GenerativeConfig(scheme="title", tasks=["retrieval", "indexing"], query_tasks={"retrieval": "title"})


def test_search_task_defaults_to_retrieval_or_the_first_task():
    model = tiny_retriever()
    assert GenerativeIndex(model).task == "retrieval"
    model.settings = GenerativeSettings(scheme="ngram", tasks=["title", "indexing"], prompt_length=2)
    assert GenerativeIndex(model).task == "title" and GenerativeIndex(model, task="indexing").task == "indexing"


def test_training_steps_lower_the_loss_on_identifiers():
    """Full fine-tuning of the tiny model on a fixed batch: the identifier loss falls (it can fail: a module
    whose step did not reach the weights, or a loss over the wrong tokens, would not learn)."""
    from uniret.data import Corpus
    from uniret.train.generative import GenerativeConfig, GenerativeModule
    from uniret.train.records import TrainingRecord

    model = tiny_retriever(prompt_length=2)
    corpus = Corpus.from_documents(docs_of([[4 + (i * 7 + j) % len(WORDS) for j in range(10)] for i in range(6)]))
    module = GenerativeModule(model, GenerativeConfig(ngram_length=3, indexing_per_record=1, prompt_length=2),
                              corpus)
    records = [TrainingRecord(query=WORDS[i], positives=["x"], positive_ids=[f"d{i}"]) for i in range(6)]
    opt = torch.optim.AdamW(module.parameters(), lr=3e-2)
    module.use_mixed_precision("no")
    module.train(True)
    losses = []
    for step in range(25):
        opt.zero_grad()
        losses.append(module.step(records, random.Random(0), step)["loss"])
        opt.step()
    assert losses[-1] < 0.5 * losses[0]
    assert model.soft_prompts is not None and "soft_prompts" in module.state_dict()


def test_uniret_train_and_eval_generative_tiny(scifact, tmp_path, capsys):
    """``uniret train`` (family ``generative``) on a real SciFact slice with a tiny random Llama, then
    ``uniret eval --retriever generative --model OUT/model``: the two-step recipe, fast."""
    import yaml

    from uniret.cli import main
    from uniret.data import save_beir

    data_dir = save_beir(scifact.sample(num_queries=12, num_docs=40, split="train", seed=4), tmp_path / "slice")
    folder = tiny_bert_vocab_folder(tmp_path / "tiny")
    cfg = {"model": {"kind": "generative", "backbone": str(folder), "max_length": 32, "device": "cpu"},
           "data": {"data": str(data_dir)},
           "generative": {"prompt_length": 2, "ngram_length": 4, "max_new_tokens": 4, "pseudo_queries": "span",
                          "search_keys": ["beams", "query"], "search_options": {"length_norm": 0.5}},
           "trainer": {"batch_size": 4, "max_steps": 3, "learning_rate": 1e-3}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["-q", "train", "--config", str(tmp_path / "cfg.yaml"), "--output-dir", str(tmp_path / "run")]) == 0
    saved = json.loads((tmp_path / "run" / "model" / "uniret_generative.json").read_text())
    assert saved["settings"]["prompt_length"] == 2 and saved["settings"]["tasks"] == ["retrieval", "indexing"]
    assert saved["settings"]["search_keys"] == ["beams", "query"]
    assert saved["settings"]["search_options"] == {"length_norm": 0.5}
    assert main(["-q", "eval", "--data", str(data_dir), "--split", "train", "--retriever", "generative", "--model",
                 str(tmp_path / "run" / "model"), "--device", "cpu", "--output-dir", str(tmp_path / "ev")]) == 0
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert 0.0 <= report["metrics"]["ndcg@10"] <= 1.0
    assert report["retriever"]["kind"] == "generative"
    valid = report["retriever"]["valid_outputs"]
    assert valid["generated"] > 0 and valid["valid"] == valid["generated"]
    assert report["retriever"]["keys"] == ["beams", "query"]  # the model's saved search keys and options
    assert (report["retriever"]["length_norm"], report["retriever"]["alpha"]) == (0.5, 2.0)
    assert main(["-q", "eval", "--data", str(data_dir), "--split", "train", "--retriever", "generative", "--model",
                 str(tmp_path / "run" / "model"), "--device", "cpu", "--keys", "beams",
                 "--search-options", "alpha=1, query_words=2", "--output-dir", str(tmp_path / "ev2")]) == 0
    got = json.loads((tmp_path / "ev2" / "report.json").read_text())["retriever"]
    assert (got["keys"], got["alpha"], got["query_words"], got["length_norm"]) == (["beams"], 1.0, 2, 0.5)
    for bad, says in (("alpha", "expected NAME=NUMBER"), ("alpha=x", "expected NAME=NUMBER"),
                      ("lenght_norm=1", "unknown option"), ("beta=2", "beta must be a number in"),
                      ("alpha=1,alpha=2", "alpha is given twice"), (" ", "needs NAME=VALUE pairs")):
        assert main(["-q", "eval", "--data", str(data_dir), "--retriever", "generative", "--model",
                     str(tmp_path / "run" / "model"), "--search-options", bad,
                     "--output-dir", str(tmp_path / "ev6")]) == 2
        assert says in capsys.readouterr().err
    assert not (tmp_path / "ev6").exists()
    assert main(["-q", "eval", "--data", str(data_dir), "--retriever", "bm25", "--keys", "beams",
                 "--output-dir", str(tmp_path / "ev3")]) == 2
    assert "--keys applies to --retriever generative only" in capsys.readouterr().err
    for extra in (["--index", str(tmp_path / "idx")], ["--index", str(tmp_path / "idx"), "--retriever", "generative"]):
        assert main(["-q", "eval", "--data", str(data_dir), *extra, "--keys", "beams,query",
                     "--output-dir", str(tmp_path / "ev4")]) == 2
        assert "a saved index searches as its manifest records" in capsys.readouterr().err
    assert main(["-q", "eval", "--data", str(data_dir), "--index", str(tmp_path / "idx"), "--search-options",
                 "alpha=1", "--output-dir", str(tmp_path / "ev4")]) == 2
    assert "--search-options applies when an index is built" in capsys.readouterr().err
    assert main(["-q", "eval", "--data", str(data_dir), "--retriever", "generative", "--keys", ",",
                 "--output-dir", str(tmp_path / "ev5")]) == 2
    assert "--keys needs one or more key sources" in capsys.readouterr().err


def test_family_contract_with_a_tiny_model(scifact, tmp_path, monkeypatch):
    """The registry's contract (tests/test_family_contract.py) for ``generative``, with a tiny random Llama over
    MiniLM's WordPiece vocabulary instead of SmolLM2 so that it runs in the default suite."""
    import test_family_contract as contract

    from uniret.families import RetrieverConfig

    folder = tiny_bert_vocab_folder(tmp_path / "tiny")
    cfg = RetrieverConfig(kind="generative", model=str(folder), device="cpu")
    monkeypatch.setitem(contract.CASES, "generative", (cfg, contract._generative_mismatch, []))
    data = scifact.sample(num_queries=12, num_docs=120, split="test", seed=1)
    contract.test_family_contract("generative", (data, dict(list(data.split_queries("test").items())[:8])),
                                  tmp_path / "contract")


def test_generation_does_not_depend_on_the_batch(tiny):
    """Left padding and soft prompts: a query decodes the same alone and beside a longer one."""
    model = tiny["ngram"]
    model.train(False)
    alone = model.generate(["gene"], num_beams=3)[0]
    batched = model.generate(["gene", "the protein cell gene vitamin study claim patients"], num_beams=3)[0]
    assert [h.tokens for h in alone] == [h.tokens for h in batched]
    assert [h.score for h in alone] == pytest.approx([h.score for h in batched], abs=1e-4)


def test_recipe_config_maps_onto_the_dataclasses():
    from uniret.config import load_config
    from uniret.train.config import TrainConfig

    cfg = load_config("configs/scifact-generative.yaml", TrainConfig)
    assert cfg.model.kind == "generative" and cfg.model.backbone == "smollm2-135m" and cfg.model.lora["r"] == 16
    assert cfg.generative.scheme == "ngram" and cfg.generative.tasks == ["retrieval", "indexing"]
    with pytest.raises(ValueError, match="pseudo_queries"):
        load_config("configs/scifact-generative.yaml", TrainConfig, overrides={"generative.pseudo_queries": "x"})
