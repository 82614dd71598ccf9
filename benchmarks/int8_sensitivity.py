"""Which matrix products of all-MiniLM-L6-v2 lose most under ONNX Runtime's dynamic int8 quantisation.

The fp32 ONNX export of the ``onnx`` backend is quantised (``uniret.retriever.onnx.quantize_int8``) once per
variant, each variant keeping a different set of matrix products in float; every variant then encodes the same
SciFact documents through the encoder's own batching (length-sorted, sub-batches), and the results give each
variant's cosine to the fp32 embeddings (mean, 1st percentile, min) and its encoding time. The variant
``default`` is what ``onnx-int8`` ships (:data:`uniret.retriever.onnx.INT8_KEEP_FLOAT`). Times are single runs
(compare them only as a rough cost); the cosines are the measurement.

    python benchmarks/int8_sensitivity.py --docs 512
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import save_result
from uniret.data import load_beir
from uniret.retriever import onnx
from uniret.retriever.dense import DenseEncoder

# variant -> regular expression on the node names kept float ("$^" matches none: everything quantised)
VARIANTS: dict[str, str] = {
    "none kept float": r"$^",
    "default": onnx.INT8_KEEP_FLOAT,
    **{f"layer {i} ffn output": rf"layer\.{i}/output/dense/MatMul$" for i in range(6)},
    "all ffn outputs": r"layer\.\d+/output/dense/MatMul$",
    "all ffn inputs": r"intermediate/dense/MatMul$",
    "all attention outputs": r"attention/output/dense/MatMul$",
}


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="scifact")
    ap.add_argument("--model", default="all-MiniLM-L6-v2")
    ap.add_argument("--docs", type=int, default=512, help="the first N documents of the corpus")
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    texts = [d.full_text() for d in load_beir(args.data).corpus][:args.docs]
    encoder = DenseEncoder(args.model, device="cpu", batch_size=args.batch_size, backend="onnx")
    start = time.perf_counter()
    reference = encoder.encode_documents(texts)
    fp32_seconds = time.perf_counter() - start
    source = encoder.session.path
    import onnx as onnx_proto

    graph = onnx_proto.load(str(source), load_external_data=False)
    products = [n.name for n in graph.graph.node if n.op_type in ("MatMul", "Attention")]
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, pattern in VARIANTS.items():
            kept = onnx.int8_float_nodes(graph, pattern)  # the rule quantize_int8 applies
            path = onnx.quantize_int8(source, Path(tmp) / f"{len(rows)}.onnx", keep_float=pattern)
            encoder._session = onnx.OnnxSession(path, threads=encoder.threads)
            start = time.perf_counter()
            out = encoder.encode_documents(texts)
            seconds = time.perf_counter() - start
            cos = cosines(out, reference)
            rows[name] = {"kept_float": kept, "mean_cosine": float(cos.mean()),
                          "p1_cosine": float(np.percentile(cos, 1)), "min_cosine": float(cos.min()),
                          "seconds": seconds}
            print(name, {k: v for k, v in rows[name].items() if k != "kept_float"}, flush=True)
    path = save_result("int8_sensitivity", {
        "data": args.data, "model": args.model, "documents": len(texts), "batch_size": args.batch_size,
        "max_length": encoder.max_length, "threads": encoder.threads, "fp32_seconds": fp32_seconds,
        "matrix_products": len(products), "variants": rows})
    print(f"written to {path}")


if __name__ == "__main__":
    main()
