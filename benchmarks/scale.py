"""Scale: 10k, 100k and 1M synthetic documents through the dense path and the sparse engine (issue 11).

Each (size, path) runs in its own process, so its peak RSS is its own (``ru_maxrss``):

- **dense**: the corpus streams from its JSONL file through :mod:`uniret.index.shards` (50,000-document shards,
  memory-mapped ``.npy``) into a FAISS flat index, which is saved (doc store included) and searched.
- **sparse**: :class:`uniret.index.sparse.SparseIndex` on the default engine (PISA where installed), built, saved
  and searched.

Encoders: encoding 1M documents with a real model takes hours on 2 CPU cores, so both paths use a cheap
deterministic encoder that exercises the same pipeline: words hashed into 32,768 buckets, then (dense) projected
by a fixed random matrix to 384 dimensions (MiniLM's) and normalised, or (sparse) weighted ``1 + log(tf)`` over
30,522 terms (BERT's vocabulary size). A **real-model slice** measures all-MiniLM-L6-v2's documents per second on
the same synthetic documents, and the encode time it would add at each size is *extrapolated* from it (labelled
so in the results).

Documents: 30 to 90 words drawn from a Zipf(1.07) law over 50,000 pseudo-words (seeded); 200 queries, each the
4 rarest words of a random document, judged relevant to it (recall@10 is a sanity check that search works).
Peak RSS is the process's ``VmHWM`` (``ru_maxrss`` would carry the parent's peak across ``fork``/``exec``).

    python benchmarks/scale.py [--sizes 10000,100000,1000000] [--workdir /tmp/uniret-scale]
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from _common import REPO, BenchmarkRun
from uniret.cli import positive_int

logger = logging.getLogger("scale")
BUCKETS = 32_768
SPARSE_VOCAB = 30_522
DIM = 384
SHARD_SIZE = 50_000
NUM_QUERIES = 200
SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "ta", "vi", "so", "de", "pa", "ge", "bu", "zo", "fi", "ha", "ju"]


# -- synthetic data -------------------------------------------------------------------------------------------

def pseudo_words(n: int) -> list[str]:
    words = []
    for i in range(n):
        parts, x = [], i + 17
        while x:
            parts.append(SYLLABLES[x % len(SYLLABLES)])
            x //= len(SYLLABLES)
        words.append("".join(parts))
    return words


def write_corpus(folder: Path, size: int, seed: int = 0) -> Path:
    """A BEIR folder of ``size`` synthetic documents and 200 judged queries (reused when already written)."""
    params = {"size": size, "seed": seed, "vocabulary": 50_000, "zipf": 1.07, "length": [30, 90]}
    done = folder / "params.json"
    if done.is_file() and json.loads(done.read_text()) == params:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "qrels").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    vocab = np.array(pseudo_words(50_000))
    p = 1.0 / np.arange(1, 50_001) ** 1.07
    p /= p.sum()
    query_docs = set(rng.choice(size, NUM_QUERIES, replace=False).tolist())
    queries = []
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as f:
        for start in range(0, size, 10_000):
            n = min(10_000, size - start)
            lengths = rng.integers(30, 91, n)
            word_ids = rng.choice(50_000, int(lengths.sum()), p=p)
            words = vocab[word_ids]
            offsets = np.concatenate([[0], np.cumsum(lengths)])
            for j in range(n):
                doc = words[offsets[j]:offsets[j + 1]]
                if start + j in query_docs:  # its 4 rarest distinct words: a query that names this document
                    ranks = sorted(set(word_ids[offsets[j]:offsets[j + 1]].tolist()), reverse=True)[:4]
                    queries.append((f"q{len(queries)}", f"d{start + j}", " ".join(vocab[ranks])))
                f.write(json.dumps({"_id": f"d{start + j}", "title": "", "text": " ".join(doc)}) + "\n")
    with open(folder / "queries.jsonl", "w", encoding="utf-8") as f:
        for qid, _, text in queries:
            f.write(json.dumps({"_id": qid, "text": text}) + "\n")
    with open(folder / "qrels" / "test.tsv", "w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for qid, did, _ in queries:
            f.write(f"{qid}\t{did}\t1\n")
    done.write_text(json.dumps(params))
    return folder


# -- cheap encoders (the benchmark's, not the library's) ------------------------------------------------------

class _Buckets:
    def __init__(self, buckets: int) -> None:
        self.buckets = buckets
        self._cache: dict[str, int] = {}

    def rows(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(row index, bucket) of every word occurrence."""
        rows, cols = [], []
        cache = self._cache
        for i, t in enumerate(texts):
            for w in t.lower().split():
                b = cache.get(w)
                if b is None:
                    b = cache[w] = zlib.crc32(w.encode()) % self.buckets
                cols.append(b)
                rows.append(i)
        return np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)


class HashDense:
    """Hashed bag of words times a fixed random projection, normalised: a dense encoder at MiniLM's width."""

    def __init__(self) -> None:
        self._buckets = _Buckets(BUCKETS)
        self._proj = np.random.default_rng(1).standard_normal((BUCKETS, DIM), dtype=np.float32)
        self.identity = {"type": "benchmark", "name": "hash-dense-384", "hash": "scale-v1", "dimension": DIM,
                         "similarity": "cosine"}

    def _encode(self, texts: list[str]) -> np.ndarray:
        import scipy.sparse as sp

        rows, cols = self._buckets.rows(texts)
        counts = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(texts), BUCKETS))
        out = np.asarray(counts @ self._proj, dtype=np.float32)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        return self._encode(texts)

    def encode_documents(self, texts: list[str]) -> np.ndarray:
        return np.concatenate([self._encode(texts[i:i + 10_000]) for i in range(0, len(texts), 10_000)]) \
            if texts else np.zeros((0, DIM), np.float32)


class HashSparse:
    """``1 + log(tf)`` over hashed terms: a sparse encoder at BERT's vocabulary size."""

    def __init__(self) -> None:
        self._buckets = _Buckets(SPARSE_VOCAB)
        self.vocabulary = [f"t{i}" for i in range(SPARSE_VOCAB)]
        self.identity = {"type": "benchmark", "name": "hash-sparse", "hash": "scale-v1", "similarity": "dot",
                         "vocabulary_size": SPARSE_VOCAB}

    def _encode(self, texts: list[str]) -> Any:
        import scipy.sparse as sp

        from uniret.protocols import SparseVectors

        rows, cols = self._buckets.rows(texts)
        m = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(texts), SPARSE_VOCAB))
        m.sum_duplicates()
        m.data = 1.0 + np.log(m.data)
        return SparseVectors(indptr=m.indptr.astype(np.int64), indices=m.indices.astype(np.int32),
                             data=m.data.astype(np.float32), vocabulary=self.vocabulary)

    encode_queries = _encode
    encode_documents = _encode


# -- one (size, path) in this process ----------------------------------------------------------------------------

def peak_rss_mb() -> float:
    """This process's peak resident set (``VmHWM``), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(path: str, data: Path, out: Path, threads: int | None = None) -> dict[str, Any]:
    import uniret.index.faiss_index  # noqa: F401  (imports are not build time)
    import uniret.index.shards  # noqa: F401
    import uniret.index.sparse  # noqa: F401
    from uniret.data import load_beir
    from uniret.eval.metrics import evaluate

    t0 = time.perf_counter()
    dataset = load_beir(data)
    load_s = time.perf_counter() - t0
    queries = dataset.split_queries("test")
    if path == "dense":
        from uniret.index.faiss_index import FaissIndex

        backend = FaissIndex(HashDense(), "flat", use_gpu="auto", shard_size=SHARD_SIZE,
                             shards_dir=out.with_name(out.name + ".shards"))
    else:
        from uniret.index.sparse import SparseIndex

        backend = SparseIndex(HashSparse(), "auto", workdir=out.parent, threads=threads)
    t0 = time.perf_counter()
    backend.index(dataset.corpus)
    build_s = time.perf_counter() - t0
    rss_build = peak_rss_mb()
    t0 = time.perf_counter()
    backend.save(out)
    save_s = time.perf_counter() - t0
    backend.search(dict(list(queries.items())[:5]), k=10)  # warm-up
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        run = backend.search(queries, k=10)
        times.append(time.perf_counter() - t0)
    metrics = evaluate(dataset.qrels("test").judgements, run, ["recall@10"])
    size_mb = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**20
    return {
        "path": path, "docs": len(dataset.corpus), "engine": getattr(backend, "engine_name", None)
        or getattr(backend, "factory", None), "load_seconds": round(load_s, 2), "build_seconds": round(build_s, 2),
        "save_seconds": round(save_s, 2), "queries": len(queries), "search_seconds_best": round(min(times), 4),
        "qps": round(len(queries) / min(times), 1), "recall@10": round(metrics["recall@10"], 4),
        "peak_rss_mb_build": round(rss_build), "peak_rss_mb": round(peak_rss_mb()),
        "index_mb": round(size_mb, 1),
        # the sparse index searches a batch on its threads (default: the usable cores; runs before 2026-12-05: 1)
        "search_threads": getattr(backend, "threads", None),
        "pisa_algorithm": (backend._engine.plan(backend.threads, sum(1 for q in queries.values() if q.strip()))[0]
                           if hasattr(getattr(backend, "_engine", None), "plan") else None),
    }


def real_model_slice(data: Path, docs: int, backend: str) -> dict[str, Any]:
    """all-MiniLM-L6-v2 on the first ``docs`` synthetic documents: documents per second at max length 256."""
    from uniret.data import load_beir
    from uniret.retriever.dense import DenseEncoder

    texts = [d.full_text() for _, d in zip(range(docs), load_beir(data).corpus, strict=False)]
    enc = DenseEncoder("all-MiniLM-L6-v2", device="cpu", max_length=256, batch_size=32, backend=backend)
    enc.encode_documents(texts[:64])  # warm-up (and the ONNX export, if any)
    t0 = time.perf_counter()
    enc.encode_documents(texts)
    seconds = time.perf_counter() - t0
    return {"model": "all-MiniLM-L6-v2", "backend": backend, "max_length": 256, "docs": len(texts),
            "seconds": round(seconds, 2), "docs_per_second": round(len(texts) / seconds, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--paths", default="dense,sparse")
    ap.add_argument("--workdir", default="/tmp/uniret-scale")
    ap.add_argument("--slice-docs", type=int, default=500, help="documents for the real-model slice (0: skip)")
    ap.add_argument("--slice-backend", default="torch")
    ap.add_argument("--name", default="scale")
    ap.add_argument("--threads", type=positive_int, default=None,
                    help="the sparse index's threads, for building and searching (default: its own, the usable "
                         "cores)")
    ap.add_argument("--worker", nargs=3, metavar=("PATH", "DATA", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.worker:
        path, data, out = args.worker
        print(json.dumps(worker(path, Path(data), Path(out), args.threads)))
        return

    record = BenchmarkRun(args.name)
    work = Path(args.workdir)
    sizes = [int(s) for s in args.sizes.split(",")]
    rows: list[dict[str, Any]] = []
    real: dict[str, Any] | None = None
    for size in sizes:
        t0 = time.perf_counter()
        data = write_corpus(work / f"data-{size}", size)
        logger.info("%d synthetic documents ready in %.0f s", size, time.perf_counter() - t0)
        if real is None and args.slice_docs:
            real = real_model_slice(data, args.slice_docs, args.slice_backend)
            logger.info("real-model slice: %s", real)
        for path in args.paths.split(","):
            out = work / f"index-{path}-{size}"
            for stale in (out, out.with_name(out.name + ".shards")):  # never reuse a shard of an earlier run
                shutil.rmtree(stale, ignore_errors=True)
            threads = [] if args.threads is None else ["--threads", str(args.threads)]
            proc = subprocess.run([sys.executable, __file__, "--worker", path, str(data), str(out), *threads],
                                  capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
            if proc.returncode != 0:
                raise SystemExit(f"{path} at {size}: worker failed\n{proc.stderr[-3000:]}")
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            if real is not None and path == "dense":
                row["real_model_encode_hours_extrapolated"] = round(size / real["docs_per_second"] / 3600, 2)
            logger.info("%s", row)
            rows.append(row)
            for done in (out, out.with_name(out.name + ".shards")):
                shutil.rmtree(done, ignore_errors=True)
            record.save({"sizes": sizes, "rows": rows, "real_model_slice": real, "shard_size": SHARD_SIZE,
                         "dimension": DIM, "encoders": {"dense": "hash-dense-384 (benchmark)",
                                                        "sparse": "hash-sparse tf (benchmark)"},
                         "target": {"peak_rss_mb_at_1M": 3072}, "complete": False})
    growth = {}
    for path in args.paths.split(","):
        mine = [r for r in rows if r["path"] == path]
        growth[path] = [{"from": a["docs"], "to": b["docs"],
                         "build_time_x": round(b["build_seconds"] / max(a["build_seconds"], 1e-9), 2),
                         "peak_rss_x": round(b["peak_rss_mb"] / max(a["peak_rss_mb"], 1), 2),
                         "qps_x": round(b["qps"] / max(a["qps"], 1e-9), 3)} for a, b in itertools.pairwise(mine)]
    path = record.save({"sizes": sizes, "rows": rows, "growth": growth, "real_model_slice": real,
                        "shard_size": SHARD_SIZE, "dimension": DIM,
                        "encoders": {"dense": "hash-dense-384 (benchmark)", "sparse": "hash-sparse tf (benchmark)"},
                        "target": {"peak_rss_mb_at_1M": 3072}, "complete": True})
    logger.info("wrote %s", path.relative_to(REPO))


if __name__ == "__main__":
    main()
