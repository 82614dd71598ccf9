"""The dense recipe out of domain, and WiSE-FT alphas chosen on dev + out-of-domain (issue 13).

One training run of ``configs/scifact-dense.yaml`` (``uniret train ... --output-dir RUN``) is the trained model;
interpolation needs no retraining. This script, through the pipeline's own functions
(:mod:`uniret.train.ood`):

1. evaluates the base model (the recipe's untrained module) on each out-of-domain collection, full test
   corpus, max length 256 (cached under ``$UNIRET_CACHE/ood``);
2. waits for ``RUN/train_result.json`` if the run is still training, then loads the final checkpoint's
   weights (the recipe has no checkpoint averaging, so they are ``RUN/model``'s);
3. for each alpha, ``alpha * trained + (1 - alpha) * base``: the dev split (the run's 100 held-out training
   queries, 1000 documents, as the pipeline's dev evaluation) and the out-of-domain collections;
4. chooses alpha by the config's rule (``interpolate``: best dev nDCG@10 whose out-of-domain drop is
   <= 0.005 on each collection), never on SciFact test, and evaluates only the chosen alpha (and alpha 1,
   the plain recipe) on SciFact test, full corpus, max length 256.

    python benchmarks/wise_ft.py --run runs/ood/recipe --alphas 1.0,0.8,0.6,0.5 \\
        --ood ../shared/datasets/cranfield,../shared/datasets/agentset-msmarco-5k

The results file (``benchmarks/results/scifact_dense_wise_ft.json``) is rewritten after every step, so an
interrupted run leaves the finished rows.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from _common import REPO, BenchmarkRun
from uniret.config import load_config, to_dict
from uniret.train.config import TrainConfig

RECIPE = REPO / "configs" / "scifact-dense.yaml"
logger = logging.getLogger("wise_ft")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a finished (or running) `uniret train` directory of the recipe")
    ap.add_argument("--config", default=str(RECIPE),
                    help="where eval.ood and interpolate come from when not given here (the training settings are "
                         "the run's own, from RUN/run_state.json)")
    ap.add_argument("--alphas", default="1.0,0.8,0.6,0.5")
    ap.add_argument("--ood", default="", help="comma-separated BEIR folders (default: the config's eval.ood)")
    ap.add_argument("--max-ood-drop", type=float, default=None, help="default: the config's interpolate rule")
    ap.add_argument("--test", default="chosen,1.0", help="alphas evaluated on SciFact test: 'chosen' and/or numbers")
    ap.add_argument("--wait", type=float, default=3 * 3600, help="seconds to wait for the run to finish")
    ap.add_argument("--name", default="scifact_dense_wise_ft")
    ap.add_argument("--results-dir", default=None, help="default benchmarks/results")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from dense_recipe import evaluate_test
    from safetensors.torch import load_file

    from uniret.config import from_dict
    from uniret.data import load_beir
    from uniret.train.ood import clone_state, resolve_ood, sweep_interpolation
    from uniret.train.pipeline import build_model, evaluate_dev, holdout_split, ood_before, ood_folder_eval
    from uniret.train.trainer import checkpoint_dirs

    run_dir = Path(args.run)
    recipe = load_config(args.config, TrainConfig)
    deadline = time.time() + args.wait
    while not (run_dir / "run_state.json").is_file():
        if time.time() > deadline:
            raise SystemExit(f"{run_dir} has no run_state.json after --wait {args.wait} s")
        time.sleep(30)
    run_state = json.loads((run_dir / "run_state.json").read_text(encoding="utf-8"))
    cfg = from_dict(TrainConfig, run_state["config"], source=str(run_dir / "run_state.json"))
    cfg.interpolate = recipe.interpolate
    cfg.eval.ood_split, cfg.eval.ood_max_length = recipe.eval.ood_split, recipe.eval.ood_max_length
    ood_names = [n for n in args.ood.split(",") if n] or list(recipe.eval.ood)
    if not ood_names:
        ap.error("no out-of-domain collections: pass --ood or set eval.ood in the config")
    cfg.eval.ood = ood_names
    alphas = [float(a) for a in args.alphas.split(",")]
    max_drop = args.max_ood_drop if args.max_ood_drop is not None else (
        cfg.interpolate.max_ood_drop if cfg.interpolate is not None else 0.005)
    dev_metric = cfg.interpolate.metric if cfg.interpolate is not None else "ndcg@10"
    work = run_dir.parent / (run_dir.name + "-wise-ft")
    work.mkdir(parents=True, exist_ok=True)

    bench = BenchmarkRun(args.name, results_dir=args.results_dir)
    config_path = Path(args.config).resolve()
    result: dict[str, Any] = {"run_dir": str(run_dir),
                              "config": str(config_path.relative_to(REPO) if config_path.is_relative_to(REPO)
                                            else config_path),
                              "training_config": run_state["config"],
                              "ood_collections": ood_names, "ood_split": cfg.eval.ood_split,
                              "ood_max_length": cfg.eval.ood_max_length, "alphas": alphas,
                              "rule": {"dev_metric": dev_metric, "ood_metric": cfg.eval.ood_metric,
                                       "max_ood_drop": max_drop}, "timings": {}}

    def save() -> None:
        path = bench.save(result)
        logger.info("saved %s", path)

    sets = resolve_ood(ood_names, cfg.data.data, cfg.eval.ood_split)
    model, module = build_model(cfg)
    model.train(False)
    base_state = clone_state(module)
    start = time.perf_counter()
    base_ood = ood_before(cfg, module, sets, work)
    result["timings"]["base_ood_seconds"] = time.perf_counter() - start
    result["base"] = {"ood": {n: m[cfg.eval.ood_metric] for n, m in base_ood.items()}, "ood_metrics": base_ood}
    save()

    while not (run_dir / "train_result.json").is_file():
        if time.time() > deadline:
            raise SystemExit(f"{run_dir} did not finish within --wait {args.wait} s")
        time.sleep(30)
    train_result = json.loads((run_dir / "train_result.json").read_text(encoding="utf-8"))
    if train_result.get("averaged_checkpoints") or train_result.get("interpolation"):
        raise SystemExit(f"{run_dir}: the final model is not the last checkpoint (averaged or interpolated)")
    last = checkpoint_dirs(run_dir)[-1]
    if last.name != f"step-{train_result['steps']}":
        raise SystemExit(f"{run_dir}: the last checkpoint {last.name} is not the final step {train_result['steps']}")
    trained_state = load_file(str(last / "weights.safetensors"))
    result["trained"] = {"checkpoint": str(last), "steps": train_result["steps"],
                         "train_seconds": train_result["train_seconds"], "dev_in_run": train_result.get("dev"),
                         "same_training_as_config": {
                             k: run_state["config"][k] == json.loads(json.dumps(to_dict(getattr(recipe, k)), default=str))
                             for k in ("model", "data", "mining", "teachers", "loss", "trainer")}}
    if not all(result["trained"]["same_training_as_config"].values()):
        logger.warning("the run was trained with other settings than %s: %s", args.config,
                       result["trained"]["same_training_as_config"])

    _, dev_view = holdout_split(load_beir(cfg.data.data), cfg.data.split, cfg.data.holdout_queries,
                                cfg.data.holdout_seed)
    assert dev_view is not None, "the recipe holds out a dev split"
    start = time.perf_counter()
    sweep = sweep_interpolation(
        module, base_state, trained_state, alphas,
        evaluate_dev=lambda d: evaluate_dev(model, dev_view, cfg, d)["metrics"],
        evaluate_ood=ood_folder_eval(cfg, sets), base_ood=base_ood, dev_metric=dev_metric,
        ood_metric=cfg.eval.ood_metric, max_ood_drop=max_drop, workdir=work / "interpolation")
    result["timings"]["sweep_seconds"] = time.perf_counter() - start
    result["chosen"] = sweep["chosen"]
    result["rule"]["reason"] = sweep["rule"]
    result["candidates"] = [{k: v for k, v in c.items() if k not in ("dev_metrics", "ood_metrics")}
                            | {"dev_metrics": c["dev_metrics"], "ood_metrics": c["ood_metrics"]}
                            for c in sweep["candidates"]]
    save()

    from uniret.train.soup import interpolate_state_dicts

    wanted = [sweep["chosen"] if t == "chosen" else float(t) for t in args.test.split(",") if t]
    result["test"] = {}
    for alpha in dict.fromkeys(wanted):
        module.load_state_dict(interpolate_state_dicts(trained_state, base_state, alpha))
        folder = work / f"model-alpha-{alpha:g}"
        module.save(folder)
        start = time.perf_counter()
        metrics, _ = evaluate_test(cfg.data.data, folder, work / f"test-alpha-{alpha:g}")
        result["test"][f"{alpha:g}"] = metrics
        result["timings"][f"test_alpha_{alpha:g}_seconds"] = time.perf_counter() - start
        logger.info("alpha %g: SciFact test nDCG@10 %.4f", alpha, metrics["ndcg@10"])
        save()


if __name__ == "__main__":
    main()
