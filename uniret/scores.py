"""Score helpers every wing shares: the trec_eval tie order, per-query normalisation and run fusion.

A document's rank must not depend on the path it came through (evaluation, reranking, mining,
fusion), so every ordering of hits in uniret goes through :func:`ranked`, and every normalisation and
fusion through :func:`normalize` and :func:`fuse_hits` / :func:`fuse_runs`.

Tie order
    trec_eval's: score descending, then document id descending (plain string order). This is the order
    in which trec_eval scores a run, so a run written, truncated or reranked in this order evaluates
    to the numbers ``pytrec_eval`` gives for the unordered dict.

Normalisation of one query's scores (``method``)
    - ``minmax``: ``(s - min) / (max - min)``. When all scores are equal (one score included) every
      score becomes **1.0**: the top of a list always maps to 1, so a single hit, or a list whose hits
      are all tied for the top, counts as fully as the top hit of any other list. (0.5 would rank the
      only hit of one run below the top hit of another in a fusion, for no reason in the data.) Within
      one list the value changes nothing: a constant shifts every score of the query alike.
    - ``zscore``: ``(s - mean) / std`` with the population std; all-equal scores become **0.0** (no
      score deviates from the mean).
    - ``none``: the scores as floats.

Fusion of result dicts ``{qid: {docid: score}}``
    - ``rrf``: reciprocal rank fusion, ``sum_r w_r / (rrf_k + rank_r(d))`` with ranks from 1 in the
      trec_eval order (Cormack et al., 2009).
    - ``interpolate``: ``sum_r w_r * normalize(run_r)[d]`` per query (``minmax`` by default).

    A document missing from a run gets nothing from that run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import overload

import numpy as np

Hits = Mapping[str, float]
"""One query's results: document id -> score."""

NORMALIZATIONS = ("minmax", "zscore", "none")
FUSIONS = ("rrf", "interpolate")
TIE_BREAKING = "score desc, then doc id desc (trec_eval)"


def ranked(hits: Hits) -> list[tuple[str, float]]:
    """``(doc_id, score)`` pairs in trec_eval's order: score descending, ties by document id descending."""
    return sorted(hits.items(), key=lambda item: (item[1], item[0]), reverse=True)


def top_k(hits: Hits, k: int | None) -> dict[str, float]:
    """The first ``k`` hits (all with ``None``) in trec_eval's order, as an ordered dict."""
    order = ranked(hits)
    return dict(order if k is None else order[:k])


def _normalize_values(values: np.ndarray, method: str) -> np.ndarray:
    if method not in NORMALIZATIONS:
        raise ValueError(f"unknown normalisation {method!r}; expected one of {', '.join(NORMALIZATIONS)}")
    if method == "none" or values.size == 0:
        return values
    if method == "minmax":
        lo, hi = values.min(), values.max()
        return (values - lo) / (hi - lo) if hi > lo else np.ones_like(values)
    std = values.std()
    return (values - values.mean()) / std if std > 0 else np.zeros_like(values)


@overload
def normalize(scores: Mapping[str, float], method: str = ...) -> dict[str, float]: ...


@overload
def normalize(scores: Sequence[float] | np.ndarray, method: str = ...) -> list[float]: ...


def normalize(scores: Mapping[str, float] | Sequence[float] | np.ndarray,
              method: str = "minmax") -> dict[str, float] | list[float]:
    """One query's scores normalised by ``method`` (``minmax``, ``zscore`` or ``none``; see the module
    docstring for the all-equal convention: minmax -> 1.0, zscore -> 0.0). A mapping gives a dict with
    the same keys in the same order, a sequence a list of floats."""
    if isinstance(scores, Mapping):
        keys = list(scores)
        values = _normalize_values(np.fromiter((scores[k] for k in keys), dtype=np.float64, count=len(keys)), method)
        return dict(zip(keys, values.tolist(), strict=True))
    return _normalize_values(np.asarray(scores, dtype=np.float64).reshape(-1), method).tolist()


def _check_weights(n: int, weights: Sequence[float] | None, what: str) -> list[float]:
    out = [float(w) for w in weights] if weights is not None else [1.0] * n
    if len(out) != n:
        raise ValueError(f"{len(out)} weights for {n} {what}; expected one weight per {what[:-1]}")
    return out


def fuse_hits(hits: Sequence[Hits], method: str = "rrf", weights: Sequence[float] | None = None, *,
              rrf_k: int = 60, normalization: str = "minmax") -> dict[str, float]:
    """Fuse one query's result lists: ``rrf`` (``sum w / (rrf_k + rank)``, ranks in trec_eval's order) or
    ``interpolate`` (``sum w * normalize(scores)``). ``weights`` default to 1 per list."""
    if method not in FUSIONS:
        raise ValueError(f"unknown fusion {method!r}; expected one of {', '.join(FUSIONS)}")
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"unknown normalisation {normalization!r}; expected one of {', '.join(NORMALIZATIONS)}")
    ws = _check_weights(len(hits), weights, "lists")
    out: dict[str, float] = {}
    for one, w in zip(hits, ws, strict=True):
        if not one:
            continue
        if method == "rrf":
            for rank, (d, _) in enumerate(ranked(one), 1):
                out[d] = out.get(d, 0.0) + w / (rrf_k + rank)
        else:
            for d, s in normalize(one, normalization).items():
                out[d] = out.get(d, 0.0) + w * s
    return out


def fuse_runs(runs: Sequence[Mapping[str, Hits]], method: str = "rrf", weights: Sequence[float] | None = None, *,
              rrf_k: int = 60, normalization: str = "minmax") -> dict[str, dict[str, float]]:
    """Fuse result dicts ``{qid: {docid: score}}`` query by query with :func:`fuse_hits`. Every query of
    any run is in the result (with ``{}`` when no run has a hit for it)."""
    ws = _check_weights(len(runs), weights, "runs")
    qids = list(dict.fromkeys(q for run in runs for q in run))
    return {q: fuse_hits([run.get(q, {}) for run in runs], method, ws, rrf_k=rrf_k, normalization=normalization)
            for q in qids}
