"""End to end: ``uniret train`` with a sparse config on a real SciFact slice with the real SPLADE-tiny (BM25
mining, BM25 soft labels, InfoNCE + KL + FLOPS with warm-up), then ``uniret eval --retriever sparse`` on the
saved model; and the inference-free variant with IDF-aware FLOPS."""

from __future__ import annotations

import json

import pytest
import yaml

from uniret.data import save_beir

pytestmark = pytest.mark.java


@pytest.fixture(scope="module")
def slice_dir(scifact, tmp_path_factory):
    path = tmp_path_factory.mktemp("sparse-e2e") / "scifact-slice"
    save_beir(scifact.sample(num_queries=80, num_docs=300, split="train", seed=2), path)
    return path


def _config(data_dir, **model):
    return {
        "model": {"kind": "sparse", "backbone": "splade-tiny", "pooling": "max", "max_length": 64, **model},
        "data": {"data": str(data_dir), "holdout_queries": 20},
        "mining": {"k": 20, "num_negatives": 2},
        "teachers": {"teachers": [{"kind": "bm25"}]},
        "loss": {"temperature": 1.0, "hard_negatives": 1, "distill_weight": 1.0, "teacher_temperature": 0.1},
        "flops": {"query_weight": 3e-4, "document_weight": 1e-4, "warmup_steps": 4},
        "trainer": {"batch_size": 8, "max_steps": 6, "learning_rate": 5e-5, "log_every": 2},
        "eval": {"dev": True},
    }


def test_sparse_train_then_eval_through_the_cli(slice_dir, tmp_path, capsys):
    from uniret.cli import main

    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(_config(slice_dir)))
    out = tmp_path / "run"
    assert main(["-q", "train", "--config", str(tmp_path / "cfg.yaml"), "--output-dir", str(out)]) == 0
    assert "trained 6 steps" in capsys.readouterr().out
    result = json.loads((out / "train_result.json").read_text())
    assert result["dev"]["ndcg@10"] > 0.3
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    scales = [row["flops_scale"] for row in log]
    assert scales[:5] == pytest.approx([0.0, 1 / 16, 0.25, 9 / 16, 1.0])  # the quadratic warm-up, step by step
    assert all(row["nnz_d"] > 0 and "flops_q" in row and "flops_d" in row for row in log)
    saved = json.loads((out / "model" / "uniret_sparse.json").read_text())
    assert saved["variant"] == "mlm" and not saved["inference_free"]

    ev = tmp_path / "ev"
    assert main(["-q", "eval", "--data", str(slice_dir), "--split", "train", "--retriever", "sparse", "--model",
                 str(out / "model"), "--max-length", "64", "--output-dir", str(ev)]) == 0
    report = json.loads((ev / "report.json").read_text())
    assert report["metrics"]["ndcg@10"] > 0.3


def test_inference_free_training_with_idf_aware_flops(slice_dir, tmp_path):
    from uniret.cli import main

    cfg = _config(slice_dir, inference_free=True)
    cfg["flops"] = {"document_weight": 1e-4, "idf_aware": True}
    cfg["trainer"]["max_steps"] = 3
    cfg["eval"]["dev"] = False
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    assert main(["-q", "train", "--config", str(tmp_path / "cfg.yaml"), "--output-dir", str(out)]) == 0
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 3 and all("flops_d" in row and "flops_q" not in row for row in log)
    saved = json.loads((out / "model" / "uniret_sparse.json").read_text())
    assert saved["inference_free"]
    from uniret.retriever.splade import SpladeEncoder

    enc = SpladeEncoder(out / "model", device="cpu")
    row = enc.encode_queries(["vitamin d and bone density"]).row(0)
    assert set(row) >= {"vitamin", "bone"} and len(set(row.values())) >= 2  # IDF weights, not ones


def test_the_shipped_decoder_config_trains_the_real_smollm2_and_evaluates(scifact, tmp_path, capsys):
    """``configs/scifact-splade-decoder.yaml`` as shipped (echo, logit background at 2 sd, temperature 10,
    LoRA, dense mining and BM25 + MiniLM teachers), cut to a slice and 2 steps: the CPU path of the decoder
    recipe, on the real SmolLM2-135M and real data, through ``uniret train`` and ``uniret eval``."""
    from pathlib import Path

    from uniret.cli import main

    data = save_beir(scifact.sample(num_queries=12, num_docs=40, split="train", seed=5), tmp_path / "slice")
    cfg = yaml.safe_load((Path(__file__).parent.parent / "configs" / "scifact-splade-decoder.yaml").read_text())
    assert cfg["model"]["variant"] == "echo" and cfg["model"]["background_sd"] == 2.0
    cfg["model"].update(max_length=24, inference_max_length=32, background_docs=8)
    cfg["data"].update(data=str(data), holdout_queries=4)
    cfg["mining"].update(k=10, num_negatives=2)
    cfg["trainer"].update(batch_size=4, max_steps=2, grad_cache_chunk=4, log_every=1)
    cfg["flops"]["warmup_steps"] = 2
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    assert main(["-q", "train", "--config", str(tmp_path / "cfg.yaml"), "--output-dir", str(out)]) == 0
    assert "trained 2 steps" in capsys.readouterr().out
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 2 and all(0 < row["nnz_q"] < 49152 and 0 < row["nnz_d"] < 49152 for row in log)
    saved = json.loads((out / "model" / "uniret_sparse.json").read_text())
    assert saved["variant"] == "echo" and (out / "model" / "logit_offset.safetensors").is_file()
    assert "ndcg@10" in json.loads((out / "train_result.json").read_text())["dev"]  # dev ran (4 queries: no floor)

    ev = tmp_path / "ev"
    assert main(["-q", "eval", "--data", str(data), "--split", "train", "--retriever", "sparse", "--model",
                 str(out / "model"), "--output-dir", str(ev)]) == 0
    report = json.loads((ev / "report.json").read_text())
    # 12 queries over 40 documents, about one relevant each: a random ranking scores about 0.11 (measured: 0.43)
    assert report["metrics"]["ndcg@10"] > 0.25


def test_a_time_budget_stops_uniret_train_and_says_so(slice_dir, tmp_path, capsys):
    from uniret.cli import main

    cfg = _config(slice_dir)
    cfg["trainer"].update(max_steps=4, max_seconds=0.001)
    cfg["eval"]["dev"] = False
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    assert main(["-q", "train", "--config", str(tmp_path / "cfg.yaml"), "--output-dir", str(out)]) == 0
    assert "trained 1 steps (stopped by trainer.max_seconds=0.001)" in capsys.readouterr().out
    result = json.loads((out / "train_result.json").read_text())
    assert result["steps"] == 1 and result["time_limited"] and (out / "model" / "uniret_sparse.json").is_file()
    # the same config again (the budget may change): the run resumes from its checkpoint and finishes
    cfg["trainer"]["max_seconds"] = None
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["-q", "train", "--config", str(tmp_path / "cfg.yaml"), "--output-dir", str(out)]) == 0
    assert "trained 4 steps in" in capsys.readouterr().out
    result = json.loads((out / "train_result.json").read_text())
    assert result["steps"] == 4 and not result["time_limited"]
    assert [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
