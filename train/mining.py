"""Adaptive hard-negative mining on the ``uniret.index`` backends.

For every judged training query: retrieve the top ``k`` documents (Lucene BM25, FAISS over a dense
encoder, or both fused), drop every judged-relevant document, filter likely false negatives, sample
``num_negatives`` and write training records (see :mod:`uniret.train.records`).

Scores and ranks
    Each query's candidates are its top-``k`` hits plus its positives, all with retriever scores: a
    positive outside the top ``k`` is scored directly (dense: the embedding similarity; BM25:
    :class:`uniret.train.teachers.BM25Teacher`, which reproduces Lucene's scores). For the hybrid, the
    positives join both runs before fusion. A candidate's *rank* is its 1-based position among the
    query's non-positive candidates (rank 1 = the hardest negative) in trec_eval's order (score
    descending, ties by document id descending), the order of evaluation and reranking too.

The positive score
    The reference for the margin filters is the *lowest* retriever score among the query's positives
    (``positive_score="min"``; ``"max"`` takes the highest). NV-Retriever (Moreira et al., 2024) uses the
    positive's score with one positive per query; with several, the lowest is the conservative choice:
    each positive becomes a training pair with the same negatives, so a negative must stay below all
    of them.

Filters (``filter``: one name, or several separated by commas, applied in that order)
    - ``absolute``: drop a negative whose score > positive score - ``absolute_margin``.
    - ``relative``: drop a negative whose score > ``relative_margin`` * positive score (NV-Retriever's
      TopK-PercPos; meant for positive scores such as BM25 or cosine).
    - ``rank``: keep only ranks in [``min_rank``, ``max_rank``].
    - ``teacher``: drop a negative whose teacher score > ``teacher_threshold``, or > the teacher score
      of the positive (``positive_score`` again picks min or max) - ``teacher_margin``.
    - ``none``: keep every candidate.

The hybrid fuses the two runs with :func:`uniret.scores.fuse_runs` (RRF or interpolation of min-max
normalised scores). Candidates, filters and sampling are the pure functions of
:mod:`uniret.train.negatives`.

Sampling takes the ``num_negatives`` best-ranked survivors (``top``) or a seeded random draw of them
(``random``, ordered by rank). Positives of other queries with the same text are also excluded
(``merge_duplicate_queries``; SciFact repeats two claims). Records carry the retriever scores, or the
teacher's when a teacher is given (``teacher_scores``).
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from uniret import families
from uniret.atomic import write_text_atomic
from uniret.data import BeirDataset, Corpus, Run
from uniret.scores import FUSIONS, fuse_runs
from uniret.train.negatives import (
    FILTERS,
    SAMPLING,
    Candidate,
    Split,
    apply_filter,
    apply_filters,
    count_above,
    filter_absolute,
    filter_rank,
    filter_relative,
    filter_teacher,
    rank_candidates,
    reduce_positive,
    sample_negatives,
)
from uniret.train.records import TrainingRecord, records_from_beir, write_records

logger = logging.getLogger(__name__)

__all__ = [
    "FILTERS", "FUSIONS", "HYBRID_MEMBERS", "SAMPLING", "Candidate", "MiningConfig", "Split", "apply_filter",
    "apply_filters", "filter_absolute", "filter_rank", "filter_relative", "filter_teacher", "fuse_runs", "mine",
    "rank_candidates", "reduce_positive", "run_mining", "sample_negatives",
]

HYBRID_MEMBERS = ("bm25", "dense")  # mining's hybrid: these two families fused


def retrievers() -> list[str]:
    """What mining can retrieve with: every searchable registered family, and the bm25 + dense hybrid."""
    return list(dict.fromkeys([*families.names(searchable=True), "hybrid"]))


@dataclass
class MiningConfig:
    """Every option of :func:`mine`; plain types, so YAML and the CLI can fill it."""

    retriever: str = "bm25"  # bm25 | dense | hybrid (RRF or interpolation of bm25 and dense)
    model: str = "all-MiniLM-L6-v2"  # dense encoder: alias, folder or hub name (dense, hybrid)
    k: int = 100  # candidates retrieved per query
    filter: str = "relative"  # none | absolute | relative | rank | teacher, or a comma-separated chain
    absolute_margin: float = 0.0  # absolute: drop if score > positive - margin
    relative_margin: float = 0.95  # relative: drop if score > margin * positive
    min_rank: int = 1  # rank: first rank kept (1 = hardest negative)
    max_rank: int | None = None  # rank: last rank kept (None: k)
    teacher_threshold: float | None = None  # teacher: drop if teacher score > threshold
    teacher_margin: float | None = 0.0  # teacher: drop if teacher score > teacher positive - margin
    positive_score: str = "min"  # min | max over a query's positives
    num_negatives: int = 8
    sampling: str = "top"  # top | random (seeded, within what the filters kept)
    seed: int = 0
    split: str = "train"
    min_grade: int = 1  # positives: grade >= min_grade; every judged-relevant (grade >= 1) doc is excluded
    merge_duplicate_queries: bool = True  # exclude the positives of queries with the same text too
    fusion: str = "rrf"  # hybrid: rrf | interpolate (min-max normalised scores)
    rrf_k: int = 60
    dense_weight: float = 0.5  # hybrid: weight of the dense run (bm25 gets 1 - dense_weight)
    teachers: list[str] = field(default_factory=list)  # e.g. ["bm25", "dense", "splade-tiny"]
    teacher_weights: list[float] | None = None
    teacher_normalization: str = "minmax"  # minmax | zscore | none (ensembles)
    teacher_scores: bool = True  # with a teacher, records carry its scores instead of the retriever's
    bm25_k1: float = 0.9
    bm25_b: float = 0.4
    index_path: str | None = None  # a saved uniret index to search instead of building one (bm25, dense)
    device: str = "auto"
    backend: str = "torch"  # dense encoder inference: torch | onnx | onnx-int8
    batch_size: int = 32
    max_length: int = 256
    task: str | None = None
    instruction: str | None = None

    def __post_init__(self) -> None:
        def bad(name: str, expected: str) -> ValueError:
            return ValueError(f"MiningConfig.{name}: got {getattr(self, name)!r}; expected {expected}")

        if self.retriever not in retrievers():
            raise bad("retriever", "one of " + ", ".join(retrievers()))
        unknown = [s for s in self.filters if s not in FILTERS]
        if unknown or not self.filters:
            raise bad("filter", "one of " + ", ".join(FILTERS) + " or a comma-separated list of them")
        if self.sampling not in SAMPLING:
            raise bad("sampling", "one of " + ", ".join(SAMPLING))
        if self.positive_score not in ("min", "max"):
            raise bad("positive_score", "'min' or 'max'")
        if self.fusion not in FUSIONS:
            raise bad("fusion", "one of " + ", ".join(FUSIONS))
        if self.k < 1:
            raise bad("k", "an integer >= 1")
        if self.num_negatives < 0:
            raise bad("num_negatives", "an integer >= 0")
        if self.min_rank < 1:
            raise bad("min_rank", "an integer >= 1")
        if self.max_rank is not None and self.max_rank < self.min_rank:
            raise bad("max_rank", f"None or an integer >= min_rank ({self.min_rank})")
        if not 0.0 <= self.dense_weight <= 1.0:
            raise bad("dense_weight", "a number in [0, 1]")
        if "teacher" in self.filters and self.teacher_threshold is None and self.teacher_margin is None:
            raise bad("teacher_margin", "a number (or set teacher_threshold) for the 'teacher' filter")
        if self.teacher_weights is not None and len(self.teacher_weights) != len(self.teachers):
            raise bad("teacher_weights", f"one weight per teacher ({len(self.teachers)})")
        if self.teacher_normalization not in ("minmax", "zscore", "none"):
            raise bad("teacher_normalization", "minmax, zscore or none")
        if self.index_path is not None and self.retriever == "hybrid":
            raise bad("index_path", "None for the hybrid retriever (pass backend=[bm25, dense] to mine())")

    @property
    def members(self) -> list[str]:
        """The families retrieved with (two for the hybrid, fused)."""
        return list(HYBRID_MEMBERS) if self.retriever == "hybrid" else [self.retriever]

    @property
    def filters(self) -> list[str]:
        return [s.strip().lower() for s in self.filter.split(",") if s.strip()]


# -- retrieval and direct scoring -------------------------------------------------------------------------------

def _doc_texts(corpus: Corpus, ids: Collection[str]) -> dict[str, str]:
    wanted = set(ids)
    if not wanted:
        return {}
    return {d.id: d.full_text() for d in corpus if d.id in wanted}


class _Retrieval:
    """One retriever: its top-k run and a way to score (query, document) pairs it did not return."""

    def __init__(self, backend: Any, dataset: BeirDataset, config: MiningConfig) -> None:
        self.backend = backend
        self.dataset = dataset
        self.config = config
        self.doc_embeddings: np.ndarray | None = None
        self.doc_rows: dict[str, int] = {}
        self.query_embeddings: dict[str, np.ndarray] = {}
        self._bm25: Any = None

    @property
    def kind(self) -> str:
        return str(getattr(self.backend, "kind", type(self.backend).__name__))

    def search(self, queries: Mapping[str, str]) -> Run:
        if self.doc_embeddings is not None:
            qids = list(queries)
            emb = self.backend.encoder.encode_queries([queries[q] for q in qids])
            self.query_embeddings = dict(zip(qids, np.asarray(emb, dtype=np.float32), strict=True))
            return dict(self.backend.search_embeddings(qids, emb, self.config.k))
        return dict(self.backend.search(queries, k=self.config.k))

    def can_score(self) -> bool:
        return self.kind == "lucene-bm25" or hasattr(self.backend, "encoder")

    def score(self, requests: dict[str, list[str]], queries: Mapping[str, str], texts: Mapping[str, str]) -> Run:
        """Scores of ``{qid: [doc ids]}`` pairs."""
        if not requests:
            return {}
        if self.kind == "lucene-bm25":
            if self._bm25 is None:
                from uniret.train.teachers import BM25Teacher

                self._bm25 = BM25Teacher(self.dataset.corpus, k1=getattr(self.backend, "k1", self.config.bm25_k1),
                                         b=getattr(self.backend, "b", self.config.bm25_b))
            return {q: dict(zip(ids, self._bm25.score(queries[q], [texts[d] for d in ids]), strict=True))
                    for q, ids in requests.items()}
        encoder = self.backend.encoder
        similarity = getattr(self.backend, "similarity", "cosine")
        missing_q = [q for q in requests if q not in self.query_embeddings]
        if missing_q:
            emb = encoder.encode_queries([queries[q] for q in missing_q])
            self.query_embeddings.update(zip(missing_q, np.asarray(emb, dtype=np.float32), strict=True))
        need = sorted({d for ids in requests.values() for d in ids if d not in self.doc_rows})
        extra: dict[str, np.ndarray] = {}
        if need:
            emb = np.asarray(encoder.encode_documents([texts[d] for d in need]), dtype=np.float32)
            extra = dict(zip(need, emb, strict=True))
        out: Run = {}
        for q, ids in requests.items():
            qv = self.query_embeddings[q]
            row: dict[str, float] = {}
            for d in ids:
                dv = extra[d] if d in extra else self.doc_embeddings[self.doc_rows[d]]  # type: ignore[index]
                row[d] = float(-np.sum((qv - dv) ** 2)) if similarity == "l2" else float(qv @ dv)
            out[q] = row
        return out


def _build_retrievals(dataset: BeirDataset, config: MiningConfig, backend: Any) -> list[_Retrieval]:
    if backend is not None:
        backends = list(backend) if isinstance(backend, (list, tuple)) else [backend]
        expected = 2 if config.retriever == "hybrid" else 1
        if len(backends) != expected:
            raise ValueError(f"retriever {config.retriever!r} needs {expected} backend(s), got {len(backends)}")
        return [_Retrieval(b, dataset, config) for b in backends]
    if config.index_path is not None:
        from uniret.index import load_index

        loaded = load_index(config.index_path)
        if loaded.kind not in families.get(config.retriever).index_kinds:
            raise ValueError(f"MiningConfig.index_path: {config.index_path} holds a {loaded.kind!r} index; "
                             f"retriever {config.retriever!r} expects one of {families.get(config.retriever).index_kinds}")
        return [_Retrieval(loaded, dataset, config)]
    out = []
    for name in config.members:
        family = families.get(name)
        backend = family.build_backend(families.RetrieverConfig(
            kind=name, model=config.model, device=config.device, max_length=config.max_length,
            batch_size=config.batch_size, k1=config.bm25_k1, b=config.bm25_b, cache_embeddings=True,
            backend=config.backend))
        backend.index(dataset.corpus)
        retrieval = _Retrieval(backend, dataset, config)
        stored = backend.stored_vectors() if hasattr(backend, "stored_vectors") else None
        if stored is not None:  # exact document vectors, to score positives outside the top k
            ids, vectors = stored
            retrieval.doc_embeddings = np.asarray(vectors, dtype=np.float32)
            retrieval.doc_rows = {d: i for i, d in enumerate(ids)}
        out.append(retrieval)
    return out


# -- mining -----------------------------------------------------------------------------------------------------

def _excluded_docs(dataset: BeirDataset, split: str, config: MiningConfig, queries: Mapping[str, str]) -> dict[str, set[str]]:
    """Per query: every document judged relevant (grade >= 1) to it, or (merge_duplicate_queries) to a
    query with the same text."""
    judgements = dataset.qrels(split).judgements
    own = {q: {d for d, g in judgements.get(q, {}).items() if g >= 1} for q in queries}
    if not config.merge_duplicate_queries:
        return own
    by_text: dict[str, set[str]] = {}
    for q, text in queries.items():
        by_text.setdefault(" ".join(text.lower().split()), set()).update(own[q])
    return {q: own[q] | by_text[" ".join(text.lower().split())] for q, text in queries.items()}


def _retrieve(retrievals: list[_Retrieval], queries: Mapping[str, str], pos_ids: Mapping[str, list[str]],
              texts: Mapping[str, str], exclude: Mapping[str, set[str]], config: MiningConfig,
              seconds: dict[str, float]) -> tuple[Run, dict[str, Any]]:
    """Top-k runs; positives each run missed are scored directly and join it; two runs are fused."""
    t = time.perf_counter()
    runs = [r.search(queries) for r in retrievals]
    seconds["search"] = time.perf_counter() - t
    stats: dict[str, Any] = {
        "retriever": [r.kind for r in retrievals],
        "retrieved": sum(len(h) for run in runs for h in run.values()),
        "relevant_retrieved": sum(len(exclude[q] & set().union(*(set(r.get(q, {})) for r in runs))) for q in queries),
        "positives_scored_directly": 0,
    }
    t = time.perf_counter()
    for retrieval, run in zip(retrievals, runs, strict=True):
        requests = {q: [d for d in ids if d not in run.get(q, {})] for q, ids in pos_ids.items()}
        requests = {q: ids for q, ids in requests.items() if ids}
        if requests and retrieval.can_score():
            for q, scores in retrieval.score(requests, queries, texts).items():
                run.setdefault(q, {}).update(scores)
                stats["positives_scored_directly"] += len(scores)
        elif requests:
            logger.warning("%s backend cannot score documents it did not return: %d queries lack a positive "
                           "score, and the margin filters keep all their candidates", retrieval.kind, len(requests))
    seconds["positives"] = time.perf_counter() - t
    if len(runs) == 2:
        return fuse_runs(runs, config.fusion, [1.0 - config.dense_weight, config.dense_weight],
                         rrf_k=config.rrf_k), stats
    return runs[0], stats


def _score_with_teacher(teacher: Any, queries: Mapping[str, str], pos_ids: Mapping[str, list[str]],
                        cands: Mapping[str, list[Candidate]], texts: dict[str, str], corpus: Corpus,
                        how: str) -> tuple[dict[str, dict[str, float]], dict[str, float | None]]:
    """Teacher scores of each query's positives and candidates (scored together), and of its positive."""
    texts.update(_doc_texts(corpus, {c.doc_id for cs in cands.values() for c in cs} - set(texts)))
    qids = list(queries)
    docs = [pos_ids[q] + [c.doc_id for c in cands[q]] for q in qids]
    values = teacher.score_pairs([queries[q] for q in qids], [[texts[d] for d in ds] for ds in docs])
    scores = {q: dict(zip(ds, v, strict=True)) for q, ds, v in zip(qids, docs, values, strict=True)}
    positive = {q: reduce_positive(v[:len(pos_ids[q])], how) for q, v in zip(qids, values, strict=True)}
    return scores, positive


def mine(dataset: BeirDataset, config: MiningConfig, split: str | None = None, backend: Any = None,
         teacher: Any = None) -> tuple[list[TrainingRecord], dict[str, Any]]:
    """Mine hard negatives for the judged queries of ``split`` (default ``config.split``).

    ``backend``: a built search backend to use instead of building one (two, bm25 then dense, for the
    hybrid). ``teacher``: a :class:`uniret.train.teachers.Teacher` (default: built from
    ``config.teachers``) for the ``teacher`` filter and the records' scores. Returns the records and a
    statistics dict: what each filter removed (``removed``, in chain order; ``removed_alone``: what the
    margin and rank filters would remove on their own), counts, timings and the config.
    """
    from uniret.train.teachers import add_teacher_scores, build_teachers, cached

    split = split or config.split
    start = time.perf_counter()
    seconds: dict[str, float] = {}
    records = list(records_from_beir(dataset, split, config.min_grade, task=config.task,
                                     instruction=config.instruction))
    if not records:
        raise ValueError(f"{dataset.name}: split {split!r} has no query with a positive of grade >= {config.min_grade}")
    queries = {r.query_id: r.query for r in records if r.query_id is not None}
    pos_ids = {r.query_id: list(r.positive_ids or []) for r in records if r.query_id is not None}
    texts = {d: txt for r in records for d, txt in zip(r.positive_ids or [], r.positives, strict=True)}
    exclude = _excluded_docs(dataset, split, config, queries)
    if teacher is None and config.teachers:
        teacher = build_teachers(config.teachers, config.teacher_weights, config.teacher_normalization,
                                 corpus=dataset.corpus, device=config.device, batch_size=config.batch_size,
                                 max_length=config.max_length)
    if "teacher" in config.filters and teacher is None:
        raise ValueError("filter 'teacher' needs a teacher: pass teacher= or set MiningConfig.teachers")
    teacher = cached(teacher) if teacher is not None else None

    t = time.perf_counter()
    retrievals = _build_retrievals(dataset, config, backend)
    seconds["index"] = time.perf_counter() - t
    run, retrieval_stats = _retrieve(retrievals, queries, pos_ids, texts, exclude, config, seconds)
    stats: dict[str, Any] = {"dataset": dataset.name, "split": split, "queries": len(records), **retrieval_stats}

    cands: dict[str, list[Candidate]] = {}
    pos_score: dict[str, float | None] = {}
    for q in queries:
        hits = run.get(q, {})
        cands[q] = rank_candidates(hits, exclude[q] | {q})
        known = [hits[d] for d in pos_ids[q] if d in hits]
        pos_score[q] = reduce_positive(known, config.positive_score) if len(known) == len(pos_ids[q]) else None
    stats["self_hits_removed"] = sum(1 for q in queries if q in run.get(q, {}) and q not in exclude[q])
    stats["candidates"] = sum(len(c) for c in cands.values())
    stats["negatives_above_positive"] = sum(count_above(cands[q], pos_score[q]) for q in queries)
    stats["queries_without_positive_score"] = sum(1 for v in pos_score.values() if v is None)
    stats["removed_alone"] = {s: sum(len(apply_filter(s, cands[q], config, positive_score=pos_score[q])[1])
                                     for q in queries) for s in ("absolute", "relative", "rank")}

    removed: dict[str, int] = {}
    teacher_scores: dict[str, dict[str, float]] = {}
    teacher_pos: dict[str, float | None] = {}
    for step in config.filters:
        if step == "teacher":
            t = time.perf_counter()
            teacher_scores, teacher_pos = _score_with_teacher(teacher, queries, pos_ids, cands, texts, dataset.corpus,
                                                              config.positive_score)
            seconds["teacher"] = seconds.get("teacher", 0.0) + time.perf_counter() - t
        for q in queries:
            cands[q], gone = apply_filter(step, cands[q], config, positive_score=pos_score[q],
                                          teacher_scores=teacher_scores.get(q), teacher_positive=teacher_pos.get(q))
            removed[step] = removed.get(step, 0) + len(gone)
    stats["removed"] = removed
    stats["kept_after_filters"] = sum(len(c) for c in cands.values())

    chosen = {q: sample_negatives(cands[q], config.num_negatives, config.sampling,
                                  random.Random(f"{config.seed}:{q}")) for q in queries}
    texts.update(_doc_texts(dataset.corpus, {c.doc_id for cs in chosen.values() for c in cs} - set(texts)))
    for r in records:
        q = r.query_id
        assert q is not None
        hits = run.get(q, {})
        r.negative_ids = [c.doc_id for c in chosen[q]]
        r.negatives = [texts[c.doc_id] for c in chosen[q]]
        r.negative_scores = [c.score for c in chosen[q]]
        r.positive_scores = [hits[d] for d in pos_ids[q]] if pos_score[q] is not None else None
    counts = [len(c) for c in chosen.values()]
    stats.update({
        "negatives": sum(counts),
        "negatives_kept_above_positive": sum(count_above(chosen[q], pos_score[q]) for q in queries),
        "queries_short": sum(1 for n in counts if n < config.num_negatives),
        "queries_without_negatives": sum(1 for n in counts if n == 0),
        "scores": "teacher" if teacher is not None and config.teacher_scores else "retriever",
        "teacher": teacher.describe() if teacher is not None and hasattr(teacher, "describe") else None,
    })
    if teacher is not None and config.teacher_scores:
        t = time.perf_counter()
        add_teacher_scores(records, teacher)
        seconds["teacher"] = seconds.get("teacher", 0.0) + time.perf_counter() - t
    seconds["total"] = time.perf_counter() - start
    stats["seconds"] = {k: round(v, 3) for k, v in seconds.items()}
    stats["config"] = asdict(config)
    logger.info("mined %d negatives for %d queries from %d candidates; removed %s; %d candidates scored above "
                "their positive before filtering; %.1f s", stats["negatives"], len(records), stats["candidates"],
                removed, stats["negatives_above_positive"], seconds["total"])
    return records, stats


def run_mining(data: str | Path | BeirDataset, output: str | Path, config: MiningConfig) -> dict[str, Any]:
    """Mine ``data`` (a BEIR directory, a packaged data set name or a loaded data set) and write the
    records to ``output`` (JSONL) and the statistics to ``<output>.stats.json``; returns the statistics."""
    from uniret.data import load_beir

    dataset = data if isinstance(data, BeirDataset) else load_beir(data)
    records, stats = mine(dataset, config)
    output = Path(output)
    write_records(records, output)
    stats["output"] = str(output)
    stats_path = output.with_name(output.name + ".stats.json")
    write_text_atomic(stats_path, json.dumps(stats, indent=2) + "\n")
    logger.info("wrote %d records to %s and statistics to %s", len(records), output, stats_path)
    return stats
