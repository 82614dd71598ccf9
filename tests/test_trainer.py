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


def run(tmp, max_steps=6, callbacks=(), seed=0, save_every=2, **kw):
    emb = TinyEmbedder(dropout=0.1, seed=seed)
    cfg = TrainerConfig(batch_size=4, max_steps=max_steps, learning_rate=0.05, warmup_ratio=0.2,
                        save_every=save_every, keep_checkpoints=5, **kw)
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
                     "trainer_state.json", ".uniret.json"}


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
    if name == "scifact-dense.yaml":  # issue 13: the out-of-domain guard chooses the WiSE-FT alpha
        assert len(cfg.eval.ood) == 2 and cfg.interpolate is not None and cfg.interpolate.alphas[0] == 1.0
        assert cfg.interpolate.max_ood_drop == 0.005
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


@pytest.mark.parametrize("save_every,max_steps,expected", [
    (4, 6, ["step-4", "step-6"]),  # ends mid-epoch (4 batches an epoch), off the save_every grid
    (None, 6, ["step-4", "step-6"]),  # epoch ends, then the last step
    (2, 8, ["step-2", "step-4", "step-6", "step-8"]),  # the last step is an epoch end and on the grid: saved once
])
def test_the_last_step_is_checkpointed_once(tmp_path, save_every, max_steps, expected):
    emb = TinyEmbedder(seed=0)
    cfg = TrainerConfig(batch_size=4, max_steps=max_steps, save_every=save_every, keep_checkpoints=10)
    records = make_records(16, 3)
    result = Trainer(BiEncoderModule(emb, LossConfig(hard_negatives=2)), records, cfg, tmp_path).train()
    assert [p.name for p in checkpoint_dirs(tmp_path)] == expected == [p.name for p in result.checkpoints]
    last = json.loads((checkpoint_dirs(tmp_path)[-1] / "trainer_state.json").read_text())
    per_epoch = 4
    assert last["step"] == max_steps
    assert (last["epoch"], last["batch_in_epoch"]) == divmod(max_steps, per_epoch)
    # resuming from the final checkpoint trains nothing more and logs nothing twice
    again = Trainer(BiEncoderModule(TinyEmbedder(seed=5), LossConfig(hard_negatives=2)), records, cfg,
                    tmp_path).train()
    assert again.steps == max_steps and again.history == [] and again.checkpoints == []
    assert len((tmp_path / "train_log.jsonl").read_text().splitlines()) == max_steps


class Draws(Callback):
    """Draws from every global generator after each step (as dropout, augmentation... would)."""

    def __init__(self):
        self.draws = {}

    def on_step_end(self, trainer, step, logs):
        import random

        import numpy as np

        self.draws[step] = (random.random(), float(np.random.rand()), float(torch.rand(1)))


def test_checkpoints_restore_every_random_state(tmp_path):
    import random

    import numpy as np

    random.seed(1)
    np.random.seed(1)
    straight = Draws()
    run(tmp_path / "a", callbacks=[straight])
    random.seed(1)
    np.random.seed(1)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", callbacks=[Draws(), Interrupt()])
    random.seed(99)  # the resumed process starts from other states
    np.random.seed(99)
    torch.manual_seed(99)
    resumed = Draws()
    run(tmp_path / "b", callbacks=[resumed])
    assert sorted(resumed.draws) == [5, 6]
    assert resumed.draws == {s: straight.draws[s] for s in (5, 6)}
    state = json.loads((checkpoint_dirs(tmp_path / "b")[-1] / "trainer_state.json").read_text())
    assert set(state["rng"]) == {"python", "numpy"}


class ModelDependentRecords(Callback):
    """Replaces the records at each epoch start with ones that depend on the current weights (as re-mining
    with the model being trained does)."""

    def __init__(self, stop_at=None):
        self.stop_at = stop_at

    def on_epoch_start(self, trainer, epoch):
        if epoch:
            first = next(iter(trainer.module.parameters()))
            trainer.records = make_records(16, 3, seed=int(abs(float(first.detach().sum())) * 1e4) % 1000)

    def on_step_end(self, trainer, step, logs):
        if step == self.stop_at:
            raise KeyboardInterrupt


def test_mid_epoch_resume_trains_on_the_epoch_records_the_callbacks_made(tmp_path):
    straight, _ = run(tmp_path / "a", max_steps=8, save_every=3, callbacks=[ModelDependentRecords()])
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", max_steps=8, save_every=3, callbacks=[ModelDependentRecords(stop_at=7)])
    last = checkpoint_dirs(tmp_path / "b")[-1]
    assert last.name == "step-6" and (last / "records.jsonl").is_file()  # epoch 1, batch 2
    resumed, result = run(tmp_path / "b", max_steps=8, save_every=3, callbacks=[ModelDependentRecords()])
    assert len(result.history) == 2
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=name)


def test_resuming_a_checkpoint_of_another_config_is_refused(tmp_path):
    from uniret.train.trainer import ResumeMismatchError

    def trainer(lr, records):
        cfg = TrainerConfig(batch_size=4, max_steps=4, save_every=2, learning_rate=lr)
        return Trainer(BiEncoderModule(TinyEmbedder(), LossConfig(hard_negatives=2)), records, cfg, tmp_path,
                       run_config={"trainer": {"learning_rate": lr, "log_every": 10}})

    trainer(0.05, make_records(16, 3)).train()
    with pytest.raises(ResumeMismatchError, match=r"trainer.learning_rate: 0.05 != 0.01"):
        trainer(0.01, make_records(16, 3)).train()
    with pytest.raises(ResumeMismatchError, match="training records"):
        trainer(0.05, make_records(16, 3, seed=1)).train()


def test_pull_towards_is_the_decoupled_l2sp_step():
    p, a = torch.tensor([1.0, 2.0, -4.0]), torch.tensor([0.0, 2.0, 0.0])
    from uniret.train.trainer import pull_towards

    pull_towards([p], [a], 0.25)
    torch.testing.assert_close(p, torch.tensor([0.75, 2.0, -3.0]))
    pull_towards([p], [a], 1.0)
    torch.testing.assert_close(p, a)


def distance_from_start(tmp, **kw):
    start = TinyEmbedder(dropout=0.1, seed=0).state_dict()
    emb, _ = run(tmp, max_steps=12, **kw)
    return sum(float((emb.state_dict()[k] - v).pow(2).sum()) for k, v in start.items()) ** 0.5


def test_anchor_decay_keeps_the_weights_nearer_the_start(tmp_path):
    free = distance_from_start(tmp_path / "free")
    pulled = distance_from_start(tmp_path / "pulled", anchor_decay=15.0)  # lr 0.05: up to 75% back per step
    assert 0 < pulled < 0.6 * free
    assert (tmp_path / "pulled" / "checkpoints" / "anchor.safetensors").is_file()
    assert not (tmp_path / "free" / "checkpoints" / "anchor.safetensors").exists()


def test_resume_with_anchor_decay_gives_the_same_model(tmp_path):
    straight, _ = run(tmp_path / "a", anchor_decay=10.0)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", callbacks=[Interrupt()], anchor_decay=10.0)
    resumed, result = run(tmp_path / "b", anchor_decay=10.0)
    assert len(result.history) == 2
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=name)


def test_anchor_decay_out_of_range_is_refused():
    with pytest.raises(ValueError, match="anchor_decay"):
        TrainerConfig(learning_rate=1e-3, anchor_decay=1000.0)
    with pytest.raises(ValueError, match="anchor_decay"):
        TrainerConfig(anchor_decay=-1.0)


def test_anchor_decay_on_minilm_and_scifact(scifact, tmp_path):
    """The real model on real pairs: the same 2 steps with and without the pull; with it the weights end nearer
    the start."""
    from uniret.retriever.embedder import Embedder

    small = scifact.sample(num_queries=24, num_docs=100, split="train", seed=3)
    docs, qrels = small.corpus.to_dict(), small.qrels("train")
    records = [TrainingRecord(query=small.queries[q], positives=[docs[qrels.relevant(q)[0]].full_text()],
                              positive_ids=qrels.relevant(q)[:1]) for q in qrels][:16]

    def train(out, **kw):
        torch.manual_seed(0)
        emb = Embedder.build("all-MiniLM-L6-v2", max_length=32, device="cpu")
        start = {k: v.detach().clone() for k, v in emb.state_dict().items()}
        cfg = TrainerConfig(batch_size=8, max_steps=2, learning_rate=3e-4, warmup_ratio=0.0, save_every=None, **kw)
        Trainer(BiEncoderModule(emb, LossConfig(hard_negatives=0)), records, cfg, out).train()
        return sum(float((emb.state_dict()[k] - v).pow(2).sum()) for k, v in start.items()) ** 0.5

    free = train(tmp_path / "free")
    pulled = train(tmp_path / "pulled", anchor_decay=1000.0)  # 30% back per step at lr 3e-4
    assert 0 < pulled < 0.9 * free


def test_learning_rate_mapping_gives_matching_parameters_their_own_rate(tmp_path):
    emb = TinyEmbedder(dropout=0.1, seed=0)
    module = BiEncoderModule(emb, LossConfig(hard_negatives=2))
    names = [n for n, _ in module.named_parameters()]
    target = names[0]
    cfg = TrainerConfig(batch_size=4, max_steps=1, learning_rate=0.05, warmup_ratio=0.0,
                        learning_rate_mapping={f"^{target}$": 0.5})
    trainer = Trainer(module, make_records(16, 3), cfg, tmp_path)
    groups = trainer._param_groups(module.parameters())
    assert [len(g["params"]) for g in groups] == [len(names) - 1, 1]
    assert "lr" not in groups[0] and groups[1]["lr"] == 0.5  # the default group first, at learning_rate
    assert groups[1]["params"][0] is dict(module.named_parameters())[target]
    trainer.train()  # the schedule and the optimizer take the groups
    with pytest.raises(ValueError, match="matches no trainable parameter"):
        Trainer(module, make_records(16, 3), TrainerConfig(learning_rate_mapping={"no_such_parameter": 1e-3}),
                tmp_path / "b")._param_groups(module.parameters())
    for bad in ({"(": 1e-3}, {"x": 0.0}, {"x": "fast"}):
        with pytest.raises(ValueError, match="learning_rate_mapping"):
            TrainerConfig(learning_rate_mapping=bad)


def test_learned_query_weights_need_an_inference_free_sparse_model():
    from uniret.train.config import ModelConfig

    assert ModelConfig(kind="sparse", backbone="splade-tiny", inference_free=True, query_weights="learned")
    with pytest.raises(ValueError, match="inference-free sparse"):
        ModelConfig(kind="sparse", backbone="splade-tiny", query_weights="learned")
    with pytest.raises(ValueError, match="expected idf or learned"):
        ModelConfig(kind="sparse", backbone="splade-tiny", inference_free=True, query_weights="bm25")


class SlowSteps(Callback):
    def on_step_end(self, trainer, step, logs):
        import time

        time.sleep(0.2)


def test_a_time_budget_stops_after_the_step_that_crosses_it_with_a_checkpoint(tmp_path):
    _, result = run(tmp_path, max_steps=20, save_every=None, callbacks=[SlowSteps()], max_seconds=0.5)
    # 0.2 s a step: over 0.5 s after the third at the latest; the epochs left (4 steps each) train no more
    assert result.time_limited and 2 <= result.steps <= 3 and result.epochs == 1  # of the 5 planned
    assert [p.name for p in result.checkpoints] == [f"step-{result.steps}"]
    assert len((tmp_path / "train_log.jsonl").read_text().splitlines()) == result.steps
    assert result.history[-1]["lr"] > 0  # the schedule spans max_steps: it had not decayed
    _, full = run(tmp_path / "b", max_steps=3, save_every=None, max_seconds=60)
    assert not full.time_limited and full.steps == 3
    with pytest.raises(ValueError, match="trainer.max_seconds"):
        TrainerConfig(max_seconds=0)


def test_profile_steps_writes_where_the_time_went_and_changes_nothing(tmp_path):
    """``trainer.profile_steps``: one warm-up step, then N profiled ones into profile.json (operators by host
    time, the mean step); the weights equal an unprofiled run's; a run shorter than the profile writes what it
    recorded; a negative count is an error."""
    plain, _ = run(tmp_path / "plain", max_steps=5)
    profiled, result = run(tmp_path / "prof", max_steps=5, profile_steps=3)
    for (name, a), b in zip(plain.state_dict().items(), profiled.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    report = json.loads((tmp_path / "prof" / "profile.json").read_text())
    assert report["profiled_steps"] == 3 and report["device"] == "cpu" and report["wall_seconds_per_step"] > 0
    names = [op["name"] for op in report["top_by_self_cpu"]]
    assert any(n.startswith("aten::") for n in names) and len(names) <= 30
    assert result.steps == 5 and not (tmp_path / "plain" / "profile.json").exists()
    run(tmp_path / "short", max_steps=3, profile_steps=10)  # warm-up + 2 recorded, then training ends
    assert json.loads((tmp_path / "short" / "profile.json").read_text())["profiled_steps"] == 2
    with pytest.raises(ValueError, match="trainer.profile_steps"):
        TrainerConfig(profile_steps=-1)


def test_a_failing_profile_does_not_stop_training(tmp_path, monkeypatch, caplog):
    """The profile is a diagnostic: an error while writing it is logged, training goes on; a run of only the
    warm-up step writes no profile."""
    from uniret.train import profiling

    def broken(self, prof):
        raise OSError("disk full")

    monkeypatch.setattr(profiling.StepProfiler, "_report", broken)
    with caplog.at_level("WARNING", logger="uniret.train.profiling"):
        _, result = run(tmp_path / "a", max_steps=4, profile_steps=2)
    assert result.steps == 4 and "could not be written" in caplog.text
    assert not (tmp_path / "a" / "profile.json").exists()
    monkeypatch.undo()
    run(tmp_path / "b", max_steps=1, profile_steps=2)
    assert not (tmp_path / "b" / "profile.json").exists()
