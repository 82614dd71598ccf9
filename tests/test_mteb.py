"""The MTEB adapter (:mod:`uniret.eval.mteb_adapter`): a local BEIR slice as an offline mteb task; mteb's
nDCG@10 for a uniret backend, and for the encoder searched by mteb itself, equals uniret's own evaluation within
1e-4; ``uniret eval --mteb`` writes the same report keys."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("mteb")


@pytest.fixture(scope="module")
def small(scifact):
    return scifact.sample(num_queries=15, num_docs=120, split="test", seed=3)


@pytest.fixture(scope="module")
def ours(small, minilm):
    from uniret.eval.runner import evaluate_backend
    from uniret.index.faiss_index import FaissIndex

    return evaluate_backend(FaissIndex(minilm, "flat"), small, split="test").metrics


def test_mteb_scores_a_uniret_backend_like_uniret(small, minilm, ours):
    from uniret.eval.mteb_adapter import BackendSearch, evaluate_with_mteb
    from uniret.index.faiss_index import FaissIndex

    result = evaluate_with_mteb(BackendSearch(FaissIndex(minilm, "flat"), "dense"), small)
    assert result["task"].startswith("UniretLocal") and result["depth"] == 1000
    for key in ("ndcg@10", "recall@100", "mrr@10", "map@100"):
        assert result["metrics"][key] == pytest.approx(ours[key], abs=1e-4), key


@pytest.mark.slow  # mteb embeds and searches itself: slower, and the backend test already checks agreement
def test_mteb_searching_with_the_encoder_agrees(small, minilm, ours):
    from uniret.eval.mteb_adapter import DenseEncoderModel, evaluate_with_mteb

    result = evaluate_with_mteb(DenseEncoderModel(minilm), small)
    assert result["metrics"]["ndcg@10"] == pytest.approx(ours["ndcg@10"], abs=1e-4)


def test_uniret_eval_mteb_writes_the_same_report_keys(small, tmp_path):
    from uniret.cli import main
    from uniret.data import save_beir

    data = tmp_path / "slice"
    save_beir(small, data)
    ours_dir, mteb_dir = tmp_path / "ours", tmp_path / "mteb"
    args = ["-q", "eval", "--data", str(data), "--retriever", "dense", "--max-length", "128"]
    assert main([*args, "--output-dir", str(ours_dir)]) == 0
    assert main([*args, "--mteb", "--output-dir", str(mteb_dir)]) == 0
    a, b = (json.loads((d / "report.json").read_text()) for d in (ours_dir, mteb_dir))
    assert set(a) <= set(b) | {"per_query"}
    assert b["settings"]["evaluator"].startswith("mteb")
    assert b["metrics"]["ndcg@10"] == pytest.approx(a["metrics"]["ndcg@10"], abs=1e-4)
    assert (mteb_dir / "run.trec").is_file()
    assert main([*args, "--mteb", "--rerank", "x", "--output-dir", str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad").exists()
