"""Dense encoding throughput (docs/s) on SciFact: uniret's DenseEncoder against
``SentenceTransformer.encode`` on the same model object, batch size and max length, in one run.

The two encoders alternate over ``--rounds`` rounds on the same documents, so drift in machine speed
hits both; the ratio is total ST time / total uniret time. No embedding cache is used.

    python benchmarks/encode_throughput.py --limit 1500 --rounds 2
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np
import torch

from _common import save_result
from uniret.data import load_beir
from uniret.retriever.dense import DenseEncoder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default="scifact")
    ap.add_argument("--model", default="all-MiniLM-L6-v2")
    ap.add_argument("--limit", type=int, default=1500, help="documents (0 = the whole corpus)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()

    corpus = load_beir(args.data).corpus
    docs = list(itertools.islice(corpus, args.limit or None))
    texts = [d.full_text() for d in docs]
    enc = DenseEncoder(args.model, device="cpu", max_length=args.max_length, batch_size=args.batch_size)
    st = enc.model  # the very same SentenceTransformer object
    st.encode(texts[:64], batch_size=args.batch_size)  # warm-up
    enc.encode_documents(texts[:64], show_progress=False)

    times = {"sentence_transformers": 0.0, "uniret": 0.0}
    for r in range(args.rounds):
        order = ["sentence_transformers", "uniret"] if r % 2 == 0 else ["uniret", "sentence_transformers"]
        for name in order:
            start = time.perf_counter()
            if name == "uniret":
                ours = enc.encode_documents(texts, show_progress=False)
            else:
                ref = st.encode(texts, batch_size=args.batch_size, convert_to_numpy=True)
            times[name] += time.perf_counter() - start
            print(f"round {r + 1} {name}: {times[name]:.1f} s cumulative", flush=True)
    n = len(texts) * args.rounds
    result = {
        "data": args.data, "model": args.model, "documents": len(texts), "rounds": args.rounds,
        "batch_size": args.batch_size, "max_length": args.max_length, "torch_threads": torch.get_num_threads(),
        "docs_per_s": {k: n / v for k, v in times.items()},
        "ratio_uniret_over_st": times["sentence_transformers"] / times["uniret"],
        "max_abs_diff": float(np.abs(ours - ref).max()),
    }
    path = save_result("encode_throughput", result)
    print(f"uniret {result['docs_per_s']['uniret']:.1f} docs/s, sentence-transformers "
          f"{result['docs_per_s']['sentence_transformers']:.1f} docs/s, ratio {result['ratio_uniret_over_st']:.3f} "
          f"(max |diff| {result['max_abs_diff']:.1e}); written to {path}")


if __name__ == "__main__":
    main()
