"""Helpers shared by the benchmark scripts: the machine line and writing results as JSON."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from uniret.runtime import library_versions, machine_description

RESULTS = Path(__file__).parent / "results"


def save_result(name: str, result: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    record = {
        "benchmark": name,
        "command": "python " + " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine_description(),
        "versions": library_versions(),
        **result,
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return path
