"""Hybrid retrieval from saved evaluation runs (issue 8): fuse the runs of two or more ``uniret eval`` reports with
the one fusion function (:func:`uniret.scores.fuse_runs`, which mining's hybrid and the ``hybrid`` family use) and
score each single run and each fusion on the same qrels.

Fusions: reciprocal rank fusion (k = 60, equal weights) and min-max interpolation with equal weights; neither has
a weight tuned on the test queries.

    python benchmarks/sparse_hybrid.py --data scifact --run dense=EV_DENSE --run sparse=EV_SPARSE [--name NAME]

Each ``EV`` is an evaluation directory holding ``run.trec`` and ``report.json`` (depth 1000).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from _common import BenchmarkRun

logger = logging.getLogger("sparse_hybrid")
METRICS = ("ndcg@10", "recall@100", "mrr@10", "map@100")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="scifact")
    ap.add_argument("--split", default="test")
    ap.add_argument("--run", action="append", required=True, metavar="NAME=EVAL_DIR")
    ap.add_argument("--name", default="scifact_sparse_hybrid", help="results file name")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from uniret.data import load_beir
    from uniret.eval.metrics import evaluate
    from uniret.scores import fuse_runs
    from uniret.trec import read_trec_run

    run_record = BenchmarkRun(args.name)
    qrels = load_beir(args.data).qrels(args.split).judgements
    runs: dict[str, Any] = {}
    sources: dict[str, Any] = {}
    for spec in args.run:
        name, _, folder = spec.partition("=")
        if not folder:
            ap.error(f"--run {spec!r}: expected NAME=EVAL_DIR")
        runs[name] = read_trec_run(Path(folder) / "run.trec")
        report = json.loads((Path(folder) / "report.json").read_text(encoding="utf-8"))
        sources[name] = {"eval_dir": folder, "system": report.get("system") or report.get("name"),
                         "reported_ndcg@10": report["metrics"]["ndcg@10"], "config": report.get("config")}
    if len(runs) < 2:
        ap.error("give at least two runs to fuse")
    rows: dict[str, dict[str, float]] = {}
    for name, run in runs.items():
        rows[name] = dict(evaluate(qrels, run, METRICS))  # type: ignore[arg-type]
    members = list(runs.values())
    rows["rrf(" + "+".join(runs) + ")"] = dict(evaluate(qrels, fuse_runs(members, "rrf"), METRICS))  # type: ignore[arg-type]
    rows["minmax(" + "+".join(runs) + ")"] = dict(evaluate(  # type: ignore[arg-type]
        qrels, fuse_runs(members, "interpolate", normalization="minmax"), METRICS))
    best_single = max(rows[n]["ndcg@10"] for n in runs)
    best_fused = max(v["ndcg@10"] for k, v in rows.items() if k not in runs)
    path = run_record.save({"data": args.data, "split": args.split, "sources": sources, "rows": rows,
                            "best_single_ndcg@10": best_single, "best_fused_ndcg@10": best_fused,
                            "fusion_beats_best_single": best_fused > best_single})
    for name, row in rows.items():
        logger.info("%-32s nDCG@10 %.4f  R@100 %.4f", name, row["ndcg@10"], row["recall@100"])
    logger.info("-> %s", path)


if __name__ == "__main__":
    main()
