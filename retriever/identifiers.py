"""Identifier structures for generative retrieval: what a constrained decoder may generate.

Identifiers are token-id sequences of the retriever's tokenizer (never re-tokenised text, so a generated
sequence is exactly a stored one):

- :class:`TitleTrie` (GENRE): each document's title; a prefix trie (``marisa-trie``) gives the tokens that
  may follow a generated prefix, and end-of-sequence once the prefix is a whole title.
- :class:`NgramIndex` (SEAL, UGR): any n-gram of any document. A suffix array over the tokenised corpus
  (numpy, int32/int64 ``.npy``) gives, for a prefix, its occurrences as one contiguous range; the tokens that
  follow it are the (sorted) tokens at that offset in the range, and the documents that contain it come from
  the positions. ``benchmarks/generative.py`` measured it against the ``fm-index`` package (a Rust
  FM-index over strings): the FM-index has no "next symbols of a range" query, so every constrained step
  would need ``locate`` plus a gather, and it persists only through pickle; the suffix array answers
  each step with two binary searches and saves as ``.npy`` (numbers in BENCHMARKS.md).

Both answer ``next_tokens(prefix)`` (cached) and save to / load from a directory of portable files.
"""

from __future__ import annotations

import bisect
import json
import logging
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np

from uniret.errors import IndexMismatchError, MissingExtraError

logger = logging.getLogger(__name__)

_OFFSET = 0x10000  # token id -> one unicode code point past the surrogates (marisa keys are strings)
SEPARATOR = -1  # between documents in the n-gram token stream; never generated


def _key(tokens: Sequence[int]) -> str:
    return "".join(chr(_OFFSET + int(t)) for t in tokens)


def _tokens(key: str) -> list[int]:
    return [ord(c) - _OFFSET for c in key]


def _marisa() -> Any:
    try:
        import marisa_trie
    except ImportError as e:
        raise MissingExtraError("marisa_trie", "generative") from e
    return marisa_trie


class TitleTrie:
    """Titles (or any whole-string identifiers) as token sequences in a marisa prefix trie; ``owners(seq)``
    gives the documents (row numbers) an identifier names (several documents may share a title)."""

    def __init__(self, trie: Any, owners: list[list[int]]) -> None:
        self.trie = trie
        self._owners = owners  # by the trie's key id
        self._children = lru_cache(maxsize=65_536)(self._compute_children)

    @classmethod
    def build(cls, identifiers: Sequence[Sequence[int]]) -> TitleTrie:
        """``identifiers[i]``: the token ids of document ``i``'s identifier (empty: the document has none)."""
        keys = sorted({_key(s) for s in identifiers if len(s)})
        trie = _marisa().Trie(keys)
        owners: list[list[int]] = [[] for _ in range(len(trie))]
        for row, seq in enumerate(identifiers):
            if len(seq):
                owners[trie[_key(seq)]].append(row)
        return cls(trie, owners)

    def __len__(self) -> int:
        return len(self.trie)

    def _compute_children(self, prefix: str) -> tuple[int, ...]:
        n = len(prefix)
        return tuple(sorted({ord(k[n]) - _OFFSET for k in self.trie.iterkeys(prefix) if len(k) > n}))

    def next_tokens(self, prefix: Sequence[int]) -> tuple[int, ...]:
        """Tokens that extend ``prefix`` towards some identifier (empty when none does)."""
        return self._children(_key(prefix))

    def is_identifier(self, tokens: Sequence[int]) -> bool:
        return _key(tokens) in self.trie

    def owners(self, tokens: Sequence[int]) -> list[int]:
        key = _key(tokens)
        return list(self._owners[self.trie[key]]) if key in self.trie else []

    def identifiers(self) -> list[list[int]]:
        return [_tokens(k) for k in self.trie.keys()]

    def save(self, directory: Path) -> None:
        self.trie.save(str(directory / "titles.marisa"))
        (directory / "title_owners.json").write_text(json.dumps(self._owners), encoding="utf-8")

    @classmethod
    def load(cls, directory: Path) -> TitleTrie:
        trie = _marisa().Trie()
        trie.load(str(directory / "titles.marisa"))
        owners = json.loads((directory / "title_owners.json").read_text(encoding="utf-8"))
        if len(owners) != len(trie):
            raise IndexMismatchError(f"{directory}: {len(trie)} titles but {len(owners)} owner lists; damaged")
        return cls(trie, owners)


def suffix_array(tokens: np.ndarray) -> np.ndarray:
    """Suffix array of an int sequence by prefix doubling (numpy sorts; O(n log^2 n)). A suffix that ends
    sorts before every longer one it prefixes."""
    n = len(tokens)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    _, rank = np.unique(tokens, return_inverse=True)
    rank = rank.astype(np.int64)
    k = 1
    while True:
        second = np.zeros(n, dtype=np.int64)  # 0: past the end, else rank + 1
        if k < n:
            second[: n - k] = rank[k:] + 1
        key = rank * (n + 2) + second
        sa = np.argsort(key, kind="stable")
        sk = key[sa]
        new = np.empty(n, dtype=np.int64)
        new[sa] = np.concatenate([[0], np.cumsum(sk[1:] != sk[:-1])])
        rank = new
        if rank[sa[-1]] == n - 1 or k >= n:
            return sa
        k *= 2


class NgramIndex:
    """Every n-gram of a tokenised corpus, through a suffix array of the documents' tokens joined by
    :data:`SEPARATOR` (so no n-gram crosses two documents)."""

    def __init__(self, tokens: np.ndarray, sa: np.ndarray, starts: np.ndarray) -> None:
        self.tokens = tokens  # int32, documents joined, each followed by SEPARATOR
        self.sa = sa  # suffix start positions in sorted order
        self.starts = starts  # starts[i]: position of document i's first token
        self.num_tokens = int(len(tokens) - len(starts))  # real tokens (separators excluded)
        self._next = lru_cache(maxsize=65_536)(self._compute_next)
        self._unigrams: np.ndarray | None = None

    @classmethod
    def build(cls, documents: Sequence[Sequence[int]]) -> NgramIndex:
        lengths = np.array([len(d) + 1 for d in documents], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        tokens = np.full(int(lengths.sum()), SEPARATOR, dtype=np.int32)
        for s, d in zip(starts, documents, strict=True):
            tokens[s : s + len(d)] = np.asarray(d, dtype=np.int32)
        dtype = np.int32 if len(tokens) < 2**31 else np.int64
        return cls(tokens, suffix_array(tokens).astype(dtype), starts)

    def __len__(self) -> int:
        return len(self.starts)

    def lengths(self) -> np.ndarray:
        """Each document's number of tokens."""
        ends = np.append(self.starts[1:], len(self.tokens))
        return (ends - self.starts - 1).astype(np.int64)

    def _at(self, m: int) -> Any:
        tokens, n = self.tokens, len(self.tokens)

        def key(p: int) -> int:
            q = int(p) + m
            return int(tokens[q]) if q < n else SEPARATOR - 1

        return key

    def range(self, pattern: Sequence[int]) -> tuple[int, int]:
        """``[lo, hi)`` in the suffix array of the suffixes that start with ``pattern`` (lo == hi: absent)."""
        lo, hi = 0, len(self.sa)
        for m, t in enumerate(pattern):
            key = self._at(m)
            t = int(t)
            lo, hi = bisect.bisect_left(self.sa, t, lo, hi, key=key), bisect.bisect_right(self.sa, t, lo, hi, key=key)
            if lo == hi:
                break
        return lo, hi

    def count(self, pattern: Sequence[int]) -> int:
        """Occurrences of ``pattern`` in the corpus (0 for an empty pattern or one with a separator)."""
        if not len(pattern) or any(int(t) == SEPARATOR for t in pattern):
            return 0
        lo, hi = self.range(pattern)
        return hi - lo

    def _compute_next(self, pattern: tuple[int, ...]) -> tuple[int, ...]:
        lo, hi = self.range(pattern)
        if lo == hi:
            return ()
        follow = self.tokens[self.sa[lo:hi].astype(np.int64) + len(pattern)]  # sorted within the range
        distinct = follow[np.concatenate([[True], follow[1:] != follow[:-1]])]
        return tuple(int(t) for t in distinct if t != SEPARATOR)

    def next_tokens(self, prefix: Sequence[int]) -> tuple[int, ...]:
        """Tokens ``t`` such that ``prefix + [t]`` occurs in some document."""
        return self._next(tuple(int(t) for t in prefix))

    def documents(self, pattern: Sequence[int]) -> dict[int, int]:
        """``{document row: occurrences}`` of ``pattern``."""
        if self.count(pattern) == 0:
            return {}
        lo, hi = self.range(pattern)
        rows = np.searchsorted(self.starts, self.sa[lo:hi], side="right") - 1
        found, counts = np.unique(rows, return_counts=True)
        return {int(r): int(c) for r, c in zip(found, counts, strict=True)}

    def unigram_counts(self) -> np.ndarray:
        """Occurrences of every token id in the corpus (index: token id; computed once)."""
        if self._unigrams is None:
            real = np.asarray(self.tokens)
            self._unigrams = np.bincount(real[real != SEPARATOR].astype(np.int64))
        return self._unigrams

    def document_tokens(self, row: int) -> np.ndarray:
        end = self.starts[row + 1] - 1 if row + 1 < len(self.starts) else len(self.tokens) - 1
        return self.tokens[self.starts[row] : end]

    def save(self, directory: Path) -> None:
        np.save(directory / "ngram_tokens.npy", self.tokens)
        np.save(directory / "ngram_sa.npy", self.sa)
        np.save(directory / "ngram_starts.npy", self.starts)

    @classmethod
    def load(cls, directory: Path, *, mmap: bool = True) -> NgramIndex:
        mode: Literal["r"] | None = "r" if mmap else None
        try:
            tokens = np.load(directory / "ngram_tokens.npy", mmap_mode=mode)
            sa = np.load(directory / "ngram_sa.npy", mmap_mode=mode)
            starts = np.load(directory / "ngram_starts.npy")
        except (OSError, ValueError) as e:
            raise IndexMismatchError(f"{directory}: the n-gram index files (ngram_*.npy) are missing or damaged "
                                     f"({e}); rebuild the index") from None
        if len(sa) != len(tokens):
            raise IndexMismatchError(f"{directory}: suffix array of {len(sa)} entries for {len(tokens)} tokens; "
                                     "damaged, rebuild the index")
        return cls(tokens, sa, starts)
