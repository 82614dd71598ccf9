"""Learned sparse models (:mod:`uniret.retriever.splade`) and their regularisers
(:mod:`uniret.train.losses.flops`): pooling and FLOPS / IDF-FLOPS against hand computations, the decoder
variants' attention, the inference-free query side, sentence-transformers round trips, and one training step.
Tiny random decoders for the units; the real SPLADE-tiny on real SciFact text for the round trips."""

from __future__ import annotations

import itertools
import json
import math
import random
import re

import numpy as np
import pytest
import torch

from uniret.retriever.splade import SparseModel, SpladeEncoder, compute_idf, prune, prune_vectors
from uniret.train.losses.flops import (
    FlopsConfig,
    FlopsRegularizer,
    FlopsWarmup,
    flops,
    idf_penalty_weights,
    quadratic_warmup,
)

WORDS = "the a of protein cell gene vitamin study claim cancer risk patients in with drug trial heart".split()


def splade_pool(logits, mask, pooling="max"):
    """The SPLADE pooling our models run (sentence-transformers' ``SpladePooling``, eval mode)."""
    from sentence_transformers.sparse_encoder.modules import SpladePooling

    module = SpladePooling(pooling_strategy=pooling).eval()
    return module({"token_embeddings": logits.clone(), "attention_mask": mask})["sentence_embedding"]


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory):
    """A random 2-layer Llama causal LM (vocabulary head tied) with a word-level tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<unk>": 1, "<s>": 2, "</s>": 3, **{w: i + 4 for i, w in enumerate(WORDS)}}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", pad_token="<pad>", eos_token="</s>",
                                  bos_token="<s>")
    config = AutoConfig.for_model("llama", vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, intermediate_size=64, head_dim=8,
                                  pad_token_id=0, bos_token_id=2, eos_token_id=3, tie_word_embeddings=True)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-llama-lm")
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def splade_tiny():
    return SparseModel.build("splade-tiny", max_length=64, device="cpu")


# -- pooling, pruning, IDF -----------------------------------------------------------------------------------

def test_splade_pooling_matches_a_hand_computation():
    logits = torch.tensor([[[1.0, -2.0, 0.5], [3.0, 0.0, -1.0], [9.0, 9.0, 9.0]]])  # third position is padding
    mask = torch.tensor([[1, 1, 0]])
    f = lambda x: math.log1p(max(x, 0.0))  # noqa: E731
    assert splade_pool(logits, mask, "max")[0].tolist() == pytest.approx([f(3.0), 0.0, f(0.5)])
    assert splade_pool(logits, mask, "sum")[0].tolist() == pytest.approx([f(1.0) + f(3.0), 0.0, f(0.5)])
    with pytest.raises(ValueError, match="'max' or 'sum'"):
        splade_pool(logits, mask, "mean")


def test_pruning_keeps_the_top_k_above_the_threshold_in_id_order():
    rep = torch.tensor([0.0, 0.5, 2.0, 0.05, 1.0, 3.0])
    v = prune(rep)
    assert v.indices.tolist() == [1, 2, 3, 4, 5] and v.values.dtype == np.float32
    v = prune(rep, top_k=2)
    assert v.indices.tolist() == [2, 5] and v.values.tolist() == [2.0, 3.0]
    assert prune(rep, threshold=0.1, top_k=10).indices.tolist() == [1, 2, 4, 5]


def test_pruning_encoded_vectors_equals_encoding_with_pruning(splade_tiny, scifact):
    """``prune_vectors`` on SPLADE-tiny's unpruned vectors of real SciFact documents gives what encoding with
    ``top_k`` / ``threshold`` gives (how a benchmark sweeps top-k without encoding again)."""
    texts = [d.full_text() for d in list(scifact.corpus)[:12]]
    encoder = SpladeEncoder(splade_tiny)
    full = encoder.encode_documents(texts)
    assert np.diff(full.indptr).min() > 40
    for top_k, threshold in ((16, 0.0), (40, 0.5), (None, 1.0)):
        splade_tiny.top_k, splade_tiny.threshold = top_k, threshold
        try:
            direct = encoder.encode_documents(texts)
        finally:
            splade_tiny.top_k, splade_tiny.threshold = None, 0.0
        pruned = prune_vectors(full, top_k=top_k, threshold=threshold)
        assert pruned.indptr.tolist() == direct.indptr.tolist()
        assert pruned.indices.tolist() == direct.indices.tolist()
        np.testing.assert_array_equal(pruned.data, direct.data)
    assert np.diff(prune_vectors(full, top_k=16).indptr).max() == 16
    with pytest.raises(ValueError, match="top_k"):
        prune_vectors(full, top_k=0)

def test_idf_is_bm25s_idf_over_the_corpus(tiny_llm):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llm)
    texts = ["the protein", "the cell the", "vitamin"]
    idf = compute_idf(tok, texts, len(tok))
    bm25_idf = lambda df: math.log(1 + (3 - df + 0.5) / (df + 0.5))  # noqa: E731
    vocab = tok.get_vocab()
    assert idf[vocab["the"]].item() == pytest.approx(bm25_idf(2))  # counted once per document
    assert idf[vocab["protein"]].item() == pytest.approx(bm25_idf(1))
    assert idf[vocab["gene"]].item() == pytest.approx(bm25_idf(0))  # never seen: the largest weight


# -- FLOPS --------------------------------------------------------------------------------------------------

def test_flops_and_idf_aware_flops_match_hand_computations():
    reps = torch.tensor([[1.0, 0.0, 2.0], [3.0, 0.0, 0.0]])
    # mean |w| per term: [2, 0, 1] -> squares [4, 0, 1]
    assert flops(reps).item() == pytest.approx(5.0)
    idf = torch.tensor([0.5, 1.0, 2.0])
    w = idf_penalty_weights(idf)  # 1/idf = [2, 1, 0.5], mean 7/6
    assert w.tolist() == pytest.approx([12 / 7, 6 / 7, 3 / 7])
    assert flops(reps, w).item() == pytest.approx(4 * 12 / 7 + 1 * 3 / 7)
    # a low-IDF (frequent) term costs more than a high-IDF one of the same weight
    assert flops(torch.tensor([[1.0, 0.0, 0.0]]), w) > flops(torch.tensor([[0.0, 0.0, 1.0]]), w)


def test_regularizer_weights_queries_and_documents_separately_and_skips_padding():
    q = torch.tensor([[1.0, 1.0]], requires_grad=True)
    d = torch.tensor([[2.0, 0.0], [0.0, 0.0], [100.0, 100.0]])  # the last document is padding
    valid = torch.tensor([True, True, False])
    reg = FlopsRegularizer(FlopsConfig(query_weight=0.5, document_weight=0.1))
    loss, logs = reg(q, d, valid)
    # queries: mean [1, 1] -> 2; documents (first two): mean [1, 0] -> 1
    assert loss.item() == pytest.approx(0.5 * 2 + 0.1 * 1)
    assert logs["flops_q"] == pytest.approx(2.0) and logs["flops_d"] == pytest.approx(1.0)
    assert logs["nnz_d"] == pytest.approx(0.5) and logs["nnz_q"] == pytest.approx(2.0)
    frozen = FlopsRegularizer(FlopsConfig(query_weight=0.5, document_weight=0.1), queries_trainable=False)
    assert frozen(q, d, valid)[0].item() == pytest.approx(0.1)
    with pytest.raises(ValueError, match="needs IDF weights"):
        FlopsRegularizer(FlopsConfig(document_weight=0.1, idf_aware=True))
    with pytest.raises(ValueError, match="flops.query_weight must be >= 0"):
        FlopsConfig(query_weight=-1.0)


def test_quadratic_warmup_callback_follows_the_step():
    assert [quadratic_warmup(s, 4) for s in (0, 1, 2, 4, 9)] == [0.0, 1 / 16, 0.25, 1.0, 1.0]
    assert quadratic_warmup(0, 0) == 1.0
    reg = FlopsRegularizer(FlopsConfig(document_weight=1.0, warmup_steps=4))
    assert reg.scale == 0.0
    cb = FlopsWarmup(reg)

    class _Trainer:
        step = 2  # a resumed run starts at its checkpoint's step

    cb.on_train_start(_Trainer())
    assert reg.scale == 0.25
    cb.on_step_end(_Trainer(), 3, {})
    assert reg.scale == pytest.approx(9 / 16)


# -- the decoder variants ---------------------------------------------------------------------------------

def test_echo_pools_only_the_second_copy_and_sees_the_whole_text(tiny_llm):
    echo = SparseModel.build(tiny_llm, variant="echo", max_length=16, device="cpu")
    feats = echo.tokenize(["protein cell gene", "vitamin"])
    assert feats["input_ids"][0].tolist()[:6] == feats["input_ids"][0].tolist()[:3] * 2
    assert feats["pool_mask"].tolist() == [[0, 0, 0, 1, 1, 1], [0, 1, 0, 0, 0, 0]]
    assert feats["attention_mask"].tolist() == [[1] * 6, [1, 1, 0, 0, 0, 0]]
    # the pooled output equals SPLADE pooling of the LM's logits over the second copy only
    with torch.no_grad():
        logits = echo._lm().auto_model(input_ids=feats["input_ids"], attention_mask=feats["attention_mask"]).logits
        expected = splade_pool(logits, feats["pool_mask"], "max")
        got = echo.forward(echo.tokenize(["protein cell gene", "vitamin"]))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert feats["attention_mask"].tolist()[0] == [1] * 6  # forward left the caller's features unchanged


def _first_position_logits(model, text):
    lm = model._lm()
    feats = lm.preprocess([text])
    out = lm.forward(feats)
    return out["token_embeddings"][0, 0]


@pytest.mark.parametrize("variant, first_sees_last", [("bidirectional", True), ("echo", False)])
def test_bidirectional_makes_the_first_token_see_later_ones_and_echo_stays_causal(tiny_llm, variant,
                                                                                    first_sees_last):
    model = SparseModel.build(tiny_llm, variant=variant, max_length=16, device="cpu")
    with torch.no_grad():
        a = _first_position_logits(model, "protein cell gene")
        b = _first_position_logits(model, "protein cell drug")
    assert (not torch.allclose(a, b, atol=1e-6)) == first_sees_last


def test_echo_second_copy_sees_the_last_token(tiny_llm):
    model = SparseModel.build(tiny_llm, variant="echo", max_length=16, device="cpu")
    lm = model._lm()
    with torch.no_grad():
        a = lm.forward(lm.preprocess(["protein cell gene"]))["token_embeddings"][0, 3]  # copy 2, first token
        b = lm.forward(lm.preprocess(["protein cell drug"]))["token_embeddings"][0, 3]
    assert not torch.allclose(a, b, atol=1e-6)


def test_variant_must_fit_the_backbone(tiny_llm):
    with pytest.raises(ValueError, match="decoder-only LM: choose variant 'echo' or 'bidirectional'"):
        SparseModel.build(tiny_llm, device="cpu")
    with pytest.raises(ValueError, match="does not fit"):
        SparseModel.build(tiny_llm, variant="mlm", device="cpu")
    with pytest.raises(ValueError, match="does not fit"):
        SparseModel.build("splade-tiny", variant="echo", device="cpu")
    with pytest.raises(ValueError, match="unknown sparse variant"):
        SparseModel.build(tiny_llm, variant="mirror", device="cpu")


@pytest.mark.parametrize("variant", ["echo", "bidirectional"])
def test_decoder_model_saves_and_loads_with_sentence_transformers(tiny_llm, variant, tmp_path):
    from sentence_transformers import SparseEncoder

    model = SparseModel.build(tiny_llm, variant=variant, max_length=16, device="cpu")
    texts = ["protein cell gene", "vitamin study of the heart"]
    with torch.no_grad():
        ours = model.forward(model.tokenize(texts))
    path = model.save(tmp_path / "m")
    assert json.loads((path / "uniret_sparse.json").read_text())["variant"] == variant
    ref = SparseEncoder(str(path), device="cpu", trust_remote_code=True)
    theirs = ref.encode_document(texts, convert_to_tensor=True, convert_to_sparse_tensor=False)
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-6)
    again = SpladeEncoder(path, device="cpu")
    assert again.identity["variant"] == variant and again.identity["path"] == str(path)
    vecs = again.encode_documents(texts)
    dense = np.zeros((2, again.vocab_size), dtype=np.float32)
    for i in range(2):
        lo, hi = vecs.indptr[i], vecs.indptr[i + 1]
        dense[i, vecs.indices[lo:hi]] = vecs.data[lo:hi]
    np.testing.assert_allclose(dense, ours.numpy(), atol=1e-5)


def test_a_decoder_model_saved_before_the_module_moved_still_loads(tiny_llm, tmp_path):
    """Models saved before ``DecoderSpladeTransformer`` moved to ``splade_decoder`` name it under
    ``uniret.retriever.splade`` in modules.json; that path still resolves, to the same vectors."""
    from sentence_transformers import SparseEncoder

    model = SparseModel.build(tiny_llm, variant="echo", max_length=16, device="cpu")
    texts = ["protein cell gene", "vitamin study of the heart"]
    with torch.no_grad():
        ours = model.forward(model.tokenize(texts))
    path = model.save(tmp_path / "m")
    modules = json.loads((path / "modules.json").read_text())
    assert modules[0]["type"] == "uniret.retriever.splade_decoder.DecoderSpladeTransformer"
    modules[0]["type"] = "uniret.retriever.splade.DecoderSpladeTransformer"
    (path / "modules.json").write_text(json.dumps(modules))
    old = SparseEncoder(str(path), device="cpu", trust_remote_code=True)
    torch.testing.assert_close(old.encode_document(texts, convert_to_tensor=True, convert_to_sparse_tensor=False),
                               ours, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        again = SparseModel.load(path, device="cpu")
        torch.testing.assert_close(again.forward(again.tokenize(texts)), ours, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("variant", ["echo", "bidirectional"])
def test_logit_background_is_the_mean_plus_sd_of_max_pooled_logits_and_is_subtracted(tiny_llm, variant, tmp_path):
    from uniret.retriever.splade_decoder import LOGIT_OFFSET_FILE, logit_background

    background = ["the protein of the cell", "a gene study in patients", "vitamin trial with drug", "heart risk"]
    plain = SparseModel.build(tiny_llm, variant=variant, max_length=16, device="cpu")
    lm = plain._lm()
    with torch.no_grad():  # by hand: each text's logits at its pooled positions, max over positions
        pooled = []
        for text in background:
            out = lm.forward(lm.preprocess([text]))
            keep = out["attention_mask"][0].bool()
            pooled.append(out["token_embeddings"][0, keep].amax(0))
        pooled = torch.stack(pooled)
    expected = pooled.mean(0) + 0.5 * pooled.std(0)
    torch.testing.assert_close(logit_background(lm, background, sd=0.5, batch_size=3), expected)

    model = SparseModel.build(tiny_llm, variant=variant, max_length=16, device="cpu", background=background,
                              background_sd=0.5)
    torch.testing.assert_close(model._lm().logit_offset, expected)
    texts = ["protein cell gene", "vitamin study of the heart"]
    with torch.no_grad():
        raw = lm.forward(lm.preprocess(texts))
        centred = splade_pool(raw["token_embeddings"] - expected, raw["attention_mask"])
        ours = model.forward(model.tokenize(texts))
    torch.testing.assert_close(ours, centred)
    assert (ours > 0).sum() < (plain.forward(plain.tokenize(texts)).detach() > 0).sum()  # fewer active terms
    assert model.history["logit_background"] == {"texts": 4, "sd": 0.5}

    path = model.save(tmp_path / "m")  # the offset travels with the model, for us and for sentence-transformers
    assert (path / LOGIT_OFFSET_FILE).is_file()
    again = SparseModel.load(path, device="cpu")
    with torch.no_grad():
        torch.testing.assert_close(again.forward(again.tokenize(texts)), ours)
    from sentence_transformers import SparseEncoder

    theirs = SparseEncoder(str(path), device="cpu", trust_remote_code=True).encode_document(
        texts, convert_to_tensor=True, convert_to_sparse_tensor=False)
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-6)


def test_logit_background_needs_a_decoder_and_two_texts(tiny_llm):
    from uniret.train.config import ModelConfig

    with pytest.raises(ValueError, match="decoder-only LMs"):
        SparseModel.build("splade-tiny", max_length=16, device="cpu", background=["a", "b"])
    with pytest.raises(ValueError, match="at least 2 texts"):
        SparseModel.build(tiny_llm, variant="echo", max_length=16, device="cpu", background=["the cell"])
    with pytest.raises(ValueError, match="model.background_docs is for sparse models on decoder-only LMs"):
        ModelConfig(kind="sparse", backbone="splade-tiny", pooling="max", background_docs=8)
    with pytest.raises(ValueError, match="model.background_docs: got -1"):
        ModelConfig(kind="sparse", variant="echo", pooling="max", background_docs=-1)

def test_the_sparse_family_computes_the_background_from_a_seeded_corpus_sample(tiny_llm, scifact_small, tmp_path):
    from uniret import families
    from uniret.data import save_beir
    from uniret.train.config import DataConfig, ModelConfig, TrainConfig

    save_beir(scifact_small, tmp_path / "data")

    def build(seed):
        cfg = TrainConfig(model=ModelConfig(kind="sparse", backbone=tiny_llm, variant="bidirectional", pooling="max",
                                            max_length=16, device="cpu", background_docs=6),
                          data=DataConfig(data=str(tmp_path / "data")))
        cfg.trainer.seed = seed
        model, _ = families.get("sparse").hooks().build(cfg)
        return model

    model = build(0)
    assert model.history["logit_background"] == {"texts": 6, "sd": 0.25}
    offset = model._lm().logit_offset
    torch.testing.assert_close(build(0)._lm().logit_offset, offset)  # the same sample for the same seed
    assert not torch.equal(build(1)._lm().logit_offset, offset)
    too_many = TrainConfig(model=ModelConfig(kind="sparse", backbone=tiny_llm, variant="echo", pooling="max",
                                             device="cpu", background_docs=10_000),
                           data=DataConfig(data=str(tmp_path / "data")))
    with pytest.raises(ValueError, match="model.background_docs: 10000 documents asked for"):
        families.get("sparse").hooks().build(too_many)

# -- real SPLADE-tiny --------------------------------------------------------------------------------------

def test_encoder_splade_round_trips_through_sentence_transformers(splade_tiny, scifact_small, tmp_path):
    from sentence_transformers import SparseEncoder

    docs = [d.full_text() for d in list(scifact_small.corpus)[:6]]
    path = splade_tiny.save(tmp_path / "splade")
    ref = SparseEncoder(str(path), device="cpu")
    theirs = ref.encode_document(docs, convert_to_tensor=True, convert_to_sparse_tensor=False)
    enc = SpladeEncoder(path, device="cpu", batch_size=4)
    ours = enc.encode_documents(docs)
    assert enc.identity["path"] == str(path) and enc.identity["variant"] == "mlm"
    for i in range(len(docs)):
        row = theirs[i]
        idx = torch.nonzero(row, as_tuple=True)[0].numpy()
        lo, hi = ours.indptr[i], ours.indptr[i + 1]
        np.testing.assert_array_equal(ours.indices[lo:hi], idx)
        np.testing.assert_allclose(ours.data[lo:hi], row[idx].numpy(), rtol=1e-4, atol=1e-5)
    assert ours.row(0) and list(ours.row(0).values()) == sorted(ours.row(0).values(), reverse=True)


def test_inference_free_queries_are_idf_lookups_and_round_trip(scifact_small, tmp_path):
    from sentence_transformers import SparseEncoder

    corpus = [d.full_text() for d in scifact_small.corpus]
    model = SparseModel.build("splade-tiny", idf=corpus, max_length=64, device="cpu")
    assert model.inference_free and model.idf is not None
    query = "vitamin d deficiency and bone density"
    q = model.forward(model.tokenize_queries([query]))[0]
    ids = set(model.tokenizer(query, add_special_tokens=False)["input_ids"])
    assert set(torch.nonzero(q, as_tuple=True)[0].tolist()) == ids
    for i in ids:
        assert q[i].item() == pytest.approx(model.idf[i].item())
    assert not q.requires_grad  # nothing to train on the query side
    path = model.save(tmp_path / "if")
    ref = SparseEncoder(str(path), device="cpu")
    rq = ref.encode_query([query], convert_to_tensor=True, convert_to_sparse_tensor=False)[0]
    torch.testing.assert_close(rq, q)
    enc = SpladeEncoder(path, device="cpu")
    assert enc.identity["inference_free"] and set(enc.encode_queries([query]).row(0)) == \
        set(model.tokenizer.convert_ids_to_tokens(sorted(ids)))


def test_one_training_step_with_flops_moves_the_model(scifact):
    from uniret.train.biencoder import BiEncoderModule, LossConfig
    from uniret.train.records import records_from_beir

    model = SparseModel.build("splade-tiny", max_length=32, device="cpu")
    records = list(itertools.islice(records_from_beir(scifact, "train"), 4))
    module = BiEncoderModule(model, LossConfig(temperature=1.0, hard_negatives=0),
                             regularizer=FlopsRegularizer(FlopsConfig(query_weight=1e-3, document_weight=1e-3)))
    logs = module.step(records, random.Random(0), 0)
    assert {"infonce", "flops_q", "flops_d", "nnz_q", "nnz_d", "loss"} <= set(logs)
    assert logs["loss"] == pytest.approx(logs["infonce"] + 1e-3 * (logs["flops_q"] + logs["flops_d"]), rel=1e-5)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


def test_lora_trains_only_adapters_and_saves_merged(tiny_llm, tmp_path):
    pytest.importorskip("peft")
    from sentence_transformers import SparseEncoder

    model = SparseModel.build(tiny_llm, variant="echo", max_length=16, device="cpu",
                              lora={"r": 4, "alpha": 8, "dropout": 0.0}, gradient_checkpointing=True)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    with torch.no_grad():  # move the adapters off zero so that merging matters
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.add_(0.05)
    texts = ["protein cell gene", "vitamin"]
    model.train(False)
    with torch.no_grad():
        ours = model.forward(model.tokenize(texts))
    path = model.save(tmp_path / "lora")
    assert not any("lora" in f.name for f in path.iterdir())
    theirs = SparseEncoder(str(path), device="cpu", trust_remote_code=True).encode_document(
        texts, convert_to_tensor=True, convert_to_sparse_tensor=False)
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-5)
    assert model.history["lora"]["r"] == 4


def test_learned_query_weights_train_from_idf_and_stay_a_lookup(scifact, tmp_path):
    """model.query_weights: learned on the real SPLADE-tiny and SciFact pairs: the query side starts at the IDF,
    one step at its own rate (trainer.learning_rate_mapping) moves it, and the saved model still encodes a query
    as a lookup of the trained weights that sentence-transformers' SparseEncoder reads back."""
    from sentence_transformers import SparseEncoder

    from uniret.train.biencoder import BiEncoderModule, LossConfig
    from uniret.train.records import records_from_beir
    from uniret.train.trainer import Trainer, TrainerConfig

    corpus = [d.full_text() for d in scifact.corpus][:300]
    frozen = SparseModel.build("splade-tiny", idf=corpus, max_length=32, device="cpu")
    assert not frozen.st[0].sub_modules["query"][0].weight.requires_grad
    model = SparseModel.build("splade-tiny", idf=corpus, max_length=32, device="cpu", learn_query_weights=True)
    start = model.idf.clone()
    torch.testing.assert_close(start, frozen.idf)
    records = list(itertools.islice(records_from_beir(scifact, "train"), 4))
    module = BiEncoderModule(model, LossConfig(temperature=1.0, hard_negatives=0),
                             regularizer=FlopsRegularizer(FlopsConfig(document_weight=1e-3)))
    query_param = r"sub_modules\.query\."
    assert [n for n, _ in module.named_parameters() if re.search(query_param, n)]
    cfg = TrainerConfig(batch_size=4, max_steps=1, learning_rate=1e-5, warmup_ratio=0.0,
                        learning_rate_mapping={query_param: 1e-2})
    Trainer(module, records, cfg, tmp_path / "run").train()
    moved = (model.idf - start).abs()
    assert moved.max() > 1e-3  # the query tokens of the batch moved at the mapped rate
    query = records[0].query
    ids = sorted(set(model.tokenizer(query, add_special_tokens=False)["input_ids"]))
    q = model.forward(model.tokenize_queries([query]))[0].detach()
    torch.testing.assert_close(q[ids], model.idf[ids])
    path = model.save(tmp_path / "learned")
    rq = SparseEncoder(str(path), device="cpu").encode_query([query], convert_to_tensor=True,
                                                             convert_to_sparse_tensor=False)[0]
    torch.testing.assert_close(rq.detach(), q)
    with pytest.raises(ValueError, match="learn_query_weights"):
        SparseModel.build("splade-tiny", max_length=32, device="cpu", learn_query_weights=True)


def test_learned_query_weights_stay_non_negative(scifact, tmp_path):
    """Inference drops query weights <= 0, so the sparse family's training clamps learned query weights at 0
    after each step: at a rate that drives some below 0 unclamped, none is negative with the family's callbacks."""
    from types import SimpleNamespace

    from uniret import families
    from uniret.train.biencoder import BiEncoderModule, LossConfig
    from uniret.train.records import records_from_beir
    from uniret.train.trainer import ClampParameters, Trainer, TrainerConfig

    corpus = [d.full_text() for d in scifact.corpus][:300]
    records = list(itertools.islice(records_from_beir(scifact, "train"), 4))
    cfg = TrainerConfig(batch_size=4, max_steps=2, learning_rate=1e-5, warmup_ratio=0.0,
                        learning_rate_mapping={r"sub_modules\.query\.": 50.0})
    minima = {}
    for clamped in (False, True):
        model = SparseModel.build("splade-tiny", idf=corpus, max_length=32, device="cpu", learn_query_weights=True)
        module = BiEncoderModule(model, LossConfig(temperature=1.0, hard_negatives=0))
        family_callbacks = families.get("sparse").hooks().callbacks  # what the training pipeline adds
        callbacks = family_callbacks(SimpleNamespace(flops=SimpleNamespace(warmup_steps=0)), module) if clamped else []
        assert [type(c) for c in callbacks] == ([ClampParameters] if clamped else [])
        Trainer(module, records, cfg, tmp_path / f"run{clamped}", callbacks=callbacks).train()
        minima[clamped] = float(model.idf.min())
    assert minima[False] < 0  # the test's rate does push weights below 0 ...
    assert minima[True] == 0.0  # ... and the clamp keeps them at 0
    frozen = SparseModel.build("splade-tiny", idf=corpus, max_length=32, device="cpu")
    assert frozen.trainable_query_weights is None


def test_frozen_query_encoder_trains_documents_only_and_round_trips(scifact, splade_tiny, tmp_path):
    """``freeze_query_encoder``: queries keep SPLADE-tiny's vectors through a training step, documents move, and
    the saved model is one SparseEncoder (Router) whose queries are still the base's; loading re-freezes them."""
    from sentence_transformers import SparseEncoder

    from uniret.train.biencoder import BiEncoderModule, LossConfig
    from uniret.train.records import records_from_beir

    model = SparseModel.build("splade-tiny", max_length=64, device="cpu", freeze_query_encoder=True)
    assert model.routed and model.frozen_query_encoder and not model.inference_free and model.idf is None
    query, doc = "vitamin d deficiency and bone density", next(iter(scifact.corpus)).full_text()
    with torch.no_grad():
        base_q = splade_tiny.forward(splade_tiny.tokenize_queries([query]))
        base_d = splade_tiny.forward(splade_tiny.tokenize([doc]))
        torch.testing.assert_close(model.forward(model.tokenize_queries([query])), base_q)
        torch.testing.assert_close(model.forward(model.tokenize([doc])), base_d)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".sub_modules.document." in n for n in trainable)
    records = list(itertools.islice(records_from_beir(scifact, "train"), 4))
    module = BiEncoderModule(model, LossConfig(temperature=1.0, hard_negatives=0),
                             regularizer=FlopsRegularizer(FlopsConfig(query_weight=1e-3, document_weight=1e-3),
                                                          queries_trainable=False))
    optimizer = torch.optim.SGD(module.parameters(), lr=1.0)
    module.step(records, random.Random(0), 0)
    optimizer.step()
    with torch.no_grad():
        torch.testing.assert_close(model.forward(model.tokenize_queries([query])), base_q)
        assert not torch.allclose(model.forward(model.tokenize([doc])), base_d)
        q_now = model.forward(model.tokenize_queries([query]))[0]
        d_now = model.forward(model.tokenize([doc]))[0]
    path = model.save(tmp_path / "fq")
    ref = SparseEncoder(str(path), device="cpu")
    torch.testing.assert_close(ref.encode_query([query], convert_to_tensor=True, convert_to_sparse_tensor=False)[0],
                               q_now, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ref.encode_document([doc], convert_to_tensor=True, convert_to_sparse_tensor=False)[0],
                               d_now, atol=1e-5, rtol=1e-5)
    loaded = SparseModel.load(path, device="cpu")
    assert loaded.frozen_query_encoder and loaded.settings()["query_encoder"] == "frozen"
    assert not any(p.requires_grad for n, p in loaded.named_parameters() if ".sub_modules.query." in n)
    with pytest.raises(ValueError, match="inference-free model"):
        SparseModel.build("splade-tiny", idf=[doc], freeze_query_encoder=True, device="cpu")


def test_frozen_query_encoder_config_is_for_sparse_models_with_a_query_encoder():
    from uniret.train.config import ModelConfig

    assert ModelConfig(kind="sparse", backbone="splade-tiny", query_encoder="frozen").query_encoder == "frozen"
    with pytest.raises(ValueError, match="shared or frozen"):
        ModelConfig(kind="sparse", backbone="splade-tiny", query_encoder="tied")
    with pytest.raises(ValueError, match="frozen is for sparse models"):
        ModelConfig(kind="sparse", backbone="splade-tiny", query_encoder="frozen", inference_free=True)
    with pytest.raises(ValueError, match="frozen is for sparse models"):
        ModelConfig(kind="dense", backbone="all-MiniLM-L6-v2", query_encoder="frozen")
