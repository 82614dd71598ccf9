"""The one TREC run reader and writer (:mod:`uniret.trec`): round trip, trec_eval order, errors."""

from __future__ import annotations

import pytest

from uniret.trec import format_trec_run, parse_trec_run, read_trec_run, write_trec_run


def test_round_trip_in_trec_eval_order(tmp_path):
    run = {"q1": {"d1": 0.5, "d2": 1.5, "d3": 0.5}, "q2": {"d9": -1.25}, "q3": {}}
    path = write_trec_run(run, tmp_path / "run.trec", tag="my run")
    lines = path.read_text().splitlines()
    assert lines == ["q1 Q0 d2 1 1.500000 my_run", "q1 Q0 d3 2 0.500000 my_run", "q1 Q0 d1 3 0.500000 my_run",
                     "q2 Q0 d9 1 -1.250000 my_run"]
    assert read_trec_run(path) == {"q1": run["q1"], "q2": run["q2"]}  # a query without hits has no line
    assert not list(tmp_path.glob("*.tmp"))
    assert list(format_trec_run({"q": {"a": 1 / 3}}, digits=3)) == ["q Q0 a 1 0.333 uniret"]


def test_eval_report_reexports_the_kernel_reader_and_writer():
    from uniret.eval import report
    from uniret.trec import read_trec_run as reader
    from uniret.trec import write_trec_run as writer

    assert report.read_trec_run is reader and report.write_trec_run is writer


def test_parse_errors_name_the_line():
    assert parse_trec_run(["", "q Q0 d 1 2.5 t", "   ", "q Q0 d 2 3.0 t"]) == {"q": {"d": 3.0}}  # last wins
    with pytest.raises(ValueError, match="run.trec:2: expected 6 fields"):
        parse_trec_run(["q Q0 d 1 2.5 t", "q Q0 d 1 2.5"], "run.trec")
    with pytest.raises(ValueError, match="<run>:1: the score .* 'high'"):
        parse_trec_run(["q Q0 d 1 high t"])


def test_whitespace_ids_round_trip_percent_encoded(tmp_path):
    from uniret.trec import read_trec_run, write_trec_run

    run = {"q 1": {"Geneva Durben": 2.0, "100%": 1.0, "plain": 0.5}}
    path = write_trec_run(run, tmp_path / "run.trec")
    lines = path.read_text().splitlines()
    assert lines[0].split() == ["q%201", "Q0", "Geneva%20Durben", "1", "2.000000", "uniret"]
    assert lines[1].split()[2] == "100%25" and lines[2].split()[2] == "plain"
    assert read_trec_run(path) == run
