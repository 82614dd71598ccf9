"""Contriever-style unsupervised pairs from a raw corpus: two independent random crops of the same
document form a (query, positive) pair; other documents in the batch are the negatives.

Izacard et al. (2022): each crop keeps a random contiguous span of 10-50% of the document's words, and
each word is then deleted with probability ``word_deletion``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from uniret.data import Corpus
from uniret.train.records import TrainingRecord


def random_crop(words: list[str], rng: random.Random, min_ratio: float, max_ratio: float,
                word_deletion: float) -> str:
    n = len(words)
    length = max(1, round(n * rng.uniform(min_ratio, max_ratio)))
    start = rng.randint(0, n - length)
    span = words[start : start + length]
    if word_deletion > 0:
        kept = [w for w in span if rng.random() >= word_deletion]
        span = kept or span[:1]
    return " ".join(span)


def cropping_pairs(corpus: Corpus, *, pairs_per_doc: int = 1, min_ratio: float = 0.1, max_ratio: float = 0.5,
                   word_deletion: float = 0.1, min_words: int = 10, seed: int = 0) -> Iterator[TrainingRecord]:
    """Yield ``pairs_per_doc`` cropped pairs for every document with at least ``min_words`` words."""
    if not 0 < min_ratio <= max_ratio <= 1:
        raise ValueError("need 0 < min_ratio <= max_ratio <= 1")
    rng = random.Random(seed)
    for doc in corpus:
        words = doc.full_text().split()
        if len(words) < min_words:
            continue
        for k in range(pairs_per_doc):
            yield TrainingRecord(query=random_crop(words, rng, min_ratio, max_ratio, word_deletion),
                                 positives=[random_crop(words, rng, min_ratio, max_ratio, word_deletion)],
                                 positive_ids=[doc.id], query_id=f"{doc.id}#crop{k}", task="contriever")
