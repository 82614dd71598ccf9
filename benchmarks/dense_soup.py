"""Model soups of dense runs trained on the same records, chosen on dev + out-of-domain (issue 13).

Runs of the recipe and its ablation rows (``dense_ood_ablation.py``) start from the same base model and train
on the same records, so their weights can be averaged (a uniform model soup, Wortsman et al., 2022: the
mechanism of checkpoint averaging and WiSE-FT, :mod:`uniret.train.soup`). This script:

1. evaluates each member run and each soup of them on the recipe's dev split (the 100 held-out training
   queries) at max length 256, the length of test and out-of-domain, on the full corpus (``--dev-docs 0``,
   the default) and on the pipeline's 1,000-document dev corpus;
2. takes each member's out-of-domain numbers from its ``train_result.json`` (the pipeline's own guard) and
   evaluates each soup on the recipe's ``eval.ood`` collections against the base model;
3. chooses one candidate by the config's rule (:func:`uniret.train.soup.select_candidate`: the best dev score
   whose out-of-domain drop is <= ``interpolate.max_ood_drop`` on each collection), never on SciFact test,
   and evaluates the chosen one (``--test chosen``; ``--test all`` evaluates every candidate, for the table,
   after the choice is made) on SciFact test, full corpus, max length 256.

    python benchmarks/dense_soup.py --member recipe=runs/ood/recipe \\
        --member no-distill-len256=runs/ood_ablation/no-distill-len256 \\
        --soup 'recipe+no-distill-len256' --out runs/soup

A soup names members joined by ``+``; ``base`` is the base model (all-MiniLM-L6-v2), so ``a+b+base`` is a
soup pulled towards it. Candidates are listed members first, then soups, in the order given; ties go to the
earlier one. The results file (``benchmarks/results/dense_soup.json``) is rewritten after every step.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from dense_recipe import evaluate_test

from _common import REPO, BenchmarkRun
from uniret.config import load_config
from uniret.train.config import TrainConfig

RECIPE = REPO / "configs" / "scifact-dense.yaml"
EVAL_LENGTH = 256  # as test and eval.ood_max_length
logger = logging.getLogger("dense_soup")


def parse_members(specs: list[str]) -> dict[str, Path]:
    members: dict[str, Path] = {}
    for spec in specs:
        name, sep, where = spec.partition("=")
        if not sep or not name or not where:
            raise SystemExit(f"--member {spec!r}: expected NAME=RUN_DIR")
        if name == "base" or "+" in name or name in members:
            raise SystemExit(f"--member {spec!r}: the name must be new, not 'base', without '+'")
        run = Path(where)
        for need in ("model", "train_result.json"):
            if not (run / need).exists():
                raise SystemExit(f"--member {spec!r}: {run / need} is missing (a finished `uniret train` folder)")
        members[name] = run
    return members


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--member", action="append", default=[], help="NAME=RUN_DIR, a finished run (repeatable)")
    ap.add_argument("--soup", action="append", default=[], help="members joined by '+', 'base' allowed (repeatable)")
    ap.add_argument("--config", default=str(RECIPE), help="dev split, eval.ood and the selection rule")
    ap.add_argument("--dev-docs", type=int, default=0, help="dev corpus the rule reads: 0 = full corpus")
    ap.add_argument("--also-dev-docs", type=int, default=1000, help="a second dev corpus, reported (0: none)")
    ap.add_argument("--test", choices=("chosen", "all", "none"), default="chosen")
    ap.add_argument("--out", default="runs/soup")
    ap.add_argument("--name", default="dense_soup")
    ap.add_argument("--results-dir", default=None, help="default benchmarks/results")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from uniret.data import load_beir
    from uniret.train.ood import evaluate_folder, resolve_ood
    from uniret.train.pipeline import build_model, dev_corpus, holdout_split, ood_before
    from uniret.train.soup import combine_model_dirs, select_candidate

    members = parse_members(args.member)
    if not members:
        ap.error("give at least one --member")
    soups: list[list[str]] = []
    for spec in args.soup:
        parts = [p.strip() for p in spec.split("+") if p.strip()]
        unknown = [p for p in parts if p != "base" and p not in members]
        if len(parts) < 2 or unknown or len(set(parts)) != len(parts):
            ap.error(f"--soup {spec!r}: two or more distinct members of {', '.join(members)} or 'base'")
        soups.append(parts)

    cfg = load_config(args.config, TrainConfig)
    if not cfg.eval.ood:
        ap.error(f"{args.config} names no eval.ood collections")
    max_drop = cfg.interpolate.max_ood_drop if cfg.interpolate is not None else 0.005
    dev_metric = cfg.interpolate.metric if cfg.interpolate is not None else "ndcg@10"
    out = Path(args.out)
    bench = BenchmarkRun(args.name, results_dir=args.results_dir)
    data = load_beir(cfg.data.data)
    _, dev_view = holdout_split(data, cfg.data.split, cfg.data.holdout_queries, cfg.data.holdout_seed)
    if dev_view is None:
        ap.error(f"{args.config} holds out no dev split (data.holdout_queries)")
    dev_sets = {}
    for docs in dict.fromkeys([args.dev_docs, args.also_dev_docs] if args.also_dev_docs else [args.dev_docs]):
        label = "dev-full" if docs <= 0 else f"dev-{docs}"
        dev_sets[label] = dev_corpus(dev_view, docs, cfg.data.holdout_seed)
    rule_dev = "dev-full" if args.dev_docs <= 0 else f"dev-{args.dev_docs}"
    sets = resolve_ood(list(cfg.eval.ood), cfg.data.data, cfg.eval.ood_split)

    _, module = build_model(cfg)  # the base model, as the recipe builds it
    module.train(False)
    base_ood = ood_before(cfg, module, sets, out)
    base_dir = out / "base-model"
    if not (base_dir / "config.json").is_file():
        module.save(base_dir)
    result: dict[str, Any] = {
        "config": str(Path(args.config).resolve().relative_to(REPO)) if Path(args.config).resolve().is_relative_to(
            REPO) else args.config,
        "members": {n: str(p.resolve()) for n, p in members.items()}, "soups": ["+".join(s) for s in soups],
        "eval_max_length": EVAL_LENGTH, "dev_sets": {k: len(v.corpus) for k, v in dev_sets.items()},
        "rule": {"dev": rule_dev, "dev_metric": dev_metric, "ood_metric": cfg.eval.ood_metric,
                 "max_ood_drop": max_drop},
        "base": {"ood": {n: m[cfg.eval.ood_metric] for n, m in base_ood.items()}},
        "candidates": [], "timings": {}}

    def save() -> None:
        logger.info("saved %s", bench.save(result))

    def evaluate(name: str, model_dir: Path, ood: dict[str, float] | None, ood_source: str) -> dict[str, Any]:
        start = time.perf_counter()
        dev = evaluate_folder("dense", model_dir, dev_sets, split="dev", max_length=EVAL_LENGTH,
                              batch_size=cfg.eval.batch_size, device=cfg.model.device, reports=out / name / "dev")
        if ood is None:
            after = evaluate_folder("dense", model_dir, sets, split=cfg.eval.ood_split,
                                    max_length=cfg.eval.ood_max_length, batch_size=cfg.eval.batch_size,
                                    device=cfg.model.device, reports=out / name / "ood")
            ood = {n: m[cfg.eval.ood_metric] for n, m in after.items()}
        drops = {n: result["base"]["ood"][n] - ood[n] for n in sets}
        row = {"name": name, "model": str(model_dir.resolve()), "dev": {k: v[dev_metric] for k, v in dev.items()},
               "dev_metrics": dev, "ood": ood, "ood_drops": drops, "ood_source": ood_source,
               "eval_seconds": time.perf_counter() - start}
        logger.info("%s: %s, out-of-domain drops %s", name, {k: round(v, 4) for k, v in row["dev"].items()},
                    {n: round(d, 4) for n, d in drops.items()})
        return row

    for name, run in members.items():
        summary = json.loads((run / "train_result.json").read_text(encoding="utf-8"))
        ood_table = summary.get("ood") or {}
        ood = None
        if set(ood_table) == set(sets) and all(ood_table[n]["metric"] == cfg.eval.ood_metric for n in sets):
            if any(abs(ood_table[n]["before"] - result["base"]["ood"][n]) > 1e-9 for n in sets):
                raise SystemExit(f"{run}: its base-model out-of-domain numbers differ from this base model's")
            ood = {n: ood_table[n]["after"] for n in sets}
        result["candidates"].append(evaluate(name, run / "model", ood,
                                             "train_result.json" if ood is not None else "evaluated here"))
        save()
    for parts in soups:
        name = "+".join(parts)
        dirs = [base_dir if p == "base" else members[p] / "model" for p in parts]
        folder = out / name / "model"
        if not (folder / "config.json").is_file():
            combine_model_dirs(dirs, [1.0 / len(dirs)] * len(dirs), folder)
        result["candidates"].append({**evaluate(name, folder, None, "evaluated here"), "members": parts})
        save()

    for c in result["candidates"]:
        c["rule_dev"] = c["dev"][rule_dev]
    index, reason = select_candidate([{"dev": c["rule_dev"], "ood_drops": c["ood_drops"]}
                                      for c in result["candidates"]], max_ood_drop=max_drop, what="candidates")
    chosen = result["candidates"][index]
    result["chosen"], result["rule"]["reason"] = chosen["name"], reason
    logger.info("chosen: %s (%s)", chosen["name"], reason)
    save()
    todo = [] if args.test == "none" else [chosen] if args.test == "chosen" else result["candidates"]
    for c in todo:
        metrics, seconds = evaluate_test(cfg.data.data, Path(c["model"]), out / c["name"] / "test")
        c["test"], c["test_seconds"] = metrics, seconds
        logger.info("%s: SciFact test nDCG@10 %.4f", c["name"], metrics["ndcg@10"])
        save()


if __name__ == "__main__":
    main()
