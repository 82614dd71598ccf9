"""``uniret demo``: the whole product on one BEIR data set (the shipped SciFact), side by side.

Stages, each logged as it starts, with the libraries' own progress bars inside:

1. ``bm25``: Lucene BM25 (:func:`uniret.commands.run_eval`, as ``uniret eval --retriever bm25``);
2. ``dense``: the zero-shot dense embedder (MiniLM on the demo's inference backend);
3. ``sparse``: zero-shot learned sparse (SPLADE-tiny on the demo's inference backend, the sparse family's
   default engine);
4. ``train``: a short run of the dense recipe (``configs/scifact-dense.yaml`` through
   :func:`uniret.train.pipeline.run_training`, at a demo budget: BM25-mined hard negatives, no teachers,
   :data:`FULL_TRAINING` steps) on the data set's *train* queries only (a query that is also judged in the
   test split stops the demo), then the trained model evaluated on the same test split at the zero-shot
   model's maximum length;
5. ``hybrid``: BM25 and the trained dense model fused by the hybrid family's fusion (:func:`uniret.scores.fuse_runs`,
   RRF: nothing tuned on the test split).

The report directory holds one ``uniret eval`` report per system (``bm25/``, ``dense/``, ``sparse/``,
``dense-trained/``, ``hybrid/``), the training run (``train/``: config, records, log, ``model/``),
``summary.md`` / ``summary.json``, ``metrics.png`` (all systems) and ``trained_vs_zero_shot.png`` (per-query
nDCG@10 of the trained minus the zero-shot dense model, sorted; the counts of wins, losses and ties are in the
summary). The generative family is not run: its recipe takes about 80-100 minutes of training on 2 CPU cores for
0.6046 nDCG@10 (BENCHMARKS.md), and the summary says so. ``quick`` runs every stage on a slice (:data:`QUICK_SLICE`) with a few training steps.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uniret.data import BeirDataset, load_beir
from uniret.families import RetrieverConfig, check_positive
from uniret.runtime import demo_backend

logger = logging.getLogger(__name__)

RECIPE = Path(__file__).resolve().parents[1] / "configs" / "scifact-dense.yaml"
"""The dense recipe the training stage runs at the demo's budget (falls back to the config defaults when
uniret is installed without its ``configs/`` folder)."""

FULL_TRAINING = {"steps": 25, "batch_size": 32}  # 800 examples: about one pass over the 809 train queries
QUICK_TRAINING = {"steps": 4, "batch_size": 8}  # one pass over the 32 train queries of the quick slice
QUICK_SLICE = {"test_queries": 50, "train_queries": 32, "num_docs": 300}
"""``--quick``: the first 50 judged test queries, the first 32 judged train queries, their judged documents and
random others up to 300 (plus the train queries' documents)."""

NOT_SHOWN = {"generative": "its recipe trains for about 80-100 minutes on 2 CPU cores and reaches 0.6046 nDCG@10 "
                            "(BENCHMARKS.md), below every system shown"}
WIN_LOSS_METRIC = "ndcg@10"
FUSION = "rrf"


def recipe_overrides(data: str | Path, *, steps: int, batch_size: int, device: str) -> dict[str, Any]:
    """The recipe at the demo's budget: every query of the train split (no dev hold-out, no out-of-domain
    guard), BM25 mining, InfoNCE with in-batch and one hard negative; no teachers, distillation, mixing or
    curriculum (they cost more than the demo's time)."""
    return {
        "model.device": device,
        "data.data": str(data), "data.split": "train", "data.holdout_queries": 0, "data.train_file": None,
        "mining.retriever": "bm25", "mining.num_negatives": 4, "mining.device": device,
        "teachers": None,
        "loss.hard_negatives": 1, "loss.distill_weight": 0.0, "loss.mixing": 0, "loss.curriculum_steps": 0,
        "loss.focal_gamma": 0.0,
        "trainer.max_steps": steps, "trainer.batch_size": batch_size, "trainer.keep_checkpoints": 1,
        "trainer.log_every": max(1, steps // 10),
        "eval.dev": False, "eval.ood": [],
        "interpolate": None, "remine_every_epochs": 0, "average_last_checkpoints": 0,
    }


@dataclass
class DemoResult:
    rows: dict[str, dict[str, float]]
    output_dir: Path
    seconds: float
    table: str
    stages: dict[str, float] = field(default_factory=dict)
    win_loss: dict[str, int] | None = None
    not_shown: dict[str, str] = field(default_factory=dict)


def run_demo(output_dir: str | Path = "reports/demo", *, data: str | Path = "scifact", quick: bool = False,
             model: str = "all-MiniLM-L6-v2", device: str = "auto", batch_size: int = 32,
             cache_embeddings: bool = False, backend: str | None = None, train: bool = True,
             train_steps: int | None = None, train_batch_size: int | None = None,
             sparse_model: str | None = "splade-tiny") -> DemoResult:
    """The main job: every landed family on a BEIR data set's test split, a table, a chart and a per-query
    win/loss plot of the trained against the zero-shot dense model. ``backend``: the encoders' inference
    backend (default :func:`uniret.runtime.demo_backend`: bf16 where native, else onnx-int8). ``train=False`` skips the training stage (the hybrid
    then fuses BM25 with the zero-shot dense model); ``train_steps`` / ``train_batch_size`` change its budget
    (default :data:`FULL_TRAINING`, or :data:`QUICK_TRAINING` with ``quick``). ``sparse_model=None`` skips
    the sparse stage."""
    from uniret.atomic import output_directory

    check_positive(batch_size=batch_size, train_steps=train_steps, train_batch_size=train_batch_size)
    start = time.perf_counter()
    backend = backend or demo_backend()
    out = Path(output_dir)
    dataset = load_beir(data)
    with output_directory(out, kind="report", protect=[dataset.root]):
        budget = dict(QUICK_TRAINING if quick else FULL_TRAINING)
        budget.update({k: v for k, v in (("steps", train_steps), ("batch_size", train_batch_size)) if v})
        return _Demo(out, dataset, start, quick=quick, model=model, device=device, batch_size=batch_size,
                     cache_embeddings=cache_embeddings, backend=backend, train=train, budget=budget,
                     sparse_model=sparse_model).run()


STAGES = ("bm25", "dense", "sparse", "train", "dense-trained", "hybrid")
"""Every stage of the demo, in order (each zero-shot or trained system writes a report folder of that name)."""


def planned_stages(*, train: bool = True, sparse: bool = True) -> list[str]:
    """The stages a demo runs: all of :data:`STAGES`, less training (and the trained model) or sparse."""
    skip = ({"train", "dense-trained"} if not train else set()) | ({"sparse"} if not sparse else set())
    return [s for s in STAGES if s not in skip]


def quick_slice(dataset: BeirDataset, *, test_queries: int = QUICK_SLICE["test_queries"],
                train_queries: int = QUICK_SLICE["train_queries"], num_docs: int = QUICK_SLICE["num_docs"]
                ) -> BeirDataset:
    """A slice of ``dataset`` (default :data:`QUICK_SLICE`): the first judged test queries with their judged
    documents and random others up to ``num_docs``, plus (when there is a train split) the first judged train
    queries with their judged documents."""
    test = dataset.sample(num_queries=test_queries, num_docs=num_docs, split="test")
    splits = {"test": test.qrels("test")}
    ids = set(test.corpus.ids)
    queries = dict(test.queries)
    if "train" in dataset.splits and train_queries > 0:
        part = dataset.sample(num_queries=train_queries, num_docs=0, split="train")
        splits["train"] = part.qrels("train")
        ids |= set(part.corpus.ids)
        queries.update(part.queries)
    from uniret.data import Queries

    q = Queries({qid: text for qid, text in dataset.queries.items() if qid in queries})
    q.source = dataset.queries.source
    name = f"{test.name}-train{len(queries) - len(test.queries)}q"
    return BeirDataset(dataset.root, dataset.corpus.subset(ids), q, {}, name=name, qrels=splits)


def train_test_overlap(dataset: BeirDataset) -> set[str]:
    """Query ids judged in both the train and the test split (training on them would leak the test set)."""
    return set(dataset.qrels("train").judgements) & set(dataset.qrels("test").judgements)


class _Demo:
    def __init__(self, out: Path, dataset: BeirDataset, start: float, *, quick: bool, model: str, device: str,
                 batch_size: int, cache_embeddings: bool, backend: str, train: bool, budget: dict[str, int],
                 sparse_model: str | None) -> None:
        self.out, self.start, self.quick = out, start, quick
        self.dataset = quick_slice(dataset) if quick else dataset
        self.model, self.device, self.batch_size = model, device, batch_size
        self.cache_embeddings, self.backend = cache_embeddings, backend
        self.budget, self.sparse_model = budget, sparse_model
        self.not_shown = dict(NOT_SHOWN)
        if not train:
            self.not_shown["dense (trained)"] = "training skipped (--no-train)"
        self.train = train and self._can_train()
        self.results: dict[str, Any] = {}  # system name -> EvalResult, in stage order
        self.names: dict[str, str] = {}  # report folder -> system name
        self.stages: dict[str, float] = {}
        self.training: dict[str, Any] | None = None

    def _can_train(self) -> bool:
        if "train" not in self.dataset.splits:
            self.not_shown["dense (trained)"] = f"{self.dataset.name} has no train split to train on"
            return False
        if overlap := train_test_overlap(self.dataset):
            raise ValueError(f"{self.dataset.root}: {len(overlap)} queries are judged in both the train and the "
                             f"test split (e.g. {sorted(overlap)[:3]}); training on them would leak the test set")
        return True

    def dense_cfg(self, model: str, max_length: int | None = None) -> RetrieverConfig:
        return RetrieverConfig(kind="dense", model=model, device=self.device, batch_size=self.batch_size,
                               cache_embeddings=self.cache_embeddings, backend=self.backend, max_length=max_length)

    def run(self) -> DemoResult:
        ds = self.dataset
        logger.info("demo on %s: %d documents, %d test queries%s", ds.name, len(ds.corpus),
                    len(ds.split_queries("test")),
                    f", {len(ds.qrels('train').judgements)} train queries" if "train" in ds.splits else "")
        steps = {"bm25": lambda: self.evaluate("bm25", RetrieverConfig(kind="bm25"), "bm25"),
                 "dense": lambda: self.evaluate(f"dense ({self.model}, zero-shot)", self.dense_cfg(self.model), "dense"),
                 "sparse": lambda: self.evaluate(
                     f"sparse ({self.sparse_model}, zero-shot)",
                     RetrieverConfig(kind="sparse", model=self.sparse_model, device=self.device,
                                     batch_size=self.batch_size, cache_embeddings=self.cache_embeddings,
                                     backend=self.backend), "sparse"),
                 "train": self.train_dense, "dense-trained": self.evaluate_trained, "hybrid": self.hybrid}
        plan = [(stage, steps[stage]) for stage in planned_stages(train=self.train, sparse=bool(self.sparse_model))]
        for i, (stage, step) in enumerate(plan, 1):
            logger.info("demo stage %d/%d: %s", i, len(plan), stage)
            began = time.perf_counter()
            step()
            self.stages[stage] = time.perf_counter() - began
            logger.info("demo stage %d/%d: %s done in %.0f s", i, len(plan), stage, self.stages[stage])
        return self.report()

    def evaluate(self, name: str, cfg: RetrieverConfig, folder: str) -> None:
        from uniret.commands import run_eval

        self.names[folder] = name
        self.results[name] = run_eval(self.dataset, cfg, self.out / folder, name=name)

    @property
    def zero_shot(self) -> Any:
        return self.results[self.names["dense"]]

    def train_dense(self) -> None:
        from uniret.config import load_config
        from uniret.data import save_beir
        from uniret.train.config import TrainConfig
        from uniret.train.pipeline import run_training

        run_dir = self.out / "train"
        data: Path = self.dataset.root
        if self.quick:  # the training pipeline reads a BEIR directory: the slice is written beside the run
            data = save_beir(self.dataset, self.out / "data")
        overrides = recipe_overrides(data, steps=self.budget["steps"], batch_size=self.budget["batch_size"],
                                     device=self.device)
        overrides["model.backbone"] = self.model
        recipe = RECIPE if RECIPE.is_file() else None
        cfg = load_config(recipe, TrainConfig, overrides=overrides)
        summary = run_training(cfg, run_dir, overwrite=True)
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # the demo keeps only the final model
        self.training = {
            "recipe": str(recipe.relative_to(RECIPE.parents[1])) if recipe else "TrainConfig defaults",
            "overrides": overrides, "steps": summary["steps"], "batch_size": cfg.trainer.batch_size,
            "learning_rate": cfg.trainer.learning_rate, "train_queries": len(self.dataset.qrels("train").judgements),
            "records": summary["stats"].get("records"), "train_seconds": summary["train_seconds"],
            "prep_seconds": summary["prep_seconds"], "examples_per_second": summary["examples_per_second"],
            "final_loss": summary["final_loss"], "model": str(run_dir / "model"),
        }

    def evaluate_trained(self) -> None:
        encoder = (self.zero_shot.report.get("retriever") or {}).get("encoder") or {}
        cfg = self.dense_cfg(str(self.out / "train" / "model"), max_length=encoder.get("max_length"))
        assert self.training is not None
        self.evaluate(f"dense ({self.model}, trained {self.training['steps']} steps)", cfg, "dense-trained")

    @property
    def trained(self) -> Any | None:
        return self.results.get(self.names.get("dense-trained", ""))

    def hybrid(self) -> None:
        """BM25 + the trained dense model (else the zero-shot one), fused by the hybrid family's fusion."""
        from uniret.eval.metrics import DEFAULT_METRICS, STANDARD_METRICS, evaluate
        from uniret.eval.runner import EvalResult, make_report, write_report_files
        from uniret.index.hybrid import parse_fusion
        from uniret.scores import TIE_BREAKING, fuse_runs, top_k

        dense = self.trained or self.zero_shot
        members = [self.results["bm25"], dense]
        fusion = parse_fusion(FUSION)
        depth = max(len(hits) for m in members for hits in m.run.values())
        began = time.perf_counter()
        fused = fuse_runs([m.run for m in members], fusion.method, fusion.weights_for(len(members)),
                          rrf_k=fusion.rrf_k, normalization=fusion.normalization)
        run = {q: top_k(hits, depth) for q, hits in fused.items()}
        seconds = time.perf_counter() - began
        qrels = self.dataset.qrels("test").judgements
        metrics = [*STANDARD_METRICS, *(m for m in DEFAULT_METRICS if m not in STANDARD_METRICS)]
        means, per_query = evaluate(qrels, run, metrics, per_query=True)
        name = f"hybrid ({FUSION}: bm25 + {'trained' if self.trained else 'zero-shot'} dense)"
        report = make_report(name, self.dataset, "test", len(qrels), means,
                             {"kind": "hybrid", "fusion": fusion.spec, "members": [m.name for m in members]},
                             timings={"index_seconds": None, "fuse_seconds": seconds},
                             settings={"depth": depth, "tie_breaking": TIE_BREAKING},
                             config={"family": "hybrid", "fusion": FUSION, "split": "test",
                                     "members": [m.name for m in members]})
        write_report_files(report, run, self.out / "hybrid", per_query=per_query)
        self.names["hybrid"] = name
        self.results[name] = EvalResult(name=name, metrics=means, per_query=per_query, run=run, report=report)

    def report(self) -> DemoResult:
        from uniret.atomic import write_text_atomic
        from uniret.eval.metrics import DEFAULT_METRICS
        from uniret.eval.report import metrics_table, plot_metrics, plot_per_query_delta, write_json

        rows = {n: {m: r.metrics[m] for m in DEFAULT_METRICS} for n, r in self.results.items()}
        timings = {n: r.report.get("timings", {}) for n, r in self.results.items()}
        table = metrics_table(rows, DEFAULT_METRICS)
        plot_metrics(rows, self.out / "metrics.png", title=f"{self.dataset.name} test")
        win_loss = None
        if self.trained is not None:
            win_loss = plot_per_query_delta(self.trained.per_query, self.zero_shot.per_query,
                                            self.out / "trained_vs_zero_shot.png", metric=WIN_LOSS_METRIC,
                                            title=f"{self.trained.name} vs zero-shot, {self.dataset.name} test")
        seconds = time.perf_counter() - self.start
        hybrid = self.results[self.names["hybrid"]].report["retriever"]
        summary = {"dataset": self.dataset.name, "quick": self.quick, "backend": self.backend,
                   "num_docs": len(self.dataset.corpus), "num_test_queries": len(self.dataset.qrels("test").judgements),
                   "metrics": rows, "timings": timings, "stages": self.stages, "training": self.training,
                   "hybrid": {"fusion": hybrid["fusion"], "members": hybrid["members"]},
                   "win_loss": win_loss, "win_loss_metric": WIN_LOSS_METRIC, "not_shown": self.not_shown,
                   "total_seconds": seconds}
        write_json(summary, self.out / "summary.json")
        write_text_atomic(self.out / "summary.md", summary_markdown(summary))
        return DemoResult(rows=rows, output_dir=self.out, seconds=seconds, table=table, stages=dict(self.stages),
                          win_loss=win_loss, not_shown=dict(self.not_shown))


def summary_markdown(summary: dict[str, Any]) -> str:
    """``summary.md`` from the ``summary.json`` of a demo: the table of every system, how the trained model was
    trained, the per-query win/loss counts, the hybrid's members, what is not shown and why, stage times."""
    from uniret.eval.metrics import DEFAULT_METRICS
    from uniret.eval.report import metrics_table

    lines = [f"# uniret demo on {summary['dataset']} (test)", "",
             f"{summary['num_docs']} documents, {summary['num_test_queries']} test queries.", "",
             metrics_table(summary["metrics"], DEFAULT_METRICS), ""]
    if t := summary.get("training"):
        lines += [f"Trained: {t['recipe']} at a demo budget ({t['steps']} steps x batch {t['batch_size']}, "
                  f"lr {t['learning_rate']:g}, BM25-mined hard negatives, no teachers) on the "
                  f"{t['train_queries']} *train* queries only; {t['train_seconds']:.0f} s of training "
                  f"({t['prep_seconds']:.0f} s preparation and mining). Model: `{t['model']}`.", ""]
    if wl := summary.get("win_loss"):
        lines += [f"Per query ({summary['win_loss_metric']}), trained vs zero-shot dense: {wl['wins']} wins, "
                  f"{wl['losses']} losses, {wl['ties']} ties (`trained_vs_zero_shot.png`).", ""]
    if h := summary.get("hybrid"):
        lines += [f"Hybrid: {h['fusion']} fusion of {' and '.join(h['members'])}; nothing tuned on the test "
                  "split.", ""]
    lines += [f"Not shown: {name}, {why}." for name, why in summary.get("not_shown", {}).items()]
    lines += ["", "Stages: " + ", ".join(f"{s} {v:.0f} s" for s, v in summary.get("stages", {}).items()) + ".",
              f"Total time: {summary['total_seconds']:.0f} s.", ""]
    return "\n".join(lines)
