"""The sparse family's index: quantisation, the engines (PISA, Lucene, Seismic) on identical quantised vectors
of SPLADE-tiny on a real SciFact slice, round trips, explanations, bad input and the CLI."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from uniret.errors import IndexMismatchError
from uniret.protocols import SparseVectors

pytestmark = pytest.mark.skipif(importlib.util.find_spec("pyterrier_pisa") is None
                                or importlib.util.find_spec("seismic") is None,
                                reason="needs the sparse extra (pyterrier-pisa, tbb, pyseismic-lsr)")


# -- quantisation and terms (no model) ------------------------------------------------------------------------

def test_quantise_against_hand_computation():
    from uniret.index.sparse import quantise

    # (float32-exact inputs) row 0: 0.0048828125 x 100 = 0.488 -> 0 and 0.00390625 -> 0.39 -> 0 (dropped),
    # 0.0078125 -> 0.78 -> 1, 1.25 -> 125; row 1: empty; row 2: 0.125 -> 12.5 -> 12 and 0.375 -> 37.5 -> 38
    # (halves round to even)
    v = SparseVectors(np.array([0, 4, 4, 6]), np.array([7, 3, 9, 1, 2, 5], dtype=np.int32),
                      np.array([0.0048828125, 0.00390625, 0.0078125, 1.25, 0.125, 0.375], dtype=np.float32),
                      ["t"] * 10)
    q = quantise(v)
    assert q.indptr.tolist() == [0, 2, 2, 4]
    assert q.indices.tolist() == [9, 1, 2, 5]
    assert q.values.tolist() == [1, 125, 12, 38]
    assert q.values.dtype == np.int32 and q.indices.dtype == np.int32
    with pytest.raises(ValueError, match="non-negative"):
        quantise(SparseVectors(np.array([0, 1]), np.array([0], dtype=np.int32), np.array([-1.0], np.float32), ["t"]))


def test_escaped_terms_are_injective_and_whitespace_free():
    from uniret.index.sparse_engines import escape_terms

    vocab = ["the", "##ing", "[CLS]", "%", "x y", "", "the", "tab\there", "Ġthe"]
    terms = escape_terms(vocab)
    assert terms[:6] == ["the", "##ing", "[CLS]", "%25", "x%20y", "%"]
    assert terms[6] == "the%#6" and terms[7] == "tab%09here" and terms[8] == "Ġthe"
    assert len(set(terms)) == len(terms) and not any(any(c.isspace() for c in t) for t in terms)


# -- real data: SPLADE-tiny on a SciFact slice ---------------------------------------------------------------

@pytest.fixture(scope="module")
def splade():
    from uniret.retriever.splade import SpladeEncoder

    return SpladeEncoder("splade-tiny", device="cpu", max_length=96, batch_size=32)


@pytest.fixture(scope="module")
def slice_(scifact):
    data = scifact.sample(num_queries=20, num_docs=200, split="test", seed=3)
    return data, data.split_queries("test")


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory):
    """A cache folder for this module's fixtures (set up before the per-test isolated cache of conftest)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("UNIRET_CACHE", str(tmp_path_factory.mktemp("sparse-cache")))
        yield


@pytest.fixture(scope="module")
def encoded(splade, slice_, module_cache):
    from uniret.index.sparse import encode_cached, quantise

    data, queries = slice_
    ids = [d.id for d in data.corpus]
    # cached (under this session's UNIRET_CACHE), so that the backend's index() below reuses the vectors
    docs = quantise(encode_cached(splade, [d.full_text() for d in data.corpus], "documents", cache=True))
    qv = quantise(splade.encode_queries(list(queries.values())))
    q = qv.as_queries()
    return ids, docs, q


def brute_force(docs, queries, k):
    """Exact integer dot products with numpy: per query ``[(row, score)]`` for every matching document."""
    import scipy.sparse as sp

    n_terms = int(max(docs.indices.max(), max(max(q) for q in queries if q))) + 1
    d = sp.csr_matrix((docs.values.astype(np.int64), docs.indices, docs.indptr), shape=(len(docs), n_terms))
    out = []
    for q in queries:
        vec = np.zeros(n_terms, dtype=np.int64)
        vec[list(q)] = list(q.values())
        scores = d @ vec
        out.append({int(r): int(scores[r]) for r in np.nonzero(scores)[0]})
    return out


def assert_same_top_k(hits, exact, k):
    """``hits`` (best first) is a correct top-k of the exact scores: same scores, same documents up to ties."""
    want = sorted(exact.values(), reverse=True)[:k]
    assert [s for _, s in hits] == want
    for row, s in hits:
        assert exact[row] == s
    if len(want) == k:  # every document scoring above the k-th score is in the top-k
        assert {r for r, s in exact.items() if s > want[-1]} <= {r for r, _ in hits}


def _build(engine_cls, tmp_path, ids, docs, vocabulary):
    from uniret.index.sparse_engines import escape_terms

    terms = escape_terms(vocabulary)
    folder = tmp_path / engine_cls.name
    engine_cls.build(folder, ids, docs, terms)
    return engine_cls.open(folder, ids, terms), terms


@pytest.fixture(scope="module")
def lucene_engine(encoded, splade, tmp_path_factory):
    from uniret.index.sparse_engines import LuceneImpactEngine

    ids, docs, _ = encoded
    return _build(LuceneImpactEngine, tmp_path_factory.mktemp("lucene"), ids, docs, splade.vocabulary)


@pytest.mark.java
def test_pisa_and_lucene_return_the_exact_top10_on_real_data(encoded, splade, lucene_engine, tmp_path):
    """Given identical quantised vectors, PISA's and Lucene's top-10 equal the brute-force dot product's (so each
    other's) up to ties: SPLADE-tiny on 200 SciFact documents and 20 queries."""
    from uniret.index.sparse_engines import PisaEngine

    ids, docs, queries = encoded
    exact = brute_force(docs, queries, 10)
    pisa, _ = _build(PisaEngine, tmp_path, ids, docs, splade.vocabulary)
    lucene, _ = lucene_engine
    p_hits, l_hits = pisa.search(queries, 10), lucene.search(queries, 10)
    assert all(len(h) == 10 for h in p_hits)
    for p, lu, ex in zip(p_hits, l_hits, exact, strict=True):
        assert_same_top_k(p, ex, 10)
        assert_same_top_k(lu, ex, 10)
        assert [s for _, s in p] == [s for _, s in lu]
    # a batch answered by two threads (Anserini's batch_search) is the one-thread answer; PISA's term-at-a-time
    # (the default here) is sent one thread whatever is asked: its binding shares one accumulator between
    # threads, which answered most queries wrongly
    assert lucene.search(queries, 10, threads=2) == l_hits
    assert [(c["algorithm"], c["threads"]) for c in _pisa_calls(pisa, queries, 2)] == [("ranked_or_taat", 1)]
    assert pisa.search(queries, 10, threads=2) == p_hits


def test_both_pisa_algorithms_return_the_exact_top10_and_auto_picks_by_size(encoded, splade, tmp_path):
    """The default (``auto``) is term-at-a-time on small corpora, MaxScore on large ones; both are exact on real
    SPLADE vectors (200 SciFact documents, 20 queries), as is an explicitly chosen one."""
    from uniret.index.sparse_engines import (
        PISA_TAAT_MAX_DOCS,
        PISA_TAAT_MAX_DOCS_THREADED,
        PisaEngine,
        pisa_algorithm,
    )

    assert pisa_algorithm("auto", PISA_TAAT_MAX_DOCS) == "ranked_or_taat"
    assert pisa_algorithm("auto", PISA_TAAT_MAX_DOCS + 1) == "maxscore"
    assert pisa_algorithm("block_max_wand", 10) == "block_max_wand"
    # a batch on several threads: MaxScore (which runs on them) sooner than term-at-a-time (which cannot)
    assert pisa_algorithm("auto", PISA_TAAT_MAX_DOCS_THREADED, threads=2) == "ranked_or_taat"
    assert pisa_algorithm("auto", PISA_TAAT_MAX_DOCS_THREADED + 1, threads=2) == "maxscore"
    assert pisa_algorithm("auto", PISA_TAAT_MAX_DOCS_THREADED + 1, threads=1) == "ranked_or_taat"
    ids, docs, queries = encoded
    exact = brute_force(docs, queries, 10)
    default, terms = _build(PisaEngine, tmp_path, ids, docs, splade.vocabulary)
    assert default.algorithm == "ranked_or_taat"
    maxscore = PisaEngine.open(tmp_path / PisaEngine.name, ids, terms, algorithm="maxscore")
    for engine in (default, maxscore):
        for hits, ex in zip(engine.search(queries, 10), exact, strict=True):
            assert_same_top_k(hits, ex, 10)
    # MaxScore keeps no state between queries: two TBB threads (checked to reach PISA) give the one-thread answer
    assert maxscore.search(queries, 10, threads=2) == maxscore.search(queries, 10)
    assert [c["threads"] for c in _pisa_calls(maxscore, queries, threads=2)] == [2]


def _pisa_calls(engine, queries, threads):
    """The keyword arguments of each call ``engine.search(queries, 10, threads=threads)`` makes to PISA's
    ``retrieve`` (the real one runs)."""
    from unittest import mock

    from uniret.index import sparse_engines

    real, calls = sparse_engines.pisathon(), []

    class Spy:
        def __getattr__(self, name):
            return getattr(real, name)

        def retrieve(self, context, algorithm, batch, **kwargs):
            calls.append({"algorithm": algorithm, **kwargs})
            return real.retrieve(context, algorithm, batch, **kwargs)

    with mock.patch.object(sparse_engines, "pisathon", lambda: Spy()):
        engine.search(queries, 10, threads=threads)
    return calls


def test_pisa_auto_resolves_per_search_by_threads(encoded, splade, tmp_path, monkeypatch):
    """``auto`` on a corpus above the threaded limit: a batch on two threads runs MaxScore on two threads (exact,
    the one-thread scores), a one-thread batch and a single query (one thread per query) run term-at-a-time on
    one thread: the guard against the binding's shared term-at-a-time accumulator holds."""
    from uniret.index import sparse_engines

    monkeypatch.setattr(sparse_engines, "PISA_TAAT_MAX_DOCS_THREADED", 100)  # the slice has 200 documents
    ids, docs, queries = encoded
    engine, _ = _build(sparse_engines.PisaEngine, tmp_path, ids, docs, splade.vocabulary)
    assert engine.algorithm_for(1) == "ranked_or_taat" and engine.algorithm_for(2) == "maxscore"
    assert [(c["algorithm"], c["threads"]) for c in _pisa_calls(engine, queries, 2)] == [("maxscore", 2)]
    assert [(c["algorithm"], c["threads"]) for c in _pisa_calls(engine, queries, 1)] == [("ranked_or_taat", 1)]
    assert [(c["algorithm"], c["threads"]) for c in _pisa_calls(engine, queries[:1], 2)] == [("ranked_or_taat", 1)]
    exact = brute_force(docs, queries, 10)
    one, two = engine.search(queries, 10), engine.search([{}, *queries], 10, threads=2)
    assert two[0] == []  # an empty query keeps its place in a threaded batch
    for a, b, ex in zip(one, two[1:], exact, strict=True):
        assert_same_top_k(b, ex, 10)
        assert [s for _, s in a] == [s for _, s in b]


def test_pisa_records_its_codec_and_opens_older_folders(encoded, splade, tmp_path):
    """A PISA folder records the posting-list codec it was built with (``pisa.json``); a folder without it (built
    before the codec was recorded) opens as SIMD-BP128; a damaged ``pisa.json`` is a clear error. Every codec
    gives the same exact top-10."""
    from uniret.index.sparse_engines import (
        LEGACY_PISA_ENCODING,
        PISA_ENCODING,
        IndexMismatchError,
        PisaEngine,
    )

    ids, docs, queries = encoded
    exact = brute_force(docs, queries, 10)
    for codec in (PISA_ENCODING, LEGACY_PISA_ENCODING):
        folder = tmp_path / codec
        PisaEngine.build(folder, ids, docs, [], encoding=codec)
        assert PisaEngine.encoding_of(folder) == codec
        assert list(folder.glob(f"*.{codec}"))
        if codec == LEGACY_PISA_ENCODING:
            (folder / "pisa.json").unlink()
            assert PisaEngine.encoding_of(folder) == LEGACY_PISA_ENCODING
        for hits, ex in zip(PisaEngine.open(folder, ids).search(queries, 10), exact, strict=True):
            assert_same_top_k(hits, ex, 10)
    (tmp_path / PISA_ENCODING / "pisa.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(IndexMismatchError, match="pisa.json"):
        PisaEngine.open(tmp_path / PISA_ENCODING, ids)


def test_seismic_is_close_to_exact(encoded, splade, tmp_path):
    from uniret.index.sparse_engines import SeismicEngine

    ids, docs, queries = encoded
    exact = brute_force(docs, queries, 10)
    seismic, _ = _build(SeismicEngine, tmp_path, ids, docs, splade.vocabulary)
    hits = seismic.search(queries, 10)
    # batch_search (answers in no fixed order, matched back by query id), an empty query kept in place
    assert seismic.search([{}, *queries] * 8, 10, threads=2) == [[], *hits] * 8
    recall = []
    for h, ex in zip(hits, exact, strict=True):
        top = {r for r, _ in sorted(ex.items(), key=lambda x: -x[1])[:10]}
        recall.append(len(top & {r for r, _ in h}) / 10)
        assert all(ex[r] == s for r, s in h)  # Seismic's scores are exact for what it returns
    assert np.mean(recall) >= 0.9
    # an answer naming a query that was not sent is an error, not a silently empty answer
    from unittest import mock

    with mock.patch.object(seismic, "_index", mock.Mock(batch_search=lambda *a, **kw: [[("q9", 1.0, ids[0])]])):
        with pytest.raises(RuntimeError, match="not sent"):
            seismic.search(queries[:2], 10, threads=2)


@pytest.mark.java
def test_pyserini_impact_searcher_opens_our_lucene_index(encoded, splade, tmp_path):
    from uniret.index.java import ensure_jvm
    from uniret.index.sparse_engines import ImpactVectors, LuceneImpactEngine

    ids, docs, queries = encoded
    n = 40  # a small index: pyserini's searcher reads every term's document frequency through JNI when it opens
    ids = ids[:n]
    docs = ImpactVectors(docs.indptr[:n + 1], docs.indices[:docs.indptr[n]], docs.values[:docs.indptr[n]])
    engine, terms = _build(LuceneImpactEngine, tmp_path, ids, docs, splade.vocabulary)
    ensure_jvm()
    from pyserini.search.lucene import LuceneImpactSearcher

    class Encoded:  # a pyserini query encoder that returns our quantised query as {term: weight}
        def encode(self, q):
            return q

    searcher = LuceneImpactSearcher(str(engine.directory), Encoded(), min_idf=-1)
    assert searcher.num_docs == len(ids)
    ours = engine.search(queries[:5], 10)
    for q, mine in zip(queries[:5], ours, strict=True):
        theirs = searcher.search({terms[t]: w for t, w in q.items()}, k=10)
        assert [(h.docid, round(h.score)) for h in theirs] == [(ids[r], s) for r, s in mine]


# -- the backend: round trip, explanations, bad input ---------------------------------------------------------

@pytest.fixture(scope="module")
def built(splade, slice_, encoded, module_cache, tmp_path_factory):
    from uniret.index.sparse import SparseIndex

    data, queries = slice_
    index = SparseIndex(splade, "pisa", cache_embeddings=True)  # the documents' vectors: cached by `encoded`
    index.index(data.corpus)
    before = index.search(queries, k=10)
    path = index.save(tmp_path_factory.mktemp("sparse") / "idx")
    return index, path, before


def test_the_index_searches_a_batch_with_its_threads(built, slice_):
    """``SparseIndex(threads=...)`` (default: the usable cores) reaches the engine's batch search."""
    from unittest import mock

    from uniret.index.sparse import SparseIndex
    from uniret.index.sparse_engines import default_threads

    index, _, before = built
    _, queries = slice_
    assert index.threads == default_threads()
    assert SparseIndex(index.encoder, "pisa", threads=3).threads == 3  # an explicit count is kept
    with mock.patch.object(index, "threads", 3), \
            mock.patch.object(index._engine, "search", wraps=index._engine.search) as spy:
        assert index.search(queries, k=10) == before
    assert spy.call_args.kwargs == {"threads": 3}


def test_round_trip_and_manifest(built, splade, slice_):
    from uniret.index import read_manifest
    from uniret.index.sparse import SparseIndex, vocabulary_hash

    index, path, before = built
    data, queries = slice_
    manifest = read_manifest(path)
    assert manifest["kind"] == "sparse" and manifest["settings"]["engine"] == "pisa"
    assert manifest["settings"]["scale"] == 100
    assert manifest["settings"]["vocabulary_hash"] == vocabulary_hash(splade.vocabulary)
    assert manifest["encoder"]["max_length"] == 96 and manifest["encoder"]["hash"]
    loaded = SparseIndex.load(path, encoder=splade)
    assert loaded.search(queries, k=10) == before
    assert loaded.document(next(iter(data.corpus)).id) == next(iter(data.corpus))
    # the same stored vectors served by another engine give the same ranking (up to ties: same scores)
    seismic = SparseIndex.load(path, encoder=splade, engine="seismic")
    assert seismic.engine_name == "seismic"
    for q in before:
        assert list(seismic.search({q: queries[q]}, k=3)[q].values()) == list(before[q].values())[:3]


def test_queries_quantised_at_their_own_scale(built, splade, slice_, tmp_path):
    """``query_scale``: queries rounded at x20 against documents at x100; scores are the exact integer dot
    products / (100 x 20), the setting is saved in the manifest, and explain adds up to the score."""
    from uniret.index import read_manifest
    from uniret.index.sparse import SparseIndex, quantise

    index, path, before = built
    data, queries = slice_
    coarse = SparseIndex.load(path, encoder=splade, query_scale=20)
    assert coarse.query_scale == 20 and coarse.describe()["query_scale"] == 20
    got = coarse.search(queries, k=10)
    ids, docs = index.stored_vectors()
    qv = quantise(splade.encode_queries(list(queries.values())), 20).as_queries()
    fine = index._quantised_queries(list(queries.values()))
    assert sum(sum(q.values()) for q in qv) < sum(sum(q.values()) for q in fine)
    row_of = {d: i for i, d in enumerate(ids)}
    for (qid, hits), exact in zip(got.items(), brute_force(docs, qv, 10), strict=True):
        assert_same_top_k([(row_of[d], round(s * 100 * 20)) for d, s in hits.items()], exact, 10)
        doc_id, score = next(iter(hits.items()))
        assert sum(coarse.explain(queries[qid], doc_id, top=10_000).values()) == pytest.approx(score, abs=1e-9)
    assert got != before  # a coarser query rounding changes the scores
    saved = coarse.save(tmp_path / "coarse")
    assert read_manifest(saved)["settings"]["query_scale"] == 20
    assert SparseIndex.load(saved, encoder=splade).search(queries, k=10) == got
    assert SparseIndex.load(saved, encoder=splade, query_scale=100).search(queries, k=10) == before
    with pytest.raises(ValueError, match="query_scale"):
        SparseIndex(splade, "pisa", query_scale=0)


def test_explain_gives_the_shared_terms_that_make_the_score(built, slice_):
    index, _, before = built
    _, queries = slice_
    qid = next(iter(before))
    doc_id, score = next(iter(before[qid].items()))
    terms = index.explain(queries[qid], doc_id, top=10_000)
    assert sum(terms.values()) == pytest.approx(score, abs=1e-9)
    assert list(terms.values()) == sorted(terms.values(), reverse=True)
    top = index.explain(queries[qid], doc_id, top=3)
    assert list(top) == list(terms)[:3] and all(isinstance(t, str) for t in top)
    # what the search service shows per hit: explain for each known document, unknown ids left out
    hits = list(before[qid])[:3]
    matched = index.matched_terms(queries[qid], [*hits, "no-such-doc"], top=3)
    assert list(matched) == hits and matched[hits[0]] == top


def test_empty_documents_and_queries(splade, tmp_path):
    from uniret.data import Corpus, Document
    from uniret.index.sparse import SparseIndex

    index = SparseIndex(splade, "pisa")
    corpus = Corpus.from_documents([Document("a", "vitamin d deficiency and bone density"), Document("e", ""),
                                    Document("b", "randomised trial of statins")])
    index.index(corpus)  # an empty text is encoded like any other (special tokens only): no crash
    # a document whose vector is empty (nothing survives quantisation) is kept and matches nothing
    empty = SparseVectors(np.array([0, 2, 2]), np.array([5, 6], dtype=np.int32), np.array([1.0, 2.0], np.float32),
                          splade.vocabulary)
    index.add_vectors(["x", "empty"], empty)
    assert index.stored_vectors()[0] == ["x", "empty"]
    path = index.save(tmp_path / "idx")
    loaded = SparseIndex.load(path, encoder=splade)
    assert loaded.search_vectors(["q"], [{5: 3, 6: 1}], 10) == {"q": {"x": (3 * 100 + 200) / 100**2}}
    assert loaded.search({"blank": "   "}, k=5) == {"blank": {}}


def test_encoder_and_vocabulary_mismatch_are_clear_errors(built):
    from uniret.index.sparse import SparseIndex
    from uniret.retriever.splade import SpladeEncoder

    index, path, _ = built
    with pytest.raises(IndexMismatchError, match="max_length=96"):
        SparseIndex.load(path, encoder=SpladeEncoder("splade-tiny", device="cpu", max_length=64))

    class OtherVocabulary:  # the same model identity, another vocabulary (a changed tokenizer)
        identity = index.encoder.identity
        vocabulary = [*index.encoder.vocabulary[:-1], "[NEW]"]

    with pytest.raises(IndexMismatchError, match="vocabulary"):
        SparseIndex.load(path, encoder=OtherVocabulary())


def test_damaged_or_missing_files_are_clear_errors(built, splade, tmp_path):
    import shutil

    from uniret.index.sparse import SparseIndex

    _, path, _ = built

    def damaged(name, how):
        bad = tmp_path / name.replace("/", "_")
        shutil.copytree(path, bad)
        how(bad / name)
        return bad

    bad = damaged("vectors/values.npy", lambda p: p.write_bytes(p.read_bytes()[:90]))
    with pytest.raises(IndexMismatchError, match=r"values\.npy: corrupt"):
        SparseIndex.load(bad, encoder=splade)
    bad = damaged("vectors/docids.json", lambda p: p.unlink())
    with pytest.raises(IndexMismatchError, match=r"docids\.json: missing"):
        SparseIndex.load(bad, encoder=splade)
    bad = damaged("vectors/indices.npy", lambda p: np.save(p, np.load(p)[:-1]))
    with pytest.raises(IndexMismatchError, match="inconsistent"):
        SparseIndex.load(bad, encoder=splade)
    bad = damaged("engine/pisa/inv.docs", lambda p: p.unlink())
    with pytest.raises(IndexMismatchError, match=r"inv\.docs: missing"):
        SparseIndex.load(bad, encoder=splade)
    bad = damaged("engine/pisa", lambda p: shutil.rmtree(p))
    with pytest.raises(IndexMismatchError, match="missing"):
        SparseIndex.load(bad, encoder=splade)


def test_failed_save_leaves_no_half_index(built, tmp_path, monkeypatch):
    index, _, _ = built

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(np, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        index.save(tmp_path / "idx")
    assert not (tmp_path / "idx").exists()


def test_unknown_engine_fails_before_encoding():
    from uniret.commands import RetrieverConfig, build_backend

    with pytest.raises(ValueError, match="unknown sparse engine 'faiss'; expected auto or one of"):
        build_backend(RetrieverConfig(kind="sparse", engine="faiss", device="cpu"))


# -- CLI end to end ---------------------------------------------------------------------------------------

def test_cli_index_search_eval(tmp_path, scifact, capsys):
    from uniret.cli import main
    from uniret.data import save_beir

    small = save_beir(scifact.sample(num_queries=6, num_docs=40, seed=5), tmp_path / "data")
    assert main(["-q", "index", "--data", str(small), "--retriever", "sparse", "--max-length", "64",
                 "--device", "cpu", "--query-scale", "20", "--output", str(tmp_path / "idx")]) == 0
    settings = json.loads((tmp_path / "idx" / "manifest.json").read_text())["settings"]
    assert settings["engine"] == "pisa" and settings["query_scale"] == 20
    capsys.readouterr()
    assert main(["-q", "search", "--index", str(tmp_path / "idx"), "--query", "vitamin D deficiency", "-k", "3",
                 "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 6 and lines[0].split()[0] == "1" and lines[1].strip().startswith("matched: ")
    assert main(["-q", "eval", "--data", str(small), "--retriever", "sparse", "--model", "splade-tiny",
                 "--max-length", "64", "--device", "cpu", "--output-dir", str(tmp_path / "ev")]) == 0
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert report["retriever"]["kind"] == "sparse" and report["metrics"]["ndcg@10"] > 0.3



def test_cli_top_k_and_threshold_prune_and_travel_with_the_index(tmp_path, scifact, capsys):
    """``--top-k`` / ``--threshold`` prune every document and query vector of splade-tiny at inference; the index
    records them, and opening it for search (no encoder given) encodes queries with the same pruning."""
    from uniret.cli import main
    from uniret.data import save_beir
    from uniret.index.sparse import SparseIndex

    small = save_beir(scifact.sample(num_queries=4, num_docs=30, seed=3), tmp_path / "data")
    assert main(["-q", "index", "--data", str(small), "--retriever", "sparse", "--max-length", "64",
                 "--device", "cpu", "--top-k", "16", "--threshold", "0.3", "--output", str(tmp_path / "idx")]) == 0
    encoder = json.loads((tmp_path / "idx" / "manifest.json").read_text())["encoder"]
    assert encoder["top_k"] == 16 and encoder["threshold"] == 0.3
    index = SparseIndex.load(tmp_path / "idx", device="cpu")
    assert index.encoder.model.top_k == 16 and index.encoder.model.threshold == 0.3
    assert 0 < index.sparsity()["mean_nnz_per_doc"] <= 16
    query = index.encoder.encode_queries(["vitamin D deficiency and bone loss in elderly patients"])
    assert 0 < query.data.size <= 16 and query.data.min() > 0.3
    capsys.readouterr()
    assert main(["-q", "search", "--index", str(tmp_path / "idx"), "--query", "vitamin D", "-k", "2",
                 "--device", "cpu"]) == 0
    assert capsys.readouterr().out.strip()
    with pytest.raises(SystemExit):
        main(["-q", "index", "--data", str(small), "--retriever", "sparse", "--top-k", "0",
              "--output", str(tmp_path / "bad")])
    assert "expected a finite number >= 0, got -1" in _cli_error(main, ["-q", "index", "--data", str(small),
                                                                     "--retriever", "sparse", "--threshold", "-1",
                                                                     "--output", str(tmp_path / "bad")], capsys)
    capsys.readouterr()
    assert main(["-q", "index", "--data", str(small), "--retriever", "bm25", "--top-k", "8",
                 "--output", str(tmp_path / "bad")]) == 2  # a sparse-only option is refused, not ignored
    assert "--top-k applies to --retriever sparse only, not --retriever bm25" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def _cli_error(main, argv, capsys) -> str:  # type: ignore[no-untyped-def]
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(argv)
    return capsys.readouterr().err


class _WordCounts:
    """A deterministic sparse encoder over a fixed small vocabulary (word counts), for block-streaming checks."""

    vocabulary = [f"w{i}" for i in range(64)]
    identity = {"type": "test", "name": "word-counts", "hash": "wc-1", "similarity": "dot"}

    def __init__(self) -> None:
        self.calls = 0

    def _encode(self, texts):
        self.calls += 1
        indptr, indices, data = [0], [], []
        for t in texts:
            counts = {}
            for w in t.lower().split():
                j = sum(map(ord, w)) % 64
                counts[j] = counts.get(j, 0) + 1
            for j in sorted(counts):
                indices.append(j)
                data.append(float(counts[j]))
            indptr.append(len(indices))
        return SparseVectors(np.array(indptr, np.int64), np.array(indices, np.int32), np.array(data, np.float32),
                             self.vocabulary)

    encode_queries = _encode
    encode_documents = _encode


def test_index_streams_the_corpus_in_blocks(scifact, monkeypatch):
    """Without the vector cache the corpus is encoded block by block; the index equals a one-block build."""
    from uniret.index import sparse

    data = scifact.sample(num_queries=5, num_docs=50, split="test")
    whole = sparse.SparseIndex(_WordCounts(), "pisa")
    whole.index(data.corpus)
    monkeypatch.setattr(sparse, "ENCODE_BLOCK", 7)
    encoder = _WordCounts()
    streamed = sparse.SparseIndex(encoder, "pisa")
    streamed.index(data.corpus)
    assert encoder.calls == 8  # 50 documents in blocks of 7
    (ids_a, a), (ids_b, b) = whole.stored_vectors(), streamed.stored_vectors()
    assert ids_a == ids_b == data.corpus.ids
    for name in ("indptr", "indices", "values"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    queries = dict(list(data.split_queries("test").items()))
    assert whole.search(queries, k=10) == streamed.search(queries, k=10)
