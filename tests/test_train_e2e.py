"""End to end: ``uniret train`` on a real SciFact slice with the real MiniLM (BM25 mining with the
relative-margin filter, BM25 teacher scores, InfoNCE + distillation), then evaluation of the saved model."""

from __future__ import annotations

import json

import pytest
import yaml

from uniret.data import load_beir, save_beir

pytestmark = pytest.mark.java


def _ndcg(model_dir, dataset, split):
    from uniret.eval.runner import evaluate_backend
    from uniret.index.faiss_index import FaissIndex
    from uniret.retriever.dense import DenseEncoder

    encoder = DenseEncoder(model_dir, device="cpu", max_length=128, batch_size=32)
    return evaluate_backend(FaissIndex(encoder, "flat"), dataset, split=split, name="e2e").metrics["ndcg@10"]


def test_uniret_train_improves_retrieval_on_scifact_slice(scifact, tmp_path, capsys):
    from uniret.assets import resolve_model
    from uniret.cli import main

    data_dir = tmp_path / "scifact-train-slice"
    save_beir(scifact.sample(num_queries=150, num_docs=500, split="train", seed=1), data_dir)
    cfg = {
        "model": {"backbone": "all-MiniLM-L6-v2", "max_length": 96},
        "data": {"data": str(data_dir), "holdout_queries": 40},
        "mining": {"k": 30, "filter": "relative", "relative_margin": 0.95, "num_negatives": 4},
        "teachers": {"teachers": [{"kind": "bm25"}]},
        "loss": {"hard_negatives": 1, "distill_weight": 1.0, "teacher_temperature": 0.1},
        "trainer": {"batch_size": 16, "max_steps": 14, "learning_rate": 1e-4, "log_every": 5},
        "eval": {"dev": True},
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    assert main(["-q", "train", "--config", str(tmp_path / "cfg.yaml"), "--output-dir", str(out)]) == 0
    assert "trained 14 steps" in capsys.readouterr().out

    result = json.loads((out / "train_result.json").read_text())
    assert result["steps"] == 14
    mining = result["stats"]["mining"]
    assert mining["negatives_kept_above_positive"] == 0 and mining["removed"]["relative"] > 0
    records = [json.loads(line) for line in (out / "train_records.jsonl").read_text().splitlines()]
    dev_qids = set(json.loads((out / "dev_queries.json").read_text()))
    assert len(dev_qids) == 40 and not dev_qids & {r["query_id"] for r in records}
    assert all(len(r["negative_scores"]) == len(r["negatives"]) for r in records)

    # the trained model beats the base model on the training queries and holds up on the dev queries
    from uniret.train.pipeline import holdout_split

    trained, _ = holdout_split(load_beir(data_dir), "train", 40, 0)
    train_view = trained.sample(num_queries=60, num_docs=500, split="train")
    base_train, tuned_train = _ndcg(resolve_model("all-MiniLM-L6-v2"), train_view, "train"), \
        _ndcg(out / "model", train_view, "train")
    assert tuned_train > base_train + 0.01, (base_train, tuned_train)
    assert result["dev"]["ndcg@10"] > 0.5
