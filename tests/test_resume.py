"""Exact, safe resume: a training run killed with SIGKILL and rerun ends with the weights of an uninterrupted
run; a rerun with another config stops before it changes anything; a finished run is not trained again;
``overwrite=True`` starts afresh and keeps files uniret does not own.

The real-kill checks run ``python -m uniret train`` as a subprocess: once on a tiny stand-in model (fast,
default suite) and once on the real MiniLM and a SciFact slice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from uniret.data import save_beir
from uniret.train.trainer import checkpoint_dirs

TESTS = Path(__file__).resolve().parent
MAX_STEPS = 5


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONHASHSEED": "0"}


def _wait_for_checkpoint(proc: subprocess.Popen, out: Path, timeout: float = 240) -> Path:
    """Poll until the first complete checkpoint exists (its trainer_state.json: written last, renamed whole)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ckpts := checkpoint_dirs(out):
            return ckpts[0]
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (rc {proc.returncode}) before its first checkpoint: "
                                 + proc.stderr.read().decode(errors="replace")[-3000:])
        time.sleep(0.02)
    proc.kill()
    raise AssertionError("no checkpoint in time")


def _kill_after_first_checkpoint(cmd: list[str], out: Path) -> Path:
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        first = _wait_for_checkpoint(proc, out)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return first


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(folder.rglob("*.safetensors")):
        out.update({f"{f.relative_to(folder)}:{k}": v for k, v in load_file(str(f)).items()})
    assert out
    return out


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-6, rtol=0, msg=k)


def _log_steps(out: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()]


# -- fast: the real loop and a real kill, on a tiny model ------------------------------------------------

TINY_SCRIPT = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    from conftest import TinyEmbedder, make_records
    from uniret.train.biencoder import BiEncoderModule, LossConfig
    from uniret.train.trainer import Callback, Trainer, TrainerConfig

    class Slow(Callback):  # time to kill it between checkpoints; sleeping changes no number
        def on_step_end(self, trainer, step, logs):
            time.sleep(float(sys.argv[2]))

    emb = TinyEmbedder(dropout=0.2, seed=0)
    cfg = TrainerConfig(batch_size=4, max_steps=7, learning_rate=0.05, warmup_ratio=0.2, save_every=2,
                        keep_checkpoints=2)
    module = BiEncoderModule(emb, LossConfig(hard_negatives=2, mixing=2))
    result = Trainer(module, make_records(12, 3), cfg, sys.argv[1], callbacks=[Slow()]).train()
    emb.save(sys.argv[1] + "/model")
""")


def _run_in_process(script: Path, args: list[str]) -> None:
    import runpy
    from unittest import mock

    with mock.patch.object(sys, "argv", [str(script), *args]):
        runpy.run_path(str(script), run_name="__main__")


def test_tiny_run_killed_with_sigkill_resumes_to_the_same_weights(tmp_path):
    script = tmp_path / "train_tiny.py"
    script.write_text(TINY_SCRIPT.format(tests=str(TESTS)))
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    _run_in_process(script, [str(straight), "0"])  # the same code in this process: no second torch import
    first = _kill_after_first_checkpoint([sys.executable, str(script), str(killed), "0.3"], killed)
    assert first.name == "step-2" and not (killed / "model").exists()
    _run([sys.executable, str(script), str(killed), "0"])
    # 12 records make 3 batches an epoch: the run crossed epochs and ended mid-epoch, checkpointing step 7
    assert [c.name for c in checkpoint_dirs(killed)] == ["step-6", "step-7"] == \
        [c.name for c in checkpoint_dirs(straight)]
    _assert_same_weights(straight / "model", killed / "model")
    _assert_same_weights(checkpoint_dirs(straight)[-1], checkpoint_dirs(killed)[-1])
    assert _log_steps(killed) == list(range(1, 8))  # steps redone after the kill are logged once


# -- real: `python -m uniret train` on MiniLM and a SciFact slice -----------------------------------------

@pytest.fixture(scope="module")
def recipe(scifact, tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    data = save_beir(scifact.sample(num_queries=20, num_docs=40, split="train", seed=3), root / "data")
    cfg = {
        "model": {"backbone": "all-MiniLM-L6-v2", "max_length": 32, "device": "cpu"},
        "data": {"data": str(data)},
        "trainer": {"batch_size": 8, "max_steps": MAX_STEPS, "save_every": 2, "keep_checkpoints": 2,
                    "learning_rate": 1e-4, "warmup_ratio": 0.2, "log_every": 1},
        "eval": {"dev": False},
    }
    path = root / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _cli(recipe: Path, out: Path, *sets: str) -> list[str]:
    cmd = [sys.executable, "-m", "uniret", "-q", "train", "--config", str(recipe), "--output-dir", str(out)]
    for s in sets:
        cmd += ["--set", s]
    return cmd


@pytest.fixture(scope="module")
def straight_run(recipe, tmp_path_factory):
    """The uninterrupted run, through the CLI's code in this process (a subprocess would import torch again)."""
    from uniret.cli import main

    out = tmp_path_factory.mktemp("straight") / "run"
    assert main(_cli(recipe, out)[3:]) == 0
    return out


@pytest.mark.slow
def test_minilm_run_killed_with_sigkill_resumes_to_the_same_weights(recipe, straight_run, tmp_path):
    out = tmp_path / "run"
    first = _kill_after_first_checkpoint(_cli(recipe, out), out)
    assert first.name == "step-2" and not (out / "train_result.json").exists()
    assert checkpoint_dirs(out)[-1].name != f"step-{MAX_STEPS}"  # killed before the end
    _run(_cli(recipe, out))
    result = json.loads((out / "train_result.json").read_text())
    assert result["steps"] == MAX_STEPS
    assert checkpoint_dirs(out)[-1].name == f"step-{MAX_STEPS}"
    _assert_same_weights(straight_run / "model", out / "model")
    assert _log_steps(out) == list(range(1, MAX_STEPS + 1))
    losses = [json.loads(x)["loss"] for x in (out / "train_log.jsonl").read_text().splitlines()]
    straight = [json.loads(x)["loss"] for x in (straight_run / "train_log.jsonl").read_text().splitlines()]
    assert losses == pytest.approx(straight, abs=1e-6)


def _snapshot(out: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(out)): (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(out.rglob("*"))
            if p.is_file() and p.stat().st_size < 1_000_000}


def test_rerun_with_another_config_stops_and_changes_nothing(recipe, straight_run, capsys):
    from uniret.cli import main

    before = _snapshot(straight_run)
    assert {"config.yaml", "train_records.jsonl", "run_state.json", "train_log.jsonl"} <= set(before)
    rc = main(["-q", "train", "--config", str(recipe), "--output-dir", str(straight_run),
               "--set", "trainer.learning_rate=5e-5"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "trainer.learning_rate: 0.0001 != 5e-05" in err
    assert "--overwrite" in err and "--output-dir" in err
    assert _snapshot(straight_run) == before


def test_finished_run_rerun_returns_its_result_without_training(recipe, straight_run, caplog):
    from uniret.config import load_config
    from uniret.train.config import TrainConfig
    from uniret.train.pipeline import run_training

    before = _snapshot(straight_run)
    saved = json.loads((straight_run / "train_result.json").read_text())
    cfg = load_config(recipe, TrainConfig, overrides={"trainer.log_every": 50})  # log_every cannot change a result
    with caplog.at_level("INFO", logger="uniret.train.pipeline"):
        summary = run_training(cfg, straight_run)
    assert summary == saved
    assert "finished" in caplog.text
    assert _snapshot(straight_run) == before  # train_log.jsonl, checkpoints, config.yaml: untouched


def test_overwrite_starts_afresh_and_changed_data_stops_a_rerun(recipe, straight_run, tmp_path):
    import shutil

    from uniret.config import load_config
    from uniret.train.config import TrainConfig
    from uniret.train.pipeline import run_training
    from uniret.train.trainer import ResumeMismatchError

    out, data = tmp_path / "run", tmp_path / "data"
    shutil.copytree(straight_run, out)
    (out / "notes.txt").write_text("mine")
    (out / "checkpoints" / "step-999").mkdir()  # an unfinished checkpoint of the earlier run
    cfg = load_config(recipe, TrainConfig, overrides={"trainer.learning_rate": 5e-5, "trainer.max_steps": 1,
                                                      "trainer.save_every": None})
    shutil.copytree(cfg.data.data, data)
    cfg.data.data = str(data)
    with pytest.raises(ResumeMismatchError, match="trainer.learning_rate"):
        run_training(cfg, out)
    summary = run_training(cfg, out, overwrite=True)
    assert summary["steps"] == 1 and _log_steps(out) == [1]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-1"]
    assert (out / "notes.txt").read_text() == "mine"
    assert not (out / "dev").exists()
    assert json.loads((out / "run_state.json").read_text())["config"]["trainer"]["learning_rate"] == 5e-5
    assert yaml.safe_load((out / "config.yaml").read_text())["trainer"]["learning_rate"] == 5e-5

    # same config, but the data set changed on disk: other training records, so no resume and no rewrite
    queries = [json.loads(line) for line in (data / "queries.jsonl").read_text().splitlines()]
    for q in queries:
        q["text"] += " (edited)"
    (data / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    before = _snapshot(out)
    with pytest.raises(ResumeMismatchError, match="training records") as e:
        run_training(cfg, out)
    assert "--overwrite" in str(e.value) and "--output-dir" in str(e.value)
    assert _snapshot(out) == before


def test_a_setting_added_since_the_earlier_run_takes_its_default_and_does_not_stop_a_resume(tmp_path):
    from uniret.config import to_dict
    from uniret.train.config import TrainConfig
    from uniret.train.pipeline import _check_config, _normalised
    from uniret.train.trainer import ResumeMismatchError

    current = _normalised(to_dict(TrainConfig()))
    older = json.loads(json.dumps(current))
    del older["flops"], older["eval"]["batch_size"]  # written by a uniret without these settings
    _check_config(tmp_path, {"config": older}, current)  # no error
    older["trainer"]["learning_rate"] = 1.0
    with pytest.raises(ResumeMismatchError, match="trainer.learning_rate: 1.0 != "):
        _check_config(tmp_path, {"config": older}, current)
