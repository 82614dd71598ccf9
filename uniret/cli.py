"""``uniret`` command line: a thin layer that parses arguments into configs and calls
:mod:`uniret.commands`. Each wing is imported lazily inside its command."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from uniret import __version__
from uniret.errors import UniretError

logger = logging.getLogger("uniret")


def _add_retriever_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--retriever", choices=("bm25", "dense"), required=required, help="which retriever")
    p.add_argument("--model", default=None, help="dense model: alias (all-MiniLM-L6-v2), local folder or hub name")
    p.add_argument("--index-type", default="flat", help="dense index: flat | hnsw | ivf-pq | a faiss factory string")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=256, help="dense: max tokens per text")
    p.add_argument("--cache-embeddings", action="store_true",
                   help="dense: reuse document embeddings cached under $UNIRET_CACHE")


def _retriever_config(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from uniret.commands import RetrieverConfig

    kw = {"kind": args.retriever, "index_type": args.index_type, "device": args.device,
          "batch_size": args.batch_size, "max_length": args.max_length, "cache_embeddings": args.cache_embeddings}
    if args.model:
        kw["model"] = args.model
    return RetrieverConfig(**kw)


def cmd_index(args: argparse.Namespace) -> int:
    from uniret.commands import build_index

    manifest = build_index(args.data, _retriever_config(args), args.output)
    print(f"indexed {manifest['num_docs']} documents ({manifest['kind']}) into {args.output}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from uniret.commands import search_index

    hits = search_index(args.index, args.query, k=args.k, device=args.device)
    if not hits:
        print("no hits")
    for rank, (doc, score) in enumerate(hits, 1):
        title = doc.title or doc.text[:80]
        print(f"{rank:>3}  {score:10.4f}  {doc.id}  {title}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from uniret.commands import run_eval
    from uniret.eval.metrics import DEFAULT_METRICS
    from uniret.eval.report import metrics_table

    cfg = _retriever_config(args)
    result = run_eval(args.data, cfg, args.output_dir, split=args.split, index_dir=args.index,
                      model_given=args.model is not None, depth=args.depth, rerank=args.rerank,
                      rerank_depth=args.rerank_depth, rerank_fusion=args.rerank_fusion)
    print(metrics_table({result.name: result.metrics}, [*DEFAULT_METRICS, "p@10"]))
    print(f"report: {args.output_dir}/report.json")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from uniret.commands import run_demo

    result = run_demo(args.output_dir, data=args.data, quick=args.quick, model=args.model, device=args.device,
                      batch_size=args.batch_size, cache_embeddings=args.cache_embeddings)
    print(result.table)
    print(f"\nreport: {result.output_dir} (summary.md, metrics.png, bm25/, dense/); took {result.seconds:.0f} s")
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
    summary = run_training(cfg, args.output_dir)
    print(f"trained {summary['steps']} steps in {summary['train_seconds']:.0f} s "
          f"({summary['examples_per_second']:.1f} examples/s); model: {args.output_dir}/model")
    if "dev" in summary:
        print("dev: " + ", ".join(f"{k}={v:.4f}" for k, v in summary["dev"].items() if k in ("ndcg@10", "recall@100")))
    return 0


def cmd_mine(args: argparse.Namespace) -> int:
    from uniret.config import load_config
    from uniret.train.mining import MiningConfig, run_mining

    overrides = parse_overrides(args.set)
    for name in ("retriever", "model", "k", "filter", "num_negatives", "sampling", "split", "device"):
        value = getattr(args, name)
        if value is not None:
            overrides[name] = value
    if args.teacher:
        overrides["teachers"] = args.teacher
    cfg = load_config(args.config, MiningConfig, overrides=overrides)
    stats = run_mining(args.data, args.output, cfg)
    print(f"mined {stats['negatives']} negatives for {stats['queries']} queries into {args.output}")
    print("removed per filter: " + ", ".join(f"{k}={v}" for k, v in stats["removed"].items()))
    print(f"statistics: {stats['output']}.stats.json")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="uniret", description=__doc__)
    parser.add_argument("--version", action="version", version=f"uniret {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("index", help="build and save a search index from a BEIR corpus")
    p.add_argument("--data", required=True, help="BEIR directory or packaged data set name (scifact)")
    _add_retriever_args(p)
    p.add_argument("--output", required=True, help="index directory to write")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("search", help="search a saved index")
    p.add_argument("--index", required=True)
    p.add_argument("--query", required=True)
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("eval", help="evaluate a retriever on a BEIR split and write a report")
    p.add_argument("--data", required=True, help="BEIR directory or packaged data set name (scifact)")
    p.add_argument("--split", default="test")
    _add_retriever_args(p)
    p.add_argument("--index", default=None, help="a saved index to search instead of indexing the corpus")
    p.add_argument("--depth", type=int, default=1000, help="hits retrieved per query")
    p.add_argument("--rerank", default=None, help="a cross-encoder reranker folder: re-score the top hits")
    p.add_argument("--rerank-depth", type=int, default=100, help="hits per query the reranker re-scores")
    p.add_argument("--rerank-fusion", type=float, default=None, metavar="W",
                   help="final score = W x min-max(reranker) + (1 - W) x min-max(first stage), per query")
    p.add_argument("--output-dir", required=True)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("train", help="train a retriever from a YAML recipe")
    p.add_argument("--config", required=True, help="YAML file (see configs/)")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set trainer.max_steps=10 (repeatable)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("mine", help="mine hard negatives (and teacher scores) into training JSONL")
    p.add_argument("--data", required=True, help="BEIR directory or packaged data set name (scifact)")
    p.add_argument("--output", required=True, help="training records to write (.jsonl)")
    p.add_argument("--config", default=None, help="YAML file with MiningConfig fields")
    p.add_argument("--retriever", choices=("bm25", "dense", "hybrid"), default=None)
    p.add_argument("--model", default=None, help="dense / hybrid: the encoder")
    p.add_argument("-k", type=int, default=None, help="candidates per query (default 100)")
    p.add_argument("--filter", default=None,
                   help="none | absolute | relative | rank | teacher, or a comma-separated chain")
    p.add_argument("--num-negatives", type=int, default=None)
    p.add_argument("--sampling", choices=("top", "random"), default=None)
    p.add_argument("--split", default=None)
    p.add_argument("--teacher", action="append", default=[],
                   help="bm25 | dense[:model] | splade[:model] | cross-encoder:folder (repeatable: an ensemble)")
    p.add_argument("--device", default=None)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any other MiningConfig field, e.g. --set relative_margin=0.9")
    p.set_defaults(func=cmd_mine)

    p = sub.add_parser("demo", help="the main job: BM25 vs a dense embedder on the shipped SciFact")
    p.add_argument("--data", default="scifact")
    p.add_argument("--quick", action="store_true", help="a small slice (50 queries, 400 documents)")
    p.add_argument("--model", default="all-MiniLM-L6-v2")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--cache-embeddings", action="store_true")
    p.add_argument("--output-dir", default="reports/demo")
    p.set_defaults(func=cmd_demo)
    return parser


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
    except (UniretError, FileNotFoundError, ValueError) as e:
        print(f"uniret {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
