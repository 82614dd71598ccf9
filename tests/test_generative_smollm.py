"""End to end with the real SmolLM2-135M (slow on 2 CPU cores): ``uniret train`` a few LoRA steps of the
generative family on a real SciFact slice, then ``uniret eval --retriever generative --model OUT/model``; every
identifier the constrained beam search generates exists in the corpus."""

from __future__ import annotations

import json

import pytest
import yaml

pytestmark = pytest.mark.slow


def test_uniret_train_and_eval_generative_smollm2(scifact, tmp_path):
    from uniret.cli import main
    from uniret.data import save_beir

    data_dir = save_beir(scifact.sample(num_queries=6, num_docs=60, split="train", seed=5), tmp_path / "slice")
    cfg = yaml.safe_load(open("configs/scifact-generative.yaml", encoding="utf-8"))
    cfg["data"]["data"] = str(data_dir)
    cfg["model"]["device"] = "cpu"
    cfg["trainer"].update(batch_size=2, max_steps=3, save_every=None)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    assert main(["-q", "train", "--config", str(tmp_path / "cfg.yaml"), "--output-dir", str(run)]) == 0
    result = json.loads((run / "train_result.json").read_text())
    assert result["steps"] == 3 and result["final_loss"] > 0
    saved = json.loads((run / "model" / "uniret_generative.json").read_text())
    assert saved["model_type"] == "llama" and saved["history"]["lora"]["r"] == 16
    assert main(["-q", "eval", "--data", str(data_dir), "--split", "train", "--retriever", "generative", "--model",
                 str(run / "model"), "--device", "cpu", "--batch-size", "6", "--output-dir", str(tmp_path / "ev")]) == 0
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    valid = report["retriever"]["valid_outputs"]
    assert valid["generated"] >= 6 * 5 and valid["valid"] == valid["generated"]  # 100% valid identifiers
    assert report["retriever"]["encoder"]["tokenizer"]["vocab_size"] == 49152
    assert report["metrics"]["ndcg@10"] > 0.0  # the claims' own cited abstracts are found at all
