"""The one length-sorted batching loop (:mod:`uniret.retriever.batching`)."""

from __future__ import annotations

import numpy as np
import pytest

from uniret.retriever.batching import map_sorted, map_sorted_array, sorted_batches


def test_batches_run_longest_first_and_keep_ties_in_input_order():
    lengths = [3, 7, 3, 1, 7, 5]
    assert list(sorted_batches(lengths, 2)) == [[1, 4], [5, 0], [2, 3]]
    assert list(sorted_batches([], 4)) == []
    with pytest.raises(ValueError, match="batch_size"):
        list(sorted_batches(lengths, 0))


def test_map_sorted_restores_input_order_and_counts_progress():
    texts = ["ccc", "a", "bbbbb", "dd", "", "eeee"]
    seen: list[list[int]] = []

    class Bar:
        n = 0

        def update(self, k):
            self.n += k

    def upper(rows):
        seen.append(rows)
        return [texts[i].upper() for i in rows]

    bar = Bar()
    assert map_sorted(upper, [len(t) for t in texts], 4, bar=bar) == [t.upper() for t in texts]
    assert seen == [[2, 5, 0, 3], [1, 4]] and bar.n == 6
    with pytest.raises(ValueError, match="1 outputs for 2 inputs"):
        map_sorted(lambda rows: [0], [1, 2], 2)


def test_map_sorted_array_writes_rows_in_input_order():
    lengths = [2, 9, 4, 4, 1]
    out = map_sorted_array(lambda rows: np.array([[i, 10 * i] for i in rows], dtype=np.float32), lengths, 2, width=2)
    np.testing.assert_array_equal(out, np.array([[i, 10 * i] for i in range(5)], dtype=np.float32))
    big = np.zeros(7, dtype=np.float64)
    map_sorted_array(lambda rows: np.asarray(rows, dtype=np.float64) + 1, lengths, 3, out=big[1:6])
    np.testing.assert_array_equal(big, [0, 1, 2, 3, 4, 5, 0])
    assert map_sorted_array(lambda rows: np.zeros(len(rows)), [], 3).shape == (0,)
