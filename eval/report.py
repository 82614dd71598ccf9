"""Run reports: ``report.json``, ``report.md``, the run in TREC format, and a PNG bar chart.

The TREC run reader and writer are the kernel's (:mod:`uniret.trec`), re-exported here."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from uniret.atomic import write_text_atomic
from uniret.trec import read_trec_run, write_trec_run

logger = logging.getLogger(__name__)

__all__ = ["metrics_table", "plot_metrics", "read_trec_run", "write_json", "write_markdown_report", "write_trec_run"]


def metrics_table(rows: Mapping[str, Mapping[str, float]], metrics: Sequence[str] | None = None) -> str:
    """A Markdown table: one row per system, one column per metric."""
    if not rows:
        return ""
    cols = list(metrics or next(iter(rows.values())).keys())
    width = max(len("system"), *(len(n) for n in rows))
    lines = ["| " + "system".ljust(width) + " | " + " | ".join(c.rjust(10) for c in cols) + " |",
             "|" + "-" * (width + 2) + "|" + "|".join("-" * 11 + ":" for _ in cols) + "|"]
    for name, values in rows.items():
        cells = [f"{values[c]:.4f}".rjust(10) if c in values else "".rjust(10) for c in cols]
        lines.append("| " + name.ljust(width) + " | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_json(data: Any, path: str | Path) -> None:
    """``data`` as indented JSON, written atomically (:func:`uniret.atomic.write_text_atomic`)."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_markdown_report(report: Mapping[str, Any], path: str | Path) -> None:
    ds = report.get("dataset", {})
    timings = report.get("timings", {})
    lines = [
        f"# {report.get('name', 'run')}: {ds.get('name', '?')} ({ds.get('split', '?')})",
        "",
        metrics_table({report.get("name", "run"): report["metrics"]}),
        "",
        f"- queries: {ds.get('num_queries')}, documents: {ds.get('num_docs')}",
        "- timings: " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in timings.items()),
        f"- retriever: `{json.dumps(report.get('retriever', {}), default=str)}`",
        f"- created: {report.get('created')} on {report.get('machine')}",
        "",
    ]
    Path(path).write_text("\n".join(lines), encoding="utf-8")


def plot_metrics(rows: Mapping[str, Mapping[str, float]], path: str | Path, title: str = "") -> None:
    """A grouped bar chart (metrics on the x axis, one bar per system) saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = list(rows)
    metrics = list(next(iter(rows.values())).keys())
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(metrics), 4))
    width = 0.8 / max(len(systems), 1)
    for i, name in enumerate(systems):
        xs = [j + (i - (len(systems) - 1) / 2) * width for j in range(len(metrics))]
        values = [rows[name].get(m, 0.0) for m in metrics]
        bars = ax.bar(xs, values, width, label=name)
        ax.bar_label(bars, labels=[f"{v:.3f}" for v in values], fontsize=7, padding=1)
    ax.set_xticks(range(len(metrics)), metrics)
    ax.set_ylim(0, 1.18)
    ax.set_ylabel("score")
    if title:
        ax.set_title(title)
    ax.legend(loc="upper center", ncols=max(1, len(systems)), fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
