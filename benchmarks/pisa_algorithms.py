"""Which PISA query algorithm serves SPLADE vectors fastest, by corpus size (issue 8)?

PISA answers the same exact top-k with several algorithms. Dynamic pruning (MaxScore, block-max WAND) skips
documents that cannot enter the top k, which pays on long posting lists; term-at-a-time over a flat
accumulator (``ranked_or_taat``) touches every posting but with no per-document bookkeeping, which pays when
the posting lists are short. Where the two cross depends on the corpus size, so this script measures it.

Vectors: SPLADE-tiny (zero-shot, through uniret's ``sparse`` family and its quantisation, weights x100) on
SciFact's 5,183 documents and 300 test queries. Larger corpora are the same documents repeated, each copy's
weights jittered by a seeded +-10% so that copies do not tie: posting lists grow with the corpus as they would
for more documents of the same kind, and the queries stay real SPLADE queries (about 52 terms). Every
algorithm's top-10 scores are checked against MaxScore's, query by query.

A query's weights cost too: pyterrier-pisa passes a query term of integer weight w as w repetitions of the
term, so a query at x100 (weights summing to thousands) is a long list for PISA to count back into weights
before it reads a posting. ``--query-scales`` serves the SciFact documents (x100) with the queries quantised at
each scale, and reports q/s, the top-10 against the first scale and nDCG@10.

    python benchmarks/pisa_algorithms.py [--sizes 5183,50000,200000] [--repeat 3] [--algorithms maxscore,ranked_or_taat]
                                       [--query-scales 100,50,20,10] [--threads N]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import BenchmarkRun
from uniret.cli import positive_int

ALGORITHMS = ("maxscore", "ranked_or_taat", "block_max_maxscore", "block_max_wand")
ENCODINGS = ("block_streamvbyte", "block_simdbp", "block_varintg8iu", "block_simple8b", "block_varintgb",
             "block_maskedvbyte", "block_optpfor", "block_simple16", "block_qmx", "block_interpolative", "ef",
             "single", "pefuniform", "pefopt")  # every posting-list codec the pyterrier-pisa wheel is built with
logger = logging.getLogger("pisa_algorithms")


def replicate(docs, size: int, seed: int = 0):
    """``size`` rows: the rows of ``docs`` repeated, every copy after the first with weights x U(0.9, 1.1)."""
    from uniret.index.sparse import ImpactVectors

    n = len(docs.indptr) - 1
    rng = np.random.default_rng(seed)
    rows = np.arange(size) % n
    lengths = np.diff(docs.indptr)[rows]
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    indices = np.concatenate([docs.indices[docs.indptr[r]:docs.indptr[r + 1]] for r in rows])
    values = np.concatenate([docs.values[docs.indptr[r]:docs.indptr[r + 1]] for r in rows]).astype(np.float64)
    copy = np.repeat(np.arange(size) >= n, lengths)
    values[copy] *= rng.uniform(0.9, 1.1, size=int(copy.sum()))
    return ImpactVectors(indptr, indices, np.maximum(1, np.rint(values)).astype(docs.values.dtype))


def interleaved_seconds(runs: dict, k: int, repeat: int) -> dict:
    """Seconds each ``key -> (engine, queries)`` spent searching, in ``repeat`` rounds of one pass of every key
    (interleaved, so that a slow spell of the machine falls on all of them)."""
    seconds = dict.fromkeys(runs, 0.0)
    for _ in range(repeat):
        for key, (engine, queries) in runs.items():
            start = time.perf_counter()
            engine.search(queries, k)
            seconds[key] += time.perf_counter() - start
    return seconds


def compare_threads(folder: Path, ids: list[str], qvecs: list, k: int, repeat: int, threads: int) -> dict:
    """Term-at-a-time and MaxScore with ``threads`` TBB workers: q/s, and the share of queries answered as with
    one thread. uniret answers term-at-a-time with one thread whatever is asked (``PisaEngine.plan``): the
    binding's term-at-a-time query function holds one accumulator that its threads share. Here that guard is
    lifted, to measure what it guards against."""
    from uniret.index.sparse_engines import PisaEngine

    out: dict = {"threads": threads, "qps": {}, "same_answer_as_one_thread": {}}
    for algorithm in ("maxscore", "ranked_or_taat"):
        engine = PisaEngine.open(folder, ids, algorithm=algorithm)
        one = engine.search(qvecs, k)
        engine.plan = lambda asked, num_queries, a=algorithm: (a, max(1, min(asked, num_queries)))  # guard lifted
        several = engine.search(qvecs, k, threads=threads)  # warm-up, and the answers compared
        out["same_answer_as_one_thread"][algorithm] = float(np.mean([a == b for a, b in zip(several, one,
                                                                                            strict=True)]))
        start = time.perf_counter()
        for _ in range(repeat):
            engine.search(qvecs, k, threads=threads)
        out["qps"][algorithm] = len(qvecs) * repeat / (time.perf_counter() - start)
        logger.info("%d docs, %s, %d threads: %.0f q/s, %.1f%% answered as with one thread", len(ids), algorithm,
                    threads, out["qps"][algorithm], 100 * out["same_answer_as_one_thread"][algorithm])
    return out


def compare_encodings(docs, qvecs, size: int, encodings: list[str], k: int, repeat: int) -> dict:
    """q/s of each posting-list codec under the default algorithm, timed in interleaved rounds (one pass of
    every codec per round), with each index's size on disk."""
    from uniret.index.sparse_engines import PisaEngine, pisa_algorithm

    vectors = replicate(docs, size)
    ids = [f"d{i}" for i in range(size)]
    work = Path(tempfile.mkdtemp(prefix="pisa-codec-"))
    try:
        engines, sizes = {}, {}
        for codec in encodings:
            PisaEngine.build(work / codec, ids, vectors, [], encoding=codec)
            engines[codec] = PisaEngine.open(work / codec, ids)
            engines[codec].search(qvecs, k)  # warm-up
            sizes[codec] = sum(p.stat().st_size for p in (work / codec).glob(f"*.{codec}"))
        seconds = interleaved_seconds({c: (e, qvecs) for c, e in engines.items()}, k, repeat)
        out = {"docs": size, "algorithm": pisa_algorithm("auto", size),
               "qps": {c: len(qvecs) * repeat / seconds[c] for c in encodings},
               "index_bytes": sizes}
        logger.info("codecs at %d docs: %s", size, {c: round(v) for c, v in out["qps"].items()})
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def compare_query_scales(docs, raw_queries, qrels: dict, doc_ids: list[str], qids: list[str], scales: list[float],
                         k: int, repeat: int) -> dict:
    """What a query's weights cost PISA: pyterrier-pisa hands PISA a query term of integer weight w as w
    repetitions of the term (PISA counts them back into a weight), so a query costs O(sum of its weights)
    before a posting is read. The same documents (x100) searched with the queries quantised at each scale,
    default algorithm, interleaved rounds; each scale's top-10 is compared with the first scale's (same
    document set, order within ties free) and scored on the qrels."""
    from uniret.eval.metrics import evaluate
    from uniret.index.sparse import SCALE, quantise
    from uniret.index.sparse_engines import PisaEngine

    work = Path(tempfile.mkdtemp(prefix="pisa-qscale-"))
    try:
        PisaEngine.build(work / "pisa", doc_ids, docs, [])
        engine = PisaEngine.open(work / "pisa", doc_ids)
        per_scale = {}
        for scale in scales:
            per_scale[scale] = quantise(raw_queries, scale).as_queries()
            engine.search(per_scale[scale], k)  # warm-up
        seconds = interleaved_seconds({s: (engine, q) for s, q in per_scale.items()}, k, repeat)
        hits_of = {scale: engine.search(qvecs, k) for scale, qvecs in per_scale.items()}
        reference = [{r for r, _ in h} for h in hits_of[scales[0]]]
        rows = []
        for scale, qvecs in per_scale.items():
            hits = hits_of[scale]
            run = {q: {doc_ids[r]: float(s) for r, s in h} for q, h in zip(qids, hits, strict=True)}
            rows.append({"query_scale": scale, "qps": len(qvecs) * repeat / seconds[scale],
                         "mean_query_weight_sum": float(np.mean([sum(q.values()) for q in qvecs])),
                         "mean_terms_per_query": float(np.mean([len(q) for q in qvecs])),
                         "same_top10_set_as_first_scale": float(np.mean(
                             [{r for r, _ in h} == ref for h, ref in zip(hits, reference, strict=True)])),
                         "ndcg@10": evaluate(qrels, run, ["ndcg@10"])["ndcg@10"]})
            logger.info("query scale %s: %.0f q/s, nDCG@10 %.4f", scale, rows[-1]["qps"], rows[-1]["ndcg@10"])
        return {"docs": len(doc_ids), "document_scale": SCALE, "algorithm": engine.algorithm, "rows": rows}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="5183,50000,100000,200000")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--algorithms", default=",".join(ALGORITHMS), help="comma-separated; maxscore and "
                    "ranked_or_taat always run (maxscore first: the reference)")
    ap.add_argument("--encodings", default=",".join(ENCODINGS),
                    help="posting-list codecs compared with the default algorithm on the first size (default: "
                         "every codec of the pyterrier-pisa wheel)")
    ap.add_argument("--threads", type=positive_int, default=None,
                    help="also time MaxScore and term-at-a-time with this many threads (default: the usable "
                         "cores; 1: skip)")
    ap.add_argument("--query-scales", default="100,50,20,10",
                    help="query quantisation scales compared on SciFact's documents (x100); the first is the "
                         "reference, as the engines serve it")
    ap.add_argument("--results-dir", default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from uniret.index.sparse_engines import default_threads

    args.threads = args.threads or default_threads()
    from uniret.data import load_beir
    from uniret.families import RetrieverConfig
    from uniret.index.builders import sparse_encoder
    from uniret.index.sparse import encode_cached, quantise
    from uniret.index.sparse_engines import PISA_ENCODING, PisaEngine

    bench = BenchmarkRun("pisa_algorithms", results_dir=args.results_dir)
    ds = load_beir("scifact")
    queries = ds.split_queries("test")
    encoder = sparse_encoder(RetrieverConfig(kind="sparse", device="cpu", cache_embeddings=True))
    docs = quantise(encode_cached(encoder, [d.full_text() for d in ds.corpus], "documents", cache=True))
    raw_queries = encoder.encode_queries(list(queries.values()))
    qv = quantise(raw_queries)
    qvecs = qv.as_queries()
    wanted = [a.strip() for a in args.algorithms.split(",") if a.strip()]
    algorithms = ["maxscore", "ranked_or_taat"] + [a for a in wanted if a not in ("maxscore", "ranked_or_taat")]
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        vectors = replicate(docs, size)
        ids = [f"d{i}" for i in range(size)]
        work = Path(tempfile.mkdtemp(prefix="pisa-alg-"))
        try:
            start = time.perf_counter()
            PisaEngine.build(work / "pisa", ids, vectors, [])
            build_s = time.perf_counter() - start
            df = np.bincount(vectors.indices, minlength=int(vectors.indices.max()) + 1)
            row = {"docs": size, "build_seconds": build_s,
                   "postings_per_query": float(np.mean([df[list(q)].sum() for q in qvecs])), "qps": {},
                   "same_top10_scores_as_maxscore": {}}
            reference = None
            for algorithm in algorithms:
                engine = PisaEngine.open(work / "pisa", ids, algorithm=algorithm)
                hits = engine.search(qvecs, args.k)  # warm-up, and the answer checked
                scores = [sorted((s for _, s in h), reverse=True) for h in hits]
                reference = reference or scores
                row["same_top10_scores_as_maxscore"][algorithm] = float(np.mean(
                    [a == b for a, b in zip(scores, reference, strict=True)]))
                start = time.perf_counter()
                for _ in range(args.repeat):
                    engine.search(qvecs, args.k)
                row["qps"][algorithm] = len(qvecs) * args.repeat / (time.perf_counter() - start)
                logger.info("%d docs, %s: %.0f q/s", size, algorithm, row["qps"][algorithm])
            if args.threads > 1:
                row["threads"] = compare_threads(work / "pisa", ids, qvecs, args.k, args.repeat, args.threads)
            rows.append(row)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    codecs = compare_encodings(docs, qvecs, int(args.sizes.split(",")[0]), args.encodings.split(","), args.k,
                               args.repeat)
    scales = [float(x) for x in args.query_scales.split(",")]
    query_scales = compare_query_scales(docs, raw_queries, ds.qrels("test").judgements,
                                        [d.id for d in ds.corpus], list(queries), scales, args.k, args.repeat)
    path = bench.save({"data": "scifact (documents repeated with jittered weights beyond 5,183)",
                       "model": "splade-tiny", "queries": len(qvecs), "k": args.k, "threads": 1,
                       "repeat": args.repeat, "mean_terms_per_query": float(np.mean([len(q) for q in qvecs])),
                       "rows": rows, "encodings": codecs, "query_scales": query_scales,
                       "default_encoding": PISA_ENCODING})
    logger.info("-> %s", path)


if __name__ == "__main__":
    main()
