"""Cheap evaluation (MMTEB-style downsampling, issue 11): does a corpus cut down to the judged documents plus each
query's top-k hard negatives rank systems as the full corpus does?

Nine systems run on SciFact test (300 queries, 5,183 documents): BM25 at two settings, all-MiniLM-L6-v2 at 256 and
64 tokens, SPLADE-tiny, and four fusions of them. The negatives are pooled from three of them, one per family:
``bm25``, ``dense-256`` and ``splade-tiny`` (:func:`uniret.eval.cheap.downsample`, top-k of each per query). Every
system is then *re-indexed on the small corpus* (BM25 recomputes its statistics there; the dense and sparse
systems index the small corpus's documents with the same per-document vectors an encoding of it gives, read from
the full corpus's encoding, so nothing is encoded twice) and scored by nDCG@10; fusions fuse their members' runs
on the small corpus. :func:`uniret.eval.cheap.rank_agreement` compares the nine full-corpus scores with the nine
cheap ones (Spearman, Kendall tau-b). Three pools per system:

- ``pooled``: all three pooling systems (what a benchmark that pooled from these would publish);
- ``leave-one-out``: without the system itself and, for a fusion, its members (a system never judged on a pool it
  built);
- ``family-out``: without every pooling system of the same family as the system or one of its members (a new
  dense model is judged on negatives from BM25 and SPLADE only): the honest case of a new system;
- ``random``, the naive baseline: the judged documents plus random others, as many documents as ``pooled`` keeps.

    python benchmarks/cheap_eval.py [--data scifact] [--k 5 10 20 50]
"""

from __future__ import annotations

import argparse
import logging
import random
import time
from pathlib import Path
from typing import Any

import numpy as np

from _common import BenchmarkRun

logger = logging.getLogger("cheap_eval")
DEPTH = 100
METRIC = "ndcg@10"
MINILM = "all-MiniLM-L6-v2"
BASE: dict[str, dict[str, Any]] = {  # name -> RetrieverConfig fields
    "bm25": {"kind": "bm25"},
    "bm25-k1.2-b0.75": {"kind": "bm25", "k1": 1.2, "b": 0.75},
    "dense-256": {"kind": "dense", "model": MINILM, "max_length": 256},
    "dense-64": {"kind": "dense", "model": MINILM, "max_length": 64},
    "splade-tiny": {"kind": "sparse", "model": "splade-tiny"},
}
FUSED: dict[str, tuple[str, tuple[str, ...]]] = {  # name -> (uniret.index.hybrid fusion spec, members)
    "rrf(bm25, dense-256)": ("rrf", ("bm25", "dense-256")),
    "minmax:0.5(bm25, dense-256)": ("minmax:0.5", ("bm25", "dense-256")),
    "rrf(splade-tiny, dense-256)": ("rrf", ("splade-tiny", "dense-256")),
    "rrf(bm25, dense-64)": ("rrf", ("bm25", "dense-64")),
}
POOL = ("bm25", "dense-256", "splade-tiny")
VARIANTS = ("pooled", "leave-one-out", "family-out")


def components(system: str) -> tuple[str, ...]:
    return FUSED[system][1] if system in FUSED else (system,)


def pool_for(system: str, variant: str) -> tuple[str, ...]:
    """The pooling systems used to downsample the corpus on which ``system`` is scored."""
    parts = components(system)
    if variant == "pooled":
        return POOL
    if variant == "leave-one-out":
        return tuple(p for p in POOL if p not in parts)
    families = {BASE[c]["kind"] for c in parts}
    return tuple(p for p in POOL if BASE[p]["kind"] not in families)


class Systems:
    """The base systems, built once on the full corpus; :meth:`runs` searches any sub-corpus of it."""

    def __init__(self, dataset: Any, queries: dict[str, str], device: str) -> None:
        from uniret import families
        from uniret.families import RetrieverConfig
        from uniret.index.sparse import encode_cached

        self.dataset, self.queries = dataset, queries
        self.ids = dataset.corpus.ids
        self.row = {d: i for i, d in enumerate(self.ids)}
        texts = [d.full_text() for d in dataset.corpus]
        self.cfgs = {n: RetrieverConfig(**f, device=device, cache_embeddings=True) for n, f in BASE.items()}
        self.families = families
        self.doc_vectors: dict[str, Any] = {}
        self.query_vectors: dict[str, np.ndarray] = {}
        self.encoders: dict[str, Any] = {}
        for name, cfg in self.cfgs.items():
            if cfg.kind == "bm25":
                continue
            backend = families.get(cfg.kind).build_backend(cfg)
            self.encoders[name] = backend.encoder
            start = time.perf_counter()
            if cfg.kind == "dense":  # cached under $UNIRET_CACHE: encoded once for every run of this script
                self.doc_vectors[name] = backend.encoder.encode_documents(texts)
                self.query_vectors[name] = backend.encoder.encode_queries(list(queries.values()))
            else:
                self.doc_vectors[name] = encode_cached(backend.encoder, texts, "documents", cache=True)
            logger.info("%s: documents encoded (or read from the cache) in %.0f s", name, time.perf_counter() - start)

    def _sparse_rows(self, vectors: Any, rows: np.ndarray) -> Any:
        from uniret.protocols import SparseVectors

        lo, hi = vectors.indptr[rows], vectors.indptr[rows + 1]
        indptr = np.concatenate([[0], np.cumsum(hi - lo)]).astype(vectors.indptr.dtype)
        take = np.concatenate([np.arange(a, b) for a, b in zip(lo, hi, strict=True)]) if len(rows) else np.array([], int)
        return SparseVectors(indptr, vectors.indices[take], vectors.data[take], vectors.vocabulary)

    def run(self, name: str, doc_ids: list[str] | None) -> dict[str, dict[str, float]]:
        """``name`` indexed on the documents ``doc_ids`` (in corpus order; None: the whole corpus), searched."""
        from uniret.index.faiss_index import FaissIndex
        from uniret.index.sparse import SparseIndex

        cfg = self.cfgs[name]
        ids = self.ids if doc_ids is None else doc_ids
        rows = np.asarray([self.row[d] for d in ids], dtype=np.int64)
        if cfg.kind == "bm25":
            backend = self.families.get(cfg.kind).build_backend(cfg)
            backend.index(self.dataset.corpus if doc_ids is None else self.dataset.corpus.subset(doc_ids))
            return backend.search(self.queries, k=DEPTH)
        if cfg.kind == "dense":  # the builders' backends, around the encoder already loaded
            backend = FaissIndex(self.encoders[name], cfg.index_type)
            backend.add_embeddings(list(ids), self.doc_vectors[name][rows])
            return backend.search_embeddings(list(self.queries), self.query_vectors[name], DEPTH)
        backend = SparseIndex(self.encoders[name], cfg.engine)
        backend.add_vectors(list(ids), self._sparse_rows(self.doc_vectors[name], rows))
        return backend.search(self.queries, k=DEPTH)


def fuse(spec: str, runs: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """The hybrid family's fusion (``uniret.index.hybrid``: ``parse_fusion`` + ``uniret.scores.fuse_runs``)."""
    from uniret.index.hybrid import parse_fusion
    from uniret.scores import fuse_runs, top_k

    f = parse_fusion(spec)
    fused = fuse_runs(runs, f.method, f.weights_for(len(runs)), rrf_k=f.rrf_k, normalization=f.normalization)
    return {q: top_k(h, DEPTH) for q, h in fused.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="scifact")
    ap.add_argument("--split", default="test")
    ap.add_argument("--k", type=int, nargs="+", default=[5, 10, 20, 50], help="pool depths per query and run")
    ap.add_argument("--headline-k", type=int, default=10, help="the k whose per-system scores BENCHMARKS.md shows")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sample", type=int, nargs=2, metavar=("QUERIES", "DOCS"), default=None,
                    help="smoke run on a slice (BeirDataset.sample)")
    ap.add_argument("--results-dir", default=None, help="where to write cheap_eval.json (default benchmarks/results)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from uniret.data import load_beir
    from uniret.eval.cheap import pool, rank_agreement
    from uniret.eval.metrics import evaluate

    record = BenchmarkRun("cheap_eval", results_dir=args.results_dir)
    dataset = load_beir(args.data)
    if args.sample:
        dataset = dataset.sample(*args.sample, split=args.split)
    queries = dict(dataset.split_queries(args.split))
    qrels = dataset.qrels(args.split).judgements
    start = time.perf_counter()
    systems = Systems(dataset, queries, args.device)
    encode_seconds = time.perf_counter() - start

    def score(run: dict[str, dict[str, float]]) -> float:
        return float(evaluate(qrels, run, [METRIC])[METRIC])

    def system_runs(doc_ids: list[str] | None, wanted: set[str]) -> dict[str, dict[str, dict[str, float]]]:
        base = {b for s in wanted for b in components(s)}
        runs = {b: systems.run(b, doc_ids) for b in sorted(base)}
        for s in wanted:
            if s in FUSED:
                runs[s] = fuse(FUSED[s][0], [runs[m] for m in FUSED[s][1]])
        return runs

    names = [*BASE, *FUSED]
    start = time.perf_counter()
    full_runs = system_runs(None, set(names))
    full = {s: score(full_runs[s]) for s in names}
    full_seconds = time.perf_counter() - start
    logger.info("full corpus: %s", ", ".join(f"{s} {v:.4f}" for s, v in full.items()))

    by_k: dict[str, Any] = {}
    for k in args.k:
        needed: dict[tuple[str, ...], set[str]] = {}
        for s in names:
            for v in VARIANTS:
                needed.setdefault(pool_for(s, v), set()).add(s)
        subsets: dict[tuple[str, ...], dict[str, Any]] = {}
        start = time.perf_counter()
        for pooling, wanted in needed.items():
            keep, stats = pool(dataset, {p: full_runs[p] for p in pooling}, k=k, split=args.split)
            doc_ids = [d for d in systems.ids if d in keep]
            runs = system_runs(doc_ids, wanted)
            subsets[pooling] = {"documents": stats["documents"], "reduction": stats["reduction"],
                                "scores": {s: score(runs[s]) for s in wanted}}
            logger.info("k=%d pool %s: %d documents (%.1fx fewer)", k, "+".join(pooling), stats["documents"],
                        stats["reduction"])
        cheap = {v: {s: subsets[pool_for(s, v)]["scores"][s] for s in names} for v in VARIANTS}
        # the naive baseline: the judged documents plus random others, as many documents as the full pool keeps
        judged = {d for docs in qrels.values() for d in docs}
        others = sorted(set(systems.ids) - judged)
        random.Random(0).shuffle(others)
        keep = judged | set(others[:subsets[POOL]["documents"] - len(judged)])
        runs = system_runs([d for d in systems.ids if d in keep], set(names))
        cheap["random"] = {s: score(runs[s]) for s in names}
        by_k[str(k)] = {
            "documents": subsets[POOL]["documents"], "reduction": subsets[POOL]["reduction"],
            "pools": {"+".join(p): {"documents": sub["documents"], "reduction": sub["reduction"]}
                      for p, sub in subsets.items()},
            "systems": {s: {"full": full[s], **{v: cheap[v][s] for v in cheap},
                            **{f"{v}_pool": "+".join(pool_for(s, v)) for v in VARIANTS[1:]}} for s in names},
            "agreement": {v: rank_agreement(full, cheap[v]) for v in cheap},
            "seconds": time.perf_counter() - start,
        }
        for v in cheap:
            a = by_k[str(k)]["agreement"][v]
            logger.info("k=%d %-13s spearman %.3f kendall %.3f same best %s", k, v, a["spearman"], a["kendall"],
                        a["same_best"])
    path = record.save({
        "data": str(Path(args.data)), "sample": args.sample, "split": args.split, "queries": len(queries),
        "full_documents": len(dataset.corpus), "judged_documents": len({d for x in qrels.values() for d in x}),
        "metric": METRIC, "depth": DEPTH, "systems": {**{n: dict(BASE[n]) for n in BASE},
                                                      **{n: {"fusion": f, "members": list(m)} for n, (f, m) in FUSED.items()}},
        "pooling_systems": list(POOL), "headline_k": args.headline_k if str(args.headline_k) in by_k else None,
        "full": full, "by_k": by_k,
        "seconds": {"encode_or_cache": encode_seconds, "full_corpus_runs": full_seconds},
    })
    logger.info("-> %s", path)


if __name__ == "__main__":
    main()
