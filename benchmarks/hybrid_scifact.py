"""Hybrid retrieval on SciFact: BM25 + a dense embedder fused by the ``hybrid`` family, against each alone.

Both members search every SciFact query (test and train) once at depth 1000; every fusion is then computed by
``HybridIndex.fuse`` (the family's own code, i.e. ``uniret.scores.fuse_runs``) on those runs. Interpolation
weights are chosen on the 809 *train* queries when neither model was trained on SciFact (train then serves as a
dev set), or, for a dense model trained on SciFact train (the recipe), on the recipe's held-out dev queries
(``--holdout 100``: the 100 train queries the recipe never trained on, seed 0), and reported on the 300 test
queries; RRF has no weight.

    uniret index --data scifact --retriever bm25 --output idx/scifact-bm25
    uniret index --data scifact --retriever dense --output idx/scifact-dense
    python benchmarks/hybrid_scifact.py --bm25 idx/scifact-bm25 --dense idx/scifact-dense

    # the trained recipe model (uniret train --config configs/scifact-dense.yaml --output-dir RUN):
    uniret index --data scifact --retriever dense --model RUN/model --max-length 256 --output idx/scifact-recipe
    python benchmarks/hybrid_scifact.py --bm25 idx/scifact-bm25 --dense idx/scifact-recipe --holdout 100 \
        --name hybrid_scifact_recipe --dense-note "the trained recipe model (configs/scifact-dense.yaml)"
"""

from __future__ import annotations

import argparse
import time

from _common import FUSION_WEIGHTS, BenchmarkRun, best_fusion_weight
from uniret.data import load_beir
from uniret.eval.metrics import evaluate
from uniret.index import load_index
from uniret.index.hybrid import HybridIndex

METRICS = ["ndcg@10", "recall@100", "mrr@10"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="scifact")
    ap.add_argument("--bm25", required=True, help="a saved BM25 index of the data set")
    ap.add_argument("--dense", required=True, help="a saved dense index of the data set")
    ap.add_argument("--depth", type=int, default=1000)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--holdout", type=int, default=0,
                    help="choose weights on this many held-out train queries (the recipe's dev split, --seed) "
                         "instead of all train queries: for a dense model trained on the rest of train")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="hybrid_scifact")
    ap.add_argument("--dense-note", default="all-MiniLM-L6-v2 (base, not trained on SciFact)")
    args = ap.parse_args()
    bench = BenchmarkRun(args.name)

    ds = load_beir(args.data)
    splits = {s: ds.qrels(s).judgements for s in ("train", "test")}
    if args.holdout:
        from uniret.train.pipeline import holdout_split

        _, dev = holdout_split(ds, "train", args.holdout, args.seed)
        splits["train"] = dev.qrels("dev").judgements  # the selection queries: never trained on
    queries = {q: t for s in splits for q, t in ds.split_queries(s).items()}
    bm25 = load_index(args.bm25)
    dense = load_index(args.dense, device=args.device)
    seconds = {}
    runs = {}
    for name, backend in (("bm25", bm25), ("dense", dense)):
        start = time.perf_counter()
        runs[name] = backend.search(queries, k=args.depth)
        seconds[name] = time.perf_counter() - start
    members = [bm25, dense]

    def score(spec: str, split: str) -> dict[str, float]:
        run = HybridIndex(members, spec, depth=args.depth).fuse([runs["bm25"], runs["dense"]], args.depth)
        qs = splits[split]
        return evaluate(qs, {q: run[q] for q in qs}, METRICS)  # type: ignore[return-value]

    def single(name: str, split: str) -> dict[str, float]:
        qs = splits[split]
        return evaluate(qs, {q: runs[name][q] for q in qs}, METRICS)  # type: ignore[return-value]

    # minmax:W / zscore:W give BM25 weight W and dense 1 - W (the first member gets W)
    sweep = {norm: {str(w): score(f"{norm}:{w}", "train")["ndcg@10"] for w in FUSION_WEIGHTS} for norm in ("minmax", "zscore")}
    best = {norm: float(best_fusion_weight(s)) for norm, s in sweep.items()}
    systems = {
        "bm25": {s: single("bm25", s) for s in splits},
        "dense": {s: single("dense", s) for s in splits},
        "rrf": {s: score("rrf", s) for s in splits},
        "minmax:0.5": {s: score("minmax:0.5", s) for s in splits},
        f"minmax:{best['minmax']:g}": {s: score(f"minmax:{best['minmax']}", s) for s in splits},
        f"zscore:{best['zscore']:g}": {s: score(f"zscore:{best['zscore']}", s) for s in splits},
    }
    best_single = max(("bm25", "dense"), key=lambda n: systems[n]["test"]["ndcg@10"])
    path = bench.save({
        "data": args.data, "depth": args.depth, "test_queries": len(splits["test"]), "train_queries": len(splits["train"]),
        "members": {"bm25": bm25.describe(), "dense": {k: v for k, v in dense.describe().items() if k != "encoder"}
                    | {"encoder": dense.describe()["encoder"].get("name")}},
        "dense_model_note": args.dense_note,
        "selection_queries": (f"{args.holdout} held-out train queries (seed {args.seed})" if args.holdout
                              else "all train queries"),
        "member_search_seconds": seconds, "train_sweep_ndcg@10": sweep, "best_weight": best,
        "systems": systems, "best_single": best_single,
        "hybrid_beats_best_single": {n: systems[n]["test"]["ndcg@10"] > systems[best_single]["test"]["ndcg@10"]
                                     for n in systems if n not in ("bm25", "dense")},
    })
    for n, r in systems.items():
        print(f"{n:14s} test nDCG@10 {r['test']['ndcg@10']:.4f}  R@100 {r['test']['recall@100']:.4f}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
