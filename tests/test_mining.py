"""Hard-negative mining: each filter on hand-made candidate lists, sampling, fusion, the config, mining
through real index backends (FAISS with a stand-in encoder; Lucene BM25 on a SciFact train slice)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from conftest import HashEncoder
from uniret.data import BeirDataset, Corpus, Document, Qrels, Queries
from uniret.train.mining import (
    Candidate,
    MiningConfig,
    apply_filters,
    filter_absolute,
    filter_rank,
    filter_relative,
    filter_teacher,
    fuse_runs,
    mine,
    rank_candidates,
    run_mining,
    sample_negatives,
)
from uniret.train.records import read_records
from uniret.train.teachers import BaseTeacher

HITS = {"p": 12.0, "a": 10.0, "b": 9.6, "c": 9.0, "d": 5.0, "e": 1.0}


def ids(cands):
    return [c.doc_id for c in cands]


@pytest.fixture
def cands():
    return rank_candidates(HITS, exclude={"p"})


def test_rank_candidates_drops_excluded_and_ranks_from_one(cands):
    assert cands == [Candidate("a", 10.0, 1), Candidate("b", 9.6, 2), Candidate("c", 9.0, 3),
                     Candidate("d", 5.0, 4), Candidate("e", 1.0, 5)]
    assert ids(rank_candidates({"y": 1.0, "x": 1.0, "z": 2.0})) == ["z", "y", "x"]  # ties: id descending (trec_eval)


def test_absolute_margin(cands):
    kept, removed = filter_absolute(cands, positive_score=9.8, margin=0.0)
    assert ids(kept) == ["b", "c", "d", "e"] and ids(removed) == ["a"]
    kept, removed = filter_absolute(cands, positive_score=9.8, margin=1.0)  # drop score > 8.8
    assert ids(kept) == ["d", "e"] and ids(removed) == ["a", "b", "c"]
    assert filter_absolute(cands, None, 0.0) == (cands, [])


def test_relative_margin(cands):
    kept, removed = filter_relative(cands, positive_score=9.8, ratio=0.95)  # drop score > 9.31
    assert ids(kept) == ["c", "d", "e"] and ids(removed) == ["a", "b"]
    kept, removed = filter_relative(cands, positive_score=10.0, ratio=0.5)  # drop score > 5.0
    assert ids(kept) == ["d", "e"] and ids(removed) == ["a", "b", "c"]
    assert filter_relative(cands, None, 0.95) == (cands, [])


def test_rank_window(cands):
    kept, removed = filter_rank(cands, min_rank=2, max_rank=4)
    assert ids(kept) == ["b", "c", "d"] and ids(removed) == ["a", "e"]
    kept, removed = filter_rank(cands, min_rank=3)
    assert ids(kept) == ["c", "d", "e"] and ids(removed) == ["a", "b"]


def test_teacher_threshold_and_margin(cands):
    teacher = {"a": 0.9, "b": 0.2, "c": 0.85, "d": 0.1, "e": 0.3}
    kept, removed = filter_teacher(cands, teacher, teacher_positive=0.8, margin=0.0)
    assert ids(kept) == ["b", "d", "e"] and ids(removed) == ["a", "c"]
    kept, removed = filter_teacher(cands, teacher, teacher_positive=0.8, threshold=0.25)
    assert ids(kept) == ["b", "d"] and ids(removed) == ["a", "c", "e"]
    kept, removed = filter_teacher(cands, teacher, teacher_positive=0.8, threshold=0.5, margin=0.1)  # > 0.5
    assert ids(removed) == ["a", "c"]
    kept, removed = filter_teacher(cands, teacher, teacher_positive=0.8, margin=-0.2)  # > 1.0: none
    assert ids(kept) == ids(cands) and removed == []


def test_filter_chain_counts_in_order(cands):
    config = MiningConfig(filter="rank,relative", min_rank=2, relative_margin=0.95)
    kept, removed = apply_filters(cands, config, positive_score=9.8)
    assert ids(kept) == ["c", "d", "e"] and removed == {"rank": 1, "relative": 1}  # 'a' goes to rank first
    kept, removed = apply_filters(cands, MiningConfig(filter="none"))
    assert kept == cands and removed == {"none": 0}


def test_sampling_top_and_seeded_random():
    cands = rank_candidates({f"d{i}": 100.0 - i for i in range(30)})
    assert ids(sample_negatives(cands, 3, "top")) == ["d0", "d1", "d2"]
    first = sample_negatives(cands, 5, "random", random.Random("7:q1"))
    again = sample_negatives(cands, 5, "random", random.Random("7:q1"))
    other = sample_negatives(cands, 5, "random", random.Random("8:q1"))
    assert first == again and first != other
    assert [c.rank for c in first] == sorted(c.rank for c in first) and set(first) <= set(cands)
    assert len(sample_negatives(cands[:2], 5, "random", random.Random(0))) == 2
    with pytest.raises(ValueError, match="top, random"):
        sample_negatives(cands, 1, "hardest")


def test_fuse_runs_rrf_and_interpolation_by_hand():
    a = {"q": {"x": 3.0, "y": 2.0, "z": 1.0}}
    b = {"q": {"y": 0.9, "w": 0.5}}
    rrf = fuse_runs([a, b], "rrf", rrf_k=60)["q"]
    assert rrf == pytest.approx({"x": 1 / 61, "y": 1 / 62 + 1 / 61, "z": 1 / 63, "w": 1 / 62})
    lin = fuse_runs([a, b], "interpolate", weights=[0.25, 0.75])["q"]
    assert lin == pytest.approx({"x": 0.25, "y": 0.25 * 0.5 + 0.75, "z": 0.0, "w": 0.0})
    import uniret.scores

    assert fuse_runs is uniret.scores.fuse_runs  # mining fuses with the kernel's one function
    with pytest.raises(ValueError, match="rrf, interpolate"):
        fuse_runs([a], "combsum")


def test_config_validation_names_the_field():
    for kwargs, field in [({"retriever": "colbert"}, "retriever"), ({"filter": "relative,magic"}, "filter"),
                          ({"sampling": "hard"}, "sampling"), ({"min_rank": 5, "max_rank": 2}, "max_rank"),
                          ({"teachers": ["bm25"], "teacher_weights": [1.0, 2.0]}, "teacher_weights"),
                          ({"filter": "teacher", "teacher_margin": None}, "teacher_margin"),
                          ({"positive_score": "mean"}, "positive_score")]:
        with pytest.raises(ValueError, match=f"MiningConfig.{field}"):
            MiningConfig(**kwargs)


def test_config_from_yaml_mapping(tmp_path):
    from uniret.config import load_config, to_dict

    path = tmp_path / "mine.yaml"
    path.write_text("retriever: hybrid\nfilter: rank,teacher\nmax_rank: 50\nteachers: [bm25, dense]\n"
                    "teacher_weights: [1, 2]\nnum_negatives: 4\n", encoding="utf-8")
    config = load_config(path, MiningConfig)
    assert config.filters == ["rank", "teacher"] and config.teacher_weights == [1.0, 2.0]
    assert to_dict(config)["max_rank"] == 50


# -- mining through real backends --------------------------------------------------------------------------------

WORDS = "cell gene protein virus tumor brain heart liver blood bone skin lung immune drug dose trial".split()


def toy_dataset(num_docs: int = 40, num_queries: int = 6, seed: int = 0) -> BeirDataset:
    rng = random.Random(seed)
    docs = [Document(f"d{i}", " ".join(rng.choices(WORDS, k=8)), title=f"doc {i}") for i in range(num_docs)]
    queries = Queries({f"q{i}": " ".join(rng.choices(WORDS, k=4)) for i in range(num_queries)})
    if num_queries >= 6:
        queries["q5"] = queries["q4"]  # a repeated query text, as SciFact has
    judgements = {f"q{i}": {f"d{(7 * i) % num_docs}": 1} for i in range(num_queries)}
    judgements["q1"]["d33"] = 1
    judgements["q2"]["d34"] = 0  # judged non-relevant: may be a negative
    qrels = Qrels(judgements, split="train")
    return BeirDataset("/nonexistent", Corpus.from_documents(docs), queries, {}, name="toy", qrels={"train": qrels})


def faiss_backend(data, salt=""):
    from uniret.index.faiss_index import FaissIndex

    index = FaissIndex(HashEncoder(dim=32, salt=salt), "flat", use_gpu=False)
    index.index(data.corpus)
    return index


def test_mine_excludes_positives_and_scores_them_directly():
    data = toy_dataset()
    backend = faiss_backend(data)
    config = MiningConfig(retriever="dense", k=6, filter="none", num_negatives=3)
    records, stats = mine(data, config, backend=backend)
    assert len(records) == 6 and stats["queries"] == 6
    relevant = {q: {d for d, g in j.items() if g > 0} for q, j in data.qrels("train").judgements.items()}
    for r in records:
        assert len(r.negative_ids) == 3 == len(r.negatives) == len(r.negative_scores)
        assert not set(r.negative_ids) & relevant[r.query_id]
        assert r.negative_scores == sorted(r.negative_scores, reverse=True)
        assert len(r.positive_scores) == len(r.positives)
    # the repeated query text: neither query may take the other's positive as a negative
    by_id = {r.query_id: r for r in records}
    assert not set(by_id["q4"].negative_ids) & relevant["q5"] and not set(by_id["q5"].negative_ids) & relevant["q4"]
    # positives outside the top k were scored with the encoder
    enc = backend.encoder
    for r in records:
        q = enc.encode_queries([r.query])[0]
        expected = enc.encode_documents(r.positives) @ q
        assert r.positive_scores == pytest.approx(expected.tolist(), abs=1e-5)
    assert stats["positives_scored_directly"] > 0
    assert stats["candidates"] == stats["kept_after_filters"] and stats["removed"] == {"none": 0}
    assert stats["negatives"] == 18 and stats["queries_short"] == 0


def test_mine_filter_statistics_add_up():
    data = toy_dataset(num_docs=60, num_queries=8)
    backend = faiss_backend(data)
    config = MiningConfig(retriever="dense", k=20, filter="rank,relative", min_rank=2, max_rank=15,
                          relative_margin=0.9, num_negatives=4, sampling="random", seed=3)
    records, stats = mine(data, config, backend=backend)
    assert stats["candidates"] - sum(stats["removed"].values()) == stats["kept_after_filters"]
    assert stats["removed"]["rank"] >= len(records)  # every query loses at least its rank 1
    for r in records:
        limit = 0.9 * min(r.positive_scores)
        assert all(s <= limit + 1e-6 for s in r.negative_scores)
    again, _ = mine(data, config, backend=backend)
    assert [r.negative_ids for r in again] == [r.negative_ids for r in records]


class TableTeacher(BaseTeacher):
    name = "table"

    def __init__(self, relevant_words: set[str]) -> None:
        self.words = relevant_words
        self.pairs = 0

    def score_pairs(self, queries, docs_per_query):
        self.pairs += sum(len(d) for d in docs_per_query)
        return [[float(len(set(q.split()) & set(d.split()))) for d in docs]
                for q, docs in zip(queries, docs_per_query, strict=True)]


def test_mine_with_teacher_filter_and_teacher_scores():
    data = toy_dataset(num_docs=50, num_queries=6)
    teacher = TableTeacher(set())
    config = MiningConfig(retriever="dense", k=15, filter="teacher", teacher_margin=0.0, num_negatives=3)
    records, stats = mine(data, config, backend=faiss_backend(data), teacher=teacher)
    assert stats["scores"] == "teacher" and stats["removed"]["teacher"] >= 0
    for r in records:
        words = set(r.query.split())
        overlap = [len(words & set(t.split())) for t in r.positives + r.negatives]
        assert r.positive_scores + r.negative_scores == [float(x) for x in overlap]
        assert all(s <= min(r.positive_scores) for s in r.negative_scores)
    # records are written with the cached scores: no pair is scored twice (q4 and q5 share their text)
    assert teacher.pairs <= stats["candidates"] + sum(len(r.positives) for r in records)
    with pytest.raises(ValueError, match="needs a teacher"):
        mine(data, config, backend=faiss_backend(data))


def test_mine_hybrid_fuses_two_backends():
    data = toy_dataset()
    config = MiningConfig(retriever="hybrid", k=8, filter="none", num_negatives=2, fusion="rrf")
    records, stats = mine(data, config, backend=[faiss_backend(data, "a"), faiss_backend(data, "b")])
    assert stats["retriever"] == ["faiss", "faiss"]
    for r in records:
        assert all(0 < s <= 1 / 61 for s in r.negative_scores) and r.positive_scores is not None
    with pytest.raises(ValueError, match="needs 2 backend"):
        mine(data, config, backend=faiss_backend(data))


def test_run_mining_dense_writes_records_and_stats(tmp_path):
    data = toy_dataset(num_docs=20, num_queries=4)
    out = tmp_path / "mined" / "train.jsonl"
    config = MiningConfig(retriever="dense", k=5, num_negatives=2, device="cpu", max_length=32)
    stats = run_mining(data, out, config)
    records = read_records(out)
    assert len(records) == 4 and all(len(r.negative_ids) <= 2 for r in records)
    saved = json.loads(Path(str(out) + ".stats.json").read_text())
    assert saved["removed"] == stats["removed"] and saved["config"]["retriever"] == "dense"
    assert sorted(p.name for p in out.parent.iterdir()) == ["train.jsonl", "train.jsonl.stats.json"]


@pytest.mark.java
def test_bm25_mining_on_scifact_train_slice(scifact, tmp_path):
    data = scifact.sample(num_queries=40, num_docs=400, split="train")
    out = tmp_path / "bm25.jsonl"
    config = MiningConfig(retriever="bm25", k=50, filter="relative", relative_margin=0.95, num_negatives=4)
    stats = run_mining(data, out, config)
    records = read_records(out)
    qrels = data.qrels("train").judgements
    assert len(records) == 40 == stats["queries"]
    texts = {d.id: d.full_text() for d in data.corpus}
    for r in records:
        assert not set(r.negative_ids) & set(qrels[r.query_id])
        assert r.negatives == [texts[d] for d in r.negative_ids]
        assert all(s <= 0.95 * min(r.positive_scores) + 1e-9 for s in r.negative_scores)
    assert stats["removed"]["relative"] > 0 and stats["negatives_above_positive"] > 0
    assert stats["candidates"] - stats["removed"]["relative"] == stats["kept_after_filters"]
    assert stats["removed_alone"]["relative"] == stats["removed"]["relative"]
    assert sum(len(r.negative_ids) for r in records) == stats["negatives"] > 100
    # negatives keep the scores Lucene gave them
    from uniret.index.lucene import LuceneBM25Index

    index = LuceneBM25Index()
    index.index(data.corpus)
    run = index.search({records[0].query_id: records[0].query}, k=50)[records[0].query_id]
    assert records[0].negative_scores == pytest.approx([run[d] for d in records[0].negative_ids])
    assert np.all(np.isfinite(records[0].positive_scores))
