"""``uniret`` command line: a thin layer that parses arguments into configs and calls the functions of
``uniret.commands``. Each wing is imported lazily inside its command."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from uniret import __version__
from uniret.errors import UniretError

logger = logging.getLogger("uniret")

DESCRIPTION = """\
uniret trains retrievers, builds search indexes and evaluates them, offline.

Start here:
  uniret demo                                   every family side by side on the shipped SciFact
  uniret index --data scifact --retriever bm25 --output idx/scifact-bm25
  uniret search --index idx/scifact-bm25 --query "vitamin D and bone density"
  uniret eval --data scifact --index idx/scifact-bm25 --output-dir reports/bm25
  uniret train --config configs/scifact-dense.yaml --output-dir runs/dense

Each command has its own --help. Data sets are BEIR directories (corpus.jsonl, queries.jsonl,
qrels/<split>.tsv) or the name of a shipped one (scifact).
"""


def _families_help() -> str:
    from uniret import families

    return "retriever families:\n" + "\n".join("  " + line for line in families.describe()) + "\n"


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (the CLI's and the benchmarks' counts)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


def _add_retriever_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    from uniret import families

    names = families.names(searchable=True)
    p.add_argument("--retriever", choices=names, required=required, metavar="FAMILY",
                   help=f"retriever family: {' | '.join(names)}" + ("" if required else
                        " (not needed with --index: the index's manifest decides)"))
    p.add_argument("--model", default=None,
                   help="encoder: alias (all-MiniLM-L6-v2, splade-tiny), local folder or hub name (default: the "
                        "family's own: dense all-MiniLM-L6-v2, sparse splade-tiny)")
    p.add_argument("--index-type", default="flat",
                   help="dense: flat | hnsw | ivf-pq | a faiss factory string (checked before encoding)")
    p.add_argument("--engine", default="auto",
                   help="sparse: auto (the fastest exact engine installed: pisa, else lucene) | pisa | lucene | "
                        "seismic (approximate)")
    p.add_argument("--query-scale", type=positive_int, default=None,
                   help="sparse: quantise queries at this scale (default: the documents' 100, recorded in the "
                        "index). PISA gets a term of weight w as w copies, so x20 searches faster for a slightly "
                        "coarser ranking (BENCHMARKS.md, 'Learned sparse')")
    p.add_argument("--top-k", type=positive_int, default=None,
                   help="sparse: keep the k largest weights of each document and query vector (default: the "
                        "model's saved setting, none for splade-tiny); recorded in the index")
    p.add_argument("--threshold", type=_non_negative_float, default=None,
                   help="sparse: drop weights at or below this value (default: the model's saved setting, 0)")
    p.add_argument("--keys", default=None,
                   help="generative: the n-gram keys documents are ranked from, comma-separated: beams (the decoded "
                        "identifiers), query (the query's word n-grams, scored by the LM), unigrams (the LM's "
                        "first-step tokens); default: the model's saved setting; recorded in the index")
    p.add_argument("--search-options", default=None,
                   help="generative: how the keys rank documents, NAME=VALUE comma-separated, e.g. "
                        "length_norm=0.5,alpha=1 (alpha, smoothing, beta, query_words, length_norm, tf_k1); default: the "
                        "model's saved setting; recorded in the index")
    p.add_argument("--device", default="auto", help="auto (a GPU when present) | cpu | cuda | cuda:N")
    p.add_argument("--batch-size", type=positive_int, default=32, help="texts per encoder batch")
    p.add_argument("--max-length", type=positive_int, default=None,
                   help="max tokens per text (default: the model's own saved setting)")
    p.add_argument("--cache-embeddings", action="store_true",
                   help="dense: reuse document embeddings cached under $UNIRET_CACHE")
    _add_backend_arg(p, default=None)


def _add_backend_arg(p: argparse.ArgumentParser, default: str | None, default_text: str | None = None) -> None:
    from uniret.runtime import INFERENCE_BACKENDS

    p.add_argument("--backend", choices=INFERENCE_BACKENDS, default=default,
                   help="encoder inference backend: torch | bf16 (torch under bfloat16 autocast: fast on AMX/AVX512-BF16 "
                        "CPUs and GPUs) | onnx (ONNX Runtime fp32) | onnx-int8 (dynamic int8); "
                        f"default {default_text or default or 'torch, or with --index the one it was built with'}")


def _retriever_config(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from uniret.commands import RetrieverConfig

    if args.retriever is None:
        return None
    from uniret import families

    chosen = families.get(args.retriever)
    for owner in families.families():  # options only another family reads: refused rather than ignored
        for name in owner.options:
            if name not in chosen.options and getattr(args, name, None) is not None:
                raise ValueError(f"--{name.replace('_', '-')} applies to --retriever {owner.name} only, "
                                 f"not --retriever {args.retriever}")
    kw = {"kind": args.retriever, "index_type": args.index_type, "engine": args.engine, "device": args.device,
          "batch_size": args.batch_size, "max_length": args.max_length, "cache_embeddings": args.cache_embeddings,
          "backend": args.backend or "torch", "query_scale": args.query_scale, "top_k": args.top_k,
          "threshold": args.threshold, "keys": getattr(args, "keys", None),
          "search_options": getattr(args, "search_options", None)}
    if args.model:
        kw["model"] = args.model
    if getattr(args, "fusion", None):
        kw["fusion"] = args.fusion
    for name in ("shard_size", "shards_dir"):
        if getattr(args, name, None) is not None:
            kw[name] = getattr(args, name)
    return RetrieverConfig(**kw)


def cmd_index(args: argparse.Namespace) -> int:
    from uniret.commands import build_index

    manifest = build_index(args.data, _retriever_config(args), args.output,
                           allow_whitespace_ids=args.allow_whitespace_ids)
    if manifest is None:  # a torchrun rank other than the main one: it encoded its shards
        return 0
    print(f"indexed {manifest['num_docs']} documents ({manifest['kind']}) into {args.output}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from uniret.commands import search_index_explained

    hits = search_index_explained(args.index, args.query, k=args.k, device=args.device, top_terms=5)
    if not hits:
        print("no hits")
    for rank, (doc, score, terms) in enumerate(hits, 1):
        title = doc.title or doc.text[:80]
        print(f"{rank:>3}  {score:10.4f}  {doc.id}  {title}")
        if terms:  # backends that explain their hits (sparse): the top matching terms
            print("       matched: " + ", ".join(f"{t} {w:.2f}" for t, w in terms.items()))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from uniret.commands import run_eval
    from uniret.eval.metrics import DEFAULT_METRICS
    from uniret.eval.report import metrics_table

    indexes = args.index or []
    if len(indexes) > 1 or (args.retriever == "hybrid" and indexes):
        if args.retriever not in (None, "hybrid"):
            raise ValueError(f"several --index are fused as a hybrid: use --retriever hybrid, not {args.retriever}")
        if len(indexes) < 2:
            raise ValueError("--retriever hybrid with --index needs two or more --index (or a saved hybrid index "
                             "without --retriever)")
        args.retriever = None
    index = indexes if len(indexes) > 1 else (indexes[0] if indexes else None)
    cfg = _retriever_config(args)
    if cfg is None and index is None:
        raise ValueError("--retriever is needed when no --index is given")
    for name in ("keys", "search_options"):
        if index is not None and getattr(args, name, None) is not None:
            raise ValueError(f"--{name.replace('_', '-')} applies when an index is built (--retriever generative "
                             "without --index); a saved index searches as its manifest records")
    if cfg is None and isinstance(index, str) and (args.model is not None or args.max_length is not None):
        from uniret.commands import RetrieverConfig, backend_family_of_index

        cfg = RetrieverConfig(kind=backend_family_of_index(index), index_type=args.index_type,
                              device=args.device, batch_size=args.batch_size, max_length=args.max_length,
                              backend=args.backend or "torch", **({"model": args.model} if args.model else {}))
    result = run_eval(args.data, cfg, args.output_dir, split=args.split, index_dir=index, fusion=args.fusion,
                      inference_backend=args.backend,
                      model_given=args.model is not None or args.max_length is not None, depth=args.depth,
                      rerank=args.rerank, rerank_depth=args.rerank_depth, rerank_fusion=args.rerank_fusion,
                      allow_corpus_mismatch=args.allow_corpus_mismatch,
                      allow_whitespace_ids=args.allow_whitespace_ids, use_mteb=args.mteb)
    print(metrics_table({result.name: result.metrics}, [*DEFAULT_METRICS, "p@10"]))
    encoder = (result.report.get("retriever") or {}).get("encoder") or {}
    if encoder.get("max_length"):
        print(f"max length: {encoder['max_length']} tokens")
    print(f"report: {args.output_dir}/report.json")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from uniret.commands import run_demo

    result = run_demo(args.output_dir, data=args.data, quick=args.quick, model=args.model, device=args.device,
                      batch_size=args.batch_size, cache_embeddings=args.cache_embeddings, backend=args.backend,
                      train=args.train, train_steps=args.train_steps, train_batch_size=args.train_batch_size)
    print(result.table)
    if result.win_loss:
        print("\ntrained vs zero-shot dense, per query (ndcg@10): "
              + ", ".join(f"{v} {k}" for k, v in result.win_loss.items()))
    for name, why in result.not_shown.items():
        print(f"not shown: {name}, {why}")
    print(f"\nreport: {result.output_dir} (summary.md, metrics.png, trained_vs_zero_shot.png, one folder per "
          f"system); took {result.seconds:.0f} s")
    return 0


def parse_named_runs(specs: list[str]) -> dict[str, str]:
    """``--run NAME=PATH`` (or ``PATH``: named after its directory when it is ``run.trec`` or a report directory,
    else after the file) as ``{name: path}``; a name given twice is an error."""
    from pathlib import Path

    out: dict[str, str] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            p = Path(spec)
            name, path = (p.parent.name if p.name == "run.trec" else p.name if p.is_dir() else p.stem), spec
        if not name or not path:
            raise ValueError(f"--run expects NAME=PATH or PATH, got {spec!r}")
        if name in out:
            raise ValueError(f"--run: two runs are named {name!r}; name them with NAME=PATH")
        out[name] = path
    return out


def cmd_downsample(args: argparse.Namespace) -> int:
    from uniret.eval.cheap import run_downsample

    stats = run_downsample(args.data, parse_named_runs(args.run), args.output_dir, k=args.k, split=args.split,
                           allow_whitespace_ids=args.allow_whitespace_ids)
    print(f"kept {stats['documents']} of {stats['full_documents']} documents ({stats['reduction']:.1f}x fewer): "
          f"{stats['judged_documents']} judged + the top {stats['k']} of {', '.join(stats['runs'])} for "
          f"{stats['queries']} {stats['split']} queries")
    print(f"data set: {args.output_dir} (evaluate with: uniret eval --data {args.output_dir} ...)")
    return 0


def parse_overrides(pairs: list[str]) -> dict[str, object]:
    import yaml

    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--set expects key=value, got {pair!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def cmd_train(args: argparse.Namespace) -> int:
    from uniret.config import load_config
    from uniret.train.config import TrainConfig
    from uniret.train.pipeline import run_training

    cfg = load_config(args.config, TrainConfig, overrides=parse_overrides(args.set))
    summary = run_training(cfg, args.output_dir, overwrite=args.overwrite)
    budget = f" (stopped by trainer.max_seconds={cfg.trainer.max_seconds:g})" if summary.get("time_limited") else ""
    print(f"trained {summary['steps']} steps{budget} in {summary['train_seconds']:.0f} s "
          f"({summary['examples_per_second']:.1f} examples/s); model: {args.output_dir}/model")
    if "dev" in summary:
        print("dev: " + ", ".join(f"{k}={v:.4f}" for k, v in summary["dev"].items() if k in ("ndcg@10", "recall@100")))
    return 0


def cmd_mine(args: argparse.Namespace) -> int:
    from uniret.config import load_config
    from uniret.train.mining import MiningConfig, run_mining

    overrides = {k.removeprefix("mining."): v for k, v in parse_overrides(args.set).items()}
    for name in ("retriever", "model", "k", "filter", "num_negatives", "sampling", "split", "device", "backend"):
        value = getattr(args, name)
        if value is not None:
            overrides[name] = value
    if args.teacher:
        overrides["teachers"] = args.teacher
    cfg = load_config(args.config, MiningConfig, overrides=overrides)
    from uniret.atomic import check_output_file, output_lock
    from uniret.data import load_beir

    dataset = load_beir(args.data)
    check_output_file(args.output, protect=[dataset.root], owned_if=".stats.json", what="--output")
    with output_lock(args.output):
        stats = run_mining(dataset, args.output, cfg)
    print(f"mined {stats['negatives']} negatives for {stats['queries']} queries into {args.output}")
    print("removed per filter: " + ", ".join(f"{k}={v}" for k, v in stats["removed"].items()))
    print(f"statistics: {stats['output']}.stats.json")
    return 0


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="uniret", description=DESCRIPTION, formatter_class=fmt,
                                     epilog=_families_help())
    parser.add_argument("--version", action="version", version=f"uniret {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    data_help = "BEIR directory (corpus.jsonl, queries.jsonl, qrels/) or a shipped data set name (scifact)"
    ws_help = ("load a data set whose ids contain spaces (e.g. LIMIT's person names); run.trec then "
               "percent-encodes them")

    p = sub.add_parser("index", help="build and save a search index from a BEIR corpus", formatter_class=fmt,
                       description="Index a corpus with one retriever family and save it as a directory with "
                                   "manifest.json.", epilog=_families_help())
    p.add_argument("--data", required=True, help=data_help)
    p.add_argument("--allow-whitespace-ids", action="store_true", help=ws_help)
    _add_retriever_args(p)
    p.add_argument("--output", required=True,
                   help="index directory to write; an existing one is replaced only if uniret wrote it")
    p.add_argument("--shard-size", type=positive_int, default=None,
                   help="dense: stream the corpus through shards of this many documents on disk (memory-mapped "
                        ".npy; a rerun after a crash skips finished shards; under torchrun each rank encodes "
                        "its share: torchrun --nproc-per-node N -m uniret index ... --shard-size S)")
    p.add_argument("--shards-dir", default=None,
                   help="where the shards go (default OUTPUT.shards, removed once the index is saved)")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("search", help="search a saved index and print the top hits",
                       description="Search a saved index for one query; the index's manifest names its family "
                                   "and encoder.")
    p.add_argument("--index", required=True, help="a saved index directory (from uniret index)")
    p.add_argument("--query", required=True, help="the query text")
    p.add_argument("-k", type=positive_int, default=10, help="number of hits to show (default 10)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (for encoder families)")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("eval", help="evaluate a retriever on a BEIR split and write a report", formatter_class=fmt,
                       description="Index the corpus (or load --index) and evaluate one split: nDCG, recall, "
                                   "MRR, MAP as trec_eval computes them; writes report.json/.md, run.trec, "
                                   "per_query.json.", epilog=_families_help())
    p.add_argument("--data", required=True, help=data_help)
    p.add_argument("--allow-whitespace-ids", action="store_true", help=ws_help)
    p.add_argument("--split", default="test", help="the qrels split to evaluate (qrels/<split>.tsv; default test)")
    _add_retriever_args(p, required=False)
    p.add_argument("--index", action="append", default=None,
                   help="a saved index to search instead of indexing the corpus; give it twice or more (with "
                        "--retriever hybrid) to fuse several")
    p.add_argument("--fusion", default=None,
                   help="hybrid: rrf | rrf:K | minmax:W | zscore:W (two indexes: the first gets W, the second "
                        "1 - W; or W1,W2,... one per index); default rrf")
    p.add_argument("--allow-corpus-mismatch", action="store_true",
                   help="evaluate an --index built from another corpus anyway (recorded in the report)")
    p.add_argument("--depth", type=positive_int, default=1000, help="hits retrieved per query (default 1000)")
    p.add_argument("--rerank", default=None, help="a cross-encoder reranker folder: re-score the top hits")
    p.add_argument("--rerank-depth", type=positive_int, default=100,
                   help="hits per query the reranker re-scores (default 100)")
    p.add_argument("--rerank-fusion", type=float, default=None, metavar="W",
                   help="final score = W x min-max(reranker) + (1 - W) x min-max(first stage), per query")
    p.add_argument("--mteb", action="store_true",
                   help="evaluate through mteb (the eval extra): the data set becomes a local mteb retrieval task, "
                        "the retriever an mteb search model; report.json has the same metric keys")
    p.add_argument("--output-dir", required=True, help="report directory to write")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("train", help="train a retriever from a YAML recipe",
                       description="Run a training recipe: records (qrels, mining or a JSONL file), teacher "
                                   "scores, training, averaging; saves OUT/model in sentence-transformers format. "
                                   "A rerun resumes from the last checkpoint when the config and records match.")
    p.add_argument("--config", required=True, help="YAML file (see configs/)")
    p.add_argument("--output-dir", required=True, help="run directory (checkpoints, logs, model)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set trainer.max_steps=10 (repeatable)")
    p.add_argument("--overwrite", action="store_true",
                   help="discard an earlier run in --output-dir instead of resuming it")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("mine", help="mine hard negatives (and teacher scores) into training JSONL",
                       description="Retrieve candidates for each judged query, filter likely false negatives, "
                                   "and write training records; OUTPUT.stats.json counts what each filter removed.")
    p.add_argument("--data", required=True, help=data_help)
    p.add_argument("--output", required=True, help="training records to write (.jsonl)")
    p.add_argument("--config", default=None, help="YAML file with MiningConfig fields")
    p.add_argument("--retriever", default=None, help="bm25 | dense | hybrid (default bm25)")
    p.add_argument("--model", default=None, help="dense / hybrid: the encoder")
    p.add_argument("-k", type=positive_int, default=None, help="candidates per query (default 100)")
    p.add_argument("--filter", default=None,
                   help="none | absolute | relative | rank | teacher, or a comma-separated chain")
    p.add_argument("--num-negatives", type=int, default=None, help="negatives kept per query (default 8)")
    p.add_argument("--sampling", choices=("top", "random"), default=None, help="which survivors to keep")
    p.add_argument("--split", default=None, help="the qrels split whose queries are mined (default train)")
    p.add_argument("--teacher", action="append", default=[],
                   help="bm25 | dense[:model] | splade[:model] | cross-encoder:folder (repeatable: an ensemble)")
    p.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N")
    _add_backend_arg(p, default=None)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any MiningConfig field, plain or dotted as in train (mining.relative_margin=0.9)")
    p.set_defaults(func=cmd_mine)

    p = sub.add_parser("demo", help="the main job: every family side by side on the shipped SciFact",
                       description="On SciFact test, offline: BM25, zero-shot dense and sparse, a short dense "
                                   "training run of the recipe on the train queries and the trained model, and a "
                                   "hybrid; writes a comparison table, a chart, a per-query win/loss plot of "
                                   "trained vs zero-shot dense and per-system reports.")
    p.add_argument("--data", default="scifact", help=data_help)
    p.add_argument("--quick", action="store_true",
                   help="every stage on a small slice (50 test and 32 train queries, about 330 documents)")
    p.add_argument("--no-train", dest="train", action="store_false",
                   help="skip the training stage (the hybrid fuses BM25 and the zero-shot dense model)")
    p.add_argument("--train-steps", type=positive_int, default=None,
                   help="training steps (default 25, --quick 4)")
    p.add_argument("--train-batch-size", type=positive_int, default=None,
                   help="training batch size (default 32, --quick 8)")
    p.add_argument("--model", default="all-MiniLM-L6-v2", help="the dense encoder")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--batch-size", type=positive_int, default=32, help="texts per encoder batch")
    p.add_argument("--cache-embeddings", action="store_true", help="reuse document embeddings from $UNIRET_CACHE")
    _add_backend_arg(p, default=None, default_text="bf16 where bfloat16 is native (AMX/AVX512-BF16 CPU, GPU), "
                     "else onnx-int8")
    p.add_argument("--output-dir", default="reports/demo", help="report directory (default reports/demo)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("serve", help="serve saved indexes over HTTP (search API and a search page)",
                       formatter_class=fmt,
                       description="An HTTP search service over saved indexes: POST /search, /encode, /rerank, "
                                   "GET /health, /indexes, the search page at /, OpenAPI docs at /docs.\n"
                                   "Example:\n  uniret serve --index idx/scifact-bm25 --index idx/scifact-dense\n"
                                   "  curl -s localhost:8000/search -H 'content-type: application/json' "
                                   "-d '{\"query\": \"vitamin D\", \"k\": 3, \"index\": \"hybrid\"}'")
    p.add_argument("--index", action="append", required=True, metavar="[NAME=]PATH",
                   help="a saved index (repeatable); its name defaults to the directory's name")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=positive_int, default=8000, help="port (default 8000)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (for encoder families)")
    p.add_argument("--reranker", action="append", default=[], metavar="NAME=FOLDER",
                   help="a cross-encoder reranker for POST /rerank and search's 'rerank' (repeatable)")
    p.add_argument("--api-key-env", default=None, metavar="VAR",
                   help="require the API key held in environment variable VAR (header X-API-Key)")
    p.add_argument("--no-micro-batching", action="store_true", help="search each request alone")
    p.add_argument("--max-wait-ms", type=float, default=2.0, help="micro-batching: longest wait for company")
    p.add_argument("--max-batch", type=positive_int, default=64, help="micro-batching: most queries per call")
    p.add_argument("--max-k", type=positive_int, default=1000, help="largest k a request may ask for")
    p.add_argument("--max-queries", type=positive_int, default=64, help="most queries (or texts) per request")
    p.add_argument("--max-body-bytes", type=positive_int, default=1 << 20, help="largest request body")
    p.add_argument("--fusion", default="rrf", help="the fusion of index 'hybrid' (all served indexes fused)")
    p.add_argument("--data", default=None,
                   help="a BEIR data set whose judged queries the search page evaluates (per-query nDCG)")
    p.add_argument("--split", default="test", help="the qrels split of --data (default test)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("downsample", help="cheap evaluation: shrink a corpus to judged documents + pooled hard negatives",
                       formatter_class=fmt,
                       description="Keep one split's judged documents plus each query's top-k documents from "
                                   "several runs (MMTEB-style), and write a BEIR directory that uniret eval can use.\n"
                                   "Example:\n  uniret downsample --data scifact --run bm25=reports/bm25/run.trec "
                                   "--run dense=reports/dense/run.trec -k 50 --output-dir data/scifact-cheap")
    p.add_argument("--data", required=True, help=data_help)
    p.add_argument("--allow-whitespace-ids", action="store_true", help=ws_help)
    p.add_argument("--run", action="append", required=True, metavar="[NAME=]PATH",
                   help="a TREC run on --data's corpus (or a uniret eval report directory holding run.trec) whose "
                        "top-k documents per query are kept (repeatable)")
    p.add_argument("-k", type=positive_int, default=100, help="documents pooled per query from each run (default 100)")
    p.add_argument("--split", default="test", help="the qrels split whose queries are pooled (default test)")
    p.add_argument("--output-dir", required=True, help="BEIR directory to write (with downsample.json)")
    p.set_defaults(func=cmd_downsample)

    p = sub.add_parser("families", help="list the registered retriever families and what each needs",
                       description="List the registered families, and why any of them cannot run here.")
    p.set_defaults(func=cmd_families)
    return parser


def cmd_serve(args: argparse.Namespace) -> int:
    import os

    from uniret.commands import run_service

    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise ValueError(f"--api-key-env {args.api_key_env}: that environment variable is not set or empty")
    run_service(args.index, host=args.host, port=args.port, device=args.device, rerankers=args.reranker,
                api_key=api_key, micro_batching=not args.no_micro_batching, max_wait_ms=args.max_wait_ms,
                max_batch=args.max_batch, max_k=args.max_k, max_queries=args.max_queries,
                max_body_bytes=args.max_body_bytes, fusion=args.fusion, data=args.data, split=args.split)
    return 0


def cmd_families(args: argparse.Namespace) -> int:
    from uniret import families

    for line in families.describe():
        print(line)
    return 0


def _configure_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("faiss.loader", "httpx", "sentence_transformers", "transformers"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def main(argv: Sequence[str] | None = None, command: str | None = None) -> int:
    """Entry point of ``uniret``; ``command`` pins the subcommand (for ``python -m uniret.<wing>``)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if command is not None:
        args_list = [a for a in args_list if a in ("-v", "-vv", "-q", "--verbose", "--quiet")] + [command] + [
            a for a in args_list if a not in ("-v", "-vv", "-q", "--verbose", "--quiet")]
    args = build_parser().parse_args(args_list)
    _configure_logging(args.verbose, args.quiet)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except (UniretError, OSError, ValueError) as e:
        print(f"uniret {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"uniret {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
