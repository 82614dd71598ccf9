"""Cheap evaluation (issue 11): downsampling a corpus to judged documents + pooled hard negatives, and the rank
agreement of systems between the full and the downsampled corpus."""

from __future__ import annotations

import json
import random

import pytest

from uniret.data import BeirDataset, Corpus, Document, Qrels, Queries, load_beir
from uniret.errors import DataFormatError
from uniret.eval.cheap import downsample, kendall_tau_b, pool, rank_agreement, spearman


def toy() -> BeirDataset:
    """12 documents d00..d11; test judges q1 (d01 relevant, d02 judged 0) and q2 (d05); train judges q3 (d09)."""
    corpus = Corpus.from_documents([Document(f"d{i:02d}", f"text {i}") for i in range(12)])
    queries = Queries({"q1": "one", "q2": "two", "q3": "three"})
    qrels = {"test": Qrels({"q1": {"d01": 1, "d02": 0}, "q2": {"d05": 2}}, split="test"),
             "train": Qrels({"q3": {"d09": 1}}, split="train")}
    return BeirDataset("/nonexistent/toy", corpus, queries, {}, name="toy", qrels=qrels)


RUN_A = {"q1": {"d03": 9.0, "d04": 8.0, "d01": 7.0, "d11": 1.0}, "q2": {"d06": 5.0, "d07": 4.0},
         "q3": {"d10": 3.0}}  # q3 is a train query: never pooled for the test split
RUN_B = {"q1": {"d08": 2.0, "d03": 1.0}, "q2": {"d00": 0.5}}


def test_downsample_keeps_the_judged_documents_and_each_runs_top_k_in_corpus_order() -> None:
    small = downsample(toy(), {"a": RUN_A, "b": RUN_B}, k=2)
    # judged: d01 d02 d05; a's top 2: d03 d04 (q1), d06 d07 (q2); b's: d08 d03 (q1), d00 (q2)
    assert small.corpus.ids == ["d00", "d01", "d02", "d03", "d04", "d05", "d06", "d07", "d08"]
    assert [d.text for d in small.corpus] == [f"text {i}" for i in range(9)]
    assert list(small.queries) == ["q1", "q2"]  # the split's judged queries only
    assert small.splits == ["test"]
    assert small.qrels("test").judgements == {"q1": {"d01": 1, "d02": 0}, "q2": {"d05": 2}}
    assert small.name == "toy-cheap-k2"
    # k=1 keeps less; the train split pools q3 only
    assert downsample(toy(), {"a": RUN_A}, k=1).corpus.ids == ["d01", "d02", "d03", "d05", "d06"]
    assert downsample(toy(), {"a": RUN_A}, k=5, split="train").corpus.ids == ["d09", "d10"]


def test_pool_counts_what_each_run_adds() -> None:
    keep, stats = pool(toy(), {"a": RUN_A, "b": RUN_B}, k=2)
    assert len(keep) == stats["documents"] == 9
    assert stats["judged_documents"] == 3 and stats["full_documents"] == 12
    assert stats["reduction"] == pytest.approx(12 / 9)
    assert stats["runs"]["a"] == {"pooled": 4, "new": 4, "queries_without_hits": 0}
    assert stats["runs"]["b"] == {"pooled": 3, "new": 2, "queries_without_hits": 0}  # d03 came from a


def test_ties_at_the_cut_follow_trec_eval_order_and_the_result_is_deterministic() -> None:
    tied = {"q1": {"d03": 1.0, "d10": 1.0, "d07": 1.0}, "q2": {}}
    # trec_eval order: score desc, then doc id desc -> d10, d07, d03; k=2 keeps d10 and d07
    assert downsample(toy(), {"t": tied}, k=2).corpus.ids == ["d01", "d02", "d05", "d07", "d10"]
    runs = {"a": RUN_A, "b": RUN_B}
    first = downsample(toy(), runs, k=3)
    again = downsample(toy(), dict(reversed(list(runs.items()))), k=3)
    shuffled = {name: {q: dict(random.Random(0).sample(list(h.items()), len(h))) for q, h in run.items()}
                for name, run in runs.items()}
    third = downsample(toy(), shuffled, k=3)
    assert first.corpus.ids == again.corpus.ids == third.corpus.ids
    assert first.corpus.fingerprint == again.corpus.fingerprint == third.corpus.fingerprint


def test_bad_input_is_refused_with_a_clear_message() -> None:
    ds = toy()
    with pytest.raises(DataFormatError, match="split 'dev' not found.*test, train"):
        downsample(ds, {"a": RUN_A}, split="dev")
    for k in (0, -3, True, 2.5):
        with pytest.raises(ValueError, match="k must be a positive integer"):
            downsample(ds, {"a": RUN_A}, k=k)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no pooling runs"):
        downsample(ds, {}, k=2)
    stray = {"q1": {"d03": 2.0, "elsewhere-7": 1.0}}
    with pytest.raises(DataFormatError, match=r"run 'stray' names document 'elsewhere-7' \(query 'q1'\), which is "
                                              r"not in the corpus"):
        downsample(ds, {"a": RUN_A, "stray": stray}, k=2)
    # a stray document below the cut is not pooled, so it is not an error
    assert "elsewhere-7" not in downsample(ds, {"stray": stray}, k=1).corpus


def test_a_run_missing_queries_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING"):
        downsample(toy(), {"partial": {"q1": {"d03": 1.0}}}, k=2)
    assert "pooling run 'partial' has no hits for 1 of the 2 test queries" in caplog.text


# -- rank agreement --------------------------------------------------------------------------------------------

def test_rank_agreement_perfect_reversed_and_tied() -> None:
    full = {"bm25": 0.67, "dense": 0.64, "hybrid": 0.70, "sparse": 0.60}
    same_order = {"bm25": 0.80, "dense": 0.75, "hybrid": 0.81, "sparse": 0.74}  # other values, same ranking
    out = rank_agreement(full, same_order)
    assert out["spearman"] == pytest.approx(1.0) and out["kendall"] == pytest.approx(1.0)
    assert out["same_best"] and out["pairs_agree"] == 1.0 and out["max_rank_shift"] == 0.0
    assert out["full_order"] == out["cheap_order"] == ["hybrid", "bm25", "dense", "sparse"]
    assert out["systems"] == 4

    reversed_ = {"bm25": 0.2, "dense": 0.3, "hybrid": 0.1, "sparse": 0.4}
    out = rank_agreement(full, reversed_)
    assert out["spearman"] == pytest.approx(-1.0) and out["kendall"] == pytest.approx(-1.0)
    assert not out["same_best"] and out["pairs_agree"] == 0.0 and out["max_rank_shift"] == 3.0

    # one swap among four: rho = 1 - 6 * 2 / (4 * 15) = 0.8; tau = (5 - 1) / 6
    swapped = {"bm25": 0.5, "dense": 0.6, "hybrid": 0.9, "sparse": 0.1}
    out = rank_agreement(full, swapped)
    assert out["spearman"] == pytest.approx(0.8) and out["kendall"] == pytest.approx(4 / 6)
    assert out["pairs_agree"] == pytest.approx(5 / 6) and out["max_rank_shift"] == 1.0

    # ties: the cheap corpus cannot tell bm25 from dense; tau-b's denominator is sqrt(6 * 5)
    tied = {"bm25": 0.5, "dense": 0.5, "hybrid": 0.9, "sparse": 0.1}
    out = rank_agreement(full, tied)
    assert out["kendall"] == pytest.approx(5 / (6 * 5) ** 0.5)
    # average ranks (4, 4 -> 2.5, 2.5): rho = pearson([3,2,4,1], [2.5,2.5,4,1])
    assert out["spearman"] == pytest.approx(4.5 / (5 * 4.5) ** 0.5)
    assert out["pairs_agree"] == 1.0  # the tied pair is left out
    assert out["cheap_order"] == ["hybrid", "bm25", "dense", "sparse"]  # ties listed by name


def test_rank_agreement_is_undefined_when_one_side_is_constant(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING"):
        out = rank_agreement({"a": 0.1, "b": 0.2, "c": 0.3}, {"a": 0.5, "b": 0.5, "c": 0.5})
    assert out["spearman"] is None and out["kendall"] is None and out["pairs_agree"] is None
    assert "undefined" in caplog.text


def test_rank_agreement_refuses_mismatched_or_too_few_systems() -> None:
    with pytest.raises(ValueError, match="only in full: c; only in cheap: d"):
        rank_agreement({"a": 1, "b": 2, "c": 3}, {"a": 1, "b": 2, "d": 3})
    with pytest.raises(ValueError, match="at least two systems, got 1"):
        rank_agreement({"a": 1.0}, {"a": 2.0})
    with pytest.raises(ValueError, match="cheap scores must be finite numbers; not for b"):
        rank_agreement({"a": 1.0, "b": 2.0}, {"a": 1.0, "b": float("nan")})


def test_spearman_and_kendall_equal_scipy_with_and_without_ties() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = random.Random(11)
    for trial in range(200):
        n = rng.randint(2, 12)
        levels = rng.choice([3, 5, 1000])  # few levels: many ties
        x = [rng.randrange(levels) / levels for _ in range(n)]
        y = [rng.randrange(levels) / levels for _ in range(n)]
        if len(set(x)) == 1 or len(set(y)) == 1:
            assert spearman(x, y) is None and kendall_tau_b(x, y) is None
            continue
        assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12), (trial, x, y)
        assert kendall_tau_b(x, y) == pytest.approx(stats.kendalltau(x, y).statistic, abs=1e-12), (trial, x, y)


# -- the command line ------------------------------------------------------------------------------------------

def test_uniret_downsample_writes_a_beir_directory_that_loads(tmp_path, capsys) -> None:
    from uniret.cli import main, parse_named_runs
    from uniret.data import save_beir
    from uniret.trec import write_trec_run

    data = save_beir(toy(), tmp_path / "toy")
    write_trec_run(RUN_A, tmp_path / "a.trec")
    (tmp_path / "reports" / "b").mkdir(parents=True)
    write_trec_run(RUN_B, tmp_path / "reports" / "b" / "run.trec")
    out = tmp_path / "cheap"
    assert main(["downsample", "--data", str(data), "--run", f"a={tmp_path / 'a.trec'}",
                 "--run", str(tmp_path / "reports" / "b"), "-k", "2", "--output-dir", str(out)]) == 0
    assert "kept 9 of 12 documents (1.3x fewer)" in capsys.readouterr().out
    small = load_beir(out)
    assert small.corpus.ids == downsample(toy(), {"a": RUN_A, "b": RUN_B}, k=2).corpus.ids
    assert small.qrels("test").judgements == toy().qrels("test").judgements
    stats = json.loads((out / "downsample.json").read_text())
    assert stats["k"] == 2 and stats["documents"] == 9 and list(stats["runs"]) == ["a", "b"]
    assert stats["corpus_fingerprint"] == small.corpus.fingerprint
    # a rerun replaces its own output; a bad split or a missing run file is a clear error (exit 2)
    assert main(["downsample", "--data", str(data), "--run", f"a={tmp_path / 'a.trec'}", "-k", "1",
                 "--output-dir", str(out)]) == 0
    assert load_beir(out).corpus.ids == ["d01", "d02", "d03", "d05", "d06"]
    assert main(["downsample", "--data", str(data), "--run", str(tmp_path / "a.trec"), "--split", "dev",
                 "--output-dir", str(tmp_path / "x")]) == 2
    assert "split 'dev' not found" in capsys.readouterr().err
    assert main(["downsample", "--data", str(data), "--run", f"z={tmp_path / 'nope.trec'}",
                 "--output-dir", str(tmp_path / "x")]) == 2
    assert "run 'z': no TREC run file" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    assert parse_named_runs(["x/run.trec", "b.trec", "n=p.trec"]) == {"x": "x/run.trec", "b": "b.trec", "n": "p.trec"}
    with pytest.raises(ValueError, match="two runs are named 'b'"):
        parse_named_runs(["b.trec", "b=c.trec"])


# -- end to end on a real SciFact slice ------------------------------------------------------------------------

@pytest.mark.java
def test_scifact_slice_bm25_and_minilm_on_the_downsampled_corpus(scifact, minilm) -> None:
    """Pool BM25 + MiniLM at k=3 on 12 SciFact queries over 100 documents, then re-index both on the small corpus:
    every judged document and each run's top 3 stay; the dense model keeps its document scores (they do not depend
    on the corpus), so its relevant documents can only move up."""
    from uniret.eval.metrics import evaluate
    from uniret.index.faiss_index import FaissIndex
    from uniret.index.lucene import LuceneBM25Index
    from uniret.scores import top_k

    ds = scifact.sample(num_queries=12, num_docs=100, split="test")
    queries, qrels = ds.split_queries("test"), ds.qrels("test").judgements

    def run_on(corpus: Corpus) -> dict[str, dict]:
        out = {}
        for name, backend in (("bm25", LuceneBM25Index()), ("dense", FaissIndex(minilm))):
            backend.index(corpus)
            out[name] = backend.search(queries, k=100)
        return out

    full_runs = run_on(ds.corpus)
    small = downsample(ds, full_runs, k=3)
    kept = small.corpus.id_set
    assert {d for docs in qrels.values() for d in docs} <= kept
    assert all(set(top_k(run[q], 3)) <= kept for run in full_runs.values() for q in queries)
    assert len(small.corpus) < len(ds.corpus) and small.qrels("test").judgements == qrels
    assert small.corpus.ids == [d for d in ds.corpus.ids if d in kept]
    cheap_runs = run_on(small.corpus)
    full = {n: evaluate(qrels, r, ["ndcg@10"])["ndcg@10"] for n, r in full_runs.items()}
    cheap = {n: evaluate(qrels, r, ["ndcg@10"])["ndcg@10"] for n, r in cheap_runs.items()}
    for q in queries:  # dense: the same scores for the documents kept (to the float noise of batching)
        assert set(cheap_runs["dense"][q]) == kept
        for d, score in cheap_runs["dense"][q].items():
            if d in full_runs["dense"][q]:
                assert score == pytest.approx(full_runs["dense"][q][d], abs=1e-4)
    assert cheap["dense"] >= full["dense"] - 1e-6
    agreement = rank_agreement(full, cheap)
    assert agreement["systems"] == 2 and agreement["full_order"] == sorted(full, key=lambda n: -full[n])
