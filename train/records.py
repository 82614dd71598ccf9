"""The training-record JSONL format: one record per query.

Fields::

    {"query": "text", "positives": ["doc text", ...], "negatives": ["doc text", ...],
     "positive_scores": [float, ...], "negative_scores": [float, ...],      # optional teacher scores
     "positive_ids": ["docid", ...], "negative_ids": ["docid", ...],        # optional, for re-mining/dedup
     "query_id": "qid", "task": "scifact", "instruction": "Given a claim, ..."}  # optional

``positives`` must be non-empty; score lists, when present, have one float per text. Reading a malformed
record raises :class:`uniret.errors.DataFormatError` naming file:line and field.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uniret.data import BeirDataset, _iter_jsonl
from uniret.errors import DataFormatError

logger = logging.getLogger(__name__)


@dataclass
class TrainingRecord:
    query: str
    positives: list[str]
    negatives: list[str] = field(default_factory=list)
    positive_scores: list[float] | None = None
    negative_scores: list[float] | None = None
    positive_ids: list[str] | None = None
    negative_ids: list[str] | None = None
    query_id: str | None = None
    task: str | None = None
    instruction: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def from_json(cls, record: dict[str, Any], path: str | Path = "<memory>", line: int | None = None) -> TrainingRecord:
        def fail(name: str, message: str, expected: str) -> DataFormatError:
            return DataFormatError(message, path=path, line=line, field=name, expected=expected)

        unknown = set(record) - set(cls.__dataclass_fields__)
        if unknown:
            raise fail(sorted(unknown)[0], "unknown field", f"only {', '.join(cls.__dataclass_fields__)}")
        query = record.get("query")
        if not isinstance(query, str) or not query.strip():
            raise fail("query", "missing or empty" if not query else f"got {type(query).__name__}", "a non-empty string")
        lists: dict[str, Any] = {}
        for name in ("positives", "negatives", "positive_ids", "negative_ids"):
            value = record.get(name, [] if name in ("positives", "negatives") else None)
            if value is not None and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
                raise fail(name, f"got {value!r:.60}", "a list of strings")
            lists[name] = value
        if not lists["positives"]:
            raise fail("positives", "missing or empty", "at least one positive text")
        for name, texts in (("positive_scores", "positives"), ("negative_scores", "negatives")):
            value = record.get(name)
            if value is None:
                lists[name] = None
                continue
            if not isinstance(value, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                      for v in value):
                raise fail(name, f"got {value!r:.60}", "a list of numbers")
            if len(value) != len(lists[texts]):
                raise fail(name, f"{len(value)} scores for {len(lists[texts])} {texts}", f"one score per {texts[:-1]}")
            lists[name] = [float(v) for v in value]
        for name, texts in (("positive_ids", "positives"), ("negative_ids", "negatives")):
            if lists[name] is not None and len(lists[name]) != len(lists[texts]):
                raise fail(name, f"{len(lists[name])} ids for {len(lists[texts])} {texts}", f"one id per {texts[:-1]}")
        for name in ("query_id", "task", "instruction"):
            value = record.get(name)
            if value is not None and not isinstance(value, str):
                raise fail(name, f"got {type(value).__name__}", "a string")
        return cls(query=query, **lists, query_id=record.get("query_id"), task=record.get("task"),
                   instruction=record.get("instruction"))


def read_records(path: str | Path) -> list[TrainingRecord]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training file not found: {path}")
    records = [TrainingRecord.from_json(r, path, line) for line, r in _iter_jsonl(path)]
    if not records:
        raise DataFormatError("no training records", path=path, expected="one JSON record per line")
    return records


def write_records(records: Iterable[TrainingRecord], path: str | Path) -> int:
    """Write records as JSONL (to a temporary file renamed at the end); returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r.to_json(), ensure_ascii=False) + "\n")
            n += 1
    tmp.replace(path)
    return n


def records_from_beir(dataset: BeirDataset, split: str = "train", min_grade: int = 1,
                      task: str | None = None, instruction: str | None = None) -> Iterator[TrainingRecord]:
    """One record per judged query of ``split`` with its relevant documents as positives (no negatives)."""
    qrels = dataset.qrels(split)
    wanted = {d for q in qrels for d in qrels.relevant(q, min_grade)}
    docs = {d.id: d for d in dataset.corpus if d.id in wanted}
    for qid, text in dataset.queries.items():
        pos = [d for d in qrels.relevant(qid, min_grade) if d in docs] if qid in qrels.judgements else []
        if pos:
            yield TrainingRecord(query=text, positives=[docs[d].full_text() for d in pos], positive_ids=pos,
                                 query_id=qid, task=task or dataset.name, instruction=instruction)
