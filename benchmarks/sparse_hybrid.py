"""Hybrid retrieval from saved evaluation runs (issue 8): fuse the runs of two or more ``uniret eval`` reports with
the one fusion function (:func:`uniret.scores.fuse_runs`, which mining's hybrid and the ``hybrid`` family use) and
score each single run and each fusion on the same qrels.

Fusions: reciprocal rank fusion (k = 60, equal weights) and min-max interpolation with equal weights. With
``--dev-run`` for each of two members, the interpolation weight of min-max and z-score fusion is also chosen on
dev queries (``--dev-queries``: a JSON list of query ids, e.g. a training run's ``dev_queries.json``, judged in
``--dev-split``) and applied once to the test runs. No weight is ever tuned on the test queries.

    python benchmarks/sparse_hybrid.py --data scifact --run dense=EV_DENSE --run sparse=EV_SPARSE [--name NAME]
    python benchmarks/sparse_hybrid.py --run dense=EV_DENSE --run sparse=EV_SPARSE \
        --dev-run dense=EV_DENSE_TRAIN --dev-run sparse=RUN/dev --dev-queries RUN/dev_queries.json

Each ``EV`` is an evaluation directory holding ``run.trec`` and ``report.json`` (depth 1000); a dev ``EV`` may
hold more queries than the dev ones (e.g. ``uniret eval --split train``): only the dev queries are scored.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from _common import FUSION_WEIGHTS, BenchmarkRun, best_fusion_weight

logger = logging.getLogger("sparse_hybrid")
METRICS = ("ndcg@10", "recall@100", "mrr@10", "map@100")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="scifact")
    ap.add_argument("--split", default="test")
    ap.add_argument("--run", action="append", required=True, metavar="NAME=EVAL_DIR")
    ap.add_argument("--name", default="scifact_sparse_hybrid", help="results file name")
    ap.add_argument("--dev-run", action="append", default=[], metavar="NAME=EVAL_DIR",
                    help="the same member's run on the dev queries (every member, two members)")
    ap.add_argument("--dev-queries", default=None, help="JSON list of the dev query ids")
    ap.add_argument("--dev-split", default="train", help="the qrels split that judges the dev queries")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from uniret.data import load_beir
    from uniret.eval.metrics import evaluate
    from uniret.scores import fuse_runs
    from uniret.trec import read_trec_run

    run_record = BenchmarkRun(args.name)
    dataset = load_beir(args.data)
    qrels = dataset.qrels(args.split).judgements
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
    dev_runs = {}
    for spec in args.dev_run:
        name, _, folder = spec.partition("=")
        if name not in runs or not folder:
            ap.error(f"--dev-run {spec!r}: expected NAME=EVAL_DIR with NAME one of {', '.join(runs)}")
        dev_runs[name] = read_trec_run(Path(folder) / "run.trec")
        sources[name]["dev_eval_dir"] = folder
    if dev_runs and (set(dev_runs) != set(runs) or len(runs) != 2 or not args.dev_queries):
        ap.error("--dev-run needs exactly two --run members, a --dev-run for each, and --dev-queries")
    rows: dict[str, dict[str, float]] = {}
    for name, run in runs.items():
        rows[name] = dict(evaluate(qrels, run, METRICS))  # type: ignore[arg-type]
    members = list(runs.values())
    rows["rrf(" + "+".join(runs) + ")"] = dict(evaluate(qrels, fuse_runs(members, "rrf"), METRICS))  # type: ignore[arg-type]
    rows["minmax(" + "+".join(runs) + ")"] = dict(evaluate(  # type: ignore[arg-type]
        qrels, fuse_runs(members, "interpolate", normalization="minmax"), METRICS))
    selection: dict[str, Any] = {}
    if dev_runs:
        dev_ids = json.loads(Path(args.dev_queries).read_text(encoding="utf-8"))
        judged = dataset.qrels(args.dev_split).judgements
        dev_qrels = {q: judged[q] for q in dev_ids if q in judged}
        missing = [q for q in dev_qrels for r in dev_runs.values() if q not in r]
        if missing:
            raise SystemExit(f"{len(missing)} dev queries have no hits in a --dev-run (e.g. {missing[0]!r}): "
                             "give runs over the dev queries")
        dev_members = [{q: dev_runs[n][q] for q in dev_qrels} for n in runs]
        first = next(iter(runs))
        for norm in ("minmax", "zscore"):
            sweep = {w: evaluate(dev_qrels, fuse_runs(dev_members, "interpolate", [w, 1 - w], normalization=norm),
                                 ["ndcg@10"])["ndcg@10"] for w in FUSION_WEIGHTS}
            w = best_fusion_weight(sweep)
            label = f"{norm}:{w:g} ({first} {w:g}; chosen on dev)"
            rows[label] = dict(evaluate(  # type: ignore[arg-type]
                qrels, fuse_runs(members, "interpolate", [w, 1 - w], normalization=norm), METRICS))
            selection[norm] = {"dev_ndcg@10": {f"{x:g}": v for x, v in sweep.items()}, "chosen_weight": w,
                               "weight_of": first, "row": label}
        selection["dev_queries"] = len(dev_qrels)
    best_single = max(rows[n]["ndcg@10"] for n in runs)
    best_fused = max(v["ndcg@10"] for k, v in rows.items() if k not in runs)
    path = run_record.save({"data": args.data, "split": args.split, "sources": sources, "rows": rows,
                            "dev_selection": selection or None, "best_single_ndcg@10": best_single, "best_fused_ndcg@10": best_fused,
                            "fusion_beats_best_single": best_fused > best_single})
    for name, row in rows.items():
        logger.info("%-32s nDCG@10 %.4f  R@100 %.4f", name, row["ndcg@10"], row["recall@100"])
    logger.info("-> %s", path)


if __name__ == "__main__":
    main()
