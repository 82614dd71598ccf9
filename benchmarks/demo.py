"""``uniret demo`` timed end to end: BM25 and all-MiniLM-L6-v2 zero-shot on SciFact test, and the demo's wall time.

Runs ``python -m uniret demo [--quick] --output-dir OUT`` in a child process (a fresh interpreter, as a user
would), times it from outside, and records the demo's own ``summary.json`` (metrics of both systems, per-stage
timings). The full demo is the "reproduced published numbers" row: Lucene BM25 (k1 0.9, b 0.4, title + text)
and MiniLM (FAISS flat, max length 256) over the 5,183-document corpus and the 300 test queries.

    python benchmarks/demo.py [--quick] [--out runs/demo] [--result NAME] [--results-dir DIR]

Results: ``benchmarks/results/demo.json`` (``demo_quick.json`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import save_result

# Published SciFact test nDCG@10 the demo should reproduce (references, not measurements):
PUBLISHED = {
    "bm25": {"ndcg@10": 0.6789, "source": "pyserini BEIR regression, BM25 flat (title + text)"},
    "dense (all-MiniLM-L6-v2)": {"ndcg@10": 0.6451, "source": "MTEB leaderboard, all-MiniLM-L6-v2, SciFact"},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="uniret demo --quick (50 queries, 400 documents)")
    ap.add_argument("--out", default=None, help="the demo's output folder (default runs/demo or runs/demo-quick)")
    ap.add_argument("--result", default=None, help="results file name (default demo or demo_quick)")
    ap.add_argument("--results-dir", default=None, help="default benchmarks/results")
    args = ap.parse_args()
    out = Path(args.out or ("runs/demo-quick" if args.quick else "runs/demo"))
    cmd = [sys.executable, "-m", "uniret", "demo", "--output-dir", str(out), *(["--quick"] if args.quick else [])]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env)
    wall = time.perf_counter() - start
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    path = save_result(args.result or ("demo_quick" if args.quick else "demo"), {
        "demo_command": "uniret demo --output-dir " + str(out) + (" --quick" if args.quick else ""),
        "wall_seconds": wall,
        "demo_total_seconds": summary["total_seconds"],
        "dataset": summary["dataset"],
        "quick": summary["quick"],
        "metrics": summary["metrics"],
        "timings": summary["timings"],
        "published": PUBLISHED,
    }, results_dir=args.results_dir)
    print(f"{wall:.0f} s wall -> {path}")


if __name__ == "__main__":
    main()
