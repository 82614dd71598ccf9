"""``uniret demo``: every stage (BM25, zero-shot dense and sparse, a short recipe training run on the train
queries, the trained model, the hybrid) on real SciFact slices, and the report's per-query win/loss plot."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from uniret.data import save_beir
from uniret.demo import (
    NOT_SHOWN,
    RECIPE,
    STAGES,
    planned_stages,
    quick_slice,
    recipe_overrides,
    summary_markdown,
    train_test_overlap,
)
from uniret.eval.report import per_query_deltas, plot_per_query_delta, win_loss

PNG = b"\x89PNG\r\n\x1a\n"


def test_win_loss_counts_and_plot(tmp_path):
    system = {"a": {"ndcg@10": 0.9}, "b": {"ndcg@10": 0.2}, "c": {"ndcg@10": 0.5}, "d": {"ndcg@10": 1.0}}
    baseline = {"a": {"ndcg@10": 0.5}, "b": {"ndcg@10": 0.4}, "c": {"ndcg@10": 0.5}, "d": {"ndcg@10": 0.25}}
    deltas = per_query_deltas(system, baseline)
    assert deltas == pytest.approx({"a": 0.4, "b": -0.2, "c": 0.0, "d": 0.75})
    assert win_loss(deltas) == {"wins": 2, "losses": 1, "ties": 1}
    counts = plot_per_query_delta(system, baseline, tmp_path / "wl.png", title="t")
    assert counts == {"wins": 2, "losses": 1, "ties": 1}
    assert (tmp_path / "wl.png").read_bytes()[:8] == PNG


def test_per_query_deltas_reject_different_queries_or_metric():
    with pytest.raises(ValueError, match="differ in 1 queries"):
        per_query_deltas({"a": {"ndcg@10": 1.0}, "b": {"ndcg@10": 1.0}}, {"a": {"ndcg@10": 1.0}})
    with pytest.raises(ValueError, match="'mrr@10' is not in"):
        per_query_deltas({"a": {"ndcg@10": 1.0}}, {"a": {"ndcg@10": 1.0}}, metric="mrr@10")


def test_demo_budget_is_the_recipe_with_overrides():
    """The demo's training stage is configs/scifact-dense.yaml with a few overrides; they must stay valid."""
    from uniret.config import load_config
    from uniret.train.config import TrainConfig

    assert RECIPE.is_file()
    cfg = load_config(RECIPE, TrainConfig, overrides=recipe_overrides("scifact", steps=3, batch_size=4, device="cpu"))
    assert cfg.model.backbone == "all-MiniLM-L6-v2" and cfg.loss.temperature == 0.05  # from the recipe
    assert cfg.data.split == "train" and cfg.data.holdout_queries == 0
    assert cfg.mining is not None and cfg.mining.retriever == "bm25"
    assert cfg.teachers is None and cfg.loss.distill_weight == 0 and cfg.eval.ood == []
    assert cfg.trainer.max_steps == 3 and cfg.trainer.batch_size == 4


def test_quick_slice_keeps_train_and_test_queries_apart(scifact):
    ds = quick_slice(scifact)
    test, train = ds.qrels("test").judgements, ds.qrels("train").judgements
    assert len(test) == 50 and len(train) == 32
    assert not train_test_overlap(ds)
    judged = {d for qrels in (test, train) for docs in qrels.values() for d in docs}
    assert judged <= set(ds.corpus.ids) and len(ds.corpus) >= 300
    assert set(ds.queries) == set(test) | set(train)


def test_summary_lists_every_stage():
    """The fast check: the demo plans every stage, and its summary names every system, the training, the
    win/loss counts, the hybrid and what is not shown (the end-to-end run below is slow)."""
    assert planned_stages() == list(STAGES) == ["bm25", "dense", "sparse", "train", "dense-trained", "hybrid"]
    assert planned_stages(train=False) == ["bm25", "dense", "sparse", "hybrid"]
    assert planned_stages(sparse=False) == ["bm25", "dense", "train", "dense-trained", "hybrid"]
    systems = ["bm25", "dense (m, zero-shot)", "sparse (splade-tiny, zero-shot)", "dense (m, trained 25 steps)",
               "hybrid (rrf: bm25 + trained dense)"]
    summary = {
        "dataset": "scifact", "num_docs": 5183, "num_test_queries": 300,
        "metrics": {n: {"ndcg@10": 0.5 + i / 100, "recall@100": 0.9, "mrr@10": 0.5, "map@100": 0.5}
                    for i, n in enumerate(systems)},
        "training": {"recipe": "configs/scifact-dense.yaml", "steps": 25, "batch_size": 32, "learning_rate": 1e-4,
                     "train_queries": 809, "train_seconds": 200.0, "prep_seconds": 30.0, "model": "out/train/model"},
        "win_loss": {"wins": 120, "losses": 80, "ties": 100}, "win_loss_metric": "ndcg@10",
        "hybrid": {"fusion": "rrf", "members": ["bm25", "dense (m, trained 25 steps)"]},
        "not_shown": NOT_SHOWN, "stages": {s: 1.0 for s in STAGES}, "total_seconds": 6.0,
    }
    md = summary_markdown(summary)
    for i, name in enumerate(systems):
        assert f"| {name.ljust(len(systems[-1]))} |     {0.5 + i / 100:.4f} |" in md
    assert "25 steps x batch 32" in md and "809 *train* queries only" in md
    assert "trained vs zero-shot dense: 120 wins, 80 losses, 100 ties" in md
    assert "Hybrid: rrf fusion of bm25 and dense (m, trained 25 steps)" in md
    assert "Not shown: generative, its recipe trains for about 80-100 minutes" in md
    assert "Stages: bm25 1 s, dense 1 s, sparse 1 s, train 1 s, dense-trained 1 s, hybrid 1 s." in md


@pytest.mark.java
@pytest.mark.slow
def test_demo_runs_every_stage_on_a_tiny_slice(tmp_path, scifact):
    from uniret.commands import run_demo

    data = save_beir(quick_slice(scifact, test_queries=8, train_queries=8, num_docs=40), tmp_path / "tiny")
    out = tmp_path / "demo"
    result = run_demo(out, data=data, backend="torch", train_steps=2, train_batch_size=4)
    summary = json.loads((out / "summary.json").read_text())
    systems = list(summary["metrics"])
    assert systems == ["bm25", "dense (all-MiniLM-L6-v2, zero-shot)", "sparse (splade-tiny, zero-shot)",
                       "dense (all-MiniLM-L6-v2, trained 2 steps)", "hybrid (rrf: bm25 + trained dense)"]
    assert list(summary["stages"]) == ["bm25", "dense", "sparse", "train", "dense-trained", "hybrid"]
    assert all(0.0 <= row["ndcg@10"] <= 1.0 for row in summary["metrics"].values())
    assert summary["metrics"]["bm25"]["ndcg@10"] > 0.5
    assert sum(summary["win_loss"].values()) == summary["num_test_queries"] == 8
    assert summary["not_shown"] == NOT_SHOWN and result.win_loss == summary["win_loss"]
    # trained on the train queries only: every training record's query is a train query
    train_qids = set(quick_slice(scifact, test_queries=8, train_queries=8, num_docs=40).qrels("train").judgements)
    records = [json.loads(line) for line in (out / "train" / "train_records.jsonl").read_text().splitlines()]
    assert records and {r["query_id"] for r in records} <= train_qids
    assert summary["training"]["train_queries"] == 8 and summary["training"]["steps"] == 2
    assert (out / "train" / "model").is_dir() and not (out / "train" / "checkpoints").exists()
    md = (out / "summary.md").read_text()
    for name in systems:
        assert f"| {name}" in md
    assert "Not shown: generative, its recipe trains for about 80-100 minutes" in md
    assert f"{summary['win_loss']['wins']} wins, {summary['win_loss']['losses']} losses" in md
    for png in ("metrics.png", "trained_vs_zero_shot.png"):
        assert (out / png).read_bytes()[:8] == PNG
    for sub in ("bm25", "dense", "sparse", "dense-trained", "hybrid"):
        report = json.loads((out / sub / "report.json").read_text())
        assert report["dataset"]["num_queries"] == 8 and (out / sub / "per_query.json").is_file()
    hybrid = json.loads((out / "hybrid" / "report.json").read_text())
    assert hybrid["retriever"]["members"] == ["bm25", "dense (all-MiniLM-L6-v2, trained 2 steps)"]


@pytest.mark.java
@pytest.mark.slow
def test_demo_quick_cli(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "uniret", "-q", "demo", "--quick", "--output-dir",
                           str(tmp_path / "demo")], capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert len(summary["metrics"]) == 5 and summary["num_test_queries"] == 50
    assert all(v["ndcg@10"] > 0.5 for v in summary["metrics"].values())
    for name in summary["metrics"]:
        assert f"| {name}" in proc.stdout
    assert "not shown: generative" in proc.stdout and "trained vs zero-shot dense, per query" in proc.stdout


def test_cli_demo_options(capsys):
    from uniret.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["demo", "--no-train", "--train-steps", "3", "--train-batch-size", "4"])
    assert (args.train, args.train_steps, args.train_batch_size, args.quick) == (False, 3, 4, False)
    assert parser.parse_args(["demo"]).train is True
    with pytest.raises(SystemExit):
        parser.parse_args(["demo", "--train-steps", "0"])
    assert "--train-steps" in capsys.readouterr().err
