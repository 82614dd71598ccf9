"""One trainer for every retriever family.

What varies is the *module* (how a batch of records becomes a loss and gradients: bi-encoder,
cross-encoder, sparse...), the sampler options and the callbacks (re-mining, evaluation, FLOPS warm-up).
The loop itself: deterministic batches, AdamW with linear warm-up and decay, gradient averaging across
ranks, clipping, logging (``train_log.jsonl`` + ``logging``), tqdm progress, checkpoints every N steps
(model weights, optimizer and RNG state in safetensors, the rest in JSON) and resume from the latest one.

Resuming is exact: a checkpoint holds the weights, the optimizer and scheduler, every random state the
loop touches (torch CPU, every CUDA device's when CUDA is available, Python's ``random``, numpy's global
generator) and the sampler's position (epoch, batch within the epoch); the last step always gets a
checkpoint, so a run killed at any point and rerun ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from uniret import distributed
from uniret.atomic import atomic_directory
from uniret.errors import UniretError
from uniret.train.precision import MixedPrecision
from uniret.train.records import TrainingRecord, read_records, write_records
from uniret.train.sampler import BatchSampler

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
ANCHOR = "anchor.safetensors"  # under CHECKPOINTS: the starting weights that ``anchor_decay`` pulls towards
TRAIN_LOG = "train_log.jsonl"


class ResumeMismatchError(UniretError, ValueError):
    """An output directory holds a run made with another config or other training records, so resuming
    it (or returning its result) would mix two runs; the message names what differs and the ways out."""


def records_digest(records: Sequence[TrainingRecord]) -> str:
    """SHA-256 of the records as ``train_records.jsonl`` holds them (the file's own SHA-256)."""
    h = hashlib.sha256()
    for r in records:
        h.update((json.dumps(r.to_json(), ensure_ascii=False) + "\n").encode("utf-8"))
    return h.hexdigest()


def capture_rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Every global random state: (tensors for safetensors, JSON-serialisable rest)."""
    tensors = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda:{i}"] = state
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return tensors, {"python": [version, list(internal), gauss],
                     "numpy": [name, [int(k) for k in keys], int(pos), int(has_gauss), float(cached)]}


def restore_rng_state(tensors: dict[str, torch.Tensor], other: dict[str, Any] | None) -> None:
    torch.set_rng_state(tensors["cpu"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("cuda:")), key=lambda k: int(k[5:]))]
    if cuda and torch.cuda.is_available():
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:
            logger.warning("the checkpoint holds the random state of %d CUDA device(s), this machine has %d: "
                           "CUDA random numbers will differ from an uninterrupted run", len(cuda),
                           torch.cuda.device_count())
    elif cuda:
        logger.warning("the checkpoint holds CUDA random states but CUDA is not available here")
    if other:
        version, internal, gauss = other["python"]
        random.setstate((version, tuple(internal), gauss))
        name, keys, pos, has_gauss, cached = other["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


@dataclass
class TrainerConfig:
    epochs: int = 1
    max_steps: int | None = None  # stop early at this many optimisation steps
    # A wall-time budget for the optimisation loop (seconds): training stops after the step that crosses it,
    # with a checkpoint, and the result says so (``time_limited``). The learning-rate schedule still spans
    # max_steps (or the epochs): a budgeted run ends before its decay does. Running the same config on the same
    # folder again resumes such a run from its last checkpoint (with this budget, or another, counted afresh).
    max_seconds: float | None = None
    batch_size: int = 32  # per device
    learning_rate: float = 2e-5
    weight_decay: float = 0.01
    # Decoupled L2-SP (Li et al. 2018, "Explicit inductive bias for transfer learning", decoupled as AdamW
    # decouples weight decay): after each optimizer step, theta <- theta - lr * anchor_decay * (theta - theta_0),
    # theta_0 the weights training started from. It pulls towards the starting model during training, where
    # WiSE-FT (``interpolate``) pulls after it. 0: off; needs learning_rate * anchor_decay < 1.
    anchor_decay: float = 0.0
    # Per-parameter learning rates, as sentence-transformers' learning_rate_mapping: {regex: lr}; a parameter whose
    # name (``module.named_parameters()``) matches a pattern (re.search, first match wins) trains at that rate,
    # the rest at learning_rate. The warm-up and decay schedule scales every rate alike.
    learning_rate_mapping: dict[str, float] = field(default_factory=dict)
    warmup_ratio: float = 0.1
    max_grad_norm: float | None = 1.0
    grad_cache_chunk: int | None = None  # embed in chunks of this size (gradient caching)
    mixed_precision: MixedPrecision = "no"  # bf16: forward under bfloat16 autocast, float32 master weights
    same_task_batches: bool = False
    seed: int = 42
    log_every: int = 10
    save_every: int | None = None  # steps between checkpoints; None: at the end of each epoch
    keep_checkpoints: int = 2
    resume: bool = True
    profile_steps: int = 0  # > 0: profile this many steps after a warm-up one into profile.json (train/profiling.py)

    def __post_init__(self) -> None:
        for pattern, lr in self.learning_rate_mapping.items():
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f"trainer.learning_rate_mapping: {pattern!r} is not a regular expression ({e})") from e
            if isinstance(lr, bool) or not isinstance(lr, (int, float)) or lr <= 0:
                raise ValueError(f"trainer.learning_rate_mapping[{pattern!r}]: got {lr!r}; expected a positive number")
        if isinstance(self.profile_steps, bool) or not isinstance(self.profile_steps, int) or self.profile_steps < 0:
            raise ValueError(f"trainer.profile_steps: got {self.profile_steps!r}; expected a number of steps >= 0 "
                             "(0: no profile)")
        if self.max_seconds is not None and (isinstance(self.max_seconds, bool) or self.max_seconds <= 0):
            raise ValueError(f"trainer.max_seconds: got {self.max_seconds!r}; expected a positive number of seconds "
                             "or null (no budget)")
        if self.anchor_decay < 0 or self.learning_rate * self.anchor_decay >= 1:
            raise ValueError(f"trainer.anchor_decay: got {self.anchor_decay} with learning_rate "
                             f"{self.learning_rate}; expected anchor_decay >= 0 and learning_rate * anchor_decay < 1")


class TrainingModule(Protocol):
    def parameters(self) -> Any: ...

    def train(self, mode: bool = True) -> None: ...

    def step(self, records: Sequence[TrainingRecord], rng: random.Random, step: int) -> dict[str, float]:
        """Forward and backward for one batch; returns logs including ``loss``."""

    def state_dict(self) -> dict[str, torch.Tensor]: ...

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> Any: ...

    def save(self, path: Path) -> Any: ...

    def use_mixed_precision(self, mode: str) -> None:
        """Run later forward passes under ``mode`` (``no`` or ``bf16``); the trainer sets it from its config."""


class Callback:
    """Hooks into the loop; override what you need. ``on_epoch_start`` may replace ``trainer.records``."""

    def on_train_start(self, trainer: Trainer) -> None: ...

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None: ...

    def on_step_end(self, trainer: Trainer, step: int, logs: dict[str, float]) -> None: ...

    def on_train_end(self, trainer: Trainer) -> None: ...


class ClampParameters(Callback):
    """Projected gradient descent: after every optimizer step (and on resuming), each of ``parameters`` is
    clamped to ``minimum`` or above. Learned sparse query weights use it: inference drops a weight <= 0, so
    training must not score with one."""

    def __init__(self, parameters: Sequence[torch.nn.Parameter], minimum: float = 0.0) -> None:
        self.parameters = list(parameters)
        self.minimum = minimum

    def _clamp(self) -> None:
        with torch.no_grad():
            for p in self.parameters:
                p.clamp_(min=self.minimum)

    def on_train_start(self, trainer: Trainer) -> None:
        self._clamp()

    def on_step_end(self, trainer: Trainer, step: int, logs: dict[str, float]) -> None:
        self._clamp()


@dataclass
class TrainResult:
    steps: int
    epochs: int  # planned; after a max_seconds stop, the epochs reached
    seconds: float
    examples_per_second: float
    history: list[dict[str, float]] = field(default_factory=list)
    checkpoints: list[Path] = field(default_factory=list)
    time_limited: bool = False  # stopped by ``max_seconds`` before max_steps


def save_optimizer(optimizer: torch.optim.Optimizer, directory: Path) -> None:
    """Optimizer state as safetensors (tensors) + JSON (everything else): no pickle."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {"param_groups": sd["param_groups"], "state": {}}
    for pid, st in sd["state"].items():
        entry: dict[str, Any] = {}
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{pid}.{k}"] = v.detach().cpu().contiguous()
                entry[k] = {"tensor": f"{pid}.{k}"}
            else:
                entry[k] = v
        meta["state"][str(pid)] = entry
    save_file(tensors, str(directory / "optimizer.safetensors"))
    (directory / "optimizer.json").write_text(json.dumps(meta), encoding="utf-8")


def load_optimizer(optimizer: torch.optim.Optimizer, directory: Path) -> None:
    tensors = load_file(str(directory / "optimizer.safetensors"))
    meta = json.loads((directory / "optimizer.json").read_text(encoding="utf-8"))
    state = {int(pid): {k: tensors[v["tensor"]] if isinstance(v, dict) and "tensor" in v else v
                        for k, v in entry.items()} for pid, entry in meta["state"].items()}
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


@torch.no_grad()
def pull_towards(params: Sequence[torch.Tensor], anchor: Sequence[torch.Tensor], rate: float) -> None:
    """``p <- p - rate * (p - a)`` for each parameter and its anchor (the decoupled L2-SP step)."""
    for p, a in zip(params, anchor, strict=True):
        p.sub_(p - a, alpha=rate)


def checkpoint_dirs(output_dir: Path) -> list[Path]:
    root = Path(output_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := re.fullmatch(r"step-(\d+)", p.name))
             and (p / "trainer_state.json").is_file()]
    return [p for _, p in sorted(found)]


class Trainer:
    def __init__(self, module: TrainingModule, records: Sequence[TrainingRecord], config: TrainerConfig,
                 output_dir: str | Path, callbacks: Sequence[Callback] = (), run_config: dict[str, Any] | None = None
                 ) -> None:
        if not records:
            raise ValueError("no training records")
        self.module = module
        module.use_mixed_precision(config.mixed_precision)
        self.records = list(records)
        self.config = config
        self.output_dir = Path(output_dir)
        self.callbacks = list(callbacks)
        self.run_config = run_config or {}
        self.records_sha256 = records_digest(self.records)
        self._initial_records = self.records  # a callback replacing trainer.records makes a new list
        self.step = 0
        self.epoch = 0

    def _sampler(self) -> BatchSampler:
        c = self.config
        return BatchSampler(self.records, c.batch_size, seed=c.seed, same_task=c.same_task_batches,
                            world_size=distributed.world_size(), rank=distributed.rank())

    def _schedule(self, total: int) -> Any:
        warmup = int(total * self.config.warmup_ratio)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / max(1, warmup)
            return max(0.0, (total - step) / max(1, total - warmup))

        return factor

    def train(self) -> TrainResult:
        c = self.config
        torch.manual_seed(c.seed)
        params = list(self.module.parameters())
        optimizer = torch.optim.AdamW(self._param_groups(params), lr=c.learning_rate, weight_decay=c.weight_decay)
        steps_per_epoch = len(self._sampler())
        if steps_per_epoch == 0:
            raise ValueError(f"{len(self.records)} records make no full batch of {c.batch_size * distributed.world_size()}")
        total = c.max_steps or c.epochs * steps_per_epoch
        epochs = -(-total // steps_per_epoch)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self._schedule(total))
        start_epoch, skip, restored_records = 0, 0, False
        if c.resume and (ckpts := checkpoint_dirs(self.output_dir)):
            start_epoch, skip, restored_records = self._resume(ckpts[-1], optimizer, scheduler)
        anchor = self._anchor(params) if c.anchor_decay > 0 else None
        log_path = self.output_dir / TRAIN_LOG
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if distributed.is_main():
            _truncate_log(log_path, self.step)  # rows past the checkpoint are trained (and logged) again
        for cb in self.callbacks:
            cb.on_train_start(self)
        history: list[dict[str, float]] = []
        saved: list[Path] = []
        start_time, examples, time_limited = time.perf_counter(), 0, False
        bar = tqdm(total=total, initial=min(self.step, total), desc="training", unit="step",
                   disable=not (distributed.is_main() and logger.isEnabledFor(logging.INFO)))
        self.module.train(True)
        profiler = None
        if c.profile_steps and distributed.is_main():
            from uniret.train.profiling import PROFILE, StepProfiler

            profiler = StepProfiler(c.profile_steps, self.output_dir / PROFILE,
                                    cuda=any(p.device.type == "cuda" for p in params))
            profiler.start()
        try:
            for epoch in range(start_epoch, epochs):
                if self.step >= total or time_limited:  # resumed from the final checkpoint, or out of time
                    break
                self.epoch = epoch
                if not (epoch == start_epoch and restored_records):  # else the epoch's records came back as they were
                    for cb in self.callbacks:
                        cb.on_epoch_start(self, epoch)
                batches = list(self._sampler().batches(epoch))
                for b_idx, idx in enumerate(batches):
                    if epoch == start_epoch and b_idx < skip:
                        continue
                    rng = random.Random(c.seed * 7_919 + epoch * 100_003 + b_idx)
                    optimizer.zero_grad(set_to_none=True)
                    logs = self.module.step([self.records[i] for i in idx], rng, self.step)
                    distributed.average_gradients(params)
                    if c.max_grad_norm:
                        logs["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, c.max_grad_norm))
                    optimizer.step()
                    if anchor is not None:
                        pull_towards(params, anchor, optimizer.param_groups[0]["lr"] * c.anchor_decay)
                    scheduler.step()
                    self.step += 1
                    examples += len(idx)
                    logs = {"step": self.step, "epoch": epoch, "lr": float(scheduler.get_last_lr()[0]), **logs}
                    history.append(logs)
                    bar.update(1)
                    bar.set_postfix(loss=f"{logs['loss']:.4f}")
                    if distributed.is_main():
                        with open(log_path, "a", encoding="utf-8") as f:
                            f.write(json.dumps(logs) + "\n")
                        if self.step % c.log_every == 0 or self.step == total:
                            logger.info("step %d/%d epoch %d loss %.4f lr %.2e", self.step, total, epoch, logs["loss"],
                                        logs["lr"])
                    for cb in self.callbacks:
                        cb.on_step_end(self, self.step, logs)
                    finished = self.step >= total
                    # every rank stops at the same step: the ranks vote (a mean above 0 means one rank is over)
                    if not finished and c.max_seconds is not None and distributed.all_reduce_mean(
                            float(time.perf_counter() - start_time >= c.max_seconds)) > 0:
                        finished = time_limited = True
                        logger.warning("trainer.max_seconds (%g s) reached after step %d of %d: training stops here",
                                       c.max_seconds, self.step, total)
                    epoch_end = b_idx + 1 == len(batches)
                    # one checkpoint per due step: every save_every steps (else at each epoch's end) and the last
                    if finished or (c.save_every and self.step % c.save_every == 0) or (epoch_end and not c.save_every):
                        position = (epoch + 1, 0) if epoch_end else (epoch, b_idx + 1)
                        saved.append(self.save_checkpoint(optimizer, scheduler, *position))
                    if profiler is not None:
                        profiler.step()
                    if finished:
                        break
        finally:
            if profiler is not None:
                profiler.close()
        bar.close()
        seconds = time.perf_counter() - start_time
        for cb in self.callbacks:
            cb.on_train_end(self)
        self.module.train(False)
        return TrainResult(steps=self.step, epochs=self.epoch + 1 if time_limited else epochs, seconds=seconds,
                           examples_per_second=examples / seconds if seconds > 0 else 0.0, history=history,
                           checkpoints=saved, time_limited=time_limited)

    def _param_groups(self, params: list[torch.Tensor]) -> list[dict[str, Any]]:
        """The optimizer's parameter groups: everything at ``learning_rate`` first (the rate the anchor pull and
        the log read), then one group per ``learning_rate_mapping`` pattern that matches."""
        mapping = self.config.learning_rate_mapping
        if not mapping:
            return [{"params": params}]
        named = getattr(self.module, "named_parameters", None)
        if named is None:
            raise ValueError(f"trainer.learning_rate_mapping needs parameter names; {type(self.module).__name__} "
                             "has no named_parameters()")
        names = {id(p): n for n, p in named()}
        taken: dict[int, str] = {}
        for p in params:
            name = names.get(id(p), "")
            pattern = next((pat for pat in mapping if re.search(pat, name)), None)
            if pattern is not None:
                taken[id(p)] = pattern
        for pattern in mapping:
            if pattern not in taken.values():
                raise ValueError(f"trainer.learning_rate_mapping: {pattern!r} matches no trainable parameter "
                                 f"(names look like {next(iter(names.values()), '?')!r})")
        groups: list[dict[str, Any]] = [{"params": [p for p in params if id(p) not in taken]}]
        groups += [{"params": [p for p in params if taken.get(id(p)) == pat], "lr": lr} for pat, lr in mapping.items()]
        return groups

    def _anchor(self, params: list[torch.Tensor]) -> list[torch.Tensor]:
        """The weights ``anchor_decay`` pulls towards: the parameters as training starts, saved beside the
        checkpoints (a resumed run reads them back, so that it pulls towards the same point)."""
        path = self.output_dir / CHECKPOINTS / ANCHOR
        if self.step > 0:
            if not path.is_file():
                raise ResumeMismatchError(f"cannot resume with trainer.anchor_decay: {path} (the starting weights) "
                                          "is missing; the checkpoint was saved by a run without anchor_decay")
            saved = load_file(str(path))
            if len(saved) != len(params):
                raise ResumeMismatchError(f"{path} holds {len(saved)} tensors; the model has {len(params)} parameters")
            return [saved[f"p{i}"].to(p.device, p.dtype) for i, p in enumerate(params)]
        anchor = [p.detach().clone() for p in params]
        if distributed.is_main():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            save_file({f"p{i}": a.cpu().contiguous() for i, a in enumerate(anchor)}, str(tmp))
            tmp.replace(path)
        return anchor

    # -- checkpoints --------------------------------------------------------------------------
    def save_checkpoint(self, optimizer: torch.optim.Optimizer, scheduler: Any, epoch: int, batch_in_epoch: int
                        ) -> Path:
        """``checkpoints/step-N``: weights, optimizer and random states (safetensors), the position
        (epoch, batch within it), scheduler, config and records hash (JSON). Written to a temporary
        directory renamed when complete, so ``trainer_state.json`` present means the checkpoint is whole."""
        path = self.output_dir / CHECKPOINTS / f"step-{self.step}"
        if distributed.is_main():
            rng_tensors, rng_other = capture_rng_state()
            with atomic_directory(path, kind="checkpoint") as tmp:
                state = {k: v.detach().cpu().clone().contiguous() for k, v in self.module.state_dict().items()}
                save_file(state, str(tmp / "weights.safetensors"))
                save_optimizer(optimizer, tmp)
                save_file({k: v.contiguous() for k, v in rng_tensors.items()}, str(tmp / "rng.safetensors"))
                if self.records is not self._initial_records:  # e.g. re-mined: a mid-epoch resume needs them
                    write_records(self.records, tmp / "records.jsonl")
                (tmp / "trainer_state.json").write_text(json.dumps({
                    "step": self.step, "epoch": epoch, "batch_in_epoch": batch_in_epoch,
                    "scheduler": scheduler.state_dict(), "num_records": len(self.records),
                    "records_sha256": self.records_sha256, "rng": rng_other,
                    "config": self.run_config}, indent=2, default=str), encoding="utf-8")
            for old in checkpoint_dirs(self.output_dir)[: -max(1, self.config.keep_checkpoints)]:
                shutil.rmtree(old, ignore_errors=True)
            logger.info("checkpoint saved: %s", path)
        distributed.barrier()
        return path

    def _resume(self, path: Path, optimizer: torch.optim.Optimizer, scheduler: Any) -> tuple[int, int, bool]:
        """Load ``path``; returns (epoch, batch within it, whether the epoch's records were restored)."""
        state = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
        problems = []
        if self.run_config and state.get("config"):
            problems += config_differences(state["config"], self.run_config)
        if state.get("records_sha256") and state["records_sha256"] != self.records_sha256:
            problems.append(f"training records: sha256 {state['records_sha256']} != {self.records_sha256}")
        if problems:
            raise ResumeMismatchError(f"cannot resume {path}: it was saved by a different run ("
                                      + "; ".join(problems) + ")")
        self.module.load_state_dict(load_file(str(path / "weights.safetensors")))
        load_optimizer(optimizer, path)
        scheduler.load_state_dict(state["scheduler"])
        restore_rng_state(load_file(str(path / "rng.safetensors")), state.get("rng"))
        self.step = state["step"]
        restored = False
        if (path / "records.jsonl").is_file():  # records a callback made (re-mining): train on the same ones
            self.records = read_records(path / "records.jsonl")
            restored = state["batch_in_epoch"] > 0  # mid-epoch: the epoch's callbacks already ran
        logger.info("resumed from %s (step %d, epoch %d, batch %d)", path, self.step, state["epoch"],
                    state["batch_in_epoch"])
        return state["epoch"], state["batch_in_epoch"], restored


# Config keys that cannot change what a run computes, so a rerun may differ in them and still resume:
# how often the loop logs, and whether it may resume at all. Everything else (devices, checkpoint
# spacing, evaluation settings included) must match: a conservative choice.
RESUME_IGNORED_KEYS = frozenset({"trainer.log_every", "trainer.resume", "trainer.max_seconds", "trainer.profile_steps"})


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: value}


def config_differences(old: dict[str, Any], new: dict[str, Any],
                       ignore: frozenset[str] = RESUME_IGNORED_KEYS) -> list[str]:
    """``dotted.key: old != new`` for every value that differs between two resolved configs."""
    a = _flatten(json.loads(json.dumps(old, default=str)))
    b = _flatten(json.loads(json.dumps(new, default=str)))
    missing = object()
    out = []
    for key in sorted(set(a) | set(b)):
        if key in ignore:
            continue
        x, y = a.get(key, missing), b.get(key, missing)
        if x != y:
            out.append(f"{key}: {'(absent)' if x is missing else x} != {'(absent)' if y is missing else y}")
    return out


def _truncate_log(path: Path, step: int) -> None:
    """Keep the log rows of steps up to ``step`` (all of them that the resumed state includes)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a row cut short by a kill
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= step:
            kept.append(line + "\n")
    path.write_text("".join(kept), encoding="utf-8")
