"""Typed BEIR data: documents, corpora, queries and qrels, loaded lazily and validated.

A BEIR directory holds ``corpus.jsonl`` (``_id``, ``title``, ``text``), ``queries.jsonl`` (``_id``,
``text``) and ``qrels/<split>.tsv`` (``query-id``, ``corpus-id``, ``score`` with a header line). Each
file may also be gzip-compressed (``corpus.jsonl.gz``).

Every problem in a file is a :class:`~uniret.errors.DataFormatError` naming the file (and the line
where there is one): malformed JSON, ids holding whitespace (they would break a TREC run file, whose
columns are separated by whitespace), bytes that are not UTF-8, a gzip file cut short or garbled.

The corpus is scanned once when it is opened (ids, duplicates, malformed lines) and then iterated
lazily from disk, so a large corpus never has to fit in memory as Python objects.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import re
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uniret.errors import DataFormatError

logger = logging.getLogger(__name__)

_WHITESPACE = re.compile(r"\s")

Run = dict[str, dict[str, float]]
"""Search results: ``{query_id: {doc_id: score}}`` (the trec_eval / BEIR convention)."""


@dataclass(frozen=True)
class Document:
    id: str
    text: str
    title: str = ""

    def full_text(self, sep: str = " ") -> str:
        """Title and text joined, as BEIR encoders and pyserini's "flat" indexes see a document."""
        return f"{self.title}{sep}{self.text}" if self.title else self.text


def _iter_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` of a UTF-8 text file, gzip-compressed when it ends in ``.gz``.

    Lines are read as bytes and decoded one by one, so a byte that is not UTF-8 is reported with its
    line; a gzip stream cut short or garbled is reported with the last line read intact. Both raise
    :class:`DataFormatError`. A UTF-8 byte-order mark at the start of the file is skipped.
    """
    lineno = 0
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            for lineno, raw in enumerate(f, 1):
                try:
                    text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
                except UnicodeDecodeError as e:
                    raise DataFormatError(
                        f"byte 0x{raw[e.start]:02x} at byte {e.start + 1} of the line is not UTF-8 ({e.reason})",
                        path=path, line=lineno, expected="UTF-8 text",
                    ) from None
                yield lineno, text
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataFormatError(
            f"the gzip stream is damaged or cut short "
            f"{f'after line {lineno}' if lineno else 'before the first line'} ({e})", path=path,
            expected="a complete gzip file (is the download or copy truncated?)",
        ) from None


def find_file(root: Path, stem: str) -> Path | None:
    """``root/stem`` or ``root/stem.gz``, whichever exists."""
    for candidate in (root / stem, root / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, record)``; blank lines are skipped, bad JSON raises with file:line."""
    for lineno, line in _iter_lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataFormatError(
                f"malformed JSON ({e.msg} at column {e.colno})", path=path, line=lineno,
                expected="one JSON object per line",
            ) from None
        if not isinstance(record, dict):
            raise DataFormatError(
                f"got a JSON {type(record).__name__}", path=path, line=lineno, expected="a JSON object"
            )
        yield lineno, record


def _require_id(record: dict[str, Any], path: Path, lineno: int) -> str:
    if "_id" not in record:
        raise DataFormatError("missing", path=path, line=lineno, field="_id", expected="a document or query id")
    value = record["_id"]
    if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value) == "":  # true is not id "True"
        raise DataFormatError(f"invalid value {value!r}", path=path, line=lineno, field="_id",
                              expected="a non-empty string")
    return str(value)


def check_id(value: str, path: str | Path, lineno: int | None, field: str, allow_whitespace: bool = False) -> bool:
    """True when ``value`` holds no whitespace. Otherwise raise :class:`DataFormatError` (ids are written
    as whitespace-separated columns of TREC run files, so ``"doc 1"`` would break ``run.trec`` and any
    tool reading it), or, with ``allow_whitespace``, return False so that the caller counts and warns."""
    if not _WHITESPACE.search(value):
        return True
    if allow_whitespace:
        return False
    raise DataFormatError(f"id {value!r} contains whitespace", path=path, line=lineno, field=field,
                          expected="an id without whitespace (or load with --allow-whitespace-ids / allow_whitespace_ids=True)")


def _warn_whitespace_ids(path: str | Path, count: int, first_line: int) -> None:
    if count:
        logger.warning("%s: %d lines hold an id with whitespace (first: line %d); a run file written with them "
                       "(run.trec) percent-encodes them (Geneva%%20Durben)", path, count, first_line)


def _text_field(record: dict[str, Any], name: str, path: Path, lineno: int) -> str:
    value = record.get(name, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DataFormatError(f"got {type(value).__name__}", path=path, line=lineno, field=name,
                              expected="a string")
    return value


def _document_digest(doc_id: str, title: str, text: str) -> bytes:
    """What a corpus fingerprint hashes per document: the same for a file and for the documents in memory,
    so an index built from one matches an evaluation on the other."""
    return doc_id.encode() + b"\0" + title.encode() + b"\0" + text.encode() + b"\0"


class Corpus:
    """An iterable of :class:`Document` with known ids.

    Build one with :meth:`from_jsonl` (lazy, validated), :meth:`from_documents` (in memory) or
    :func:`uniret.hf.load_hf_corpus`.
    """

    def __init__(self, ids: list[str], iterate: Any, source: str, fingerprint: str) -> None:
        self._ids = ids
        self._iterate = iterate
        self.source = source
        self.fingerprint = fingerprint
        self._id_set: frozenset[str] | None = None

    @classmethod
    def from_jsonl(cls, path: str | Path, *, allow_whitespace_ids: bool = False) -> Corpus:
        """Scan and validate a ``corpus.jsonl[.gz]``; ids holding whitespace raise :class:`DataFormatError`
        unless ``allow_whitespace_ids`` (then they are counted and logged as a warning)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"corpus file not found: {path}")
        ids: list[str] = []
        first_line: dict[str, int] = {}
        digest = hashlib.sha256()
        spaced, first_spaced = 0, 0
        for lineno, record in _iter_jsonl(path):
            doc_id = _require_id(record, path, lineno)
            if not check_id(doc_id, path, lineno, "_id", allow_whitespace_ids):
                spaced, first_spaced = spaced + 1, first_spaced or lineno
            title = _text_field(record, "title", path, lineno)
            text = _text_field(record, "text", path, lineno)
            if doc_id in first_line:
                raise DataFormatError(
                    f"duplicate id {doc_id!r} (first seen on line {first_line[doc_id]})",
                    path=path, line=lineno, field="_id", expected="unique document ids",
                )
            first_line[doc_id] = lineno
            ids.append(doc_id)
            digest.update(_document_digest(doc_id, title, text))
        if not ids:
            raise DataFormatError("the corpus is empty", path=path, expected="at least one document")
        _warn_whitespace_ids(path, spaced, first_spaced)

        def iterate() -> Iterator[Document]:
            for lineno, record in _iter_jsonl(path):
                yield Document(
                    id=_require_id(record, path, lineno),
                    title=_text_field(record, "title", path, lineno),
                    text=_text_field(record, "text", path, lineno),
                )

        return cls(ids, iterate, source=str(path), fingerprint=digest.hexdigest()[:16])

    @classmethod
    def from_documents(cls, documents: Iterable[Document], source: str = "<memory>", *,
                       allow_whitespace_ids: bool = True) -> Corpus:
        """An in-memory corpus. Ids must be unique; ids holding whitespace are accepted (a corpus built in
        code, or a subset of one loaded with ``allow_whitespace_ids``) unless ``allow_whitespace_ids=False``."""
        docs = list(documents)
        if not docs:
            raise DataFormatError("the corpus is empty", path=source, expected="at least one document")
        seen: set[str] = set()
        digest = hashlib.sha256()
        for position, d in enumerate(docs):
            check_id(d.id, source, position + 1, "_id", allow_whitespace_ids)
            if d.id in seen:
                raise DataFormatError(f"duplicate id {d.id!r}", path=source, line=position + 1, field="_id",
                                      expected="unique document ids")
            seen.add(d.id)
            digest.update(_document_digest(d.id, d.title, d.text))
        return cls([d.id for d in docs], lambda: iter(docs), source=source,
                   fingerprint=digest.hexdigest()[:16])

    @property
    def ids(self) -> list[str]:
        return list(self._ids)

    @property
    def id_set(self) -> frozenset[str]:
        if self._id_set is None:
            self._id_set = frozenset(self._ids)
        return self._id_set

    def __len__(self) -> int:
        return len(self._ids)

    def __iter__(self) -> Iterator[Document]:
        return iter(self._iterate())

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self.id_set

    def batches(self, size: int) -> Iterator[list[Document]]:
        batch: list[Document] = []
        for doc in self:
            batch.append(doc)
            if len(batch) == size:
                yield batch
                batch = []
        if batch:
            yield batch

    def subset(self, ids: Iterable[str]) -> Corpus:
        """An in-memory corpus holding only ``ids`` (in corpus order)."""
        wanted = set(ids)
        return Corpus.from_documents((d for d in self if d.id in wanted), source=f"{self.source}[subset]")

    def to_dict(self) -> dict[str, Document]:
        return {d.id: d for d in self}


class Queries(dict[str, str]):
    """``{query_id: text}`` in file order."""

    source: str = "<memory>"

    @classmethod
    def from_jsonl(cls, path: str | Path, *, allow_whitespace_ids: bool = False) -> Queries:
        """Read a ``queries.jsonl[.gz]``; ids holding whitespace as in :meth:`Corpus.from_jsonl`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"queries file not found: {path}")
        queries = cls()
        queries.source = str(path)
        first_line: dict[str, int] = {}
        spaced, first_spaced = 0, 0
        for lineno, record in _iter_jsonl(path):
            qid = _require_id(record, path, lineno)
            if not check_id(qid, path, lineno, "_id", allow_whitespace_ids):
                spaced, first_spaced = spaced + 1, first_spaced or lineno
            if qid in first_line:
                raise DataFormatError(f"duplicate id {qid!r} (first seen on line {first_line[qid]})",
                                      path=path, line=lineno, field="_id", expected="unique query ids")
            first_line[qid] = lineno
            queries[qid] = _text_field(record, "text", path, lineno)
        if not queries:
            raise DataFormatError("no queries", path=path, expected="at least one query")
        _warn_whitespace_ids(path, spaced, first_spaced)
        return queries


@dataclass
class Qrels:
    """Relevance judgements ``{query_id: {doc_id: grade}}`` for one split, plus what was dropped.

    ``unknown_queries`` / ``unknown_documents`` count the lines dropped because they name a query or
    document not in the data set (their line numbers are in ``dropped_lines``). ``negative_grades``
    counts the lines kept with a grade below 0: such a document stays in ``judgements`` as judged
    non-relevant (trec_eval, and so every metric here, treats any grade <= 0 as non-relevant with gain
    0, so the numbers equal those with grade 0); the count is logged as a warning because negative
    grades usually mean a column mix-up or a "harmful" label that a user may want to know about.
    """

    judgements: dict[str, dict[str, int]]
    split: str
    source: str = "<memory>"
    unknown_queries: int = 0
    unknown_documents: int = 0
    negative_grades: int = 0
    dropped_lines: list[int] = field(default_factory=list)

    @classmethod
    def from_tsv(
        cls,
        path: str | Path,
        split: str,
        known_queries: Mapping[str, Any] | None = None,
        known_docs: Corpus | frozenset[str] | set[str] | None = None,
        *,
        allow_whitespace_ids: bool = False,
    ) -> Qrels:
        """Read a BEIR qrels TSV. Lines naming unknown queries or documents are dropped, counted and
        logged as a warning; negative grades are kept, counted and logged as a warning; other malformed
        lines (ids holding whitespace included) raise :class:`DataFormatError`."""
        path = Path(path)
        judgements: dict[str, dict[str, int]] = {}
        qrels = cls(judgements, split=split, source=str(path))
        doc_ids = known_docs.id_set if isinstance(known_docs, Corpus) else known_docs
        first_negative = spaced = first_spaced = 0
        for lineno, line in _iter_lines(path):
            line = line.rstrip("\n\r")
            if not line.strip():
                continue
            parts = line.split("\t")
            if lineno == 1 and parts[0].strip().lower() in {"query-id", "query_id", "qid"}:
                continue
            if len(parts) == 4:  # TREC qrels: qid iteration docid grade
                parts = [parts[0], parts[2], parts[3]]
            if len(parts) != 3:
                raise DataFormatError(f"{len(parts)} tab-separated columns", path=path, line=lineno,
                                      expected="3 columns: query-id, corpus-id, score")
            qid, did, grade_text = (p.strip() for p in parts)
            ok = check_id(qid, path, lineno, "query-id", allow_whitespace_ids)
            if not check_id(did, path, lineno, "corpus-id", allow_whitespace_ids) or not ok:
                spaced, first_spaced = spaced + 1, first_spaced or lineno
            try:
                grade = int(grade_text)
            except ValueError:
                raise DataFormatError(f"non-integer grade {grade_text!r}", path=path, line=lineno,
                                      field="score", expected="an integer relevance grade") from None
            if known_queries is not None and qid not in known_queries:
                qrels.unknown_queries += 1
                qrels.dropped_lines.append(lineno)
                continue
            if doc_ids is not None and did not in doc_ids:
                qrels.unknown_documents += 1
                qrels.dropped_lines.append(lineno)
                continue
            if grade < 0:
                qrels.negative_grades += 1
                first_negative = first_negative or lineno
            judgements.setdefault(qid, {})[did] = grade
        if qrels.unknown_queries or qrels.unknown_documents:
            logger.warning(
                "%s: dropped %d qrels lines naming unknown queries and %d naming unknown documents "
                "(first dropped line: %d)", path, qrels.unknown_queries, qrels.unknown_documents,
                qrels.dropped_lines[0],
            )
        _warn_whitespace_ids(path, spaced, first_spaced)
        if qrels.negative_grades:
            logger.warning(
                "%s: %d qrels lines have a negative grade (first: line %d); they are kept as judged "
                "non-relevant, as trec_eval counts every grade <= 0", path, qrels.negative_grades, first_negative,
            )
        if not judgements:
            raise DataFormatError("no usable judgements", path=path, expected="at least one qrels line")
        return qrels

    def __len__(self) -> int:
        return len(self.judgements)

    def __iter__(self) -> Iterator[str]:
        return iter(self.judgements)

    def __getitem__(self, qid: str) -> dict[str, int]:
        return self.judgements[qid]

    def relevant(self, qid: str, min_grade: int = 1) -> list[str]:
        return [d for d, g in self.judgements.get(qid, {}).items() if g >= min_grade]


class BeirDataset:
    """A BEIR-format data set: a lazily iterated corpus, its queries and per-split qrels."""

    def __init__(self, root: str | Path, corpus: Corpus, queries: Queries, qrels_files: dict[str, Path],
                 name: str | None = None, qrels: dict[str, Qrels] | None = None, *,
                 allow_whitespace_ids: bool = False) -> None:
        self.root = Path(root)
        self.allow_whitespace_ids = allow_whitespace_ids
        self.name = name or self.root.name
        self.corpus = corpus
        self.queries = queries
        self._qrels_files = qrels_files
        self._qrels: dict[str, Qrels] = dict(qrels or {})

    @property
    def splits(self) -> list[str]:
        return sorted(set(self._qrels_files) | set(self._qrels))

    def qrels(self, split: str = "test") -> Qrels:
        if split not in self._qrels_files and split not in self._qrels:
            raise DataFormatError(
                f"split {split!r} not found (available: {', '.join(self.splits) or 'none'})",
                path=self.root / "qrels", expected=f"a file qrels/{split}.tsv",
            )
        if split not in self._qrels:
            self._qrels[split] = Qrels.from_tsv(self._qrels_files[split], split, self.queries, self.corpus,
                                               allow_whitespace_ids=self.allow_whitespace_ids)
        return self._qrels[split]

    def sample(self, num_queries: int, num_docs: int, split: str = "test", seed: int = 0) -> BeirDataset:
        """A small in-memory slice: the first ``num_queries`` judged queries of ``split``, every document
        judged for them, and other documents drawn at random (seeded) up to ``num_docs`` in all."""
        import random

        qrels = self.qrels(split)
        qids = [q for q in self.queries if q in qrels.judgements][:num_queries]
        judged = {d for q in qids for d in qrels.judgements[q]}
        others = sorted(set(self.corpus.ids) - judged)
        random.Random(seed).shuffle(others)
        keep = judged | set(others[: max(0, num_docs - len(judged))])
        corpus = self.corpus.subset(keep)
        queries = Queries({q: self.queries[q] for q in qids})
        queries.source = self.queries.source
        sub_qrels = Qrels({q: dict(qrels.judgements[q]) for q in qids}, split=split, source=qrels.source)
        return BeirDataset(self.root, corpus, queries, {}, name=f"{self.name}-sample{len(qids)}q{len(corpus)}d",
                           qrels={split: sub_qrels})

    def split_queries(self, split: str = "test") -> Queries:
        """The queries judged in ``split``, in file order."""
        judged = self.qrels(split).judgements
        out = Queries({qid: text for qid, text in self.queries.items() if qid in judged})
        out.source = self.queries.source
        return out


def load_beir(path: str | Path, *, allow_whitespace_ids: bool = False) -> BeirDataset:
    """Load a BEIR directory (or a packaged data set name such as ``scifact``).

    Ids holding whitespace (in the corpus, the queries or a qrels line) raise :class:`DataFormatError`
    naming the file and line, because a TREC run file cannot carry them; ``allow_whitespace_ids=True``
    accepts them with a warning (metrics computed in memory are right, ``run.trec`` is not readable by
    trec_eval). The LIMIT data sets, whose document ids are person names, need it."""
    from uniret.assets import resolve_dataset

    root = resolve_dataset(path)
    corpus_file = find_file(root, "corpus.jsonl")
    queries_file = find_file(root, "queries.jsonl")
    if corpus_file is None:
        raise FileNotFoundError(f"{root}: no corpus.jsonl or corpus.jsonl.gz")
    if queries_file is None:
        raise FileNotFoundError(f"{root}: no queries.jsonl or queries.jsonl.gz")
    qrels_dir = root / "qrels"
    qrels_files: dict[str, Path] = {}
    if qrels_dir.is_dir():
        for p in sorted(qrels_dir.iterdir()):
            for suffix in (".tsv", ".tsv.gz"):
                if p.name.endswith(suffix):
                    qrels_files[p.name[: -len(suffix)]] = p
    corpus = Corpus.from_jsonl(corpus_file, allow_whitespace_ids=allow_whitespace_ids)
    queries = Queries.from_jsonl(queries_file, allow_whitespace_ids=allow_whitespace_ids)
    logger.info("loaded %s: %d documents, %d queries, splits %s", root, len(corpus), len(queries),
                sorted(qrels_files))
    return BeirDataset(root, corpus, queries, qrels_files, allow_whitespace_ids=allow_whitespace_ids)


BEIR_FILES = frozenset({"corpus.jsonl", "queries.jsonl", "qrels"})  # what save_beir writes


def save_beir(dataset: BeirDataset, path: str | Path) -> Path:
    """Write a data set (e.g. a :meth:`BeirDataset.sample`) as a BEIR directory, atomically: the files go to a
    temporary sibling that then replaces ``path`` in one step (a reader never sees half a corpus, and two
    writers of one folder do not interleave their lines). An existing ``path`` may hold a BEIR data set (it is
    replaced whole) and nothing else."""
    import shutil
    import tempfile

    from uniret.atomic import OutputPathError, apply_umask, replace_directory

    given, path = Path(path), Path(path).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{path} exists and is not a folder; nothing was changed (remove it or choose "
                              "another path)")
    qrels = path / "qrels"
    if path.exists() and ({p.name for p in path.iterdir()} - BEIR_FILES or (
            qrels.exists() and (not qrels.is_dir() or any(p.suffix != ".tsv" for p in qrels.iterdir())))):
        raise OutputPathError(f"{path} exists and holds more than a BEIR data set (corpus.jsonl, queries.jsonl, "
                              "qrels/*.tsv); nothing was changed (remove it or choose another path)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        (tmp / "qrels").mkdir()
        with open(tmp / "corpus.jsonl", "w", encoding="utf-8") as f:
            for d in dataset.corpus:
                f.write(json.dumps({"_id": d.id, "title": d.title, "text": d.text}, ensure_ascii=False) + "\n")
        with open(tmp / "queries.jsonl", "w", encoding="utf-8") as f:
            for qid, text in dataset.queries.items():
                f.write(json.dumps({"_id": qid, "text": text}, ensure_ascii=False) + "\n")
        for split in dataset.splits:
            with open(tmp / "qrels" / f"{split}.tsv", "w", encoding="utf-8") as f:
                f.write("query-id\tcorpus-id\tscore\n")
                for qid, docs in dataset.qrels(split).judgements.items():
                    for did, grade in docs.items():
                        f.write(f"{qid}\t{did}\t{grade}\n")
        apply_umask(tmp)
        tmp = replace_directory(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return given
