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

__all__ = ["metrics_table", "per_query_deltas", "plot_metrics", "plot_per_query_delta", "read_trec_run", "win_loss",
           "write_json", "write_markdown_report", "write_trec_run"]


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
    many = len(systems) > 2  # more bars than fit horizontal labels: vertical labels, legend below the axes
    legend_rows = (len(systems) + 1) // 2 if many else 0
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 + len(metrics) * (0.5 + 0.4 * len(systems))),
                                    4 + 0.25 * legend_rows))
    width = 0.8 / max(len(systems), 1)
    for i, name in enumerate(systems):
        xs = [j + (i - (len(systems) - 1) / 2) * width for j in range(len(metrics))]
        values = [rows[name].get(m, 0.0) for m in metrics]
        bars = ax.bar(xs, values, width, label=name)
        ax.bar_label(bars, labels=[f"{v:.3f}" for v in values], fontsize=7, padding=1,
                     rotation=90 if many else 0)
    ax.set_xticks(range(len(metrics)), metrics)
    ax.set_ylim(0, 1.25 if many else 1.18)
    ax.set_ylabel("score")
    if title:
        ax.set_title(title)
    if many:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), ncols=2, fontsize=8, frameon=False)
    else:
        ax.legend(loc="upper center", ncols=max(1, len(systems)), fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def per_query_deltas(system: Mapping[str, Mapping[str, float]], baseline: Mapping[str, Mapping[str, float]],
                     metric: str = "ndcg@10") -> dict[str, float]:
    """``{qid: system - baseline}`` on ``metric`` for every query both per-query tables hold (as written in
    ``per_query.json``); a query missing from either is an error naming it."""
    missing = sorted(set(system) ^ set(baseline))
    if missing:
        raise ValueError(f"per-query tables differ in {len(missing)} queries (e.g. {missing[:3]}): compare runs of "
                         "the same queries")
    try:
        return {q: float(system[q][metric]) - float(baseline[q][metric]) for q in system}
    except KeyError:
        raise ValueError(f"metric {metric!r} is not in the per-query tables") from None


def win_loss(deltas: Mapping[str, float], tolerance: float = 1e-9) -> dict[str, int]:
    """Counts of queries the system wins (delta > tolerance), loses (< -tolerance) and ties."""
    wins = sum(1 for d in deltas.values() if d > tolerance)
    losses = sum(1 for d in deltas.values() if d < -tolerance)
    return {"wins": wins, "losses": losses, "ties": len(deltas) - wins - losses}


def plot_per_query_delta(system: Mapping[str, Mapping[str, float]], baseline: Mapping[str, Mapping[str, float]],
                         path: str | Path, *, metric: str = "ndcg@10", title: str = "") -> dict[str, int]:
    """The per-query win/loss plot: ``metric`` of ``system`` minus ``baseline`` for each query, sorted, as bars
    (green: wins, red: losses), saved as PNG. Returns :func:`win_loss` of the differences."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    deltas = per_query_deltas(system, baseline, metric)
    counts = win_loss(deltas)
    values = sorted(deltas.values(), reverse=True)
    colors = ["tab:green" if v > 1e-9 else "tab:red" if v < -1e-9 else "tab:gray" for v in values]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    ax.bar(range(len(values)), values, width=1.0, color=colors)
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.set_xlim(-0.5, len(values) - 0.5)
    ax.set_xlabel(f"queries, sorted by difference ({len(values)})")
    ax.set_ylabel(f"{metric} difference")
    mean = sum(values) / len(values) if values else 0.0
    ax.text(0.99, 0.97, f"{counts['wins']} wins, {counts['losses']} losses, {counts['ties']} ties; mean {mean:+.4f}",
            transform=ax.transAxes, ha="right", va="top", fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    logger.info("per-query %s: %d wins, %d losses, %d ties -> %s", metric, counts["wins"], counts["losses"],
                counts["ties"], path)
    return counts
