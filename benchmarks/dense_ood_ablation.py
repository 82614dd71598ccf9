"""Where the dense recipe's out-of-domain drop comes from (issue 13): one factor of the recipe changed per row.

The recipe as it was before issue 13 (``configs/scifact-dense.yaml`` with KL distillation to the BM25 + MiniLM
ensemble and no WiSE-FT: 100 steps x 32 queries, lr 1e-4, two hard negatives per query with online mixing) gains
on SciFact and loses 0.007-0.008 nDCG@10 on cranfield and agentset-msmarco-5k. The rows keep that baseline: the
records carry its teacher scores, and ``interpolate=null`` leaves out the WiSE-FT step the config now has.
Each row below trains from all-MiniLM-L6-v2 on the **same training records** (``--records``: the recipe
run's ``train_records.jsonl``, i.e. the same mined negatives and teacher scores), with exactly one change, and
reports dev (100 held-out training queries), SciFact test (full corpus, max length 256,
as ``uniret eval --retriever dense --model OUT/ROW/model --max-length 256``) and the recipe's ``eval.ood``
collections (base model against the row's model, as ``uniret train`` reports them).

- ``recipe``: no change (``--recipe-run DIR`` reads a finished run of the recipe instead of training it again;
  its test split is evaluated here).
- ``lr5e-5``: ``trainer.learning_rate=5e-5`` (half the learning rate).
- ``steps50``: ``trainer.max_steps=50`` (half the budget: 2.3 epochs instead of 4.5).
- ``no-hard-negatives``: ``loss.hard_negatives=0``, ``loss.mixing=0`` (in-batch negatives only; distillation
  then covers the positive and the in-batch documents).
- ``no-distill``: ``loss.distill_weight=0`` (InfoNCE only).

Candidates that build on the ablation (no distillation keeps the most out of domain) and try to win back SciFact
test with more of what carries the gain, one addition each:

- ``no-distill-h4``: no distillation and four hard negatives per query (``loss.hard_negatives=4``, not 2).
- ``no-distill-len256``: no distillation and training at max length 256 (``model.max_length=256``, not 128),
  the length every evaluation encodes at.
- ``minilm-teacher``: distillation kept, but to all-MiniLM-L6-v2 alone (the base model: its geometry as the soft
  labels), without BM25 in the ensemble; the records' teacher scores are computed again.
- ``len256``: the recipe (distillation kept) trained at max length 256, the one change that moved test up
  without distillation.
- ``minilm-teacher-len256``: distillation to all-MiniLM-L6-v2 alone at training length 256 (the two candidates
  that kept the most out of domain and gained the most test, together).

    python benchmarks/dense_ood_ablation.py --records runs/ood/recipe/train_records.jsonl --recipe-run runs/ood/recipe \\
        --rows recipe,lr5e-5,no-distill --out runs/ood_ablation

Rows accumulate in ``benchmarks/results/dense_ood_ablation.json`` (``--results-dir`` elsewhere); a row already
there is replaced when measured again.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from dense_recipe import evaluate_test, run_recipe

from _common import REPO, RESULTS, BenchmarkRun, command_line, git_state, load_average
from uniret.config import load_config
from uniret.train.config import TrainConfig

RECIPE = REPO / "configs" / "scifact-dense.yaml"
MINILM_TEACHER = "teachers={normalization: minmax, teachers: [{kind: dense, model: all-MiniLM-L6-v2}]}"
ROWS: dict[str, list[str]] = {
    "recipe": [],
    "lr5e-5": ["trainer.learning_rate=5e-5"],
    "steps50": ["trainer.max_steps=50"],
    "no-hard-negatives": ["loss.hard_negatives=0", "loss.mixing=0"],
    "no-distill": ["loss.distill_weight=0"],
    "no-distill-h4": ["loss.distill_weight=0", "loss.hard_negatives=4"],
    "no-distill-len256": ["loss.distill_weight=0", "model.max_length=256"],
    "minilm-teacher": [MINILM_TEACHER],
    "len256": ["model.max_length=256"],
    "minilm-teacher-len256": [MINILM_TEACHER, "model.max_length=256"],
    "minilm-teacher-len256-freeze2": [MINILM_TEACHER, "model.max_length=256",
                                      "model.freeze=[embeddings, encoder.layer.0, encoder.layer.1]"],
    "minilm-teacher-len256-freeze-emb": [MINILM_TEACHER, "model.max_length=256", "model.freeze=[embeddings]"],
}
RESULT = "dense_ood_ablation"
logger = logging.getLogger("dense_ood_ablation")


def finished_recipe(run_dir: Path, out: Path) -> dict[str, Any]:
    """A finished ``uniret train`` run of the recipe: its ``train_result.json`` and a test evaluation now."""
    summary = json.loads((run_dir / "train_result.json").read_text(encoding="utf-8"))
    import yaml

    config = (run_dir / "config.yaml").read_text(encoding="utf-8")
    test, eval_wall = evaluate_test(yaml.safe_load(config)["data"]["data"], run_dir / "model", out / "test")
    return {"trainer": "uniret", "train_seconds": summary["train_seconds"], "dev": summary.get("dev"),
            "ood": summary.get("ood"), "test": test, "eval_wall_seconds": eval_wall, "run_config_yaml": config}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {','.join(ROWS)}")
    ap.add_argument("--out", default="runs/ood_ablation", help="run folders (one per row)")
    ap.add_argument("--records", required=True, help="the recipe run's train_records.jsonl (shared by every row)")
    ap.add_argument("--recipe-run", default=None, help="a finished run of configs/scifact-dense.yaml (row recipe)")
    ap.add_argument("--results-dir", default=None, help="default benchmarks/results")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from uniret.cli import parse_overrides

    names = [n.strip() for n in args.rows.split(",") if n.strip()]
    if unknown := [n for n in names if n not in ROWS]:
        ap.error(f"unknown row(s) {', '.join(unknown)}; choose from {', '.join(ROWS)}")
    results_dir = Path(args.results_dir) if args.results_dir else RESULTS
    path = results_dir / f"{RESULT}.json"
    rows: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))["rows"] if path.is_file() else {}
    # the records carry the mined negatives and the BM25 + MiniLM teacher scores of the recipe run (the recipe
    # until issue 13); the rows compare final models, without the recipe's WiSE-FT step
    shared = [f"data.train_file={Path(args.records).resolve()}", "teachers=null", "mining=null", "interpolate=null"]
    for name in names:
        run = BenchmarkRun(RESULT, results_dir=results_dir)
        row_dir = Path(args.out) / name
        start = time.perf_counter()
        provenance = {"command": command_line(), "git": git_state(), "load_average_at_start": load_average(),
                      "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        if name == "recipe" and args.recipe_run:
            info = {"run_dir": str(Path(args.recipe_run).resolve()), "overrides": [],
                    **finished_recipe(Path(args.recipe_run), row_dir)}
        else:
            overrides = [*shared, *ROWS[name]]  # a row's own teachers= replaces the shared teachers=null
            cfg = load_config(RECIPE, TrainConfig, overrides=parse_overrides(overrides))
            info = {"run_dir": str(row_dir.resolve()), "overrides": overrides, **run_recipe(cfg, row_dir)}
        info["wall_seconds"] = time.perf_counter() - start
        info["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        rows[name] = {**provenance, **info}  # rows measured by earlier invocations keep their own provenance
        run.save({"config": str(RECIPE.relative_to(REPO)), "records": str(Path(args.records).resolve()),
                  "rows": rows})
        ood = info.get("ood") or {}
        logger.info("row %s: dev %.4f, test %.4f, out-of-domain %s", name, (info.get("dev") or {}).get("ndcg@10", float("nan")),
                    info["test"]["ndcg@10"], {k: round(v["difference"], 4) for k, v in ood.items()})


if __name__ == "__main__":
    main()
