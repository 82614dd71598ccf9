"""The training loop: it learns, it checkpoints without pickle, and resuming gives the same model."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import TinyEmbedder, make_records
from uniret.train.biencoder import BiEncoderModule, LossConfig
from uniret.train.records import TrainingRecord
from uniret.train.sampler import BatchSampler
from uniret.train.trainer import (
    Callback,
    Trainer,
    TrainerConfig,
    checkpoint_dirs,
    load_optimizer,
    save_optimizer,
)


def run(tmp, max_steps=6, callbacks=(), seed=0, **kw):
    emb = TinyEmbedder(dropout=0.1, seed=seed)
    cfg = TrainerConfig(batch_size=4, max_steps=max_steps, learning_rate=0.05, warmup_ratio=0.2, save_every=2,
                        keep_checkpoints=5, **kw)
    trainer = Trainer(BiEncoderModule(emb, LossConfig(hard_negatives=2, mixing=2)), make_records(16, 3), cfg, tmp,
                      callbacks=callbacks)
    return emb, trainer.train()


def test_training_lowers_the_loss(tmp_path):
    emb, result = run(tmp_path, max_steps=40)
    losses = [h["loss"] for h in result.history]
    assert sum(losses[-8:]) / 8 < 0.7 * sum(losses[:8]) / 8
    assert result.steps == 40 and result.examples_per_second > 0
    log = [json.loads(x) for x in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 40 and {"loss", "lr", "step", "infonce"} <= set(log[0])


class Interrupt(Callback):
    def on_step_end(self, trainer, step, logs):
        if step == 5:
            raise KeyboardInterrupt


def test_resume_after_interruption_gives_the_same_model(tmp_path):
    straight, _ = run(tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", callbacks=[Interrupt()])
    assert [p.name for p in checkpoint_dirs(tmp_path / "b")] == ["step-2", "step-4"]
    resumed, result = run(tmp_path / "b")
    assert result.steps == 6 and len(result.history) == 2  # steps 5 and 6 only
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=name)
    files = {p.name for p in checkpoint_dirs(tmp_path / "b")[-1].iterdir()}
    assert files == {"weights.safetensors", "optimizer.safetensors", "optimizer.json", "rng.safetensors",
                     "trainer_state.json"}


def test_optimizer_state_round_trip(tmp_path):
    p = torch.nn.Parameter(torch.randn(3))
    opt = torch.optim.AdamW([p], lr=0.1)
    p.sum().backward()
    opt.step()
    save_optimizer(opt, tmp_path)
    opt2 = torch.optim.AdamW([torch.nn.Parameter(torch.randn(3))], lr=0.5)
    load_optimizer(opt2, tmp_path)
    s1, s2 = opt.state_dict(), opt2.state_dict()
    torch.testing.assert_close(s1["state"][0]["exp_avg"], s2["state"][0]["exp_avg"])
    assert s2["param_groups"][0]["lr"] == 0.1


def test_sampler_never_repeats_a_query_or_positive_in_a_batch():
    recs = [TrainingRecord(query=f"q{i % 5}", positives=[f"d{i % 3}"], positive_ids=[f"d{i % 3}"]) for i in range(30)]
    recs += [TrainingRecord(query=f"u{i}", positives=[f"x{i}"], positive_ids=[f"x{i}"]) for i in range(30)]
    sampler = BatchSampler(recs, 4, seed=1)
    batches = list(sampler.batches(0))
    assert batches and all(len(b) == 4 for b in batches)
    for b in batches:
        assert len({recs[i].query for i in b}) == 4 and len({recs[i].positive_ids[0] for i in b}) == 4
    assert batches == list(BatchSampler(recs, 4, seed=1).batches(0))
    assert batches != list(sampler.batches(1))


def test_same_task_batches_and_rank_slices():
    recs = [TrainingRecord(query=f"q{i}", positives=[f"d{i}"], task="a" if i % 2 else "b") for i in range(32)]
    for b in BatchSampler(recs, 4, seed=0, same_task=True).batches(0):
        assert len({recs[i].task for i in b}) == 1
    r0 = list(BatchSampler(recs, 4, seed=0, world_size=2, rank=0).batches(0))
    r1 = list(BatchSampler(recs, 4, seed=0, world_size=2, rank=1).batches(0))
    assert len(r0) == len(r1) == 4 and not set(sum(r0, [])) & set(sum(r1, []))


def test_distillation_without_teacher_scores_is_a_clear_error(tmp_path):
    emb = TinyEmbedder()
    trainer = Trainer(BiEncoderModule(emb, LossConfig(distill_weight=1.0)), make_records(8, 2),
                      TrainerConfig(batch_size=4, max_steps=1), tmp_path)
    with pytest.raises(ValueError, match="distillation needs teacher scores"):
        trainer.train()


@pytest.mark.parametrize("name", ["scifact-dense.yaml", "scifact-reranker.yaml"])
def test_shipped_recipes_load(name):
    from pathlib import Path

    from uniret.config import load_config
    from uniret.train.config import TrainConfig

    cfg = load_config(Path(__file__).resolve().parent.parent / "configs" / name, TrainConfig)
    assert cfg.data.holdout_queries == 100 and cfg.mining is not None and cfg.mining.filter == "relative"
    assert cfg.trainer.max_steps and cfg.trainer.max_steps > 0
    assert cfg.model.kind == ("dense" if "dense" in name else "cross-encoder")
    with pytest.raises(Exception, match="max_stepz"):
        load_config(Path(__file__).resolve().parent.parent / "configs" / name, TrainConfig,
                    overrides={"trainer.max_stepz": 3})


def test_overrides_read_exponent_floats_and_reject_words():
    """PyYAML reads ``1e-4`` (no dot) as a string; a float field takes it as 1e-4, a word stays an error."""
    from pathlib import Path

    from uniret.cli import parse_overrides
    from uniret.config import load_config
    from uniret.errors import DataFormatError
    from uniret.train.config import TrainConfig

    recipe = Path(__file__).resolve().parent.parent / "configs" / "scifact-dense.yaml"
    cfg = load_config(recipe, TrainConfig, overrides=parse_overrides(
        ["trainer.learning_rate=1e-4", "loss.student_temperature=2E-2"]))
    assert cfg.trainer.learning_rate == pytest.approx(1e-4) and isinstance(cfg.trainer.learning_rate, float)
    assert cfg.loss.student_temperature == pytest.approx(0.02)
    with pytest.raises(DataFormatError, match="trainer.learning_rate.*expected a float"):
        load_config(recipe, TrainConfig, overrides={"trainer.learning_rate": "fast"})
    with pytest.raises(DataFormatError, match="trainer.max_steps"):
        load_config(recipe, TrainConfig, overrides={"trainer.max_steps": "1e2"})
