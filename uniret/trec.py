"""TREC run files: the one reader and the one writer of ``qid Q0 docid rank score tag`` lines.

Runs are written in trec_eval's order (:func:`uniret.scores.ranked`: score descending, ties by document id
descending) with ranks from 1, and atomically (a temporary file renamed when complete). Reading ignores
the rank and the tag: a run is ``{qid: {docid: score}}``, the order trec_eval itself restores from the
scores. A document listed twice for one query keeps its last score.

Ids are fields, so they cannot hold whitespace: the data layer refuses such ids unless a data set is loaded
with ``allow_whitespace_ids`` (LIMIT's ids are person names). Then the writer percent-encodes whitespace and
``%`` in ids (``Geneva Durben`` -> ``Geneva%20Durben``) and the reader decodes them, so a run round-trips;
ids without whitespace or ``%`` are written as they are.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from uniret.data import Run
from uniret.scores import ranked

_ENCODE = {"%": "%25", " ": "%20", "\t": "%09", "\n": "%0A", "\r": "%0D", "\x0b": "%0B", "\x0c": "%0C"}


def encode_id(text: str) -> str:
    """An id as one TREC field: whitespace and ``%`` percent-encoded only when present."""
    if "%" not in text and not any(c.isspace() for c in text):
        return text
    return "".join(_ENCODE.get(c, c if not c.isspace() else f"%{ord(c):02X}") for c in text)


def decode_id(field: str) -> str:
    if "%" not in field:
        return field
    from urllib.parse import unquote

    return unquote(field)


def format_trec_run(run: Mapping[str, Mapping[str, float]], tag: str = "uniret", digits: int = 6) -> Iterator[str]:
    """The lines (without newline) of ``run`` in TREC format, each query's hits in trec_eval's order.
    Whitespace in ``tag`` becomes ``_`` (a tag is one field)."""
    tag = "_".join(tag.split()) or "uniret"
    for qid, hits in run.items():
        for rank, (doc_id, score) in enumerate(ranked(hits), 1):
            yield f"{encode_id(qid)} Q0 {encode_id(doc_id)} {rank} {score:.{digits}f} {tag}"


def write_trec_run(run: Mapping[str, Mapping[str, float]], path: str | Path, tag: str = "uniret",
                   digits: int = 6) -> Path:
    """Write ``run`` to ``path`` (atomically) as ``qid Q0 docid rank score tag`` lines, scores with
    ``digits`` decimals; returns the path."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            for line in format_trec_run(run, tag, digits):
                f.write(line + "\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def parse_trec_run(lines: Iterable[str], source: str = "<run>") -> Run:
    """``{qid: {docid: score}}`` from TREC run lines; blank lines are skipped. ``source`` names the input
    in error messages."""
    run: Run = {}
    for lineno, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 6:
            raise ValueError(f"{source}:{lineno}: expected 6 fields 'qid Q0 docid rank score tag', got {len(parts)}")
        try:
            score = float(parts[4])
        except ValueError:
            raise ValueError(f"{source}:{lineno}: the score (field 5) is not a number: {parts[4]!r}") from None
        run.setdefault(decode_id(parts[0]), {})[decode_id(parts[2])] = score
    return run


def read_trec_run(path: str | Path) -> Run:
    """The run in the TREC file at ``path`` as ``{qid: {docid: score}}``."""
    with open(path, encoding="utf-8") as f:
        return parse_trec_run(f, str(path))
