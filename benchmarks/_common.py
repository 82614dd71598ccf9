"""Helpers shared by the benchmark scripts: provenance of a run and writing results as JSON.

Every results file carries, next to the script's own numbers, what is needed to trust it without asking anyone:
the command line, the UTC start and end (ISO 8601), the machine as read from the system (CPU model from
``/proc/cpuinfo``, core count, GPU or null), library versions and the git commit with a dirty flag.

Scripts call :func:`save_result` (start = when this module was imported, i.e. when the script started) or, to
time one part of a script, open a :class:`BenchmarkRun` before the work and call its ``save`` after it.
Nothing in a results file is typed by hand.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from uniret.runtime import library_versions

RESULTS = Path(__file__).parent / "results"
REPO = Path(__file__).resolve().parent.parent
CPU_FEATURES = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")  # the flags that change CPU training speed
FUSION_WEIGHTS = [round(0.1 * i, 1) for i in range(11)]  # the interpolation weights a fusion sweep tries


def from_repo(spec: str) -> str:
    """A data path as given when it exists (or when the repository has no such path either: a packaged name
    such as ``scifact``), else the same path from the repository root (``../shared/...`` from any folder)."""
    return spec if Path(spec).exists() or not (REPO / spec).exists() else str(REPO / spec)


def best_fusion_weight(sweep: dict[float, float]) -> float:
    """The weight with the best score in ``{weight: score}``; ties go to the weight nearest 0.5."""
    return max(sweep, key=lambda w: (sweep[w], -abs(float(w) - 0.5)))


def utc_now() -> str:
    """The current UTC time, ISO 8601 to the second (``2026-12-01T15:30:00Z``)."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


PROCESS_STARTED = utc_now()  # this module is imported at the top of every script: the script's start


def cpu_info(path: str | Path = "/proc/cpuinfo") -> dict[str, Any]:
    """CPU model and the speed-relevant feature flags, read from ``/proc/cpuinfo`` (None where unreadable)."""
    model: str | None = None
    flags: list[str] = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model is None:
                    model = value.strip()
                elif key == "flags" and not flags:
                    present = set(value.split())
                    flags = [flag for flag in CPU_FEATURES if flag in present]
                if model is not None and flags:
                    break
    except OSError:
        pass
    return {"cpu": model, "cpu_features": flags}


def gpu_name() -> str | None:
    """The GPU(s) torch or nvidia-smi sees, or None."""
    try:
        import torch

        if torch.cuda.is_available():
            return ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    except Exception:  # noqa: BLE001 - a broken CUDA set-up must not lose a measurement
        pass
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return ", ".join(line.strip() for line in out.splitlines() if line.strip()) or None


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (how many runnable jobs shared the cores), or None."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine_info() -> dict[str, Any]:
    """The machine a result was measured on, read from the system, never typed."""
    usable: int | None
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    return {"system": f"{platform.system()} {platform.machine()}", **cpu_info(), "cores": os.cpu_count(),
            "usable_cores": usable, "gpu": gpu_name(), "load_average": load_average()}


def git_state(repo: Path = REPO) -> dict[str, Any]:
    """``git rev-parse HEAD`` and whether tracked or untracked files differ from it (None outside git)."""
    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30,
                                  check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    if os.environ.get("UNIRET_SOURCE_COMMIT"):  # a copy of the tree packed at that commit (device_decoder.py):
        # the lent machine's copy may carry a stale .git of its own, so the packed commit wins
        return {"commit": os.environ["UNIRET_SOURCE_COMMIT"], "dirty": os.environ.get("UNIRET_SOURCE_DIRTY") == "1",
                "from": "UNIRET_SOURCE_COMMIT (a copy of the tree, packed at that commit)"}
    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


_GIT_AT_START = git_state()


def command_line() -> str:
    """How this script was started, as a shell line (``python benchmarks/x.py --flag value``)."""
    return shlex.join(["python", *sys.argv])


class BenchmarkRun:
    """Provenance of one measurement: created before the work (start time, machine, commit), saved after it.

    ``results_dir`` defaults to ``benchmarks/results``; smoke runs pass another folder.
    """

    def __init__(self, name: str, *, results_dir: str | Path | None = None, started: str | None = None) -> None:
        self.name = name
        self.results_dir = Path(results_dir) if results_dir is not None else RESULTS
        self.started = started or utc_now()
        self.command = command_line()
        self.cwd = os.path.relpath(Path.cwd(), REPO) if Path.cwd().is_relative_to(REPO) else str(Path.cwd())
        self.git = _GIT_AT_START  # the code this process loaded, not what the tree holds later
        self.load_at_start = load_average()

    def record(self, result: dict[str, Any]) -> dict[str, Any]:
        return {
            "benchmark": self.name,
            "command": self.command,
            "cwd": self.cwd,
            "started_utc": self.started,
            "finished_utc": utc_now(),
            "machine": {**machine_info(), "load_average_at_start": self.load_at_start},
            "versions": library_versions(),
            "git": self.git,
            **result,
        }

    def save(self, result: dict[str, Any]) -> Path:
        return self.write(self.record(result))

    def write(self, record: dict[str, Any], name: str | None = None) -> Path:
        """Write a finished record as ``RESULTS/NAME.json`` (default: this run's name), through a temporary
        file and a rename: a results file is never half written."""
        from uniret.atomic import write_text_atomic

        self.results_dir.mkdir(parents=True, exist_ok=True)
        path = self.results_dir / f"{name or self.name}.json"
        write_text_atomic(path, json.dumps(record, indent=2) + "\n")
        return path

    def __enter__(self) -> BenchmarkRun:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def save_result(name: str, result: dict[str, Any], *, results_dir: str | Path | None = None,
                started: str | None = None) -> Path:
    """Write ``results/<name>.json``; the start defaults to when the script started (this module's import)."""
    return BenchmarkRun(name, results_dir=results_dir, started=started or PROCESS_STARTED).save(result)
