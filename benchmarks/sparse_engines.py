"""The sparse family's engines on SciFact: SPLADE-tiny zero-shot through uniret's pipeline, then the same
quantised vectors served by each engine.

1. Effectiveness: ``SparseIndex`` (sparse_encoder of ``RetrieverConfig(kind="sparse")``: SPLADE-tiny, max length
   256, quantised x100) over the full SciFact corpus, the 300 test queries, top 1000: nDCG@10 (reference 0.6436),
   mean non-zero weights per document and per query (quantised; and before quantisation).
2. Speed at identical top-10: the same quantised document and query vectors in PISA (the default exact engine),
   Lucene (uniret's ``lucene`` engine: Anserini's SimpleImpactSearcher), Seismic (approximate) and pyserini's own
   ``LuceneImpactSearcher`` on the same Lucene index (its ``search`` per query and its ``batch_search``; the
   speed-up is against the faster of the two); queries/s, one thread each, queries already encoded, after
   a warm-up pass; top-10 agreement of each engine with the brute-force integer dot product (ties-aware), and
   Seismic's recall@10 against it. Then, for each ``--query-scales`` value (default 20), the same with the
   queries quantised at that scale (``SparseIndex(query_scale=...)``, ``--query-scale``; documents stay x100):
   PISA, uniret's Lucene engine and pyserini on the coarser queries, and PISA's top-10 agreement with x100.
3. BM25 on PISA: Lucene's analysed tokens (Anserini's default English analyzer) indexed into PISA with its BM25
   scorer (k1 0.9, b 0.4); nDCG@10 against uniret's Lucene BM25 (0.6789), top-10 agreement with Lucene, and
   queries/s against bm25s (one thread each, all 1,109 SciFact queries, analysis included, top 10).

Encoded vectors are cached under ``$UNIRET_CACHE/sparse-vectors`` (encoding the corpus takes ~400 s on 2 free
cores), so reruns are cheap.

    python benchmarks/sparse_engines.py --repeat 3
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from _common import save_result
from uniret.cli import positive_int
from uniret.data import load_beir
from uniret.eval.metrics import evaluate
from uniret.families import RetrieverConfig
from uniret.index.builders import sparse_encoder
from uniret.index.sparse import SparseIndex, encode_cached, quantise
from uniret.index.sparse_engines import (
    LuceneImpactEngine,
    PisaEngine,
    SeismicEngine,
    default_threads,
    escape_terms,
    write_pisa_collection,
)

IMPACT_SCALE = 1000
"""BM25 term weights as PISA impacts: weight x 1000, rounded (at least 1)."""


def timed(fn, n: int, repeat: int):
    out = fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeat):
        out = fn()
    return n * repeat / (time.perf_counter() - start), out


def brute_force(docs, queries: list[dict[int, int]], vocab_size: int) -> list[dict[int, int]]:
    import scipy.sparse as sp

    d = sp.csr_matrix((docs.values.astype(np.int64), docs.indices, docs.indptr), shape=(len(docs), vocab_size))
    out = []
    for q in queries:
        vec = np.zeros(vocab_size, dtype=np.int64)
        vec[list(q)] = list(q.values())
        scores = d @ vec
        out.append({int(r): int(scores[r]) for r in np.nonzero(scores)[0]})
    return out


def correct_top_k(hits: list[tuple[int, int]], exact: dict[int, int], k: int) -> bool:
    """``hits`` is a correct top-k: the exact top-k scores, each document's exact score, and every document
    strictly above the k-th score present (the order inside a tie is free)."""
    want = sorted(exact.values(), reverse=True)[:k]
    if [s for _, s in hits] != want or any(exact.get(r) != s for r, s in hits):
        return False
    return len(want) < k or {r for r, s in exact.items() if s > want[-1]} <= {r for r, _ in hits}


def recall_at_k(hits: list[tuple[int, int]], exact: dict[int, int], k: int) -> float:
    """Share of the top-k slots an approximate engine fills with a document scoring at least the exact k-th."""
    want = sorted(exact.values(), reverse=True)[:k]
    if not want:
        return 1.0
    return sum(1 for r, _ in hits if exact.get(r, 0) >= want[-1]) / len(want)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default="scifact")
    ap.add_argument("--repeat", type=int, default=3, help="timed passes over the queries (after one warm-up)")
    ap.add_argument("--skip-bm25", action="store_true")
    ap.add_argument("--query-scales", type=int, nargs="*", default=[20],
                    help="also serve the queries quantised at these scales (documents stay x100)")
    ap.add_argument("--threads", type=positive_int, default=None,
                    help="also time every exact engine and pyserini's batch_search with this many threads (default: "
                         "the usable cores; 1: skip)")
    ap.add_argument("--sample", type=int, nargs=2, metavar=("QUERIES", "DOCS"), default=None,
                    help="a dry run on a sample (the results file is then named sparse_engines_sample)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    ds = load_beir(args.data)
    if args.sample:
        ds = ds.sample(num_queries=args.sample[0], num_docs=args.sample[1], split="test")
    queries = ds.split_queries("test")
    qids = list(queries)
    qrels = ds.qrels("test").judgements
    result: dict = {"data": args.data, "queries": len(qids), "repeat": args.repeat, "sample": args.sample}

    # -- 1. the pipeline: SPLADE-tiny zero-shot ----------------------------------------------------------------
    cfg = RetrieverConfig(kind="sparse", device="cpu", cache_embeddings=True)
    encoder = sparse_encoder(cfg)
    start = time.perf_counter()
    index = SparseIndex(encoder, "pisa", cache_embeddings=True)
    index.index(ds.corpus)
    index_s = time.perf_counter() - start
    start = time.perf_counter()
    run = index.search(queries, k=1000)
    search_s = time.perf_counter() - start
    ndcg = evaluate(qrels, run, ["ndcg@10", "recall@100"])
    raw_docs = encode_cached(encoder, [d.full_text() for d in ds.corpus], "documents", cache=True)
    raw_queries = encoder.encode_queries([queries[q] for q in qids])
    ids, docs = index.stored_vectors()
    qv = quantise(raw_queries)
    qvecs = qv.as_queries()
    result["effectiveness"] = {
        "model": "splade-tiny", "max_length": encoder.max_length, "pooling": encoder.pooling, "scale": index.scale,
        "ndcg@10": ndcg["ndcg@10"], "recall@100": ndcg["recall@100"], "reference_ndcg@10": 0.6436,
        "docs": len(ids), "index_seconds_with_cached_vectors": index_s, "search_seconds_incl_query_encoding": search_s,
        "mean_nnz_per_doc": float(np.mean(np.diff(docs.indptr))),
        "mean_nnz_per_query": float(np.mean(np.diff(qv.indptr))),
        "mean_nnz_per_doc_unquantised": float(np.mean(np.diff(raw_docs.indptr))),
        "mean_nnz_per_query_unquantised": float(np.mean(np.diff(raw_queries.indptr))),
        "empty_docs": int(np.sum(np.diff(docs.indptr) == 0)),
    }
    print(result["effectiveness"], flush=True)

    # -- 2. engines on identical quantised vectors -----------------------------------------------------------------
    vocabulary = encoder.vocabulary
    terms = escape_terms(vocabulary)
    exact = brute_force(docs, qvecs, len(vocabulary))
    work = Path(tempfile.mkdtemp(prefix="sparse-engines-"))
    engines, build_s = {}, {}
    for cls in (PisaEngine, LuceneImpactEngine, SeismicEngine):
        start = time.perf_counter()
        cls.build(work / cls.name, ids, docs, terms, threads=2)
        engines[cls.name] = cls.open(work / cls.name, ids, terms)
        build_s[cls.name] = time.perf_counter() - start

    from uniret.index.java import ensure_jvm

    ensure_jvm()
    from pyserini.search.lucene import LuceneImpactSearcher

    class Encoded:  # a pyserini query encoder handing over our quantised query as {term: weight}
        def encode(self, q):
            return q

    pyserini = LuceneImpactSearcher(str(work / "lucene"), Encoded(), min_idf=-1)
    row_of = {d: i for i, d in enumerate(ids)}

    def pyserini_search(qs: list, k: int) -> list[list[tuple[int, int]]]:
        term_queries = [{terms[t]: w for t, w in q.items()} for q in qs]
        return [[(row_of[h.docid], round(h.score)) for h in pyserini.search(q, k=k)] for q in term_queries]

    def pyserini_batch(qs: list, k: int, threads: int = 1) -> list[list[tuple[int, int]]]:
        term_queries = [{terms[t]: w for t, w in q.items()} for q in qs]
        qnums = [str(i) for i in range(len(term_queries))]
        found = pyserini.batch_search(term_queries, qnums, k=k, threads=threads)
        return [[(row_of[h.docid], round(h.score)) for h in found[i]] for i in qnums]

    def measure(searchers: dict, qs: list, exact: list) -> dict:
        """Queries/s, exactness and nDCG@10 of each searcher on the quantised queries ``qs``; speed-ups against
        the faster of pyserini's two modes on the same queries."""
        out: dict = {}
        for name, fn in searchers.items():
            qps, hits = timed(lambda fn=fn: fn(qs, k), len(qs), args.repeat)
            agree = [correct_top_k(h, e, k) for h, e in zip(hits, exact, strict=True)]
            out[name] = {
                "qps": qps, "exact_top10_share": float(np.mean(agree)),
                "recall@10_vs_exact": float(np.mean([recall_at_k(h, e, k) for h, e in zip(hits, exact, strict=True)])),
                "ndcg@10": evaluate(qrels, {q: {ids[r]: s for r, s in h} for q, h in zip(qids, hits, strict=True)},
                                    ["ndcg@10"])["ndcg@10"],
                "build_seconds": build_s.get(name),
            }
            print(name, out[name], flush=True)
        base = max(out["pyserini_impact_searcher"]["qps"], out["pyserini_impact_searcher_batch"]["qps"])
        for name in out:
            out[name]["speedup_vs_pyserini"] = out[name]["qps"] / base
        return out

    for algorithm in ("maxscore", "block_max_wand", "block_max_maxscore"):  # PISA's other exact algorithms, same files
        engines[f"pisa_{algorithm}"] = PisaEngine.open(work / "pisa", ids, algorithm=algorithm)
    k = 10
    pyserini_modes = {"pyserini_impact_searcher": pyserini_search, "pyserini_impact_searcher_batch": pyserini_batch}
    searchers = {**{n: (lambda qs, k, n=n: engines[n].search(qs, k)) for n in engines}, **pyserini_modes}
    result["engines"] = measure(searchers, qvecs, exact)
    # the same documents with the queries quantised coarser (SparseIndex(query_scale=...), `--query-scale`):
    # PISA's binding passes a term of weight w as w copies, so its cost falls with the query weights' sum
    result["query_scales"] = {}
    reference = [set(ids[r] for r, _ in h) for h in engines["pisa"].search(qvecs, k)]
    for scale in args.query_scales:
        coarse = quantise(raw_queries, scale).as_queries()
        rows = measure({"pisa": searchers["pisa"], "lucene": searchers["lucene"], **pyserini_modes}, coarse,
                       brute_force(docs, coarse, len(vocabulary)))
        rows["pisa"]["same_top10_set_as_query_scale_100"] = float(np.mean(
            [set(ids[r] for r, _ in h) == ref for h, ref in zip(engines["pisa"].search(coarse, k), reference,
                                                                 strict=True)]))
        rows["sum_of_query_weights"] = float(np.mean([sum(q.values()) for q in coarse]))
        result["query_scales"][str(scale)] = rows
    threads = args.threads or default_threads()
    if threads > 1:  # all cores: each engine as the sparse index searches a batch (SparseIndex(threads=...))
        rows = measure({**{n: (lambda qs, k, n=n: engines[n].search(qs, k, threads=threads))
                           for n in ("pisa", "pisa_maxscore", "lucene", "seismic")},
                        **pyserini_modes,
                        "pyserini_impact_searcher_batch_threads": lambda qs, k: pyserini_batch(qs, k, threads)},
                       qvecs, exact)
        for name in rows:
            rows[name]["speedup_vs_pyserini_threads"] = (
                rows[name]["qps"] / rows["pyserini_impact_searcher_batch_threads"]["qps"])
        pisa_algorithm, pisa_threads = engines["pisa"].plan(threads, len(qvecs))
        result["threads"] = {"threads": threads, "pisa_threads_used": pisa_threads, "pisa_algorithm": pisa_algorithm,
                             "engines": rows}
    result["engine_settings"] = {"k": k, "threads": 1, "pisa": {"algorithm": engines["pisa"].algorithm},
                                 "seismic": {"query_cut": engines["seismic"].query_cut,
                                             "heap_factor": engines["seismic"].heap_factor}}

    # -- 3. BM25 on PISA with Lucene's analysis -------------------------------------------------------------------
    if not args.skip_bm25:
        result["bm25_on_pisa"] = bm25_on_pisa(ds, work, args.repeat)
        print(result["bm25_on_pisa"], flush=True)
    name = "sparse_engines_sample" if args.sample else "sparse_engines"
    shutil.rmtree(work, ignore_errors=True)
    print(f"written to {save_result(name, result, results_dir=Path(tempfile.gettempdir()) if args.sample else None)}")


def bm25_on_pisa(ds, work: Path, repeat: int) -> dict:
    from jnius import autoclass

    from uniret.index.lucene import LuceneBM25Index

    analyzer = autoclass("io.anserini.analysis.DefaultEnglishAnalyzer").newDefaultInstance()
    analyze = autoclass("io.anserini.analysis.AnalyzerUtils").analyze

    def tokens(text: str) -> list[str]:
        return list(analyze(analyzer, text).toArray())

    lexicon: dict[str, int] = {}
    indptr, indices, values = [0], [], []
    docs = list(ds.corpus)
    for d in docs:
        counts = Counter(tokens(d.full_text()))
        for t, c in sorted(counts.items()):
            indices.append(lexicon.setdefault(t, len(lexicon)))
            values.append(c)
        indptr.append(len(indices))
    ids = [d.id for d in docs]
    names = [str(i) for i in range(len(lexicon))]
    indptr_a, indices_a, tf = np.array(indptr), np.array(indices), np.array(values)
    write_pisa_collection(work / "pisa-bm25", ids, indptr_a, indices_a, tf, names)
    native = PisaEngine.open(work / "pisa-bm25", ids, scorer="bm25", bm25_k1=0.9, bm25_b=0.4)
    # Lucene's BM25 as precomputed impacts: idf = ln(1 + (N - df + 0.5) / (df + 0.5)), tf / (tf + k1 (1 - b + b
    # dl / avgdl)) with Lucene's lossy one-byte length norm, x IMPACT_SCALE, rounded; served by PISA's dot product
    small_float = autoclass("org.apache.lucene.util.SmallFloat")
    lengths = np.bincount(np.repeat(np.arange(len(docs)), np.diff(indptr_a)), weights=tf, minlength=len(docs))
    lossy = np.array([small_float.byte4ToInt(small_float.intToByte4(int(n))) for n in lengths], dtype=np.float64)
    n_docs, avgdl = len(docs), float(tf.sum()) / len(docs)
    df = np.bincount(indices_a, minlength=len(lexicon))
    idf = np.log(1 + (n_docs - df + 0.5) / (df + 0.5))
    rows = np.repeat(np.arange(n_docs), np.diff(indptr_a))
    weight = idf[indices_a] * tf / (tf + 0.9 * (1 - 0.4 + 0.4 * lossy[rows] / avgdl))
    impacts = np.maximum(np.rint(weight * IMPACT_SCALE), 1).astype(np.int64)
    write_pisa_collection(work / "pisa-bm25-impacts", ids, indptr_a, indices_a, impacts, names)
    impact = PisaEngine.open(work / "pisa-bm25-impacts", ids)

    all_queries = dict(ds.queries)
    qids = list(all_queries)
    qrels = ds.qrels("test").judgements

    def pisa_search(k: int, pisa=native) -> dict:
        qs = [{str(lexicon[t]): float(c) for t, c in Counter(tokens(all_queries[q])).items() if t in lexicon}
              for q in qids]
        hits = pisa.search_text_scores(qs, k)
        return {q: dict(h) for q, h in zip(qids, hits, strict=True)}

    lucene = LuceneBM25Index(threads=2)
    lucene.index(ds.corpus)

    import bm25s

    try:
        import Stemmer

        stemmer = Stemmer.Stemmer("english")
    except ImportError:
        stemmer = None
    retriever = bm25s.BM25(k1=0.9, b=0.4)
    retriever.index(bm25s.tokenize([d.full_text() for d in docs], stopwords="en", stemmer=stemmer,
                                   show_progress=False), show_progress=False)

    def bm25s_search(k: int) -> dict:
        qtok = bm25s.tokenize([all_queries[q] for q in qids], stopwords="en", stemmer=stemmer, show_progress=False)
        idx, scores = retriever.retrieve(qtok, k=k, show_progress=False, n_threads=1)
        return {q: {docs[i].id: float(s) for i, s in zip(idx[n], scores[n], strict=True)} for n, q in enumerate(qids)}

    def ndcg(run: dict) -> float:
        return evaluate(qrels, {q: run.get(q, {}) for q in qrels}, ["ndcg@10"])["ndcg@10"]

    out: dict = {"queries": len(qids), "k": 10, "threads": 1, "impact_scale": IMPACT_SCALE,
                 "analysis": "Anserini DefaultEnglishAnalyzer tokens (Porter, Lucene English stop words) into PISA"}
    bm25s_qps, bm25s_run = timed(lambda: bm25s_search(10), len(qids), repeat)
    lucene_qps, lucene_run = timed(lambda: lucene.search(all_queries, k=10), len(qids), repeat)
    lucene_1000 = lucene.search(all_queries, k=1000)
    out.update({"bm25s_qps": bm25s_qps, "lucene_qps": lucene_qps, "bm25s_ndcg@10": ndcg(bm25s_run),
                "lucene_ndcg@10": ndcg(lucene_1000)})
    for name, engine in (("pisa_bm25_scorer", native), ("pisa_lucene_impacts", impact)):
        qps, run = timed(lambda engine=engine: pisa_search(10, engine), len(qids), repeat)
        run_1000 = pisa_search(1000, engine)
        same = sum(set(run.get(q, {})) == set(lucene_run.get(q, {})) for q in qids)
        out[name] = {"qps": qps, "ratio_over_bm25s": qps / bm25s_qps, "ndcg@10": ndcg(run_1000),
                     "ndcg_gap_vs_lucene": ndcg(run_1000) - out["lucene_ndcg@10"],
                     "same_top10_set_as_lucene_share": same / len(qids)}
    return out


if __name__ == "__main__":
    main()
