"""SciFact nDCG@10 of the dense encoder on each inference backend, on the full corpus (test split).

Each backend indexes the whole corpus and answers the test queries exactly as
``uniret eval --data scifact --retriever dense --backend BACKEND`` does (max length: the model's 256);
the results give nDCG@10 per backend and the int8 difference from fp32 (the issue's bar: within 0.005).

    python benchmarks/backend_fidelity.py --backends onnx onnx-int8
    python benchmarks/backend_fidelity.py --backends bf16 --name backend_fidelity_bf16
"""

from __future__ import annotations

import argparse
import tempfile
import time

from _common import save_result
from uniret.commands import run_eval
from uniret.data import load_beir
from uniret.families import RetrieverConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default="scifact")
    ap.add_argument("--model", default="all-MiniLM-L6-v2")
    ap.add_argument("--backends", nargs="+", default=["onnx", "onnx-int8"])
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--name", default="backend_fidelity", help="results file name (without .json)")
    args = ap.parse_args()

    dataset = load_beir(args.data)
    rows = {}
    for backend in args.backends:
        cfg = RetrieverConfig(kind="dense", model=args.model, device="cpu", batch_size=args.batch_size,
                              backend=backend)
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as out:
            result = run_eval(dataset, cfg, out + "/report", name=backend)
        seconds = time.perf_counter() - start
        rows[backend] = {"ndcg@10": result.metrics["ndcg@10"], "recall@100": result.metrics["recall@100"],
                         "seconds": seconds, "index_seconds": result.report["timings"]["index_seconds"],
                         "max_length": result.report["retriever"]["encoder"]["max_length"]}
        print(f"{backend}: nDCG@10 {rows[backend]['ndcg@10']:.4f} in {seconds:.0f} s", flush=True)
        result = {"data": args.data, "model": args.model, "documents": len(dataset.corpus),
                  "queries": len(dataset.split_queries("test")), "batch_size": args.batch_size, "backends": rows}
        if "onnx" in rows and "onnx-int8" in rows:
            result["int8_minus_fp32_ndcg@10"] = rows["onnx-int8"]["ndcg@10"] - rows["onnx"]["ndcg@10"]
        if "torch" in rows and "bf16" in rows:
            result["bf16_minus_fp32_ndcg@10"] = rows["bf16"]["ndcg@10"] - rows["torch"]["ndcg@10"]
        path = save_result(args.name, result)  # after each backend: a long run keeps what it measured
        print(f"written to {path}", flush=True)


if __name__ == "__main__":
    main()
