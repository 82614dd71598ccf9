"""What SPLADE on a decoder-only LM costs on this machine, to plan its run (issue 8).

On the same SciFact documents (a seeded sample, max length 256) it measures encoding throughput (documents/s)
of all-MiniLM-L6-v2 (dense), SPLADE-tiny, and SPLADE on SmolLM2-135M in the echo and bidirectional variants,
plus the seconds of one training step (batch ``--train-batch`` queries, one hard negative each, max length 128,
the decoder recipe's LoRA + gradient checkpointing) for the SPLADE models; then projects the full-corpus
encoding (5,183 documents) and the recipe's training (100 steps of 32) from them.

With ``--slice-queries N`` (default 0: off) it also scores each SPLADE model zero-shot on a SciFact slice: the
first N test queries (sorted ids) against their judged documents plus seeded random others up to
``--slice-docs`` documents, max length 256, exact sparse dot products. Untrained decoder SPLADE is the starting
point of the decoder recipe; the slice says how far training has to move it. A slice is much easier than the
full corpus (fewer distractors), so compare rows within it, not with full-corpus numbers.

    python benchmarks/sparse_decoder_cost.py [--docs 48] [--train-batch 4] [--slice-queries 60 --slice-docs 300]
"""

from __future__ import annotations

import argparse
import logging
import random
import time
from typing import Any

from _common import BenchmarkRun

logger = logging.getLogger("sparse_decoder_cost")
SCIFACT_DOCS = 5183


def _encode_rate(encode: Any, texts: list[str]) -> float:
    encode(texts[:4])  # warm-up
    start = time.perf_counter()
    encode(texts)
    return len(texts) / (time.perf_counter() - start)


def _step_seconds(model: Any, records: list[Any], steps: int = 2) -> float:
    from uniret.train.biencoder import BiEncoderModule, LossConfig
    from uniret.train.losses.flops import FlopsConfig, FlopsRegularizer

    module = BiEncoderModule(model, LossConfig(temperature=1.0, hard_negatives=1),
                             regularizer=FlopsRegularizer(FlopsConfig(query_weight=1e-3, document_weight=1e-3)))
    module.train(True)
    times = []
    for step in range(steps):
        start = time.perf_counter()
        module.step(records, random.Random(step), step)
        times.append(time.perf_counter() - start)
        for p in module.parameters():
            p.grad = None
    return min(times)


def test_slice(data: Any, num_queries: int, num_docs: int) -> tuple[list[str], list[str]]:
    """The zero-shot slice: the first ``num_queries`` test queries (sorted ids), and their judged documents plus
    random others (seed 0) up to ``num_docs`` documents."""
    test = data.qrels("test").judgements
    qids = sorted(test)[:num_queries]
    judged_docs = sorted({d for q in qids for d in test[q]})
    if num_docs < len(judged_docs):
        raise SystemExit(f"--slice-docs {num_docs}: the {len(qids)} queries judge {len(judged_docs)} documents; "
                         "pass at least that many")
    others = sorted(set(data.corpus.ids) - set(judged_docs))
    return qids, judged_docs + random.Random(0).sample(others, num_docs - len(judged_docs))


def _slice_ndcg(model: Any, data: Any, qids: list[str], doc_ids: list[str]) -> dict[str, float]:
    """Zero-shot nDCG@10 and R@100 of ``model`` for ``qids`` over the documents ``doc_ids`` (exact dot products)."""
    import numpy as np
    import scipy.sparse as sp

    from uniret.eval.metrics import evaluate
    from uniret.retriever.splade import to_csr

    docs = data.corpus.subset(doc_ids).to_dict()

    def csr(vectors: list[Any]) -> Any:
        indptr, indices, values = to_csr(vectors)
        return sp.csr_matrix((values, indices, indptr), shape=(len(vectors), model.vocab_size))

    d = csr(model.encode([docs[i].full_text() for i in doc_ids], batch_size=16))
    q = csr(model.encode([data.queries[i] for i in qids], queries=True, batch_size=16))
    scores = (q @ d.T).toarray()
    run = {qid: {doc_ids[j]: float(scores[k, j]) for j in np.argsort(-scores[k], kind="stable")[:100]}
           for k, qid in enumerate(qids)}
    judged = data.qrels("test").judgements
    return evaluate({i: judged[i] for i in qids}, run, ["ndcg@10", "recall@100"])  # type: ignore[return-value]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=48)
    ap.add_argument("--train-batch", type=int, default=4)
    ap.add_argument("--slice-queries", type=int, default=0, help="zero-shot nDCG@10 on this many test queries (0: off)")
    ap.add_argument("--slice-docs", type=int, default=300, help="documents of the zero-shot slice")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch

    from uniret.data import load_beir
    from uniret.retriever.dense import DenseEncoder
    from uniret.retriever.splade import SparseModel
    from uniret.train.records import TrainingRecord

    run = BenchmarkRun("sparse_decoder_cost")
    data = load_beir("scifact")
    docs = list(data.corpus)
    by_id = {d.id: d for d in docs}
    random.Random(0).shuffle(docs)
    texts = [d.full_text() for d in docs[: args.docs]]
    judged = data.qrels("train").judgements
    qids = sorted(judged)[: args.train_batch]
    records = [TrainingRecord(query=data.queries[q], positives=[by_id[next(iter(judged[q]))].full_text()],
                              negatives=[docs[-1 - i].full_text()]) for i, q in enumerate(qids)]
    slice_qids: list[str] = []
    slice_docs: list[str] = []
    if args.slice_queries > 0:
        slice_qids, slice_docs = test_slice(data, args.slice_queries, args.slice_docs)
    torch.manual_seed(0)
    rows: dict[str, dict[str, Any]] = {}
    dense = DenseEncoder("all-MiniLM-L6-v2", device="cpu", max_length=256, batch_size=16)
    rows["dense all-MiniLM-L6-v2"] = {"docs_per_second": _encode_rate(dense.encode_documents, texts)}
    del dense
    models = {"splade-tiny": {"backbone": "splade-tiny"},
              "smollm2 echo": {"backbone": "smollm2-135m", "variant": "echo"},
              "smollm2 bidirectional": {"backbone": "smollm2-135m", "variant": "bidirectional"}}
    for name, kw in models.items():
        logger.info("%s", name)
        model = SparseModel.build(max_length=256, device="cpu", top_k=256 if "variant" in kw else None, **kw)
        rate = _encode_rate(lambda t, m=model: m.encode(t, batch_size=16, show_progress=False), texts)
        zero_shot = _slice_ndcg(model, data, slice_qids, slice_docs) if slice_qids else None
        decoder = "variant" in kw
        train = SparseModel.build(max_length=128, device="cpu",
                                  lora={"r": 16, "alpha": 32} if decoder else None,
                                  gradient_checkpointing=decoder, **kw)
        step = _step_seconds(train, records)
        rows[name] = {"docs_per_second": rate, "train_step_seconds": step, "train_batch": len(records)}
        if zero_shot is not None:
            rows[name]["zero_shot_slice"] = zero_shot
        del model, train
    base = rows["dense all-MiniLM-L6-v2"]["docs_per_second"]
    for row in rows.values():
        row["slowdown_vs_minilm"] = base / row["docs_per_second"]
        row["projected_scifact_encode_seconds"] = SCIFACT_DOCS / row["docs_per_second"]
        if "train_step_seconds" in row:  # one step of B queries with 1 negative -> the recipe's 32 queries, 2 negatives
            row["projected_recipe_train_seconds"] = row["train_step_seconds"] * (32 / row["train_batch"]) * 1.5 * 100
    result: dict[str, Any] = {"documents": len(texts), "max_length": 256, "threads": torch.get_num_threads(), "rows": rows}
    if slice_qids:
        result["zero_shot_slice"] = {"split": "test", "queries": len(slice_qids), "documents": len(slice_docs),
                                     "seed": 0, "max_length": 256}
    path = run.save(result)
    for name, row in rows.items():
        logger.info("%-24s %6.2f docs/s  x%.1f vs MiniLM  full SciFact %.0f s", name, row["docs_per_second"],
                    row["slowdown_vs_minilm"], row["projected_scifact_encode_seconds"])
    logger.info("-> %s", path)


if __name__ == "__main__":
    main()
