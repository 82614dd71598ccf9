"""Where a training step's time goes: ``trainer.profile_steps`` (torch.profiler over a few steps).

The trainer profiles ``profile_steps`` steps after one warm-up step (the first steps pay for allocation and
kernel selection) and writes ``profile.json`` into the run's output folder: the mean wall time of a profiled
step and the operators that took the most time, on the host (CPU) and, where CUDA runs, on the device. It is
for finding why a step is slow (on a GPU: is it busy, or waiting for the host?), not a benchmark: profiling
slows the steps it records, and the steps' results are the same as unprofiled ones.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from uniret.atomic import write_text_atomic

logger = logging.getLogger(__name__)

PROFILE = "profile.json"
TOP = 30  # operators listed per table


def _operator(avg: Any, on_device: bool) -> dict[str, Any]:
    """One averaged operator (a ``torch.autograd.profiler_util.FunctionEventAvg``) as plain numbers (ms)."""
    row = {"name": avg.key, "calls": int(avg.count), "self_cpu_ms": avg.self_cpu_time_total / 1e3,
           "cpu_total_ms": avg.cpu_time_total / 1e3}
    if on_device:
        row["self_device_ms"] = getattr(avg, "self_device_time_total", 0.0) / 1e3
        row["device_total_ms"] = getattr(avg, "device_time_total", 0.0) / 1e3
    return row


class StepProfiler:
    """Records steps ``2 .. 1 + steps`` of a training loop (the first is a warm-up) with torch.profiler and writes
    ``path`` (JSON) once they are done, or at :meth:`close` if training ends first. Call :meth:`step` after every
    training step."""

    def __init__(self, steps: int, path: Path, *, cuda: bool = False) -> None:
        if steps < 1:
            raise ValueError(f"trainer.profile_steps: got {steps!r}; expected a positive number of steps (0: off)")
        self.path = Path(path)
        self.cuda = cuda and torch.cuda.is_available()  # cuda: the model trains on a CUDA device
        activities = [torch.profiler.ProfilerActivity.CPU]
        if self.cuda:
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        self._profiler = torch.profiler.profile(
            activities=activities, schedule=torch.profiler.schedule(wait=0, warmup=1, active=steps, repeat=1),
            on_trace_ready=self._write, record_shapes=False)
        self._seen = 0
        self._recorded: list[float] = []  # wall seconds of the profiled steps
        self._last = 0.0
        self.written = False

    def start(self) -> None:
        self._profiler.start()
        self._last = time.perf_counter()

    def step(self) -> None:
        """One training step ended."""
        if self.written:
            return
        if self.cuda:
            torch.cuda.synchronize()  # a step's wall time includes its queued kernels
        now = time.perf_counter()
        self._seen += 1
        if self._seen > 1:  # past the warm-up step
            self._recorded.append(now - self._last)
        self._profiler.step()  # may write (on_trace_ready) after the last active step
        self._last = time.perf_counter()

    def close(self) -> None:
        """Stop profiling; a run shorter than the warm-up plus ``steps`` writes what it recorded. Never raises:
        a profile is a diagnostic and must not fail (or mask the failure of) the training it watched."""
        try:
            self._profiler.stop()  # after a written profile too: it closes the open step marker
        except Exception:  # noqa: BLE001 - e.g. nothing was recorded
            logger.debug("stopping the profiler", exc_info=True)
        if not self.written and self._recorded:
            self._write(self._profiler)

    def _write(self, prof: Any) -> None:
        """``on_trace_ready``; logs (never raises) when the report cannot be made or written."""
        if self.written or not self._recorded:  # a run of only the warm-up step records nothing worth a file
            return
        try:
            self._report(prof)
        except Exception:  # noqa: BLE001 - see close()
            logger.warning("the training profile could not be written to %s", self.path, exc_info=True)
            self.written = True  # do not try again at close()

    def _report(self, prof: Any) -> None:
        on_device = self.cuda
        averages = list(prof.key_averages())
        by_cpu = sorted(averages, key=lambda a: -a.self_cpu_time_total)[:TOP]
        report: dict[str, Any] = {
            "profiled_steps": len(self._recorded), "warmup_steps": 1, "device": "cuda" if on_device else "cpu",
            "gpu": torch.cuda.get_device_name(0) if on_device else None,
            "wall_seconds_per_step": sum(self._recorded) / len(self._recorded),  # _write: at least one
            "self_cpu_ms_total": sum(a.self_cpu_time_total for a in averages) / 1e3,
            "top_by_self_cpu": [_operator(a, on_device) for a in by_cpu],
            "note": "profiling slows the recorded steps; compare shares within this file, not its times with "
                    "others; a step's wall time includes logging, callbacks and any checkpoint saved after it",
        }
        if on_device:
            device_time = [getattr(a, "self_device_time_total", 0.0) for a in averages]
            report["self_device_ms_total"] = sum(device_time) / 1e3
            by_device = sorted(averages, key=lambda a: -getattr(a, "self_device_time_total", 0.0))[:TOP]
            report["top_by_self_device"] = [_operator(a, on_device) for a in by_device]
        write_text_atomic(self.path, json.dumps(report, indent=2) + "\n")
        self.written = True
        logger.info("profile of %d training steps written to %s (%.3f s a step while profiled)",
                    len(self._recorded), self.path, report["wall_seconds_per_step"])
