"""Cheap evaluation (MMTEB, Enevoldsen et al., 2025): evaluate on a downsampled corpus, and measure whether it
ranks systems as the full corpus does.

:func:`downsample` keeps, for one split, every judged document plus each query's top-``k`` documents from
several *pooling* runs (the hard negatives a retriever could confuse with the relevant ones); everything else is
dropped. Systems are then indexed and evaluated on the small corpus. :func:`rank_agreement` compares the scores
systems get on the full corpus with those on the small one: Spearman's rho and Kendall's tau-b over the systems
(both with ties, computed here so that the core needs no SciPy; the tests check them against SciPy).

A system that helped build the pool is favoured by it (its own top-``k`` is always there); the honest check pools
without the system being evaluated (leave-one-out), as ``benchmarks/cheap_eval.py`` reports.

Works on run dicts ``{qid: {docid: score}}`` and the data layer only, like the rest of ``eval/``::

    small = downsample(dataset, {"bm25": bm25_run, "dense": dense_run}, k=50)
    save_beir(small, "data/scifact-cheap")  # or: uniret downsample --data scifact --run bm25=run.trec ...
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from uniret.data import BeirDataset, Qrels, Queries, Run, save_beir
from uniret.errors import DataFormatError
from uniret.scores import top_k

logger = logging.getLogger(__name__)

STATS_FILE = "downsample.json"


def pool(dataset: BeirDataset, runs: Mapping[str, Mapping[str, Mapping[str, float]]], *, k: int = 100,
         split: str = "test") -> tuple[set[str], dict[str, Any]]:
    """The documents :func:`downsample` keeps (judged documents of ``split`` plus each pooling run's top ``k`` for
    the split's queries, in trec_eval's order) and statistics: how many each source added."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer (documents pooled per query and run), got {k!r}")
    if not runs:
        raise ValueError("no pooling runs: give at least one run whose top-k documents are kept as hard negatives")
    judgements = dataset.qrels(split).judgements  # an unknown split raises, naming the available ones
    corpus_ids = dataset.corpus.id_set
    judged = {d for docs in judgements.values() for d in docs}
    keep = set(judged)
    per_run: dict[str, dict[str, int]] = {}
    for name, run in runs.items():
        missing = 0
        pooled: set[str] = set()
        for qid in judgements:
            hits = run.get(qid)
            if not hits:
                missing += 1
                continue
            for doc_id in top_k(hits, k):
                if doc_id not in corpus_ids:
                    raise DataFormatError(
                        f"run {name!r} names document {doc_id!r} (query {qid!r}), which is not in the corpus "
                        f"({len(corpus_ids)} documents)", path=dataset.corpus.source,
                        expected="a run searched on this data set's corpus")
                pooled.add(doc_id)
        if missing:
            logger.warning("pooling run %r has no hits for %d of the %d %s queries", name, missing, len(judgements),
                           split)
        per_run[name] = {"pooled": len(pooled), "new": len(pooled - keep), "queries_without_hits": missing}
        keep |= pooled
    stats = {"split": split, "k": k, "queries": len(judgements), "judged_documents": len(judged),
             "documents": len(keep), "full_documents": len(corpus_ids),
             "reduction": len(corpus_ids) / len(keep), "runs": per_run}
    return keep, stats


def downsample(dataset: BeirDataset, runs: Mapping[str, Mapping[str, Mapping[str, float]]], *, k: int = 100,
               split: str = "test", name: str | None = None) -> BeirDataset:
    """A data set holding ``split``'s judged queries, their qrels, and a corpus of the judged documents plus each
    pooling run's top ``k`` per query (documents in corpus order; the same inputs always give the same data set).

    ``runs``: ``{name: {qid: {docid: score}}}``, searched on ``dataset``'s corpus. An unknown split, ``k < 1``, no
    runs, or a run naming a document that is not in the corpus raise with a message saying which. :func:`pool`
    gives the same documents with statistics."""
    keep, stats = pool(dataset, runs, k=k, split=split)
    logger.info("downsampled %s/%s to %d of %d documents (%.1fx smaller): %d judged + top-%d of %s",
                dataset.name, split, len(keep), len(dataset.corpus), stats["reduction"], stats["judged_documents"],
                k, ", ".join(runs))
    return subset(dataset, keep, split=split, name=name or f"{dataset.name}-cheap-k{k}")


def subset(dataset: BeirDataset, doc_ids: set[str], *, split: str = "test", name: str | None = None) -> BeirDataset:
    """``split``'s judged queries and qrels over the corpus documents in ``doc_ids`` (in corpus order; qrels of
    documents left out are dropped, as the loader drops those naming unknown documents)."""
    qrels = dataset.qrels(split)
    queries = Queries({q: t for q, t in dataset.queries.items() if q in qrels.judgements})
    queries.source = dataset.queries.source
    corpus = dataset.corpus.subset(doc_ids)
    kept = corpus.id_set
    judgements = {q: {d: g for d, g in docs.items() if d in kept} for q, docs in qrels.judgements.items()}
    judgements = {q: docs for q, docs in judgements.items() if docs}
    sub_qrels = Qrels(judgements, split=split, source=qrels.source)
    return BeirDataset(dataset.root, corpus, queries, {}, name=name or f"{dataset.name}-subset{len(corpus)}",
                       qrels={split: sub_qrels}, allow_whitespace_ids=dataset.allow_whitespace_ids)


def save_downsampled(small: BeirDataset, output_dir: str | Path, *, stats: Mapping[str, Any] | None = None,
                     protect: Sequence[str | Path] = ()) -> Path:
    """Write a :func:`downsample` result as a BEIR directory (atomically), with ``stats`` in ``downsample.json``;
    ``uniret eval --data OUTPUT_DIR`` evaluates on it."""
    from uniret.atomic import atomic_directory

    with atomic_directory(output_dir, kind="downsampled-dataset", protect=protect) as tmp:
        save_beir(small, tmp)
        if stats is not None:
            (tmp / STATS_FILE).write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    return Path(output_dir)


def run_downsample(data: str | Path, runs: Mapping[str, str | Path], output_dir: str | Path, *, k: int = 100,
                   split: str = "test", allow_whitespace_ids: bool = False) -> dict[str, Any]:
    """What ``uniret downsample`` does: load the data set and the TREC run files (``{name: path}``; a directory
    stands for its ``run.trec``, as ``uniret eval`` writes it), downsample, and write a BEIR directory with
    ``downsample.json``. Returns the statistics."""
    from uniret.atomic import check_output
    from uniret.data import load_beir
    from uniret.trec import read_trec_run

    dataset = load_beir(data, allow_whitespace_ids=allow_whitespace_ids)
    check_output(output_dir, protect=[dataset.root], what="--output-dir")
    loaded: dict[str, Run] = {}
    files: dict[str, str] = {}
    for name, path in runs.items():
        file = Path(path) / "run.trec" if Path(path).is_dir() else Path(path)
        if not file.is_file():
            raise FileNotFoundError(f"run {name!r}: no TREC run file at {file}")
        loaded[name], files[name] = read_trec_run(file), str(file)
    keep, stats = pool(dataset, loaded, k=k, split=split)
    small = subset(dataset, keep, split=split, name=f"{dataset.name}-cheap-k{k}")
    stats = {"source": {"name": dataset.name, "path": str(dataset.root),
                        "corpus_fingerprint": dataset.corpus.fingerprint},
             **stats, "run_files": files, "corpus_fingerprint": small.corpus.fingerprint}
    save_downsampled(small, output_dir, stats=stats, protect=[dataset.root])
    logger.info("wrote %s: %d documents (%.1fx fewer), %d queries", output_dir, stats["documents"],
                stats["reduction"], stats["queries"])
    return stats


# -- agreement of two rankings of systems -------------------------------------------------------------------------

def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 1 (ascending), tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=np.float64)
    sorted_values = values[order]
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and sorted_values[j + 1] == sorted_values[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rho with ties (the Pearson correlation of average ranks); None when either side is constant."""
    rx, ry = _average_ranks(np.asarray(x, dtype=np.float64)), _average_ranks(np.asarray(y, dtype=np.float64))
    dx, dy = rx - rx.mean(), ry - ry.mean()
    denominator = math.sqrt(float(dx @ dx) * float(dy @ dy))
    return None if denominator == 0 else float(dx @ dy) / denominator


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Kendall's tau-b (ties in either ranking adjust the denominator); None when either side is constant."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    concordant = discordant = ties_x = ties_y = 0
    for i in range(len(a)):
        for j in range(i + 1, len(a)):
            sx, sy = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
            if sx == 0 and sy == 0:
                continue
            if sx == 0:
                ties_x += 1
            elif sy == 0:
                ties_y += 1
            elif sx == sy:
                concordant += 1
            else:
                discordant += 1
    denominator = math.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    return None if denominator == 0 else (concordant - discordant) / denominator


def rank_agreement(full: Mapping[str, float], cheap: Mapping[str, float]) -> dict[str, Any]:
    """How well the scores systems get on a cheap (downsampled) corpus rank them as their full-corpus scores do.

    ``full`` and ``cheap``: ``{system: score}`` (say nDCG@10) over the same systems, two or more. Returns
    ``spearman`` and ``kendall`` (tau-b; both None when one side gives every system the same score), the number of
    ``systems``, both orders (best first, ties by name), whether the best system is the same (``same_best``), the
    fraction of system pairs ordered alike (``pairs_agree``, pairs tied on either side left out) and the largest
    change of a system's rank (``max_rank_shift``)."""
    if set(full) != set(cheap):
        only_full, only_cheap = sorted(set(full) - set(cheap)), sorted(set(cheap) - set(full))
        raise ValueError("full and cheap scores must name the same systems; "
                         + "; ".join(p for p in (f"only in full: {', '.join(only_full)}" if only_full else "",
                                                 f"only in cheap: {', '.join(only_cheap)}" if only_cheap else "") if p))
    if len(full) < 2:
        raise ValueError(f"rank agreement needs at least two systems, got {len(full)}")
    names = sorted(full)
    for label, scores in (("full", full), ("cheap", cheap)):
        bad = [n for n in names if not isinstance(scores[n], (int, float)) or not math.isfinite(scores[n])]
        if bad:
            raise ValueError(f"{label} scores must be finite numbers; not for {', '.join(bad)}")
    x = [float(full[n]) for n in names]
    y = [float(cheap[n]) for n in names]
    rho, tau = spearman(x, y), kendall_tau_b(x, y)
    if rho is None:
        logger.warning("rank agreement is undefined: one side gives every system the same score")

    def order(scores: Mapping[str, float]) -> list[str]:
        return sorted(names, key=lambda n: (-float(scores[n]), n))

    full_order, cheap_order = order(full), order(cheap)
    rank_full = _average_ranks(-np.asarray(x))
    rank_cheap = _average_ranks(-np.asarray(y))
    agree = total = 0
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            sx, sy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
            if sx != 0 and sy != 0:
                total += 1
                agree += int(sx == sy)
    return {
        "systems": len(names),
        "spearman": rho,
        "kendall": tau,
        "same_best": full_order[0] == cheap_order[0],
        "pairs_agree": agree / total if total else None,
        "max_rank_shift": float(np.max(np.abs(rank_full - rank_cheap))),
        "full_order": full_order,
        "cheap_order": cheap_order,
    }
