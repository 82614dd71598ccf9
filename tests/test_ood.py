"""The out-of-domain guard (``eval.ood``) and WiSE-FT (``interpolate``): weight interpolation by hand, the
selection rule on fake numbers, refusing the training data, and one real run (MiniLM, SciFact and cranfield
slices) where alpha 0 must reproduce the base model's out-of-domain numbers exactly."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from uniret.config import from_dict
from uniret.data import load_beir, save_beir
from uniret.errors import DataFormatError
from uniret.train.config import DataConfig, EvalConfig, InterpolateConfig, ModelConfig, TrainConfig
from uniret.train.mining import MiningConfig
from uniret.train.ood import dataset_fingerprint, resolve_ood
from uniret.train.soup import interpolate_model_dirs, interpolate_state_dicts, select_alpha, select_candidate
from uniret.train.trainer import TrainerConfig


def _states() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    trained = {"w": torch.randn(4, 3, generator=g), "b": torch.randn(3, generator=g).half(),
               "ids": torch.tensor([0, 1, 2])}
    base = {"w": torch.randn(4, 3, generator=g), "b": torch.randn(3, generator=g).half(),
            "ids": torch.tensor([0, 1, 2])}
    return trained, base


def test_alpha_one_is_the_trained_model_and_alpha_zero_the_base():
    trained, base = _states()
    one, zero = interpolate_state_dicts(trained, base, 1.0), interpolate_state_dicts(trained, base, 0.0)
    for k in trained:
        assert torch.equal(one[k], trained[k]) and one[k].dtype == trained[k].dtype
        assert torch.equal(zero[k], base[k])
    quarter = interpolate_state_dicts(trained, base, 0.25)
    torch.testing.assert_close(quarter["w"], 0.25 * trained["w"] + 0.75 * base["w"])
    assert quarter["b"].dtype == torch.float16 and quarter["ids"].tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        interpolate_state_dicts(trained, base, 1.5)


def test_interpolate_model_dirs(tmp_path):
    trained, base = _states()
    for name, state in (("trained", trained), ("base", base)):
        (tmp_path / name).mkdir()
        save_file(state, str(tmp_path / name / "model.safetensors"))
        (tmp_path / name / "config.json").write_text(json.dumps({"from": name}))
    for alpha, expected in ((1.0, trained), (0.0, base)):
        out = interpolate_model_dirs(tmp_path / "trained", tmp_path / "base", alpha, tmp_path / f"a{alpha}")
        got = load_file(str(out / "model.safetensors"))
        assert all(torch.equal(got[k], expected[k]) for k in expected)
        assert json.loads((out / "config.json").read_text()) == {"from": "trained"}


def _c(alpha, dev, **drops):
    return {"alpha": alpha, "dev": dev, "ood_drops": drops}


def test_selection_rule_on_fake_numbers(caplog):
    cands = [_c(1.0, 0.92, cran=0.008, msm=0.007), _c(0.8, 0.91, cran=0.004, msm=0.001),
             _c(0.6, 0.90, cran=-0.002, msm=0.000), _c(0.4, 0.93, cran=0.001, msm=0.006)]
    # 1.0 and 0.4 drop more than 0.005 on one set: the best dev of the rest is 0.8
    alpha, reason = select_alpha(cands, max_ood_drop=0.005)
    assert alpha == 0.8 and "best dev" in reason
    # a looser rule admits everything: the best dev overall
    assert select_alpha(cands, max_ood_drop=0.01)[0] == 0.4
    # a drop exactly at the bound qualifies
    assert select_alpha([_c(1.0, 0.9, x=0.005), _c(0.5, 0.8, x=0.0)], max_ood_drop=0.005)[0] == 1.0
    # dev ties: the larger alpha; no dev scores: the larger qualifying alpha
    assert select_alpha([_c(0.5, 0.9, x=0.0), _c(0.7, 0.9, x=0.0)], max_ood_drop=0.005)[0] == 0.7
    assert select_alpha([_c(0.5, None, x=0.0), _c(0.9, None, x=0.009)], max_ood_drop=0.005)[0] == 0.5
    # none qualifies: the smallest worst drop, with a warning
    with caplog.at_level(logging.WARNING, logger="uniret.train.soup"):
        alpha, reason = select_alpha([_c(1.0, 0.95, x=0.03, y=0.01), _c(0.5, 0.90, x=0.02, y=0.012)],
                                     max_ood_drop=0.005)
    assert alpha == 0.5 and "no alpha" in reason and "no alpha" in caplog.text
    # without out-of-domain sets the rule is the best dev score
    assert select_alpha([_c(0.5, 0.91), _c(1.0, 0.9)], max_ood_drop=0.005)[0] == 0.5
    with pytest.raises(ValueError, match="no candidate"):
        select_alpha([], max_ood_drop=0.005)


def test_candidate_rule_prefers_the_earlier_on_ties_and_names_what_it_chose_among():
    """The rule behind select_alpha, over any candidates (e.g. model soups): ties go to the earlier one."""
    cands = [{"dev": 0.90, "ood_drops": {"x": 0.001}}, {"dev": 0.90, "ood_drops": {"x": 0.0}},
             {"dev": 0.95, "ood_drops": {"x": 0.02}}]
    index, reason = select_candidate(cands, max_ood_drop=0.005, what="soups")
    assert index == 0 and "2 of 3 soups" in reason
    assert select_candidate(cands, max_ood_drop=0.05)[0] == 2
    index, reason = select_candidate([{"dev": 0.9, "ood_drops": {"x": 0.02}}, {"dev": 0.8, "ood_drops": {"x": 0.01}}],
                                     max_ood_drop=0.005, what="soups")
    assert index == 1 and "no soup keeps" in reason
    with pytest.raises(ValueError, match="no soups"):
        select_candidate([], max_ood_drop=0.005, what="soups")


def test_interpolate_config_reads_one_alpha_or_a_list():
    cfg = from_dict(TrainConfig, {"interpolate": {"alpha": [0.5, 1]}, "eval": {"ood": ["a", "b"]}})
    assert cfg.interpolate is not None and cfg.interpolate.alphas == [0.5, 1.0] and cfg.eval.ood == ["a", "b"]
    assert from_dict(TrainConfig, {"interpolate": {"alpha": 0.7}}).interpolate.alphas == [0.7]  # type: ignore[union-attr]
    with pytest.raises(ValueError, match=r"interpolate.alpha.*\[0, 1\]"):
        InterpolateConfig(alpha=[0.5, 1.2])
    with pytest.raises(DataFormatError, match="interpolate.typo"):
        from_dict(TrainConfig, {"interpolate": {"typo": 1}})


def test_the_training_data_is_refused_as_out_of_domain(scifact, shared_dataset, tmp_path):
    cran = shared_dataset("cranfield")
    with pytest.raises(ValueError, match=r"eval.ood\[1\].*training data"):
        resolve_ood([str(cran), "scifact"], "scifact", "test")
    copy = tmp_path / "scifact-copy"
    shutil.copytree(scifact.root, copy)
    with pytest.raises(ValueError, match=r"eval.ood\[0\].*training corpus"):
        resolve_ood([str(copy)], "scifact", "test")
    with pytest.raises(FileNotFoundError, match=r"eval.ood\[0\].*no-such-set"):
        resolve_ood(["no-such-set"], "scifact", "test")
    with pytest.raises(ValueError, match="no qrels for split 'train'"):
        resolve_ood([str(cran)], "scifact", "train")
    sets = resolve_ood([str(cran)], "scifact", "test")
    assert list(sets) == ["cranfield"]
    fp = dataset_fingerprint(sets["cranfield"], "test")
    assert fp == dataset_fingerprint(load_beir(cran), "test") and fp.startswith(sets["cranfield"].corpus.fingerprint)


def test_base_numbers_are_cached_by_content_data_and_settings(shared_dataset, tmp_path, caplog):
    from uniret.retriever.embedder import Embedder
    from uniret.train.ood import base_metrics, evaluate_folder

    sets = {"cran": load_beir(save_beir(load_beir(shared_dataset("cranfield")).sample(num_queries=8, num_docs=40),
                                        tmp_path / "cran"))}
    for name in ("a", "b"):  # two saves of the same weights: equal content although the markers differ
        Embedder.build("all-MiniLM-L6-v2", max_length=32, device="cpu").save(tmp_path / name)
    kw = {"split": "test", "batch_size": 16, "device": "cpu"}
    with caplog.at_level(logging.INFO, logger="uniret.train.ood"):
        first = base_metrics("dense", tmp_path / "a", sets, max_length=32, reports=tmp_path / "r1", **kw)
        assert "cached" not in caplog.text
        again = base_metrics("dense", tmp_path / "b", sets, max_length=32, reports=tmp_path / "r2", **kw)
        assert "cran (base): cached" in caplog.text and again == first
        caplog.clear()
        longer = base_metrics("dense", tmp_path / "b", sets, max_length=64, reports=tmp_path / "r3", **kw)
        assert "cached" not in caplog.text  # another setting is another key
    direct = evaluate_folder("dense", tmp_path / "a", sets, max_length=64, reports=tmp_path / "r4", **kw)
    assert longer == direct and 0.0 < first["cran"]["ndcg@10"] <= 1.0


@pytest.mark.slow
def test_train_reports_out_of_domain_and_alpha_zero_is_the_base(scifact, shared_dataset, tmp_path):
    from uniret.train.pipeline import run_training

    data = save_beir(scifact.sample(num_queries=24, num_docs=60, split="train"), tmp_path / "data")
    ood = save_beir(load_beir(shared_dataset("cranfield")).sample(num_queries=12, num_docs=60), tmp_path / "cran")
    cfg = TrainConfig(
        model=ModelConfig(max_length=32, device="cpu"),
        data=DataConfig(data=str(data), holdout_queries=4),
        mining=MiningConfig(retriever="dense", k=15, num_negatives=2, max_length=32, device="cpu"),
        trainer=TrainerConfig(batch_size=8, max_steps=3, learning_rate=2e-4, log_every=100),
        eval=EvalConfig(dev=True, ood=[str(ood)], ood_max_length=32),
        interpolate=InterpolateConfig(alpha=[0.0, 1.0], max_ood_drop=1.0),
    )
    summary = run_training(cfg, tmp_path / "run")
    result = json.loads((tmp_path / "run" / "train_result.json").read_text())
    row = result["ood"]["cran"]
    assert row["metric"] == "ndcg@10" and row["difference"] == pytest.approx(row["after"] - row["before"])
    cands = {c["alpha"]: c for c in result["interpolation"]["candidates"]}
    # alpha 0 is the base model: its out-of-domain numbers are the base model's, exactly
    assert cands[0.0]["ood_drops"] == {"cran": 0.0}
    assert cands[1.0]["ood_drops"]["cran"] != 0.0 or cands[1.0]["dev"] != cands[0.0]["dev"]
    # with a loose bound both qualify: the chosen alpha has the best dev score (ties: the larger alpha)
    best = max(cands.values(), key=lambda c: (c["dev"], c["alpha"]))
    assert result["interpolation"]["chosen"] == best["alpha"] and summary["dev"]["ndcg@10"] == best["dev"]
    assert row["after"] == pytest.approx(row["before"] - best["ood_drops"]["cran"])
    assert "| cran | ndcg@10 |" in (tmp_path / "run" / "ood" / "report.md").read_text()
    assert (tmp_path / "run" / "dev" / "report.json").is_file()
    assert not (tmp_path / "run" / "ood" / "base-model").exists()

