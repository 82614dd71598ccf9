"""``uniret demo`` timed end to end: every family on SciFact test, and the demo's wall time.

Runs ``python -m uniret demo [--quick] --output-dir OUT`` in a child process (a fresh interpreter, as a user
would), times it from outside, and records the demo's own ``summary.json`` (metrics of every system, per-stage
times, the training run, the per-query win/loss counts of trained vs zero-shot dense) with the child's CPU time
(user + system) and the load average before and after: the machine may be shared, and a wall time measured
next to other jobs says so. The zero-shot rows of the full demo reproduce published numbers: Lucene BM25 (k1 0.9,
b 0.4, title + text), MiniLM (FAISS flat, max length 256) and SPLADE-tiny over the 5,183-document corpus and the
300 test queries.

    python benchmarks/demo.py [--quick] [--out runs/demo] [--result NAME] [--results-dir DIR]

Results: ``benchmarks/results/demo.json`` (``demo_quick.json`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from _common import save_result

# Published SciFact test nDCG@10 the demo should reproduce (references, not measurements):
PUBLISHED = {
    "bm25": {"ndcg@10": 0.6789, "source": "pyserini BEIR regression, BM25 flat (title + text)"},
    "dense (all-MiniLM-L6-v2, zero-shot)": {"ndcg@10": 0.6451, "source": "MTEB leaderboard, all-MiniLM-L6-v2, SciFact"},
    "sparse (splade-tiny, zero-shot)": {"ndcg@10": 0.6436, "source": "not published: uniret's earlier run, "
                                        "benchmarks/results/sparse_engines.json (splade-tiny, max length 256)"},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="uniret demo --quick (50 queries, 400 documents)")
    ap.add_argument("--out", default=None, help="the demo's output folder (default runs/demo or runs/demo-quick)")
    ap.add_argument("--result", default=None, help="results file name (default demo or demo_quick)")
    ap.add_argument("--results-dir", default=None, help="default benchmarks/results")
    ap.add_argument("--note", default=None, help="a sentence about the conditions (e.g. other jobs running)")
    args = ap.parse_args()
    out = Path(args.out or ("runs/demo-quick" if args.quick else "runs/demo"))
    cmd = [sys.executable, "-m", "uniret", "demo", "--output-dir", str(out), *(["--quick"] if args.quick else [])]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    load_before = [round(x, 2) for x in os.getloadavg()]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env)
    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    load_after = [round(x, 2) for x in os.getloadavg()]
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    path = save_result(args.result or ("demo_quick" if args.quick else "demo"), {
        "demo_command": "uniret demo --output-dir " + str(out) + (" --quick" if args.quick else ""),
        "wall_seconds": wall,
        "demo_total_seconds": summary["total_seconds"],
        "cpu_seconds": {"user": usage.ru_utime, "system": usage.ru_stime},
        "load_average_before": load_before, "load_average_after": load_after,
        "note": args.note,
        "dataset": summary["dataset"],
        "num_docs": summary.get("num_docs"),
        "num_test_queries": summary.get("num_test_queries"),
        "quick": summary["quick"],
        "backend": summary.get("backend"),
        "metrics": summary["metrics"],
        "timings": summary["timings"],
        "stages": summary.get("stages"),
        "training": summary.get("training"),
        "win_loss": summary.get("win_loss"),
        "win_loss_metric": summary.get("win_loss_metric"),
        "not_shown": summary.get("not_shown"),
        "published": PUBLISHED,
    }, results_dir=args.results_dir)
    print(f"{wall:.0f} s wall -> {path}")


if __name__ == "__main__":
    main()
