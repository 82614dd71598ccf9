"""BEIR data from Hugging Face ``datasets``: a local folder or a hub name (where the internet exists).

Two layouts are understood, both with configurations/sub-folders ``corpus``, ``queries`` and qrels:

- the MTEB layout on the hub (``mteb/scifact``): configs ``corpus`` and ``queries`` and a ``default`` config
  of qrels with one split per BEIR split (columns ``query-id``, ``corpus-id``, ``score``);
- a local folder holding ``corpus/``, ``queries/`` and ``qrels/`` written by ``Dataset.save_to_disk``
  (``qrels/`` a ``DatasetDict`` with one split per BEIR split), e.g. by :func:`save_hf`.

The corpus stays an Arrow table (memory-mapped) and is iterated lazily.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from uniret.data import BeirDataset, Corpus, Document, Qrels, Queries, _document_digest, check_id
from uniret.errors import DataFormatError

logger = logging.getLogger(__name__)


def _corpus_from_table(table: Any, source: str, allow_whitespace_ids: bool = False) -> Corpus:
    if "_id" not in table.column_names:
        raise DataFormatError("missing column", path=source, field="_id", expected="columns _id, title, text")
    ids = [str(i) for i in table["_id"]]
    if not ids:
        raise DataFormatError("the corpus is empty", path=source, expected="at least one document")
    seen: dict[str, int] = {}
    for row, doc_id in enumerate(ids):
        check_id(doc_id, source, row + 1, "_id", allow_whitespace_ids)
        if doc_id in seen:
            raise DataFormatError(f"duplicate id {doc_id!r} (first seen in row {seen[doc_id] + 1})", path=source,
                                  line=row + 1, field="_id", expected="unique document ids")
        seen[doc_id] = row
    has_title = "title" in table.column_names

    def iterate() -> Iterator[Document]:
        for record in table:
            yield Document(id=str(record["_id"]), title=(record.get("title") or "") if has_title else "",
                           text=record.get("text") or "")

    digest = hashlib.sha256()
    for d in iterate():
        digest.update(_document_digest(d.id, d.title, d.text))  # the same fingerprint as the BEIR files'
    return Corpus(ids, iterate, source=source, fingerprint=digest.hexdigest()[:16])


def _qrels_from_table(table: Any, split: str, source: str, queries: Queries, corpus: Corpus,
                      allow_whitespace_ids: bool = False) -> Qrels:
    judgements: dict[str, dict[str, int]] = {}
    qrels = Qrels(judgements, split=split, source=source)
    for row, record in enumerate(table, 1):
        qid, did, grade = str(record["query-id"]), str(record["corpus-id"]), record["score"]
        check_id(qid, source, row, "query-id", allow_whitespace_ids)
        check_id(did, source, row, "corpus-id", allow_whitespace_ids)
        try:
            grade = int(grade)
        except (TypeError, ValueError):
            raise DataFormatError(f"non-integer grade {grade!r}", path=source, line=row, field="score",
                                  expected="an integer relevance grade") from None
        if qid not in queries:
            qrels.unknown_queries += 1
            qrels.dropped_lines.append(row)
        elif did not in corpus:
            qrels.unknown_documents += 1
            qrels.dropped_lines.append(row)
        else:
            if grade < 0:
                qrels.negative_grades += 1
            judgements.setdefault(qid, {})[did] = grade
    if qrels.negative_grades:
        logger.warning("%s: %d judgements have a negative grade (kept; scored as non-relevant)", source,
                       qrels.negative_grades)
    if qrels.unknown_queries or qrels.unknown_documents:
        logger.warning("%s: dropped %d qrels rows naming unknown queries and %d naming unknown documents",
                       source, qrels.unknown_queries, qrels.unknown_documents)
    return qrels


def load_hf(name_or_path: str | Path, revision: str | None = None, *, allow_whitespace_ids: bool = False
            ) -> BeirDataset:
    """Load a BEIR data set from ``datasets``: a folder written by :func:`save_hf` or a hub name. Ids are
    checked as :func:`uniret.data.load_beir` checks them."""
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - datasets is a core dependency
        raise ImportError("the 'datasets' package is needed to load Hugging Face data sets") from e

    local = Path(name_or_path)
    if local.is_dir():
        for part in ("corpus", "queries", "qrels"):
            if not (local / part).is_dir():
                raise FileNotFoundError(f"{local}: missing sub-folder '{part}' (expected corpus/, queries/, qrels/ "
                                        "written by Dataset.save_to_disk)")
        corpus_t = datasets.load_from_disk(str(local / "corpus"))
        queries_t = datasets.load_from_disk(str(local / "queries"))
        qrels_d = datasets.load_from_disk(str(local / "qrels"))
        name = local.name
    else:
        name = str(name_or_path)
        corpus_t = datasets.load_dataset(name, "corpus", revision=revision)
        queries_t = datasets.load_dataset(name, "queries", revision=revision)
        qrels_d = datasets.load_dataset(name, "default", revision=revision)
    if isinstance(corpus_t, datasets.DatasetDict):
        corpus_t = next(iter(corpus_t.values()))
    if isinstance(queries_t, datasets.DatasetDict):
        queries_t = next(iter(queries_t.values()))
    if not isinstance(qrels_d, datasets.DatasetDict):
        raise DataFormatError("qrels must be a DatasetDict with one split per BEIR split", path=str(name_or_path))

    source = str(name_or_path)
    corpus = _corpus_from_table(corpus_t, f"{source}/corpus", allow_whitespace_ids)
    queries = Queries({str(r["_id"]): r.get("text") or "" for r in queries_t})
    for row, qid in enumerate(queries, 1):
        check_id(qid, f"{source}/queries", row, "_id", allow_whitespace_ids)
    queries.source = f"{source}/queries"
    qrels = {split: _qrels_from_table(t, split, f"{source}/qrels[{split}]", queries, corpus, allow_whitespace_ids)
             for split, t in qrels_d.items()}
    return BeirDataset(local if local.is_dir() else Path(name.replace("/", "__")), corpus, queries, {},
                       name=Path(name).name, qrels=qrels)


def save_hf(dataset: BeirDataset, path: str | Path) -> Path:
    """Write a BEIR data set as ``datasets`` folders (``corpus/``, ``queries/``, ``qrels/``)."""
    import datasets

    path = Path(path)
    docs = list(dataset.corpus)
    datasets.Dataset.from_dict({"_id": [d.id for d in docs], "title": [d.title for d in docs],
                                "text": [d.text for d in docs]}).save_to_disk(str(path / "corpus"))
    datasets.Dataset.from_dict({"_id": list(dataset.queries), "text": list(dataset.queries.values())}).save_to_disk(
        str(path / "queries"))
    qrels = {}
    for split in dataset.splits:
        rows = [(q, d, g) for q, docs_ in dataset.qrels(split).judgements.items() for d, g in docs_.items()]
        qrels[split] = datasets.Dataset.from_dict({"query-id": [r[0] for r in rows], "corpus-id": [r[1] for r in rows],
                                                   "score": [r[2] for r in rows]})
    datasets.DatasetDict(qrels).save_to_disk(str(path / "qrels"))
    return path
