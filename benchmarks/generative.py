"""Generative retrieval on SciFact (issue 9): identifier structures, constrained decoding, a small trained run.

Two parts, each writing its own results file:

``--part structures`` (``generative_structures.json``): the full SciFact corpus (5,183 documents, title + text)
tokenised with SmolLM2's tokenizer; build time and size of the n-gram suffix array and of the title trie
(marisa), and the suffix array against the ``fm-index`` package (Rust FM-index; tokens mapped to one code
point each) on build time, size and query time for ``--patterns`` n-grams drawn from the corpus: count,
documents (locate) and the next-token set a constrained decoding step needs.

``--part trained`` (``generative_trained.json``): ``configs/scifact-generative.yaml`` with a stated smaller
budget (``--steps`` steps of ``--batch`` claims), then ``--queries`` SciFact test claims searched against the
*full* corpus with beam ``--beams`` constrained decoding: nDCG@10 and recall@100 of the base SmolLM2 and of
the trained model, the trained model without constraints (ablation), BM25 and BM25 + generative fusion
(RRF) on the same claims; queries/s and the valid-output rate of each decoding. Every row ranks from the
decoded n-grams alone (``keys=("beams",)``), except one more of the trained model with SEAL's query keys
(beams + query n-grams, the recipe's ``search_keys``).

``--part keys`` (``generative_keys.json``): one trained model (``--model``) decodes ``--queries`` claims once and
ranks them from each key set (beams, the query's n-grams, the LM's first-step unigrams; SEAL's smoothing and
beta), with ablations that leave the beams out.

``--part keys-grid`` (``generative_keys_grid.json``): one trained model decodes ``--queries`` claims once and ranks
them from beams + query n-grams under every setting of ``GRID`` (longest query n-gram, weight exponent, SEAL's
smoothing and beta, a saturation of key occurrences, a document-length normalisation), and fuses the default and the best row with BM25 at every
weight (``--row LABEL``: rank and fuse only the default and that row). ``--split dev --dev-queries
RUN/dev_queries.json`` searches the claims a training run held out (``data.holdout_queries``): the setting and
fusion weight are chosen there, then read on the test claims.

``--part prompts`` (``generative_prompts.json``): UGR's prompt learning over two identifier granularities of
one corpus: titles (a document's name) and n-grams of the whole abstract. One model trained on both, each with
its own soft prompt (``generative.query_tasks: {retrieval: text, title: title}``), against two single-task
models, each trained on one, all with the recipe's settings and the same budget (``--steps`` steps of
``--batch`` claims, plus as many indexing pairs); each task is searched with its prompt on ``--queries``
seeded SciFact test claims against the full corpus.

    python benchmarks/generative.py --part structures
    python benchmarks/generative.py --part trained --steps 40 --queries 20
    python benchmarks/generative.py --part prompts --steps 100 --queries 100
    python benchmarks/generative.py --part keys --model OUT/model --queries 300
    python benchmarks/generative.py --part keys-grid --model DEV/model --split dev --dev-queries DEV/dev_queries.json
    python benchmarks/generative.py --part keys-grid --model OUT/model --queries 300 --row "LABEL CHOSEN ON DEV"

``--device`` (default auto: a GPU when present) is where the LM trains and decodes; the results file records it.
``--save-runs DIR`` also writes the searched runs as TREC files (``device_decoder.py run --generative`` uses it
on a GPU machine without Java, to fuse with BM25 here): ``--part fuse --runs DIR --device-results FILE``
adds the BM25 rows that machine skipped to its results file, with this run's provenance under ``fused_here``.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from _common import REPO, BenchmarkRun

logger = logging.getLogger("generative")


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def structures(args: argparse.Namespace) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from uniret.assets import resolve_model
    from uniret.data import load_beir
    from uniret.retriever.generative import document_tokens
    from uniret.retriever.identifiers import NgramIndex, TitleTrie

    docs = list(load_beir("scifact").corpus)
    tok = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m"))
    start = time.perf_counter()
    tokens = document_tokens(tok, [d.full_text() for d in docs])
    titles = document_tokens(tok, [d.title for d in docs])
    tokenize_s = time.perf_counter() - start
    out: dict[str, Any] = {"docs": len(docs), "tokens": sum(map(len, tokens)), "tokenize_seconds": tokenize_s}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        sa = NgramIndex.build(tokens)
        out["suffix_array"] = {"build_seconds": time.perf_counter() - start}
        Path(tmp, "sa").mkdir()
        sa.save(Path(tmp, "sa"))
        out["suffix_array"]["bytes"] = _dir_bytes(Path(tmp, "sa"))
        start = time.perf_counter()
        trie = TitleTrie.build(titles)
        out["title_trie"] = {"build_seconds": time.perf_counter() - start, "titles": len(trie)}
        Path(tmp, "trie").mkdir()
        trie.save(Path(tmp, "trie"))
        out["title_trie"]["bytes"] = _dir_bytes(Path(tmp, "trie"))
    rng = random.Random(0)
    patterns = []
    for _ in range(args.patterns):
        d = tokens[rng.randrange(len(tokens))]
        n = rng.randint(1, 5)
        s = rng.randrange(max(1, len(d) - n))
        patterns.append(d[s : s + n])

    def timed(fn: Any) -> float:
        start = time.perf_counter()
        for p in patterns:
            fn(p)
        return (time.perf_counter() - start) / len(patterns) * 1e6

    sa_q = {"count_us": timed(sa.count), "documents_us": timed(sa.documents),
            "next_tokens_us": timed(lambda p: sa._compute_next(tuple(p)))}  # uncached, as a first visit
    out["suffix_array"].update(sa_q)
    try:
        from fm_index import MultiFMIndex
    except ImportError:
        out["fm_index"] = None
        return out

    def key(t: list[int]) -> str:
        return "".join(chr(0x10000 + x) for x in t)

    start = time.perf_counter()
    fm = MultiFMIndex([key(t) for t in tokens])
    build = time.perf_counter() - start
    joined = sa.tokens

    def fm_next(p: list[int]) -> set[int]:  # no "next symbols of a range" query: locate, then gather
        found = fm.locate(key(p))
        nxt: set[int] = set()
        for doc, positions in found.items():
            base = int(sa.starts[doc]) + len(p)
            nxt.update(int(joined[base + q]) for q in positions)
        nxt.discard(-1)
        return nxt

    for p in patterns[:50]:  # the two agree before anything is timed
        assert fm.count_all(key(p)) == sa.count(p)
        assert fm_next(p) == set(sa._compute_next(tuple(p)))
    out["fm_index"] = {"package": "fm-index", "build_seconds": build, "bytes": len(fm.__getstate__()),
                       "count_us": timed(lambda p: fm.count_all(key(p))),
                       "documents_us": timed(lambda p: fm.count(key(p))), "next_tokens_us": timed(fm_next)}
    out["patterns"] = len(patterns)
    return out


def _metrics(dataset: Any, run: dict[str, dict[str, float]], queries: Any, split: str = "test") -> dict[str, float]:
    """nDCG@10 and R@100 over every claim in ``queries`` (a claim the run misses scores 0)."""
    from uniret.eval.metrics import evaluate

    qrels = dataset.qrels(split).judgements
    res = evaluate({q: qrels[q] for q in queries}, run, ["ndcg@10", "recall@100"])
    assert isinstance(res, dict)
    return res


def _search(backend: Any, queries: dict[str, str], k: int = 100) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    backend.stats = {"generated": 0, "valid": 0}
    start = time.perf_counter()
    run = backend.search(queries, k=k)
    seconds = time.perf_counter() - start
    s = backend.stats
    return run, {"seconds": seconds, "queries_per_second": len(queries) / seconds, "generated": s["generated"],
                 "valid": s["valid"], "valid_rate": s["valid"] / max(1, s["generated"])}


def _claims(data: Any, n: int, split: str = "test", ids: Any = None) -> dict[str, str]:
    """The first ``n`` SciFact claims of ``split`` (or of ``ids``, e.g. a run's held-out dev claims) in a seeded
    order (every part and machine draws the same ones)."""
    qids = sorted(ids if ids is not None else data.qrels(split).judgements)
    random.Random(0).shuffle(qids)
    return {q: data.queries[q] for q in qids[:n]}


def _split_claims(args: argparse.Namespace, data: Any) -> tuple[dict[str, str], str]:
    """``--queries`` claims of ``--split``, and the qrels split that judges them (dev claims are training claims
    a run held out: ``--dev-queries``, its ``dev_queries.json``)."""
    if args.split != "dev":
        return _claims(data, args.queries, args.split), args.split
    if not args.dev_queries:
        sys.exit("--split dev needs --dev-queries FILE (a training run's dev_queries.json)")
    ids = json.loads(Path(args.dev_queries).read_text(encoding="utf-8"))
    return _claims(data, args.queries, "train", ids), "train"


def _bm25_run(data: Any, queries: dict[str, str]) -> dict[str, dict[str, float]]:
    """Lucene BM25's top 100 for ``queries`` over the whole corpus (needs the sparse extra: Java)."""
    from uniret.index.lucene import LuceneBM25Index

    bm25 = LuceneBM25Index()
    bm25.index(data.corpus)
    return bm25.search(queries, k=100)


def _bm25_rows(data: Any, queries: dict[str, str], generative: dict[str, dict[str, float]]) -> dict[str, Any]:
    """BM25 (Lucene) on the same claims, and BM25 fused with the constrained generative run by RRF."""
    from uniret.scores import fuse_runs

    bm25_run = _bm25_run(data, queries)
    return {"BM25 (same claims)": _metrics(data, bm25_run, queries),
            "BM25 + generative (RRF)": _metrics(data, fuse_runs([bm25_run, generative], "rrf"), queries)}


def trained(args: argparse.Namespace) -> dict[str, Any]:
    from uniret.config import load_config
    from uniret.data import load_beir
    from uniret.index.generative import GenerativeIndex
    from uniret.retriever.generative import GenerativeRetriever
    from uniret.train.config import TrainConfig
    from uniret.train.pipeline import run_training

    data = load_beir("scifact")
    queries = _claims(data, args.queries)
    out: dict[str, Any] = {"queries": len(queries), "docs": len(data.corpus), "beams": args.beams, "rows": {},
                           "device": args.device}

    base = GenerativeRetriever.build("smollm2-135m", device=args.device)
    backend = GenerativeIndex(base, num_beams=args.beams, batch_size=args.search_batch, keys=("beams",))
    start = time.perf_counter()
    backend.index(data.corpus)
    out["index_seconds"] = time.perf_counter() - start
    structure, ids = backend.structure, backend._ids
    if not args.no_base:
        run, speed = _search(backend, queries)
        out["rows"]["smollm2-135m (not trained), constrained"] = {**_metrics(data, run, queries), **speed}
    del base, backend

    cfg = load_config(args.config_path, TrainConfig, overrides={
        "trainer.max_steps": args.steps, "trainer.batch_size": args.batch, "trainer.save_every": None,
        "model.device": args.device})
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="generative-bench-"))
    start = time.perf_counter()
    summary = run_training(cfg, work / "run", overwrite=True)
    out["train"] = {"steps": summary["steps"], "batch_size": args.batch, "train_seconds": summary["train_seconds"],
                    "seconds_per_step": summary["train_seconds"] / max(1, summary["steps"]),
                    "final_loss": summary["final_loss"], "wall_seconds": time.perf_counter() - start,
                    "config": args.config}
    model = GenerativeRetriever.load(work / "run" / "model", device=args.device)
    gen_runs = {}
    for constrained, keys in ((True, ("beams",)), (False, ("beams",)), (True, ("beams", "query"))):
        backend = GenerativeIndex(model, num_beams=args.beams, batch_size=args.search_batch, constrained=constrained,
                                  keys=keys)
        backend.structure, backend._ids = structure, ids
        run, speed = _search(backend, queries)
        label = f"trained {args.steps} steps, " + ("constrained" if constrained else "unconstrained (ablation)")
        if keys != ("beams",):  # SEAL's query keys (--part keys compares every key set)
            label += ", beams + query n-grams"
            out["rows"][label] = {**_metrics(data, run, queries), **speed, "keys": list(keys)}
            continue
        out["rows"][label] = {**_metrics(data, run, queries), **speed}
        gen_runs[constrained] = run
        if args.save_runs:
            from uniret.trec import write_trec_run

            Path(args.save_runs).mkdir(parents=True, exist_ok=True)
            kind = "constrained" if constrained else "unconstrained"
            write_trec_run(run, Path(args.save_runs) / f"generative_{kind}.trec", tag="generative")
    try:
        out["rows"].update(_bm25_rows(data, queries, gen_runs[True]))
    except Exception as e:  # BM25 needs the sparse extra (Java); report what is missing
        logger.warning("BM25 rows skipped: %s", e)
        out["bm25_skipped"] = str(e)
    return out


def fuse(args: argparse.Namespace, run: BenchmarkRun) -> dict[str, Any]:
    """``--part fuse``: the BM25 rows a machine without Java skipped (``bm25_skipped``), computed here on the same
    claims from the runs it saved (``--save-runs``); the rest of its results file is kept as measured there, and
    this run's own provenance is added under ``fused_here``."""
    from uniret.data import load_beir
    from uniret.trec import read_trec_run

    if not args.runs or not args.device_results:
        sys.exit("--part fuse needs --runs DIR (the saved TREC runs) and --device-results FILE (their results)")
    rec = json.loads(Path(args.device_results).read_text(encoding="utf-8"))
    if "bm25_skipped" not in rec:
        sys.exit(f"{args.device_results}: has its BM25 rows already (no 'bm25_skipped')")
    data = load_beir("scifact")
    queries = _claims(data, rec["queries"])
    generative = read_trec_run(Path(args.runs) / "generative_constrained.trec")
    if not set(generative) <= set(queries):
        sys.exit(f"{args.runs}: the constrained run holds claims outside the seeded {len(queries)}; not the same slice")
    rows = [row for label, row in rec["rows"].items() if label.startswith("trained") and label.endswith(", constrained")]
    if len(rows) != 1:
        sys.exit(f"{args.device_results}: expected one 'trained N steps, constrained' row, found {len(rows)}")
    check = _metrics(data, generative, queries)["ndcg@10"]  # the fused rows stand on the file's own numbers
    if abs(check - rows[0]["ndcg@10"]) > 1e-9:
        sys.exit(f"{args.runs}: the constrained run scores {check:.6f}, its results file {rows[0]['ndcg@10']:.6f}")
    rec["rows"].update(_bm25_rows(data, queries, generative))
    skipped = rec.pop("bm25_skipped")
    rec["fused_here"] = {**run.record({}), "bm25_skipped_there": skipped,
                         "rows": ["BM25 (same claims)", "BM25 + generative (RRF)"]}
    rec["fused_here"].pop("benchmark")
    return rec


FUSION_WEIGHTS = (0.95, 0.9, 0.8, 0.7, 0.6, 0.5)  # BM25's weight in the score interpolations
RRF_WEIGHTS = (0.1, 0.25, 0.5, 1.0)  # the generative run's weight in RRF (BM25's: 1)


def _fusion_rows(data: Any, queries: dict[str, str], split: str, bm25_run: dict[str, dict[str, float]],
                 generative: dict[str, dict[str, float]], *, constrained: bool = True) -> dict[str, dict[str, Any]]:
    """BM25, the generative run (labelled by its decoding), and the two fused by every method and weight of
    :data:`FUSION_WEIGHTS` / :data:`RRF_WEIGHTS`, each scored on ``queries``."""
    from uniret.scores import fuse_runs

    rows = {"BM25": {"method": "bm25", **_metrics(data, bm25_run, queries, split)},
            f"generative ({'constrained' if constrained else 'unconstrained'})":
                {"method": "generative", **_metrics(data, generative, queries, split)}}
    for norm in ("minmax", "zscore"):
        for w in FUSION_WEIGHTS:
            fused = fuse_runs([bm25_run, generative], "interpolate", [w, 1 - w], normalization=norm)
            rows[f"{norm} {w:g} BM25 + {1 - w:g} generative"] = {"method": norm, "bm25_weight": w,
                                                                   **_metrics(data, fused, queries, split)}
    for w in RRF_WEIGHTS:
        fused = fuse_runs([bm25_run, generative], "rrf", [1.0, w])
        rows[f"RRF, generative weighted {w:g}"] = {"method": "rrf", "generative_weight": w,
                                                   **_metrics(data, fused, queries, split)}
    return rows


def fusion_sweep(args: argparse.Namespace) -> dict[str, Any]:
    """``--part fusion-sweep``: BM25 fused with a saved constrained run (``--run``, TREC, ``.gz`` too) by every
    method and weight of :data:`FUSION_WEIGHTS` / :data:`RRF_WEIGHTS`, all scored on the run's claims. The
    weights are not chosen on held-out claims: the best row is an upper bound of what fusion could give."""
    import gzip
    import io

    from uniret.data import load_beir
    from uniret.trec import parse_trec_run

    if not args.run:
        sys.exit("--part fusion-sweep needs --run FILE (a saved constrained run, TREC, .gz too)")
    path = Path(args.run)
    raw = path.read_bytes()
    text = gzip.decompress(raw).decode("utf-8") if path.suffix == ".gz" else raw.decode("utf-8")
    generative = parse_trec_run(io.StringIO(text), str(path))
    data = load_beir("scifact")
    queries = _claims(data, len(generative))
    if set(generative) != set(queries):
        sys.exit(f"{path}: its {len(generative)} claims are not the first {len(queries)} seeded test claims")
    rows = _fusion_rows(data, queries, "test", _bm25_run(data, queries), generative)
    best = max((r for r in rows.values() if r["method"] not in ("bm25", "generative")), key=lambda r: r["ndcg@10"])
    return {"run": str(path), "queries": len(queries), "rows": rows,
            "best_fused_ndcg@10": best["ndcg@10"], "bm25_ndcg@10": rows["BM25"]["ndcg@10"],
            "note": "weights swept on the scored claims themselves: the best row is an upper bound, not a chosen setting"}


KEY_VARIANTS: dict[str, dict[str, Any]] = {
    "beams (the default)": {"keys": ("beams",), "smoothing": 0.0, "beta": 1.0},
    "beams, SEAL's smoothing 5 and beta 0.8": {"keys": ("beams",), "smoothing": 5.0, "beta": 0.8},
    "beams + unigrams": {"keys": ("beams", "unigrams"), "smoothing": 0.0, "beta": 1.0},
    "beams + query n-grams": {"keys": ("beams", "query"), "smoothing": 0.0, "beta": 1.0},
    "beams + query n-grams + unigrams": {"keys": ("beams", "query", "unigrams"), "smoothing": 0.0, "beta": 1.0},
    "beams + query n-grams + unigrams, SEAL's smoothing 5 and beta 0.8": {
        "keys": ("beams", "query", "unigrams"), "smoothing": 5.0, "beta": 0.8},
    "beams + query n-grams, SEAL's smoothing 5 and beta 0.8": {"keys": ("beams", "query"), "smoothing": 5.0,
                                                              "beta": 0.8},
    "query n-grams, no beams (ablation)": {"keys": ("query",), "smoothing": 0.0, "beta": 1.0},
    "query n-grams + unigrams, no beams (ablation)": {"keys": ("query", "unigrams"), "smoothing": 0.0, "beta": 1.0},
}
"""The key sets ``--part keys`` compares (SEAL's released searcher uses beams + query n-grams + unigrams,
smoothing 5, beta 0.8); the last two leave the decoded identifiers out, to show what the beams add."""


def keys(args: argparse.Namespace) -> dict[str, Any]:
    """``--part keys``: one trained model (``--model``) decodes ``--queries`` claims once, constrained, at
    ``--beams``; the documents are then ranked from each key set of :data:`KEY_VARIANTS` (the LM scores
    every key; the query n-grams and the first decoding step cost the claim encoded once more and its keys in
    batches of 64, timed)."""
    from uniret.data import load_beir
    from uniret.index.generative import GenerativeIndex, KeySet
    from uniret.retriever.generative import SEARCH_OPTIONS, GenerativeRetriever

    if not args.model:
        sys.exit("--part keys needs --model DIR (a trained generative model, e.g. OUT/model of uniret train)")
    data = load_beir("scifact")
    queries, qrels_split = _split_claims(args, data)
    model = GenerativeRetriever.load(args.model, device=args.device)
    backend = GenerativeIndex(model, num_beams=args.beams, batch_size=args.search_batch,
                              keys=("beams", "query", "unigrams"), **SEARCH_OPTIONS)  # each variant sets its own
    backend.index(data.corpus)
    constraint, qids = backend.constraint(), list(queries)
    sets: dict[str, KeySet] = {}  # per claim: every source, each kept apart
    decode_s = keys_s = 0.0
    for s in range(0, len(qids), args.search_batch):
        batch = qids[s : s + args.search_batch]
        start = time.perf_counter()
        hyps = model.generate([queries[q] for q in batch], task=backend.task, constraint=constraint,
                              num_beams=args.beams, max_new_tokens=model.settings.max_new_tokens)
        decode_s += time.perf_counter() - start
        start = time.perf_counter()
        for q, h in zip(batch, hyps, strict=True):
            backend._count_valid(h)
            sets[q] = backend.key_set(queries[q], h)
        keys_s += time.perf_counter() - start
        logger.info("decoded %d / %d claims", len(sets), len(qids))
    rows: dict[str, Any] = {}
    for label, variant in KEY_VARIANTS.items():
        backend.smoothing, backend.beta = variant["smoothing"], variant["beta"]
        run = {q: backend.rank(sets[q], 100, variant["keys"]) for q in qids}
        sizes = [len(sets[q].ngrams(variant["keys"])) for q in qids]
        rows[label] = {**variant, "keys": list(variant["keys"]), **_metrics(data, run, queries, qrels_split),
                       "mean_keys_before_unigrams": float(np.mean(sizes))}
        logger.info("%s: %s", label, rows[label])
    try:
        rows["BM25 (same claims)"] = _metrics(data, _bm25_run(data, queries), queries, qrels_split)
    except Exception as e:  # BM25 needs the sparse extra (Java)
        logger.warning("BM25 row skipped: %s", e)
    return {"model": str(args.model), "model_hash": model.identity["hash"], "history": model.history,
            "queries": len(queries), "split": args.split, "docs": len(data.corpus), "beams": args.beams,
            "rows": rows, "valid": dict(backend.stats), "decode_seconds": decode_s, "extra_keys_seconds": keys_s,
            "queries_per_second_beams": len(qids) / decode_s,
            "queries_per_second_all_keys": len(qids) / (decode_s + keys_s), "device": args.device}


GRANULARITIES = {"one model, both granularities": {"retrieval": "text", "title": "title"},
                 "abstract n-grams only": {"retrieval": "text"}, "titles only": {"title": "title"}}


GRID: dict[str, tuple[Any, ...]] = {"query_words": (3, 4, 5), "alpha": (1.0, 1.5, 2.0, 3.0), "smoothing": (0.0, 5.0),
                                     "beta": (1.0, 0.8), "tf_k1": (0.0, 0.5, 1.2, 2.0),
                                     "length_norm": (0.0, 0.25, 0.5, 0.75)}
"""What ``--part keys-grid`` sweeps, ranking from the recipe's keys (beams + query n-grams): the longest query
n-gram in words (SEAL: 3), the weight exponent (``alpha``, uniret's default 2), SEAL's smoothing and beta,
a BM25-style saturation of a key's occurrences in a document (``tf_k1``, 0: presence only, SEAL) and a
document-length normalisation ``score / (1 - b + b * length / mean length)`` (``b`` 0: none, SEAL)."""


def _grid_label(v: dict[str, Any]) -> str:
    """A grid row's name; ``tf_k1`` is named only where it is not 0 (rows of files from before it keep their names)."""
    tf = f", tf k1 {v['tf_k1']:g}" if v.get("tf_k1", 0.0) else ""
    return (f"words {v['query_words']}, alpha {v['alpha']:g}, smoothing {v['smoothing']:g}, beta {v['beta']:g}"
            f"{tf}, length norm {v['length_norm']:g}")


class _CachedPostings:
    """An :class:`NgramIndex`'s ``count`` and ``documents``, each looked up once per key (the grid ranks the same
    keys under every setting)."""

    def __init__(self, index: Any) -> None:
        self.num_tokens = index.num_tokens
        self.count = functools.lru_cache(maxsize=None)(lambda tokens: index.count(tokens))
        self.documents = functools.lru_cache(maxsize=None)(lambda tokens: index.documents(tokens))


def keys_grid(args: argparse.Namespace) -> dict[str, Any]:
    """``--part keys-grid``: one trained model (``--model``) decodes ``--queries`` claims once (constrained,
    ``--beams``) and scores every query n-gram of up to 5 words once; the documents are then ranked from beams
    + query n-grams under every setting of :data:`GRID`. Run on a training run's held-out dev claims
    (``--split dev --dev-queries RUN/dev_queries.json``, claims that model never trained on) to choose a
    setting; run on the test claims to read the chosen row (the file names the best row on its own claims,
    which is a choice only where those claims are dev claims)."""
    import itertools

    from uniret.data import load_beir
    from uniret.index.generative import (
        GenerativeIndex,
        KeySet,
        candidate_ngrams,
        length_normalised,
        ngram_document_scores,
        query_keys,
        relative_lengths,
    )
    from uniret.retriever.generative import SEARCH_OPTIONS, GenerativeRetriever

    if not args.model:
        sys.exit("--part keys-grid needs --model DIR (a trained generative model, e.g. OUT/model of uniret train)")
    names = [n for n in GRID if n != "length_norm"]
    default = _grid_label(SEARCH_OPTIONS)
    every = {_grid_label(dict(zip(GRID, combo, strict=True))) for combo in itertools.product(*GRID.values())}
    if args.row and (unknown := set(args.row) - every):
        sys.exit(f"--row names no grid row: {sorted(unknown)} (labels as in a results file's rows)")
    data = load_beir("scifact")
    queries, qrels_split = _split_claims(args, data)
    model = GenerativeRetriever.load(args.model, device=args.device)
    backend = GenerativeIndex(model, num_beams=args.beams, batch_size=args.search_batch, keys=("beams", "query"),
                              **SEARCH_OPTIONS)  # the model's own search_options play no part
    backend.index(data.corpus)
    structure = backend.structure
    rel_length = relative_lengths(structure)
    postings = _CachedPostings(structure)
    constraint, qids = (None if args.unconstrained else backend.constraint()), list(queries)
    beams: dict[str, dict[tuple[int, ...], float]] = {}
    scored: dict[str, dict[tuple[int, ...], float]] = {}  # every query n-gram of up to max(words) words
    by_words: dict[tuple[str, int], list[tuple[int, ...]]] = {}
    start = time.perf_counter()
    for s in range(0, len(qids), args.search_batch):
        batch = qids[s : s + args.search_batch]
        hyps = model.generate([queries[q] for q in batch], task=backend.task, constraint=constraint,
                              num_beams=args.beams, max_new_tokens=model.settings.max_new_tokens)
        for q, h in zip(batch, hyps, strict=True):
            backend._count_valid(h)
            beams[q] = candidate_ngrams(h)
            for w in GRID["query_words"]:
                by_words[q, w] = query_keys(queries[q], model.tokenizer, structure, max_words=w)
            longest = by_words[q, max(GRID["query_words"])]
            _, scores = model.score_keys(queries[q], longest, task=backend.task)
            scored[q] = dict(zip(longest, scores, strict=True))
        logger.info("decoded and scored %d / %d claims", len(beams), len(qids))
    search_s = time.perf_counter() - start
    rows: dict[str, Any] = {}
    runs: dict[str, dict[str, dict[str, float]]] = {}
    wanted = {default, *args.row} if args.row else None  # --row: rank only those rows
    for combo in itertools.product(*(GRID[n] for n in names)):
        v = dict(zip(names, combo, strict=True))
        norms = [b for b in GRID["length_norm"] if wanted is None or _grid_label({**v, "length_norm": b}) in wanted]
        if not norms:
            continue
        raw: dict[str, dict[int, float]] = {}
        for q in qids:
            ks = KeySet(beams[q], {k: scored[q][k] for k in by_words[q, v["query_words"]]})
            raw[q] = ngram_document_scores(ks.ngrams(("beams", "query")), postings, alpha=v["alpha"],  # type: ignore[arg-type]
                                           smoothing=v["smoothing"], beta=v["beta"], tf_k1=v["tf_k1"])
        for b in norms:
            run: dict[str, dict[str, float]] = {}
            for q in qids:
                scores = length_normalised(raw[q], rel_length, b)
                ranked = sorted(scores.items(), key=lambda x: (-x[1], backend._ids[x[0]]))[:100]  # as rank()
                run[q] = {backend._ids[row]: float(sc) for row, sc in ranked}
            label = _grid_label({**v, "length_norm": b})
            rows[label] = {**v, "length_norm": b, **_metrics(data, run, queries, qrels_split)}
            runs[label] = run
            logger.info("%s: %.4f", label, rows[label]["ndcg@10"])
    best = max(rows, key=lambda r: rows[r]["ndcg@10"])
    fusion: dict[str, Any] = {}
    try:
        bm25_run = _bm25_run(data, queries)
        for label in dict.fromkeys([default, best, *(args.row or [])]):
            fusion[label] = _fusion_rows(data, queries, qrels_split, bm25_run, runs[label],
                                         constrained=not args.unconstrained)
    except Exception as e:  # BM25 needs the sparse extra (Java); the grid's rows stand without it
        logger.warning("fusion rows skipped: %s", e)
    return {"model": str(args.model), "model_hash": model.identity["hash"], "history": model.history,
            "queries": len(queries), "split": args.split, "dev_queries_file": args.dev_queries,
            "docs": len(data.corpus), "beams": args.beams, "keys": ["beams", "query"], "grid": {k: list(v) for k, v in GRID.items()},
            "rows": rows, "best_row": best, "best_ndcg@10": rows[best]["ndcg@10"], "default_row": default,
            "fusion": fusion, "constrained": not args.unconstrained,
            "valid": dict(backend.stats), "search_seconds": search_s, "device": args.device}


def prompts(args: argparse.Namespace) -> dict[str, Any]:
    from uniret.config import load_config
    from uniret.data import load_beir
    from uniret.index.generative import GenerativeIndex
    from uniret.retriever.generative import GenerativeRetriever
    from uniret.train.config import TrainConfig
    from uniret.train.pipeline import run_training

    data = load_beir("scifact")
    qids = sorted(data.qrels("test").judgements)
    random.Random(0).shuffle(qids)
    queries = {q: data.queries[q] for q in qids[: args.queries]}
    out: dict[str, Any] = {"queries": len(queries), "docs": len(data.corpus), "beams": args.beams,
                           "steps": args.steps, "batch_size": args.batch, "config": args.config, "models": {},
                           "rows": {}, "device": args.device}
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="generative-prompts-"))
    structure, ids = None, []
    for label, query_tasks in GRANULARITIES.items():
        cfg = load_config(args.config_path, TrainConfig, overrides={
            "trainer.max_steps": args.steps, "trainer.batch_size": args.batch, "trainer.save_every": None,
            "model.device": args.device, "generative.tasks": [*query_tasks, "indexing"],
            "generative.query_tasks": query_tasks})
        folder = work / "-".join(query_tasks)
        summary = run_training(cfg, folder, overwrite=True)
        out["models"][label] = {"query_tasks": query_tasks, "steps": summary["steps"],
                                "train_seconds": summary["train_seconds"], "final_loss": summary["final_loss"]}
        model = GenerativeRetriever.load(folder / "model", device=args.device)
        for task, source in query_tasks.items():
            backend = GenerativeIndex(model, num_beams=args.beams, batch_size=args.search_batch, task=task,
                                      keys=("beams",))  # the granularities compared on their decoded n-grams
            if structure is None:
                backend.index(data.corpus)
                structure, ids = backend.structure, backend._ids
                out["index_seconds"] = backend.index_seconds
            else:
                backend.structure, backend._ids = structure, ids
            run, speed = _search(backend, queries)
            out["rows"][f"{label}: {source} prompt"] = {"model": label, "granularity": source,
                                                         **_metrics(data, run, queries), **speed}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["structures", "trained", "prompts", "fuse", "fusion-sweep", "keys", "keys-grid"],
                    required=True)
    ap.add_argument("--patterns", type=int, default=500)
    ap.add_argument("--config", default="configs/scifact-generative.yaml",
                    help="a path, or relative to the repository (runs from any folder)")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--beams", type=int, default=10)
    ap.add_argument("--search-batch", type=int, default=10)
    ap.add_argument("--work-dir", default=None)
    ap.add_argument("--no-base", action="store_true", help="trained: skip searching with the untrained LM")
    ap.add_argument("--name", default=None, help="results file name (default: generative_PART)")
    ap.add_argument("--results-dir", default=None, help="default benchmarks/results")
    ap.add_argument("--device", default="auto", help="where the LM trains and decodes (auto: a GPU when present)")
    ap.add_argument("--save-runs", default=None,
                    help="also write each searched system's run (TREC) here, e.g. to fuse with BM25 elsewhere")
    ap.add_argument("--runs", default=None, help="fuse: the folder of runs another machine saved (--save-runs)")
    ap.add_argument("--device-results", default=None, help="fuse: that machine's results file (bm25_skipped)")
    ap.add_argument("--run", default=None, help="fusion-sweep: a saved constrained run (TREC, .gz too)")
    ap.add_argument("--model", default=None, help="keys: a trained generative model folder")
    ap.add_argument("--split", default="test", choices=["test", "train", "dev"],
                    help="keys, keys-grid: the claims searched (train: claims the test never sees; dev: a training "
                         "run's held-out claims, --dev-queries)")
    ap.add_argument("--row", action="append", default=None,
                    help="keys-grid: rank only this grid row (and the default) and fuse each with BM25 (repeatable; "
                         "e.g. the row chosen on dev claims, read on the test claims)")
    ap.add_argument("--dev-queries", default=None, help="--split dev: a training run's dev_queries.json")
    ap.add_argument("--unconstrained", action="store_true",
                    help="keys-grid: decode without the identifier constraint (the ablation: invalid beams match "
                         "no document and add nothing; the query n-grams are corpus n-grams either way)")
    args = ap.parse_args()
    if args.unconstrained and args.part != "keys-grid":
        sys.exit("--unconstrained applies to --part keys-grid (--part trained measures its own ablation)")
    if args.dev_queries and args.split != "dev":
        sys.exit("--dev-queries applies with --split dev")
    if args.row and args.part != "keys-grid":
        sys.exit("--row applies to --part keys-grid")
    if args.split != "test" and args.part not in ("keys", "keys-grid"):
        sys.exit("--split applies to --part keys and keys-grid")
    from uniret.runtime import resolve_device

    args.device = resolve_device(args.device)
    args.config_path = args.config if Path(args.config).is_file() else str(REPO / args.config)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    np.random.seed(0)
    name = args.name or f"generative_{args.part.replace('-', '_')}"
    run = BenchmarkRun(name, results_dir=args.results_dir)
    if args.part == "fuse":  # the device's record stands; this run's provenance goes under fused_here
        path = run.write(fuse(args, run), args.name or "generative_trained")
        logger.info("wrote %s", path)
        return
    result = {"structures": structures, "trained": trained, "prompts": prompts,
              "fusion-sweep": fusion_sweep, "keys": keys,
              "keys-grid": keys_grid}[args.part](args)
    path = run.save(result)
    logger.info("wrote %s", path)


if __name__ == "__main__":
    main()
