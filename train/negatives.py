"""Hard-negative candidates of one query and the filters of :mod:`uniret.train.mining` (pure functions).

A query's candidates are its hits minus its judged-relevant documents, ranked in trec_eval's order
(:func:`uniret.scores.ranked`: score descending, ties by document id descending) from 1: rank 1 is the
hardest negative. Each filter splits candidates into (kept, removed); sampling picks the negatives among
the survivors. The filters are described in :mod:`uniret.train.mining`.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from uniret.scores import ranked

if TYPE_CHECKING:
    from uniret.train.mining import MiningConfig

FILTERS = ("none", "absolute", "relative", "rank", "teacher")
SAMPLING = ("top", "random")


class Candidate(NamedTuple):
    doc_id: str
    score: float
    rank: int  # 1-based among the query's non-positive candidates


def rank_candidates(hits: Mapping[str, float], exclude: Collection[str] = ()) -> list[Candidate]:
    """Hits minus ``exclude`` in trec_eval's order (score descending, ties by document id descending),
    ranked from 1."""
    kept = ranked({d: s for d, s in hits.items() if d not in exclude})
    return [Candidate(d, float(s), i) for i, (d, s) in enumerate(kept, 1)]


Split = tuple[list[Candidate], list[Candidate]]


def filter_absolute(cands: Sequence[Candidate], positive_score: float | None, margin: float) -> Split:
    """(kept, removed): removed when score > positive_score - margin; nothing is removed without a
    positive score."""
    if positive_score is None:
        return list(cands), []
    limit = positive_score - margin
    return [c for c in cands if c.score <= limit], [c for c in cands if c.score > limit]


def filter_relative(cands: Sequence[Candidate], positive_score: float | None, ratio: float) -> Split:
    """(kept, removed): removed when score > ratio * positive_score."""
    if positive_score is None:
        return list(cands), []
    limit = ratio * positive_score
    return [c for c in cands if c.score <= limit], [c for c in cands if c.score > limit]


def filter_rank(cands: Sequence[Candidate], min_rank: int = 1, max_rank: int | None = None) -> Split:
    """(kept, removed): kept when min_rank <= rank <= max_rank."""
    top = max_rank if max_rank is not None else float("inf")
    inside = [c for c in cands if min_rank <= c.rank <= top]
    return inside, [c for c in cands if not min_rank <= c.rank <= top]


def filter_teacher(cands: Sequence[Candidate], teacher_scores: Mapping[str, float],
                   teacher_positive: float | None, threshold: float | None = None,
                   margin: float | None = None) -> Split:
    """(kept, removed): removed when the teacher score > threshold, or > teacher_positive - margin."""
    limits = [threshold] if threshold is not None else []
    if margin is not None and teacher_positive is not None:
        limits.append(teacher_positive - margin)
    if not limits:
        return list(cands), []
    limit = min(limits)
    removed = [c for c in cands if teacher_scores[c.doc_id] > limit]
    gone = {c.doc_id for c in removed}
    return [c for c in cands if c.doc_id not in gone], removed


def apply_filter(step: str, cands: Sequence[Candidate], config: MiningConfig, *, positive_score: float | None = None,
                 teacher_scores: Mapping[str, float] | None = None, teacher_positive: float | None = None) -> Split:
    """One filter of the chain, with its parameters from ``config``."""
    if step == "none":
        return list(cands), []
    if step == "absolute":
        return filter_absolute(cands, positive_score, config.absolute_margin)
    if step == "relative":
        return filter_relative(cands, positive_score, config.relative_margin)
    if step == "rank":
        return filter_rank(cands, config.min_rank, config.max_rank)
    if step == "teacher":
        if teacher_scores is None:
            raise ValueError("the 'teacher' filter needs teacher scores")
        return filter_teacher(cands, teacher_scores, teacher_positive, config.teacher_threshold, config.teacher_margin)
    raise ValueError(f"unknown filter {step!r}; expected one of {', '.join(FILTERS)}")


def apply_filters(cands: Sequence[Candidate], config: MiningConfig, **scores: Any) -> tuple[list[Candidate], dict[str, int]]:
    """The whole chain of ``config.filter`` on one query; returns the survivors and the count each filter
    removed."""
    kept, removed = list(cands), dict[str, int]()
    for step in config.filters:
        kept, gone = apply_filter(step, kept, config, **scores)
        removed[step] = removed.get(step, 0) + len(gone)
    return kept, removed


def sample_negatives(cands: Sequence[Candidate], num: int, method: str = "top",
                     rng: random.Random | None = None) -> list[Candidate]:
    """``num`` candidates: the best-ranked (``top``) or a random draw (``random``), returned by rank."""
    if method == "top":
        return sorted(cands, key=lambda c: c.rank)[:num]
    if method == "random":
        picked = (rng or random.Random(0)).sample(list(cands), min(num, len(cands)))
        return sorted(picked, key=lambda c: c.rank)
    raise ValueError(f"unknown sampling {method!r}; expected one of {', '.join(SAMPLING)}")


def count_above(cands: Sequence[Candidate], positive_score: float | None) -> int:
    return 0 if positive_score is None else sum(1 for c in cands if c.score > positive_score)


def reduce_positive(scores: Sequence[float], how: str) -> float | None:
    if not scores:
        return None
    return min(scores) if how == "min" else max(scores)
