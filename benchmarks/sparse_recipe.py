"""The sparse recipes on SciFact (issue 8), one results file per row.

Each row trains from its config on SciFact ``train`` minus the 100-query dev split (``uniret train``, through
``run_training``), then is evaluated once on SciFact ``test``, full corpus, with the default sparse engine,
exactly as ``uniret eval --data scifact --retriever sparse --model OUT/ROW/model``: at the saved model's length,
``model.inference_max_length`` (256 in the configs; rows run before that setting existed were evaluated with
``--max-length 256`` and chose their WiSE-FT alpha on dev at the training length, 128).
Besides nDCG@10 each row reports the mean number of non-zero weights per document and per query.

- ``splade``: ``configs/scifact-splade.yaml`` (SPLADE-tiny, the encoder recipe).
- ``inference-free``: ``configs/scifact-splade-inference-free.yaml`` (IDF query side, IDF-aware FLOPS).
- ``inference-free-plain``: the same with plain FLOPS (``flops.idf_aware=false``).
- ``decoder-echo`` / ``decoder-bidirectional``: ``configs/scifact-splade-decoder.yaml`` (SmolLM2-135M) with
  ``model.variant`` set; hours on 2 CPU cores, meant for a GPU machine (``--smoke`` checks the path here).

``--records FILE`` trains every row on ready training records (``train_records.jsonl`` of an earlier run of the
same record stage: mined negatives and teacher scores) instead of mining and scoring again; the rows then differ
only in the model and the regulariser, and the results file records the overrides.

    python benchmarks/sparse_recipe.py [--rows splade,inference-free,inference-free-plain] [--out runs/sparse_recipe]
                                       [--records runs/sparse_recipe/records/train_records.jsonl]
    python benchmarks/sparse_recipe.py --smoke --rows decoder-echo --out runs/sparse_smoke   # a slice, 2 steps
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from dense_recipe import SMOKE_OVERRIDES, smoke_dataset

from _common import REPO, RESULTS, BenchmarkRun
from uniret.config import load_config, to_dict
from uniret.train.config import TrainConfig

CONFIGS = REPO / "configs"
ROWS: dict[str, tuple[str, list[str]]] = {  # row -> (config, overrides)
    "splade": ("scifact-splade.yaml", []),
    "inference-free": ("scifact-splade-inference-free.yaml", []),
    "inference-free-plain": ("scifact-splade-inference-free.yaml", ["flops.idf_aware=false"]),
    "decoder-echo": ("scifact-splade-decoder.yaml", ["model.variant=echo"]),
    "decoder-bidirectional": ("scifact-splade-decoder.yaml", ["model.variant=bidirectional"]),
}
logger = logging.getLogger("sparse_recipe")


def evaluate_test(data: str, model_dir: Path, out: Path, max_length: int | None = None) -> dict[str, Any]:
    """The full-corpus test evaluation, plus the sparsity of the indexed documents and the test queries.
    ``max_length`` None: the saved model's own length (``model.inference_max_length``), as ``uniret eval``."""
    from uniret import families
    from uniret.commands import RetrieverConfig
    from uniret.data import load_beir
    from uniret.eval.runner import evaluate_backend

    dataset = load_beir(data)
    cfg = RetrieverConfig(kind="sparse", model=str(model_dir), max_length=max_length)
    backend = families.get("sparse").build_backend(cfg)
    start = time.perf_counter()
    result = evaluate_backend(backend, dataset, split="test", name="sparse", output_dir=out,
                              config={"retriever": to_dict(cfg), "family": "sparse", "split": "test"})
    wall = time.perf_counter() - start
    queries = list(dataset.split_queries("test").values())
    return {"test": result.metrics, "eval_wall_seconds": wall, "sparsity": sparsity(backend, queries),
            "engine": backend.describe(), "eval_max_length": backend.encoder.max_length}


def sparsity(backend: Any, queries: list[str]) -> dict[str, float]:
    """Mean non-zero weights per indexed document (as the engine stores them: quantised) and per query (as
    encoded)."""
    from uniret.retriever.splade import mean_nonzeros

    q = backend.encoder.encode_queries(queries)
    return {"terms_per_document": backend.sparsity()["mean_nnz_per_doc"], "terms_per_query": mean_nonzeros(q),
            "queries": len(q)}


def run_row(cfg: TrainConfig, out: Path) -> dict[str, Any]:
    from uniret.train.pipeline import run_training

    start = time.perf_counter()
    summary = run_training(cfg, out)
    train_wall = time.perf_counter() - start
    info = evaluate_test(cfg.data.data, out / "model", out / "test")
    return {
        "steps_trained": summary["steps"], "time_limited": summary.get("time_limited", False),
        "train_seconds": summary["train_seconds"], "prep_seconds": summary["prep_seconds"],
        "examples_per_second": summary["examples_per_second"], "final_loss": summary["final_loss"],
        "train_wall_seconds": train_wall, "train_total_seconds": summary.get("total_seconds"),
        "records": summary["stats"].get("records"), "dev": summary.get("dev"),
        "interpolation": summary.get("interpolation"),  # the WiSE-FT sweep: alphas, the chosen one, why
        "ood": summary.get("ood"),  # eval.ood: the model before and after training, per collection
        **info,
        "config_resolved": to_dict(cfg),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="splade,inference-free,inference-free-plain",
                    help=f"comma-separated subset of {','.join(ROWS)}")
    ap.add_argument("--out", default="runs/sparse_recipe", help="run folders (one per row)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    ap.add_argument("--records", default=None, help="ready training records (skips mining and teachers)")
    ap.add_argument("--tag", default="", help="a label for a variant of the rows (e.g. a setting under test): the "
                    "results file is scifact_sparse_ROW_TAG.json and the run folder OUT/ROW_TAG")
    ap.add_argument("--smoke", action="store_true",
                    help="a SciFact slice and 2 steps, results under OUT/results (checks the script, measures nothing)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from uniret.cli import parse_overrides

    names = [n.strip() for n in args.rows.split(",") if n.strip()]
    if unknown := [n for n in names if n not in ROWS]:
        ap.error(f"unknown row(s) {', '.join(unknown)}; choose from {', '.join(ROWS)}")
    out = Path(args.out)
    results_dir = None
    smoke: list[str] = []
    if args.smoke:
        smoke = [f"data.data={smoke_dataset(out)}", *SMOKE_OVERRIDES, "model.max_length=32"]
        results_dir = out / "results"
        assert results_dir.resolve() != RESULTS.resolve()
    if args.tag and not args.tag.replace("-", "").replace("_", "").isalnum():
        ap.error(f"--tag {args.tag!r}: letters, digits, - and _ only (it names a file)")
    suffix = f"_{args.tag.replace('-', '_')}" if args.tag else ""
    for name in names:
        config, row_overrides = ROWS[name]
        overrides = [*smoke, *row_overrides, *args.set]
        if args.records:
            overrides += [f"data.train_file={Path(args.records).resolve()}", "teachers=null", "mining=null"]
        cfg = load_config(CONFIGS / config, TrainConfig, overrides=parse_overrides(overrides))
        run = BenchmarkRun(f"scifact_sparse_{name.replace('-', '_')}{suffix}" + ("_smoke" if args.smoke else ""),
                           results_dir=results_dir)
        row_dir = out / (f"{name}_{args.tag}" if args.tag else name)
        logger.info("row %s -> %s", name, row_dir)
        info = run_row(cfg, row_dir)
        path = run.save({"row": name, **({"tag": args.tag} if args.tag else {}), "smoke": args.smoke, "config": f"configs/{config}", "overrides": overrides,
                         "data": cfg.data.data, "steps": cfg.trainer.max_steps, "batch_size": cfg.trainer.batch_size,
                         "run_dir": str(row_dir), **info})
        logger.info("row %s: test nDCG@10 %.4f, %.1f terms/doc, %.1f terms/query -> %s", name,
                    info["test"]["ndcg@10"], info["sparsity"]["terms_per_document"],
                    info["sparsity"]["terms_per_query"], path)


if __name__ == "__main__":
    main()
