"""``run_training`` options beyond the plain recipe, on a real SciFact slice and the real MiniLM: iterative
re-mining with the model being trained, checkpoint averaging, cropped pairs mixed in, the dev split."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from uniret.data import save_beir
from uniret.train.config import DataConfig, EvalConfig, ModelConfig, TrainConfig
from uniret.train.mining import MiningConfig
from uniret.train.pipeline import holdout_split, run_training
from uniret.train.trainer import TrainerConfig, checkpoint_dirs


def test_holdout_split_is_disjoint_and_seeded(scifact):
    train, dev = holdout_split(scifact, "train", 100, 0)
    again, _ = holdout_split(scifact, "train", 100, 0)
    t, d = set(train.qrels("train").judgements), set(dev.qrels("dev").judgements)
    assert len(d) == 100 and not t & d and len(t) + 100 == len(scifact.qrels("train").judgements)
    assert set(again.qrels("train").judgements) == t
    with pytest.raises(ValueError, match="cannot hold out"):
        holdout_split(scifact, "train", 10_000, 0)


def test_remining_averaging_and_cropped_pairs(scifact, tmp_path):
    from uniret.retriever.embedder import Embedder

    data = save_beir(scifact.sample(num_queries=24, num_docs=60, split="train"), tmp_path / "data")
    cfg = TrainConfig(
        model=ModelConfig(max_length=32, device="cpu"),
        data=DataConfig(data=str(data), holdout_queries=4, unsupervised_pairs_per_doc=0),
        mining=MiningConfig(retriever="dense", k=15, filter="relative", num_negatives=2, max_length=32, device="cpu"),
        trainer=TrainerConfig(batch_size=8, epochs=3, learning_rate=5e-5, keep_checkpoints=2, log_every=100),
        remine_every_epochs=1, average_last_checkpoints=2, eval=EvalConfig(dev=True),
    )
    cfg.data.unsupervised_pairs_per_doc = 1
    out = tmp_path / "run"
    summary = run_training(cfg, out)

    # re-mined before epochs 1 and 2 with the current model; the cropped pairs survive re-mining
    assert [h["epoch"] for h in summary["remined"]] == [1, 2]
    assert all(h["records"] == 20 and h["kept_other_records"] == 60 for h in summary["remined"])
    assert summary["stats"]["unsupervised_pairs"] == 60
    # the final model is the mean of the last two checkpoints, the last of which is the final step
    ckpts = checkpoint_dirs(out)
    assert summary["averaged_checkpoints"] == [c.name for c in ckpts] and len(ckpts) == 2
    assert ckpts[-1].name == f"step-{summary['steps']}"
    last_state = json.loads((ckpts[-1] / "trainer_state.json").read_text())
    assert last_state["step"] == summary["steps"] and (last_state["epoch"], last_state["batch_in_epoch"]) == (3, 0)
    a, b = (load_file(str(c / "weights.safetensors")) for c in ckpts)
    model = Embedder.load(out / "model", device="cpu")
    key = next(k for k in a if k.endswith("encoder.layer.0.attention.self.query.weight"))
    saved = dict(model.named_parameters())
    param = next(v for k, v in saved.items() if k.endswith("encoder.layer.0.attention.self.query.weight"))
    assert not torch.equal(a[key], b[key])
    torch.testing.assert_close(param.detach(), (a[key] + b[key]) / 2)
    # the dev split was evaluated and never trained on
    assert 0.0 < summary["dev"]["ndcg@10"] <= 1.0
    dev = set(json.loads((out / "dev_queries.json").read_text()))
    trained = {json.loads(line)["query_id"] for line in (out / "train_records.jsonl").read_text().splitlines()}
    assert len(dev) == 4 and not dev & trained


def test_frozen_lower_layers_stay_the_base_models(scifact, tmp_path):
    """model.freeze: the named backbone parameters leave training exactly as they came (real MiniLM, real
    SciFact records); the rest train; a prefix that matches nothing is a clear error."""
    from uniret.retriever.embedder import Embedder
    from uniret.train.families import freeze_parameters

    data = save_beir(scifact.sample(num_queries=12, num_docs=40, split="train"), tmp_path / "data")
    cfg = TrainConfig(
        model=ModelConfig(max_length=32, device="cpu", freeze=["embeddings", "encoder.layer.0"]),
        data=DataConfig(data=str(data)),
        trainer=TrainerConfig(batch_size=4, max_steps=3, learning_rate=1e-3, log_every=100),
        eval=EvalConfig(dev=False),
    )
    out = tmp_path / "run"
    run_training(cfg, out)
    base = dict(Embedder.build("all-MiniLM-L6-v2", device="cpu").named_parameters())
    trained = dict(Embedder.load(out / "model", device="cpu").named_parameters())
    frozen = [k for k in base if ".embeddings." in k or ".encoder.layer.0." in k]
    free = [k for k in base if ".encoder.layer.1." in k]
    assert frozen and free
    assert all(torch.equal(base[k], trained[k]) for k in frozen)
    assert not all(torch.equal(base[k], trained[k]) for k in free)

    with pytest.raises(ValueError, match="model.freeze is implemented for the dense family only"):
        ModelConfig(kind="sparse", freeze=["embeddings"])
    with pytest.raises(ValueError, match=r"'encoder\.layer\.9' matches no parameter.*embeddings, encoder"):
        freeze_parameters(Embedder.build("all-MiniLM-L6-v2", device="cpu").backbone, ["encoder.layer.9"])


def test_inference_max_length_is_what_dev_and_the_saved_model_use(scifact, tmp_path, monkeypatch):
    """model.inference_max_length: the model trains at max_length, then the dev split is evaluated and the
    model saved at the inference length, so `uniret eval --model OUT/model` encodes as the dev split did
    (real SPLADE-tiny, real SciFact slice)."""
    from uniret.retriever.splade import SparseModel

    data = save_beir(scifact.sample(num_queries=12, num_docs=40, split="train"), tmp_path / "data")
    cfg = TrainConfig(
        model=ModelConfig(kind="sparse", backbone="splade-tiny", pooling="max", max_length=24,
                          inference_max_length=40, device="cpu"),
        data=DataConfig(data=str(data), holdout_queries=4),
        trainer=TrainerConfig(batch_size=4, max_steps=2, learning_rate=1e-4, log_every=100),
        eval=EvalConfig(dev=True),
    )
    seen: list[tuple[int, int]] = []
    real = SparseModel.encode

    def spy(self, *args, **kwargs):
        seen.append((self.max_length, self._lm().max_seq_length))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(SparseModel, "encode", spy)
    summary = run_training(cfg, tmp_path / "run")
    monkeypatch.undo()
    assert 0.0 <= summary["dev"]["ndcg@10"] <= 1.0
    assert seen and set(seen) == {(40, 40)}  # the dev split's documents and queries, at the inference length
    assert SparseModel.load(tmp_path / "run" / "model", device="cpu").max_length == 40
    assert SparseModel.load(tmp_path / "run" / "model", device="cpu", max_length=24).max_length == 24

    with pytest.raises(ValueError, match="inference_max_length must be a positive integer"):
        ModelConfig(inference_max_length=0)
    with pytest.raises(ValueError, match="inference_max_length is implemented for the dense and sparse"):
        ModelConfig(kind="cross-encoder", inference_max_length=64)
