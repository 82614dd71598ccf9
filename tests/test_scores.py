"""The kernel's score helpers (:mod:`uniret.scores`) against hand computations: the trec_eval tie order,
the one normaliser and its convention for all-equal scores, and RRF / interpolation fusion."""

from __future__ import annotations

import math

import pytest

from uniret.scores import fuse_hits, fuse_runs, normalize, ranked, top_k


def test_ranked_is_trec_eval_order():
    hits = {"a": 1.0, "c": 2.0, "b": 1.0, "d": 1.0, "e": 0.5}
    assert ranked(hits) == [("c", 2.0), ("d", 1.0), ("b", 1.0), ("a", 1.0), ("e", 0.5)]
    assert list(top_k(hits, 3)) == ["c", "d", "b"] and list(top_k(hits, None)) == ["c", "d", "b", "a", "e"]
    assert ranked({}) == []


def test_minmax_by_hand_and_constant_scores_become_one():
    assert normalize([2.0, 4.0, 3.0, 6.0], "minmax") == pytest.approx([0.0, 0.5, 0.25, 1.0])
    assert normalize([7.0, 7.0], "minmax") == [1.0, 1.0]
    assert normalize([-3.0], "minmax") == [1.0]  # a single hit is the top of its list
    assert normalize([], "minmax") == []
    assert normalize({"x": 5.0, "a": 5.0}) == {"x": 1.0, "a": 1.0}
    out = normalize({"b": 1.0, "a": 3.0, "c": 2.0})
    assert out == {"b": 0.0, "a": 1.0, "c": 0.5} and list(out) == ["b", "a", "c"]  # keys keep their order


def test_zscore_by_hand_and_constant_scores_become_zero():
    scores = [1.0, 2.0, 3.0, 6.0]
    std = math.sqrt(((1 - 3) ** 2 + (2 - 3) ** 2 + 0 + (6 - 3) ** 2) / 4)  # population std
    assert normalize(scores, "zscore") == pytest.approx([(s - 3.0) / std for s in scores])
    assert normalize([4.0, 4.0, 4.0], "zscore") == [0.0, 0.0, 0.0]
    assert normalize({"a": 2.0}, "zscore") == {"a": 0.0}
    assert normalize([1.0, 5.0], "none") == [1.0, 5.0]
    with pytest.raises(ValueError, match="minmax, zscore, none"):
        normalize([1.0], "softmax")


def test_rrf_ranks_ties_in_trec_eval_order():
    a = {"x": 1.0, "y": 1.0, "z": 2.0}  # order z, y, x
    b = {"x": 0.3}
    fused = fuse_hits([a, b], "rrf", rrf_k=10)
    assert fused == pytest.approx({"z": 1 / 11, "y": 1 / 12, "x": 1 / 13 + 1 / 11})
    weighted = fuse_hits([a, b], "rrf", [2.0, 0.5], rrf_k=10)
    assert weighted["x"] == pytest.approx(2 / 13 + 0.5 / 11)


def test_interpolation_by_hand():
    a = {"x": 3.0, "y": 2.0, "z": 1.0}
    b = {"y": 0.9, "w": 0.5}
    lin = fuse_hits([a, b], "interpolate", [0.25, 0.75])
    assert lin == pytest.approx({"x": 0.25, "y": 0.25 * 0.5 + 0.75, "z": 0.0, "w": 0.0})
    assert fuse_hits([{"only": 4.0}, b], "interpolate", [0.5, 0.5]) == pytest.approx({"only": 0.5, "y": 0.5,
                                                                                       "w": 0.0})
    z = fuse_hits([a], "interpolate", normalization="zscore")
    assert z == pytest.approx(dict(zip(a, normalize(list(a.values()), "zscore"), strict=True)))


def test_fuse_runs_keeps_every_query_and_checks_arguments():
    runs = [{"q1": {"a": 1.0}, "q2": {}}, {"q3": {"b": 2.0}}]
    fused = fuse_runs(runs, "interpolate")
    assert fused == {"q1": {"a": 1.0}, "q2": {}, "q3": {"b": 1.0}}
    with pytest.raises(ValueError, match="rrf, interpolate"):
        fuse_runs(runs, "combsum")
    with pytest.raises(ValueError, match="1 weights for 2 runs"):
        fuse_runs(runs, weights=[1.0])
    with pytest.raises(ValueError, match="unknown normalisation"):
        fuse_hits([{"a": 1.0}], "interpolate", normalization="rank")
