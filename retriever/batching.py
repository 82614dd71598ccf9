"""The one length-sorted batching loop: dense encoding, reranker scoring and teacher scoring all run
their model over batches of inputs sorted longest first, so each batch pads only to its own longest
input, and hand the outputs back in input order.

:func:`sorted_batches` yields the batches of indices; :func:`map_sorted` runs a function over them with
a progress bar and restores the input order; :func:`map_sorted_array` does the same for functions that
return one array row per input.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np

logger = logging.getLogger(__name__)

T = TypeVar("T")


def length_order(lengths: Sequence[int]) -> np.ndarray:
    """Indices by length descending; equal lengths keep their input order (a stable sort)."""
    return np.argsort(-np.asarray(lengths, dtype=np.int64).reshape(-1), kind="stable")


def sorted_batches(lengths: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Batches of at most ``batch_size`` indices into ``lengths``, longest first (stable for ties)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = length_order(lengths).tolist()
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def progress_bar(total: int, desc: str = "", unit: str = "text", show: bool | None = None) -> Any:
    """A tqdm bar that is shown when ``show`` is True, or (``show=None``) when INFO logging is on."""
    from tqdm.auto import tqdm

    if show is None:
        show = logger.isEnabledFor(logging.INFO)
    return tqdm(total=total, desc=desc, unit=unit, disable=not show)


def map_sorted(fn: Callable[[list[int]], Sequence[T]], lengths: Sequence[int], batch_size: int, *,
               bar: Any = None) -> list[T]:
    """``fn`` over :func:`sorted_batches` of ``lengths``; ``fn(rows)`` returns one output per index in
    ``rows`` (in that order). The outputs come back in input order. ``bar`` (e.g. from
    :func:`progress_bar`) is advanced by each batch's size."""
    out: list[Any] = [None] * len(lengths)
    for rows in sorted_batches(lengths, batch_size):
        values = fn(rows)
        if len(values) != len(rows):
            raise ValueError(f"batch function returned {len(values)} outputs for {len(rows)} inputs")
        for i, v in zip(rows, values, strict=True):
            out[i] = v
        if bar is not None:
            bar.update(len(rows))
    return out


def map_sorted_array(fn: Callable[[list[int]], np.ndarray], lengths: Sequence[int], batch_size: int, *,
                     out: np.ndarray | None = None, width: int | None = None, dtype: Any = np.float32,
                     bar: Any = None) -> np.ndarray:
    """Like :func:`map_sorted` for an ``fn`` returning an array with one row (or one value) per index:
    the rows in input order, written into ``out`` (e.g. a slice of a larger array) or into a new array of
    ``dtype``, ``(n, width)`` or, without ``width``, ``(n,)``."""
    if out is None:
        out = np.empty((len(lengths),) if width is None else (len(lengths), width), dtype=dtype)
    elif len(out) != len(lengths):
        raise ValueError(f"out has {len(out)} rows for {len(lengths)} inputs")
    for rows in sorted_batches(lengths, batch_size):
        values = fn(rows)
        if len(values) != len(rows):
            raise ValueError(f"batch function returned {len(values)} rows for {len(rows)} inputs")
        out[rows] = values
        if bar is not None:
            bar.update(len(rows))
    return out
